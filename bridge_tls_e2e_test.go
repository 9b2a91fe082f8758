package main

import (
	"net"
	"os/exec"
	"strconv"
	"testing"

	"github.com/pimqtt/pimqtt/cert"
	"github.com/pimqtt/pimqtt/config"
	"github.com/pimqtt/pimqtt/mqtttest"
)

// TestBridgeTLS: the bridge reaches a remote over mqtts:// whose certificate a local CA
// signed (pimqtt cert), given as the bridge's CA file: a command published on the remote with
// mosquitto_pub --cafile switches the Pi's LED. With another CA the bridge stays down and
// says why.
func TestBridgeTLS(t *testing.T) {
	t.Parallel()
	pub := mqtttest.RequireTool(t, "mosquitto_pub", "mosquitto-clients")
	certs, err := cert.Make(cert.Options{Dir: t.TempDir(), DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	other, err := cert.Make(cert.Options{Dir: t.TempDir(), DNSNames: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	remote := mqtttest.StartMosquitto(t, mqtttest.MosquittoConfig{Extra: []string{
		"allow_anonymous true", "cafile " + certs.CA.Cert, "certfile " + certs.Server.Cert, "keyfile " + certs.Server.Key,
	}})
	url := "mqtts://127.0.0.1:" + strconv.Itoa(remote.Port)
	const stateTopic = "$SYS/broker/connection/tls/state"

	t.Run("right CA", func(t *testing.T) {
		cfg := testConfig(passwordFile(t, "phone", "secret"))
		cfg.Bridges = []config.Bridge{{Name: "tls", Addresses: []string{url}, Topics: []string{"raspberry/# both 1"}, CAFile: certs.CA.Cert}}
		m, _ := startMain(t, cfg)
		host, port := addr(t, m, "tcp")
		local := "tcp://" + net.JoinHostPort(host, port)
		newSubscriber(t, local, "phone", "secret", stateTopic).waitFor(t, stateTopic, "1")
		states := newSubscriber(t, local, "phone", "secret", "raspberry/led/state")
		out, err := exec.Command(pub, "-h", "127.0.0.1", "-p", strconv.Itoa(remote.Port), "--cafile", certs.CA.Cert,
			"-q", "1", "-t", "raspberry/led", "-m", "1").CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_pub over TLS: %v\n%s", err, out)
		}
		states.waitFor(t, "raspberry/led/state", "1")
		if v := lineValue(t, m); v != 1 {
			t.Fatalf("line %d", v)
		}
	})
	t.Run("wrong CA", func(t *testing.T) {
		cfg := testConfig(passwordFile(t, "phone", "secret"))
		cfg.Bridges = []config.Bridge{{Name: "tls", Addresses: []string{url}, Topics: []string{"raspberry/# both 1"}, CAFile: other.CA.Cert}}
		_, logs := startMain(t, cfg)
		waitLog(t, logs, "certificate", "not signed by the CA in "+other.CA.Cert)
	})
}
