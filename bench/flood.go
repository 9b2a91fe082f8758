package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pimqtt/pimqtt/bench/proc"
	"github.com/pimqtt/pimqtt/bench/rawmqtt"
)

// floodSpec is a fan-in or fan-out: every subscriber subscribes to
// bench/NAME/+ and every publisher publishes perPublisher messages on its
// own topic bench/NAME/pI as fast as the broker takes them.
type floodSpec struct {
	name         string
	qos          byte
	publishers   int
	subscribers  int
	perPublisher int
	payload      int // bytes, at least 8: publisher and sequence number
	window       int // QoS 1: unacknowledged publishes per publisher
	idle         time.Duration
}

// floodResult is what a flood counted.
type floodResult struct {
	sent      int64 // PUBLISH packets written
	acked     int64 // of those, acknowledged (QoS 0: all written)
	expected  int64 // acked × subscribers
	delivered int64 // distinct (message, subscriber) pairs among the expected
	lost      int64 // expected - delivered
	elapsed   time.Duration
	brokerCPU time.Duration
	genCPU    time.Duration
}

// rate is delivered messages per second.
func (r floodResult) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.delivered) / r.elapsed.Seconds()
}

// floodSub is one subscriber of a flood; its reader goroutine owns got.
type floodSub struct {
	c    *rawmqtt.Client
	got  []bitset // per publisher
	n    atomic.Int64
	last atomic.Int64 // UnixNano of the last delivery
	err  error        // why reading stopped, once done is closed
	done chan struct{}
	// all is closed once every message of every publisher has arrived.
	all      chan struct{}
	expected int64
}

// floodPub is one publisher of a flood.
type floodPub struct {
	c     *rawmqtt.Client
	topic string
	sent  atomic.Int64
	acked atomic.Int64
	err   error
}

// runFlood connects the clients, publishes, waits for the tail (until
// every acknowledged message arrived or no delivery came for spec.idle)
// and counts. ctx bounds all of it.
func runFlood(ctx context.Context, e *env, t *target, spec floodSpec) (floodResult, error) {
	deadline, _ := ctx.Deadline()
	var res floodResult
	subs := make([]*floodSub, spec.subscribers)
	pubs := make([]*floodPub, spec.publishers)
	defer func() {
		for _, s := range subs {
			if s != nil {
				_ = s.c.Close()
				<-s.done
			}
		}
		for _, p := range pubs {
			if p != nil {
				_ = p.c.Close()
			}
		}
	}()
	filter := "bench/" + spec.name + "/+"
	for i := range subs {
		c, err := dialConnect(ctx, e, rawmqtt.TCP, t.tcp, fmt.Sprintf("bench-%s-s%d", spec.name, i), 64<<10)
		if err != nil {
			return res, err
		}
		s := &floodSub{c: c, got: make([]bitset, spec.publishers), done: make(chan struct{}), all: make(chan struct{}),
			expected: int64(spec.publishers * spec.perPublisher)}
		subs[i] = s
		for p := range s.got {
			s.got[p] = make(bitset, spec.perPublisher/64+1)
		}
		if err := c.Subscribe(filter, spec.qos, time.Until(deadline)); err != nil {
			close(s.done)
			return res, err
		}
		go s.read()
	}
	for i := range pubs {
		c, err := dialConnect(ctx, e, rawmqtt.TCP, t.tcp, fmt.Sprintf("bench-%s-p%d", spec.name, i), 64<<10)
		if err != nil {
			return res, err
		}
		pubs[i] = &floodPub{c: c, topic: fmt.Sprintf("bench/%s/p%d", spec.name, i)}
	}

	cpu0, err := proc.CPUTime(t.pid)
	if err != nil {
		return res, err
	}
	gen0, err := proc.SelfCPUTime()
	if err != nil {
		return res, err
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i, p := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.err = p.publish(uint32(i), spec, deadline)
		}()
	}
	wg.Wait()
	for _, p := range pubs {
		res.sent += p.sent.Load()
		res.acked += p.acked.Load()
	}
	// The tail: wait while deliveries still come.
	want := res.acked * int64(spec.subscribers)
	delivered := func() int64 {
		var n int64
		for _, s := range subs {
			n += s.n.Load()
		}
		return n
	}
	allArrived := make(chan struct{})
	stopWaiting := make(chan struct{})
	defer close(stopWaiting)
	go func() {
		for _, s := range subs {
			select {
			case <-s.all:
			case <-stopWaiting:
				return
			}
		}
		close(allArrived)
	}()
	idle := time.NewTimer(spec.idle)
	defer idle.Stop()
tail:
	for prev := int64(-1); ; {
		n := delivered()
		if n >= want || n == prev {
			break // all there, or nothing arrived for spec.idle
		}
		prev = n
		idle.Reset(spec.idle)
		select {
		case <-allArrived:
			break tail
		case <-idle.C:
		case <-ctx.Done():
			return res, fmt.Errorf("%s: %d of %d deliveries when the scenario's deadline passed: %w", spec.name, n, want, ctx.Err())
		}
	}
	cpu1, err := proc.CPUTime(t.pid)
	if err != nil {
		return res, err
	}
	gen1, _ := proc.SelfCPUTime()
	for _, s := range subs {
		_ = s.c.Close()
		<-s.done
	}
	var last int64
	for _, s := range subs {
		last = max(last, s.last.Load())
		for i, p := range pubs {
			n := p.acked.Load()
			res.expected += n
			res.delivered += s.got[i].countBelow(int(n))
		}
	}
	res.lost = res.expected - res.delivered
	res.elapsed = time.Unix(0, last).Sub(start)
	res.brokerCPU, res.genCPU = cpu1-cpu0, gen1-gen0
	for _, p := range pubs {
		if p.err != nil {
			return res, fmt.Errorf("%s: publisher %s: %w", spec.name, p.topic, p.err)
		}
	}
	if res.delivered == 0 {
		return res, fmt.Errorf("%s: nothing delivered of %d messages sent", spec.name, res.sent)
	}
	return res, nil
}

// read counts the deliveries until the connection closes: distinct
// messages per publisher, acknowledging QoS 1 ones in batches (flushed
// whenever nothing more is buffered, i.e. before the read would block).
func (s *floodSub) read() {
	defer close(s.done)
	for {
		typ, flags, body, err := s.c.ReadPacket()
		if err != nil {
			s.err = err
			return
		}
		if typ == rawmqtt.PUBLISH {
			_, pid, payload, err := rawmqtt.ParsePublish(flags, body)
			if err != nil {
				s.err = err
				return
			}
			if flags>>1&3 == 1 {
				s.c.Puback(pid)
			}
			if len(payload) >= 8 {
				pub, seq := binary.BigEndian.Uint32(payload), int(binary.BigEndian.Uint32(payload[4:]))
				if int(pub) < len(s.got) && seq/64 < len(s.got[pub]) && !s.got[pub].has(seq) {
					s.got[pub].set(seq)
					if s.n.Add(1) == s.expected {
						close(s.all)
					}
				}
			}
		}
		if s.c.Buffered() == 0 {
			s.last.Store(time.Now().UnixNano())
			if err := s.c.Flush(); err != nil {
				s.err = err
				return
			}
		}
	}
}

// errStalled is a publisher whose window did not open before the deadline.
var errStalled = errors.New("no acknowledgement before the scenario's deadline")

// publish sends spec.perPublisher messages. At QoS 0 the bufio writer
// sends a batch whenever it is full; at QoS 1 at most spec.window are
// unacknowledged, and a full window is flushed and then waits until half
// of it is acknowledged, so writes stay batched.
func (p *floodPub) publish(id uint32, spec floodSpec, deadline time.Time) error {
	if err := p.c.Conn().SetDeadline(deadline); err != nil {
		return err
	}
	payload := make([]byte, max(spec.payload, 8))
	binary.BigEndian.PutUint32(payload, id)
	if spec.qos == 0 {
		for seq := 0; seq < spec.perPublisher; seq++ {
			binary.BigEndian.PutUint32(payload[4:], uint32(seq))
			p.c.Publish(p.topic, 0, false, 0, payload)
		}
		if err := p.c.Flush(); err != nil {
			return err
		}
		// Written into the socket: as acknowledged as QoS 0 gets.
		p.sent.Store(int64(spec.perPublisher))
		p.acked.Store(int64(spec.perPublisher))
		return nil
	}
	window := int64(max(spec.window, 2))
	wake := make(chan struct{}, 1)
	readErr := make(chan error, 1)
	go func() { readErr <- p.readAcks(int64(spec.perPublisher), window, wake) }()
	timeout := time.NewTimer(time.Until(deadline))
	defer timeout.Stop()
	var sent int64
	for seq := 0; seq < spec.perPublisher; seq++ {
		for sent-p.acked.Load() >= window {
			if err := p.c.Flush(); err != nil {
				return err
			}
			select {
			case <-wake:
			case err := <-readErr:
				return err
			case <-timeout.C:
				return errStalled
			}
		}
		binary.BigEndian.PutUint32(payload[4:], uint32(seq))
		p.c.Publish(p.topic, 1, false, packetID(seq), payload)
		sent++
		p.sent.Store(sent)
	}
	if err := p.c.Flush(); err != nil {
		return err
	}
	select {
	case err := <-readErr:
		return err
	case <-timeout.C:
		return errStalled
	}
}

// readAcks counts PUBACKs, which a broker sends in the order of the
// PUBLISHes (MQTT 3.1.1 §4.6), until every sent message is acknowledged,
// total, and wakes the writer when half its window is free.
func (p *floodPub) readAcks(total, window int64, wake chan<- struct{}) error {
	for {
		typ, _, body, err := p.c.ReadPacket()
		if err != nil {
			return fmt.Errorf("waiting for PUBACK: %w", err)
		}
		if typ != rawmqtt.PUBACK || len(body) != 2 {
			continue
		}
		n := p.acked.Load()
		if got, want := binary.BigEndian.Uint16(body), packetID(int(n)); got != want {
			return fmt.Errorf("PUBACK for packet id %d where %d was due", got, want)
		}
		n++
		p.acked.Store(n)
		if p.sent.Load()-n <= window/2 {
			select {
			case wake <- struct{}{}:
			default:
			}
		}
		if n == total {
			return nil
		}
	}
}

// packetID numbers the messages 1…65535, then again: a window never
// holds more than 65535.
func packetID(seq int) uint16 { return uint16(seq%65535 + 1) }

// bitset is a set of small non-negative integers.
type bitset []uint64

func (b bitset) set(i int)      { b[i/64] |= 1 << (i % 64) }
func (b bitset) has(i int) bool { return b[i/64]&(1<<(i%64)) != 0 }

// countBelow counts the members smaller than n.
func (b bitset) countBelow(n int) int64 {
	c := 0
	for i := 0; i < n/64 && i < len(b); i++ {
		c += bits.OnesCount64(b[i])
	}
	if r := n % 64; r > 0 && n/64 < len(b) {
		c += bits.OnesCount64(b[n/64] & (1<<r - 1))
	}
	return int64(c)
}
