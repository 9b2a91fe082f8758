package broker

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/pimqtt/pimqtt/bench/load"
	"github.com/pimqtt/pimqtt/storage"
)

// routingModes run a test with the fast path (the default) and with
// Mochi's routing alone: a semantic must not depend on which one delivers.
var routingModes = []struct {
	name string
	off  bool
}{{"fast", false}, {"mochi", true}}

// startRoutingBroker starts an anonymous broker on 127.0.0.1 in a routing
// mode; maxInline, if set, changes the largest fan-out written inline.
func startRoutingBroker(t *testing.T, off bool, opts Options, maxInline int) (*Broker, string) {
	t.Helper()
	opts.Listeners = []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}}
	opts.AllowAnonymous = true
	opts.noFastPath = off
	b, _ := newTestBroker(t, opts)
	if b.fast != nil && maxInline >= 0 {
		b.fast.maxInline = maxInline
	}
	if !off && b.fast == nil {
		t.Fatal("fast path off: Mochi's client state lacks the fields it reads")
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	b.OpenNetwork()
	return b, listenerAddr(t, b, TCP)
}

// streamer publishes numbered QoS 0 messages on a topic, one write each,
// until stopped or max are sent; sent counts those written to the socket.
type streamer struct {
	sent atomic.Int64
	stop chan struct{}
	done chan struct{}
}

func startStream(t *testing.T, addr, id, topic string, max int) *streamer {
	c := dialLoad(t, addr, id)
	s := &streamer{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		go func() { // the broker sends nothing for QoS 0: read until closed
			for {
				if _, _, err := c.read(); err != nil {
					return
				}
			}
		}()
		for i := range max {
			select {
			case <-s.stop:
				return
			default:
			}
			s.sent.Add(1)
			if _, err := c.conn.Write(publishPacket(topic, 0, 0, uint64(i))); err != nil {
				return
			}
		}
	}()
	t.Cleanup(s.end)
	return s
}

func (s *streamer) end() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

// collector reads a connection's packets: the sequence numbers of the
// PUBLISH packets (acknowledging QoS 1 ones), and each other packet's
// type on ctrl.
type collector struct {
	c      *loadConn
	mu     sync.Mutex
	seqs   []uint64
	maxSeq int64
	// ctrl gets the type of every other packet.
	ctrl chan byte
	// cutFrom, if set, is read when UNSUBACK arrives: PUBLISH packets
	// numbered that or later count as late from then on.
	cutFrom func() int64
	cut     atomic.Int64
	late    atomic.Int64
	done    chan struct{}
}

func collect(c *loadConn) *collector {
	co := &collector{c: c, ctrl: make(chan byte, 16), done: make(chan struct{})}
	co.cut.Store(-1)
	go func() {
		defer close(co.done)
		for {
			h, body, err := c.read()
			if err != nil {
				return
			}
			if h>>4 != 3 {
				if h>>4 == 11 && co.cutFrom != nil { // UNSUBACK
					co.cut.Store(co.cutFrom())
				}
				co.ctrl <- h >> 4
				continue
			}
			tl := int(binary.BigEndian.Uint16(body))
			rest := body[2+tl:]
			if h&0x06 != 0 {
				_, _ = c.conn.Write([]byte{0x40, 0x02, rest[0], rest[1]})
				rest = rest[2:]
			}
			seq := binary.BigEndian.Uint64(rest)
			if cut := co.cut.Load(); cut >= 0 && int64(seq) >= cut {
				co.late.Add(1)
			}
			co.mu.Lock()
			co.seqs = append(co.seqs, seq)
			co.maxSeq = max(co.maxSeq, int64(seq))
			co.mu.Unlock()
		}
	}()
	return co
}

// snapshot returns the sequence numbers received so far.
func (co *collector) snapshot() []uint64 {
	co.mu.Lock()
	defer co.mu.Unlock()
	return append([]uint64(nil), co.seqs...)
}

// waitSeq waits until a message numbered at least n has arrived.
func (co *collector) waitSeq(t *testing.T, n int64, what string) {
	t.Helper()
	waitFor(t, 10*time.Second, what, func() bool {
		co.mu.Lock()
		defer co.mu.Unlock()
		return len(co.seqs) > 0 && co.maxSeq >= n
	})
}

func (co *collector) expectCtrl(t *testing.T, typ byte) {
	t.Helper()
	select {
	case got := <-co.ctrl:
		if got != typ {
			t.Fatalf("want packet type %d, got %d", typ, got)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no packet of type %d within 5 s", typ)
	}
}

// TestFastPathCacheInvalidation changes who is subscribed while a
// publisher streams to the topic: a new subscriber gets the messages sent
// after its SUBACK, a client that unsubscribed gets none of those sent
// after its UNSUBACK, a client that reconnects under the id of a clean
// session without subscribing gets nothing, and one that takes a
// persistent session over gets the messages sent after its CONNACK.
func TestFastPathCacheInvalidation(t *testing.T) {
	for _, m := range routingModes {
		t.Run(m.name, func(t *testing.T) {
			_, addr := startRoutingBroker(t, m.off, Options{}, -1)
			const topic = "inv/t"
			s1c := dialLoad(t, addr, "inv-s1")
			s1c.subscribe(t, topic, 0)
			s1 := collect(s1c)
			clean := dialLoad(t, addr, "inv-clean")
			clean.subscribe(t, topic, 0)
			collect(clean)
			persistent := dialPersistent(t, addr, "inv-persistent")
			persistent.subscribe(t, topic, 0)
			collect(persistent)

			p := startStream(t, addr, "inv-pub", topic, 2_000_000)
			s1.waitSeq(t, 1000, "the first subscriber gets the stream")

			// A new subscriber.
			s2c := dialLoad(t, addr, "inv-s2")
			s2c.subscribe(t, topic, 0)
			from := p.sent.Load()
			s2 := collect(s2c)
			s2.waitSeq(t, from+1000, "the new subscriber gets what is sent after its SUBACK")

			// An unsubscribe: nothing sent after UNSUBACK arrives.
			s1.cutFrom = func() int64 { return p.sent.Load() }
			s1c.send(pk("a2 r? m2 s'" + topic + "'"))
			s1.expectCtrl(t, 11)
			cut := s1.cut.Load()

			// A clean session ends; its id comes back without subscribing.
			_ = clean.conn.Close()
			again := dialLoad(t, addr, "inv-clean")
			againFrom := p.sent.Load()
			againCo := collect(again)

			// A persistent session is taken over by a new connection.
			taken := dialPersistent(t, addr, "inv-persistent")
			takenFrom := p.sent.Load()
			takenCo := collect(taken)
			takenCo.waitSeq(t, takenFrom+1000, "the connection that took the session over gets the stream")

			s2.waitSeq(t, max(cut, againFrom)+5000, "the stream goes on")
			if n := s1.late.Load(); n > 0 {
				t.Errorf("%d messages sent after UNSUBACK (from #%d) reached the client that unsubscribed", n, cut)
			}
			got := againCo.snapshot()
			if m.off {
				// Mochi's own routing names subscribers by id: a message
				// routed just before the reconnect may reach the new
				// client (the fast path checks the subscription, see
				// TestFastPathStaleRouteCleanReconnect). None sent after
				// its CONNACK may.
				got = slices.DeleteFunc(got, func(seq uint64) bool { return int64(seq) < againFrom })
			}
			if len(got) > 0 {
				t.Errorf("a client reconnecting clean under the id of a subscriber got %d messages (first #%d, reconnected at #%d); it never subscribed", len(got), got[0], againFrom)
			}
		})
	}
}

// dialPersistent connects an MQTT 3.1.1 client with clean session off.
func dialPersistent(t *testing.T, addr, id string) *loadConn {
	t.Helper()
	return dialLoadWith(t, addr, pk("10 r? s'MQTT' 04 00 H60 s'"+id+"'"))
}

// TestFastPathOrderAcrossPaths: one publisher alternates between a topic
// the fast path writes (one subscriber), a topic Mochi routes (more
// subscribers than written inline) and retained messages (Mochi's way
// too); a subscriber to all three gets every message in the publisher's
// order, at QoS 0 and 1.
func TestFastPathOrderAcrossPaths(t *testing.T) {
	for _, m := range routingModes {
		for _, qos := range []byte{0, 1} {
			t.Run(fmt.Sprintf("%s/qos%d", m.name, qos), func(t *testing.T) {
				_, addr := startRoutingBroker(t, m.off, Options{}, 1)
				sc := dialLoad(t, addr, "ord-sub")
				sc.subscribe(t, "ord/#", qos)
				s := collect(sc)
				oc := dialLoad(t, addr, "ord-other")
				oc.subscribe(t, "ord/big", qos)
				collect(oc)
				p := dialLoad(t, addr, "ord-pub")
				go func() { // PUBACKs
					for {
						if _, _, err := p.read(); err != nil {
							return
						}
					}
				}()
				const n = 20000
				for i := range n {
					topic := "ord/small"
					switch {
					case i%50 == 7:
						topic = "ord/retained"
					case i%3 == 0:
						topic = "ord/big"
					}
					msg := publishPacket(topic, qos, uint16(i%60000+1), uint64(i))
					if topic == "ord/retained" {
						msg[0] |= 1
					}
					_, _ = p.w.Write(msg)
					if i%16 == 0 {
						_ = p.w.Flush()
					}
				}
				_ = p.w.Flush()
				s.waitSeq(t, n-1, "the last message arrives")
				got := s.snapshot()
				var outOfOrder int
				for i := 1; i < len(got); i++ {
					if got[i] <= got[i-1] {
						outOfOrder++
						if outOfOrder == 1 {
							t.Errorf("#%d arrived after #%d", got[i], got[i-1])
						}
					}
				}
				if outOfOrder > 0 {
					t.Errorf("%d messages out of the publisher's order", outOfOrder)
				}
				if !m.off && len(got) != n {
					t.Errorf("got %d of %d messages", len(got), n)
				}
			})
		}
	}
}

// TestFastPathACLReadDenied: a subscriber whose wildcard subscription
// covers a topic the ACL does not let it read gets nothing on it.
func TestFastPathACLReadDenied(t *testing.T) {
	acl := filepath.Join(t.TempDir(), "acl")
	if err := os.WriteFile(acl, []byte("user reader\ntopic read acl/+/open\nuser writer\ntopic write acl/#\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, m := range routingModes {
		t.Run(m.name, func(t *testing.T) {
			_, addr := startRoutingBroker(t, m.off, Options{ACLFile: acl}, -1)
			r := dialLoadWith(t, addr, pk("10 r? s'MQTT' 04 82 H60 s'acl-reader' s'reader'"))
			r.subscribe(t, "acl/#", 0)
			co := collect(r)
			w := dialLoadWith(t, addr, pk("10 r? s'MQTT' 04 82 H60 s'acl-writer' s'writer'"))
			for i := range 200 {
				topic := "acl/x/secret"
				if i%2 == 1 {
					topic = "acl/x/open"
				}
				w.send(publishPacket(topic, 0, 0, uint64(i)))
			}
			co.waitSeq(t, 199, "the readable messages arrive")
			for _, seq := range co.snapshot() {
				if seq%2 == 0 {
					t.Fatalf("message #%d on acl/x/secret reached a client that may not read it", seq)
				}
			}
		})
	}
}

// TestFastPathNoLocal: an MQTT 5 subscription with no-local does not get
// its own client's messages; another subscriber does.
func TestFastPathNoLocal(t *testing.T) {
	for _, m := range routingModes {
		t.Run(m.name, func(t *testing.T) {
			_, addr := startRoutingBroker(t, m.off, Options{}, -1)
			a := dialRaw(t, addr, 5)
			a.connect("nl-a")
			if err := a.write(pk("82 r? m1 00 s'nl/t' 04")); err != nil { // no-local, QoS 0
				t.Fatal(err)
			}
			a.expect("SUBACK 0x00")
			b := dialRaw(t, addr, 5)
			b.connect("nl-b")
			if err := b.write(pk("82 r? m1 00 s'nl/t' 00")); err != nil {
				t.Fatal(err)
			}
			b.expect("SUBACK 0x00")
			if err := a.write(pk("30 r? s'nl/t' 00 'from-a'")); err != nil {
				t.Fatal(err)
			}
			if got := publishPayload(t, b); got != "from-a" {
				t.Errorf("the other subscriber got %q, want from-a", got)
			}
			// from-a is handed over: had it gone to a, a's copy would be
			// before this one.
			if err := b.write(pk("30 r? s'nl/t' 00 'from-b'")); err != nil {
				t.Fatal(err)
			}
			if got := publishPayload(t, a); got != "from-b" {
				t.Errorf("the no-local subscriber got %q first, want only from-b", got)
			}
			if got := publishPayload(t, b); got != "from-b" {
				t.Errorf("the other subscriber got %q, want from-b", got)
			}
		})
	}
}

// publishPayload reads a PUBLISH from an MQTT 5 client and returns its
// payload.
func publishPayload(t *testing.T, c *rawClient) string {
	t.Helper()
	p, _ := nextPublish5(t, c)
	return p
}

// nextPublish5 reads a QoS 0 PUBLISH of an MQTT 5 client: its payload and
// retain flag.
func nextPublish5(t *testing.T, c *rawClient) (string, bool) {
	t.Helper()
	p, err := c.next()
	if err != nil || p.header>>4 != 3 {
		t.Fatalf("want a PUBLISH, got %v %v", p.describe(5), err)
	}
	tl := int(binary.BigEndian.Uint16(p.body))
	rest := p.body[2+tl:]
	n, used, ok := readVarint(rest)
	if !ok {
		t.Fatalf("bad properties: %s", shortHex(p.body))
	}
	return string(rest[used+n:]), p.header&1 == 1
}

// TestFastPathRetained: a retained message reaches a subscriber with
// retain-as-published with its retain flag, one without it without, and
// is kept for later subscribers and in the store across a restart.
func TestFastPathRetained(t *testing.T) {
	for _, m := range routingModes {
		t.Run(m.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "pimqtt.db")
			st, err := storage.Open(storage.Options{Path: path, Logger: discardLogger()})
			if err != nil {
				t.Fatal(err)
			}
			b, addr := startRoutingBroker(t, m.off, Options{Hooks: []mqtt.Hook{st}}, -1)
			rap := dialRaw(t, addr, 5)
			rap.connect("ret-rap")
			if err := rap.write(pk("82 r? m1 00 s'ret/t' 08")); err != nil { // retain as published
				t.Fatal(err)
			}
			rap.expect("SUBACK 0x00")
			plain := dialRaw(t, addr, 5)
			plain.connect("ret-plain")
			if err := plain.write(pk("82 r? m1 00 s'ret/t' 00")); err != nil {
				t.Fatal(err)
			}
			plain.expect("SUBACK 0x00")
			pub := dialRaw(t, addr, 5)
			pub.connect("ret-pub")
			if err := pub.write(pk("31 r? s'ret/t' 00 'kept'")); err != nil {
				t.Fatal(err)
			}
			if got, retain := nextPublish5(t, rap); got != "kept" || !retain {
				t.Errorf("retain-as-published subscriber got %q retain=%v, want kept retain=true", got, retain)
			}
			if got, retain := nextPublish5(t, plain); got != "kept" || retain {
				t.Errorf("plain subscriber got %q retain=%v, want kept retain=false", got, retain)
			}
			later := dialRaw(t, addr, 5)
			later.connect("ret-later")
			if err := later.write(pk("82 r? m1 00 s'ret/t' 00")); err != nil {
				t.Fatal(err)
			}
			later.expect("SUBACK 0x00")
			if got, retain := nextPublish5(t, later); got != "kept" || !retain {
				t.Errorf("a later subscriber got %q retain=%v, want the retained message", got, retain)
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}

			st2, err := storage.Open(storage.Options{Path: path, Logger: discardLogger()})
			if err != nil {
				t.Fatal(err)
			}
			_, addr2 := startRoutingBroker(t, m.off, Options{Hooks: []mqtt.Hook{st2}}, -1)
			after := dialRaw(t, addr2, 5)
			after.connect("ret-after")
			if err := after.write(pk("82 r? m1 00 s'ret/t' 00")); err != nil {
				t.Fatal(err)
			}
			after.expect("SUBACK 0x00")
			if got, retain := nextPublish5(t, after); got != "kept" || !retain {
				t.Errorf("after a restart a subscriber got %q retain=%v, want the stored retained message", got, retain)
			}
		})
	}
}

// TestFastPathSlowSubscriberEvicted: a subscriber that reads nothing
// blocks the inline writes to it only until SlowClientTimeout, then is
// disconnected as too slow; the other subscriber gets every message.
func TestFastPathSlowSubscriberEvicted(t *testing.T) {
	limits := DefaultLimits()
	limits.SlowClientTimeout = time.Second
	b, addr := startRoutingBroker(t, false, Options{Limits: limits}, -1)
	fast := dialLoad(t, addr, "a-fast")
	fast.subscribe(t, "slow/t", 0)
	co := collect(fast)
	slow := dialLoad(t, addr, "b-slow")
	if tc, ok := slow.conn.(interface{ SetReadBuffer(int) error }); ok {
		_ = tc.SetReadBuffer(4096)
	}
	slow.subscribe(t, "slow/t", 0)
	pub := dialLoad(t, addr, "slow-pub")
	payload := make([]byte, 60000)
	const max = 2000
	start := time.Now()
	var evictedAt time.Duration
	sent := 0
	for ; sent < max; sent++ {
		body := append(append(pkU16(len("slow/t")), "slow/t"...), payload...)
		binary.BigEndian.PutUint64(body[2+len("slow/t"):], uint64(sent))
		if _, err := pub.conn.Write(append(append([]byte{0x30}, pkVarint(len(body))...), body...)); err != nil {
			t.Fatalf("publish #%d: %v", sent, err)
		}
		if evictedAt == 0 && b.Dropped().SlowClients > 0 {
			evictedAt = time.Since(start)
		}
		if evictedAt > 0 && sent > 200 {
			break
		}
	}
	if evictedAt == 0 {
		waitFor(t, 5*time.Second, "the slow subscriber is disconnected", func() bool { return b.Dropped().SlowClients > 0 })
		evictedAt = time.Since(start)
	}
	co.waitSeq(t, int64(sent), "every message reaches the subscriber that reads")
	if got := len(co.snapshot()); got != sent+1 {
		t.Errorf("the subscriber that reads got %d of %d messages", got, sent+1)
	}
	// Blocked from about when its socket filled; the watch looks every
	// tenth of the timeout.
	if evictedAt > limits.SlowClientTimeout+2*time.Second {
		t.Errorf("the slow subscriber was disconnected after %v, want about %v", evictedAt, limits.SlowClientTimeout)
	}
	t.Logf("slow subscriber disconnected %v after the stream started; %d messages of 60 kB sent", evictedAt, sent+1)
}

// TestFastPathFanInQoS0NoLoss: 4 publishers, 1 subscriber, 20,000 QoS 0
// messages with the default limits: nothing is lost, each publisher's
// order is kept; with every message left to Mochi (no inline writes) too,
// since the fast path then waits for room in the queue.
func TestFastPathFanInQoS0NoLoss(t *testing.T) {
	for _, maxInline := range []int{defaultMaxInline, 0} {
		t.Run(fmt.Sprintf("inline%d", maxInline), func(t *testing.T) {
			_, addr := startRoutingBroker(t, false, Options{}, maxInline)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			run, err := load.Prepare(ctx, load.Config{
				Addr:  addr,
				Flows: []load.Flow{{Name: "fanin", Publishers: 4, Subscribers: 1}},
				QoS:   0, Messages: 5000, PayloadSize: 64, Drain: 10 * time.Second, ClientPrefix: t.Name(),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer run.Close()
			res := run.Start(ctx)
			t.Log(res)
			if res.Lost != 0 || res.OutOfOrder != 0 {
				t.Errorf("lost %d, out of order %d; want none", res.Lost, res.OutOfOrder)
			}
		})
	}
}

// TestFastPathBatchKeepsOrder: 4 publishers stream to 1 subscriber, so
// that their writes are batched: nothing is lost and no publisher's
// messages are reordered.
func TestFastPathBatchKeepsOrder(t *testing.T) {
	b, addr := startRoutingBroker(t, false, Options{}, -1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run, err := load.Prepare(ctx, load.Config{
		Addr:  addr,
		Flows: []load.Flow{{Name: "batch", Publishers: 4, Subscribers: 1}},
		QoS:   0, Messages: 20000, PayloadSize: 64, Drain: 10 * time.Second, ClientPrefix: t.Name(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer run.Close()
	res := run.Start(ctx)
	st := b.fast.batch.statsNow()
	t.Log(res, fmt.Sprintf("batched %d, waits %d, peak %d B", st.appended, st.waits, st.peak))
	if res.Lost != 0 || res.OutOfOrder != 0 {
		t.Errorf("lost %d, out of order %d; want none", res.Lost, res.OutOfOrder)
	}
	if st.appended == 0 {
		t.Errorf("no write was batched: the test did not test batching")
	}
}

// TestFastPathFullBatchWaits: 4 publishers stream large messages to a
// subscriber that reads nothing and to one that reads everything. The
// batch of the one that reads nothing fills, and publishers then wait
// instead of appending (it never holds much more than batchCap), until
// the watchdog disconnects that subscriber; the other one gets every
// message, each publisher's in order.
func TestFastPathFullBatchWaits(t *testing.T) {
	limits := DefaultLimits()
	limits.SlowClientTimeout = time.Second
	b, addr := startRoutingBroker(t, false, Options{Limits: limits}, -1)
	const topic = "full/t"
	reader := dialLoad(t, addr, "a-reader")
	reader.subscribe(t, topic, 0)
	co := collect(reader)
	slow := dialLoad(t, addr, "b-slow")
	if tc, ok := slow.conn.(interface{ SetReadBuffer(int) error }); ok {
		_ = tc.SetReadBuffer(4096)
	}
	slow.subscribe(t, topic, 0)

	const pubs, perPub, size = 4, 2000, 8 << 10
	var sent [pubs]atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for p := range pubs {
		c := dialLoad(t, addr, fmt.Sprintf("full-pub%d", p))
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := append(append(pkU16(len(topic)), topic...), make([]byte, size)...)
			for i := range perPub {
				// Enough once the slow one is gone and more got through.
				if b.Dropped().SlowClients > 0 && i > 100 {
					return
				}
				binary.BigEndian.PutUint64(body[2+len(topic):], uint64(p)<<32|uint64(i))
				if _, err := c.conn.Write(append(append([]byte{0x30}, pkVarint(len(body))...), body...)); err != nil {
					t.Errorf("publisher %d, #%d: %v", p, i, err)
					return
				}
				sent[p].Add(1)
			}
		}()
	}
	waitFor(t, limits.SlowClientTimeout+5*time.Second, "the subscriber that reads nothing is disconnected", func() bool {
		return b.Dropped().SlowClients > 0
	})
	evictedAt := time.Since(start)
	wg.Wait()
	var total int64
	for p := range pubs {
		total += sent[p].Load()
	}
	waitFor(t, 10*time.Second, "every message reaches the subscriber that reads", func() bool {
		return len(co.snapshot()) >= int(total)
	})
	got := co.snapshot()
	last := map[uint64]int64{}
	for _, s := range got {
		p, i := s>>32, int64(s&0xffffffff)
		if prev, ok := last[p]; ok && i != prev+1 {
			t.Fatalf("publisher %d: #%d after #%d", p, i, prev)
		}
		last[p] = i
	}
	if len(got) != int(total) {
		t.Errorf("the subscriber that reads got %d of %d messages", len(got), total)
	}
	st := b.fast.batch.statsNow()
	t.Logf("disconnected after %v; %d messages; batched %d, waits %d, peak %d B", evictedAt, total, st.appended, st.waits, st.peak)
	if st.waits == 0 {
		t.Errorf("no publisher waited for a full batch")
	}
	if st.peak > batchCap+size+16 {
		t.Errorf("a batch held %d B, want at most %d + one packet", st.peak, batchCap)
	}
}

// TestFastPathStaleRouteCleanReconnect: a route read just before a
// subscriber reconnects clean under its id, without subscribing, is used
// just after (a message in flight then): the new session gets nothing.
func TestFastPathStaleRouteCleanReconnect(t *testing.T) {
	b, addr := startRoutingBroker(t, false, Options{}, -1)
	const topic = "stale/t"
	old := dialLoad(t, addr, "stale-sub")
	old.subscribe(t, topic, 0)
	r := b.fast.routeOf(topic)
	if len(r.targets) != 1 || r.mochi {
		t.Fatalf("route: %d targets, mochi %v; want the subscriber, inline", len(r.targets), r.mochi)
	}
	_ = old.conn.Close()
	again := dialLoad(t, addr, "stale-sub")
	co := collect(again)
	waitFor(t, 5*time.Second, "the new connection's session is established", func() bool {
		cl, ok := b.server.Clients.Get("stale-sub")
		return ok && cl.Net.Remote == again.conn.LocalAddr().String() && b.flow.flowOf(cl) != nil
	})

	msg := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: topic, Payload: make([]byte, 64)}
	ds, _ := b.fast.deliveries(r, nil)
	for _, d := range ds {
		b.fast.deliver(nil, d, msg, msg)
	}
	again.send([]byte{0xc0, 0x00}) // PINGREQ: its answer comes after any copy written above
	co.expectCtrl(t, 13)
	if got := co.snapshot(); len(got) > 0 {
		t.Errorf("the client that reconnected clean got %d messages; it never subscribed", len(got))
	}
}
