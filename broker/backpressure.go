package broker

import (
	"bytes"
	"errors"
	"log/slog"
	"reflect"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Flow control: no QoS 1/2 message that a publisher has had acknowledged
// is dropped because a subscriber is slow.
//
// Mochi acknowledges a QoS 1/2 PUBLISH (PUBACK, PUBREC) and only then
// hands a copy to each subscriber's session; when that session already
// holds its maximum of unacknowledged messages (Capabilities.
// MaximumInflight), or the client's outbound queue is full, the copy is
// dropped: the publisher was told the broker has it, and nobody gets it.
// flowControl moves the wait before the acknowledgement:
//
//   - The window. Before Mochi acknowledges a QoS 1/2 PUBLISH, the
//     publisher's connection goroutine waits until every connected client
//     that will get the message at QoS 1/2 has fewer than Limits.MaxInflight
//     messages it has not acknowledged yet (fewer than its own Receive
//     Maximum, for an MQTT 5 client that set a lower one). Meanwhile
//     nothing more is read from the publisher, so TCP slows it down; its
//     PUBACK comes late, never falsely. Each publisher's messages still go
//     through its own goroutine one at a time, in order, so the order of
//     one publisher's messages on a topic is kept for each subscriber.
//   - The slow client bound. A wait lasts at most Limits.
//     SlowClientTimeout. A subscriber whose window stays full that long,
//     or a write to which does not finish in that time, is disconnected
//     ("cannot keep up"; MQTT 5 clients get DISCONNECT 0x97 if it can
//     be written) and the publisher goes on. A persistent session keeps the
//     message for the subscriber's return; a clean session ends with its
//     connection, as MQTT defines.
//   - The session bound. A session keeps up to MaxInflight + MaxQueued
//     unacknowledged QoS 1/2 messages (Mochi's MaximumInflight), which
//     leaves MaxQueued of room for clients that are away, that were just
//     disconnected as too slow, or that publish to each other (a client
//     waiting in its own publish cannot read acknowledgements, so others
//     may then use that room instead of waiting for it). A message for a
//     session already at that bound is dropped and counted (Drops.
//     SessionFull): only a client that stays away while messages for it
//     pile up loses any, as with mosquitto's max_queued_messages.
//   - The outbound queue (MaxQueued) holds QoS 0 messages too; a QoS 0
//     message for a full queue is dropped and counted (Drops.QueueFull),
//     which MQTT allows. A QoS 1/2 message for a full queue is kept in
//     the session under a new packet identifier and the client
//     disconnected as too slow, so that it gets the message when it
//     resumes.
//
// Messages the broker sends on its own (wills, retained messages sent on
// subscription, $SYS) were not acknowledged to anyone as delivered and do
// not wait: a full session or queue drops them, and counts them.
type flowControl struct {
	mqtt.HookBase
	server *mqtt.Server
	log    *slog.Logger
	// window is Limits.MaxInflight; queued, Limits.MaxQueued; session,
	// Mochi's MaximumInflight.
	window, queued, session int
	// stall is Limits.SlowClientTimeout.
	stall time.Duration
	// recheck bounds each wait for a signal, against a change Mochi makes
	// without calling a hook.
	recheck time.Duration
	// storage are the hooks added after pimqtt's own, told when a
	// message is kept under a new packet identifier.
	storage []mqtt.Hook
	// evictions logs the clients disconnected as too slow, per remote
	// address, rate-limited.
	evictions *rateLimitedCounter
	// subscribers is Mochi's TopicsIndex.Subscribers, or the fast path's
	// cache of it; the result is only read.
	subscribers func(topic string) *mqtt.Subscribers

	mu    sync.RWMutex
	flows map[*mqtt.Client]*clientFlow
	// resuming are the clients resuming a session, by client id, from
	// before Mochi lets them take it over until their flow starts.
	resuming map[string]*mqtt.Client
	// joined is closed when a client's flow starts, if someone waits for
	// a client that is resuming its session.
	joined chan struct{}
	// handedOver is closed when a publisher finishes handing a message to
	// the sessions, if a resuming session waits for that (resumers > 0).
	handedOver chan struct{}
	resumers   atomic.Int32

	evicted atomic.Int64 // clients disconnected as too slow
	kept    atomic.Int64 // QoS 1/2 messages for a full queue kept in the session
	// reported are the drop counts already logged by report.
	reported Drops
}

// clientFlow is the flow state of one connected client: as a receiver,
// the places publishers have reserved in its window; as a publisher, the
// places it holds in others' windows for the message in hand.
type clientFlow struct {
	cl *mqtt.Client
	h  *flowControl

	mu sync.Mutex
	// reserved counts publishers that were let through for this client
	// and have not finished handing their message to Mochi.
	reserved int
	// waiting is set while the client's own connection goroutine waits
	// in the window: it reads nothing, so its acknowledgements wait too.
	waiting bool
	// gone is set once the client is disconnected or being disconnected:
	// nobody waits for it any more.
	gone bool
	// changed is closed when something a waiter checks has changed;
	// made only while someone waits.
	changed chan struct{}
	// held are the clients this one, as a publisher, holds a place with;
	// armed is when watchdog was last set for them.
	held     []*clientFlow
	armed    time.Time
	watchdog *time.Timer
	// publishing is set from the end of OnPublish until OnPublished:
	// Mochi is handing the message (topic inHand, created inHandCreated)
	// to the sessions. publishes counts OnPublish calls.
	publishing    bool
	publishes     uint64
	inHand        string
	inHandCreated int64
	// picks are the shared subscription members chosen for the message
	// in hand (see targets).
	picks map[string]string
	// inlineTo is the client the fast path is writing to from this
	// client's goroutine, if any; inlineWrites counts those writes (see
	// fastPath.watch).
	inlineTo     atomic.Pointer[clientFlow]
	inlineWrites atomic.Uint64
}

// isGone reports whether f's client is disconnected or being
// disconnected.
func (f *clientFlow) isGone() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gone
}

// all returns the flows of the connected clients.
func (h *flowControl) all() []*clientFlow {
	h.mu.RLock()
	defer h.mu.RUnlock()
	fs := make([]*clientFlow, 0, len(h.flows))
	for _, f := range h.flows {
		fs = append(fs, f)
	}
	return fs
}

// errTooSlow is why a client that cannot keep up is disconnected.
var errTooSlow = errors.New("disconnected: cannot keep up with the messages for it")

// evictGrace bounds the DISCONNECT written to an MQTT 5 client being
// disconnected as too slow: its socket may be full.
const evictGrace = time.Second

func newFlowControl(server *mqtt.Server, limits Limits, storage []mqtt.Hook, evictions *rateLimitedCounter, log *slog.Logger) *flowControl {
	return &flowControl{
		server:      server,
		log:         log,
		window:      int(limits.MaxInflight),
		queued:      int(limits.MaxQueued),
		session:     limits.sessionQueue(),
		stall:       limits.slowClientTimeout(),
		recheck:     100 * time.Millisecond,
		storage:     storage,
		evictions:   evictions,
		flows:       make(map[*mqtt.Client]*clientFlow),
		resuming:    make(map[string]*mqtt.Client),
		subscribers: server.Topics.Subscribers,
	}
}

func (h *flowControl) ID() string { return "pimqtt-flow" }

func (h *flowControl) Provides(b byte) bool {
	switch b {
	case mqtt.OnSessionEstablish, mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnPublish, mqtt.OnPublished,
		mqtt.OnQosComplete, mqtt.OnQosDropped, mqtt.OnPublishDropped, mqtt.OnSelectSubscribers,
		mqtt.OnPacketEncode:
		return true
	}
	return false
}

// OnSessionEstablish notes a client about to resume a session, before
// Mochi makes it the session's client: from now on, publishers of
// messages for it wait until its session is resent (see join), so that
// nothing new overtakes what is resent; and it waits for the messages
// being handed to sessions now, decided before it came.
func (h *flowControl) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	if pk.Connect.Clean {
		return
	}
	if _, ok := h.server.Clients.Get(cl.ID); !ok {
		return
	}
	h.mu.Lock()
	h.resuming[cl.ID] = cl
	h.mu.Unlock()
	h.awaitHandovers()
}

// OnSessionEstablished starts the client's flow state once Mochi has
// resent what its session kept. Mochi calls OnDisconnect for every
// client that got this far.
func (h *flowControl) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	h.mu.Lock()
	h.flows[cl] = &clientFlow{cl: cl, h: h}
	if h.resuming[cl.ID] == cl {
		delete(h.resuming, cl.ID)
	}
	if h.joined != nil {
		close(h.joined)
		h.joined = nil
	}
	h.mu.Unlock()
}

// OnPacketEncode puts a resumed session's messages back in the order they
// were sent, just before Mochi resends them: Mochi sorts them by their
// creation time in whole seconds, at random within a second, which breaks
// MQTT's rule that resent messages keep their order [MQTT-4.6.0-1].
func (h *flowControl) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack && pk.SessionPresent {
		orderForResend(cl.State.Inflight, time.Now().Unix())
	}
	return pk
}

// awaitHandovers waits, at most SlowClientTimeout, until the QoS 1/2
// messages being handed to sessions now are handed over: one decided
// for a session before its client came back could otherwise be written
// to the new connection before what the session kept is resent.
func (h *flowControl) awaitHandovers() {
	type inHand struct {
		f *clientFlow
		n uint64
	}
	var busy []inHand
	h.mu.RLock()
	for _, f := range h.flows {
		f.mu.Lock()
		if f.publishing {
			busy = append(busy, inHand{f, f.publishes})
		}
		f.mu.Unlock()
	}
	h.mu.RUnlock()
	if len(busy) == 0 {
		return
	}
	h.resumers.Add(1)
	defer h.resumers.Add(-1)
	deadline := time.NewTimer(h.stall)
	defer deadline.Stop()
	for _, b := range busy {
		for {
			h.mu.Lock()
			if h.handedOver == nil {
				h.handedOver = make(chan struct{})
			}
			handedOver := h.handedOver
			h.mu.Unlock()
			b.f.mu.Lock()
			done := !b.f.publishing || b.f.publishes != b.n
			b.f.mu.Unlock()
			if done {
				break
			}
			select {
			case <-handedOver:
			case <-deadline.C:
				return
			}
		}
	}
}

// orderForResend rewrites the creation times of a session's messages so
// that Mochi's sort (by the creation time's low 16 bits) yields the order
// they were sent in: by creation time, then, within a second, by packet
// identifier, which a session hands out in increasing order (wrapping
// after 65535). Nothing else reads the creation time of a message in
// flight: pimqtt sets no maximum message expiry.
func orderForResend(inflight *mqtt.Inflight, now int64) {
	all := inflight.GetAll(false)
	if len(all) < 2 {
		return
	}
	// Within one second, identifiers that span more than half the range
	// have wrapped: the low ones came after the high ones.
	lo, hi := make(map[int64]uint16), make(map[int64]uint16)
	for _, m := range all {
		if l, ok := lo[m.Created]; !ok || m.PacketID < l {
			lo[m.Created] = m.PacketID
		}
		hi[m.Created] = max(hi[m.Created], m.PacketID)
	}
	key := func(m packets.Packet) int {
		id := int(m.PacketID)
		if hi[m.Created]-lo[m.Created] > 1<<15 && id < 1<<15 {
			id += 1 << 16
		}
		return id
	}
	sort.SliceStable(all, func(i, j int) bool {
		if all[i].Created != all[j].Created {
			return all[i].Created < all[j].Created
		}
		return key(all[i]) < key(all[j])
	})
	base := now - int64(len(all))
	if uint16(base) > uint16(base+int64(len(all))-1) { // the low 16 bits would wrap
		base &^= 0xFFFF
	}
	for i, m := range all {
		m.Created = base + int64(i)
		inflight.Set(m)
	}
}

// OnDisconnect ends the client's flow state: nobody waits for it, and the
// places it held as a publisher are given back.
func (h *flowControl) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.mu.Lock()
	f := h.flows[cl]
	delete(h.flows, cl)
	h.mu.Unlock()
	if f == nil {
		return
	}
	f.mu.Lock()
	f.gone = true
	f.signalLocked()
	f.mu.Unlock()
	f.release()
}

func (h *flowControl) flowOf(cl *mqtt.Client) *clientFlow {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.flows[cl]
}

// flowByID is the flow of the connected client with the id, if any, and
// the client itself while it is connected (its flow is nil while it is
// still connecting or resuming its session).
func (h *flowControl) flowByID(id string) (*clientFlow, *mqtt.Client) {
	cl, ok := h.server.Clients.Get(id)
	if !ok || cl.Closed() {
		return nil, nil
	}
	return h.flowOf(cl), cl
}

// OnPublish holds a QoS 1/2 PUBLISH until every connected client it is
// for has room in its window (see flowControl). It runs in the
// publisher's connection goroutine before Mochi acknowledges the message.
func (h *flowControl) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Qos == 0 || cl.Net.Inline {
		return pk, nil
	}
	pub := h.flowOf(cl)
	if pub == nil {
		return pk, nil
	}
	// Places still held if Mochi did not finish the previous message
	// (a failed PUBACK write, a hook that refused it).
	pub.release()
	defer pub.handing(pk)
	targets, joining, groups := h.targets(cl, pk.TopicName)
	if len(targets) == 0 && len(joining) == 0 && len(groups) == 0 {
		return pk, nil
	}
	w := waiter{pub: pub}
	for _, j := range joining {
		if t := h.join(&w, j); t != nil {
			targets = append(targets, t)
		}
	}
	for _, t := range targets {
		if t, ok := h.reserve(&w, []*clientFlow{t}); !ok {
			h.evict(t, "its window stayed full", "window", h.window, "waited", h.stall.String())
		}
	}
	if len(groups) > 0 {
		picks := make(map[string]string, len(groups))
		for _, g := range groups {
			picks[g.filter] = g.fallback
			t, ok := h.reserve(&w, g.members)
			if t != nil {
				picks[g.filter] = t.cl.ID
			}
			if !ok {
				h.evict(t, "its window stayed full, and those of the other members of its shared subscription", "window", h.window, "waited", h.stall.String())
			}
		}
		pub.mu.Lock()
		pub.picks = picks
		pub.mu.Unlock()
	}
	w.end()
	pub.arm(h)
	return pk, nil
}

// handing marks pub as handing pk to the sessions (see awaitHandovers
// and OnPublishDropped).
func (pub *clientFlow) handing(pk packets.Packet) {
	pub.mu.Lock()
	pub.publishing = true
	pub.publishes++
	pub.inHand = pk.TopicName
	pub.inHandCreated = pk.Created
	pub.mu.Unlock()
}

// hands reports whether pub is handing pk to the sessions.
func (pub *clientFlow) hands(pk packets.Packet) bool {
	pub.mu.Lock()
	defer pub.mu.Unlock()
	return pub.publishing && pub.inHand == pk.TopicName && pub.inHandCreated == pk.Created
}

// OnPublished gives back the places the publisher held: Mochi has handed
// the message to every session, where each counts as in flight.
func (h *flowControl) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	if pk.FixedHeader.Qos == 0 || cl.Net.Inline {
		return
	}
	if pub := h.flowOf(cl); pub != nil {
		pub.release()
	}
}

// OnQosComplete and OnQosDropped wake the publishers waiting for the
// client: a message left its session.
func (h *flowControl) OnQosComplete(cl *mqtt.Client, _ packets.Packet) { h.wake(cl) }

func (h *flowControl) OnQosDropped(cl *mqtt.Client, _ packets.Packet) { h.wake(cl) }

func (h *flowControl) wake(cl *mqtt.Client) {
	if f := h.flowOf(cl); f != nil {
		f.mu.Lock()
		f.signalLocked()
		f.mu.Unlock()
	}
}

// targets are the flows of the connected clients other than the
// publisher that get a message on topic at QoS 1 or 2, those of such
// clients that are still connecting or resuming, and the shared
// subscriptions that get it.
func (h *flowControl) targets(publisher *mqtt.Client, topic string) (flows []*clientFlow, joining []*mqtt.Client, groups []sharedGroup) {
	subs := h.subscribers(topic)
	for id, sub := range subs.Subscriptions {
		if id == publisher.ID || sub.Qos == 0 {
			continue
		}
		h.mu.RLock()
		r := h.resuming[id]
		h.mu.RUnlock()
		if r != nil {
			joining = append(joining, r)
			continue
		}
		switch f, cl := h.flowByID(id); {
		case f != nil:
			flows = append(flows, f)
		case cl != nil:
			joining = append(joining, cl)
		}
	}
	for filter, group := range subs.Shared {
		g := sharedGroup{filter: filter}
		for id, sub := range group {
			if g.fallback == "" || id < g.fallback {
				g.fallback = id
			}
			if id == publisher.ID || sub.Qos == 0 {
				continue
			}
			if f, _ := h.flowByID(id); f != nil {
				g.members = append(g.members, f)
			}
		}
		groups = append(groups, g)
	}
	return flows, joining, groups
}

// sharedGroup is a shared subscription a message goes to: one member
// gets it.
type sharedGroup struct {
	filter string
	// members are the connected members a publisher can wait for.
	members []*clientFlow
	// fallback gets the message if no member is connected: its session
	// keeps it.
	fallback string
}

// join waits, within the publish's bound, until a client that is
// connecting or resuming its session has its flow, and returns it (nil if
// the client went, or at the bound).
func (h *flowControl) join(w *waiter, cl *mqtt.Client) *clientFlow {
	for {
		h.mu.Lock()
		f := h.flows[cl]
		if f != nil || cl.Closed() {
			// A client that failed before its flow started is no longer
			// resuming.
			if h.resuming[cl.ID] == cl {
				delete(h.resuming, cl.ID)
			}
			h.mu.Unlock()
			return f
		}
		if h.joined == nil {
			h.joined = make(chan struct{})
		}
		joined := h.joined
		h.mu.Unlock()
		w.start(h)
		select {
		case <-joined:
		case <-w.recheck.C:
		case <-w.expired:
			return nil
		}
	}
}

// OnSelectSubscribers gives each message for a shared subscription to the
// member of its group its publisher made room with (see OnPublish), else
// to the connected member with the fewest unacknowledged messages. Mochi
// picks one at random, which may be one whose window is full.
func (h *flowControl) OnSelectSubscribers(subs *mqtt.Subscribers, pk packets.Packet) *mqtt.Subscribers {
	if len(subs.Shared) == 0 {
		return subs
	}
	var picks map[string]string
	if pub := h.publisherOf(pk); pub != nil {
		pub.mu.Lock()
		picks = pub.picks
		pub.mu.Unlock()
	}
	subs.SharedSelected = make(map[string]packets.Subscription, len(subs.Shared))
	for filter, group := range subs.Shared {
		id, ok := picks[filter]
		if _, member := group[id]; !ok || !member {
			id = h.leastLoaded(group)
		}
		if id == "" {
			continue
		}
		sub := group[id]
		if prev, ok := subs.SharedSelected[id]; ok {
			sub = prev.Merge(sub)
		}
		subs.SharedSelected[id] = sub
	}
	return subs
}

// leastLoaded is the connected member of a shared subscription group with
// the fewest unacknowledged messages, else any member (its session keeps
// the message).
func (h *flowControl) leastLoaded(group map[string]packets.Subscription) string {
	var bestID string
	bestLoad := -1
	for id := range group {
		if bestID == "" {
			bestID = id
		}
		f, _ := h.flowByID(id)
		if f == nil {
			continue
		}
		if load, ok := f.load(); ok && (bestLoad < 0 || load < bestLoad) {
			bestID, bestLoad = id, load
		}
	}
	return bestID
}

// load is how many unacknowledged messages f has, with the places
// reserved for publishers; false once it is gone.
func (f *clientFlow) load() (int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cl.State.Inflight.Len() + f.reserved, !f.gone && !f.cl.Closed()
}

// limit is how many unacknowledged messages t may have before publishers
// wait for it; t.mu is held.
func (h *flowControl) limit(t *clientFlow) int {
	w := h.window
	if t.waiting {
		// Its acknowledgements wait behind its own publish: waiting for
		// them could deadlock two clients that publish to each other.
		w = h.session
	}
	// An MQTT 5 client's own Receive Maximum: Mochi would hold messages
	// beyond it and send them later, out of order, and forget them once
	// sent (no resend if the connection drops).
	if rm := int(t.cl.Properties.Props.ReceiveMaximum); rm > 0 && rm < w {
		w = rm
	}
	return w
}

// waiter is one publish's wait: it starts the publisher's waiting state
// and the SlowClientTimeout bound at the first wait, and ends both.
type waiter struct {
	pub     *clientFlow
	expired chan struct{} // closed at the bound; nil before any wait
	timer   *time.Timer
	recheck *time.Ticker
}

func (w *waiter) start(h *flowControl) {
	if w.expired != nil {
		return
	}
	w.expired = make(chan struct{})
	w.timer = time.AfterFunc(h.stall, func() { close(w.expired) })
	w.recheck = time.NewTicker(h.recheck)
	w.pub.mu.Lock()
	w.pub.waiting = true
	// Others may now use the room left above its window.
	w.pub.signalLocked()
	w.pub.mu.Unlock()
}

func (w *waiter) end() {
	if w.expired == nil {
		return
	}
	w.timer.Stop()
	w.recheck.Stop()
	w.pub.mu.Lock()
	w.pub.waiting = false
	w.pub.mu.Unlock()
}

// reserve takes a place for w's publisher in the window of one of the
// candidates, the one with the most room, waiting for one until the
// publish's bound. A candidate that is gone needs no place; if all are,
// it returns nil. At the bound it returns the candidate with the most
// room and false.
func (h *flowControl) reserve(w *waiter, candidates []*clientFlow) (*clientFlow, bool) {
	for {
		var best *clientFlow
		bestRoom := 0
		for _, t := range candidates {
			t.mu.Lock()
			if !t.gone && !t.cl.Closed() {
				if room := h.limit(t) - t.cl.State.Inflight.Len() - t.reserved; best == nil || room > bestRoom {
					best, bestRoom = t, room
				}
			}
			t.mu.Unlock()
		}
		if best == nil {
			return nil, true
		}
		if best.take(h) {
			w.pub.mu.Lock()
			w.pub.held = append(w.pub.held, best)
			w.pub.mu.Unlock()
			return best, true
		}
		// No room anywhere: wait until a candidate changes, or for the
		// next look, or the bound.
		var changed []chan struct{}
		for _, t := range candidates {
			t.mu.Lock()
			if t.changed == nil {
				t.changed = make(chan struct{})
			}
			changed = append(changed, t.changed)
			t.mu.Unlock()
		}
		if bestRoom > 0 {
			continue // room came and went between the looks
		}
		w.start(h)
		if waitAny(changed, w.recheck.C, w.expired) == waitExpired {
			return best, false
		}
	}
}

// take reserves a place in t's window if it has room.
func (t *clientFlow) take(h *flowControl) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.gone || h.limit(t)-t.cl.State.Inflight.Len()-t.reserved <= 0 {
		return false
	}
	t.reserved++
	return true
}

// Outcomes of waitAny.
const (
	waitChanged = iota
	waitRecheck
	waitExpired
)

// waitAny waits until one of changed is closed, recheck ticks or expired
// is closed.
func waitAny(changed []chan struct{}, recheck <-chan time.Time, expired <-chan struct{}) int {
	if len(changed) == 1 {
		select {
		case <-changed[0]:
			return waitChanged
		case <-recheck:
			return waitRecheck
		case <-expired:
			return waitExpired
		}
	}
	// A shared subscription's members: any of them may make room.
	cases := make([]reflect.SelectCase, 0, len(changed)+2)
	cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(expired)},
		reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(recheck)})
	for _, c := range changed {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(c)})
	}
	switch i, _, _ := reflect.Select(cases); i {
	case 0:
		return waitExpired
	case 1:
		return waitRecheck
	}
	return waitChanged
}

// signalLocked wakes whoever waits for f; f.mu is held.
func (f *clientFlow) signalLocked() {
	if f.changed != nil {
		close(f.changed)
		f.changed = nil
	}
}

// release gives back the places f holds as a publisher: the message is
// handed over, or Mochi gave up on it.
func (f *clientFlow) release() {
	f.mu.Lock()
	held := f.held
	f.held = nil
	if f.watchdog != nil {
		f.watchdog.Stop()
	}
	wasPublishing := f.publishing
	f.publishing = false
	f.picks = nil
	f.mu.Unlock()
	for _, t := range held {
		t.mu.Lock()
		t.reserved--
		t.signalLocked()
		t.mu.Unlock()
	}
	if wasPublishing && f.h.resumers.Load() > 0 {
		f.h.mu.Lock()
		if f.h.handedOver != nil {
			close(f.h.handedOver)
			f.h.handedOver = nil
		}
		f.h.mu.Unlock()
	}
}

// arm starts the watchdog of the places f holds: if Mochi has not
// finished handing the message over within SlowClientTimeout, a write to
// one of the clients it is for may be stuck (Mochi holds a client's lock
// while it writes to its socket, and takes it to number each message), so
// that client is disconnected, which ends the write.
func (f *clientFlow) arm(h *flowControl) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.held) == 0 {
		return
	}
	f.armed = time.Now()
	if f.watchdog == nil {
		f.watchdog = time.AfterFunc(h.stall, func() { h.stuck(f) })
		return
	}
	f.watchdog.Reset(h.stall)
}

// stuck disconnects the clients f's publish waits for whose lock is
// held: a write to them has not ended for SlowClientTimeout.
func (h *flowControl) stuck(f *clientFlow) {
	f.mu.Lock()
	if len(f.held) == 0 || time.Since(f.armed) < h.stall {
		f.mu.Unlock()
		return
	}
	held := append([]*clientFlow(nil), f.held...)
	f.mu.Unlock()
	for _, t := range held {
		if t.cl.TryLock() {
			t.cl.Unlock()
			continue
		}
		h.evict(t, "a write to it did not finish", "waited", h.stall.String())
	}
}

// evict disconnects a client that cannot keep up, once: at once for the
// publishers (nobody waits for it any more), in the background for its
// connection, whose socket may be full.
func (h *flowControl) evict(t *clientFlow, reason string, attrs ...any) {
	t.mu.Lock()
	if t.gone {
		t.mu.Unlock()
		return
	}
	t.gone = true
	t.signalLocked()
	t.mu.Unlock()
	h.evicted.Add(1)
	h.evictions.add(remoteHost(t.cl.Net.Remote), append(append([]any{"reason", reason}, attrs...), clientAttrs(t.cl, "")...)...)
	go h.disconnect(t.cl)
}

// disconnect ends a client's connection, telling an MQTT 5 client why if
// that can be written within evictGrace.
func (h *flowControl) disconnect(cl *mqtt.Client) {
	if cl.Properties.ProtocolVersion == 5 {
		t := time.AfterFunc(evictGrace, func() { cl.Stop(errTooSlow) })
		_ = h.server.DisconnectClient(cl, packets.ErrQuotaExceeded)
		t.Stop()
	}
	cl.Stop(errTooSlow)
}

// OnPublishDropped is called by Mochi when cl's outbound queue is full.
// A QoS 0 delivery may be dropped (Mochi counts it), and so may a QoS 1/2
// message the broker sends on its own: a retained message sent because
// cl subscribed (it stays retained: subscribing again gets it), a will.
// A QoS 1/2 message acknowledged to a publisher is kept in cl's session
// under a new packet identifier, as Mochi takes the one it gave it back
// when this returns, and cl is disconnected as too slow, so that it gets
// the message when it resumes its session.
func (h *flowControl) OnPublishDropped(cl *mqtt.Client, pk packets.Packet) {
	if pk.FixedHeader.Qos == 0 || !h.live(pk) {
		return
	}
	out, ok := queuedCopy(cl, pk)
	if !ok {
		return // delivered at QoS 0: its subscription's maximum
	}
	id, err := cl.NextPacketID()
	if err != nil {
		return // the session is full: Mochi counts the drop
	}
	kept := out
	kept.PacketID = uint16(id)
	if cl.State.Inflight.Set(kept) {
		atomic.AddInt64(&h.server.Info.Inflight, 1)
	}
	// Mochi counted it as dropped, and told storage of out only.
	atomic.AddInt64(&h.server.Info.MessagesDropped, -1)
	for _, s := range h.storage {
		if s.Provides(mqtt.OnQosDropped) {
			s.OnQosDropped(cl, out)
		}
		if s.Provides(mqtt.OnQosPublish) {
			s.OnQosPublish(cl, kept, kept.Created, 0)
		}
	}
	h.kept.Add(1)
	if f := h.flowOf(cl); f != nil {
		h.evict(f, "its outbound queue is full", "max_queued", h.queued)
	}
}

// live reports whether pk is a message its publisher is handing to the
// sessions now, rather than one the broker sends on its own.
func (h *flowControl) live(pk packets.Packet) bool { return h.publisherOf(pk) != nil }

// publisherOf is the flow of the client handing pk to the sessions now,
// if any.
func (h *flowControl) publisherOf(pk packets.Packet) *clientFlow {
	cl, ok := h.server.Clients.Get(pk.Origin)
	if !ok {
		return nil
	}
	if f := h.flowOf(cl); f != nil && f.hands(pk) {
		return f
	}
	return nil
}

// queuedCopy finds the copy of pk Mochi has just put in cl's session for
// the outbound queue: the QoS 1/2 PUBLISH from the same publisher, made
// at the same second, with the same topic and payload.
func queuedCopy(cl *mqtt.Client, pk packets.Packet) (packets.Packet, bool) {
	for _, m := range cl.State.Inflight.GetAll(false) {
		if m.FixedHeader.Type == packets.Publish && m.FixedHeader.Qos > 0 && m.Origin == pk.Origin && m.Created == pk.Created &&
			(m.TopicName == pk.TopicName || m.TopicName == "") && bytes.Equal(m.Payload, pk.Payload) {
			return m, true
		}
	}
	return packets.Packet{}, false
}

// Drops counts what the broker did not deliver, and the clients it
// disconnected because they could not keep up.
type Drops struct {
	// QueueFull counts messages dropped because the client's outbound
	// queue (Limits.MaxQueued) was full: QoS 0 messages, as MQTT allows,
	// and QoS 1/2 messages no publisher was told were delivered: retained
	// messages sent on subscription (they stay retained) and wills.
	QueueFull int64
	// SessionFull counts QoS 1/2 messages not kept for a session that
	// already held Limits.MaxInflight + Limits.MaxQueued messages its
	// client had not acknowledged: a client that stayed away (or was
	// disconnected as too slow) while messages for it piled up.
	SessionFull int64
	// SlowClients counts clients disconnected because they could not keep
	// up (see Limits.SlowClientTimeout). Their persistent sessions keep
	// what was sent to them.
	SlowClients int64
	// Kept counts QoS 1/2 messages for a full outbound queue that were
	// kept in the session (and the client disconnected) instead of being
	// dropped.
	Kept int64
}

// Dropped returns what the broker has dropped since it started, by cause.
// Nothing a publisher had acknowledged is dropped for a connected client.
func (b *Broker) Dropped() Drops { return b.flow.drops() }

func (h *flowControl) drops() Drops {
	info := h.server.Info.Clone()
	return Drops{
		QueueFull:   info.MessagesDropped,
		SessionFull: info.InflightDropped,
		SlowClients: h.evicted.Load(),
		Kept:        h.kept.Load(),
	}
}

// publishSys publishes the counts beside Mochi's $SYS topics, not
// retained (Mochi's are retained but never reach a storage hook; these
// would), so a subscriber has them within reportInterval.
func (h *flowControl) publishSys(d Drops) {
	for topic, n := range map[string]int64{sysSessionFull: d.SessionFull, sysSlowClients: d.SlowClients} {
		if err := h.server.Publish(topic, []byte(strconv.FormatInt(n, 10)), false, 0); err != nil {
			h.log.Debug("could not publish a $SYS count", "topic", topic, "error", err)
		}
	}
}

// sweep forgets the flows of clients closed for longer than any wait can
// last whose OnDisconnect never came (a connection whose goroutine
// panicked, see connGuard), and the clients that failed while resuming.
func (h *flowControl) sweep(now time.Time) {
	limit := int64((reportInterval + 2*h.stall) / time.Second)
	var stale []*clientFlow
	h.mu.Lock()
	for cl, f := range h.flows {
		if stopped := cl.StopTime(); cl.Closed() && stopped > 0 && now.Unix()-stopped > limit {
			stale = append(stale, f)
			delete(h.flows, cl)
		}
	}
	for id, cl := range h.resuming {
		if cl.Closed() {
			delete(h.resuming, id)
		}
	}
	h.mu.Unlock()
	for _, f := range stale {
		f.mu.Lock()
		f.gone = true
		f.signalLocked()
		f.mu.Unlock()
		f.release()
	}
}

// $SYS topics of the counts Mochi does not publish; Mochi's
// $SYS/broker/messages/dropped is Drops.QueueFull.
const (
	sysSessionFull = "$SYS/broker/messages/dropped/session_full"
	sysSlowClients = "$SYS/broker/clients/disconnected_slow"
)

// report logs the messages dropped since the last report, if any,
// publishes the counts on $SYS, and sweeps stale flows; the broker calls
// it every reportInterval.
func (h *flowControl) report() {
	h.sweep(time.Now())
	d := h.drops()
	h.publishSys(d)
	queue, session := d.QueueFull-h.reported.QueueFull, d.SessionFull-h.reported.SessionFull
	h.reported = d
	if queue > 0 || session > 0 {
		h.log.Warn("messages dropped: clients too far behind (see max_queued)",
			"queue_full", queue, "session_full", session, "since", reportInterval.String())
	}
}
