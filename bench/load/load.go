// Package load drives an MQTT broker on the loopback interface with paho
// clients and accounts for every message: each one acknowledged to its
// publisher must reach every subscriber it was meant for. A run reports
// what was published, acknowledged, delivered, lost, duplicated and
// delivered out of order.
//
// A run is a set of flows. A flow has publishers, each publishing on its
// own topic TOPIC/p<i>, and subscribers of TOPIC/+, so every subscriber of
// a flow expects every message of every publisher of that flow: 4
// publishers and 1 subscriber is a fan-in, 1 publisher and 500
// subscribers a fan-out. Every loop is bounded in count and time.
package load

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Flow is one group of publishers and the subscribers that expect all of
// their messages.
type Flow struct {
	Name        string // topic prefix; also part of the client ids
	Publishers  int
	Subscribers int
}

// Config describes a run.
type Config struct {
	// Addr is the broker's TCP address; only loopback addresses are
	// accepted, as the run floods it.
	Addr  string
	Flows []Flow
	QoS   byte // of the publishes and of the subscriptions
	// Messages bounds the messages of each publisher; Duration bounds the
	// publishing time. At least one must be set; publishing stops at the
	// first bound reached.
	Messages int
	Duration time.Duration
	// Rate is each publisher's messages per second; 0 publishes as fast
	// as the broker acknowledges.
	Rate float64
	// PayloadSize is the size of each message (at least 8 bytes, which
	// carry the publisher and sequence number).
	PayloadSize int
	// Outstanding bounds each publisher's unacknowledged publishes
	// (default 64). Keep it at most the broker's receive maximum for QoS 2.
	Outstanding int
	// Drain bounds the wait, once publishing has stopped, for every
	// acknowledged message to arrive (default 30 s).
	Drain time.Duration
	// Stall, if set, is called in a subscriber's message handler before
	// the message is counted, with the subscriber's name and the number of
	// messages it has received so far, this one included: a test makes a
	// slow subscriber by blocking there (paho acknowledges after the
	// handler returns and reads nothing meanwhile).
	Stall func(subscriber string, received int64)
	// ClientPrefix starts every client id (default "load").
	ClientPrefix string
	// ConnectTimeout bounds each client's connection (default 30 s).
	ConnectTimeout time.Duration
	Logger         *slog.Logger
}

// Result is what a run counted.
type Result struct {
	Published int64 // PUBLISH packets handed to the clients
	Acked     int64 // acknowledged to their publishers (PUBACK / PUBCOMP)
	// Expected counts (message, subscriber) pairs that must be delivered:
	// each acknowledged message once per subscriber of its flow.
	Expected  int64
	Delivered int64 // of the expected pairs, those that arrived
	Lost      int64 // Expected - Delivered
	// Duplicates counts messages a subscriber received more than once;
	// QoS 1 allows them, QoS 2 does not.
	Duplicates int64
	// OutOfOrder counts messages that arrived after a later message of the
	// same publisher, duplicates excluded.
	OutOfOrder int64
	// PublishErrors counts publishes whose acknowledgement never came (the
	// publisher's connection was lost); they are not expected anywhere.
	PublishErrors int64
	// Reconnects counts subscriber reconnections (a subscriber the broker
	// disconnected resumes its session).
	Reconnects int64
	Elapsed    time.Duration // from the first publish to the end of the drain
	// Losses are the first (publisher, subscriber) pairs with messages
	// lost, at most maxLosses, to tell a lost subscription from a gap.
	Losses []Loss
}

// Loss is what one subscriber lacks of one publisher's acknowledged
// messages.
type Loss struct {
	Publisher, Subscriber string
	Lost                  int64
	FirstMissing          int // sequence number
}

// maxLosses bounds Result.Losses.
const maxLosses = 10

// String summarises r on one line, and the losses on the next ones.
func (r Result) String() string {
	var losses strings.Builder
	for _, l := range r.Losses {
		fmt.Fprintf(&losses, "\n  %s lacks %d messages of %s, the first #%d", l.Subscriber, l.Lost, l.Publisher, l.FirstMissing)
	}
	return fmt.Sprintf("published %d, acknowledged %d, expected deliveries %d, delivered %d, lost %d, duplicates %d, out of order %d, publish errors %d, subscriber reconnects %d, in %v",
		r.Published, r.Acked, r.Expected, r.Delivered, r.Lost, r.Duplicates, r.OutOfOrder, r.PublishErrors, r.Reconnects, r.Elapsed.Round(time.Millisecond)) + losses.String()
}

// Run is a prepared run: its clients are connected and subscribed.
type Run struct {
	cfg    Config
	pubs   []*publisher
	subs   []*subscriber
	acked  atomic.Int64
	closed sync.Once
}

// publisher is one publishing client.
type publisher struct {
	id     uint32 // index in Run.pubs, carried in each payload
	topic  string
	client paho.Client
	subs   []*subscriber // those that expect its messages

	mu        sync.Mutex
	acked     bitset
	published int64
	errors    int64
}

// subscriber is one subscribing client.
type subscriber struct {
	name       string
	filter     string // TOPIC/+ of its flow
	client     paho.Client
	connects   atomic.Int64
	received   atomic.Int64
	mu         sync.Mutex
	seen       map[uint32]*track // per publisher id
	duplicates int64
	outOfOrder int64
}

// track is what one subscriber saw of one publisher.
type track struct {
	got  bitset
	last int64 // highest sequence number seen, -1 before any
}

// Prepare connects and subscribes every client. Close releases them.
func Prepare(ctx context.Context, cfg Config) (*Run, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	r := &Run{cfg: cfg}
	for _, f := range cfg.Flows {
		var flowSubs []*subscriber
		for i := 0; i < f.Subscribers; i++ {
			s := &subscriber{name: fmt.Sprintf("%s-%s-s%d", cfg.ClientPrefix, f.Name, i), filter: f.Name + "/+", seen: make(map[uint32]*track)}
			flowSubs = append(flowSubs, s)
			r.subs = append(r.subs, s)
		}
		for i := 0; i < f.Publishers; i++ {
			r.pubs = append(r.pubs, &publisher{id: uint32(len(r.pubs)), topic: fmt.Sprintf("%s/p%d", f.Name, i), subs: flowSubs})
		}
	}
	// Subscribers first, so that no message is published before its
	// subscribers are there. Connections are made a few at a time:
	// the broker bounds connections that have not sent CONNECT yet.
	if err := r.each(ctx, len(r.subs), func(i int) error { return r.connectSubscriber(r.subs[i]) }); err != nil {
		r.Close()
		return nil, err
	}
	if err := r.each(ctx, len(r.pubs), func(i int) error { return r.connectPublisher(r.pubs[i]) }); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func (cfg *Config) check() error {
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return fmt.Errorf("load: broker address %q: %w", cfg.Addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("load: broker address %q: only loopback addresses (127.0.0.1, ::1) may be flooded", cfg.Addr)
	}
	if cfg.Messages <= 0 && cfg.Duration <= 0 {
		return errors.New("load: set Messages or Duration (or both): every run is bounded")
	}
	if cfg.QoS > 2 {
		return fmt.Errorf("load: QoS %d: want 0, 1 or 2", cfg.QoS)
	}
	if cfg.PayloadSize < 8 {
		cfg.PayloadSize = 8
	}
	if cfg.Outstanding <= 0 {
		cfg.Outstanding = 64
	}
	if cfg.Drain <= 0 {
		cfg.Drain = 30 * time.Second
	}
	if cfg.ClientPrefix == "" {
		cfg.ClientPrefix = "load"
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return nil
}

// each runs f for 0..n-1, at most 32 at a time, and returns the first
// error.
func (r *Run) each(ctx context.Context, n int, f func(int) error) error {
	sem := make(chan struct{}, 32)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return ctx.Err()
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			if err := f(i); err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	return <-errs // nil when the channel is empty
}

func (r *Run) options(clientID string) *paho.ClientOptions {
	return paho.NewClientOptions().AddBroker("tcp://" + r.cfg.Addr).SetClientID(clientID).
		SetProtocolVersion(4).SetConnectTimeout(r.cfg.ConnectTimeout).SetKeepAlive(30 * time.Second).
		SetWriteTimeout(r.cfg.ConnectTimeout)
}

func (r *Run) connectSubscriber(s *subscriber) error {
	handler := func(_ paho.Client, m paho.Message) {
		n := s.received.Add(1)
		if r.cfg.Stall != nil {
			r.cfg.Stall(s.name, n)
		}
		s.record(m.Payload())
	}
	subscribed := make(chan error, 1)
	// A persistent session, resumed after a reconnection: a subscriber the
	// broker disconnects as too slow gets what its session kept.
	opts := r.options(s.name).SetCleanSession(false).SetAutoReconnect(true).
		SetMaxReconnectInterval(time.Second).SetDefaultPublishHandler(handler).
		SetOnConnectHandler(func(c paho.Client) {
			if s.connects.Add(1) > 1 {
				return
			}
			// Subscribing here, in paho's own goroutine for this, as paho
			// advises; only the first connection subscribes, the session
			// keeps the subscription.
			tok := c.Subscribe(s.filter, r.cfg.QoS, handler)
			if !tok.WaitTimeout(r.cfg.ConnectTimeout) {
				subscribed <- fmt.Errorf("load: subscriber %s: no SUBACK after %v", s.name, r.cfg.ConnectTimeout)
				return
			}
			subscribed <- tok.Error()
		})
	s.client = paho.NewClient(opts)
	// A previous run's session under the same id would deliver its
	// leftovers: start from a clean one.
	if err := r.cleanSession(s.name); err != nil {
		return err
	}
	if tok := s.client.Connect(); !tok.WaitTimeout(r.cfg.ConnectTimeout) || tok.Error() != nil {
		return fmt.Errorf("load: subscriber %s: connect to %s: %v", s.name, r.cfg.Addr, tokenError(tok, r.cfg.ConnectTimeout))
	}
	select {
	case err := <-subscribed:
		if err != nil {
			return fmt.Errorf("load: subscriber %s: subscribe %s: %w", s.name, s.filter, err)
		}
		return nil
	case <-time.After(r.cfg.ConnectTimeout):
		return fmt.Errorf("load: subscriber %s: not subscribed after %v", s.name, r.cfg.ConnectTimeout)
	}
}

// cleanSession connects once with a clean session under id, which ends
// any session the broker kept for it.
func (r *Run) cleanSession(id string) error {
	c := paho.NewClient(r.options(id).SetCleanSession(true).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(r.cfg.ConnectTimeout) || tok.Error() != nil {
		return fmt.Errorf("load: %s: connect to %s: %v", id, r.cfg.Addr, tokenError(tok, r.cfg.ConnectTimeout))
	}
	c.Disconnect(250)
	return nil
}

func (r *Run) connectPublisher(p *publisher) error {
	p.client = paho.NewClient(r.options(fmt.Sprintf("%s-%s", r.cfg.ClientPrefix, p.topic)).
		SetCleanSession(true).SetAutoReconnect(false))
	if tok := p.client.Connect(); !tok.WaitTimeout(r.cfg.ConnectTimeout) || tok.Error() != nil {
		return fmt.Errorf("load: publisher %s: connect to %s: %v", p.topic, r.cfg.Addr, tokenError(tok, r.cfg.ConnectTimeout))
	}
	return nil
}

func tokenError(tok paho.Token, after time.Duration) error {
	if err := tok.Error(); err != nil {
		return err
	}
	return fmt.Errorf("no answer after %v", after)
}

// Acked returns how many publishes have been acknowledged so far; a test
// watches it while a subscriber stalls.
func (r *Run) Acked() int64 { return r.acked.Load() }

// Start publishes from every publisher until the bounds in Config are
// reached, then waits (at most Config.Drain) until every subscriber has
// every acknowledged message, and returns the counts. The context ends
// publishing and the drain early.
func (r *Run) Start(ctx context.Context) Result {
	start := time.Now()
	pubCtx := ctx
	if r.cfg.Duration > 0 {
		var cancel context.CancelFunc
		pubCtx, cancel = context.WithTimeout(ctx, r.cfg.Duration)
		defer cancel()
	}
	var wg sync.WaitGroup
	for _, p := range r.pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.publish(pubCtx, p)
		}()
	}
	wg.Wait()
	r.drain(ctx)
	res := r.Count()
	res.Elapsed = time.Since(start)
	return res
}

// publish sends p's messages, at most Outstanding unacknowledged, paced
// by Rate, and records which were acknowledged.
func (r *Run) publish(ctx context.Context, p *publisher) {
	pending := make(chan pendingPublish, r.cfg.Outstanding)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for pp := range pending {
			ok := false
			select {
			case <-pp.tok.Done():
				ok = pp.tok.Error() == nil
			case <-time.After(r.cfg.Drain):
			}
			p.mu.Lock()
			if ok {
				p.acked.set(pp.seq)
			} else {
				p.errors++
			}
			p.mu.Unlock()
			if ok {
				r.acked.Add(1)
			}
		}
	}()
	defer func() {
		close(pending)
		<-done
	}()
	payload := make([]byte, r.cfg.PayloadSize)
	binary.BigEndian.PutUint32(payload, p.id)
	start := time.Now()
	for seq := 0; r.cfg.Messages <= 0 || seq < r.cfg.Messages; seq++ {
		if r.cfg.Rate > 0 {
			due := start.Add(time.Duration(float64(seq) / r.cfg.Rate * float64(time.Second)))
			if wait := time.Until(due); wait > 0 {
				select {
				case <-time.After(wait): // pacing, not synchronisation
				case <-ctx.Done():
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		default:
		}
		binary.BigEndian.PutUint32(payload[4:], uint32(seq))
		// paho keeps the slice until the PUBLISH is written: each gets
		// its own.
		tok := p.client.Publish(p.topic, r.cfg.QoS, false, append([]byte(nil), payload...))
		p.mu.Lock()
		p.published++
		p.mu.Unlock()
		select {
		case pending <- pendingPublish{seq: seq, tok: tok}:
		case <-ctx.Done():
			// Still account for it: it may be acknowledged.
			pending <- pendingPublish{seq: seq, tok: tok}
			return
		}
	}
}

type pendingPublish struct {
	seq int
	tok paho.Token
}

// drain waits until every subscriber has every message acknowledged to
// a publisher of its flow, at most Config.Drain.
func (r *Run) drain(ctx context.Context) {
	deadline := time.Now().Add(r.cfg.Drain)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if c := r.Count(); c.Lost == 0 {
			return
		}
		select {
		case <-time.After(20 * time.Millisecond): // polling interval for a condition
		case <-ctx.Done():
		}
	}
}

// Count returns the counts so far.
func (r *Run) Count() Result {
	var res Result
	for _, s := range r.subs {
		s.mu.Lock()
		res.Duplicates += s.duplicates
		res.OutOfOrder += s.outOfOrder
		s.mu.Unlock()
		if n := s.connects.Load(); n > 1 {
			res.Reconnects += n - 1
		}
	}
	for _, p := range r.pubs {
		p.mu.Lock()
		acked := p.acked.clone()
		res.Published += p.published
		res.PublishErrors += p.errors
		p.mu.Unlock()
		n := acked.count()
		res.Acked += n
		for _, s := range p.subs {
			res.Expected += n
			s.mu.Lock()
			var got bitset
			if t := s.seen[p.id]; t != nil {
				got = t.got
			}
			d := acked.countAnd(got)
			res.Delivered += d
			if d < n && len(res.Losses) < maxLosses {
				res.Losses = append(res.Losses, Loss{Publisher: p.topic, Subscriber: s.name, Lost: n - d, FirstMissing: acked.firstNotIn(got)})
			}
			s.mu.Unlock()
		}
	}
	res.Lost = res.Expected - res.Delivered
	return res
}

// record counts one delivered payload.
func (s *subscriber) record(payload []byte) {
	if len(payload) < 8 {
		return
	}
	pub, seq := binary.BigEndian.Uint32(payload), int64(binary.BigEndian.Uint32(payload[4:]))
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.seen[pub]
	if t == nil {
		t = &track{last: -1}
		s.seen[pub] = t
	}
	switch {
	case t.got.has(int(seq)):
		s.duplicates++
	case seq < t.last:
		s.outOfOrder++
	}
	t.got.set(int(seq))
	t.last = max(t.last, seq)
}

// Close disconnects every client.
func (r *Run) Close() {
	r.closed.Do(func() {
		var wg sync.WaitGroup
		for _, c := range r.clients() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.Disconnect(250)
			}()
		}
		wg.Wait()
	})
}

func (r *Run) clients() []paho.Client {
	var cs []paho.Client
	for _, s := range r.subs {
		if s.client != nil {
			cs = append(cs, s.client)
		}
	}
	for _, p := range r.pubs {
		if p.client != nil {
			cs = append(cs, p.client)
		}
	}
	return cs
}

// bitset is a growable set of small non-negative integers.
type bitset []uint64

func (b *bitset) set(i int) {
	for len(*b) <= i/64 {
		*b = append(*b, 0)
	}
	(*b)[i/64] |= 1 << (i % 64)
}

func (b bitset) has(i int) bool { return i/64 < len(b) && b[i/64]&(1<<(i%64)) != 0 }

func (b bitset) clone() bitset { return append(bitset(nil), b...) }

func (b bitset) count() int64 {
	n := 0
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return int64(n)
}

// firstNotIn is the smallest member of b that o lacks, or -1.
func (b bitset) firstNotIn(o bitset) int {
	for i, w := range b {
		if i < len(o) {
			w &^= o[i]
		}
		if w != 0 {
			return i*64 + bits.TrailingZeros64(w)
		}
	}
	return -1
}

// countAnd counts the members of both b and o.
func (b bitset) countAnd(o bitset) int64 {
	n := 0
	for i := 0; i < len(b) && i < len(o); i++ {
		n += bits.OnesCount64(b[i] & o[i])
	}
	return int64(n)
}
