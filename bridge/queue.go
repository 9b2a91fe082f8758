package bridge

import (
	"sync"
)

// outMsg is one message on its way to the remote.
type outMsg struct {
	topic   string // remote topic
	payload []byte
	qos     byte
	retain  bool
	echo    bool // a remote subscription matches topic: remember its fingerprint when sent

	state sendState
	gen   uint64 // remote connection it was last sent on
}

type sendState int

const (
	unsent sendState = iota
	inFlight
	done
)

// outQueue holds the messages for the remote in the order the local broker delivered them.
//
// A message leaves the queue only once the remote has acknowledged it (QoS 1 and 2; a QoS 0
// one once written): one that was in flight when a connection died is sent again on the next
// one, before anything queued after it, so delivery is at least once and in order. The queue
// is bounded: Options.QueueLimit messages, beyond which new ones are dropped (and counted).
// The local side acknowledges a message to the local broker only after push returned, so
// nothing the local broker saw acknowledged is lost before that bound (or Close).
type outQueue struct {
	limit  int
	window int // messages in flight at once

	mu       sync.Mutex
	items    []*outMsg // head first
	inflight int
	gen      uint64 // current remote connection; 0 while down
	dropped  int    // since the queue was last full
	full     bool   // the bound has been hit and the queue has not drained since
	changed  chan struct{}
}

func newOutQueue(limit, window int) *outQueue {
	return &outQueue{limit: limit, window: window, changed: make(chan struct{}, 1)}
}

// kick wakes the sender.
func (q *outQueue) kick() {
	select {
	case q.changed <- struct{}{}:
	default:
	}
}

// pushResult says what push did with a message.
type pushResult int

const (
	queued       pushResult = iota
	droppedDown             // QoS 0 while the remote is down
	droppedFull             // the bound was reached
	droppedFirst            // the bound was reached just now: the first message dropped
)

// push appends m unless the queue is full or m is QoS 0 and the remote is down.
func (q *outQueue) push(m *outMsg) pushResult {
	q.mu.Lock()
	defer q.mu.Unlock()
	if m.qos == 0 && q.gen == 0 {
		return droppedDown
	}
	if len(q.items) >= q.limit {
		q.dropped++
		if !q.full {
			q.full = true
			return droppedFirst
		}
		return droppedFull
	}
	q.items = append(q.items, m)
	q.kick()
	return queued
}

// connected starts connection gen: whatever was in flight on an earlier one is sent again.
func (q *outQueue) connected(gen uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.gen = gen
	q.inflight = 0
	for _, m := range q.items {
		if m.state == inFlight {
			m.state = unsent
		}
	}
	q.kick()
}

// disconnected stops sending until the next connection.
func (q *outQueue) disconnected(gen uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.gen == gen {
		q.gen = 0
	}
}

// next returns the first unsent message and the connection to send it on, marking it in
// flight, or nil when nothing is to be sent now (down, window full, nothing unsent).
func (q *outQueue) next() (*outMsg, uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.gen == 0 || q.inflight >= q.window {
		return nil, 0
	}
	for _, m := range q.items {
		if m.state == unsent {
			m.state = inFlight
			m.gen = q.gen
			q.inflight++
			return m, q.gen
		}
	}
	return nil, 0
}

// requeue puts m, taken by next for connection gen, back unsent without waking the sender:
// the connection is gone, and only the next one (connected) should send it.
func (q *outQueue) requeue(m *outMsg, gen uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if m.gen == gen && m.state == inFlight {
		m.state = unsent
		if gen == q.gen {
			q.inflight--
		}
	}
}

// finished records the outcome of sending m on connection gen. A message that failed goes
// back to unsent if no later connection has taken it over; acknowledged ones leave the head of
// the queue. It returns how many messages were dropped while the queue was full when this
// completion emptied it (0 otherwise), for the log.
func (q *outQueue) finished(m *outMsg, gen uint64, ok bool) (droppedWhileFull int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if m.gen == gen && m.state == inFlight {
		if gen == q.gen {
			q.inflight--
		}
		if ok || m.qos == 0 {
			m.state = done
		} else {
			m.state = unsent
		}
	} else if ok && m.state != done {
		// A late acknowledgement from an earlier connection: the remote has it.
		if m.state == inFlight && m.gen == q.gen {
			q.inflight--
		}
		m.state = done
	}
	n := 0
	for n < len(q.items) && q.items[n].state == done {
		q.items[n] = nil
		n++
	}
	q.items = q.items[n:]
	if len(q.items) == 0 {
		q.items = nil // let the backing array go after a burst
		if q.full {
			droppedWhileFull = q.dropped
			q.full, q.dropped = false, 0
		}
	}
	if ok || gen == q.gen {
		// Room in the window, or a message to send again on the same connection.
		q.kick()
	}
	return droppedWhileFull
}

// length is how many messages are queued (in flight included).
func (q *outQueue) length() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}
