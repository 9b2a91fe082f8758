package broker

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/pimqtt/pimqtt/bench/load"
)

// memSampler records the peak heap in use while a test runs.
type memSampler struct {
	stop     chan struct{}
	done     chan struct{}
	peakHeap atomic.Uint64
}

func sampleMemory() *memSampler {
	m := &memSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > m.peakHeap.Load() {
				m.peakHeap.Store(ms.HeapInuse)
			}
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
		}
	}()
	return m
}

// end stops sampling and returns the peak heap in use and the process's
// peak resident set (VmHWM; 0 where /proc is missing), in MiB.
func (m *memSampler) end() (heapMiB, rssMiB float64) {
	close(m.stop)
	<-m.done
	return float64(m.peakHeap.Load()) / (1 << 20), float64(procStatusKiB("VmHWM")) / 1024
}

// procStatusKiB reads one "Name: N kB" line of /proc/self/status.
func procStatusKiB(name string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == name+":" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

// TestFanInSlowSubscriberLosesNothing: 4 publishers, 1 subscriber that
// stops reading for a while, 20,000 messages at QoS 1 and at QoS 2, with
// per-client bounds far below the burst. Every message acknowledged to
// its publisher reaches the subscriber, in each publisher's order, and at
// QoS 2 exactly once. Mochi alone acknowledges the publisher and then
// drops the message when the subscriber's in-flight window or outbound
// queue is full.
func TestFanInSlowSubscriberLosesNothing(t *testing.T) {
	for _, qos := range []byte{1, 2} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			limits := DefaultLimits()
			limits.MaxInflight = 64
			limits.MaxQueued = 128
			b, _ := startTestBroker(t, Options{Listeners: []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}}, AllowAnonymous: true, Limits: limits})
			mem := sampleMemory()

			// The subscriber's handler blocks on its first message until the
			// publishers have had 2,000 messages acknowledged (without
			// back-pressure, at once) or, with back-pressure, until 2 s have
			// shown that they are held.
			var run *load.Run
			var once sync.Once
			var ackedInStall atomic.Int64
			stall := func(_ string, n int64) {
				once.Do(func() {
					deadline := time.Now().Add(2 * time.Second)
					for run.Acked() < 2000 && time.Now().Before(deadline) {
						time.Sleep(time.Millisecond) // polling a condition with a deadline
					}
					ackedInStall.Store(run.Acked())
				})
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var err error
			run, err = load.Prepare(ctx, load.Config{
				Addr:  listenerAddr(t, b, TCP),
				Flows: []load.Flow{{Name: "fanin", Publishers: 4, Subscribers: 1}},
				QoS:   qos, Messages: 5000, PayloadSize: 64, Outstanding: 32,
				Drain: 30 * time.Second, Stall: stall, ClientPrefix: t.Name(),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer run.Close()
			res := run.Start(ctx)
			heap, rss := mem.end()
			t.Logf("%s; peak heap in use %.1f MiB, peak RSS of the test process %.1f MiB", res, heap, rss)
			t.Logf("acknowledged while the subscriber read nothing: %d", ackedInStall.Load())
			if d := b.Dropped(); d != (Drops{}) {
				t.Errorf("drops %+v, want none", d)
			}
			if res.Reconnects != 0 {
				t.Errorf("the subscriber was disconnected %d times; 2 s of stall is below SlowClientTimeout", res.Reconnects)
			}
			if res.Acked != 20000 || res.Lost != 0 {
				t.Errorf("acknowledged %d of 20000, lost %d: every acknowledged message must be delivered", res.Acked, res.Lost)
			}
			if res.OutOfOrder != 0 {
				t.Errorf("%d messages out of their publisher's order", res.OutOfOrder)
			}
			if qos == 2 && res.Duplicates != 0 {
				t.Errorf("%d duplicates at QoS 2", res.Duplicates)
			}
		})
	}
}

// persistentSubscriber connects a raw MQTT 3.1.1 client with a persistent
// session (clean session off) and subscribes it to filter at QoS 1. It
// acknowledges nothing until told to read.
func persistentSubscriber(t *testing.T, addr, clientID, filter string) *rawClient {
	t.Helper()
	c := dialRaw(t, addr, 4)
	t.Cleanup(c.close)
	if err := c.write(pk("10 r? s'MQTT' 04 00 H60 s'" + clientID + "'")); err != nil {
		t.Fatalf("write CONNECT: %v", err)
	}
	c.expect("CONNACK 0x00")
	if err := c.write(pk("82 r? m1 s'" + filter + "' 01")); err != nil {
		t.Fatalf("write SUBSCRIBE: %v", err)
	}
	c.expect("SUBACK 0x01")
	return c
}

// receiveAll reads PUBLISH packets, acknowledging each, until n distinct
// payloads have arrived, and returns the payloads in order of arrival.
func (c *rawClient) receiveAll(n int) []string {
	c.t.Helper()
	seen := make(map[string]bool)
	var got []string
	for len(seen) < n {
		id, payload := c.nextPublish()
		if err := c.write(append([]byte{0x40, 0x02}, id...)); err != nil {
			c.t.Fatalf("write PUBACK: %v", err)
		}
		if !seen[payload] {
			seen[payload] = true
			got = append(got, payload)
		}
	}
	return got
}

// nextPublish reads a QoS 1/2 PUBLISH and returns its packet identifier
// and payload.
func (c *rawClient) nextPublish() (id []byte, payload string) {
	c.t.Helper()
	p, err := c.next()
	if err != nil {
		c.t.Fatalf("want a PUBLISH: %v", err)
	}
	if p.header>>4 != 3 || p.header&0x06 == 0 {
		c.t.Fatalf("want a QoS 1/2 PUBLISH, got %s", p.describe(c.version))
	}
	tl := int(p.body[0])<<8 | int(p.body[1])
	id, rest := p.body[2+tl:4+tl], p.body[4+tl:]
	if c.version == 5 {
		n, used, ok := readVarint(rest)
		if !ok || used+n > len(rest) {
			c.t.Fatalf("PUBLISH with bad properties: %s", shortHex(p.body))
		}
		rest = rest[used+n:]
	}
	return id, string(rest)
}

// resume reconnects a persistent session and checks it was kept.
func resume(t *testing.T, addr, clientID string) *rawClient {
	t.Helper()
	c := dialRaw(t, addr, 4)
	t.Cleanup(c.close)
	if err := c.write(pk("10 r? s'MQTT' 04 00 H60 s'" + clientID + "'")); err != nil {
		t.Fatalf("write CONNECT: %v", err)
	}
	if ack := c.expect("CONNACK 0x00"); ack.body[0]&1 != 1 {
		t.Fatal("CONNACK without session present: the session was not kept")
	}
	return c
}

// publishQoS1 publishes msgs on topic from a paho client, each waiting for
// its PUBACK, and returns how long that took.
func publishQoS1(t *testing.T, c paho.Client, topic string, msgs []string) time.Duration {
	t.Helper()
	start := time.Now()
	for _, m := range msgs {
		tok := c.Publish(topic, 1, false, m)
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: no PUBACK: %v", m[:min(len(m), 8)], tok.Error())
		}
	}
	return time.Since(start)
}

func messages(prefix string, from, to int) []string {
	var m []string
	for i := from; i < to; i++ {
		m = append(m, fmt.Sprintf("%s%03d", prefix, i))
	}
	return m
}

// TestSlowSubscriberBounds: a subscriber that acknowledges nothing holds
// its publisher for SlowClientTimeout at most, is then disconnected, and
// its persistent session keeps every message up to MaxInflight +
// MaxQueued, in order; beyond that, messages for the absent client are
// dropped and counted.
func TestSlowSubscriberBounds(t *testing.T) {
	limits := DefaultLimits()
	limits.MaxInflight = 8
	limits.MaxQueued = 16
	limits.SlowClientTimeout = 500 * time.Millisecond
	b, sink := startTestBroker(t, Options{Listeners: []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}}, AllowAnonymous: true, Limits: limits})
	addr := listenerAddr(t, b, TCP)
	silent := persistentSubscriber(t, addr, "silent", "slow/#")
	pub, err := connectTCP(t, addr, "publisher")
	if err != nil {
		t.Fatal(err)
	}

	// 20 messages: 8 fill the window, the 9th waits until the subscriber
	// is disconnected, the rest go to its session.
	first := messages("a", 0, 20)
	took := publishQoS1(t, pub, "slow/x", first)
	if took < limits.SlowClientTimeout || took > limits.SlowClientTimeout+3*time.Second {
		t.Errorf("publishing took %v; want the publisher held for about SlowClientTimeout (%v)", took, limits.SlowClientTimeout)
	}
	waitFor(t, 5*time.Second, "the slow subscriber disconnected", func() bool { return b.Dropped().SlowClients == 1 })
	if n := sink.countLines("cannot keep up"); n != 1 {
		t.Errorf("%d log lines about the slow client, want 1:\n%s", n, sink.since(0))
	}
	silent.close()
	back := resume(t, addr, "silent")
	got := back.receiveAll(len(first))
	back.close()
	if fmt.Sprint(got) != fmt.Sprint(first) {
		t.Errorf("after resuming: %v, want %v in order", got, first)
	}
	if d := b.Dropped(); d.SessionFull != 0 || d.QueueFull != 0 {
		t.Errorf("drops %+v, want none", d)
	}

	// Away: the session keeps MaxInflight + MaxQueued = 24 of 30, and
	// counts the other 6.
	waitFor(t, 5*time.Second, "the resumed session gone", func() bool {
		cl, ok := b.server.Clients.Get("silent")
		return ok && cl.Closed()
	})
	second := messages("b", 0, 30)
	publishQoS1(t, pub, "slow/x", second)
	// Mochi acknowledges a message before it hands it to the sessions.
	waitFor(t, 5*time.Second, "6 messages counted as dropped", func() bool { return b.Dropped().SessionFull >= 6 })
	if d := b.Dropped(); d.SessionFull != 6 {
		t.Errorf("SessionFull = %d, want 6 (30 messages for a session bounded at 24)", d.SessionFull)
	}
	got = resume(t, addr, "silent").receiveAll(24)
	if fmt.Sprint(got) != fmt.Sprint(second[:24]) {
		t.Errorf("after resuming: %v, want %v in order", got, second[:24])
	}
}

// TestStuckWriteBounded: a subscriber that reads nothing while its window
// is not full yet (large messages fill the sockets first) leaves Mochi's
// write to it blocked, holding the client's lock, which every publisher
// of a message for it then waits on. The watchdog disconnects it after
// SlowClientTimeout; its session keeps every message. Without it the
// publisher would wait until the write deadline Mochi derives from the
// keepalive: 90 s here, never with keepalive 0.
func TestStuckWriteBounded(t *testing.T) {
	limits := DefaultLimits()
	limits.MaxInflight = 64
	limits.MaxQueued = 64
	limits.SlowClientTimeout = time.Second
	b, _ := startTestBroker(t, Options{Listeners: []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}}, AllowAnonymous: true, Limits: limits})
	addr := listenerAddr(t, b, TCP)
	silent := persistentSubscriber(t, addr, "reader", "big/#")
	// A small receive window: the socket fills with a few messages.
	if err := silent.conn.(*net.TCPConn).SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	pub, err := connectTCP(t, addr, "publisher")
	if err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("x", 256<<10)
	var msgs []string
	for i := 0; i < 40; i++ {
		msgs = append(msgs, fmt.Sprintf("w%03d", i)+pad)
	}
	took := publishQoS1(t, pub, "big/x", msgs)
	t.Logf("40 messages of 256 KiB acknowledged in %v", took)
	if took > limits.SlowClientTimeout+5*time.Second {
		t.Errorf("publishing took %v; want the publisher held for about SlowClientTimeout (%v)", took, limits.SlowClientTimeout)
	}
	if d := b.Dropped(); d.SlowClients != 1 || d.SessionFull != 0 {
		t.Errorf("drops %+v, want 1 slow client and nothing dropped", d)
	}
	silent.close()
	var got []string
	for _, m := range resume(t, addr, "reader").receiveAll(len(msgs)) {
		got = append(got, m[:4])
	}
	if want := messages("w", 0, 40); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after resuming: %v, want %v in order", got, want)
	}
}

// TestClientsPublishingToEachOther: two clients that publish to each
// other and both stop reading for a while. Each one's publish waits for
// the other's window, and the acknowledgements that would free it wait
// behind the other's publish, unread: the two would hold each other
// until SlowClientTimeout and be disconnected. A client waiting in its
// own publish gets the session's room above its window instead.
func TestClientsPublishingToEachOther(t *testing.T) {
	limits := DefaultLimits()
	limits.MaxInflight = 8
	limits.MaxQueued = 256
	limits.SlowClientTimeout = 3 * time.Second
	b, _ := startTestBroker(t, Options{Listeners: []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}}, AllowAnonymous: true, Limits: limits})
	addr := listenerAddr(t, b, TCP)
	const n = 100
	stallUntil := time.Now().Add(time.Second)
	type peer struct {
		c        paho.Client
		received atomic.Int64
	}
	connect := func(id, filter string) *peer {
		p := &peer{}
		var once sync.Once
		p.c = paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
			SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(10 * time.Second))
		if tok := p.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("%s: connect: %v", id, tok.Error())
		}
		t.Cleanup(func() { p.c.Disconnect(100) })
		tok := p.c.Subscribe(filter, 1, func(paho.Client, paho.Message) {
			// The first message stalls the client: paho reads nothing
			// more and acknowledges nothing until the handler returns.
			once.Do(func() { time.Sleep(time.Until(stallUntil)) }) // a slow client, not synchronisation
			p.received.Add(1)
		})
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("%s: subscribe: %v", id, tok.Error())
		}
		return p
	}
	a, bb := connect("peer-a", "to-a/#"), connect("peer-b", "to-b/#")
	var wg sync.WaitGroup
	for _, x := range []struct {
		from  *peer
		topic string
	}{{a, "to-b/x"}, {bb, "to-a/x"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var toks []paho.Token
			for i := 0; i < n; i++ {
				toks = append(toks, x.from.c.Publish(x.topic, 1, false, fmt.Sprint(i)))
			}
			for _, tok := range toks {
				if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
					t.Errorf("publish on %s: no PUBACK: %v", x.topic, tok.Error())
					return
				}
			}
		}()
	}
	wg.Wait()
	waitFor(t, 10*time.Second, "every message delivered", func() bool { return a.received.Load() == n && bb.received.Load() == n })
	if d := b.Dropped(); d != (Drops{}) {
		t.Errorf("drops %+v, want none: the two clients held each other up", d)
	}
}

// TestFullQueueKeepsQoS12: what Mochi does with a message for a client
// whose outbound queue (MaxQueued) is full, QoS 0 messages having filled
// it: it numbers the copy, puts it in the session, finds the queue full,
// calls OnPublishDropped and takes the copy out of the session again. A
// QoS 1/2 message a publisher is handing over (and was told is
// delivered) is kept in the session under a new packet identifier and the
// client is disconnected as too slow; it gets the message when it
// resumes. A QoS 0 message, or a QoS 1 message the broker sends on its
// own (a retained message sent on subscription), is dropped and counted.
func TestFullQueueKeepsQoS12(t *testing.T) {
	limits := DefaultLimits()
	limits.MaxInflight = 8
	limits.MaxQueued = 16
	store := &recordingStore{}
	b, sink := startTestBroker(t, Options{Listeners: []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}}, AllowAnonymous: true, Limits: limits, Hooks: []mqtt.Hook{store}})
	addr := listenerAddr(t, b, TCP)
	sub := persistentSubscriber(t, addr, "queued", "q/#")
	if _, err := connectTCP(t, addr, "publisher"); err != nil {
		t.Fatal(err)
	}
	cl, ok := b.server.Clients.Get("queued")
	pubCl, ok2 := b.server.Clients.Get("publisher")
	if !ok || !ok2 {
		t.Fatal("clients missing")
	}
	// Their flows start just after their CONNACK.
	waitFor(t, replyTimeout, "the clients' flows", func() bool { return b.flow.flowOf(cl) != nil && b.flow.flowOf(pubCl) != nil })
	mochiDrops := func(qos byte, payload string, live bool) {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, TopicName: "q/x",
			Payload: []byte(payload), Origin: "publisher", Created: time.Now().Unix()}
		if live {
			// As OnPublish leaves it, until OnPublished.
			pub := b.flow.flowOf(pubCl)
			pub.handing(pk)
			defer pub.release()
		}
		out := pk.Copy(false)
		if qos > 0 {
			id, err := cl.NextPacketID()
			if err != nil {
				t.Fatal(err)
			}
			out.PacketID = uint16(id)
			cl.State.Inflight.Set(out)
		}
		atomic.AddInt64(&b.server.Info.MessagesDropped, 1)
		b.flow.OnPublishDropped(cl, pk)
		if qos > 0 {
			cl.State.Inflight.Delete(out.PacketID)
		}
	}
	mochiDrops(0, "qos0", true)
	mochiDrops(1, "retained", false)
	if d, want := b.Dropped(), (Drops{QueueFull: 2}); d != want {
		t.Errorf("drops %+v, want %+v", d, want)
	}
	mochiDrops(1, "kept", true)
	// A storage hook learns that the message moved to a new identifier.
	if got, want := store.String(), "dropped 2 kept; stored 3 kept; "; got != want {
		t.Errorf("storage was told %q, want %q", got, want)
	}
	sub.expectClosed()
	if d, want := b.Dropped(), (Drops{QueueFull: 2, SlowClients: 1, Kept: 1}); d != want {
		t.Errorf("drops %+v, want %+v", d, want)
	}
	if !strings.Contains(sink.since(0), "its outbound queue is full") {
		t.Errorf("no log line says why the client was disconnected:\n%s", sink.since(0))
	}
	if got := resume(t, addr, "queued").receiveAll(1); fmt.Sprint(got) != "[kept]" {
		t.Errorf("after resuming: %v, want [kept]", got)
	}
}

// recordingStore is a storage hook that records what it is told about
// messages in flight.
type recordingStore struct {
	mqtt.HookBase
	mu  sync.Mutex
	log strings.Builder
}

func (s *recordingStore) ID() string { return "recording-store" }

func (s *recordingStore) Provides(b byte) bool {
	return b == mqtt.OnQosPublish || b == mqtt.OnQosDropped
}

func (s *recordingStore) OnQosPublish(_ *mqtt.Client, pk packets.Packet, _ int64, _ int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(&s.log, "stored %d %s; ", pk.PacketID, pk.Payload)
}

func (s *recordingStore) OnQosDropped(_ *mqtt.Client, pk packets.Packet) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(&s.log, "dropped %d %s; ", pk.PacketID, pk.Payload)
}

func (s *recordingStore) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

// TestSharedSubscriptionPicksRoom: a shared subscription whose members
// are one client that acknowledges nothing and one that keeps up. Each
// message goes to a member with room in its window (Mochi picks one at
// random: half the jobs would wait with the stuck member), so the
// publisher is never held and nobody is disconnected.
func TestSharedSubscriptionPicksRoom(t *testing.T) {
	limits := DefaultLimits()
	limits.MaxInflight = 8
	limits.SlowClientTimeout = 2 * time.Second
	b, _ := startTestBroker(t, Options{Listeners: []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}}, AllowAnonymous: true, Limits: limits})
	addr := listenerAddr(t, b, TCP)
	persistentSubscriber(t, addr, "stuck-member", "$share/workers/jobs/#")
	var received atomic.Int64
	fast, err := connectTCP(t, addr, "fast-member")
	if err != nil {
		t.Fatal(err)
	}
	if tok := fast.Subscribe("$share/workers/jobs/#", 1, func(paho.Client, paho.Message) { received.Add(1) }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	pub, err := connectTCP(t, addr, "dispatcher")
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	took := publishQoS1(t, pub, "jobs/x", messages("j", 0, n))
	stuck, _ := b.server.Clients.Get("stuck-member")
	waitFor(t, 10*time.Second, "every job with a member", func() bool {
		return received.Load()+int64(stuck.State.Inflight.Len()) == n
	})
	t.Logf("%d jobs in %v: %d to the fast member, %d waiting with the stuck one", n, took, received.Load(), stuck.State.Inflight.Len())
	if took > limits.SlowClientTimeout {
		t.Errorf("publishing took %v: the publisher was held for the stuck member", took)
	}
	if n := stuck.State.Inflight.Len(); n > int(limits.MaxInflight) {
		t.Errorf("%d jobs wait with the stuck member, more than its window of %d", n, limits.MaxInflight)
	}
	if d := b.Dropped(); d != (Drops{}) {
		t.Errorf("drops %+v, want none", d)
	}
}

// TestDropsOnSys: the counts Mochi has no $SYS topic for are published
// beside its own, each report.
func TestDropsOnSys(t *testing.T) {
	b, _ := startTestBroker(t, Options{Listeners: []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}}, AllowAnonymous: true})
	c, err := connectTCP(t, listenerAddr(t, b, TCP), "sys-reader")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 10)
	for _, topic := range []string{sysSessionFull, sysSlowClients, "$SYS/broker/messages/dropped"} {
		if tok := c.Subscribe(topic, 0, func(_ paho.Client, m paho.Message) { got <- m.Topic() + " " + string(m.Payload()) }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe %s: %v", topic, tok.Error())
		}
	}
	b.flow.evicted.Add(2)
	b.flow.report()
	want := map[string]bool{sysSessionFull + " 0": true, sysSlowClients + " 2": true, "$SYS/broker/messages/dropped 0": true}
	for len(want) > 0 {
		select {
		case m := <-got:
			delete(want, m)
		case <-time.After(replyTimeout):
			t.Fatalf("not received: %v", want)
		}
	}
}

// TestReceiveMaximumIsTheWindow: an MQTT 5 subscriber that asked for a
// Receive Maximum below MaxInflight has that as its window. Beyond it
// Mochi would hold messages and send one each time the client
// acknowledges another, forgetting it once sent: after a reconnect it
// would not be sent again.
func TestReceiveMaximumIsTheWindow(t *testing.T) {
	limits := DefaultLimits()
	limits.MaxInflight = 8
	limits.SlowClientTimeout = 2 * time.Second
	b, _ := startTestBroker(t, Options{Listeners: []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}}, AllowAnonymous: true, Limits: limits})
	addr := listenerAddr(t, b, TCP)
	// Clean start off, session expiry 300 s, Receive Maximum 2.
	connect := pk("10 r? s'MQTT' 05 00 H60 v{11 L300 21 H2} s'rm-sub'")
	sub := dialRaw(t, addr, 5)
	t.Cleanup(sub.close)
	if err := sub.write(connect); err != nil {
		t.Fatal(err)
	}
	sub.expect("CONNACK 0x00")
	if err := sub.write(pk("82 r? m1 00 s'rm/#' 01")); err != nil {
		t.Fatal(err)
	}
	sub.expect("SUBACK 0x01")

	pub, err := connectTCP(t, addr, "rm-pub")
	if err != nil {
		t.Fatal(err)
	}
	var toks []paho.Token
	for _, m := range messages("r", 0, 4) {
		toks = append(toks, pub.Publish("rm/x", 1, false, m))
	}
	// Two arrive; acknowledging the first lets the third come.
	id, first := sub.nextPublish()
	if _, second := sub.nextPublish(); first != "r000" || second != "r001" {
		t.Fatalf("got %s, %s; want r000, r001", first, second)
	}
	if err := sub.write(append([]byte{0x40, 0x02}, id...)); err != nil {
		t.Fatal(err)
	}
	if _, third := sub.nextPublish(); third != "r002" {
		t.Fatalf("got %s; want r002", third)
	}
	sub.close()
	for _, tok := range toks {
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("no PUBACK: %v", tok.Error())
		}
	}
	// Back: everything not acknowledged comes again, the third included.
	back := dialRaw(t, addr, 5)
	t.Cleanup(back.close)
	if err := back.write(connect); err != nil {
		t.Fatal(err)
	}
	if ack := back.expect("CONNACK 0x00"); ack.body[0]&1 != 1 {
		t.Fatal("CONNACK without session present")
	}
	if got := back.receiveAll(3); fmt.Sprint(got) != "[r001 r002 r003]" {
		t.Errorf("after resuming: %v, want [r001 r002 r003]", got)
	}
}
