package device

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"
)

// TestOutageFreesMessageIDs: the message ids of publishes in flight when a connection dies
// must be freed. paho's own auto-reconnect never frees them (with a clean session nothing
// completes those tokens), so every outage leaked some, and once all 65535 were taken every
// publish and subscribe failed: a deaf, mute device. Here the first connection swallows what
// the device sends (no PUBACK ever comes) until every id is in flight, then is cut; on the next
// connection the device must still subscribe, announce itself and publish states.
func TestOutageFreesMessageIDs(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes 65535 messages")
	}
	b := newMochiBroker(t)
	log, logs := newLogger(t)
	in := newFakeInput(0)
	var (
		mu    sync.Mutex
		first *swallowConn
	)
	k := &killableDialer{inner: func(ctx context.Context) (net.Conn, error) {
		c, err := b.dial(ctx)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		if first != nil {
			return c, nil
		}
		first = &swallowConn{Conn: c}
		return first, nil
	}}
	d := newTestDeviceOpts(t, Options{
		Dial: k.dial, BrokerLabel: "in-process", Logger: log,
		Inputs: []Input{{Name: "sensor", StateTopic: "raspberry/sensor", Line: in}},
	})
	if err := d.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	pos := b.waitMsg(t, 0, statusTopic, statusOn)
	pos = b.waitMsg(t, pos, "raspberry/sensor", "0")

	mu.Lock()
	sw := first
	mu.Unlock()
	sw.swallow()
	// The bound is on a stall, not on speed: under -race on a loaded
	// machine 65535 publishes can take minutes (53497 in 115 s once).
	deadline, last := time.Now().Add(3*waitTimeout), 0
	for i := 0; sw.publishes.get() < 65535; i++ {
		if n := sw.publishes.get(); n > last {
			deadline, last = time.Now().Add(3*waitTimeout), n
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d publishes swallowed: none for %v", sw.publishes.get(), 3*waitTimeout)
		}
		in.send(t, i%2)
	}
	mark := logs.mark()
	k.killAll()
	logs.waitMsg(t, mark, "connection to broker lost")
	pos = b.waitMsg(t, pos, statusTopic, statusOn)
	in.send(t, 1)
	b.waitMsg(t, pos, "raspberry/sensor", "1")
	closeDevice(t, d)
}

// swallowConn passes everything through until swallow; from then on it discards what is
// written (counting the PUBLISH packets, one Write each in paho) as a stalled link would.
type swallowConn struct {
	net.Conn
	mu        sync.Mutex
	on        bool
	publishes watched[int]
}

func (c *swallowConn) swallow() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.on = true
}

func (c *swallowConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	on := c.on
	c.mu.Unlock()
	if !on {
		return c.Conn.Write(p)
	}
	if len(p) > 0 && p[0]&0xF0 == 0x30 {
		c.publishes.update(func(n *int) { *n++ })
	}
	return len(p), nil
}
