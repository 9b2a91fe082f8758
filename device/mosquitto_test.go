package device

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pimqtt/pimqtt/mqtttest"
)

// These tests run the device against the real mosquitto (Debian packages mosquitto and
// mosquitto-clients), the broker it must interoperate with in device-only mode.

// startMosquitto runs mosquitto for the test, open to anonymous clients as the device's broker
// is in these tests.
func startMosquitto(t *testing.T, cfg mqtttest.MosquittoConfig) *mqtttest.Mosquitto {
	t.Helper()
	cfg.Extra = append(cfg.Extra, "allow_anonymous true")
	return mqtttest.StartMosquitto(t, cfg)
}

// mosquittoPub publishes one message with mosquitto_pub; extra are more arguments, e.g. "-r".
func mosquittoPub(t *testing.T, port int, topic, payload string, extra ...string) {
	t.Helper()
	bin := mqtttest.RequireTool(t, "mosquitto_pub", "mosquitto-clients")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	args := append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-q", "1", "-t", topic, "-m", payload}, extra...)
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub %s %q: %v\n%s", topic, payload, err, out)
	}
}

// mosquittoSubOne returns the first message on topic, i.e. the retained one for a late
// subscriber, via mosquitto_sub -C 1.
func mosquittoSubOne(t *testing.T, port int, topic string) string {
	t.Helper()
	bin := mqtttest.RequireTool(t, "mosquitto_sub", "mosquitto-clients")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-h", "127.0.0.1", "-p", strconv.Itoa(port),
		"-t", topic, "-C", "1", "-W", "5").Output()
	if err != nil {
		t.Fatalf("mosquitto_sub -C 1 %s: %v (output %q)", topic, err, out)
	}
	return strings.TrimSuffix(string(out), "\n")
}

// mosquittoSubStream runs mosquitto_sub on topic for the rest of the test and records each
// payload line as it arrives (mosquitto_sub flushes stdout per message). extra are more
// mosquitto_sub arguments, e.g. "-v" for "topic payload" lines. It returns at once, possibly
// before mosquitto_sub has subscribed: wait for a retained message to know it has.
func mosquittoSubStream(t *testing.T, port int, topic string, extra ...string) *watched[[]string] {
	t.Helper()
	bin := mqtttest.RequireTool(t, "mosquitto_sub", "mosquitto-clients")
	args := append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-q", "1", "-t", topic}, extra...)
	cmd := exec.Command(bin, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start mosquitto_sub: %v", err)
	}
	lines := &watched[[]string]{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			l := sc.Text()
			lines.update(func(ls *[]string) { *ls = append(*ls, l) })
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		_ = cmd.Wait()
	})
	return lines
}

// waitLine waits for want at or after index since and returns the index after it.
func waitLine(t *testing.T, w *watched[[]string], since int, want string) int {
	t.Helper()
	var next int
	w.waitFor(t, waitTimeout, fmt.Sprintf("mosquitto_sub line %q", want), func(ls []string) bool {
		for i := min(since, len(ls)); i < len(ls); i++ {
			if ls[i] == want {
				next = i + 1
				return true
			}
		}
		return false
	})
	return next
}

func TestMosquittoTCP(t *testing.T) {
	t.Parallel()
	port := startMosquitto(t, mqtttest.MosquittoConfig{}).Port
	inner, err := NetDialer("tcp://127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	if err != nil {
		t.Fatalf("NetDialer: %v", err)
	}
	k := &killableDialer{inner: inner}
	log, logs := newLogger(t)
	line := &fakeLine{}
	d := newTestDevice(t, k.dial, line, log, "tcp mosquitto")
	if err := d.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	logs.waitMsg(t, 0, "status published")
	logs.waitMsg(t, 0, "state published", "value", "0")
	if got := mosquittoSubOne(t, port, "raspberry/status"); got != `{"status": "On"}` {
		t.Fatalf("retained status = %q", got)
	}

	// A command from mosquitto_pub drives the line; a late subscriber gets the retained state.
	mark := logs.mark()
	mosquittoPub(t, port, "raspberry/led", "1")
	line.waitValue(t, 1)
	logs.waitMsg(t, mark, "state published", "value", "1")
	if got := mosquittoSubOne(t, port, "raspberry/led/state"); got != "1" {
		t.Fatalf("retained state = %q, want 1", got)
	}
	mark = logs.mark()
	mosquittoPub(t, port, "raspberry/led", `{"state":"TOGGLE"}`)
	line.waitValue(t, 0)
	logs.waitMsg(t, mark, "state published", "value", "0")
	if got := mosquittoSubOne(t, port, "raspberry/led/state"); got != "0" {
		t.Fatalf("retained state = %q, want 0", got)
	}

	// Cut the TCP connection without DISCONNECT: mosquitto publishes the will, then the device
	// reconnects and says On again.
	status := mosquittoSubStream(t, port, "raspberry/status")
	pos := waitLine(t, status, 0, `{"status": "On"}`) // the retained one
	mark = logs.mark()
	k.killAll()
	pos = waitLine(t, status, pos, `{"status": "Off"}`)
	waitLine(t, status, pos, `{"status": "On"}`)
	logs.waitMsg(t, mark, "connection to broker lost")
	logs.waitMsg(t, mark, "connected to broker")

	// Still subscribed after the reconnection.
	mosquittoPub(t, port, "raspberry/led", "ON")
	line.waitValue(t, 1)

	closeDevice(t, d)
	if v, _ := line.Value(); v != 0 {
		t.Fatalf("line = %d after Close, want 0", v)
	}
	if got := mosquittoSubOne(t, port, "raspberry/status"); got != `{"status": "Off"}` {
		t.Fatalf("retained status after Close = %q", got)
	}
	if got := mosquittoSubOne(t, port, "raspberry/led/state"); got != "0" {
		t.Fatalf("retained state after Close = %q, want 0", got)
	}
}

// TestMosquittoDownAtStart: the broker is not running when the device starts; Start returns
// anyway and the device connects once mosquitto comes up. The device is given a relay's
// address, which refuses it until mosquitto runs (on ports of its own, picked and retried).
func TestMosquittoDownAtStart(t *testing.T) {
	t.Parallel()
	relay := mqtttest.NewRelay(t)
	dial, err := NetDialer("mqtt://"+relay.Addr(), 5*time.Second)
	if err != nil {
		t.Fatalf("NetDialer: %v", err)
	}
	log, logs := newLogger(t)
	line := &fakeLine{}
	d := newTestDevice(t, dial, line, log, "late mosquitto")
	if err := d.Start(t.Context()); err != nil {
		t.Fatalf("Start with the broker down: %v", err)
	}
	logs.waitMsg(t, 0, "cannot connect to broker, retrying in the background")

	port := startMosquitto(t, mqtttest.MosquittoConfig{}).Port
	relay.Forward("127.0.0.1:" + strconv.Itoa(port))
	logs.waitMsg(t, 0, "status published")
	if got := mosquittoSubOne(t, port, "raspberry/status"); got != `{"status": "On"}` {
		t.Fatalf("retained status = %q", got)
	}
	mosquittoPub(t, port, "raspberry/led", "true")
	line.waitValue(t, 1)
	closeDevice(t, d)
}

// TestMosquittoWebSocket: device-only over ws:// to mosquitto's websockets listener.
func TestMosquittoWebSocket(t *testing.T) {
	t.Parallel()
	m := startMosquitto(t, mqtttest.MosquittoConfig{WebSocket: true})
	port := m.Port
	dial, err := NetDialer("ws://127.0.0.1:"+strconv.Itoa(m.WebSocketPort)+"/mqtt", 5*time.Second)
	if err != nil {
		t.Fatalf("NetDialer: %v", err)
	}
	log, logs := newLogger(t)
	line := &fakeLine{}
	d := newTestDevice(t, dial, line, log, "ws mosquitto")
	if err := d.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	logs.waitMsg(t, 0, "status published")
	mark := logs.mark()
	mosquittoPub(t, port, "raspberry/led", "1")
	line.waitValue(t, 1)
	logs.waitMsg(t, mark, "state published", "value", "1")
	if got := mosquittoSubOne(t, port, "raspberry/led/state"); got != "1" {
		t.Fatalf("retained state = %q, want 1", got)
	}
	closeDevice(t, d)
	if got := mosquittoSubOne(t, port, "raspberry/status"); got != `{"status": "Off"}` {
		t.Fatalf("retained status after Close = %q", got)
	}
}
