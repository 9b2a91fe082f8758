package device

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/pimqtt/pimqtt/auth"
	"github.com/pimqtt/pimqtt/mqtttest"
)

// The device survives what the broker side does to it: a broker that refuses its password
// (capped backoff, no busy loop) and a slow broker flooding it with commands (the message
// handler never blocks, so keepalive keeps working). Cuts without FIN, broker restarts and
// shutdown run against the real binary in the root package's survive_test.go.

// TestSurviveRefusedPassword: a broker that refuses the device's password, at start or after a
// connection was up, gets attempts no more often than the cap on the backoff allows, and one
// error line per outage that says what to fix.
func TestSurviveRefusedPassword(t *testing.T) {
	t.Parallel()
	pwfile := filepath.Join(t.TempDir(), "passwd")
	if err := auth.SetPassword(pwfile, "pi", "raspberry", true); err != nil {
		t.Fatal(err)
	}
	// accepting knows the device's password; refusing has another one for the same user.
	accepting := startMosquitto(t, mqtttest.MosquittoConfig{})
	other := filepath.Join(t.TempDir(), "passwd")
	if err := auth.SetPassword(other, "pi", "changed", true); err != nil {
		t.Fatal(err)
	}
	refusing := mqtttest.StartMosquitto(t, mqtttest.MosquittoConfig{Extra: []string{
		"allow_anonymous false", "password_file " + other}})
	addr := func(m *mqtttest.Mosquitto) string { return "127.0.0.1:" + strconv.Itoa(m.Port) }

	const (
		maxInterval = 400 * time.Millisecond
		window      = 3 * time.Second
		// An attempt at each end of the window and one per maxInterval between.
		maxAttempts = int(window/maxInterval) + 1
	)
	tests := []struct {
		name string
		// connectedFirst: the device is up on accepting before the relay sends it to refusing,
		// so it backs off exponentially (from reconnectGrace) rather than at the fixed
		// first-connection interval.
		connectedFirst bool
	}{
		{"refused from the start", false},
		{"refused after a connection", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			relay := mqtttest.NewRelay(t)
			relay.Forward(addr(refusing))
			if tt.connectedFirst {
				relay.Forward(addr(accepting))
			}
			inner, err := NetDialer("tcp://"+relay.Addr(), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			k := &killableDialer{inner: inner}
			log, logs := newLogger(t)
			d := newSurviveDevice(t, Options{Dial: k.dial, BrokerLabel: "refusing mosquitto", Logger: log,
				Hints: testHints, Username: "pi", Password: "raspberry", MaxReconnectInterval: maxInterval,
				Outputs: []Output{{Name: "led", CommandTopic: "raspberry/led", Line: &fakeLine{}}}})
			if err := d.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			if tt.connectedFirst {
				waitClosed(t, d.Ready(), "Ready on the accepting broker")
				relay.Forward(addr(refusing))
				k.killAll()
			}
			logs.waitMsg(t, 0, msgRefusedCredentials)
			// A fixed window of measurement, not a wait for an event: count what the device does
			// in it.
			before := k.dials.get()
			time.Sleep(window)
			attempts := k.dials.get() - before
			t.Logf("%d attempts in %v with the backoff capped at %v (at most %d allowed)", attempts, window, maxInterval, maxAttempts)
			if attempts > maxAttempts {
				t.Errorf("%d connection attempts in %v, want at most %d: the backoff cap of %v is not kept", attempts, window, maxAttempts, maxInterval)
			}
			if attempts < 2 {
				t.Errorf("%d connection attempts in %v: the device stopped retrying", attempts, window)
			}
			if got := logs.all(msgRefusedCredentials); len(got) != 1 {
				t.Errorf("%d refusal reports in one outage, want 1: %v", len(got), got)
			} else if want := "check " + testHints.Credentials; got[0].Attrs["fix"] != want {
				t.Errorf("refusal logged with fix %q, want %q", got[0].Attrs["fix"], want)
			}
		})
	}
}

// TestSurviveCommandFlood: a flood of commands through a slow link (every byte held 50 ms each
// way) is applied in full, in bounded time, without the connection dropping. The device's
// message handler never waits on the network; one that did (waiting for its state's PUBACK,
// the classic paho deadlock) would stall paho's reader behind the next command, PINGRESPs
// included, and keepalive would drop the connection ("pingresp not received").
func TestSurviveCommandFlood(t *testing.T) {
	t.Parallel()
	const (
		commands  = 3000
		linkDelay = 200 * time.Millisecond
		budget    = 30 * time.Second // measured: 1.5 s; generous for -race on a busy machine
	)
	// No cap on mosquitto's queue for the device: the test is about the device, and every
	// command must reach it.
	m := startMosquitto(t, mqtttest.MosquittoConfig{Extra: []string{"max_queued_messages 0"}})
	relay := mqtttest.NewRelay(t)
	relay.Forward("127.0.0.1:" + strconv.Itoa(m.Port))
	dial, err := NetDialer("tcp://"+relay.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	log, logs := newLogger(t)
	line := &fakeLine{}
	d := newSurviveDevice(t, Options{Dial: dial, BrokerLabel: "slow mosquitto", Logger: log,
		KeepAlive: time.Second, // the shortest there is: a stalled reader shows soonest
		Outputs:   []Output{{Name: "led", CommandTopic: "raspberry/led", Line: line}}})
	if err := d.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, d.Ready(), "Ready")
	relay.SetDelay(linkDelay)

	pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://127.0.0.1:" + strconv.Itoa(m.Port)).
		SetClientID("flood-" + t.Name()).SetAutoReconnect(false))
	if tok := pub.Connect(); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	defer pub.Disconnect(100)
	start := time.Now()
	toks := make([]mqtt.Token, commands)
	for i := range commands {
		// Ends on "1" (i odd): the line's last value says the last command was applied.
		toks[i] = pub.Publish("raspberry/led", 1, false, strconv.Itoa(i%2))
	}
	for i, tok := range toks {
		if !tok.WaitTimeout(budget) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
	line.w.waitFor(t, budget, fmt.Sprintf("%d commands applied", commands), func(s lineState) bool {
		return len(s.sets) >= commands
	})
	applied := time.Since(start)
	if got := line.w.get(); got.value != 1 || len(got.sets) != commands {
		t.Fatalf("after the flood: line %d after %d sets, want 1 after %d", got.value, len(got.sets), commands)
	}
	t.Logf("%d commands through a link delaying %v each way applied in %v", commands, linkDelay, applied)
	if lost := logs.all("connection to broker lost"); len(lost) > 0 {
		t.Fatalf("the connection dropped during the flood: %v", lost)
	}
	if n := len(logs.all("connected to broker")); n != 1 {
		t.Fatalf("%d connections during the flood, want the first one only", n)
	}
}

// newSurviveDevice is New with Close at cleanup; unlike newTestDeviceOpts it keeps the
// keepalive and backoff cap the test chose.
func newSurviveDevice(t *testing.T, o Options) *Device {
	t.Helper()
	if o.ClientID == "" {
		o.ClientID = "pimqtt-test-" + strings.ReplaceAll(t.Name(), "/", "-")
	}
	d, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = d.Close(ctx)
	})
	return d
}
