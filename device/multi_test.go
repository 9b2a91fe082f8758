package device

import (
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/pimqtt/pimqtt/mqtttest"
)

// multiRig is a device with two outputs (led on raspberry/led with the default state topic,
// relay1 with an explicit one) and one input (button), as the multi-line tests use it.
type multiRig struct {
	led, relay *fakeLine
	button     *fakeInput
	store      *recStore
	d          *Device
}

const (
	ledCmd      = "raspberry/led"
	ledState    = "raspberry/led/state"
	relayCmd    = "raspberry/relay1"
	relayState  = "raspberry/relay1/level"
	buttonState = "raspberry/button"
	statusTopic = "raspberry/status"
)

func newMultiRig(t *testing.T, dial DialFunc, label string) (*multiRig, *logRecorder) {
	t.Helper()
	log, logs := newLogger(t)
	r := &multiRig{led: &fakeLine{}, relay: &fakeLine{}, button: newFakeInput(1), store: &recStore{}}
	r.d = newTestDeviceOpts(t, Options{
		Dial:        dial,
		BrokerLabel: label,
		Logger:      log,
		Store:       r.store,
		Outputs: []Output{
			{Name: "led", CommandTopic: ledCmd, Line: r.led},
			{Name: "relay1", CommandTopic: relayCmd, StateTopic: relayState, Line: r.relay},
		},
		Inputs: []Input{{Name: "button", StateTopic: buttonState, Line: r.button}},
	})
	return r, logs
}

// waitStore waits until the store has seen exactly want, in order.
func (r *multiRig) waitStore(t *testing.T, want ...storeSet) {
	t.Helper()
	r.store.w.waitFor(t, waitTimeout, fmt.Sprintf("store sets %v", want), func(got []storeSet) bool {
		return slices.Equal(got, want)
	})
}

// waitStates waits, in the Mochi recorder, for every topic → payload after position since, in
// any order between topics, and returns the position after the last of them.
func (b *mochiBroker) waitStates(t *testing.T, since int, want map[string]string) int {
	t.Helper()
	end := since
	for topic, payload := range want {
		end = max(end, b.waitMsg(t, since, topic, payload))
	}
	return end
}

func (b *mochiBroker) checkRetained(t *testing.T, want map[string]string) {
	t.Helper()
	for topic, payload := range want {
		if got, ok := b.retained(topic); !ok || got != payload {
			t.Errorf("retained %s = %q (present %v), want %q", topic, got, ok, payload)
		}
	}
}

// payloadsOn returns the payloads published on topic after position since, in order.
func (b *mochiBroker) payloadsOn(since int, topic string) []string {
	var out []string
	ms := b.msgs.get()
	for _, m := range ms[min(since, len(ms)):] {
		if m.Topic == topic {
			out = append(out, m.Payload)
		}
	}
	return out
}

// TestMultiLinesMochi: two outputs and an input against the in-process Mochi. Commands drive
// only their own output, input events are published retained in order, a reconnection
// republishes every state, the store sees the commanded levels, and Close drives both outputs
// to 0 without telling the store.
func TestMultiLinesMochi(t *testing.T) {
	b := newMochiBroker(t)
	k := &killableDialer{inner: b.dial}
	r, logs := newMultiRig(t, k.dial, "in-process")
	if err := r.d.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}

	// On connect: status On, then every state, the input's from its line.
	pos := b.waitMsg(t, 0, statusTopic, statusOn)
	pos = b.waitStates(t, pos, map[string]string{ledState: "0", relayState: "0", buttonState: "1"})
	b.checkRetained(t, map[string]string{statusTopic: statusOn, ledState: "0", relayState: "0", buttonState: "1"})

	// A command drives only its own output, TOGGLE relative to that output's level.
	b.publish(t, relayCmd, []byte("1"))
	r.relay.waitValue(t, 1)
	pos = b.waitMsg(t, pos, relayState, "1")
	b.publish(t, ledCmd, []byte("TOGGLE")) // the led is 0 (the relay is 1): toggles to 1
	r.led.waitValue(t, 1)
	pos = b.waitMsg(t, pos, ledState, "1")
	b.publish(t, relayCmd, []byte(`{"state":"OFF"}`))
	r.relay.waitValue(t, 0)
	pos = b.waitMsg(t, pos, relayState, "0")
	if got := r.led.sets(); !slices.Equal(got, []int{1}) {
		t.Errorf("led sets = %v, want [1]: commands for relay1 reached it", got)
	}
	if got := r.relay.sets(); !slices.Equal(got, []int{1, 0}) {
		t.Errorf("relay sets = %v, want [1 0]", got)
	}
	r.waitStore(t, storeSet{"relay1", 1}, storeSet{"led", 1}, storeSet{"relay1", 0})
	logs.waitMsg(t, 0, "line changed", "name", "relay1", "topic", relayCmd, "value", "1")
	logs.waitMsg(t, 0, "line changed", "name", "led", "topic", ledCmd, "value", "1")
	if n := len(logs.all("line changed")); n != 3 {
		t.Errorf("%d \"line changed\" log lines, want 3", n)
	}
	// An unknown payload touches nothing and is not stored.
	b.publish(t, relayCmd, []byte("BLINK"))
	logs.waitMsg(t, 0, "unknown payload", "name", "relay1")

	// Input events: each published, retained, in order.
	inPos := pos
	for _, v := range []int{0, 1, 0} {
		r.button.send(t, v)
		pos = b.waitMsg(t, pos, buttonState, strconv.Itoa(v))
	}
	if got := b.payloadsOn(inPos, buttonState); !slices.Equal(got, []string{"0", "1", "0"}) {
		t.Errorf("button states = %v, want [0 1 0]", got)
	}
	b.checkRetained(t, map[string]string{buttonState: "0", ledState: "1", relayState: "0"})

	// Cut the connection. While offline the button changes; after the reconnection every
	// state is republished after the status On, the button's with its new level.
	k.hold()
	logsPos := logs.mark()
	k.killAll()
	pos = b.waitMsg(t, pos, statusTopic, statusOff)
	logs.waitMsg(t, logsPos, "connection to broker lost")
	b.active.waitFor(t, waitTimeout, "Mochi to drop the old connection", func(n int) bool { return n == 0 })
	r.button.send(t, 1)
	k.release()
	pos = b.waitMsg(t, pos, statusTopic, statusOn)
	pos = b.waitStates(t, pos, map[string]string{ledState: "1", relayState: "0", buttonState: "1"})
	b.checkRetained(t, map[string]string{statusTopic: statusOn, ledState: "1", relayState: "0", buttonState: "1"})

	// Resubscribed to every command topic.
	b.publish(t, relayCmd, []byte("on"))
	r.relay.waitValue(t, 1)
	pos = b.waitMsg(t, pos, relayState, "1")
	b.publish(t, ledCmd, []byte("0"))
	r.led.waitValue(t, 0)
	pos = b.waitMsg(t, pos, ledState, "0")
	r.waitStore(t, storeSet{"relay1", 1}, storeSet{"led", 1}, storeSet{"relay1", 0},
		storeSet{"relay1", 1}, storeSet{"led", 0})

	// The input's events channel closing (its line closed) stops only that reader.
	close(r.button.events)
	logs.waitMsg(t, 0, "input events closed; its changes are no longer published", "name", "button")

	closeDevice(t, r.d)
	if v, _ := r.relay.Value(); v != 0 {
		t.Errorf("relay = %d after Close, want 0", v)
	}
	if v, _ := r.led.Value(); v != 0 {
		t.Errorf("led = %d after Close, want 0", v)
	}
	b.checkRetained(t, map[string]string{statusTopic: statusOff, ledState: "0", relayState: "0", buttonState: "1"})
	// Close's safe state is not a command: the store still holds the commanded levels.
	if got := r.store.w.get(); len(got) != 5 {
		t.Errorf("store sets after Close = %v, want the 5 commanded ones only", got)
	}
}

// TestInputBurst: an input-only device given events faster than it can publish them. Every
// event is published in order unless reported skipped, and the last one always is.
func TestInputBurst(t *testing.T) {
	b := newMochiBroker(t)
	log, logs := newLogger(t)
	in := newFakeInput(0)
	d := newTestDeviceOpts(t, Options{
		Dial: b.dial, BrokerLabel: "in-process", Logger: log,
		Inputs: []Input{{Name: "sensor", StateTopic: "raspberry/sensor", Line: in}},
	})
	if err := d.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	pos := b.waitMsg(t, 0, statusTopic, statusOn)
	pos = b.waitMsg(t, pos, "raspberry/sensor", "0")

	const n = 501
	var sent []string
	for i := range n {
		v := (i + 1) % 2
		in.send(t, v)
		sent = append(sent, strconv.Itoa(v))
	}
	last := sent[n-1]
	// The last event is always published, but earlier equal values may precede it: wait until
	// the count adds up with what was reported skipped.
	skipped := func() int {
		s := 0
		for _, r := range logs.all("input changed faster than its state could be published; intermediate values skipped") {
			k, _ := strconv.Atoi(r.Attrs["skipped"])
			s += k
		}
		return s
	}
	b.msgs.waitFor(t, waitTimeout, "every event published or reported skipped", func(ms []msg) bool {
		got := 0
		for _, m := range ms[pos:] {
			if m.Topic == "raspberry/sensor" {
				got++
			}
		}
		return got+skipped() == n
	})
	got := b.payloadsOn(pos, "raspberry/sensor")
	if got[len(got)-1] != last {
		t.Fatalf("last published %q, want %q", got[len(got)-1], last)
	}
	if !isSubsequence(got, sent) {
		t.Fatalf("published %v is not in event order", got)
	}
	if v, _ := b.retained("raspberry/sensor"); v != last {
		t.Fatalf("retained %q, want %q", v, last)
	}
	t.Logf("%d events: %d published, %d skipped", n, len(got), skipped())
	closeDevice(t, d)
	if got, _ := b.retained(statusTopic); got != statusOff {
		t.Fatalf("retained status after Close = %q", got)
	}
}

func isSubsequence(sub, seq []string) bool {
	i := 0
	for _, s := range seq {
		if i < len(sub) && sub[i] == s {
			i++
		}
	}
	return i == len(sub)
}

// TestMosquittoMultiLines: two outputs and an input against the real mosquitto over TCP,
// including a cut connection.
func TestMosquittoMultiLines(t *testing.T) {
	t.Parallel()
	port := startMosquitto(t, mqtttest.MosquittoConfig{}).Port
	inner, err := NetDialer("tcp://127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	if err != nil {
		t.Fatalf("NetDialer: %v", err)
	}
	k := &killableDialer{inner: inner}
	r, logs := newMultiRig(t, k.dial, "tcp mosquitto")
	// A retained sentinel under the filter: once mosquitto_sub prints it, it is subscribed
	// and sees everything the device publishes from then on.
	mosquittoPub(t, port, "raspberry/sentinel", "here", "-r")
	all := mosquittoSubStream(t, port, "raspberry/#", "-v")
	pos := waitLine(t, all, 0, "raspberry/sentinel here")
	if err := r.d.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	pos = waitLine(t, all, pos, statusTopic+" "+statusOn)
	pos = waitLines(t, all, pos, ledState+" 0", relayState+" 0", buttonState+" 1")

	mosquittoPub(t, port, relayCmd, "1")
	r.relay.waitValue(t, 1)
	pos = waitLine(t, all, pos, relayState+" 1")
	mosquittoPub(t, port, ledCmd, "TOGGLE")
	r.led.waitValue(t, 1)
	pos = waitLine(t, all, pos, ledState+" 1")
	if got := r.relay.sets(); !slices.Equal(got, []int{1}) {
		t.Errorf("relay sets = %v, want [1]", got)
	}
	r.waitStore(t, storeSet{"relay1", 1}, storeSet{"led", 1})

	for _, v := range []int{0, 1, 0} {
		r.button.send(t, v)
		pos = waitLine(t, all, pos, buttonState+" "+strconv.Itoa(v))
	}
	if got := mosquittoSubOne(t, port, buttonState); got != "0" {
		t.Fatalf("retained button state = %q, want 0", got)
	}
	if got := mosquittoSubOne(t, port, relayState); got != "1" {
		t.Fatalf("retained relay state = %q, want 1", got)
	}

	// Cut the TCP connection: the will, then On and every state again.
	mark := logs.mark()
	k.killAll()
	pos = waitLine(t, all, pos, statusTopic+" "+statusOff)
	pos = waitLine(t, all, pos, statusTopic+" "+statusOn)
	pos = waitLines(t, all, pos, ledState+" 1", relayState+" 1", buttonState+" 0")
	logs.waitMsg(t, mark, "connected to broker")
	mosquittoPub(t, port, relayCmd, "OFF")
	r.relay.waitValue(t, 0)
	waitLine(t, all, pos, relayState+" 0")
	r.waitStore(t, storeSet{"relay1", 1}, storeSet{"led", 1}, storeSet{"relay1", 0})

	closeDevice(t, r.d)
	for topic, want := range map[string]string{statusTopic: statusOff, ledState: "0", relayState: "0", buttonState: "0"} {
		if got := mosquittoSubOne(t, port, topic); got != want {
			t.Errorf("retained %s after Close = %q, want %q", topic, got, want)
		}
	}
}

// waitLines waits for every one of want after since, in any order, and returns the position
// after the last of them.
func waitLines(t *testing.T, w *watched[[]string], since int, want ...string) int {
	t.Helper()
	end := since
	for _, l := range want {
		end = max(end, waitLine(t, w, since, l))
	}
	return end
}
