package gpio

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
)

// Sim is a simulated output line: it keeps its level in memory and logs
// every change at info ("line changed" name=GPIO21 value=1), so pimqtt can
// run without GPIO hardware. A Sim is safe for concurrent use and
// implements [Output]. OpenOutput returns one for "sim", and for "auto"
// when no chip has line GPIO21; callers can tell with a type assertion.
type Sim struct {
	name   string
	logger *slog.Logger

	mu     sync.Mutex // guards value and closed, and orders the change log
	value  int
	closed bool
}

// NewSim returns a simulated line called name (String gives "sim:"+name),
// driven to the initial value of [WithInitialValue] (default 0).
// [WithLogger] sets its logger; [WithConsumer] and [WithActiveLow] are
// accepted and change nothing (values are logical), and the input options
// ([WithPull], [WithDebounce]) are ignored. NewSim cannot fail: an initial
// value other than 0 or 1 is logged at warn and 0 is used instead.
func NewSim(name string, opts ...Option) *Sim {
	cfg := newConfig(opts)
	if cfg.initial != 0 && cfg.initial != 1 {
		cfg.logger.Warn("invalid initial value for simulated line; using 0", "name", name, "value", cfg.initial)
		cfg.initial = 0
	}
	return newSim(name, cfg)
}

// newSim makes a Sim from a validated config.
func newSim(name string, cfg config) *Sim {
	s := &Sim{name: name, logger: cfg.logger, value: cfg.initial}
	s.logger.Info("simulated line", "name", name, "value", cfg.initial)
	return s
}

// SetValue sets the simulated level to value (0 or 1) and logs it at info
// if it changed (at debug if it did not).
func (s *Sim) SetValue(value int) error {
	if value != 0 && value != 1 {
		return valueError(s.String(), value)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("gpio: set %s: %w", s.String(), ErrClosed)
	}
	// Debug, not info: the device already logs each change at info with
	// its topic, and one change should make one line at the default level.
	level := slog.LevelDebug
	msg := "simulated line changed"
	if s.value == value {
		msg = "simulated line set"
	}
	s.value = value
	// Logged under the lock, so the log shows the changes in their order.
	if s.logger.Enabled(context.Background(), level) {
		s.logger.Log(context.Background(), level, msg, "name", s.name, "value", value)
	}
	return nil
}

// Value returns the simulated level.
func (s *Sim) Value() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, fmt.Errorf("gpio: read %s: %w", s.String(), ErrClosed)
	}
	return s.value, nil
}

// Close marks the line closed; later calls do nothing and return nil.
func (s *Sim) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

// String returns "sim:" and the line's name, e.g. "sim:GPIO21"; this is
// also a spec that ParseSpec accepts.
func (s *Sim) String() string { return "sim:" + s.name }
