package gpio

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseOutputFlag(t *testing.T) {
	tests := []struct {
		in   string
		want LineFlag
	}{
		{"led=GPIO21", LineFlag{Name: "led", Line: "GPIO21"}},
		{"led=auto", LineFlag{Name: "led", Line: "auto"}},
		{"LED_1-a=pin40", LineFlag{Name: "LED_1-a", Line: "J8p40"}},
		{"led=gpio21", LineFlag{Name: "led", Line: "GPIO21"}},
		{"relay=/dev/gpiochip0:5", LineFlag{Name: "relay", Line: "gpiochip0:5"}},
		{"relay=0:5,active-low", LineFlag{Name: "relay", Line: "gpiochip0:5", ActiveLow: true}},
		{"led=sim", LineFlag{Name: "led", Line: "sim"}},
		{"led=sim:LED", LineFlag{Name: "led", Line: "sim:LED"}},
		{"led=GPIO21,initial=on", LineFlag{Name: "led", Line: "GPIO21", Initial: InitialOn}},
		{"led=GPIO21,initial=off", LineFlag{Name: "led", Line: "GPIO21", Initial: InitialOff}},
		{"led=GPIO21,initial=restore,active-low", LineFlag{Name: "led", Line: "GPIO21", Initial: InitialRestore, ActiveLow: true}},
		{" led = J8p11 , Active-Low , INITIAL=On ", LineFlag{Name: "led", Line: "J8p11", Initial: InitialOn, ActiveLow: true}},
		{"7=GPIO4", LineFlag{Name: "7", Line: "GPIO4"}},
	}
	for _, tc := range tests {
		got, err := ParseOutputFlag(tc.in)
		if err != nil {
			t.Errorf("ParseOutputFlag(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseOutputFlag(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
		if _, err := ParseSpec(got.Line); err != nil {
			t.Errorf("ParseOutputFlag(%q).Line %q does not parse: %v", tc.in, got.Line, err)
		}
	}
}

func TestParseOutputFlagErrors(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"", `no "=" between NAME and LINE`},
		{"led", `no "=" between NAME and LINE`},
		{"=GPIO21", "empty NAME"},
		{"led/1=GPIO21", `NAME "led/1": use letters, digits, _ and -`},
		{"le d=GPIO21", `NAME "le d"`},
		{"led+=GPIO21", `NAME "led+"`},
		{"led=", "empty LINE"},
		{"led=,active-low", "empty LINE"},
		{"led=pin6", "board pin 6 is ground"},
		{"led=21", "bare number is ambiguous"},
		{"led=GPIO21=x", "not a line name"},
		{"led=GPIO21,", "empty option"},
		{"led=GPIO21,,active-low", "empty option"},
		{"led=GPIO21,active-low,active-low", "option active-low given twice"},
		{"led=GPIO21,initial=on,initial=off", "option initial given twice"},
		{"led=GPIO21,initial=on,INITIAL=on", "option initial given twice"},
		{"led=GPIO21,initial=1", "initial=1: want initial=off, initial=on or initial=restore"},
		{"led=GPIO21,initial", "initial=: want"},
		{"led=GPIO21,active-low=yes", `option "active-low=yes" takes no value`},
		{"led=GPIO21,pull-up", "option pull-up is for inputs"},
		{"led=GPIO21,debounce=10ms", "option debounce is for inputs"},
		{"led=GPIO21,activelow", `unknown option "activelow"`},
		{"led=GPIO21,inverted", `unknown option "inverted"`},
	}
	for _, tc := range tests {
		_, err := ParseOutputFlag(tc.in)
		if err == nil {
			t.Errorf("ParseOutputFlag(%q) succeeded, want an error containing %q", tc.in, tc.want)
			continue
		}
		msg := err.Error()
		prefix := "gpio: output flag " + strconv.Quote(tc.in) + ": "
		if !strings.HasPrefix(msg, prefix) || !strings.Contains(msg, tc.want) ||
			!strings.HasSuffix(msg, "; want NAME=LINE[,active-low][,initial=off|on|restore]") {
			t.Errorf("ParseOutputFlag(%q) error\n %s\nwant %q, then %q, and the syntax", tc.in, msg, prefix, tc.want)
		}
	}
}

func TestParseInputFlag(t *testing.T) {
	tests := []struct {
		in   string
		want LineFlag
	}{
		{"button=GPIO17", LineFlag{Name: "button", Line: "GPIO17"}},
		{"button=pin11,pull-up", LineFlag{Name: "button", Line: "J8p11", Pull: PullUp}},
		{"button=GPIO17,pull-down", LineFlag{Name: "button", Line: "GPIO17", Pull: PullDown}},
		{"button=GPIO17,debounce=10ms", LineFlag{Name: "button", Line: "GPIO17", Debounce: 10 * time.Millisecond}},
		{"button=GPIO17,debounce=0", LineFlag{Name: "button", Line: "GPIO17"}},
		{"button=GPIO17,debounce=500us", LineFlag{Name: "button", Line: "GPIO17", Debounce: 500 * time.Microsecond}},
		{"button=GPIO17,debounce=1s", LineFlag{Name: "button", Line: "GPIO17", Debounce: time.Second}},
		{"button=GPIO17,debounce=1µs", LineFlag{Name: "button", Line: "GPIO17", Debounce: time.Microsecond}},
		{"button=GPIO17,active-low", LineFlag{Name: "button", Line: "GPIO17", ActiveLow: true}},
		{"door=gpiochip0:4,pull-up,debounce=20ms,active-low",
			LineFlag{Name: "door", Line: "gpiochip0:4", Pull: PullUp, Debounce: 20 * time.Millisecond, ActiveLow: true}},
		{" door = sim:DOOR , ACTIVE-LOW , Debounce = 5ms , PULL-DOWN ",
			LineFlag{Name: "door", Line: "sim:DOOR", Pull: PullDown, Debounce: 5 * time.Millisecond, ActiveLow: true}},
		{"b=sim", LineFlag{Name: "b", Line: "sim"}},
	}
	for _, tc := range tests {
		got, err := ParseInputFlag(tc.in)
		if err != nil {
			t.Errorf("ParseInputFlag(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseInputFlag(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestParseInputFlagErrors(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"button", `no "=" between NAME and LINE`},
		{"=GPIO17", "empty NAME"},
		{"bü=GPIO17", `NAME "bü"`},
		{"button=", "empty LINE"},
		{"button=auto", `line auto: "auto" is for the LED output`},
		{"button=AUTO,pull-up", `line auto`},
		{"button=pin1", "board pin 1 is 3.3 V power"},
		{"button=gpiochip0", "a chip needs a line offset"},
		{"button=GPIO17,pull-up,pull-down", "pull-up and pull-down exclude each other"},
		{"button=GPIO17,pull-down,pull-up", "pull-up and pull-down exclude each other"},
		{"button=GPIO17,pull-up,pull-up", "option pull-up given twice"},
		{"button=GPIO17,active-low,active-low", "option active-low given twice"},
		{"button=GPIO17,debounce=1ms,debounce=2ms", "option debounce given twice"},
		{"button=GPIO17,debounce=-1ms", "debounce=-1ms: negative"},
		{"button=GPIO17,debounce=2s", "debounce=2s: too long; want 0 (no debounce) up to 1s"},
		{"button=GPIO17,debounce=1h", "too long"},
		{"button=GPIO17,debounce=99999999999h", "not a duration"},
		{"button=GPIO17,debounce=10", "debounce=10: no unit"},
		{"button=GPIO17,debounce=1.5", "no unit"},
		{"button=GPIO17,debounce=soon", "debounce=soon: not a duration"},
		{"button=GPIO17,debounce=", "debounce=: empty"},
		{"button=GPIO17,debounce", "debounce=: empty"},
		{"button=GPIO17,debounce=1500ns", "not a whole number of microseconds"},
		{"button=GPIO17,pull-up=1", `option "pull-up=1" takes no value`},
		{"button=GPIO17,initial=on", "option initial is for outputs"},
		{"button=GPIO17,pullup", `unknown option "pullup"`},
		{"button=GPIO17,", "empty option"},
	}
	for _, tc := range tests {
		_, err := ParseInputFlag(tc.in)
		if err == nil {
			t.Errorf("ParseInputFlag(%q) succeeded, want an error containing %q", tc.in, tc.want)
			continue
		}
		msg := err.Error()
		prefix := "gpio: input flag " + strconv.Quote(tc.in) + ": "
		if !strings.HasPrefix(msg, prefix) || !strings.Contains(msg, tc.want) ||
			!strings.HasSuffix(msg, "; want NAME=LINE[,pull-up|pull-down][,debounce=DURATION][,active-low]") {
			t.Errorf("ParseInputFlag(%q) error\n %s\nwant %q, then %q, and the syntax", tc.in, msg, prefix, tc.want)
		}
	}
}

// TestLineFlagOptions: a parsed flag opens its line as it asks.
func TestLineFlagOptions(t *testing.T) {
	logger, _ := testLogger(t)
	out, err := ParseOutputFlag("led=sim:LED,initial=on,active-low")
	if err != nil {
		t.Fatal(err)
	}
	o, err := OpenOutput(out.Line, append(out.Options(), WithLogger(logger))...)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if v, _ := o.Value(); v != 1 {
		t.Errorf("initial=on: Value() = %d", v)
	}
	if c := newConfig(out.Options()); !c.activeLow || c.initial != 1 || c.validate() != nil {
		t.Errorf("output options: %+v", c)
	}
	restore, _ := ParseOutputFlag("led=GPIO21,initial=restore")
	if c := newConfig(append(restore.Options(), WithInitialValue(1))); c.initial != 1 {
		t.Errorf("restore: the caller's WithInitialValue must win: %+v", c)
	}

	in, err := ParseInputFlag("button=sim:B,pull-up,debounce=10ms,active-low")
	if err != nil {
		t.Fatal(err)
	}
	c := newConfig(in.Options())
	if !c.activeLow || c.pull != PullUp || c.debounce != 10*time.Millisecond || c.validateInput() != nil {
		t.Errorf("input options: %+v", c)
	}
	i, err := OpenInput(in.Line, append(in.Options(), WithLogger(logger))...)
	if err != nil {
		t.Fatal(err)
	}
	defer i.Close()
	// Pulled up, active-low: an undriven button reads 0.
	if v, _ := i.Value(); v != 0 {
		t.Errorf("pull-up, active-low sim input: Value() = %d, want 0", v)
	}
	for _, tc := range []struct {
		v    interface{ String() string }
		want string
	}{
		{InitialOff, "off"}, {InitialOn, "on"}, {InitialRestore, "restore"}, {Initial(9), "Initial(9)"},
		{PullNone, "none"}, {PullUp, "pull-up"}, {PullDown, "pull-down"}, {Pull(-1), "Pull(-1)"},
	} {
		if got := tc.v.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
}
