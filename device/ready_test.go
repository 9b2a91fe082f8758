package device

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/pimqtt/pimqtt/mqtttest"
)

// ackGate is a Mochi hook that holds one client's SUBACK (it blocks OnSubscribed, which runs
// after the subscriptions are in place and before the SUBACK is written) and the PUBACK of its
// publishes to one topic (it blocks OnPublish, which runs before the message is retained and
// acknowledged), each until released: a broker that is slow to acknowledge.
type ackGate struct {
	mochi.HookBase
	clientID, topic string

	subHeld, pubHeld chan struct{} // closed when the SUBSCRIBE / the PUBLISH arrives
	subGo, pubGo     chan struct{} // closed by the test to let it through
	subOnce, pubOnce sync.Once
}

func newAckGate(clientID, topic string) *ackGate {
	return &ackGate{clientID: clientID, topic: topic,
		subHeld: make(chan struct{}), pubHeld: make(chan struct{}),
		subGo: make(chan struct{}), pubGo: make(chan struct{})}
}

func (*ackGate) ID() string { return "test-ack-gate" }
func (*ackGate) Provides(b byte) bool {
	return b == mochi.OnSubscribed || b == mochi.OnPublish
}

func (g *ackGate) OnSubscribed(cl *mochi.Client, _ packets.Packet, _ []byte) {
	if cl.ID != g.clientID {
		return
	}
	g.subOnce.Do(func() { close(g.subHeld) })
	<-g.subGo
}

func (g *ackGate) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.ID == g.clientID && pk.TopicName == g.topic {
		g.pubOnce.Do(func() { close(g.pubHeld) })
		<-g.pubGo
	}
	return pk, nil
}

// waitClosed waits for ch to be closed, failing the test after waitTimeout.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitTimeout):
		t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestReadyWaitsForAcks: Ready stays open while the broker holds the SUBACK, and while it
// holds the PUBACK of the state; it closes once both came, and by then the retained status
// and state are in place and a command reaches the line.
func TestReadyWaitsForAcks(t *testing.T) {
	b := newMochiBroker(t)
	const clientID = "pimqtt-test-ready-gate"
	gate := newAckGate(clientID, "raspberry/led/state")
	if err := b.s.AddHook(gate, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // a failed test must not leave Mochi's client goroutines blocked
		for _, ch := range []chan struct{}{gate.subGo, gate.pubGo} {
			if !isClosed(ch) {
				close(ch)
			}
		}
	})
	log, _ := newLogger(t)
	line := &fakeLine{}
	d := newTestDeviceOpts(t, Options{Dial: b.dial, BrokerLabel: "in-process", Logger: log, ClientID: clientID,
		Outputs: []Output{{Name: "led", CommandTopic: "raspberry/led", Line: line}}})
	if err := d.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}

	waitClosed(t, gate.subHeld, "the device's SUBSCRIBE")
	if isClosed(d.Ready()) {
		t.Fatal("Ready closed while the broker holds the SUBACK")
	}
	close(gate.subGo)
	waitClosed(t, gate.pubHeld, "the device's state PUBLISH")
	if isClosed(d.Ready()) {
		t.Fatal("Ready closed while the broker holds the state's PUBACK")
	}
	close(gate.pubGo)
	waitClosed(t, d.Ready(), "Ready")
	b.checkRetained(t, map[string]string{"raspberry/status": statusOn, "raspberry/led/state": "0"})

	b.publish(t, "raspberry/led", []byte("1"))
	line.waitValue(t, 1)
	closeDevice(t, d)
	if !isClosed(d.Ready()) {
		t.Fatal("Ready reopened")
	}
}

// TestReadyCommandNeverLost: a command published the moment Ready closes always reaches the
// line, over many fresh devices (each a fresh broker, so nothing is left over from a previous
// round). Each round also has an input, whose state must be retained by then too.
func TestReadyCommandNeverLost(t *testing.T) {
	const rounds = 30
	for i := range rounds {
		b := newMochiBroker(t)
		log, _ := newLogger(t)
		line := &fakeLine{}
		d := newTestDeviceOpts(t, Options{Dial: b.dial, BrokerLabel: "in-process", Logger: log,
			ClientID: "pimqtt-test-ready-" + strconv.Itoa(i),
			Outputs:  []Output{{Name: "led", CommandTopic: "raspberry/led", Line: line}},
			Inputs:   []Input{{Name: "button", StateTopic: "raspberry/button", Line: newFakeInput(1)}},
		})
		if err := d.Start(t.Context()); err != nil {
			t.Fatalf("round %d: Start: %v", i, err)
		}
		waitClosed(t, d.Ready(), "Ready")
		b.publish(t, "raspberry/led", []byte("1"))
		line.waitValue(t, 1)
		// What Ready promised besides: the status and the input's state were retained (the
		// led's may already say 1).
		b.checkRetained(t, map[string]string{"raspberry/status": statusOn, "raspberry/button": "1"})
		closeDevice(t, d)
	}
}

// TestReadyMosquitto: against the real mosquitto, mosquitto_pub right after Ready is obeyed.
func TestReadyMosquitto(t *testing.T) {
	t.Parallel()
	m := mqtttest.StartMosquitto(t, mqtttest.MosquittoConfig{Extra: []string{"allow_anonymous true"}})
	dial, err := NetDialer("tcp://127.0.0.1:"+strconv.Itoa(m.Port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	log, _ := newLogger(t)
	line := &fakeLine{}
	d := newTestDevice(t, dial, line, log, "tcp mosquitto")
	if err := d.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	waitClosed(t, d.Ready(), "Ready")
	mosquittoPub(t, m.Port, "raspberry/led", "ON")
	line.waitValue(t, 1)
	if got := mosquittoSubOne(t, m.Port, "raspberry/status"); got != statusOn {
		t.Fatalf("retained status = %q", got)
	}
	closeDevice(t, d)
}

var errRefusedTest = errors.New("connection refused (test)")

// TestReadyNotBeforeStart: a device that never connects is never ready.
func TestReadyNotBeforeStart(t *testing.T) {
	log, _ := newLogger(t)
	d := newTestDevice(t, func(context.Context) (net.Conn, error) { return nil, errRefusedTest }, &fakeLine{}, log, "nowhere")
	if isClosed(d.Ready()) {
		t.Fatal("Ready closed before Start")
	}
	closeDevice(t, d)
	if isClosed(d.Ready()) {
		t.Fatal("Ready closed by Close")
	}
}
