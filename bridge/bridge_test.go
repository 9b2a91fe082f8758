package bridge

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pimqtt/pimqtt/mqtttest"
)

// localKinds are the local brokers every end-to-end test runs against: pimqtt's own (as in
// all-in-one mode) and a real mosquitto, which accepts a bridge's 0x84 too.
var localKinds = []string{"pimqtt", "mosquitto"}

// markers makes payloads no other message has.
var markers atomic.Int64

func marker(what string) string { return fmt.Sprintf("marker-%s-%d", what, markers.Add(1)) }

// settle makes sure every message the bridge may still forward because of what was published
// so far, echoes included, has arrived, without sleeping. A marker published on side a after
// the messages under test is waited for on side b; then a marker published on b is waited for
// on a. MQTT keeps the order of one publisher's messages to a subscriber at every hop, so
// anything b sent the bridge before its marker (an echo of a's messages included: b sent it
// before it delivered a's marker to the observer) reaches a before that marker.
func settle(t *testing.T, a *observer, aTopic string, b *observer, bTopic string) {
	t.Helper()
	m1 := marker("ab")
	a.publish(aTopic, 1, false, m1)
	b.waitMsg(bTopic, m1)
	m2 := marker("ba")
	b.publish(bTopic, 1, false, m2)
	a.waitMsg(aTopic, m2)
}

// stateTopic is the bridge's local state topic. Local observers subscribe to it by its exact
// name: Mochi 2.7.9 reads a topic's retained path without a lock while it scans a wildcard
// filter for retained messages, and the race detector catches it against the bridge's
// retained state publish (upstream mochi-mqtt/server issue 200).
const stateTopic = "$SYS/broker/connection/cloud/state"

// lastState returns the last message seen on the local state topic, or "".
func lastState(ms []rec) string {
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].Topic == stateTopic {
			return ms[i].Payload
		}
	}
	return ""
}

// TestBridgeBothWays bridges a tree both ways with prefixes that remap it, between a local
// broker and a real mosquitto as the remote: a message published on either side is seen
// exactly once on the other side and exactly once on its own (no echo); the state topic says
// 1 while connected and 0 after Close.
func TestBridgeBothWays(t *testing.T) {
	for _, kind := range localKinds {
		t.Run("local="+kind, func(t *testing.T) {
			log, _ := newLog(t)
			local := startLocal(t, kind, log)
			_, remoteDial := startRemote(t)
			topic, err := ParseTopic("# both 1 raspberry/ garage/raspberry/")
			if err != nil {
				t.Fatal(err)
			}
			lo := newObserver(t, "local", local.dial, "raspberry/#", stateTopic)
			ro := newObserver(t, "remote", remoteDial, "garage/#", "$SYS/broker/connection/+/state")
			b := startBridge(t, Options{
				Remotes: []Remote{{Label: "mosquitto", Dial: remoteDial}},
				Topics:  []Topic{topic},
				Local:   local.dial,
				Logger:  log,
			})
			waitConnected(t, b)
			lo.waitFor("state 1", func(ms []rec) bool { return lastState(ms) == "1" })
			// At the remote, as mosquitto's notifications: under the client id.
			remoteState := "$SYS/broker/connection/" + b.opts.ClientID + "/state"
			ro.waitMsg(remoteState, "1")
			// A topic outside the tree stays local; the observers prove it below.
			lo.publish("kitchen/led", 1, false, "stays")

			// Local → remote, QoS 1 and QoS 0.
			lo.publish("raspberry/led", 1, false, "ON")
			lo.publish("raspberry/led", 0, false, "ON-q0")
			settle(t, lo, "raspberry/led", ro, "garage/raspberry/led")
			// Remote → local.
			ro.publish("garage/raspberry/led", 1, false, "OFF")
			settle(t, ro, "garage/raspberry/led", lo, "raspberry/led")

			for _, c := range []struct {
				o            *observer
				topic, value string
			}{
				{lo, "raspberry/led", "ON"}, {ro, "garage/raspberry/led", "ON"},
				{lo, "raspberry/led", "ON-q0"}, {ro, "garage/raspberry/led", "ON-q0"},
				{lo, "raspberry/led", "OFF"}, {ro, "garage/raspberry/led", "OFF"},
			} {
				if n := count(c.o.all(), c.topic, c.value); n != 1 {
					t.Errorf("%s saw %s %q %d times, want exactly once", c.o.name, c.topic, c.value, n)
				}
			}
			for _, m := range ro.all() {
				if strings.Contains(m.Topic, "kitchen") {
					t.Errorf("remote got %v from outside the bridged tree", m)
				}
			}

			// A retained message: the remote keeps it, with its retain flag, for a new
			// subscriber.
			lo.publish("raspberry/led/state", 1, true, "1")
			ro.waitMsg("garage/raspberry/led/state", "1")
			late := newObserver(t, "remote-late", remoteDial, "garage/raspberry/led/state")
			got := late.waitFor("retained state", func(ms []rec) bool { return len(ms) > 0 })
			if got[0] != (rec{"garage/raspberry/led/state", "1", true}) {
				t.Errorf("a new subscriber at the remote got %+v, want the retained state 1", got[0])
			}

			if err := b.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			lo.waitFor("state 0 after Close", func(ms []rec) bool { return lastState(ms) == "0" })
			ro.waitMsg(remoteState, "0")
		})
	}
}

// TestBridgeRemoteWill cuts the bridge's connection to the remote without a DISCONNECT: the
// remote publishes the bridge's will, state 0, as mosquitto's bridges have it.
func TestBridgeRemoteWill(t *testing.T) {
	log, _ := newLog(t)
	local := startLocal(t, "pimqtt", log)
	remote, _ := startRemote(t)
	relay := mqtttest.NewRelay(t)
	relay.Forward(fmt.Sprintf("127.0.0.1:%d", remote.Port))
	topic, _ := ParseTopic("raspberry/# out 1")
	ro := newObserver(t, "remote", tcpDial(fmt.Sprintf("127.0.0.1:%d", remote.Port)), "$SYS/broker/connection/+/state")
	b := startBridge(t, Options{
		Remotes: []Remote{{Label: "relay", Dial: tcpDial(relay.Addr())}},
		Topics:  []Topic{topic},
		Local:   local.dial,
		Logger:  log,
	})
	waitConnected(t, b)
	remoteState := "$SYS/broker/connection/" + b.opts.ClientID + "/state"
	ro.waitMsg(remoteState, "1")
	relay.Forward("") // the remote unreachable: no reconnection meanwhile
	relay.Drop()
	ro.waitMsg(remoteState, "0")
}

// TestBridgeRefusedCredentials: a remote that refuses the bridge's user name and password is
// logged once, with the broker's answer, and the password appears in no log line.
func TestBridgeRefusedCredentials(t *testing.T) {
	log, logs := newLog(t)
	local := startLocal(t, "pimqtt", log)
	m := mqtttest.StartMosquitto(t, mqtttest.MosquittoConfig{Extra: []string{"allow_anonymous false"}})
	const password = "s3cret-Pa55"
	topic, _ := ParseTopic("raspberry/# out 1")
	b := startBridge(t, Options{
		Remotes:  []Remote{{Label: "mosquitto", Dial: tcpDial(fmt.Sprintf("127.0.0.1:%d", m.Port))}},
		Topics:   []Topic{topic},
		Local:    local.dial,
		Logger:   log,
		Username: "bridge",
		Password: password,
	})
	line := logs.waitLine("WARN cannot connect", "side=remote")
	if !strings.Contains(line, "not Authorized") || !strings.Contains(line, "hint=check the bridge's user name and password") {
		t.Errorf("refusal logged as %q, want the broker's answer (not Authorized) and a hint", line)
	}
	logs.waitLine("connection attempt failed", "side=remote", "attempt=2")
	if err := b.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if leaks := logs.matching(password); len(leaks) > 0 {
		t.Errorf("the password is in the log: %q", leaks)
	}
	if c := logs.count("WARN cannot connect"); c != 1 {
		t.Errorf("%d warnings for one refusal, want 1", c)
	}
}

// TestBridgeRemoteRestart kills the remote (SIGKILL) and starts another on the same address
// (a relay keeps the address while the broker behind it changes): the bridge says 0, queues
// the QoS 1 messages published locally meanwhile, reconnects, resubscribes and delivers them
// after the outage, in order.
func TestBridgeRemoteRestart(t *testing.T) {
	for _, kind := range localKinds {
		t.Run("local="+kind, func(t *testing.T) {
			log, logs := newLog(t)
			local := startLocal(t, kind, log)
			remote, _ := startRemote(t)
			relay := mqtttest.NewRelay(t)
			relay.Forward(fmt.Sprintf("127.0.0.1:%d", remote.Port))
			relayDial := tcpDial(relay.Addr())
			topic, _ := ParseTopic("raspberry/# both 1")
			lo := newObserver(t, "local", local.dial, "raspberry/#", stateTopic)
			b := startBridge(t, Options{
				Remotes: []Remote{{Label: "relay", Dial: relayDial}},
				Topics:  []Topic{topic},
				Local:   local.dial,
				Logger:  log,
			})
			waitConnected(t, b)
			lo.waitFor("state 1", func(ms []rec) bool { return lastState(ms) == "1" })

			remote.Kill(t)
			lo.waitFor("state 0", func(ms []rec) bool { return lastState(ms) == "0" })
			const n = 20
			for i := range n {
				lo.publish("raspberry/cmd", 1, false, fmt.Sprintf("q%02d", i))
			}
			// Lost while down: QoS 0.
			lo.publish("raspberry/cmd", 0, false, "lost-q0")
			// A few attempts fail before the remote is back; they are logged once.
			logs.waitLine("connection attempt failed", "side=remote", "attempt=3")

			again, _ := startRemote(t)
			ro := newObserver(t, "remote", tcpDial(fmt.Sprintf("127.0.0.1:%d", again.Port)), "raspberry/#")
			relay.Forward(fmt.Sprintf("127.0.0.1:%d", again.Port))
			waitConnected(t, b)
			lo.waitFor("state 1 again", func(ms []rec) bool { return lastState(ms) == "1" })
			got := ro.waitFor("the queued messages", func(ms []rec) bool { return count(ms, "raspberry/cmd", fmt.Sprintf("q%02d", n-1)) > 0 })
			var seq []string
			for _, m := range got {
				if m.Topic == "raspberry/cmd" {
					seq = append(seq, m.Payload)
				}
			}
			want := make([]string, n)
			for i := range want {
				want[i] = fmt.Sprintf("q%02d", i)
			}
			if !slices.Equal(seq, want) {
				t.Errorf("remote got %v, want %v", seq, want)
			}
			// Resubscribed: the remote's messages come in again.
			ro.publish("raspberry/cmd", 1, false, "from-remote")
			lo.waitMsg("raspberry/cmd", "from-remote")
			settle(t, lo, "raspberry/cmd", ro, "raspberry/cmd")
			if c := count(ro.all(), "raspberry/cmd", "lost-q0"); c != 0 {
				t.Errorf("a QoS 0 message published while the remote was down arrived %d times", c)
			}
			// One warning for the outage, however many attempts it took.
			if c := logs.count("WARN cannot connect", "side=remote"); c != 1 {
				t.Logf("%s", strings.Join(logs.matching("side=remote"), "\n"))
				t.Errorf("%d warnings about failed connection attempts during one outage, want 1", c)
			}
		})
	}
}

// TestBridgeQueueLimit fills the queue while the remote is down: one warning names the
// setting, the first QueueLimit messages are kept and delivered, the rest are dropped and
// counted.
func TestBridgeQueueLimit(t *testing.T) {
	log, logs := newLog(t)
	local := startLocal(t, "pimqtt", log)
	remote, _ := startRemote(t)
	relay := mqtttest.NewRelay(t)
	relay.Forward(fmt.Sprintf("127.0.0.1:%d", remote.Port))
	topic, _ := ParseTopic("raspberry/# out 1")
	lo := newObserver(t, "local", local.dial, stateTopic)
	b := startBridge(t, Options{
		Remotes:           []Remote{{Label: "relay", Dial: tcpDial(relay.Addr())}},
		Topics:            []Topic{topic},
		Local:             local.dial,
		Logger:            log,
		QueueLimit:        5,
		QueueLimitSetting: "--bridge-queue-limit",
	})
	waitConnected(t, b)
	remote.Kill(t)
	lo.waitFor("state 0", func(ms []rec) bool { return lastState(ms) == "0" })
	for i := range 8 {
		lo.publish("raspberry/cmd", 1, false, fmt.Sprintf("q%d", i))
	}
	line := logs.waitLine("WARN queue for the remote full", "--bridge-queue-limit")
	if !strings.Contains(line, "limit=5") {
		t.Errorf("warning %q does not give the limit", line)
	}

	again, _ := startRemote(t)
	ro := newObserver(t, "remote", tcpDial(fmt.Sprintf("127.0.0.1:%d", again.Port)), "raspberry/#")
	relay.Forward(fmt.Sprintf("127.0.0.1:%d", again.Port))
	logs.waitLine("WARN queue for the remote drained", "dropped=3")
	end := marker("end")
	lo.publish("raspberry/cmd", 1, false, end)
	got := ro.waitFor("end marker", func(ms []rec) bool { return count(ms, "raspberry/cmd", end) > 0 })
	var seq []string
	for _, m := range got {
		seq = append(seq, m.Payload)
	}
	if want := []string{"q0", "q1", "q2", "q3", "q4", end}; !slices.Equal(seq, want) {
		t.Errorf("remote got %v, want %v", seq, want)
	}
	if c := logs.count("WARN queue for the remote full"); c != 1 {
		t.Errorf("%d queue-full warnings, want 1", c)
	}
}

// TestBridgeFailover gives the bridge two remotes: it uses the first, and when that one is
// killed it connects to the second, where messages flow both ways.
func TestBridgeFailover(t *testing.T) {
	log, logs := newLog(t)
	local := startLocal(t, "pimqtt", log)
	r1, dial1 := startRemote(t)
	_, dial2 := startRemote(t)
	topic, _ := ParseTopic("raspberry/# both 1")
	lo := newObserver(t, "local", local.dial, "raspberry/#")
	b := startBridge(t, Options{
		Remotes: []Remote{{Label: "r1", Dial: dial1}, {Label: "r2", Dial: dial2}},
		Topics:  []Topic{topic},
		Local:   local.dial,
		Logger:  log,
	})
	waitConnected(t, b)
	if got := b.Remote(); got != "r1" {
		t.Fatalf("connected to %q, want r1 (the first)", got)
	}
	killed := time.Now()
	r1.Kill(t)
	logs.waitLine("connected to the remote", "remote=r2")
	if got := b.Remote(); got != "r2" {
		t.Fatalf("connected to %q after r1's death, want r2", got)
	}
	t.Logf("failover to r2 %v after the kill", time.Since(killed).Round(time.Millisecond))
	ro := newObserver(t, "r2", dial2, "raspberry/#")
	ro.publish("raspberry/cmd", 1, false, "via-r2")
	lo.waitMsg("raspberry/cmd", "via-r2")
	lo.publish("raspberry/state", 1, false, "back-via-r2")
	ro.waitMsg("raspberry/state", "back-via-r2")
}

// TestBridgeRetainedFreshWins starts a bridge between a Pi whose retained state is fresh and a
// remote that holds a stale retained value for the same topic: the bridge sends the Pi's value
// before subscribing at the remote, so both sides end with the fresh value and the local side
// never sees the stale one.
func TestBridgeRetainedFreshWins(t *testing.T) {
	for _, kind := range localKinds {
		t.Run("local="+kind, func(t *testing.T) {
			log, _ := newLog(t)
			local := startLocal(t, kind, log)
			_, remoteDial := startRemote(t)
			topic, _ := ParseTopic("# both 1 raspberry/ garage/raspberry/")
			lo := newObserver(t, "local", local.dial, "raspberry/#")
			ro := newObserver(t, "remote", remoteDial, "garage/#")
			lo.publish("raspberry/led/state", 1, true, "fresh")
			ro.publish("garage/raspberry/led/state", 1, true, "stale")
			b := startBridge(t, Options{
				Remotes: []Remote{{Label: "mosquitto", Dial: remoteDial}},
				Topics:  []Topic{topic},
				Local:   local.dial,
				Logger:  log,
			})
			waitConnected(t, b)
			ro.waitMsg("garage/raspberry/led/state", "fresh")
			settle(t, lo, "raspberry/led", ro, "garage/raspberry/led")
			if n := count(lo.all(), "raspberry/led/state", "stale"); n != 0 {
				t.Errorf("the local side got the remote's stale retained value %d times", n)
			}
			for _, side := range []struct {
				name, topic string
				dial        DialFunc
			}{{"local", "raspberry/led/state", local.dial}, {"remote", "garage/raspberry/led/state", remoteDial}} {
				late := newObserver(t, side.name+"-late", side.dial, side.topic)
				got := late.waitFor("retained", func(ms []rec) bool { return len(ms) > 0 })
				if got[0].Payload != "fresh" || !got[0].Retained {
					t.Errorf("%s keeps %+v, want the fresh retained value", side.name, got[0])
				}
			}
		})
	}
}

// TestBridgeCloseBounded closes a bridge whose remote never answers, at the two places an
// attempt can hang: the dial, and the CONNECT that gets no CONNACK. Close returns at once
// and says state 0 locally.
func TestBridgeCloseBounded(t *testing.T) {
	tests := []struct {
		name string
		dial func(called chan<- struct{}) DialFunc
	}{
		{"dial hangs", func(called chan<- struct{}) DialFunc {
			return func(ctx context.Context) (net.Conn, error) {
				called <- struct{}{}
				<-ctx.Done()
				return nil, ctx.Err()
			}
		}},
		{"no CONNACK", func(called chan<- struct{}) DialFunc {
			return func(ctx context.Context) (net.Conn, error) {
				c, s := net.Pipe()
				go func() { _, _ = io.Copy(io.Discard, s) }() // reads CONNECT, answers nothing
				called <- struct{}{}
				return c, nil
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, _ := newLog(t)
			local := startLocal(t, "pimqtt", log)
			lo := newObserver(t, "local", local.dial, stateTopic)
			called := make(chan struct{}, 10)
			topic, _ := ParseTopic("raspberry/# out 1")
			b := startBridge(t, Options{
				Remotes: []Remote{{Label: "silent", Dial: tt.dial(called)}},
				Topics:  []Topic{topic},
				Local:   local.dial,
				Logger:  log,
			})
			select {
			case <-called:
			case <-time.After(waitLimit):
				t.Fatal("the remote was never dialled")
			}
			lo.waitFor("state 0", func(ms []rec) bool { return lastState(ms) == "0" })
			start := time.Now()
			if err := b.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("Close took %v with an attempt hanging, want under 3 s", d)
			}
		})
	}
}

// TestBridgeDirections: an out topic only goes out, an in topic only comes in, and a topic in
// neither tree stays where it was published.
func TestBridgeDirections(t *testing.T) {
	log, _ := newLog(t)
	local := startLocal(t, "pimqtt", log)
	_, remoteDial := startRemote(t)
	var topics []Topic
	for _, s := range []string{"out/# out 1", "in/# in 1", "m/# both 1"} {
		tp, err := ParseTopic(s)
		if err != nil {
			t.Fatal(err)
		}
		topics = append(topics, tp)
	}
	lo := newObserver(t, "local", local.dial, "#")
	ro := newObserver(t, "remote", remoteDial, "#")
	b := startBridge(t, Options{
		Remotes: []Remote{{Label: "mosquitto", Dial: remoteDial}},
		Topics:  topics,
		Local:   local.dial,
		Logger:  log,
	})
	waitConnected(t, b)
	lo.publish("out/a", 1, false, "local-out")  // crosses
	lo.publish("in/a", 1, false, "local-in")    // stays
	lo.publish("other/a", 1, false, "local-x")  // stays
	ro.publish("in/a", 1, false, "remote-in")   // crosses
	ro.publish("out/a", 1, false, "remote-out") // stays
	ro.publish("other/a", 1, false, "remote-x") // stays
	settle(t, lo, "m/x", ro, "m/x")
	settle(t, ro, "m/x", lo, "m/x")
	for _, c := range []struct {
		o            *observer
		topic, value string
		want         int
	}{
		{ro, "out/a", "local-out", 1}, {ro, "in/a", "local-in", 0}, {ro, "other/a", "local-x", 0},
		{lo, "in/a", "remote-in", 1}, {lo, "out/a", "remote-out", 0}, {lo, "other/a", "remote-x", 0},
	} {
		if n := count(c.o.all(), c.topic, c.value); n != c.want {
			t.Errorf("%s saw %s %q %d times, want %d", c.o.name, c.topic, c.value, n, c.want)
		}
	}
}

// TestBridgeLocalRefusesBridge: a local broker that refuses protocol level 0x84 (stock Mochi,
// nats-server) answers CONNACK 1; the bridge says what that means.
func TestBridgeLocalRefusesBridge(t *testing.T) {
	log, logs := newLog(t)
	refusing := func(ctx context.Context) (net.Conn, error) {
		c, s := net.Pipe()
		go func() {
			defer s.Close()
			buf := make([]byte, 1024)
			if _, err := s.Read(buf); err != nil { // the CONNECT (paho writes it in one piece)
				return
			}
			_, _ = s.Write([]byte{0x20, 0x02, 0x00, 0x01}) // CONNACK 1: unacceptable protocol version
			_, _ = io.Copy(io.Discard, s)
		}()
		return c, nil
	}
	_, remoteDial := startRemote(t)
	topic, _ := ParseTopic("raspberry/# out 1")
	startBridge(t, Options{
		Remotes: []Remote{{Label: "mosquitto", Dial: remoteDial}},
		Topics:  []Topic{topic},
		Local:   refusing,
		Logger:  log,
	})
	logs.waitLine("WARN cannot connect", "side=local", "does not accept MQTT bridges (protocol level 0x84")
}
