package broker

import (
	"reflect"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// The fast publish path: a QoS 0 PUBLISH for a few connected subscribers
// is written to each of them from the publisher's own connection
// goroutine, during OnPublish, instead of being handed to Mochi's writer
// goroutine of each subscriber through its outbound queue. It saves what a
// profile of Mochi's fan-in shows as most of its cost: the subscriber
// lookup, which rebuilds maps for every message (a cache of the
// subscribers of each topic here, which flowControl uses too), the
// hand-off to another goroutine, and the copies; and a slow subscriber now
// slows its publishers down (TCP) instead of losing QoS 0 messages when
// its queue is full.
//
// Everything the fast path does not handle goes Mochi's own way (OnPublish
// lets the message through, Mochi routes it), so that each of these keeps
// its meaning by construction: QoS 1/2 publishes (measured: written inline
// they were slower under fan-in than Mochi's writer, which coalesces the
// writes of a busy queue; flowControl holds them), retained messages
// (Mochi keeps and stores them), shared subscriptions (flowControl picks
// the member), inline subscriptions, subscribers that use topic aliases,
// subscribers that are connecting or resuming a session (their session is
// resent first), messages of Mochi's inline client, and fan-outs larger
// than maxInline (Mochi's writer goroutines then write in parallel). Wills
// and $SYS never pass OnPublish.
//
// For what it handles it does what Mochi's publishToClient does for a QoS
// 0 message that is not retained, in the same order: no-local, the read
// check (authHook), the subscription identifiers, message expiry and
// encoding (WritePacket's, in batcher.writePublish); and it then tells Mochi to skip its own routing
// (CodeSuccessIgnore: Mochi still calls OnPublished).
//
// Order. A publisher's messages reach each subscriber in the order it sent
// them: its own goroutine writes them one after the other, and one it
// left to Mochi is in the subscriber's outbound queue until written, so a
// message for a client whose queue is not empty goes Mochi's way, behind
// what is queued. The writes are batched (see batcher): a message
// appended to a subscriber's batch is written before anything Mochi
// writes to it afterwards.
//
// Slow subscribers. A write blocks its publisher while the subscriber's
// socket is full: that is the flow control of QoS 0. It is bounded by
// Limits.SlowClientTimeout: a write that has not finished by then gets the
// subscriber disconnected as too slow (flowControl.evict), which ends the
// write; the publisher goes on. A QoS 0 message left to Mochi waits for
// room in each subscriber's outbound queue, so that it is not dropped,
// bounded the same way.
type fastPath struct {
	mqtt.HookBase
	server *mqtt.Server
	auth   *authHook
	flow   *flowControl
	// maxInline is the largest fan-out written inline.
	maxInline int
	// stall is Limits.SlowClientTimeout; queueCap is Limits.MaxQueued.
	stall    time.Duration
	queueCap int32
	mochi    mochiFields
	// batch batches the writes to a subscriber (see batcher).
	batch *batcher

	// gen counts the changes of Mochi's topic index (subscriptions,
	// sessions); a route made before the last one is not used.
	gen    atomic.Uint64
	mu     sync.RWMutex
	routes map[string]*route
}

// maxRoutes bounds the cache of routes: past it the cache starts over.
const maxRoutes = 4096

// defaultMaxInline is the largest fan-out written inline: beyond it,
// Mochi's writer goroutines, one per subscriber, use both cores of a Pi
// 2 and up. Measured on 2 cores: see bench_test.go.
const defaultMaxInline = 8

// route is what a message on one topic goes to, as Mochi's topic index
// said at generation gen.
type route struct {
	gen uint64
	// mochi: the message goes Mochi's way (shared or inline
	// subscriptions, or more than maxInline subscribers).
	mochi   bool
	targets []target
	// subs is what the index said, for flowControl (read only).
	subs *mqtt.Subscribers
}

// target is one subscriber of a route.
type target struct {
	id  string
	sub packets.Subscription
	// subIDs are the subscription identifiers a copy carries, as Mochi
	// sets them: sorted, shared by every copy (never changed).
	subIDs []int
	// holder is the last client under id seen holding the subscription:
	// the index names clients by id, and a client that took the id over
	// since (a clean session) may not have subscribed.
	holder *atomic.Pointer[mqtt.Client]
}

// mochiFields are the offsets of the fields of Mochi's client state the
// fast path reads and Mochi does not export: the count of packets in a
// client's outbound queue (not yet written). It exists in the version pimqtt pins (v2.7.9); if a later version lacks
// it, the fast path is off (see newFastPath).
type mochiFields struct {
	outboundQty uintptr
}

func findMochiFields() (mochiFields, bool) {
	var m mochiFields
	field := func(t reflect.Type, name string, off *uintptr) bool {
		f, ok := t.FieldByName(name)
		if ok && f.Type.Kind() == reflect.Int32 {
			*off = f.Offset
		}
		return ok && f.Type.Kind() == reflect.Int32
	}
	return m, field(reflect.TypeFor[mqtt.ClientState](), "outboundQty", &m.outboundQty)
}

// queued is how many packets Mochi has queued for cl and not yet
// written: its WriteLoop counts one down only once written.
func (m mochiFields) queued(cl *mqtt.Client) int32 {
	return atomic.LoadInt32((*int32)(unsafe.Add(unsafe.Pointer(&cl.State), m.outboundQty)))
}

// newFastPath returns the fast path, or nil when this Mochi's client state
// does not have the fields it reads.
func newFastPath(server *mqtt.Server, auth *authHook, flow *flowControl, limits Limits) *fastPath {
	m, ok := findMochiFields()
	batch := newBatcher(server)
	if !ok || batch == nil {
		return nil
	}
	return &fastPath{
		server:    server,
		auth:      auth,
		flow:      flow,
		maxInline: defaultMaxInline,
		stall:     limits.slowClientTimeout(),
		queueCap:  limits.MaxQueued,
		mochi:     m,
		batch:     batch,
		routes:    make(map[string]*route),
	}
}

func (h *fastPath) ID() string { return "pimqtt-fastpath" }

func (h *fastPath) Provides(b byte) bool {
	switch b {
	case mqtt.OnPublish, mqtt.OnSubscribed, mqtt.OnUnsubscribed, mqtt.OnSessionEstablish,
		mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnClientExpired:
		return true
	}
	return false
}

// Every change of Mochi's topic index is followed by one of these hooks
// (SUBSCRIBE, UNSUBSCRIBE, inline subscriptions, a clean session's end,
// a session taken over or inherited), which Mochi calls before it answers
// the client: a route made before is not used after. The others are for
// good measure: they come with changes of who is connected.

func (h *fastPath) OnSubscribed(*mqtt.Client, packets.Packet, []byte) { h.gen.Add(1) }
func (h *fastPath) OnUnsubscribed(*mqtt.Client, packets.Packet)       { h.gen.Add(1) }
func (h *fastPath) OnSessionEstablish(*mqtt.Client, packets.Packet)   { h.gen.Add(1) }
func (h *fastPath) OnSessionEstablished(*mqtt.Client, packets.Packet) { h.gen.Add(1) }
func (h *fastPath) OnDisconnect(*mqtt.Client, error, bool)            { h.gen.Add(1) }
func (h *fastPath) OnClientExpired(*mqtt.Client)                      { h.gen.Add(1) }

// routeOf returns the route of topic, from the cache if still current.
func (h *fastPath) routeOf(topic string) *route {
	gen := h.gen.Load()
	h.mu.RLock()
	r := h.routes[topic]
	h.mu.RUnlock()
	if r != nil && r.gen == gen {
		return r
	}
	// Read before the index: a change made while it is read bumps gen
	// past the route's.
	subs := h.server.Topics.Subscribers(topic)
	r = &route{gen: gen, subs: subs}
	switch {
	case len(subs.Shared) > 0 || len(subs.InlineSubscriptions) > 0:
		r.mochi = true
	default:
		r.mochi = len(subs.Subscriptions) > h.maxInline
		r.targets = make([]target, 0, len(subs.Subscriptions))
		for id, sub := range subs.Subscriptions {
			t := target{id: id, sub: sub, holder: new(atomic.Pointer[mqtt.Client])}
			for _, n := range sub.Identifiers {
				t.subIDs = append(t.subIDs, n)
			}
			slices.Sort(t.subIDs)
			r.targets = append(r.targets, t)
		}
		// The same order for every message: deterministic writes.
		slices.SortFunc(r.targets, func(a, b target) int {
			switch {
			case a.id < b.id:
				return -1
			case a.id > b.id:
				return 1
			}
			return 0
		})
	}
	h.mu.Lock()
	if len(h.routes) >= maxRoutes {
		clear(h.routes)
	}
	h.routes[topic] = r
	h.mu.Unlock()
	return r
}

// delivery is one subscriber of a message on the fast path.
type delivery struct {
	t  *target
	cl *mqtt.Client
	f  *clientFlow // nil when the client is not connected
}

// OnPublish delivers pk itself when it can (see fastPath) and tells Mochi
// to skip its own routing; else it lets Mochi route it, after waiting for
// room in the outbound queues of its QoS 0 subscribers. It runs last,
// after every other hook has let the message through and flowControl has
// made room for it.
func (h *fastPath) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline || pk.FixedHeader.Retain || pk.Ignore || pk.FixedHeader.Qos > 0 {
		return pk, nil
	}
	r := h.routeOf(pk.TopicName)
	var buf [defaultMaxInline]delivery
	ds, inline := h.deliveries(r, buf[:0])
	if !inline {
		h.awaitRoom(cl, ds)
		return pk, nil
	}
	pub := h.flow.flowOf(cl)
	// Mochi's copy for a subscriber (Packet.Copy) without copying what
	// nobody changes: the payload and properties are only read from here.
	base := pk
	base.FixedHeader.Dup = false // [MQTT-3.3.1-3]
	base.PacketID = 0
	base.Properties.TopicAlias, base.Properties.TopicAliasFlag = 0, false // the publisher's alias
	for _, d := range ds {
		h.deliver(pub, d, pk, base)
	}
	return pk, packets.CodeSuccessIgnore
}

// deliveries lists the subscribers of a message on route r, and whether
// the fast path may write to all of them; if not, the list holds the
// connected ones (for awaitRoom).
func (h *fastPath) deliveries(r *route, ds []delivery) ([]delivery, bool) {
	inline := !r.mochi
	for i := range r.targets {
		t := &r.targets[i]
		cl, ok := h.server.Clients.Get(t.id)
		if !ok {
			continue // as Mochi: a client it has forgotten gets nothing
		}
		if t.holder.Load() != cl {
			// A route read just before a client reconnected clean
			// under this id, used after: the new session has not
			// subscribed and gets nothing.
			if _, ok := cl.State.Subscriptions.Get(t.sub.Filter); !ok {
				continue
			}
			t.holder.Store(cl)
		}
		d := delivery{t: t, cl: cl}
		if cl.Net.Conn != nil && !cl.Closed() {
			d.f = h.flow.flowOf(cl)
			if d.f == nil || cl.Properties.Props.TopicAliasMaximum > 0 || h.mochi.queued(cl) > 0 {
				// Connecting or resuming: its session is resent first.
				// Topic aliases: Mochi numbers them as it queues. A
				// queue not yet written: this message goes behind it.
				inline = false
			}
		}
		ds = append(ds, d)
	}
	return ds, inline
}

// deliver is Mochi's publishToClient for one subscriber, with the write
// done here (see fastPath).
func (h *fastPath) deliver(pub *clientFlow, d delivery, pk, base packets.Packet) {
	cl, sub := d.cl, d.t.sub
	if sub.NoLocal && pk.Origin == cl.ID {
		return // [MQTT-3.8.3-3]
	}
	if !h.auth.OnACLCheck(cl, pk.TopicName, false) {
		return
	}
	out := base // QoS 0, not retained: the subscription's QoS and retain-as-published change nothing
	if len(d.t.subIDs) > 0 {
		out.Properties.SubscriptionIdentifier = d.t.subIDs
	}
	if d.f == nil || cl.Net.Conn == nil || cl.Closed() {
		return // as Mochi: a QoS 0 message for a client away is dropped
	}
	var progress *atomic.Uint64
	if pub != nil {
		pub.inlineTo.Store(d.f)
		pub.inlineWrites.Add(1)
		progress = &pub.inlineWrites
	}
	h.batch.writePublish(cl, out, progress)
	if pub != nil {
		pub.inlineTo.Store(nil)
	}
}

// awaitRoom waits until each connected subscriber of a QoS 0 message Mochi
// is about to route has room in its outbound queue, so that Mochi does not
// drop the message (bounded, see awaitRoomFor).
func (h *fastPath) awaitRoom(pub *mqtt.Client, ds []delivery) {
	for _, d := range ds {
		if d.f == nil || d.cl == pub || h.mochi.queued(d.cl) < h.queueCap {
			continue
		}
		h.awaitRoomFor(d.f)
	}
}

// awaitRoomFor waits until t's outbound queue has room; if it has none for
// SlowClientTimeout, t is disconnected as too slow (as a full window
// does, see flowControl).
func (h *fastPath) awaitRoomFor(t *clientFlow) {
	var deadline time.Time
	for i := 0; ; i++ {
		if h.mochi.queued(t.cl) < h.queueCap || t.cl.Closed() || t.isGone() {
			return
		}
		switch {
		case i < 16:
			runtime.Gosched()
			continue
		case deadline.IsZero():
			deadline = time.Now().Add(h.stall)
		case time.Now().After(deadline):
			h.flow.evict(t, "its outbound queue stayed full", "max_queued", h.queueCap, "waited", h.stall.String())
			return
		}
		// Mochi signals nothing when its writer empties the queue.
		time.Sleep(50 * time.Microsecond) // polling interval
	}
}

// watch disconnects, as too slow, a client an inline write to which has
// not finished for SlowClientTimeout (its socket stays full), which ends
// the write; it looks every tenth of that until stop is closed.
func (h *fastPath) watch(stop <-chan struct{}) {
	tick := time.NewTicker(h.stall / 10)
	defer tick.Stop()
	type seen struct {
		n     uint64
		since time.Time
	}
	last := make(map[*clientFlow]seen)
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			for _, pub := range h.flow.all() {
				t := pub.inlineTo.Load()
				if t == nil {
					delete(last, pub)
					continue
				}
				n := pub.inlineWrites.Load()
				s, ok := last[pub]
				if !ok || s.n != n {
					last[pub] = seen{n, now}
					continue
				}
				if now.Sub(s.since) >= h.stall {
					h.flow.evict(t, "a write to it did not finish", "waited", h.stall.String())
				}
			}
			for pub := range last {
				if pub.isGone() {
					delete(last, pub)
				}
			}
		}
	}
}

// subscribers is Mochi's TopicsIndex.Subscribers from the cache, for
// flowControl; the result must not be changed.
func (h *fastPath) subscribers(topic string) *mqtt.Subscribers { return h.routeOf(topic).subs }
