package gpio

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
)

// SimInput is a simulated input line: the outside world is whoever calls
// [SimInput.Drive], a test or pimqtt's simulated mode. Values are logical,
// as for every [Input]. A SimInput is safe for concurrent use and
// implements Input. OpenInput returns one for "sim" and "sim:NAME"; callers
// can tell with a type assertion.
type SimInput struct {
	name   string
	logger *slog.Logger
	events *eventQueue

	mu     sync.Mutex // guards value and closed, and orders the events
	value  int
	closed bool
}

// NewSimInput returns a simulated input called name (String gives
// "sim:"+name). Its initial value is what an undriven line with the
// requested pull reads: 1 with [WithPull](PullUp), else 0, inverted by
// [WithActiveLow] (a button to ground with a pull-up, active-low, starts
// at 0: not pressed). [WithLogger] sets its logger; [WithConsumer] and
// [WithDebounce] are accepted and ignored (Drive is the debounced signal).
// NewSimInput cannot fail: options that OpenInput would refuse are ignored.
func NewSimInput(name string, opts ...Option) *SimInput {
	return newSimInput(name, newConfig(opts))
}

// newSimInput makes a SimInput from a config.
func newSimInput(name string, cfg config) *SimInput {
	v := 0
	if cfg.pull == PullUp {
		v = 1
	}
	if cfg.activeLow {
		v ^= 1
	}
	s := &SimInput{name: name, logger: cfg.logger, value: v}
	s.events = newEventQueue(s.String(), cfg.logger)
	s.logger.Info("simulated input", "name", name, "value", v)
	return s
}

// Drive sets the simulated logical level to value (0 or 1), as the outside
// world would, and sends the new value on Events if it changed. It never
// blocks: when nobody reads Events and the buffer is full the event is
// dropped and counted (see Dropped). A value other than 0 or 1, or a call
// after Close, is an error and changes nothing.
func (s *SimInput) Drive(value int) error {
	if value != 0 && value != 1 {
		return fmt.Errorf("gpio: drive %s to %d: value must be 0 or 1", s.String(), value)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("gpio: drive %s: %w", s.String(), ErrClosed)
	}
	if s.value == value {
		return nil
	}
	s.value = value
	if s.logger.Enabled(context.Background(), slog.LevelDebug) {
		s.logger.Debug("simulated input changed", "name", s.name, "value", value)
	}
	s.events.push(value) // under s.mu, so events keep the order of the changes
	return nil
}

// Value returns the simulated logical level.
func (s *SimInput) Value() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, fmt.Errorf("gpio: read %s: %w", s.String(), ErrClosed)
	}
	return s.value, nil
}

// Events returns the channel of new values, one per change made by Drive.
func (s *SimInput) Events() <-chan int { return s.events.ch }

// Dropped returns how many events were dropped because the Events buffer
// was full.
func (s *SimInput) Dropped() uint64 { return s.events.dropped.Load() }

// Close marks the line closed and closes the Events channel; later calls
// do nothing and return nil.
func (s *SimInput) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.events.close()
	return nil
}

// String returns "sim:" and the line's name, e.g. "sim:BUTTON"; this is
// also a spec that ParseSpec accepts.
func (s *SimInput) String() string { return "sim:" + s.name }
