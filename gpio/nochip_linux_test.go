//go:build linux

package gpio

import (
	"errors"
	"strings"
	"testing"

	"github.com/warthog618/go-gpiocdev"
)

func TestLineNotFoundMessages(t *testing.T) {
	tests := []struct {
		name     string
		searched []string
		want     string
		noChip   bool
	}{
		{"GPIO21", nil,
			`gpio: line GPIO21 not found: this machine has no GPIO chip (no /dev/gpiochip*); use the line spec "sim" to simulate one`, true},
		{"GPIO5", []string{"gpiochip0 [pinctrl-bcm2711]", "gpiochip1 [raspberrypi-exp-gpio]"},
			`gpio: line GPIO5: not found on any GPIO chip (searched gpiochip0 [pinctrl-bcm2711], gpiochip1 [raspberrypi-exp-gpio]); run "pimqtt gpio" to list the lines, or use the line spec "sim" to simulate the line`, false},
	}
	for _, tt := range tests {
		err := lineNotFound(tt.name, tt.searched)
		if err.Error() != tt.want {
			t.Errorf("lineNotFound(%s, %v) =\n%s\nwant\n%s", tt.name, tt.searched, err, tt.want)
		}
		if !errors.Is(err, gpiocdev.ErrNotFound) || errors.Is(err, ErrNoChip) != tt.noChip {
			t.Errorf("lineNotFound(%s, %v): ErrNotFound %v, ErrNoChip %v (want %v)", tt.name, tt.searched,
				errors.Is(err, gpiocdev.ErrNotFound), errors.Is(err, ErrNoChip), tt.noChip)
		}
	}
}

// TestNoChip: on a machine without GPIO chips (most hosts; not the VM, which has gpio-sim's)
// every request for a kernel line, and the listing, says so, once, and what to do instead;
// auto still gives a simulated line. With chips, none of those errors claims there are none.
func TestNoChip(t *testing.T) {
	logger, _ := testLogger(t)
	if len(gpiocdev.Chips()) > 0 {
		var sb strings.Builder
		if err := ListLines(&sb); errors.Is(err, ErrNoChip) || sb.Len() == 0 {
			t.Errorf("ListLines with chips: %v, %d bytes listed", err, sb.Len())
		}
		if _, err := OpenOutput("PIMQTT_NO_SUCH_LINE", WithLogger(logger)); !errors.Is(err, gpiocdev.ErrNotFound) || errors.Is(err, ErrNoChip) {
			t.Errorf("OpenOutput(PIMQTT_NO_SUCH_LINE) with chips: %v", err)
		}
		return
	}

	const advice = `this machine has no GPIO chip (no /dev/gpiochip*); use the line spec "sim" to simulate one`
	open := []struct {
		spec  string
		input bool
		want  string
	}{
		{"GPIO21", false, "gpio: line GPIO21 not found: " + advice},
		{"pin40", false, "gpio: line GPIO21 not found: " + advice},
		{"J8p40", false, "gpio: line GPIO21 not found: " + advice},
		{"GPIO5", true, "gpio: line GPIO5 not found: " + advice},
		{"gpiochip0:21", false, "gpio: chip gpiochip0: lstat /dev/gpiochip0: no such file or directory; " + advice},
		{"gpiochip0:5", true, "gpio: chip gpiochip0: lstat /dev/gpiochip0: no such file or directory; " + advice},
	}
	for _, tt := range open {
		var err error
		if tt.input {
			var in Input
			if in, err = OpenInput(tt.spec, WithLogger(logger)); err == nil {
				in.Close()
			}
		} else {
			var out Output
			if out, err = OpenOutput(tt.spec, WithLogger(logger)); err == nil {
				out.Close()
			}
		}
		if err == nil || err.Error() != tt.want || !errors.Is(err, ErrNoChip) {
			t.Errorf("open %s (input %v) = %v\nwant %s (wrapping ErrNoChip)", tt.spec, tt.input, err, tt.want)
		}
		if err != nil && strings.Count(err.Error(), "gpio:") != 1 {
			t.Errorf("open %s: %q says gpio: more than once", tt.spec, err)
		}
	}

	err := ListLines(&strings.Builder{})
	if want := "gpio: no lines to list: " + advice; err == nil || err.Error() != want || !errors.Is(err, ErrNoChip) {
		t.Errorf("ListLines = %v\nwant %s (wrapping ErrNoChip)", err, want)
	}

	out, err := OpenOutput("auto", WithLogger(logger))
	if err != nil {
		t.Fatalf("auto without chips: %v", err)
	}
	defer out.Close()
	if _, ok := out.(*Sim); !ok {
		t.Errorf("auto without chips gave %T, want *Sim", out)
	}
}
