package gpio

import (
	"fmt"
	"strconv"
	"strings"
)

// DefaultLine is the line pimqtt drives when the spec is "auto" or "sim":
// BCM GPIO21, physical pin 40 of the Raspberry Pi's 40-pin header.
const DefaultLine = "GPIO21"

// acceptedForms is appended to every spec parse error.
const acceptedForms = "accepted forms: auto (the default: GPIO21 if a chip has it, else simulated), " +
	"sim or sim:NAME (simulated), a line name (GPIO21), a board pin of the Pi header (J8p40 or pin40), " +
	"CHIP:OFFSET (gpiochip0:21, /dev/gpiochip0:21 or 0:21)"

// Kind says which form a [Spec] was written in.
type Kind int

const (
	// KindAuto is "auto": the line named [DefaultLine] if any chip has it,
	// otherwise a simulated line (with a warning).
	KindAuto Kind = iota

	// KindSim is "sim" or "sim:NAME": a simulated line, no hardware.
	KindSim

	// KindName is a line name such as GPIO21, or a board pin (J8p40, pin40)
	// translated to the name of its BCM line. Names are found on any chip.
	KindName

	// KindChipOffset is CHIP:OFFSET, e.g. gpiochip0:21.
	KindChipOffset
)

// String returns the name of the kind, e.g. "chip:offset".
func (k Kind) String() string {
	switch k {
	case KindAuto:
		return "auto"
	case KindSim:
		return "sim"
	case KindName:
		return "name"
	case KindChipOffset:
		return "chip:offset"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Spec is a parsed line spec, as returned by [ParseSpec].
type Spec struct {
	// Kind is the form the spec was written in.
	Kind Kind

	// Name is the line name to look for (KindName, KindAuto) or the name of
	// the simulated line (KindSim). A board pin has the name of its BCM line:
	// pin40 → "GPIO21". Names of the form gpioN are written GPION, as the
	// Raspberry Pi kernels name them; other names are kept as written
	// (kernel line names are case-sensitive).
	Name string

	// Pin is the physical pin of the Pi's 40-pin header (1..40) when the
	// spec was a board pin (J8p40, pin40), else 0.
	Pin int

	// Chip is the chip of a KindChipOffset spec, as a /dev name:
	// "gpiochip0" for gpiochip0, /dev/gpiochip0 and 0.
	Chip string

	// Offset is the line offset within Chip (KindChipOffset).
	Offset int
}

// String returns the spec in canonical form, which ParseSpec accepts:
// "auto", "sim", "sim:LED", "GPIO21", "J8p40" or "gpiochip0:21".
func (s Spec) String() string {
	switch s.Kind {
	case KindAuto:
		return "auto"
	case KindSim:
		if s.Name == "" || s.Name == DefaultLine {
			return "sim"
		}
		return "sim:" + s.Name
	case KindName:
		if s.Pin != 0 {
			return "J8p" + strconv.Itoa(s.Pin)
		}
		return s.Name
	case KindChipOffset:
		return s.Chip + ":" + strconv.Itoa(s.Offset)
	}
	return fmt.Sprintf("Spec(%d)", int(s.Kind))
}

// ParseSpec parses a line spec (the value of pimqtt's --gpio flag). The
// accepted forms are:
//
//	auto                 GPIO21 if any chip has it, else a simulated line (the default)
//	sim, sim:NAME        a simulated line, named GPIO21 or NAME
//	GPIO21               a line name, found on whichever chip has it (gpio21 works too)
//	J8p40, pin40         a physical pin of the Pi's 40-pin header (case-insensitive),
//	                     translated to its BCM line: pin 40 → GPIO21
//	gpiochip0:21         CHIP:OFFSET; also /dev/gpiochip0:21 and 0:21
//
// A board pin that is power or ground (1, 2, 4, 6, 9, ...) is an error that
// says what the pin is. A bare number is an error too, because it could mean
// a BCM number or a board pin. Surrounding spaces are ignored.
func ParseSpec(s string) (Spec, error) {
	sp, err := parseSpec(s)
	if err != nil {
		return Spec{}, fmt.Errorf("gpio: %w", err)
	}
	return sp, nil
}

// parseSpec is ParseSpec with errors that lack the "gpio: " prefix.
func parseSpec(s string) (Spec, error) {
	raw := s
	s = strings.TrimSpace(s)
	lower := strings.ToLower(s)
	switch {
	case s == "":
		return Spec{}, specError(raw, "empty spec")
	case lower == "auto":
		return Spec{Kind: KindAuto, Name: DefaultLine}, nil
	case lower == "sim":
		return Spec{Kind: KindSim, Name: DefaultLine}, nil
	case strings.HasPrefix(lower, "sim:"):
		name := s[len("sim:"):]
		if !validName(name) {
			return Spec{}, specError(raw, fmt.Sprintf("%q is not a valid name for a simulated line (letters, digits, _ . -; starting with a letter)", name))
		}
		return Spec{Kind: KindSim, Name: name}, nil
	}
	if digits, ok := pinDigits(lower); ok {
		return parsePin(raw, digits)
	}
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		return parseChipOffset(raw, s[:i], s[i+1:])
	}
	if n, ok := gpioNumber(s); ok {
		return Spec{Kind: KindName, Name: "GPIO" + strconv.Itoa(n)}, nil
	}
	if n, ok := strings.CutPrefix(strings.TrimPrefix(lower, "/dev/"), "gpiochip"); ok && isDigits(n) {
		return Spec{}, specError(raw, fmt.Sprintf("a chip needs a line offset: write gpiochip%s:OFFSET, e.g. gpiochip%s:21", n, n))
	}
	if isDigits(s) {
		return Spec{}, specError(raw, fmt.Sprintf("a bare number is ambiguous: write GPIO%s for BCM GPIO %s, or pin%s for physical pin %s of the header", s, s, s, s))
	}
	if !validName(s) {
		return Spec{}, specError(raw, "not a line name, board pin or CHIP:OFFSET")
	}
	return Spec{Kind: KindName, Name: s}, nil
}

func specError(raw, why string) error {
	return fmt.Errorf("bad line spec %q: %s; %s", raw, why, acceptedForms)
}

// pinDigits recognises j8pN and pinN (already lower-cased) and returns N.
func pinDigits(lower string) (string, bool) {
	for _, prefix := range []string{"j8p", "pin"} {
		if rest, ok := strings.CutPrefix(lower, prefix); ok && isDigits(rest) {
			return rest, true
		}
	}
	return "", false
}

func parsePin(raw, digits string) (Spec, error) {
	pin, err := strconv.Atoi(digits)
	if err != nil {
		pin = -1
	}
	bcm, what, ok := boardPin(pin)
	if !ok {
		return Spec{}, specError(raw, fmt.Sprintf("the Pi header has pins 1..40, not %s", digits))
	}
	if bcm < 0 {
		return Spec{}, specError(raw, fmt.Sprintf("board pin %d is %s, not a GPIO line; the LED pin is pin40 (GPIO21)", pin, what))
	}
	return Spec{Kind: KindName, Name: "GPIO" + strconv.Itoa(bcm), Pin: pin}, nil
}

func parseChipOffset(raw, chip, offset string) (Spec, error) {
	if !isDigits(offset) {
		return Spec{}, specError(raw, fmt.Sprintf("offset %q after the colon is not a line number", offset))
	}
	off, err := strconv.Atoi(offset)
	if err != nil {
		return Spec{}, specError(raw, fmt.Sprintf("offset %q is out of range", offset))
	}
	name := strings.TrimPrefix(chip, "/dev/")
	if isDigits(name) {
		name = "gpiochip" + name
	}
	if n, ok := strings.CutPrefix(name, "gpiochip"); !ok || !isDigits(n) {
		return Spec{}, specError(raw, fmt.Sprintf("chip %q is not gpiochipN, /dev/gpiochipN or N", chip))
	}
	return Spec{Kind: KindChipOffset, Chip: name, Offset: off}, nil
}

// gpioNumber recognises gpioN in any case and returns N.
func gpioNumber(s string) (int, bool) {
	if len(s) < 5 || !strings.EqualFold(s[:4], "gpio") || !isDigits(s[4:]) {
		return 0, false
	}
	n, err := strconv.Atoi(s[4:])
	return n, err == nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// validName accepts the line names found on Raspberry Pis and similar boards
// (GPIO21, SPI_CE0_N, ID_SDA, LED-1, P8.12): ASCII letters, digits, _ . -,
// starting with a letter; at most 31 bytes, the kernel's limit.
func validName(s string) bool {
	if s == "" || len(s) > 31 {
		return false
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case i > 0 && (r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-'):
		default:
			return false
		}
	}
	return true
}

// boardPin describes physical pin (1..40) of the Raspberry Pi's 40-pin J8
// header (every model since the B+; pins 1..26 match the Model B rev 2):
// its BCM GPIO number, or -1 for power and ground pins, and what the pin is
// (for GPIO pins: its usual alternate function, or ""). ok is false for a pin
// number outside 1..40.
func boardPin(pin int) (bcm int, what string, ok bool) {
	type headerPin struct {
		bcm  int
		what string
	}
	header := [40]headerPin{
		{-1, "3.3 V power"}, {-1, "5 V power"},
		{2, "I2C1 SDA"}, {-1, "5 V power"},
		{3, "I2C1 SCL"}, {-1, "ground"},
		{4, "GPCLK0"}, {14, "UART TXD"},
		{-1, "ground"}, {15, "UART RXD"},
		{17, ""}, {18, "PCM CLK"},
		{27, ""}, {-1, "ground"},
		{22, ""}, {23, ""},
		{-1, "3.3 V power"}, {24, ""},
		{10, "SPI0 MOSI"}, {-1, "ground"},
		{9, "SPI0 MISO"}, {25, ""},
		{11, "SPI0 SCLK"}, {8, "SPI0 CE0"},
		{-1, "ground"}, {7, "SPI0 CE1"},
		{0, "HAT ID EEPROM SDA"}, {1, "HAT ID EEPROM SCL"},
		{5, ""}, {-1, "ground"},
		{6, ""}, {12, "PWM0"},
		{13, "PWM1"}, {-1, "ground"},
		{19, "PCM FS"}, {16, ""},
		{26, ""}, {20, "PCM DIN"},
		{-1, "ground"}, {21, "PCM DOUT"},
	}
	if pin < 1 || pin > len(header) {
		return -1, "", false
	}
	hp := header[pin-1]
	return hp.bcm, hp.what, true
}
