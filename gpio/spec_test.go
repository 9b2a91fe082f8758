package gpio

import (
	"strconv"
	"strings"
	"testing"

	"github.com/warthog618/go-gpiocdev/device/rpi"
)

func TestParseSpec(t *testing.T) {
	tests := []struct {
		in   string
		want Spec
		str  string // canonical String(); "" = same as in
	}{
		{"auto", Spec{Kind: KindAuto, Name: "GPIO21"}, ""},
		{"AUTO", Spec{Kind: KindAuto, Name: "GPIO21"}, "auto"},
		{" auto\n", Spec{Kind: KindAuto, Name: "GPIO21"}, "auto"},
		{"sim", Spec{Kind: KindSim, Name: "GPIO21"}, ""},
		{"Sim", Spec{Kind: KindSim, Name: "GPIO21"}, "sim"},
		{"sim:LED", Spec{Kind: KindSim, Name: "LED"}, ""},
		{"sim:GPIO21", Spec{Kind: KindSim, Name: "GPIO21"}, "sim"},
		{"GPIO21", Spec{Kind: KindName, Name: "GPIO21"}, ""},
		{"gpio21", Spec{Kind: KindName, Name: "GPIO21"}, "GPIO21"},
		{"Gpio021", Spec{Kind: KindName, Name: "GPIO21"}, "GPIO21"},
		{"GPIO0", Spec{Kind: KindName, Name: "GPIO0"}, ""},
		{"SPI_CE0_N", Spec{Kind: KindName, Name: "SPI_CE0_N"}, ""},
		{"LED-1", Spec{Kind: KindName, Name: "LED-1"}, ""},
		{"J8p40", Spec{Kind: KindName, Name: "GPIO21", Pin: 40}, ""},
		{"j8P40", Spec{Kind: KindName, Name: "GPIO21", Pin: 40}, "J8p40"},
		{"pin40", Spec{Kind: KindName, Name: "GPIO21", Pin: 40}, "J8p40"},
		{"PIN40", Spec{Kind: KindName, Name: "GPIO21", Pin: 40}, "J8p40"},
		{"Pin3", Spec{Kind: KindName, Name: "GPIO2", Pin: 3}, "J8p3"},
		{"pin27", Spec{Kind: KindName, Name: "GPIO0", Pin: 27}, "J8p27"},
		{"pin07", Spec{Kind: KindName, Name: "GPIO4", Pin: 7}, "J8p7"},
		{"gpiochip0:21", Spec{Kind: KindChipOffset, Chip: "gpiochip0", Offset: 21}, ""},
		{"/dev/gpiochip0:21", Spec{Kind: KindChipOffset, Chip: "gpiochip0", Offset: 21}, "gpiochip0:21"},
		{"0:21", Spec{Kind: KindChipOffset, Chip: "gpiochip0", Offset: 21}, "gpiochip0:21"},
		{"4:0", Spec{Kind: KindChipOffset, Chip: "gpiochip4", Offset: 0}, "gpiochip4:0"},
		{"gpiochip12:511", Spec{Kind: KindChipOffset, Chip: "gpiochip12", Offset: 511}, ""},
	}
	for _, tc := range tests {
		got, err := ParseSpec(tc.in)
		if err != nil {
			t.Errorf("ParseSpec(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseSpec(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
		str := tc.str
		if str == "" {
			str = tc.in
		}
		if got.String() != str {
			t.Errorf("ParseSpec(%q).String() = %q, want %q", tc.in, got.String(), str)
		}
		// The canonical form parses to the same spec.
		if again, err := ParseSpec(got.String()); err != nil || again != got {
			t.Errorf("ParseSpec(%q) = %+v, %v; want %+v", got.String(), again, err, got)
		}
	}
}

func TestParseSpecErrors(t *testing.T) {
	tests := []struct {
		in   string
		want string // in the error, besides the accepted forms
	}{
		{"", "empty spec"},
		{"   ", "empty spec"},
		{"21", "bare number is ambiguous: write GPIO21 for BCM GPIO 21, or pin21"},
		{"pin1", "board pin 1 is 3.3 V power, not a GPIO line"},
		{"pin2", "board pin 2 is 5 V power"},
		{"J8p6", "board pin 6 is ground"},
		{"pin17", "board pin 17 is 3.3 V power"},
		{"pin39", "board pin 39 is ground"},
		{"pin0", "pins 1..40, not 0"},
		{"pin00", "pins 1..40, not 00"},
		{"pin41", "pins 1..40, not 41"},
		{"J8p99999999999999999999", "pins 1..40, not 99999999999999999999"},
		{"gpiochip0:", `offset "" after the colon`},
		{"gpiochip0:x", `offset "x"`},
		{"gpiochip0:-1", `offset "-1"`},
		{"gpiochip0:99999999999999999999", "out of range"},
		{"foo:1", `chip "foo" is not gpiochipN`},
		{"/dev/foo:1", `chip "/dev/foo"`},
		{":21", `chip ""`},
		{"gpiochip0", "a chip needs a line offset: write gpiochip0:OFFSET"},
		{"/dev/gpiochip1", "write gpiochip1:OFFSET"},
		{"sim:", "not a valid name for a simulated line"},
		{"sim:a b", "not a valid name"},
		{"!!!", "not a line name, board pin or CHIP:OFFSET"},
		{"GPIO 21", "not a line name"},
		{"_x", "not a line name"},
		{"LED/1", "not a line name"},
		{strings.Repeat("A", 32), "not a line name"},
	}
	for _, tc := range tests {
		_, err := ParseSpec(tc.in)
		if err == nil {
			t.Errorf("ParseSpec(%q) succeeded, want an error", tc.in)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, tc.want) {
			t.Errorf("ParseSpec(%q) error %q does not contain %q", tc.in, msg, tc.want)
		}
		for _, form := range []string{"auto", "sim", "GPIO21", "J8p40", "pin40", "gpiochip0:21", "/dev/gpiochip0:21", "0:21"} {
			if !strings.Contains(msg, form) {
				t.Errorf("ParseSpec(%q) error %q does not list the accepted form %s", tc.in, msg, form)
			}
		}
	}
}

// TestBoardPins checks the whole header table against go-gpiocdev's
// device/rpi constants (J8pN is the BCM number of pin N).
func TestBoardPins(t *testing.T) {
	rpiPins := map[int]int{
		3: rpi.J8p3, 5: rpi.J8p5, 7: rpi.J8p7, 8: rpi.J8p8, 10: rpi.J8p10,
		11: rpi.J8p11, 12: rpi.J8p12, 13: rpi.J8p13, 15: rpi.J8p15, 16: rpi.J8p16,
		18: rpi.J8p18, 19: rpi.J8p19, 21: rpi.J8p21, 22: rpi.J8p22, 23: rpi.J8p23,
		24: rpi.J8p24, 26: rpi.J8p26, 27: rpi.J8p27, 28: rpi.J8p28, 29: rpi.J8p29,
		31: rpi.J8p31, 32: rpi.J8p32, 33: rpi.J8p33, 35: rpi.J8p35, 36: rpi.J8p36,
		37: rpi.J8p37, 38: rpi.J8p38, 40: rpi.J8p40,
	}
	power := map[int]string{
		1: "3.3 V power", 17: "3.3 V power", 2: "5 V power", 4: "5 V power",
		6: "ground", 9: "ground", 14: "ground", 20: "ground", 25: "ground",
		30: "ground", 34: "ground", 39: "ground",
	}
	if len(rpiPins)+len(power) != 40 {
		t.Fatalf("test tables cover %d pins, want 40", len(rpiPins)+len(power))
	}
	seen := map[int]int{}
	for pin := 1; pin <= 40; pin++ {
		bcm, what, ok := boardPin(pin)
		if !ok {
			t.Fatalf("boardPin(%d) not ok", pin)
		}
		if want, isGPIO := rpiPins[pin]; isGPIO {
			if bcm != want {
				t.Errorf("pin %d: BCM %d, want %d (rpi.J8p%d)", pin, bcm, want, pin)
			}
			if prev, dup := seen[bcm]; dup {
				t.Errorf("BCM %d on pins %d and %d", bcm, prev, pin)
			}
			seen[bcm] = pin
			spec, err := ParseSpec("pin" + strconv.Itoa(pin))
			if err != nil || spec.Name != "GPIO"+strconv.Itoa(want) || spec.Pin != pin {
				t.Errorf("ParseSpec(pin%d) = %+v, %v; want GPIO%d", pin, spec, err, want)
			}
			continue
		}
		if bcm != -1 || what != power[pin] {
			t.Errorf("pin %d = (%d, %q), want (-1, %q)", pin, bcm, what, power[pin])
		}
		if _, err := ParseSpec("J8p" + strconv.Itoa(pin)); err == nil || !strings.Contains(err.Error(), power[pin]) {
			t.Errorf("ParseSpec(J8p%d) error = %v, want one saying %q", pin, err, power[pin])
		}
	}
	for bcm := 0; bcm <= 27; bcm++ {
		if _, ok := seen[bcm]; !ok {
			t.Errorf("BCM GPIO%d is on no pin", bcm)
		}
	}
	for _, pin := range []int{-1, 0, 41} {
		if _, _, ok := boardPin(pin); ok {
			t.Errorf("boardPin(%d) ok", pin)
		}
	}
}
