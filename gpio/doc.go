// Package gpio owns the hardware lines pimqtt drives: it resolves line specs
// (GPIO21, J8p40, pin40, gpiochip0:21, sim, auto) to a GPIO character-device
// line through go-gpiocdev on Linux, or to a simulated line anywhere else.
// It imports none of pimqtt's packages.
//
// # Line specs
//
// [ParseSpec] accepts auto (the default), sim or sim:NAME, a line name
// (GPIO21), a physical pin of the Raspberry Pi's 40-pin header (J8p40 or
// pin40, translated to its BCM line: pin 40 is GPIO21) and CHIP:OFFSET
// (gpiochip0:21, /dev/gpiochip0:21, 0:21).
//
// # Opening a line
//
// [OpenOutput] requests a line as an output and returns an [Output]:
//
//	out, err := gpio.OpenOutput("pin40", gpio.WithLogger(logger))
//	if err != nil {
//		return err // says which chip and line, and what to do
//	}
//	defer out.Close()
//	err = out.SetValue(1)
//
// Names are found on whichever chip has them, so one spec works on every
// Pi model and kernel. Only "sim", and "auto" when no chip has GPIO21, give
// a simulated line ([Sim]); every other failure is an error, never a
// silent simulation. Hold the Output for the life of the process: after
// Close the kernel decides what the pin does (see [Output]'s Close).
//
// # Inputs
//
// [OpenInput] requests a line as an input with edge detection and returns
// an [Input], whose Events channel gets the new value after each edge; the
// kernel reports the edges, nothing polls:
//
//	in, err := gpio.OpenInput("GPIO17", gpio.WithPull(gpio.PullUp),
//		gpio.WithDebounce(10*time.Millisecond), gpio.WithActiveLow())
//	if err != nil {
//		return err
//	}
//	defer in.Close()
//	for v := range in.Events() { // closed by Close
//		...
//	}
//
// Events never blocks the kernel's event goroutine: a consumer that falls
// behind loses events (counted, and logged at most every 10 s). "auto" is
// an error for an input; "sim" and "sim:NAME" give a [SimInput], driven
// by [SimInput.Drive].
//
// # Active-low lines
//
// With [WithActiveLow] values are logical on both sides: 1 means active,
// the pin low. The kernel inverts them, edges included (with gpio-sim on
// Linux 6.1, checked in the VM: a pin going low is a rising edge).
//
// # Platforms
//
// The kernel lines need Linux (go-gpiocdev's uAPI is Linux-only). The
// package builds everywhere; elsewhere "sim" and "auto" give a Sim and any
// other spec is an error, as is [ListLines]; inputs have no "auto". There,
// and on a Linux machine without any /dev/gpiochip*, those errors wrap
// [ErrNoChip] and say to use the spec "sim".
//
// # Tests
//
// Tests that need a kernel GPIO chip run inside the project's QEMU VM with
// the kernel's gpio-sim driver (.ci/vm/run-in-vm.sh, driven by
// .ci/gpio-vm; .ci/test runs it) and skip only when GPIOSIM_CHIP is unset;
// .ci/test fails on any other skip.
package gpio
