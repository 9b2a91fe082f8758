package storage

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// op is one key's change: a put, or a delete when del is set.
type op struct {
	bucket byte
	key    string
	val    []byte
	del    bool
}

func put(bucket byte, key string, val []byte) op { return op{bucket: bucket, key: key, val: val} }
func del(bucket byte, key string) op             { return op{bucket: bucket, key: key, del: true} }

// change is what one event changes in the store. Its ops are written in
// one transaction, after every change enqueued before it.
type change struct {
	ops []op
	// done, when not nil, receives the outcome of the transaction that
	// wrote the change (nil once it is on disk): somebody waits for it,
	// so the writer writes at once instead of waiting for more changes.
	done chan error
	size int
}

// wait returns once the change is on disk, could not be written, or
// timeout has passed.
func (c *change) wait(timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-c.done:
		return err
	case <-t.C:
		return fmt.Errorf("storage: still not written after %v", timeout)
	}
}

// Errors a waiting change may receive.
var (
	errClosed  = errors.New("storage: closed")
	errDropped = errors.New("storage: change dropped: too many changes waiting while the store cannot be written")
)

// pendingOp is the latest value of one key not written yet.
type pendingOp struct {
	val []byte
	del bool
}

// writer is the only goroutine writing the store file. It takes changes
// from a bounded queue and writes all that are waiting in one transaction
// (one pair of fsyncs for many changes: group commit). A change somebody
// waits for is written at once; the others wait up to flushDelay for
// company. While the file cannot be written (full disk, read-only file
// system, no file yet) the changes are kept in memory, merged key by key,
// up to maxPending bytes, and retried with a backoff.
type writer struct {
	path       string
	log        *slog.Logger
	open       func() (*bolt.DB, error)
	flushDelay time.Duration
	retryMin   time.Duration
	retryMax   time.Duration
	maxQueue   int // bytes of changes enqueued and not taken yet
	maxPending int // bytes kept while the file cannot be written
	// inject, when set (tests), fails a commit before it touches the file.
	inject func() error

	mu     sync.Mutex
	space  *sync.Cond // the queue shrank or the writer closed
	queue  []*change
	queued int
	closed bool
	kick   chan struct{} // buffer 1: "the queue grew, or close"
	done   chan struct{} // closed when run returns

	// Owned by run.
	db           *bolt.DB
	pending      map[string]pendingOp // bucket id + key → latest change
	pendingBytes int
	since        time.Time    // when the oldest pending change arrived
	waiters      []chan error // of the pending changes
	urgent       bool         // a pending change has a waiter
	failing      error        // the last write's error, nil after a success
	backoff      time.Duration
	retryAt      time.Time
	failLog      rateLimitedLog
	closeErr     error

	stats struct {
		commits, syncs, bytes, failures, dropped, pendingOps, queued atomic.Int64
	}
}

func newWriter(w *writer, db *bolt.DB) *writer {
	w.db = db
	w.space = sync.NewCond(&w.mu)
	w.kick = make(chan struct{}, 1)
	w.done = make(chan struct{})
	w.pending = make(map[string]pendingOp)
	w.failLog = rateLimitedLog{interval: time.Minute}
	if db == nil {
		// Nothing can be written until the file opens: try at the first
		// change.
		w.failing = errors.New("the store file is not open")
	}
	go w.run()
	return w
}

// enqueue hands c to the writer, after every change enqueued before it.
// It blocks while the queue is full: the publishers whose messages fill it
// are slowed down, never dropped. After close, c is dropped (and its
// waiter told).
func (w *writer) enqueue(c *change) {
	for _, o := range c.ops {
		c.size += len(o.key) + len(o.val) + 16
	}
	w.mu.Lock()
	for w.queued > 0 && w.queued+c.size > w.maxQueue && !w.closed {
		w.space.Wait()
	}
	if w.closed {
		w.mu.Unlock()
		if c.done != nil {
			c.done <- errClosed
		}
		return
	}
	w.queue = append(w.queue, c)
	w.queued += c.size
	w.stats.queued.Add(1)
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// close writes what is pending (one last attempt, even while the file
// cannot be written), closes the file and stops the writer. It gives up
// waiting after timeout.
func (w *writer) close(timeout time.Duration) error {
	w.mu.Lock()
	already := w.closed
	w.closed = true
	w.space.Broadcast()
	w.mu.Unlock()
	if !already {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-w.done:
		return w.closeErr
	case <-t.C:
		return fmt.Errorf("storage: %s: still writing after %v; giving up (changes since the last write may be lost)", w.path, timeout)
	}
}

func (w *writer) run() {
	defer close(w.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var wake <-chan time.Time
		if d, ok := w.wakeIn(); ok {
			timer.Reset(d)
			wake = timer.C
		}
		select {
		case <-w.kick:
		case <-wake:
		}
		timer.Stop()
		closing := w.take()
		switch {
		case closing:
			w.finish()
			return
		case w.due():
			w.commit()
		case w.failing != nil:
			// Waiting for the next attempt: nobody may wait that long
			// for an acknowledgement, so the broker serves from memory.
			w.release(w.failing)
		}
	}
}

// take moves the queued changes into pending, merging them key by key.
// It reports whether the writer is closing.
func (w *writer) take() (closing bool) {
	w.mu.Lock()
	q := w.queue
	w.queue, w.queued = nil, 0
	closing = w.closed
	w.space.Broadcast()
	w.mu.Unlock()
	defer w.stats.queued.Add(-int64(len(q)))
	for _, c := range q {
		if w.failing != nil && w.pendingBytes+c.size > w.maxPending {
			w.stats.dropped.Add(1)
			w.failLog.warn(w.log, "storage: changes dropped: the store cannot be written and too many are waiting; after a restart some messages may be missing or come back",
				"file", w.path, "waiting_bytes", w.pendingBytes, "max_waiting_bytes", w.maxPending, "error", w.failing)
			if c.done != nil {
				c.done <- errDropped
			}
			continue
		}
		if len(w.pending) == 0 {
			w.since = time.Now()
		}
		for _, o := range c.ops {
			k := string(o.bucket) + o.key
			if old, ok := w.pending[k]; ok {
				w.pendingBytes -= len(k) + len(old.val)
			}
			w.pending[k] = pendingOp{val: o.val, del: o.del}
			w.pendingBytes += len(k) + len(o.val)
		}
		if c.done != nil {
			w.waiters = append(w.waiters, c.done)
			w.urgent = true
		}
	}
	w.stats.pendingOps.Store(int64(len(w.pending)))
	return closing
}

// wakeIn says when pending changes are due, if any are.
func (w *writer) wakeIn() (time.Duration, bool) {
	if len(w.pending) == 0 {
		return 0, false
	}
	at := w.since.Add(w.flushDelay)
	if w.failing != nil {
		at = w.retryAt
	}
	return max(time.Until(at), 0), true
}

// due says whether the pending changes are to be written now.
func (w *writer) due() bool {
	switch {
	case len(w.pending) == 0:
		return false
	case w.failing != nil:
		return !time.Now().Before(w.retryAt)
	default:
		return w.urgent || w.pendingBytes >= flushBytes || !time.Now().Before(w.since.Add(w.flushDelay))
	}
}

// flushBytes writes pending changes nobody waits for once they add up to
// this much, without waiting for flushDelay.
const flushBytes = 1 << 20

// commit writes every pending change in one transaction.
func (w *writer) commit() {
	err := w.write()
	if err != nil {
		w.stats.failures.Add(1)
		// The first retry after retryMin, then doubling up to retryMax
		// (also when the file could not be opened at start).
		w.backoff = max(w.retryMin, min(2*w.backoff, w.retryMax))
		if w.failing == nil {
			w.backoff = w.retryMin
		}
		w.retryAt = time.Now().Add(w.backoff)
		w.failing = err
		w.failLog.warn(w.log, "storage: cannot save changes; serving from memory and retrying (messages and sessions changed since then are lost if pimqtt stops before a retry succeeds)",
			"file", w.path, "error", err, "waiting_changes", len(w.pending), "retry_in", w.backoff.String(),
			"hint", "free space on the data directory's file system, or make it writable")
		w.release(err)
		return
	}
	if w.failing != nil {
		w.log.Info("storage: saving again", "file", w.path, "changes_written", len(w.pending), "errors_not_logged", w.failLog.suppressed)
		w.failLog.reset()
		w.failing = nil
	}
	clear(w.pending)
	w.pendingBytes = 0
	w.stats.pendingOps.Store(0)
	w.release(nil)
}

// write opens the file if needed and writes the pending changes. After a
// failed transaction the file is closed: the next attempt opens it again
// and starts from what is on disk, which a failed transaction leaves as
// it was.
func (w *writer) write() (err error) {
	defer func() {
		// bbolt asserts (panics) on damage it runs into; a fault on its
		// memory map is a panic here too. Either is a failed write, and
		// the file is checked when it is opened again.
		if r := recover(); r != nil {
			w.closeDB()
			err = fmt.Errorf("%w: %v", errCorrupt, r)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	if w.inject != nil {
		if err := w.inject(); err != nil {
			return err
		}
	}
	if w.db == nil {
		db, err := w.open()
		if err != nil {
			return err
		}
		w.db = db
	}
	keys := make([]string, 0, len(w.pending))
	for k := range w.pending {
		keys = append(keys, k)
	}
	slices.Sort(keys) // bbolt writes sorted keys with fewer page splits
	tx, err := w.db.Begin(true)
	if err != nil {
		w.closeDB()
		return fmt.Errorf("begin transaction: %w", err)
	}
	for _, k := range keys {
		b := tx.Bucket(buckets[k[0]])
		if b == nil {
			_ = tx.Rollback()
			w.closeDB()
			return fmt.Errorf("bucket %s missing", buckets[k[0]])
		}
		p := w.pending[k]
		if p.del {
			err = b.Delete([]byte(k[1:]))
		} else {
			err = b.Put([]byte(k[1:]), p.val)
		}
		if err != nil {
			_ = tx.Rollback()
			w.closeDB()
			return fmt.Errorf("write %s key: %w", buckets[k[0]], err)
		}
	}
	if err := tx.Commit(); err != nil {
		w.closeDB()
		return fmt.Errorf("commit: %w", err)
	}
	st := tx.Stats()
	w.stats.commits.Add(1)
	// bbolt writes the dirty pages, fdatasyncs, writes the meta page and
	// fdatasyncs again.
	w.stats.syncs.Add(2)
	w.stats.bytes.Add(st.GetPageAlloc() + int64(w.db.Info().PageSize))
	return nil
}

func (w *writer) closeDB() {
	if w.db != nil {
		_ = w.db.Close()
		w.db = nil
	}
}

// release tells every waiter the outcome.
func (w *writer) release(err error) {
	for _, c := range w.waiters {
		c <- err
	}
	w.waiters = w.waiters[:0]
	w.urgent = false
}

// finish is close's end: a last attempt at what is pending, then the file
// is closed.
func (w *writer) finish() {
	if len(w.pending) > 0 {
		w.commit()
		if w.failing != nil {
			w.closeErr = fmt.Errorf("storage: %s: %d changes could not be written before closing: %w", w.path, len(w.pending), w.failing)
		}
	}
	w.release(errClosed)
	if w.db != nil {
		if err := w.db.Close(); err != nil && w.closeErr == nil {
			w.closeErr = fmt.Errorf("storage: close %s: %w", w.path, err)
		}
		w.db = nil
	}
}

// rateLimitedLog logs a warning at most once per interval and counts the
// ones it held back: a full disk fails every write, and a busy broker
// would otherwise fill the log (and the disk) with the same line.
//
// It has the shape of the state package's write-error log; neither that
// nor the broker's per-address counters are exported.
type rateLimitedLog struct {
	interval   time.Duration
	last       time.Time
	suppressed int
}

func (r *rateLimitedLog) warn(log *slog.Logger, msg string, attrs ...any) {
	now := time.Now()
	if !r.last.IsZero() && now.Sub(r.last) < r.interval {
		r.suppressed++
		return
	}
	log.Warn(msg, append(attrs, "errors_not_logged", r.suppressed)...)
	r.last, r.suppressed = now, 0
}

func (r *rateLimitedLog) reset() { r.last, r.suppressed = time.Time{}, 0 }
