package main

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pimqtt/pimqtt/broker"
	"github.com/pimqtt/pimqtt/mqtttest"
)

// TestTLSFromFlags: the household path of the README. `pimqtt cert` makes
// a CA and a certificate, pimqtt serves MQTT over TLS with --tls-cert and
// --tls-key, mosquitto_pub trusting that CA switches the LED, and a client
// that does not trust it is refused.
func TestTLSFromFlags(t *testing.T) {
	bin := pimqttBinary(t)
	dir := filepath.Join(t.TempDir(), "tls")
	if out, err := exec.Command(bin, "cert", "--dir", dir).CombinedOutput(); err != nil {
		t.Fatalf("pimqtt cert: %v\n%s", err, out)
	}
	pw := passwordFile(t, "phone", "s3cret")
	p := startProcess(t, nil, "--password-file", pw, "--gpio", "sim",
		"--tls-cert", filepath.Join(dir, "server.crt"), "--tls-key", filepath.Join(dir, "server.key"),
		"--listen", "", "--ws-listen", "", "--tls-listen", "127.0.0.1:0", "--wss-listen", "")
	_, port, err := net.SplitHostPort(p.listenAddr(t, broker.MQTTS))
	if err != nil {
		t.Fatal(err)
	}
	sub := mqtttest.RequireTool(t, "mosquitto_sub", "mosquitto-clients")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	// The retained state, then the change: -C 2 returns after both.
	watch := exec.CommandContext(ctx, sub, "-h", "127.0.0.1", "-p", port, "--cafile", filepath.Join(dir, "ca.crt"),
		"-u", "phone", "-P", "s3cret", "-t", "raspberry/led/state", "-C", "2", "-q", "1")
	var got strings.Builder
	watch.Stdout = &got
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	waitLog(t, p.logs, "client connected", "user=phone")
	if out, code := mosquittoPub(t, "-h", "127.0.0.1", "-p", port, "--cafile", filepath.Join(dir, "ca.crt"),
		"-u", "phone", "-P", "s3cret", "-t", "raspberry/led", "-q", "1", "-m", "1"); code != 0 {
		t.Fatalf("mosquitto_pub over TLS: %d %s", code, out)
	}
	if err := watch.Wait(); err != nil {
		t.Fatalf("mosquitto_sub over TLS: %v (got %q)", err, got.String())
	}
	if got.String() != "0\n1\n" {
		t.Errorf("state over TLS: %q, want 0 then 1", got.String())
	}
	// A client that trusts another CA is refused by its own TLS check.
	other := filepath.Join(t.TempDir(), "other")
	if out, err := exec.Command(bin, "cert", "--dir", other).CombinedOutput(); err != nil {
		t.Fatalf("pimqtt cert: %v\n%s", err, out)
	}
	if out, code := mosquittoPub(t, "-h", "127.0.0.1", "-p", port, "--cafile", filepath.Join(other, "ca.crt"),
		"-u", "phone", "-P", "s3cret", "-t", "raspberry/led", "-m", "0"); code == 0 {
		t.Fatalf("a client trusting another CA got in: %s", out)
	}
}
