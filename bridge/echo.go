package bridge

import (
	"hash/maphash"
	"sync"
	"time"
)

// echoFilter recognises the remote broker's echoes of what the bridge sent it.
//
// The bridge connects to the remote as a plain MQTT 3.1.1 client (level 4), which has no
// no-local option: a broker delivers a client's own publish back to it when one of its
// subscriptions matches (mosquitto does, and so does nats-server, which speaks nothing else).
// A topic bridged both ways would then come straight back and be published again locally.
//
// So, for every message sent to the remote whose topic one of the bridge's remote
// subscriptions matches, the bridge remembers a fingerprint (remote topic + payload hash)
// before the PUBLISH leaves, and drops the first message from the remote with that
// fingerprint that arrives within echoWindow. Each fingerprint is consumed by one message.
//
// Why this is exact when the remote echoes: MQTT keeps the order of one publisher's messages
// on a topic to a subscriber, so the echo of the bridge's Nth message on a topic comes after
// the echoes of the ones before it, and the remembered fingerprints are consumed in the order
// they were sent. A message from another client with the same topic and payload is
// interchangeable with the echo (same bytes, same topic): dropping one of the two and
// forwarding the other gives the local side exactly the copies that did not come from it.
//
// When the remote does not echo (its ACL hides the topic from the bridge, a broker with a
// bridge mode, a message lost with a connection), the fingerprint stays until echoWindow has
// passed, and meanwhile swallows the first identical message (same topic and payload) another
// client publishes at the remote: a toggle sent twice within the window would arrive once.
// That is the price of not trusting the remote; the window and the bound keep it small.
//
// The other way round, an echo arriving after its fingerprint expired is forwarded: with
// CleanSession false the remote keeps the echo of a message sent just before a connection
// died for the bridge's session, and delivers it on the next connection; after an outage
// longer than echoWindow local subscribers see that message a second time (the local broker
// sends nothing the bridge publishes back to it, so it goes no further).
type echoFilter struct {
	window time.Duration
	limit  int
	seed   maphash.Seed

	mu    sync.Mutex
	next  uint64
	fifo  []echoEntry          // in the order remembered, hence also of expiry
	live  map[echoKey][]uint64 // sequence numbers of unconsumed entries per fingerprint
	clock func() time.Time     // time.Now; a test may replace it
}

type echoKey struct {
	topic string
	hash  uint64
}

type echoEntry struct {
	key     echoKey
	seq     uint64
	expires time.Time
}

func newEchoFilter(window time.Duration, limit int) *echoFilter {
	return &echoFilter{
		window: window,
		limit:  limit,
		seed:   maphash.MakeSeed(),
		live:   map[echoKey][]uint64{},
		clock:  time.Now,
	}
}

func (e *echoFilter) key(topic string, payload []byte) echoKey {
	return echoKey{topic: topic, hash: maphash.Bytes(e.seed, payload)}
}

// remember records that a message goes out to the remote on topic.
func (e *echoFilter) remember(topic string, payload []byte) {
	k := e.key(topic, payload)
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.clock()
	e.pruneLocked(now)
	if len(e.fifo) >= e.limit {
		e.dropHeadLocked()
	}
	e.next++
	e.fifo = append(e.fifo, echoEntry{key: k, seq: e.next, expires: now.Add(e.window)})
	e.live[k] = append(e.live[k], e.next)
}

// isEcho reports whether a message from the remote is the echo of one the bridge sent, and
// if so consumes its fingerprint.
func (e *echoFilter) isEcho(topic string, payload []byte) bool {
	k := e.key(topic, payload)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pruneLocked(e.clock())
	seqs := e.live[k]
	if len(seqs) == 0 {
		return false
	}
	if len(seqs) == 1 {
		delete(e.live, k)
	} else {
		e.live[k] = seqs[1:]
	}
	return true
}

// pruneLocked drops the expired entries at the head of the fifo, and compacts it when most of
// it is dead.
func (e *echoFilter) pruneLocked(now time.Time) {
	for len(e.fifo) > 0 && !now.Before(e.fifo[0].expires) {
		e.dropHeadLocked()
	}
	if cap(e.fifo) > 64 && len(e.fifo) < cap(e.fifo)/4 {
		e.fifo = append([]echoEntry(nil), e.fifo...)
	}
}

// dropHeadLocked removes the oldest entry; its fingerprint goes too if it was not consumed.
// The oldest unconsumed entry of a fingerprint is the first of its live list, as both are in
// the order remembered.
func (e *echoFilter) dropHeadLocked() {
	h := e.fifo[0]
	e.fifo = e.fifo[1:]
	seqs := e.live[h.key]
	if len(seqs) > 0 && seqs[0] == h.seq {
		if len(seqs) == 1 {
			delete(e.live, h.key)
		} else {
			e.live[h.key] = seqs[1:]
		}
	}
}

// pending is how many fingerprints wait for their echo.
func (e *echoFilter) pending() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, s := range e.live {
		n += len(s)
	}
	return n
}
