package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pimqtt/pimqtt/broker"
	"github.com/pimqtt/pimqtt/config"
	"github.com/pimqtt/pimqtt/mqtttest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildPath != "" {
		_ = os.RemoveAll(filepath.Dir(buildPath))
	}
	os.Exit(code)
}

// mosquittoPub runs the real mosquitto_pub and returns its combined output
// and exit code.
func mosquittoPub(t *testing.T, args ...string) (string, int) {
	t.Helper()
	bin := mqtttest.RequireTool(t, "mosquitto_pub", "mosquitto-clients")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("mosquitto_pub: %v", err)
	}
	return string(out), 0
}

func TestMosquittoClients(t *testing.T) {
	pw := passwordFile(t, "phone", "s3cret", "other", "pa55")
	m, logs := startMain(t, testConfig(pw))
	host, port := addr(t, m, broker.TCP)
	base := []string{"-h", host, "-p", port, "-t", "raspberry/led"}

	refusals := []struct {
		name    string
		args    []string
		wantOut string
	}{
		{"wrong password v3.1.1", []string{"-u", "phone", "-P", "wrong", "-m", "1"}, "bad user name or password"},
		{"unknown user v3.1.1", []string{"-u", "nobody", "-P", "s3cret", "-m", "1"}, "bad user name or password"},
		{"anonymous v3.1.1", []string{"-m", "1"}, "not authori"},
		{"wrong password v5", []string{"-V", "mqttv5", "-u", "phone", "-P", "wrong", "-m", "1"}, "bad user name or password"},
		{"anonymous v5", []string{"-V", "mqttv5", "-m", "1"}, "not authori"},
	}
	for i, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			since := len(logs.String())
			// QoS 2: mosquitto_pub ends only after PUBCOMP, which Mochi sends after it has
			// queued the message for the device; so had this publish been accepted, its
			// command would reach the device before the probe below.
			out, code := mosquittoPub(t, append(base, append([]string{"-q", "2"}, tc.args...)...)...)
			if code == 0 || !strings.Contains(strings.ToLower(out), tc.wantOut) {
				t.Fatalf("exit %d, output %q; want refusal containing %q", code, out, tc.wantOut)
			}
			// The device takes commands one at a time in the order the broker queued them.
			// A probe from an accepted client that it logs proves it has handled anything
			// the refused client could have sent.
			probe := fmt.Sprintf("probe-%d", i)
			if out, code := mosquittoPub(t, append(base, "-q", "1", "-u", "phone", "-P", "s3cret", "-m", probe)...); code != 0 {
				t.Fatalf("probe publish: exit %d: %s", code, out)
			}
			waitLog(t, logs, "unknown payload", probe)
			if l := logs.String()[since:]; strings.Contains(l, "line changed") {
				t.Fatalf("a refused client changed the line:\n%s", l)
			}
			if lineValue(t, m) != 0 {
				t.Fatal("a refused client changed the line")
			}
		})
	}
	waitLog(t, logs, "auth failed: bad user name or password")
	waitLog(t, logs, "auth failed: anonymous client refused")

	sub := newSubscriber(t, "tcp://"+host+":"+port, "other", "pa55", "raspberry/led/state")
	for _, v := range []string{"1", "0", "1"} {
		if out, code := mosquittoPub(t, append(base, "-q", "1", "-u", "phone", "-P", "s3cret", "-m", v)...); code != 0 {
			t.Fatalf("mosquitto_pub -m %s: exit %d: %s", v, code, out)
		}
		sub.waitFor(t, "raspberry/led/state", v)
		if got := lineValue(t, m); got != int(v[0]-'0') {
			t.Fatalf("line = %d after %s", got, v)
		}
	}

	// A subscriber that connects afterwards gets the retained state.
	subBin := mqtttest.RequireTool(t, "mosquitto_sub", "mosquitto-clients")
	out, err := exec.Command(subBin, "-h", host, "-p", port, "-u", "other", "-P", "pa55",
		"-t", "raspberry/led/state", "-t", "raspberry/status", "-C", "2", "-W", "10", "-v").CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_sub: %v: %s", err, out)
	}
	for _, want := range []string{"raspberry/led/state 1", `raspberry/status {"status": "On"}`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("late subscriber got %q, want a line %q", out, want)
		}
	}
}

func TestSeedPythonFlows(t *testing.T) {
	python := mqtttest.RequireTool(t, "python3", "python3-paho-mqtt")
	pw := passwordFile(t, "pi", "raspberry")
	for _, transport := range []string{"tcp", "websockets"} {
		t.Run(transport, func(t *testing.T) {
			// A program of its own: the broker logs refusals of one
			// address once per 10 s, and each transport expects its line.
			m, logs := startMain(t, testConfig(pw))
			kind := broker.TCP
			if transport == "websockets" {
				kind = broker.WebSocket
			}
			host, port := addr(t, m, kind)
			tcpHost, tcpPort := addr(t, m, broker.TCP)
			sub := newSubscriber(t, "tcp://"+tcpHost+":"+tcpPort, "pi", "raspberry", "raspberry/led/state", "raspberry/status")

			for _, v := range []string{"1", "0"} {
				out, err := exec.Command(python, "testdata/seed/publisher.py", host, port, "pi", "raspberry", "raspberry/led", v, transport).CombinedOutput()
				if err != nil {
					t.Fatalf("publisher.py %s: %v: %s", v, err, out)
				}
				sub.waitFor(t, "raspberry/led/state", v)
				if got := lineValue(t, m); got != int(v[0]-'0') {
					t.Fatalf("line = %d after python published %s", got, v)
				}
			}
			out, err := exec.Command(python, "testdata/seed/publisher.py", host, port, "pi", "wrong", "raspberry/led", "1", transport).CombinedOutput()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 14 {
				t.Fatalf("wrong password: want paho rc=4 (exit 14), got %v: %s", err, out)
			}

			// The seed's Last Will is on raspberry/status, which in the
			// all-in-one mode is the in-process device's: nobody else may
			// write it, so a killed seed script cannot say the Pi is Off
			// while it is on. The will is dropped with a log line.
			dropped := strings.Count(logs.String(), "will dropped")
			killSeedWillClient(t, python, host, port, transport)
			waitLogCount(t, logs, "will dropped", dropped+1)
			for drained := false; !drained; {
				select {
				case msg := <-sub.msgs:
					if msg.topic == "raspberry/status" && msg.payload != `{"status": "On"}` {
						t.Fatalf("status changed to %s by another client's will", msg.payload)
					}
				default:
					drained = true
				}
			}
		})
	}
}

// TestSeedWillInBrokerMode: in broker-only mode the status topic is
// nobody's, and the seed script's Last Will reaches subscribers as it did
// with mosquitto.
func TestSeedWillInBrokerMode(t *testing.T) {
	python := mqtttest.RequireTool(t, "python3", "python3-paho-mqtt")
	pw := passwordFile(t, "pi", "raspberry")
	cfg := testConfig(pw)
	cfg.Mode = config.ModeBroker
	m, _ := startMain(t, cfg)
	for _, transport := range []string{"tcp", "websockets"} {
		t.Run(transport, func(t *testing.T) {
			kind := broker.TCP
			if transport == "websockets" {
				kind = broker.WebSocket
			}
			host, port := addr(t, m, kind)
			tcpHost, tcpPort := addr(t, m, broker.TCP)
			sub := newSubscriber(t, "tcp://"+tcpHost+":"+tcpPort, "pi", "raspberry", "raspberry/status")
			killSeedWillClient(t, python, host, port, transport)
			sub.waitFor(t, "raspberry/status", `{"status": "Off"}`)
		})
	}
}

// killSeedWillClient runs the seed's will script until it has connected,
// then kills it with SIGKILL, so that the broker publishes its will.
func killSeedWillClient(t *testing.T, python, host, port, transport string) {
	t.Helper()
	{
		cmd := exec.Command(python, "testdata/seed/will_client.py", host, port, "pi", "raspberry", transport)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Wait()
		defer cmd.Process.Kill()
		select {
		case l := <-lines(stdout):
			if l != "connected" {
				t.Fatalf("will_client.py: %q", l)
			}
		case <-time.After(testTimeout):
			t.Fatal("will_client.py did not connect")
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
}

func TestWebSocketPahoGo(t *testing.T) {
	pw := passwordFile(t, "phone", "s3cret")
	m, _ := startMain(t, testConfig(pw))
	host, port := addr(t, m, broker.WebSocket)
	for _, path := range []string{"/mqtt", "/", "/ws"} {
		url := "ws://" + host + ":" + port + path
		sub := newSubscriber(t, url, "phone", "s3cret", "raspberry/led/state")
		publish(t, url, "phone", "s3cret", "raspberry/led", []byte("ON"))
		sub.waitFor(t, "raspberry/led/state", "1")
		publish(t, url, "phone", "s3cret", "raspberry/led", []byte("OFF"))
		sub.waitFor(t, "raspberry/led/state", "0")
	}
}

func TestBadPayloads(t *testing.T) {
	m, logs := startMain(t, testConfig(""))
	host, port := addr(t, m, broker.TCP)
	url := "tcp://" + host + ":" + port
	sub := newSubscriber(t, url, "", "", "raspberry/led/state")
	publish(t, url, "", "", "raspberry/led", []byte("1"))
	sub.waitFor(t, "raspberry/led/state", "1")

	for _, payload := range [][]byte{[]byte("2"), {}, []byte("blink please"), bytes.Repeat([]byte("x"), 1_000_000)} {
		publish(t, url, "", "", "raspberry/led", payload)
	}
	// Each bad payload is logged; the line and the broker are unaffected.
	deadline := time.Now().Add(testTimeout)
	for strings.Count(logs.String(), "unknown payload") < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("want 4 unknown payload log lines:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
	if got := lineValue(t, m); got != 1 {
		t.Fatalf("line = %d after bad payloads, want 1", got)
	}
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "unknown payload") && len(l) > 400 {
			t.Fatalf("unknown payload log line is %d bytes long: it must quote a short excerpt", len(l))
		}
	}
	publish(t, url, "", "", "raspberry/led", []byte("0"))
	sub.waitFor(t, "raspberry/led/state", "0")
}

func TestMalformedPasswordLinesSkipped(t *testing.T) {
	good := passwordFile(t, "phone", "s3cret")
	content, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "passwd")
	bad := "# comment\n\nno-colon-here\nbroken:$7$101$!!!$???\n" + string(content) + "also:$9$nope\n"
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	m, logs := startMain(t, testConfig(path))
	host, port := addr(t, m, broker.TCP)
	if out, code := mosquittoPub(t, "-h", host, "-p", port, "-u", "phone", "-P", "s3cret", "-t", "raspberry/led", "-m", "1"); code != 0 {
		t.Fatalf("good user refused beside malformed lines: %d %s", code, out)
	}
	if !strings.Contains(logs.String(), path+":4") {
		t.Errorf("malformed line 4 not reported with file:line; log:\n%s", logs)
	}
}

func TestDeviceOnlyAgainstMosquitto(t *testing.T) {
	// The broker is down when the device starts, which must keep retrying: the device is
	// given a relay's address that refuses it until mosquitto runs.
	relay := mqtttest.NewRelay(t)
	pw := passwordFile(t, "device", "devpass", "phone", "s3cret")
	cfg := testConfig("")
	cfg.Mode = config.ModeDevice
	cfg.Broker.Listeners = nil
	cfg.Device.Brokers = []string{"tcp://" + relay.Addr()}
	cfg.Device.Username, cfg.Device.Password = "device", "devpass"
	m, logs := startMain(t, cfg)
	waitLog(t, logs, "cannot connect to broker")
	port := strconv.Itoa(mqtttest.StartMosquitto(t, mqtttest.MosquittoConfig{
		Extra: []string{"allow_anonymous false", "password_file " + pw},
	}).Port)
	relay.Forward("127.0.0.1:" + port)
	sub := newSubscriber(t, "tcp://127.0.0.1:"+port, "phone", "s3cret", "raspberry/status", "raspberry/led/state")
	sub.waitFor(t, "raspberry/status", `{"status": "On"}`)
	if out, code := mosquittoPub(t, "-h", "127.0.0.1", "-p", port, "-u", "phone", "-P", "s3cret", "-t", "raspberry/led", "-m", "1"); code != 0 {
		t.Fatalf("mosquitto_pub: %d %s", code, out)
	}
	sub.waitFor(t, "raspberry/led/state", "1")
	if lineValue(t, m) != 1 {
		t.Fatal("line not set")
	}
}

func TestBrokerAndDeviceProcesses(t *testing.T) {
	pw := passwordFile(t, "device", "devpass", "phone", "s3cret")
	brokerProc := startProcess(t, nil, "--mode", "broker", "--password-file", pw,
		"--listen", "127.0.0.1:0", "--ws-listen", "127.0.0.1:0")
	url := "tcp://" + brokerProc.listenAddr(t, broker.TCP)
	wsAddr := brokerProc.listenAddr(t, broker.WebSocket)
	sub := newSubscriber(t, url, "phone", "s3cret", "raspberry/status", "raspberry/led/state")

	dev := startProcess(t, []string{"PIMQTT_PASSWORD=devpass"}, "--mode", "device", "--gpio", "sim",
		"--broker", "ws://"+wsAddr+"/mqtt", "--username", "device", "--client-id", "pi-test")
	sub.waitFor(t, "raspberry/status", `{"status": "On"}`)
	publish(t, url, "phone", "s3cret", "raspberry/led", []byte("1"))
	sub.waitFor(t, "raspberry/led/state", "1")

	// SIGTERM: the device says Off, drives the line to its safe state, exits 0.
	if err := dev.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := dev.wait(t); code != 0 {
		t.Fatalf("device exit code %d; log:\n%s", code, dev.logs)
	}
	sub.waitFor(t, "raspberry/status", `{"status": "Off"}`)
	if err := brokerProc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := brokerProc.wait(t); code != 0 {
		t.Fatalf("broker exit code %d", code)
	}
}

func TestSIGHUPReloadsPasswords(t *testing.T) {
	pw := passwordFile(t, "phone", "s3cret")
	p := startProcess(t, nil, "--mode", "broker", "--password-file", pw, "--listen", "127.0.0.1:0", "--ws-listen", "")
	_, port, err := net.SplitHostPort(p.listenAddr(t, broker.TCP))
	if err != nil {
		t.Fatal(err)
	}
	url := "tcp://127.0.0.1:" + port
	// A client connected before the reload stays connected across it.
	sub := newSubscriber(t, url, "phone", "s3cret", "news")
	if out, code := mosquittoPub(t, "-h", "127.0.0.1", "-p", port, "-u", "newbie", "-P", "fresh", "-t", "news", "-m", "x"); code == 0 {
		t.Fatalf("unknown user accepted before reload: %s", out)
	}
	if out, err := exec.Command(pimqttBinary(t), "passwd", "-b", pw, "newbie", "fresh").CombinedOutput(); err != nil {
		t.Fatalf("pimqtt passwd: %v %s", err, out)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, p.logs, "users=2")
	if out, code := mosquittoPub(t, "-h", "127.0.0.1", "-p", port, "-u", "newbie", "-P", "fresh", "-t", "news", "-q", "1", "-m", "hello"); code != 0 {
		t.Fatalf("new user refused after SIGHUP: %d %s", code, out)
	}
	sub.waitFor(t, "news", "hello")
}

func TestStartupErrors(t *testing.T) {
	hold, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	busy := hold.Addr().String()
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"network listener without password file", []string{"--listen", "0.0.0.0:0", "--ws-listen", ""}, "pimqtt passwd -c"},
		{"websocket port in use", []string{"--listen", "127.0.0.1:0", "--ws-listen", busy}, "address already in use"},
		{"bad mode", []string{"--mode", "both"}, "--mode"},
		{"missing password file", []string{"--password-file", "/nonexistent/passwd", "--listen", "127.0.0.1:0", "--ws-listen", ""}, "/nonexistent/passwd"},
		{"unknown gpio line", []string{"--gpio", "gpiochip99:1", "--listen", "127.0.0.1:0", "--ws-listen", ""}, "gpiochip99"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := startProcess(t, nil, tc.args...)
			if code := p.wait(t); code == 0 {
				t.Fatalf("exit 0; log:\n%s", p.logs)
			}
			if !strings.Contains(p.logs.String(), tc.want) {
				t.Fatalf("error does not mention %q:\n%s", tc.want, p.logs)
			}
		})
	}
}
