package gpio

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Input is one input line. Values are logical (active-low inverted).
//
// Both implementations, a kernel line from [OpenInput] and a [SimInput],
// are safe for concurrent use, and both also have a Dropped() uint64
// method that counts the events Events could not deliver.
type Input interface {
	// Value reads the line's current logical level, 0 or 1. After Close it
	// returns an error that wraps [ErrClosed].
	Value() (int, error)

	// Events delivers the new logical value after each (debounced) edge, in
	// order. The channel is buffered ([EventBuffer] values); when the
	// consumer falls behind, further events are dropped and counted/logged
	// (rate-limited), never blocking the kernel event goroutine. Closed by
	// Close. Every call returns the same channel.
	//
	// A kernel line reports every edge the kernel saw, so a short pulse that
	// ends before its edge is read may show as the same value twice; a
	// [SimInput] reports changes only.
	Events() <-chan int

	// Close releases the line and then closes the Events channel; values
	// already buffered can still be received. It may be called from any
	// goroutine, the one reading Events included. Close is idempotent:
	// calls after the first return nil.
	Close() error

	// String returns a human name for the line, e.g.
	// "gpiochip0:17 (GPIO17)" or "sim:BUTTON".
	String() string
}

// EventBuffer is the capacity of an [Input]'s Events channel.
const EventBuffer = 64

// Pull is the bias an input line is requested with: [PullNone],
// [PullUp] or [PullDown].
type Pull int

const (
	// PullNone leaves the line's bias as it is (the default): something
	// outside must drive the line, or its level is undefined.
	PullNone Pull = iota

	// PullUp enables the internal pull-up resistor: an undriven line reads
	// high (physical 1), e.g. a button to ground.
	PullUp

	// PullDown enables the internal pull-down resistor: an undriven line
	// reads low (physical 0), e.g. a button to 3.3 V.
	PullDown
)

// String returns "none", "pull-up" or "pull-down", as the command-line
// flags write them.
func (p Pull) String() string {
	switch p {
	case PullNone:
		return "none"
	case PullUp:
		return "pull-up"
	case PullDown:
		return "pull-down"
	}
	return "Pull(" + strconv.Itoa(int(p)) + ")"
}

// PullOption is the [Option] made by [WithPull].
type PullOption Pull

// WithPull requests an input with the given bias: [PullNone] (the default)
// leaves the bias alone, [PullUp] and [PullDown] enable the internal
// resistor (go-gpiocdev's WithPullUp and WithPullDown; needs Linux 5.5 or
// later). Inputs only: for an output any value but PullNone is an error.
//
// On gpio-sim (the test VM's chip) a bias is the sim's own pull: a request
// with pull-up sets the chip's pull file to pull-up, so the undriven line
// reads 1 whatever the file said before; writing the file afterwards
// still drives the line, and the request's pull stays after release.
func WithPull(p Pull) PullOption { return PullOption(p) }

func (o PullOption) applyOption(c *config) { c.pull = Pull(o) }

// MaxDebounce is the longest debounce period [WithDebounce] and the
// debounce= flag option accept. The uAPI carries the period in
// microseconds in 32 bits (about 71 minutes), but a chip that debounces in
// hardware gets it packed in 24 bits (16.7 s), and a debounce longer than
// a second would swallow real presses, so anything longer is a mistake.
const MaxDebounce = time.Second

// DebounceOption is the [Option] made by [WithDebounce].
type DebounceOption time.Duration

// WithDebounce asks the kernel to debounce an input: an edge is reported
// only once the line has been stable for d (go-gpiocdev's WithDebounce; the
// kernel does it in hardware where the chip can, else in software). 0, the
// default, means no debounce. d must be a whole number of microseconds
// (the kernel's unit) between 0 and [MaxDebounce]. Kernel debounce needs
// Linux 5.10 or later; on an older kernel OpenInput fails and says so.
// Inputs only: for an output any value but 0 is an error.
func WithDebounce(d time.Duration) DebounceOption { return DebounceOption(d) }

func (o DebounceOption) applyOption(c *config) { c.debounce = time.Duration(o) }

// checkDebounce reports why d cannot be a debounce period.
func checkDebounce(d time.Duration) error {
	switch {
	case d < 0:
		return errors.New("negative; want 0 (no debounce) up to " + MaxDebounce.String() + ", e.g. 10ms")
	case d > MaxDebounce:
		return errors.New("too long; want 0 (no debounce) up to " + MaxDebounce.String() + ", e.g. 10ms")
	case d%time.Microsecond != 0:
		return errors.New("not a whole number of microseconds, the kernel's unit")
	}
	return nil
}

// errAutoInput is the error of OpenInput("auto").
const errAutoInput = `"auto" is for the LED output (GPIO21, or a simulated line when no chip has it); ` +
	`an input needs its line named: a line name (GPIO17), a board pin (pin11), CHIP:OFFSET (gpiochip0:17), ` +
	`or sim:NAME for a simulated one`

// OpenInput requests the line named by spec (see [ParseSpec]) as an input
// and returns it. The caller must Close it.
//
// The line is requested with edge detection on both edges and the kernel
// delivers each edge as an event (no polling): Events gets the new value.
// [WithPull] sets the bias, [WithDebounce] the kernel debounce, and
// [WithActiveLow] inverts the values (1 = pin low), Events included.
//
// Lines are found as for [OpenOutput], and its errors apply (busy lines
// name their holder). "sim" and "sim:NAME" give a [SimInput] ("sim" alone
// is named GPIO21, as for outputs: name inputs, sim:BUTTON), which a test
// or a simulated mode drives with [SimInput.Drive]. "auto" is an error for
// an input: it means GPIO21, pimqtt's LED output, and silently falling
// back to a simulated input would hide a wiring mistake. On systems other
// than Linux every spec except "sim" and "sim:NAME" is an error.
func OpenInput(spec string, opts ...Option) (Input, error) {
	cfg := newConfig(opts)
	if err := cfg.validateInput(); err != nil {
		return nil, err
	}
	sp, err := ParseSpec(spec)
	if err != nil {
		return nil, err
	}
	switch sp.Kind {
	case KindAuto:
		return nil, fmt.Errorf("gpio: input line spec %q: %s", spec, errAutoInput)
	case KindSim:
		return newSimInput(sp.Name, cfg), nil
	}
	return openInputSpec(sp, cfg)
}

// dropLogInterval is the least time between two logs of dropped events
// of one line.
const dropLogInterval = 10 * time.Second

// eventQueue is an Input's Events channel: sends never block, drops are
// counted and logged at most once per dropLogInterval.
type eventQueue struct {
	ch      chan int
	name    string
	logger  *slog.Logger
	dropped atomic.Uint64

	mu       sync.Mutex // guards closed (no send after close) and the fields below
	closed   bool
	lastLog  time.Time
	unlogged uint64 // drops since the last log
}

func newEventQueue(name string, logger *slog.Logger) *eventQueue {
	return &eventQueue{ch: make(chan int, EventBuffer), name: name, logger: logger}
}

// push delivers v, or counts it as dropped if the channel is full. It
// never blocks (beyond a short lock) and does nothing after close.
func (q *eventQueue) push(v int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	select {
	case q.ch <- v:
		return
	default:
	}
	q.dropLocked(1, "events dropped: the consumer of Events is not keeping up")
}

// lost counts n events that were lost before they reached the queue
// (the kernel's event buffer overflowed).
func (q *eventQueue) lost(n uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.dropLocked(n, "events lost: the kernel's event buffer overflowed")
}

// dropLocked counts n drops and logs them unless a log was written less
// than dropLogInterval ago; q.mu is held.
func (q *eventQueue) dropLocked(n uint64, msg string) {
	total := q.dropped.Add(n)
	q.unlogged += n
	if now := time.Now(); q.lastLog.IsZero() || now.Sub(q.lastLog) >= dropLogInterval {
		q.logger.Warn(msg, "line", q.name, "dropped", q.unlogged, "total", total,
			"buffer", cap(q.ch), "next_log_after", dropLogInterval.String())
		q.lastLog = now
		q.unlogged = 0
	}
}

// close closes the channel, logging any drops not logged yet. Calls after
// the first do nothing.
func (q *eventQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.closed = true
	close(q.ch)
	if q.unlogged > 0 {
		q.logger.Warn("events dropped: the consumer of Events is not keeping up", "line", q.name,
			"dropped", q.unlogged, "total", q.dropped.Load(), "buffer", cap(q.ch))
		q.unlogged = 0
	}
}
