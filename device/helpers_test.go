package device

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// waitTimeout bounds every wait in these tests. Generous, because -race slows everything, but
// nothing here should take more than a few hundred milliseconds when it works.
const waitTimeout = 10 * time.Second

// watched holds a value that changes under a lock and lets a test wait, without polling or
// sleeping, until a predicate on it holds. Every update closes the current channel.
type watched[T any] struct {
	mu sync.Mutex
	v  T
	ch chan struct{}
}

func (w *watched[T]) update(f func(*T)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f(&w.v)
	if w.ch != nil {
		close(w.ch)
	}
	w.ch = make(chan struct{})
}

func (w *watched[T]) get() T {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.v
}

// waitFor returns the value once pred holds, or fails the test after timeout. Call it from the
// test goroutine only.
func (w *watched[T]) waitFor(t *testing.T, timeout time.Duration, what string, pred func(T) bool) T {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		if pred(w.v) {
			v := w.v
			w.mu.Unlock()
			return v
		}
		if w.ch == nil {
			w.ch = make(chan struct{})
		}
		ch := w.ch
		w.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s (last value: %s)", timeout, what, short(fmt.Sprintf("%+v", w.get())))
		}
	}
}

func short(s string) string {
	if len(s) > 2000 {
		return s[:2000] + "…"
	}
	return s
}

// fakeLine is an in-memory Line that records every SetValue. The device promises to serialise
// calls, but the test reads it concurrently, hence the lock inside watched.
type fakeLine struct {
	w watched[lineState]
}

type lineState struct {
	value int
	sets  []int
}

func (l *fakeLine) SetValue(v int) error {
	l.w.update(func(s *lineState) {
		s.value = v
		s.sets = append(s.sets, v)
	})
	return nil
}

func (l *fakeLine) Value() (int, error) {
	return l.w.get().value, nil
}

func (l *fakeLine) String() string { return "fake line" }

func (l *fakeLine) sets() []int {
	return append([]int(nil), l.w.get().sets...)
}

func (l *fakeLine) waitValue(t *testing.T, want int) {
	t.Helper()
	l.w.waitFor(t, waitTimeout, fmt.Sprintf("line value %d", want), func(s lineState) bool { return s.value == want })
}

// logRecorder is a slog.Handler that keeps every record so tests can wait for the device's
// own milestones ("status published", "state published") instead of sleeping.
type logRecorder struct {
	w watched[[]logRec]
}

type logRec struct {
	Level slog.Level
	Msg   string
	Attrs map[string]string
}

func (r logRec) String() string {
	return fmt.Sprintf("%s %s %v", r.Level, r.Msg, r.Attrs)
}

func newLogger(t *testing.T) (*slog.Logger, *logRecorder) {
	rec := &logRecorder{}
	t.Cleanup(func() {
		if t.Failed() {
			for _, r := range rec.w.get() {
				t.Log(r)
			}
		}
	})
	return slog.New(&recHandler{rec: rec}), rec
}

// mark returns a position; waitMsg(since) only considers records logged after it.
func (r *logRecorder) mark() int { return len(r.w.get()) }

// waitMsg waits for a record with message msg whose attrs include every pair in attrs.
func (r *logRecorder) waitMsg(t *testing.T, since int, msg string, attrs ...string) logRec {
	t.Helper()
	var found logRec
	r.w.waitFor(t, waitTimeout, fmt.Sprintf("log %q %v", msg, attrs), func(recs []logRec) bool {
		for _, rec := range recs[min(since, len(recs)):] {
			if rec.matches(msg, attrs...) {
				found = rec
				return true
			}
		}
		return false
	})
	return found
}

// all returns the records with message msg.
func (r *logRecorder) all(msg string) []logRec {
	var out []logRec
	for _, rec := range r.w.get() {
		if rec.Msg == msg {
			out = append(out, rec)
		}
	}
	return out
}

func (r logRec) matches(msg string, attrs ...string) bool {
	if r.Msg != msg {
		return false
	}
	for i := 0; i+1 < len(attrs); i += 2 {
		if r.Attrs[attrs[i]] != attrs[i+1] {
			return false
		}
	}
	return true
}

type recHandler struct {
	rec   *logRecorder
	attrs []slog.Attr
}

func (h *recHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *recHandler) Handle(_ context.Context, r slog.Record) error {
	lr := logRec{Level: r.Level, Msg: r.Message, Attrs: map[string]string{}}
	for _, a := range h.attrs {
		lr.Attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		lr.Attrs[a.Key] = a.Value.String()
		return true
	})
	h.rec.w.update(func(recs *[]logRec) { *recs = append(*recs, lr) })
	return nil
}

func (h *recHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &recHandler{rec: h.rec, attrs: append(append([]slog.Attr(nil), h.attrs...), attrs...)}
}

func (h *recHandler) WithGroup(string) slog.Handler { return h }

// killableDialer wraps a DialFunc and remembers its connections, so a test can cut them
// abruptly (no DISCONNECT), as a crash or a broker-side drop would.
type killableDialer struct {
	inner DialFunc
	mu    sync.Mutex
	conns []net.Conn
	gate  chan struct{} // nil: dial at once; else dials wait until it is closed
	dials watched[int]
}

// hold makes dials wait until release, so a test can observe the broker's reaction to a cut
// before the device reconnects.
func (k *killableDialer) hold() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.gate = make(chan struct{})
}

func (k *killableDialer) release() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.gate != nil {
		close(k.gate)
		k.gate = nil
	}
}

func (k *killableDialer) dial(ctx context.Context) (net.Conn, error) {
	k.dials.update(func(n *int) { *n++ })
	k.mu.Lock()
	gate := k.gate
	k.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c, err := k.inner(ctx)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	k.conns = append(k.conns, c)
	k.mu.Unlock()
	return c, nil
}

// killAll cuts every connection. TCP connections are shut down rather than closed: paho
// ignores a read error saying "use of closed network connection" (it takes it for its own
// Disconnect), so closing its socket under it goes unnoticed until keepalive gives up, while
// a shutdown reads as EOF, exactly like the broker or the network dropping the link. The
// broker sees the FIN without a DISCONNECT either way and sends the will.
func (k *killableDialer) killAll() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, c := range k.conns {
		if tc, ok := c.(interface {
			CloseRead() error
			CloseWrite() error
		}); ok {
			_ = tc.CloseWrite()
			_ = tc.CloseRead()
			continue
		}
		_ = c.Close()
	}
	k.conns = nil
}

// newTestDevice builds a one-LED device (output "led" on raspberry/led, as the seed's) with
// short intervals and registers Close as cleanup (a no-op if the test closed it already).
func newTestDevice(t *testing.T, dial DialFunc, line Line, log *slog.Logger, label string) *Device {
	t.Helper()
	return newTestDeviceOpts(t, Options{
		Dial:        dial,
		BrokerLabel: label,
		Outputs:     []Output{{Name: "led", CommandTopic: "raspberry/led", Line: line}},
		Logger:      log,
	})
}

// newTestDeviceOpts is newTestDevice for any outputs and inputs: it fills in the client id and
// the short intervals.
func newTestDeviceOpts(t *testing.T, o Options) *Device {
	t.Helper()
	if o.ClientID == "" {
		o.ClientID = "pimqtt-test-" + strings.ReplaceAll(t.Name(), "/", "-")
	}
	o.KeepAlive = 5 * time.Second
	o.MaxReconnectInterval = 500 * time.Millisecond
	d, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = d.Close(ctx)
	})
	return d
}

// fakeInput is an InputLine fed by the test: send sets the level and delivers the event, as a
// GPIO edge would. Its events channel is unbuffered, so send returns once the device's reader
// has taken the event.
type fakeInput struct {
	mu     sync.Mutex
	value  int
	events chan int
}

func newFakeInput(initial int) *fakeInput {
	return &fakeInput{value: initial, events: make(chan int)}
}

func (f *fakeInput) Value() (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.value, nil
}

func (f *fakeInput) Events() <-chan int { return f.events }

func (f *fakeInput) String() string { return "fake input" }

func (f *fakeInput) send(t *testing.T, v int) {
	t.Helper()
	f.mu.Lock()
	f.value = v
	f.mu.Unlock()
	select {
	case f.events <- v:
	case <-time.After(waitTimeout):
		t.Fatalf("the device did not take input event %d within %v", v, waitTimeout)
	}
}

// recStore is a StateStore that records every Set.
type recStore struct {
	w watched[[]storeSet]
}

type storeSet struct {
	Name  string
	Value int
}

func (s *recStore) Set(name string, value int) {
	s.w.update(func(v *[]storeSet) { *v = append(*v, storeSet{name, value}) })
}

func closeDevice(t *testing.T, d *Device) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}
