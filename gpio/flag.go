package gpio

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Initial is what an output flag asks the line to start at.
type Initial int

const (
	// InitialOff drives the output to 0 (inactive) when it is requested:
	// the default.
	InitialOff Initial = iota

	// InitialOn drives the output to 1 (active) when it is requested.
	InitialOn

	// InitialRestore asks the caller to restore the last known state (for
	// pimqtt: the retained state on the broker). The gpio package knows no
	// such state: [LineFlag.Options] leaves the initial value to the
	// caller, who appends [WithInitialValue] with the restored value.
	InitialRestore
)

// String returns "off", "on" or "restore", as the flags write them.
func (i Initial) String() string {
	switch i {
	case InitialOff:
		return "off"
	case InitialOn:
		return "on"
	case InitialRestore:
		return "restore"
	}
	return "Initial(" + strconv.Itoa(int(i)) + ")"
}

// LineFlag is one parsed output or input flag of pimqtt's command line;
// see [ParseOutputFlag] and [ParseInputFlag].
type LineFlag struct {
	Name      string        // [A-Za-z0-9_-]+, used in MQTT topics
	Line      string        // the line spec in canonical form (Spec.String): GPIO21, J8p40, gpiochip0:21, sim, sim:NAME
	ActiveLow bool          // values are logical: 1 = pin low
	Initial   Initial       // outputs only
	Pull      Pull          // inputs only
	Debounce  time.Duration // inputs only; 0 = none
}

// Options returns the options that open the flag's line as it asks:
// [WithActiveLow], [WithPull], [WithDebounce] and, for InitialOn,
// [WithInitialValue](1). For InitialRestore it sets no initial value:
// append WithInitialValue with the restored one (later options win).
func (f LineFlag) Options() []Option {
	var opts []Option
	if f.ActiveLow {
		opts = append(opts, WithActiveLow())
	}
	if f.Pull != PullNone {
		opts = append(opts, WithPull(f.Pull))
	}
	if f.Debounce != 0 {
		opts = append(opts, WithDebounce(f.Debounce))
	}
	if f.Initial == InitialOn {
		opts = append(opts, WithInitialValue(1))
	}
	return opts
}

// The syntax of the flags, in every error.
const (
	outputFlagSyntax = "want NAME=LINE[,active-low][,initial=off|on|restore]"
	inputFlagSyntax  = "want NAME=LINE[,pull-up|pull-down][,debounce=DURATION][,active-low]"
)

// ParseOutputFlag parses an output flag, "NAME=LINE[,active-low][,initial=off|on|restore]",
// e.g. "led=GPIO21", "relay=pin11,active-low,initial=restore". NAME is
// letters, digits, _ and - (it becomes part of MQTT topics); LINE is a
// spec that [ParseSpec] accepts, auto included. Options are
// case-insensitive and may come in any order, each at most once; spaces
// around the parts are ignored. Errors quote the flag and list the
// accepted syntax.
func ParseOutputFlag(s string) (LineFlag, error) {
	f, opts, err := parseFlagHead(s, "output", outputFlagSyntax)
	if err != nil {
		return LineFlag{}, err
	}
	fail := func(why string) (LineFlag, error) {
		return LineFlag{}, fmt.Errorf("gpio: output flag %q: %s; %s", s, why, outputFlagSyntax)
	}
	seen := map[string]bool{}
	for _, o := range opts {
		key, val, hasVal := strings.Cut(o, "=")
		key = strings.ToLower(strings.TrimSpace(key))
		val = strings.ToLower(strings.TrimSpace(val))
		if seen[key] {
			return fail(fmt.Sprintf("option %s given twice", key))
		}
		seen[key] = true
		switch key {
		case "active-low":
			if hasVal {
				return fail(fmt.Sprintf("option %q takes no value", o))
			}
			f.ActiveLow = true
		case "initial":
			switch val {
			case "off":
				f.Initial = InitialOff
			case "on":
				f.Initial = InitialOn
			case "restore":
				f.Initial = InitialRestore
			default:
				return fail(fmt.Sprintf("initial=%s: want initial=off, initial=on or initial=restore", val))
			}
		case "pull-up", "pull-down", "debounce":
			return fail(fmt.Sprintf("option %s is for inputs; an output drives its line", key))
		case "":
			return fail("empty option (two commas, or a trailing comma)")
		default:
			return fail(fmt.Sprintf("unknown option %q", o))
		}
	}
	return f, nil
}

// ParseInputFlag parses an input flag, "NAME=LINE[,pull-up|pull-down][,debounce=DURATION][,active-low]",
// e.g. "button=GPIO17,pull-up,debounce=10ms,active-low". NAME is as for
// [ParseOutputFlag]; LINE is a spec that [ParseSpec] accepts except auto
// (see [OpenInput]). DURATION is a Go duration (10ms, 500us, 0) from 0,
// no debounce, to [MaxDebounce], in whole microseconds. pull-up and
// pull-down exclude each other; every option may come at most once.
// Errors quote the flag and list the accepted syntax.
func ParseInputFlag(s string) (LineFlag, error) {
	f, opts, err := parseFlagHead(s, "input", inputFlagSyntax)
	if err != nil {
		return LineFlag{}, err
	}
	fail := func(why string) (LineFlag, error) {
		return LineFlag{}, fmt.Errorf("gpio: input flag %q: %s; %s", s, why, inputFlagSyntax)
	}
	if f.Line == "auto" {
		return fail("line auto: " + errAutoInput)
	}
	seen := map[string]bool{}
	for _, o := range opts {
		key, val, hasVal := strings.Cut(o, "=")
		key = strings.ToLower(strings.TrimSpace(key))
		val = strings.TrimSpace(val)
		if seen[key] {
			return fail(fmt.Sprintf("option %s given twice", key))
		}
		seen[key] = true
		switch key {
		case "active-low", "pull-up", "pull-down":
			if hasVal {
				return fail(fmt.Sprintf("option %q takes no value", o))
			}
			switch key {
			case "active-low":
				f.ActiveLow = true
			case "pull-up", "pull-down":
				if f.Pull != PullNone {
					return fail("pull-up and pull-down exclude each other: give one")
				}
				f.Pull = PullUp
				if key == "pull-down" {
					f.Pull = PullDown
				}
			}
		case "debounce":
			d, err := parseDebounce(val)
			if err != nil {
				return fail(fmt.Sprintf("debounce=%s: %v", val, err))
			}
			f.Debounce = d
		case "initial":
			return fail("option initial is for outputs; an input's value comes from outside")
		case "":
			return fail("empty option (two commas, or a trailing comma)")
		default:
			return fail(fmt.Sprintf("unknown option %q", o))
		}
	}
	return f, nil
}

// parseFlagHead splits flag s ("NAME=LINE,OPT,...") of kind ("output" or
// "input") and checks NAME and LINE. It returns the options unparsed.
func parseFlagHead(s, kind, syntax string) (LineFlag, []string, error) {
	fail := func(why string) (LineFlag, []string, error) {
		return LineFlag{}, nil, fmt.Errorf("gpio: %s flag %q: %s; %s", kind, s, why, syntax)
	}
	name, rest, ok := strings.Cut(s, "=")
	name = strings.TrimSpace(name)
	if !ok {
		return fail("no \"=\" between NAME and LINE")
	}
	if name == "" {
		return fail("empty NAME")
	}
	if !validFlagName(name) {
		return fail(fmt.Sprintf("NAME %q: use letters, digits, _ and - (it becomes part of MQTT topics)", name))
	}
	parts := strings.Split(rest, ",")
	line := strings.TrimSpace(parts[0])
	if line == "" {
		return fail("empty LINE, e.g. GPIO17, pin11, gpiochip0:17 or sim")
	}
	sp, err := parseSpec(line)
	if err != nil {
		return fail(err.Error())
	}
	return LineFlag{Name: name, Line: sp.String()}, parts[1:], nil
}

// validFlagName accepts [A-Za-z0-9_-]+.
func validFlagName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-':
		default:
			return false
		}
	}
	return true
}

// parseDebounce parses the value of debounce=.
func parseDebounce(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("empty; want a duration such as 10ms")
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		if _, nerr := strconv.ParseFloat(s, 64); nerr == nil && s != "0" {
			return 0, errors.New("no unit; want a duration such as 10ms or 500us")
		}
		return 0, errors.New("not a duration; want one such as 10ms or 500us")
	}
	if err := checkDebounce(d); err != nil {
		return 0, err
	}
	return d, nil
}
