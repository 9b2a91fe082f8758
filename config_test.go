package main

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pimqtt/pimqtt/broker"
	"github.com/pimqtt/pimqtt/config"
	"github.com/pimqtt/pimqtt/gpio"
	"github.com/pimqtt/pimqtt/mqtttest"
)

// End-to-end tests of the configuration file: the binary run with only
// --config, `pimqtt config check` and `config example`, and the parts of
// Main closing in reverse when one fails to start.

// writeFile writes a test file and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestConfigFileOnly: pimqtt started with nothing but --config FILE serves
// the file's listeners with the file's password file, and the LED obeys
// mosquitto_pub.
func TestConfigFileOnly(t *testing.T) {
	pw := passwordFile(t, "phone", "s3cret")
	file := writeFile(t, "pimqtt.toml", `
[broker]
password_file = "`+pw+`"

[[broker.listener]]
address = "127.0.0.1:0"
kind = "mqtt"

[device]
gpio = "sim"
topic = "garden/led"
status_topic = "garden/status"

[http]
listen = ["127.0.0.1:0"]

[log]
level = "debug"
`)
	p := startProcess(t, nil, "--config", file)
	host, port, err := net.SplitHostPort(p.listenAddr(t, broker.TCP))
	if err != nil {
		t.Fatal(err)
	}
	sub := newSubscriber(t, "tcp://"+net.JoinHostPort(host, port), "phone", "s3cret", "garden/led/state")
	sub.waitFor(t, "garden/led/state", "0")
	if out, code := mosquittoPub(t, "-h", host, "-p", port, "-u", "phone", "-P", "s3cret", "-t", "garden/led", "-q", "1", "-m", "1"); code != 0 {
		t.Fatalf("mosquitto_pub: %d %s", code, out)
	}
	sub.waitFor(t, "garden/led/state", "1")
	if out, code := mosquittoPub(t, "-h", host, "-p", port, "-u", "phone", "-P", "wrong", "-t", "garden/led", "-m", "0"); code == 0 {
		t.Fatalf("a wrong password was accepted: the file's password file is not in force: %s", out)
	}
}

// TestConfigCheck: `pimqtt config check` prints the effective configuration
// of a good file and exits 0, and exits 1 with file:line:column on a
// broken one; `pimqtt config example` is accepted by it on a fresh machine
// (the password file it names does not exist yet: a warning).
func TestConfigCheck(t *testing.T) {
	bin := pimqttBinary(t)
	example, err := exec.Command(bin, "config", "example").Output()
	if err != nil {
		t.Fatalf("config example: %v", err)
	}
	examplePath := writeFile(t, "example.toml", string(example))

	cases := []struct {
		name       string
		file       string
		wantCode   int
		wantStdout []string
		wantStderr []string
	}{
		{"example", examplePath, 0,
			[]string{"[broker]", "password_file = '/etc/pimqtt/passwd'"},
			[]string{"warning:", "/etc/pimqtt/passwd does not exist yet"}},
		{"unknown key", writeFile(t, "bad.toml", "[broker]\nallow_anonymous = false\npasword_file = \"/x\"\n"), 1,
			nil, []string{":3:1:", "pasword_file", "password_file"}},
		{"bad kind", writeFile(t, "bad.toml", "[[broker.listener]]\naddress = \":1883\"\nkind = \"mqtss\"\n"), 1,
			nil, []string{":3:8:", "mqtss", "mqtt"}},
		{"bad line spec", writeFile(t, "bad.toml", "[[output]]\nname = \"relay\"\nline = \"pin41\"\n"), 1,
			nil, []string{":3:8:", "output[0].line"}},
		{"network listener without password file", writeFile(t, "bad.toml", "[[broker.listener]]\naddress = \"0.0.0.0:1883\"\n"), 1,
			nil, []string{":2:11:", "pimqtt passwd -c"}},
		{"missing file", filepath.Join(t.TempDir(), "none.toml"), 1, nil, []string{"none.toml"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin, "config", "check", tc.file)
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.wantCode, stdout.String(), stderr.String())
			}
			for _, w := range tc.wantStdout {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout.String())
				}
			}
			for _, w := range tc.wantStderr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
		})
	}
}

// closeRecorder is an output line that records being closed.
type closeRecorder struct {
	gpio.Output
	closed chan struct{}
}

func (c *closeRecorder) Close() error {
	close(c.closed)
	return c.Output.Close()
}

// TestFailingPartClosesEarlierParts: when a part fails to start (here the
// broker, on a port in use) the parts started before it (the lines) are
// closed again: the line is released and no goroutine is left behind.
func TestFailingPartClosesEarlierParts(t *testing.T) {
	hold, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	before := runtime.NumGoroutine()

	line, err := gpio.OpenOutput("sim", gpio.WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	rec := &closeRecorder{Output: line, closed: make(chan struct{})}
	cfg := testConfig("")
	cfg.Broker.Listeners = []config.Listener{
		{Address: "127.0.0.1:0", Kind: config.KindWS},
		{Address: hold.Addr().String(), Kind: config.KindMQTT},
	}
	m := &Main{Config: cfg, Logger: discardLogger(), Line: rec}
	if err := m.Run(context.Background()); err == nil {
		_ = m.Close()
		t.Fatal("Run succeeded with a port in use")
	}
	select {
	case <-rec.closed:
	default:
		t.Fatal("the line opened before the broker failed was not closed")
	}
	// Goroutines of the parts that started wind down promptly; the
	// deadline only bounds the wait.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines before Run, %d after it failed:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
}

// TestSeedMosquittoConfParity: the seed's mosquitto.conf (allow_anonymous
// false and a password file), given to the real mosquitto and imported by
// pimqtt, answers the same client script with the same CONNACK codes for
// the right, a wrong and no credentials, in MQTT 3.1.1 and 5.
func TestSeedMosquittoConfParity(t *testing.T) {
	python := mqtttest.RequireTool(t, "/usr/bin/python3", "python3-paho-mqtt")
	pw := passwordFile(t, "phone", "s3cret")
	seed := []string{"allow_anonymous false", "password_file " + pw}
	mosq := mqtttest.StartMosquitto(t, mqtttest.MosquittoConfig{Extra: seed})

	conf := writeFile(t, "mosquitto.conf", "# the seed's configuration\nlistener 1883\n"+strings.Join(seed, "\n")+"\n")
	// The listener is moved to a port the kernel picks; the security
	// settings are the file's.
	p := startProcess(t, nil, "--mosquitto-config", conf, "--listen", "127.0.0.1:0", "--ws-listen", "", "--gpio", "sim")
	_, pimqttPort, err := net.SplitHostPort(p.listenAddr(t, broker.TCP))
	if err != nil {
		t.Fatal(err)
	}
	script := func(port, version string) string {
		t.Helper()
		out, err := exec.Command(python, "testdata/seed/connack.py", "127.0.0.1", port, "phone", "s3cret", version).CombinedOutput()
		if err != nil {
			t.Fatalf("connack.py against port %s: %v\n%s", port, err, out)
		}
		return string(out)
	}
	for _, version := range []string{"3", "5"} {
		want := script(strconv.Itoa(mosq.Port), version)
		got := script(pimqttPort, version)
		if got != want {
			t.Errorf("MQTT %s: pimqtt answered\n%s\nmosquitto answered\n%s", version, got, want)
		}
		if !strings.Contains(want, "right: 0\n") {
			t.Errorf("MQTT %s: mosquitto refused the right password:\n%s", version, want)
		}
	}
}
