package device

import (
	"io"
	"sync/atomic"
	"testing"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// refusingACL allows everything but reading the topics in refuse while refusing is set: a
// broker whose ACL is fixed later, or a cluster (nats-server) that answers SUBACK 0x80 while
// it cannot create a subscription yet.
type refusingACL struct {
	mochi.HookBase
	refuse   map[string]bool
	refusing atomic.Bool
	refused  atomic.Int32
}

func (*refusingACL) ID() string { return "test-refusing-acl" }
func (*refusingACL) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck
}
func (*refusingACL) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return true }
func (h *refusingACL) OnACLCheck(_ *mochi.Client, topic string, write bool) bool {
	if !write && h.refuse[topic] && h.refusing.Load() {
		h.refused.Add(1)
		return false
	}
	return true
}

// TestResubscribeAfterRefusal: a SUBSCRIBE the broker refuses is sent again on the same
// connection with backoff, so the device obeys once the broker grants it, without a
// reconnection; Ready waits for it; the refusal is logged once, the grant once.
func TestResubscribeAfterRefusal(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		refuse string
		ready  bool // Ready closes while refused: only the status topic is missing
	}{
		{"command topic", "raspberry/led", false},
		{"status topic", "raspberry/status", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			acl := &refusingACL{refuse: map[string]bool{tt.refuse: true}}
			acl.refusing.Store(true)
			b := newMochiBrokerAuth(t, io.Discard, acl)
			log, rec := newLogger(t)
			line := &fakeLine{}
			d := newTestDevice(t, b.dial, line, log, "refusing")
			if err := d.Start(t.Context()); err != nil {
				t.Fatalf("Start: %v", err)
			}
			rec.waitMsg(t, 0, "status published")
			// Refused twice: the first SUBSCRIBE and one retry.
			rec.waitMsg(t, 0, "subscribe retry failed", "topic", tt.refuse)
			if got := isClosed(d.Ready()); got != tt.ready {
				t.Fatalf("Ready closed = %v while %s is refused, want %v", got, tt.refuse, tt.ready)
			}
			mark := rec.mark()
			acl.refusing.Store(false)
			rec.waitMsg(t, mark, "subscribed after a refusal", "still_refused", "0")
			waitClosed(t, d.Ready(), "Ready")
			b.publish(t, "raspberry/led", []byte("1"))
			line.waitValue(t, 1)
			if n := len(rec.all("connected to broker")); n != 1 {
				t.Errorf("%d connections, want 1: the retry is on the same connection", n)
			}
			failures := 0
			for _, r := range rec.w.get() {
				if r.Level >= 0 && (r.Msg == "subscribe failed; retrying with backoff, commands do not arrive meanwhile" ||
					r.Msg == "subscribe to own status failed; retrying with backoff (a late will could leave the status Off meanwhile)") {
					failures++
				}
			}
			if failures != 1 {
				t.Errorf("refusal logged %d times above debug, want once", failures)
			}
			closeDevice(t, d)
		})
	}
}
