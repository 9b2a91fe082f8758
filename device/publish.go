package device

import (
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// requestPublish wakes the publisher without blocking. Requests coalesce: what to publish is
// recorded beside (dirty outputs, input backlogs, announce, refresh), so one round covers a
// burst of requests.
func (d *Device) requestPublish() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// publication is one message of a publishing round.
type publication struct {
	topic, payload string
	log            *slog.Logger // the line's logger, or nil for the status
	what           string       // "discovery" or "telemetry"; "" for the status and states
}

// publishLoop is the only publisher until Close. Each round publishes, in this order: Home
// Assistant's discovery messages (after a (re)connection or Home Assistant's "online"), status
// On (when announce is set), the state of every output marked dirty (read from the line when
// the round runs, so bursts of commands coalesce into one publish of the final level), every
// value waiting in each input's backlog, in event order, and the telemetry report waiting, if
// any. After a (re)connection
// (refresh), every output's and input's state is published; an input's backlog is then
// replaced by a fresh read of the line. Message handlers thus never wait on the network, and
// publish errors are logged off the handler path.
func (d *Device) publishLoop(c mqtt.Client) {
	defer close(d.pubDone)
	pending := false
	// Checked before every round, pending or not: once Close has begun, the lines belong to
	// Close, and after Close returns (even on its timeout) to the caller.
	for d.ctx.Err() == nil {
		if !pending {
			select {
			case <-d.ctx.Done():
				return
			case <-d.kick:
			}
		}
		pending = false
		if !c.IsConnectionOpen() {
			// onConnect asks again after reconnecting, with refresh set; a publish queued
			// now could only be resent stale, or not at all.
			continue
		}
		pubs, ready := d.collect()
		pending = d.publishRound(c, pubs, ready)
	}
}

// collect gathers one round's publications. ready is true when the round is a connection's
// first, whose acks close Ready (see there).
func (d *Device) collect() (pubs []publication, ready bool) {
	d.flagsMu.Lock()
	announce, refresh, ready := d.announce, d.refresh, d.readyArm && d.refresh
	discover := d.discover || refresh
	d.announce, d.refresh, d.readyArm, d.discover = false, false, false, false
	d.flagsMu.Unlock()
	// Home Assistant's configuration first, so that it subscribes before the states follow.
	if discover && d.disc != nil {
		pubs = append(pubs, d.disc.pubs...)
	}
	if announce {
		pubs = append(pubs, publication{topic: d.statusTopic, payload: statusOn})
	}
	for _, o := range d.outputs {
		if !o.dirty.Swap(false) && !refresh {
			continue
		}
		d.mu.Lock()
		v, err := o.line.Value()
		d.mu.Unlock()
		if err != nil {
			o.log.Error("read line failed; state not published", "err", err)
			continue
		}
		pubs = append(pubs, publication{topic: o.stateTopic, payload: statePayload(v), log: o.log})
	}
	for _, in := range d.inputs {
		// The backlog is taken before the line is read: every event taken predates the read,
		// and every later event is published in a later round, so the newest value is always
		// the last one published.
		values, dropped := in.take()
		if refresh {
			v, err := in.line.Value()
			switch {
			case err == nil:
				values = []int{level(v)}
			case len(values) > 0:
				in.log.Warn("read input failed; publishing its last event", "err", err)
			default:
				last, ok := in.lastValue()
				if !ok {
					in.log.Error("read input failed; state not published", "err", err)
					continue
				}
				in.log.Warn("read input failed; publishing its last event", "err", err)
				values = []int{last}
			}
		} else if dropped > 0 {
			in.log.Warn("input changed faster than its state could be published; intermediate values skipped",
				"skipped", dropped)
		}
		for _, v := range values {
			pubs = append(pubs, publication{topic: in.stateTopic, payload: statePayload(v), log: in.log})
		}
	}
	if d.tele != nil {
		if doc, ok := d.tele.take(); ok {
			pubs = append(pubs, publication{topic: d.tele.topic, payload: string(doc), what: "telemetry"})
		}
	}
	return pubs, ready
}

// publishRound hands every publication to paho in order, then waits for their PUBACKs and
// logs the outcome. It returns true when a newer request cut the wait short (see await). When
// ready is set, every PUBACK of the round closes Ready.
func (d *Device) publishRound(c mqtt.Client, pubs []publication, ready bool) (newer bool) {
	toks := make([]mqtt.Token, len(pubs))
	for i, p := range pubs {
		toks[i] = c.Publish(p.topic, 1, true, p.payload)
	}
	if ready {
		// Waited for aside, because the wait below may be cut short by a newer request.
		go d.awaitReady(toks)
	}
	for i, p := range pubs {
		newer, err := d.await(toks[i])
		if newer {
			return true
		}
		switch {
		case p.what != "" && err != nil:
			d.log.Warn("publish "+p.what+" failed", "topic", p.topic, "err", err)
		case p.what != "":
			d.log.Debug(p.what+" published", "topic", p.topic)
		case p.log == nil && err != nil:
			d.log.Warn("publish status failed", "topic", p.topic, "err", err)
		case p.log == nil:
			d.log.Debug("status published", "topic", p.topic, "status", "On")
		case err != nil:
			p.log.Warn("publish state failed", "topic", p.topic, "err", err)
		default:
			p.log.Debug("state published", "topic", p.topic, "value", p.payload)
		}
	}
	return false
}

// await waits for a publish's PUBACK, bounded by ackTimeout and the device's life. A newer
// request ends the wait early (newer is true): the message is already on its way, and the next
// round (after a reconnection, the announcement) must not wait behind a connection that died
// with it in flight.
func (d *Device) await(tok mqtt.Token) (newer bool, err error) {
	t := time.NewTimer(ackTimeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return false, tok.Error()
	case <-d.ctx.Done():
		return false, d.ctx.Err()
	case <-t.C:
		return false, fmt.Errorf("no PUBACK within %v", ackTimeout)
	case <-d.kick:
		return true, nil
	}
}

// awaitReady closes Ready once every token has been acknowledged, or gives up at the first
// failure, after ackTimeout, or when the device closes: a later connection tries again.
func (d *Device) awaitReady(toks []mqtt.Token) {
	t := time.NewTimer(ackTimeout)
	defer t.Stop()
	for _, tok := range toks {
		select {
		case <-tok.Done():
			if tok.Error() != nil {
				return
			}
		case <-t.C:
			return
		case <-d.ctx.Done():
			return
		}
	}
	d.markReady()
}

// maxInputBacklog bounds the events of one input waiting to be published. When an input
// changes faster than its states can be published, the oldest waiting values are dropped; the
// newest is always kept, so the last published state is always the last event's.
const maxInputBacklog = 64

// input is an Input with its backlog of values to publish.
type input struct {
	name, stateTopic string
	simTopic         string // "" unless the line is driven from MQTT
	line             InputLine
	driver           Driver // line as a Driver, when simTopic is set
	log              *slog.Logger

	mu      sync.Mutex
	backlog []int // values from events not yet published, oldest first
	dropped int   // values dropped from a full backlog since the last round
	last    int   // the newest value from an event
	hasLast bool
}

// readInput forwards one input's events to the publisher until the device closes or the
// events channel is closed. It never closes the line: the caller owns it.
func (d *Device) readInput(in *input, events <-chan int) {
	defer d.workers.Done()
	for {
		select {
		case <-d.ctx.Done():
			return
		case v, ok := <-events:
			if !ok {
				if d.ctx.Err() == nil {
					in.log.Warn("input events closed; its changes are no longer published")
				}
				return
			}
			v = level(v)
			in.log.Debug("input changed", "topic", in.stateTopic, "value", v)
			in.push(v)
			d.requestPublish()
		}
	}
}

// push appends v to the backlog, dropping the oldest value when it is full.
func (in *input) push(v int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if len(in.backlog) >= maxInputBacklog {
		n := copy(in.backlog, in.backlog[1:])
		in.backlog = in.backlog[:n]
		in.dropped++
	}
	in.backlog = append(in.backlog, v)
	in.last, in.hasLast = v, true
}

// take empties the backlog and returns it, oldest first, with the count of values dropped.
func (in *input) take() (values []int, dropped int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	values, dropped = in.backlog, in.dropped
	in.backlog, in.dropped = nil, 0
	return values, dropped
}

// lastValue is the newest value seen in an event.
func (in *input) lastValue() (int, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.last, in.hasLast
}

// level is 1 for any non-zero value, matching ParseCommand's view of TOGGLE.
func level(v int) int {
	if v != 0 {
		return 1
	}
	return 0
}

// statePayload is "1" for any non-zero level, "0" otherwise.
func statePayload(v int) string {
	return strconv.Itoa(level(v))
}
