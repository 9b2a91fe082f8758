package storage

import (
	"errors"
	"hash/maphash"
	"slices"

	mqtt "github.com/mochi-mqtt/server/v2"
	mstorage "github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
)

// ID names the hook in Mochi's logs.
func (s *Store) ID() string { return "pimqtt-storage" }

// Provides lists the hook methods Mochi calls. There is no OnSysInfoTick
// and no StoredSysInfo: statistics are never written. There is no
// OnConnectAuthenticate or OnACLCheck either (the broker refuses hooks
// that answer those).
func (s *Store) Provides(b byte) bool {
	switch b {
	case mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnClientExpired,
		mqtt.OnSubscribed, mqtt.OnUnsubscribed,
		mqtt.OnPublish, mqtt.OnPacketProcessed, mqtt.OnPacketRead,
		mqtt.OnRetainMessage, mqtt.OnRetainedExpired,
		mqtt.OnQosPublish, mqtt.OnQosComplete, mqtt.OnQosDropped,
		mqtt.StoredClients, mqtt.StoredSubscriptions, mqtt.StoredInflightMessages, mqtt.StoredRetainedMessages:
		return true
	}
	return false
}

// Init is Mochi's hook initialisation; Open did the work.
func (s *Store) Init(any) error { return nil }

// Stop is called by Mochi when the broker closes: it is Close.
func (s *Store) Stop() error { return s.Close() }

// persistent says whether cl's session outlives its connection.
func persistent(cl *mqtt.Client) bool {
	if cl.Net.Inline {
		return false
	}
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval > 0
	}
	return !cl.Properties.Clean
}

// sessionOf is what a client's session record keeps. Authentication data
// and user properties are not kept.
func sessionOf(cl *mqtt.Client) session {
	p := cl.Properties.Props
	return session{
		ProtocolVersion: cl.Properties.ProtocolVersion,
		Clean:           cl.Properties.Clean,
		Username:        cl.Properties.Username,
		Listener:        cl.Net.Listener,
		Expiry:          p.SessionExpiryInterval,
		ExpiryFlag:      p.SessionExpiryIntervalFlag,
		ReceiveMaximum:  p.ReceiveMaximum,
		MaxPacketSize:   p.MaximumPacketSize,
		ProblemInfo:     p.RequestProblemInfo,
		ProblemInfoFlag: p.RequestProblemInfoFlag,
		ResponseInfo:    p.RequestResponseInfo,
	}
}

// write hands ops to the writer as one change; with wait, the change is
// written at once and returned for the caller to wait on (after
// unlocking). Called with s.mu held, so that changes reach the writer in
// the order they were made.
func (s *Store) write(ops []op, wait bool) *change {
	if len(ops) == 0 {
		return nil
	}
	c := &change{ops: ops}
	if wait {
		c.done = make(chan error, 1)
	}
	s.w.enqueue(c)
	return c
}

// await waits for c, if any. A change that could not be written is
// logged by the writer; the broker goes on from memory.
func (s *Store) await(c *change) {
	if c != nil && c.done != nil {
		if err := c.wait(ackTimeout); err != nil {
			s.log.Debug("storage: acknowledging without the disk", "error", err)
		}
	}
}

// OnSessionEstablished stores a persistent session (or its new
// properties), and forgets what is stored of a client that connects
// with a clean session.
func (s *Store) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if cl.Net.Inline {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.sessions[cl.ID]
	if !persistent(cl) {
		if sess != nil {
			s.write(s.dropSession(cl.ID, sess), false)
		}
		return
	}
	if sess == nil {
		sess = &sessState{subs: map[string]subscription{}, inf: map[uint16]infState{}, dlv: map[uint64]struct{}{}}
		s.sessions[cl.ID] = sess
	}
	sess.connected, sess.client = true, nil
	rec := sessionOf(cl)
	if string(encodeSession(rec)) == string(encodeSession(sess.rec)) {
		return
	}
	sess.rec = rec
	s.write([]op{put(bSessions, cl.ID, encodeSession(rec))}, false)
}

// OnDisconnect stores when a persistent session disconnected, so that its
// expiry runs on across restarts, and deletes a session that ends with its
// connection.
func (s *Store) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if cl.Net.Inline {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.sessions[cl.ID]
	if sess == nil {
		return
	}
	if cl.Net.Conn == nil {
		// A client Mochi restored from the store, never connected.
		sess.connected, sess.client = false, cl
		return
	}
	if cl.IsTakenOver() || errors.Is(cl.StopCause(), packets.ErrSessionTakenOver) {
		// The session goes on with the new connection.
		return
	}
	if expire || !persistent(cl) {
		s.write(s.dropSession(cl.ID, sess), false)
		return
	}
	sess.connected, sess.client = false, cl
	rec := sessionOf(cl) // an MQTT 5 DISCONNECT may change the expiry
	rec.Disconnected = cl.StopTime()
	if rec.Disconnected == 0 {
		rec.Disconnected = s.now().Unix()
	}
	sess.rec = rec
	s.write([]op{put(bSessions, cl.ID, encodeSession(rec))}, false)
}

// OnClientExpired deletes an expired session and everything of it.
func (s *Store) OnClientExpired(cl *mqtt.Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sess := s.sessions[cl.ID]; sess != nil {
		s.write(s.dropSession(cl.ID, sess), false)
	}
}

// dropSession forgets a session and returns the deletions of all its
// records.
func (s *Store) dropSession(id string, sess *sessState) []op {
	ops := []op{del(bSessions, id)}
	for filter := range sess.subs {
		ops = append(ops, del(bSubscriptions, subscriptionKey(id, filter)))
		s.mirrorUnsubscribe(id, filter)
	}
	for pid := range sess.inf {
		ops = append(ops, s.dropInflight(id, sess, pid)...)
	}
	for n := range sess.dlv {
		ops = append(ops, del(bDeliveries, deliveryKey(id, n)))
		if ms := s.msgs[n]; ms != nil {
			ms.dlv--
			ops = append(ops, s.dropUnused(n, ms)...)
		}
	}
	delete(s.sessions, id)
	return ops
}

// dropInflight forgets an inflight record and returns its deletion, and
// that of its message if nothing else needs it.
func (s *Store) dropInflight(id string, sess *sessState, pid uint16) []op {
	st := sess.inf[pid]
	delete(sess.inf, pid)
	ops := []op{del(bInflight, inflightKey(id, pid))}
	if st.kind == kindRef {
		if ms := s.msgs[st.msg]; ms != nil {
			ms.refs--
			ops = append(ops, s.dropUnused(st.msg, ms)...)
		}
	}
	return ops
}

// dropUnused deletes a message nothing refers to.
func (s *Store) dropUnused(n uint64, ms *msgState) []op {
	if ms.refs > 0 || ms.dlv > 0 {
		return nil
	}
	delete(s.msgs, n)
	return []op{del(bMessages, messageKey(n))}
}

// OnSubscribed stores a persistent session's new subscriptions, on disk
// before SUBACK: a client told it is subscribed does not subscribe again
// when its session is still there after a restart.
func (s *Store) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	if !persistent(cl) {
		return
	}
	s.mu.Lock()
	sess := s.sessions[cl.ID]
	if sess == nil {
		s.mu.Unlock()
		return
	}
	var ops []op
	for i, f := range pk.Filters {
		if i >= len(codes) || codes[i] >= packets.ErrUnspecifiedError.Code {
			continue
		}
		rec := subscription{QoS: codes[i], NoLocal: f.NoLocal, RetainAsPublished: f.RetainAsPublished, RetainHandling: f.RetainHandling, Identifier: f.Identifier}
		if old, ok := sess.subs[f.Filter]; ok && old == rec {
			continue
		}
		sess.subs[f.Filter] = rec
		s.mirrorSubscribe(cl.ID, f.Filter, rec)
		ops = append(ops, put(bSubscriptions, subscriptionKey(cl.ID, f.Filter), encodeSubscription(rec)))
	}
	c := s.write(ops, true)
	s.mu.Unlock()
	s.await(c)
}

// OnUnsubscribed deletes a persistent session's subscriptions.
func (s *Store) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.sessions[cl.ID]
	if sess == nil {
		return
	}
	var ops []op
	for _, f := range pk.Filters {
		if _, ok := sess.subs[f.Filter]; !ok {
			continue
		}
		delete(sess.subs, f.Filter)
		s.mirrorUnsubscribe(cl.ID, f.Filter)
		ops = append(ops, del(bSubscriptions, subscriptionKey(cl.ID, f.Filter)))
	}
	s.write(ops, false)
}

func (s *Store) mirrorSubscribe(client, filter string, rec subscription) {
	if s.mirror.Subscribe(client, packets.Subscription{
		Filter: filter, Qos: rec.QoS, NoLocal: rec.NoLocal, RetainAsPublished: rec.RetainAsPublished,
		RetainHandling: rec.RetainHandling, Identifier: rec.Identifier,
	}) {
		s.mirrorLen++
	}
}

func (s *Store) mirrorUnsubscribe(client, filter string) {
	if s.mirror.Unsubscribe(filter, client) {
		s.mirrorLen--
	}
}

// OnPublish stores a QoS 1 or 2 message bound for persistent sessions,
// with a delivery record per session, and the PUBREC state of a QoS 2
// message from a persistent session. The acknowledgement waits for it
// (see OnQosPublish).
func (s *Store) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline || pk.FixedHeader.Qos == 0 {
		return pk, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var ops []op
	if p := s.publishing[cl.ID]; p != nil {
		// A PUBLISH of the same client id that never finished: its
		// connection was taken over in the middle.
		ops = append(ops, s.resolve(cl.ID, p)...)
	}
	p := &publishing{owner: cl}
	if s.mirrorLen > 0 {
		if targets := s.targets(pk, cl.ID); len(targets) > 0 {
			n := s.next
			s.next++
			ms := &msgState{hash: s.contentHash(pk), created: pk.Created}
			ops = append(ops, put(bMessages, messageKey(n), encodeMessage(messageFrom(pk))))
			for id, d := range targets {
				ops = append(ops, put(bDeliveries, deliveryKey(id, n), encodeDelivery(d)))
				s.sessions[id].dlv[n] = struct{}{}
				ms.dlv++
				p.targets = append(p.targets, id)
			}
			s.msgs[n] = ms
			p.msg, p.hash, p.topic = n, ms.hash, pk.TopicName
		}
	}
	if sess := s.sessions[cl.ID]; sess != nil && pk.FixedHeader.Qos == 2 && persistent(cl) {
		if _, ok := sess.inf[pk.PacketID]; ok {
			ops = append(ops, s.dropInflight(cl.ID, sess, pk.PacketID)...)
		}
		sess.inf[pk.PacketID] = infState{kind: kindPubrec, created: pk.Created}
		ops = append(ops, put(bInflight, inflightKey(cl.ID, pk.PacketID), encodeInflight(inflight{Kind: kindPubrec, Created: pk.Created})))
	}
	p.wait = s.write(ops, true)
	s.publishing[cl.ID] = p
	return pk, nil
}

// targets are the persistent sessions a message goes to at QoS 1 or 2,
// with what their copies add to it, as Mochi routes it. Of a shared
// subscription group, Mochi picks a member at random: the first by client
// id stands for it, and a different pick is stored when Mochi sends it.
func (s *Store) targets(pk packets.Packet, origin string) map[string]delivery {
	subs := s.mirror.Subscribers(pk.TopicName)
	for _, members := range subs.Shared {
		ids := make([]string, 0, len(members))
		for id := range members {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		sub := members[ids[0]]
		if existing, ok := subs.Subscriptions[ids[0]]; ok {
			sub = existing.Merge(sub)
		}
		subs.Subscriptions[ids[0]] = sub
	}
	var out map[string]delivery
	for id, sub := range subs.Subscriptions {
		sess := s.sessions[id]
		qos := min(pk.FixedHeader.Qos, sub.Qos)
		if sess == nil || qos == 0 || (sub.NoLocal && id == origin) {
			continue
		}
		d := delivery{QoS: qos, Retain: pk.FixedHeader.Retain && sess.rec.ProtocolVersion == 5 && sub.RetainAsPublished}
		for _, v := range sub.Identifiers {
			if v > 0 {
				d.SubIDs = append(d.SubIDs, v)
			}
		}
		if len(sub.Identifiers) == 0 && sub.Identifier > 0 {
			d.SubIDs = []int{sub.Identifier}
		}
		slices.Sort(d.SubIDs)
		if out == nil {
			out = map[string]delivery{}
		}
		out[id] = d
	}
	return out
}

// OnPacketProcessed ends a PUBLISH: deliveries Mochi did not make (a full
// queue, a refused read) are deleted, as Mochi dropped them.
func (s *Store) OnPacketProcessed(cl *mqtt.Client, pk packets.Packet, _ error) {
	if pk.FixedHeader.Type != packets.Publish {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.publishing[cl.ID]; p != nil && p.owner == cl {
		s.write(s.resolve(cl.ID, p), false)
	}
}

// resolve forgets a PUBLISH being processed, returning the deletions of
// its deliveries not made.
func (s *Store) resolve(id string, p *publishing) []op {
	delete(s.publishing, id)
	ms := s.msgs[p.msg]
	if p.msg == 0 || ms == nil {
		return nil
	}
	var ops []op
	for _, target := range p.targets {
		if sess := s.sessions[target]; sess != nil {
			if _, ok := sess.dlv[p.msg]; ok {
				delete(sess.dlv, p.msg)
				ms.dlv--
				ops = append(ops, del(bDeliveries, deliveryKey(target, p.msg)))
			}
		}
	}
	return append(ops, s.dropUnused(p.msg, ms)...)
}

// OnRetainMessage stores (or deletes) a retained message; its publisher's
// acknowledgement waits for it. An unchanged message is not written
// again; the retained messages of VolatileClients are not stored.
func (s *Store) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	topic := pk.TopicName
	s.mu.Lock()
	defer s.mu.Unlock()
	_, stored := s.retained[topic]
	var o op
	switch {
	case s.volatile[cl.ID] || r < 0 || len(pk.Payload) == 0:
		if !stored {
			return
		}
		delete(s.retained, topic)
		o = del(bRetained, topic)
	default:
		m := messageFrom(pk)
		m.Retain = true
		h := s.retainedHash(m)
		if old, ok := s.retained[topic]; ok && old == h {
			return
		}
		s.retained[topic] = h
		o = put(bRetained, topic, encodeMessage(m))
	}
	p := s.publishing[cl.ID]
	wait := p != nil && p.owner == cl && pk.FixedHeader.Qos > 0
	c := s.write([]op{o}, wait)
	if wait {
		p.wait = c
	}
}

// retainedHash identifies a retained message's content, leaving out when
// and by whom it was published: a sensor publishing the same retained
// state again writes nothing.
func (s *Store) retainedHash(m message) uint64 {
	m.Created, m.Origin = 0, ""
	return maphash.Bytes(s.seed, encodeMessage(m))
}

// OnRetainedExpired deletes an expired retained message.
func (s *Store) OnRetainedExpired(topic string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.retained[topic]; ok {
		delete(s.retained, topic)
		s.write([]op{del(bRetained, topic)}, false)
	}
}

// OnQosPublish is called when Mochi is about to send (or queue) a
// QoS 1 or 2 packet:
//   - the PUBACK or PUBREC of a PUBLISH from cl: it waits until what
//     OnPublish and OnRetainMessage stored for that PUBLISH is on disk;
//   - a PUBLISH to a persistent session: its inflight record replaces the
//     delivery record (QoS 2: on disk before it is sent, so that it is
//     never sent again under another packet id).
func (s *Store) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, _ int) {
	switch pk.FixedHeader.Type {
	case packets.Puback, packets.Pubrec:
		s.mu.Lock()
		var c *change
		if p := s.publishing[cl.ID]; p != nil && p.owner == cl {
			c, p.wait = p.wait, nil
		}
		s.mu.Unlock()
		s.await(c)
		return
	case packets.Publish:
	default:
		return
	}
	if !persistent(cl) {
		return
	}
	s.mu.Lock()
	sess := s.sessions[cl.ID]
	if sess == nil {
		s.mu.Unlock()
		return
	}
	pid := pk.PacketID
	h := s.contentHash(pk)
	old, exists := sess.inf[pid]
	if exists && (old.kind == kindRef || old.kind == kindFull) && old.hash == h {
		// Sent again (a reconnect): nothing changed.
		s.mu.Unlock()
		return
	}
	var ops []op
	if exists {
		ops = s.dropInflight(cl.ID, sess, pid)
	}
	rec := inflight{Delivery: delivery{QoS: pk.FixedHeader.Qos, Retain: pk.FixedHeader.Retain, SubIDs: pk.Properties.SubscriptionIdentifier}}
	st := infState{hash: h, created: pk.Created}
	if p := s.publishing[pk.Origin]; p != nil && p.msg != 0 && p.hash == h && (pk.TopicName == "" || pk.TopicName == p.topic) {
		if ms := s.msgs[p.msg]; ms != nil {
			rec.Kind, rec.Msg = kindRef, p.msg
			st.kind, st.msg = kindRef, p.msg
			ms.refs++
			if _, ok := sess.dlv[p.msg]; ok {
				delete(sess.dlv, p.msg)
				ms.dlv--
				ops = append(ops, del(bDeliveries, deliveryKey(cl.ID, p.msg)))
			}
		}
	}
	if rec.Kind == 0 {
		if pk.TopicName == "" {
			// Sent with a topic alias only: no topic to restore it with.
			s.write(ops, false)
			s.mu.Unlock()
			s.log.Debug("storage: message sent under a topic alias not stored", "client", cl.ID, "packet_id", pid)
			return
		}
		rec.Kind, rec.Full = kindFull, messageFrom(pk)
		st.kind = kindFull
	}
	sess.inf[pid] = st
	ops = append(ops, put(bInflight, inflightKey(cl.ID, pid), encodeInflight(rec)))
	c := s.write(ops, pk.FixedHeader.Qos == 2)
	s.mu.Unlock()
	s.await(c)
}

// OnQosComplete deletes an acknowledged message's inflight record.
func (s *Store) OnQosComplete(cl *mqtt.Client, pk packets.Packet) { s.forget(cl, pk.PacketID) }

// OnQosDropped deletes the inflight record of a message Mochi gave up on.
func (s *Store) OnQosDropped(cl *mqtt.Client, pk packets.Packet) { s.forget(cl, pk.PacketID) }

func (s *Store) forget(cl *mqtt.Client, pid uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sess := s.sessions[cl.ID]; sess != nil {
		if _, ok := sess.inf[pid]; ok {
			s.write(s.dropInflight(cl.ID, sess, pid), false)
		}
	}
}

// OnPacketRead handles the two QoS 2 steps whose answer Mochi sends
// before any other hook runs: a publisher's PUBREL (its PUBREC state is
// deleted before PUBCOMP goes out, else a restart would refuse the packet
// id when the publisher uses it again) and a subscriber's PUBREC (the
// PUBREL state is stored before PUBREL goes out, else a restart would send
// the PUBLISH again to a subscriber that already passed it on).
func (s *Store) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	t := pk.FixedHeader.Type
	if t != packets.Pubrel && t != packets.Pubrec {
		return pk, nil
	}
	s.mu.Lock()
	sess := s.sessions[cl.ID]
	if sess == nil {
		s.mu.Unlock()
		return pk, nil
	}
	st, ok := sess.inf[pk.PacketID]
	var c *change
	switch {
	case !ok:
	case t == packets.Pubrel && st.kind == kindPubrec:
		c = s.write(s.dropInflight(cl.ID, sess, pk.PacketID), true)
	case t == packets.Pubrec && (st.kind == kindRef || st.kind == kindFull) && pk.ReasonCode < packets.ErrUnspecifiedError.Code:
		ops := s.dropInflight(cl.ID, sess, pk.PacketID)
		now := s.now().Unix()
		sess.inf[pk.PacketID] = infState{kind: kindPubrel, created: now}
		ops = append(ops, put(bInflight, inflightKey(cl.ID, pk.PacketID), encodeInflight(inflight{Kind: kindPubrel, Created: now})))
		c = s.write(ops, true)
	}
	s.mu.Unlock()
	s.await(c)
	return pk, nil
}

// StoredClients hands Mochi the persistent sessions (and prepares the
// rest of what was read), once, when the broker starts. Sessions that
// expired while pimqtt was stopped are deleted instead.
func (s *Store) StoredClients() ([]mstorage.Client, error) {
	s.mu.Lock()
	if s.boot == nil {
		s.mu.Unlock()
		return nil, nil
	}
	unreadable := len(s.boot.cleanup)
	clients, ops := s.restore()
	h := s.handover
	c := s.write(ops, true)
	s.mu.Unlock()
	s.await(c)
	if unreadable > 0 {
		s.log.Warn("storage: unreadable records left out and deleted", "file", s.opts.Path, "records", unreadable)
	}
	s.log.Info("storage: restored", "file", s.opts.Path, "sessions", len(clients), "subscriptions", len(h.subs),
		"queued_messages", len(h.inflight), "retained", len(h.retained))
	return clients, nil
}

// StoredSubscriptions hands Mochi the restored sessions' subscriptions.
func (s *Store) StoredSubscriptions() ([]mstorage.Subscription, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.handover == nil {
		return nil, nil
	}
	v := s.handover.subs
	s.handover.subs = nil
	return v, nil
}

// StoredInflightMessages hands Mochi the restored sessions' queued and
// inflight messages.
func (s *Store) StoredInflightMessages() ([]mstorage.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.handover == nil {
		return nil, nil
	}
	v := s.handover.inflight
	s.handover.inflight = nil
	return v, nil
}

// StoredRetainedMessages hands Mochi the retained messages.
func (s *Store) StoredRetainedMessages() ([]mstorage.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.handover == nil {
		return nil, nil
	}
	v := s.handover.retained
	s.handover = nil // the last of the four
	return v, nil
}
