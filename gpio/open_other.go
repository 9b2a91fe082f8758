//go:build !linux

package gpio

import (
	"errors"
	"fmt"
	"io"
	"runtime"
)

// errNeedLinux is the cause of every hardware request off Linux.
var errNeedLinux = errors.New("GPIO character devices need Linux")

func openSpec(sp Spec, cfg config) (Output, error) {
	switch sp.Kind {
	case KindSim:
		return newSim(sp.Name, cfg), nil
	case KindAuto:
		cfg.logger.Warn("no GPIO chip has line "+sp.Name+"; using a simulated line",
			"reason", errNeedLinux.Error()+", this is "+runtime.GOOS)
		return newSim(sp.Name, cfg), nil
	}
	return nil, fmt.Errorf("gpio: line %s: %w: %w (this is %s); %s", sp, ErrNoChip, errNeedLinux, runtime.GOOS, simAdvice)
}

func openInputSpec(sp Spec, cfg config) (Input, error) {
	return nil, fmt.Errorf("gpio: input line %s: %w: %w (this is %s); %s", sp, ErrNoChip, errNeedLinux, runtime.GOOS, simAdvice)
}

// ListLines writes every GPIO chip and line, like gpioinfo. Off Linux there
// are none: it returns an error wrapping [ErrNoChip].
func ListLines(w io.Writer) error {
	return fmt.Errorf("gpio: no lines to list: %w: %w (this is %s); %s", ErrNoChip, errNeedLinux, runtime.GOOS, simAdvice)
}
