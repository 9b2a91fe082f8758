package broker

import (
	"bytes"
	"reflect"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Write batching of the fast path. Under fan-in every publisher wrote each
// message with its own syscall, under the subscriber's client lock, so
// the publishers queued on that lock and most of their CPU went to the
// syscalls. Here a publisher that finds a write to the subscriber under
// way appends its encoded packet to that write's batch and goes on; the
// writer (the flusher) writes what was appended meanwhile, in append
// order, until the batch is empty. A lone message is written at once by
// its publisher, as before.
//
// Order. The flusher takes the subscriber's client lock (the lock
// Mochi's WritePacket writes under) before it registers its batch, and
// lets the batch go only once empty, still holding the lock: a packet in
// a batch is written before anything Mochi writes after the packet was
// appended (a message of the same publisher left to Mochi, an ack). As
// nobody appends without a registered batch, whoever registers one finds
// none there.
//
// Bounds. A batch holds at most batchCap bytes and a flusher drains at
// most maxDrainRounds rounds; past either, publishers wait for the batch
// to be written out (or let go) instead of appending, so that neither the
// memory of a batch nor the time a publisher spends writing for others
// grows without end. A flusher blocked by a full socket is disconnected
// by the slow-client watchdog (fastPath.watch), which ends its write and
// so every wait here. Buffers come from a pool and go back to it when the
// batch is let go: an idle client holds nothing.
type batcher struct {
	shards [batchShards]batchShard
	bufs   sync.Pool // *[]byte: batches
	encs   sync.Pool // *bytes.Buffer: packets being encoded
	hooks  *mqtt.Hooks
	server *mqtt.Server
}

const (
	// batchShards spreads the clients' batches over locks.
	batchShards = 32
	// batchCap is the most a batch holds: past it, publishers wait.
	batchCap = 64 << 10
	// maxDrainRounds is the most writes a flusher makes for others before
	// publishers wait instead of appending (see batcher).
	maxDrainRounds = 16
)

type batchShard struct {
	mu sync.Mutex
	// moved is signalled when a batch of the shard is written out or let go.
	moved sync.Cond
	busy  map[*mqtt.Client]*batch
	stats batchStats
	_     [32]byte // keep shards' locks on separate cache lines
}

// batchStats tell tests what the batches did.
type batchStats struct {
	appended int // packets appended to a batch (not written by their publisher)
	waits    int // publishers that found a batch full or drained long enough
	peak     int // the most bytes a batch held
}

// batch is what publishers appended for one client while its flusher
// writes.
type batch struct {
	buf    *[]byte
	rounds int
}

// newBatcher returns the batcher of server, or nil when this Mochi's
// server lacks the hooks field it reads (the hooks that WritePacket runs).
func newBatcher(server *mqtt.Server) *batcher {
	f, ok := reflect.TypeFor[mqtt.Server]().FieldByName("hooks")
	if !ok || f.Type != reflect.TypeFor[*mqtt.Hooks]() {
		return nil
	}
	b := &batcher{
		hooks:  *(**mqtt.Hooks)(unsafe.Add(unsafe.Pointer(server), f.Offset)),
		server: server,
	}
	b.bufs.New = func() any { p := make([]byte, 0, 4<<10); return &p }
	b.encs.New = func() any { return new(bytes.Buffer) }
	for i := range b.shards {
		s := &b.shards[i]
		s.moved.L = &s.mu
		s.busy = make(map[*mqtt.Client]*batch)
	}
	return b
}

func (b *batcher) shardOf(cl *mqtt.Client) *batchShard {
	h := uint64(uintptr(unsafe.Pointer(cl))) * 0x9E3779B97F4A7C15
	return &b.shards[h>>59]
}

// writePublish is Mochi's WritePacket for a PUBLISH on the fast path:
// the same encoding (protocol version, maximum packet size, expiry,
// OnPacketEncode), the same counters and OnPacketSent, with the write
// batched (see batcher). progress counts the rounds a flusher writes,
// for the watchdog. An error (over the client's maximum packet size, a
// broken connection) drops this copy, as Mochi's writer does.
func (b *batcher) writePublish(cl *mqtt.Client, pk packets.Packet, progress *atomic.Uint64) {
	if cl.Closed() || cl.Net.Conn == nil {
		return
	}
	if pk.Expiry > 0 {
		pk.Properties.MessageExpiryInterval = uint32(max(pk.Expiry-time.Now().Unix(), 1)) // [MQTT-3.3.2-6]
	}
	pk.ProtocolVersion = cl.Properties.ProtocolVersion
	if pk.Mods.MaxSize == 0 {
		pk.Mods.MaxSize = cl.Properties.Props.MaximumPacketSize
	}
	if cl.Properties.Props.RequestProblemInfoFlag && cl.Properties.Props.RequestProblemInfo == 0 {
		pk.Mods.DisallowProblemInfo = true // [MQTT-3.1.2-29]
	}
	pk.Mods.AllowResponseInfo = true
	pk = b.hooks.OnPacketEncode(cl, pk)
	enc := b.encs.Get().(*bytes.Buffer)
	defer func() { enc.Reset(); b.encs.Put(enc) }()
	if err := pk.PublishEncode(enc); err != nil {
		return
	}
	if pk.Mods.MaxSize > 0 && uint32(enc.Len()) > pk.Mods.MaxSize {
		return // [MQTT-3.1.2-24] [MQTT-3.1.2-25]
	}
	if !b.write(cl, enc.Bytes(), progress) {
		return
	}
	info := b.server.Info
	atomic.AddInt64(&info.BytesSent, int64(enc.Len()))
	atomic.AddInt64(&info.PacketsSent, 1)
	atomic.AddInt64(&info.MessagesSent, 1)
	b.hooks.OnPacketSent(cl, pk, enc.Bytes())
}

// write writes p to cl, or appends it to the batch being written to cl;
// false if it was not (the connection broke).
func (b *batcher) write(cl *mqtt.Client, p []byte, progress *atomic.Uint64) bool {
	s := b.shardOf(cl)
	s.mu.Lock()
	for {
		bt := s.busy[cl]
		if bt == nil {
			break
		}
		if len(*bt.buf) < batchCap && bt.rounds < maxDrainRounds {
			*bt.buf = append(*bt.buf, p...)
			s.stats.appended++
			s.stats.peak = max(s.stats.peak, len(*bt.buf))
			s.mu.Unlock()
			return true
		}
		s.stats.waits++
		s.moved.Wait()
	}
	s.mu.Unlock()
	if cl.Closed() {
		return false
	}

	// The flusher. Nobody registers a batch for cl without its lock, so
	// none is there once it is held.
	cl.Lock()
	defer cl.Unlock()
	bt := &batch{buf: b.bufs.Get().(*[]byte)}
	s.mu.Lock()
	s.busy[cl] = bt
	s.mu.Unlock()
	_, err := cl.Net.Conn.Write(p)
	ok := err == nil
	out := b.bufs.Get().(*[]byte)
	for {
		s.mu.Lock()
		if len(*bt.buf) == 0 {
			delete(s.busy, cl)
			s.moved.Broadcast()
			s.mu.Unlock()
			break
		}
		*out, *bt.buf = *bt.buf, (*out)[:0]
		bt.rounds++
		s.moved.Broadcast()
		s.mu.Unlock()
		if err == nil {
			// Once broken, what others appended is dropped, as their
			// own writes would have failed.
			_, err = cl.Net.Conn.Write(*out)
		}
		if progress != nil {
			progress.Add(1)
		}
	}
	b.putBuf(out)
	b.putBuf(bt.buf)
	return ok
}

// statsNow sums the shards' stats.
func (b *batcher) statsNow() batchStats {
	var t batchStats
	for i := range b.shards {
		s := &b.shards[i]
		s.mu.Lock()
		t.appended += s.stats.appended
		t.waits += s.stats.waits
		t.peak = max(t.peak, s.stats.peak)
		s.mu.Unlock()
	}
	return t
}

// putBuf returns a buffer to the pool unless it grew past a batch's size.
func (b *batcher) putBuf(p *[]byte) {
	if cap(*p) > 2*batchCap {
		return
	}
	*p = (*p)[:0]
	b.bufs.Put(p)
}
