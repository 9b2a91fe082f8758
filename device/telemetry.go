package device

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Telemetry configures the device's health reports: a retained JSON object on Topic, published
// every Interval and on every (re)connection.
type Telemetry struct {
	// Topic carries the retained JSON document, e.g. "raspberry/telemetry". Required.
	Topic string
	// Interval is the time between two reports, default DefaultTelemetryInterval. A caller
	// whose setting says 0 for "off" leaves Options.Telemetry nil instead.
	Interval time.Duration
	// Read returns the report: a value that encodes as a JSON object, such as a
	// telemetry.Snapshot. Required. The device calls it from a goroutine of its own, never
	// concurrently with itself, so it may read files without holding up commands or states;
	// Close does not wait for a call in progress. With Discovery set, the first call is made
	// in Start, which waits for it up to a second to learn which values this machine has.
	// The device adds "clients", the broker's count of connected clients from
	// ClientsTopic, once the broker has said it, unless Read's object has that key already.
	Read func() any
}

// DefaultTelemetryInterval is the time between two telemetry reports when
// Telemetry.Interval is 0.
const DefaultTelemetryInterval = 30 * time.Second

// ClientsTopic is where brokers publish their count of connected clients: Mochi (every
// SysTopicResendInterval, 1 s by default, 10 s in pimqtt's broker) and mosquitto (every
// sys_interval, 10 s by default) use the same topic, retained. The count includes the device's
// own connection and any other of pimqtt's own (the control page's). A broker that refuses
// the subscription (an ACL without read access to $SYS) leaves "clients" out.
const ClientsTopic = "$SYS/broker/clients/connected"

// telemetryRun is Options.Telemetry at work.
type telemetryRun struct {
	topic    string
	interval time.Duration
	read     func() any
	now      chan struct{} // buffer 1: read and publish at once

	mu          sync.Mutex
	doc         []byte // the next report to publish; nil when none waits
	clients     int64  // the broker's last count
	haveClients bool
}

// checkTelemetry validates o (nil: off) against the topics the device already uses.
func checkTelemetry(o *Telemetry, used map[string]string) (*telemetryRun, error) {
	if o == nil {
		return nil, nil
	}
	switch {
	case o.Read == nil:
		return nil, errors.New("device: Options.Telemetry.Read is required (or leave Options.Telemetry nil for no telemetry)")
	case o.Interval < 0:
		return nil, fmt.Errorf("device: Options.Telemetry.Interval %v is negative", o.Interval)
	}
	if err := claimTopic(used, o.Topic, "Options.Telemetry.Topic"); err != nil {
		return nil, err
	}
	t := &telemetryRun{topic: o.Topic, interval: o.Interval, read: o.Read, now: make(chan struct{}, 1)}
	if t.interval == 0 {
		t.interval = DefaultTelemetryInterval
	}
	return t, nil
}

// claimTopic adds topic to used, refusing one the device cannot publish to or already uses:
// a message there would reach two handlers or clobber another retained value.
func claimTopic(used map[string]string, topic, what string) error {
	if err := validatePublishTopic(topic); err != nil {
		return fmt.Errorf("device: %s %q: %w", what, topic, err)
	}
	if prev, ok := used[topic]; ok {
		return fmt.Errorf("device: %s %q collides with %s", what, topic, prev)
	}
	used[topic] = what
	return nil
}

// usedTopics lists the topics of normalized options, as normalize claimed them.
func usedTopics(opts Options) map[string]string {
	used := map[string]string{opts.StatusTopic: "Options.StatusTopic"}
	for _, o := range opts.Outputs {
		used[o.CommandTopic] = "the command topic of output " + o.Name
		used[o.StateTopic] = "the state topic of output " + o.Name
	}
	for _, in := range opts.Inputs {
		used[in.StateTopic] = "the state topic of input " + in.Name
		if in.SimTopic != "" {
			used[in.SimTopic] = "the simulation topic of input " + in.Name
		}
	}
	return used
}

// askTelemetry wakes the telemetry loop for a report now, without blocking.
func (d *Device) askTelemetry() {
	if d.tele == nil {
		return
	}
	select {
	case d.tele.now <- struct{}{}:
	default:
	}
}

// telemetryLoop reads a report every interval and whenever asked, and hands it to the
// publisher. Reading here, not in the publisher, keeps a slow Read (a stalled file system)
// from delaying the states of the lines. When first is not nil, it reads once at once and
// sends the report there (nil when it failed), for discovery.
func (d *Device) telemetryLoop(c mqtt.Client, first chan<- []byte) {
	if first != nil {
		doc, err := d.tele.report()
		if err != nil {
			d.log.Error("telemetry reading failed", "err", err)
		}
		first <- doc // buffered
	}
	t := time.NewTicker(d.tele.interval)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		case <-d.tele.now:
		}
		if !c.IsConnectionOpen() {
			// The next connection asks for a fresh report.
			continue
		}
		doc, err := d.tele.report()
		if d.ctx.Err() != nil {
			return // closed while reading
		}
		if err != nil {
			d.log.Error("telemetry not published", "topic", d.tele.topic, "err", err)
			continue
		}
		d.tele.mu.Lock()
		d.tele.doc = doc
		d.tele.mu.Unlock()
		d.requestPublish()
	}
}

// report reads and encodes one report, with the broker's client count when known.
func (t *telemetryRun) report() ([]byte, error) {
	doc, err := json.Marshal(t.read())
	if err != nil {
		return nil, fmt.Errorf("encode the reading: %w", err)
	}
	t.mu.Lock()
	clients, have := t.clients, t.haveClients
	t.mu.Unlock()
	if !have {
		return doc, checkObject(doc)
	}
	return addMember(doc, "clients", strconv.FormatInt(clients, 10))
}

// take returns the report waiting to be published, if any, and forgets it.
func (t *telemetryRun) take() ([]byte, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	doc := t.doc
	t.doc = nil
	return doc, doc != nil
}

// onClients takes the broker's client count. A change asks for a report at once, so the
// count shown follows the broker within its own publishing interval; an unchanged count (the
// broker repeats it) does not.
func (d *Device) onClients(m mqtt.Message) {
	n, err := strconv.ParseInt(string(bytes.TrimSpace(m.Payload())), 10, 64)
	if err != nil || n < 0 {
		d.log.Debug("client count ignored: not a count", "topic", m.Topic(), "payload", fmt.Sprintf("%.32q", m.Payload()))
		return
	}
	d.tele.mu.Lock()
	changed := !d.tele.haveClients || d.tele.clients != n
	d.tele.clients, d.tele.haveClients = n, true
	d.tele.mu.Unlock()
	if changed {
		d.askTelemetry()
	}
}

// checkObject refuses a document that is not one JSON object: subscribers (the control page,
// Home Assistant's templates) read it as one.
func checkObject(doc []byte) error {
	if len(doc) == 0 || doc[0] != '{' {
		return fmt.Errorf("the reading is not a JSON object: %.40s", doc)
	}
	return nil
}

// addMember adds "key": value (value already JSON) at the end of the compact JSON object
// doc, unless doc has key already; the members before keep their order.
func addMember(doc []byte, key, value string) ([]byte, error) {
	if err := checkObject(doc); err != nil {
		return nil, err
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(doc, &members); err != nil {
		return nil, fmt.Errorf("the reading is not a JSON object: %w", err)
	}
	if _, ok := members[key]; ok {
		return doc, nil
	}
	k, _ := json.Marshal(key)
	out := append([]byte(nil), doc[:len(doc)-1]...) // without the closing brace
	if len(members) > 0 {
		out = append(out, ',')
	}
	out = append(out, k...)
	out = append(out, ':')
	out = append(out, value...)
	return append(out, '}'), nil
}
