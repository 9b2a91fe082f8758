package gpio

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Output is one output line, driven by its logical level (0 or 1).
//
// Both implementations, a kernel line from [OpenOutput] and a [Sim], are
// safe for concurrent use.
type Output interface {
	// SetValue drives the line to value, which must be 0 or 1; anything
	// else is an error and leaves the line as it was.
	SetValue(value int) error

	// Value reads back the level the line is driven to.
	Value() (int, error)

	// Close releases the line without driving it: the level is not
	// changed. What the pin does once released is the kernel driver's
	// choice: Raspberry Pi OS kernels keep a released output driven at its
	// level (pinctrl_bcm2835/pinctrl_rp1 persist_gpio_outputs, on by
	// default there); mainline pinctrl-bcm2835 by default, and Raspberry
	// Pi OS with dtparam=strict_gpiod, turn it into an input, so the pin
	// floats to its pull; gpio-sim sets it to its pull. So set the level you want
	// to leave behind first, or request the line again at the same level
	// (WithInitialValue) to carry a level across a restart. Close is
	// idempotent: calls after the first return nil. SetValue and Value
	// after Close return an error that wraps [ErrClosed].
	Close() error

	// String returns a human name for the line, e.g.
	// "gpiochip0:21 (GPIO21)" or "sim:GPIO21".
	String() string
}

// ErrClosed is wrapped by the errors of SetValue and Value on a closed
// [Output], of Value on a closed [Input] and of [SimInput.Drive] after
// Close.
var ErrClosed = errors.New("line closed")

// ErrNoChip is wrapped by the errors of [OpenOutput], [OpenInput] and
// [ListLines] on a machine without any GPIO chip (no /dev/gpiochip*, or
// not Linux), where only the line spec "sim" can give a line: a caller may
// add how its user asks for one (a flag, say).
var ErrNoChip = errors.New("this machine has no GPIO chip")

// simAdvice ends every error caused by a missing chip or line.
const simAdvice = `use the line spec "sim" to simulate one`

// Option configures [OpenOutput], [OpenInput], [NewSim] and
// [NewSimInput]. For every line: [WithLogger], [WithConsumer] and
// [WithActiveLow]; for outputs only: [WithInitialValue]; for inputs only:
// [WithPull] and [WithDebounce]. An option for the other direction with a
// value other than its default is an error (OpenOutput(spec,
// WithPull(PullUp)) fails), so a mistake is never silently ignored. Later
// options override earlier ones; nil options are ignored.
type Option interface {
	applyOption(*config)
}

// LoggerOption is the [Option] made by [WithLogger].
type LoggerOption struct{ logger *slog.Logger }

// WithLogger sets the logger for the line's messages: requests and
// fallbacks at info and warn, SetValue at debug (kernel lines) or every
// change at info (simulated lines). The default, and what nil means, is
// slog.Default() at the time the line is opened.
func WithLogger(l *slog.Logger) LoggerOption { return LoggerOption{logger: l} }

func (o LoggerOption) applyOption(c *config) {
	if o.logger != nil {
		c.logger = o.logger
	}
}

// ConsumerOption is the [Option] made by [WithConsumer].
type ConsumerOption string

// WithConsumer sets the consumer name the kernel shows for the requested
// line (gpioinfo, "pimqtt gpio", and our own busy errors). The default is
// "pimqtt". The kernel keeps at most 31 bytes, so a longer or an empty
// name is an error.
func WithConsumer(name string) ConsumerOption { return ConsumerOption(name) }

func (o ConsumerOption) applyOption(c *config) { c.consumer = string(o) }

// InitialValueOption is the [Option] made by [WithInitialValue].
type InitialValueOption int

// WithInitialValue sets the level (0 or 1) the line is driven to as soon as
// it is requested, without a glitch. The default is 0.
func WithInitialValue(v int) InitialValueOption { return InitialValueOption(v) }

func (o InitialValueOption) applyOption(c *config) { c.initial = int(o) }

// ActiveLowOption is the [Option] made by [WithActiveLow].
type ActiveLowOption struct{}

// WithActiveLow makes the line active-low: values stay logical (1 means
// active) and the kernel inverts them (go-gpiocdev's AsActiveLow), so an
// output set to 1 drives its pin low and an input reads 1, and reports a
// rising edge, when its pin goes low. Use it for an LED wired from 3.3 V
// through the pin, or a button that connects the pin to ground. Simulated
// lines keep logical values, so for them it changes nothing except the
// initial value of a [SimInput] with a pull (see [NewSimInput]).
func WithActiveLow() ActiveLowOption { return ActiveLowOption{} }

func (ActiveLowOption) applyOption(c *config) { c.activeLow = true }

// config is the result of applying Options.
type config struct {
	logger    *slog.Logger
	consumer  string
	initial   int
	activeLow bool
	pull      Pull
	debounce  time.Duration

	// abi, if not 0, forces the GPIO uAPI version (1 or 2). Only tests set
	// it, to see what a kernel older than 5.10 (uAPI v1 only) does.
	abi int
}

// DefaultConsumer is the consumer name lines are requested with unless
// [WithConsumer] says otherwise.
const DefaultConsumer = "pimqtt"

// maxConsumer is the longest consumer name the kernel keeps (32 bytes with
// the terminating NUL).
const maxConsumer = 31

func newConfig(opts []Option) config {
	c := config{consumer: DefaultConsumer}
	for _, o := range opts {
		if o != nil {
			o.applyOption(&c)
		}
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	return c
}

// validate reports the first option value that cannot be used for an
// output.
func (c config) validate() error {
	if c.initial != 0 && c.initial != 1 {
		return fmt.Errorf("gpio: initial value %d: want 0 or 1", c.initial)
	}
	if c.pull != PullNone {
		return fmt.Errorf("gpio: WithPull(%s) is for inputs: an output drives its line itself; use OpenInput, or drop the option", c.pull)
	}
	if c.debounce != 0 {
		return fmt.Errorf("gpio: WithDebounce(%s) is for inputs: use OpenInput, or drop the option", c.debounce)
	}
	return c.validateCommon()
}

// validateInput reports the first option value that cannot be used for
// an input.
func (c config) validateInput() error {
	if c.initial != 0 {
		return fmt.Errorf("gpio: WithInitialValue(%d) is for outputs: an input's value comes from outside; use OpenOutput, or drop the option", c.initial)
	}
	if c.pull != PullNone && c.pull != PullUp && c.pull != PullDown {
		return fmt.Errorf("gpio: pull %s: want PullNone, PullUp or PullDown", c.pull)
	}
	if err := checkDebounce(c.debounce); err != nil {
		return fmt.Errorf("gpio: WithDebounce(%s): %w", c.debounce, err)
	}
	return c.validateCommon()
}

func (c config) validateCommon() error {
	if c.consumer == "" || len(c.consumer) > maxConsumer {
		return fmt.Errorf("gpio: consumer name %q: want 1..%d bytes", c.consumer, maxConsumer)
	}
	return nil
}

// valueError is the error of SetValue(v) for a v other than 0 and 1.
func valueError(name string, v int) error {
	return fmt.Errorf("gpio: set %s to %d: value must be 0 or 1", name, v)
}

// OpenOutput requests the line named by spec (see [ParseSpec]) as an
// output, driven to the initial value (default 0), and returns it. The
// caller must Close it.
//
// With [WithActiveLow] the values are logical: 1 drives the pin low.
//
// On Linux, names and board pins are looked up on every GPIO chip with
// go-gpiocdev's FindLine, so the same spec works on a Pi 0-4 (gpiochip0)
// and a Pi 5 (gpiochip4 on older kernels, gpiochip0 on newer ones). When
// no line has the name and the name is GPIOn, offset n of a Raspberry Pi
// header chip (label pinctrl-bcm2835, pinctrl-bcm2711 or pinctrl-rp1) is
// used, because some Pi device trees name lines after their function
// (GPIO2 is "SDA1" on a Pi 4).
//
// "sim" always gives a [Sim]. "auto" gives the kernel line GPIO21 and
// falls back to a Sim, with a warning, only when no chip has that line;
// no other spec ever falls back to a simulated line. On systems other than
// Linux every spec except "sim" and "auto" is an error.
//
// Errors name the chip and line and say what to do. They wrap the cause,
// so errors.Is works with fs.ErrPermission (no access to /dev/gpiochipN),
// syscall.EBUSY (line held by another process or a kernel driver) and
// fs.ErrNotExist (no such chip).
func OpenOutput(spec string, opts ...Option) (Output, error) {
	cfg := newConfig(opts)
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	sp, err := ParseSpec(spec)
	if err != nil {
		return nil, err
	}
	return openSpec(sp, cfg)
}
