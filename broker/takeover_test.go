package broker

import (
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// pauseCleanup holds Mochi's clean-up of a clean-session client once, in
// OnUnsubscribed, which Mochi calls after it has decided to forget the
// client and before it does: the window of a race in Mochi.
type pauseCleanup struct {
	mqtt.HookBase
	clientID string
	held     atomic.Bool
	paused   chan struct{} // closed when the clean-up is held
	release  chan struct{}
}

func (h *pauseCleanup) ID() string           { return "pause-cleanup" }
func (h *pauseCleanup) Provides(b byte) bool { return b == mqtt.OnUnsubscribed }
func (h *pauseCleanup) OnUnsubscribed(cl *mqtt.Client, _ packets.Packet) {
	if cl.ID != h.clientID {
		return
	}
	if !h.held.CompareAndSwap(false, true) {
		return
	}
	close(h.paused)
	select {
	case <-h.release:
	case <-time.After(10 * time.Second):
	}
}

// TestReconnectDuringCleanup: a clean-session client disconnects and
// connects again under the same id while Mochi is still forgetting the
// first connection. Mochi checks that the old connection was not taken
// over, then forgets the client by id: the new connection, which stays
// connected and subscribed, but gets nothing, and nothing is counted.
func TestReconnectDuringCleanup(t *testing.T) {
	pause := &pauseCleanup{clientID: "racer", paused: make(chan struct{}), release: make(chan struct{})}
	b, _ := startTestBroker(t, Options{Listeners: []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}}, AllowAnonymous: true, Hooks: []mqtt.Hook{pause}})
	addr := listenerAddr(t, b, TCP)

	old := dialRaw(t, addr, 4)
	t.Cleanup(old.close)
	old.connect("racer")
	if err := old.write([]byte{0xE0, 0x00}); err != nil { // DISCONNECT
		t.Fatal(err)
	}
	select {
	case <-pause.paused:
	case <-time.After(replyTimeout):
		t.Fatal("Mochi never started forgetting the first connection")
	}

	// The same client again, with a persistent session this time.
	c := dialRaw(t, addr, 4)
	t.Cleanup(c.close)
	if err := c.write(pk("10 r? s'MQTT' 04 00 H60 s'racer'")); err != nil {
		t.Fatal(err)
	}
	// Mochi answers at once; pimqtt waits until the first connection is
	// forgotten, which the held clean-up delays.
	released := false
	ackc := make(chan mqttPacket, 1)
	go func() {
		p, err := c.next()
		if err == nil {
			ackc <- p
		}
		close(ackc)
	}()
	var ack mqttPacket
	select {
	case ack = <-ackc:
	case <-time.After(300 * time.Millisecond):
		close(pause.release)
		released = true
		ack = <-ackc
	}
	if got := ack.describe(4); got != "CONNACK 0x00" {
		t.Fatalf("got %s, want CONNACK 0x00", got)
	}
	if err := c.write(pk("82 r? m1 s'racer/x' 01")); err != nil {
		t.Fatal(err)
	}
	c.expect("SUBACK 0x01")
	if !released {
		close(pause.release)
	}
	waitFor(t, replyTimeout, "the first connection forgotten", func() bool {
		cl, ok := b.server.Clients.Get("racer")
		return !ok || !cl.Closed()
	})

	pub, err := connectTCP(t, addr, "racer-pub")
	if err != nil {
		t.Fatal(err)
	}
	publishQoS1(t, pub, "racer/x", []string{"for the new connection"})
	if _, payload := c.nextPublish(); payload != "for the new connection" {
		t.Errorf("got %q", payload)
	}
}
