//go:build linux

package gpio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"

	"github.com/warthog618/go-gpiocdev"
)

func openSpec(sp Spec, cfg config) (Output, error) {
	switch sp.Kind {
	case KindSim:
		return newSim(sp.Name, cfg), nil
	case KindAuto:
		chip, offset, err := findLine(sp.Name, cfg.logger)
		if errors.Is(err, gpiocdev.ErrNotFound) {
			cfg.logger.Warn("no GPIO chip has line " + sp.Name + "; using a simulated line")
			return newSim(sp.Name, cfg), nil
		}
		if err != nil {
			return nil, err
		}
		return requestOutput(chip, offset, sp, cfg)
	case KindName:
		chip, offset, err := findLine(sp.Name, cfg.logger)
		if err != nil {
			return nil, err
		}
		return requestOutput(chip, offset, sp, cfg)
	case KindChipOffset:
		return requestOutput(sp.Chip, sp.Offset, sp, cfg)
	}
	return nil, fmt.Errorf("gpio: spec %s: unknown kind %v", sp, sp.Kind)
}

// findLine finds the chip and offset of the line called name. Its error
// wraps gpiocdev.ErrNotFound only when every chip could be searched and
// none has the line.
func findLine(name string, logger *slog.Logger) (chip string, offset int, err error) {
	chip, offset, err = gpiocdev.FindLine(name)
	if err == nil {
		return chip, offset, nil
	}
	chips := gpiocdev.Chips()
	if n, ok := gpioNumber(name); ok {
		if chip, ok := piHeaderChip(chips, n); ok {
			logger.Info("no line is named "+name+"; using the Raspberry Pi header chip's offset for BCM GPIO",
				"chip", chip, "offset", n)
			return chip, n, nil
		}
	}
	// FindLine skips chips it cannot open. Say so, rather than claim that
	// the line does not exist (or, for auto, silently simulate it).
	var searched []string
	for _, c := range chips {
		path := "/dev/" + c
		if fi, err := os.Lstat(path); err != nil || fi.Mode()&fs.ModeSymlink != 0 {
			continue // gone, or a symlink to a chip that is listed itself
		}
		ch, err := gpiocdev.NewChip(path)
		if err != nil {
			return "", 0, fmt.Errorf("gpio: cannot look for line %s on %s: %w", name, c, chipError(c, path, err))
		}
		searched = append(searched, chipTitle(ch))
		ch.Close()
	}
	if len(searched) == 0 {
		return "", 0, fmt.Errorf("gpio: line %s: %w: this system has no GPIO chip (no /dev/gpiochip*); use --gpio sim",
			name, gpiocdev.ErrNotFound)
	}
	return "", 0, fmt.Errorf("gpio: line %s: %w on any GPIO chip (searched %s); run \"pimqtt gpio\" to list the lines, or use --gpio sim",
		name, gpiocdev.ErrNotFound, strings.Join(searched, ", "))
}

// isPiHeaderChip reports whether label is that of the chip behind a
// Raspberry Pi's 40-pin header, on which offset n is BCM GPIO n.
func isPiHeaderChip(label string) bool {
	switch label {
	case "pinctrl-bcm2835", "pinctrl-bcm2711", "pinctrl-rp1":
		return true
	}
	return false
}

// piHeaderChip returns the first of chips that is a Raspberry Pi header
// chip with a line at offset n.
func piHeaderChip(chips []string, n int) (string, bool) {
	for _, name := range chips {
		c, err := gpiocdev.NewChip(name)
		if err != nil {
			continue
		}
		ok := isPiHeaderChip(c.Label) && n < c.Lines()
		c.Close()
		if ok {
			return name, true
		}
	}
	return "", false
}

func chipTitle(c *gpiocdev.Chip) string { return c.Name + " [" + c.Label + "]" }

// openChip opens chip ("gpiochip0" or "/dev/gpiochip0"). go-gpiocdev
// refuses symlinks, but Raspberry Pi OS links /dev/gpiochip4 to gpiochip0
// on a Pi 5 with a newer kernel, so a symlink is followed here.
func openChip(chip string, logger *slog.Logger) (*gpiocdev.Chip, error) {
	path := chip
	if !strings.HasPrefix(path, "/dev/") {
		path = "/dev/" + chip
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, chipError(chip, path, err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, err := filepath.EvalSymlinks(path)
		if err != nil {
			return nil, chipError(chip, path, err)
		}
		logger.Info("GPIO chip is a symlink; using its target", "chip", path, "target", target)
		path = target
	}
	c, err := gpiocdev.NewChip(path)
	if err != nil {
		return nil, chipError(chip, path, err)
	}
	return c, nil
}

// chipError explains why chip (at path) could not be opened. It has no
// "gpio: " prefix: callers add their own context.
func chipError(chip, path string, err error) error {
	switch {
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w: %s", err, permissionAdvice(path))
	case errors.Is(err, fs.ErrNotExist):
		have := "this system has no GPIO chip"
		if cc := gpiocdev.Chips(); len(cc) > 0 {
			have = "the chips here are " + strings.Join(cc, ", ") + " (run \"pimqtt gpio\" to list their lines)"
		}
		return fmt.Errorf("chip %s: %w; %s; or use --gpio sim", chip, err, have)
	case errors.Is(err, gpiocdev.ErrNotCharacterDevice):
		return fmt.Errorf("chip %s: %s: %w, so not a GPIO chip", chip, path, err)
	}
	return fmt.Errorf("chip %s: open %s: %w", chip, path, err)
}

// permissionAdvice says how to get access to the chip at path.
func permissionAdvice(path string) string {
	var group string
	var groupRW bool
	var st syscall.Stat_t
	if syscall.Stat(path, &st) == nil {
		groupRW = st.Mode&0o060 == 0o060
		if g, err := user.LookupGroupId(strconv.FormatUint(uint64(st.Gid), 10)); err == nil {
			group = g.Name
		}
	}
	return permissionHint(path, group, groupRW)
}

// permissionHint is the advice for a chip at path owned by group, which
// may (groupRW) or may not read and write it.
func permissionHint(path, group string, groupRW bool) string {
	if group != "" && group != "root" && groupRW {
		return fmt.Sprintf("%s belongs to group %s: add the user to it (sudo usermod -aG %s $USER) and log in again, or use --gpio sim",
			path, group, group)
	}
	return fmt.Sprintf("%s is for root only: run as root, or give group gpio access (udev rule SUBSYSTEM==\"gpio\", GROUP=\"gpio\", MODE=\"0660\"), "+
		"add the user to group gpio (sudo usermod -aG gpio $USER) and log in again; or use --gpio sim", path)
}

// requestOutput requests offset of chip as an output.
func requestOutput(chip string, offset int, sp Spec, cfg config) (Output, error) {
	c, err := openChip(chip, cfg.logger)
	if err != nil {
		return nil, fmt.Errorf("gpio: %w", err)
	}
	defer c.Close()
	if offset < 0 || offset >= c.Lines() {
		return nil, fmt.Errorf("gpio: %s:%d: %w: %s has lines 0..%d; run \"pimqtt gpio\" to list them",
			c.Name, offset, gpiocdev.ErrInvalidOffset, chipTitle(c), c.Lines()-1)
	}
	name := c.Name + ":" + strconv.Itoa(offset)
	if info, err := c.LineInfo(offset); err == nil && info.Name != "" {
		name += " (" + info.Name + ")"
	}
	l, err := c.RequestLine(offset, gpiocdev.AsOutput(cfg.initial), gpiocdev.WithConsumer(cfg.consumer))
	if err != nil {
		if errors.Is(err, syscall.EBUSY) {
			holder := "unknown"
			if info, ierr := c.LineInfo(offset); ierr == nil && info.Consumer != "" {
				holder = strconv.Quote(info.Consumer)
			}
			return nil, fmt.Errorf("gpio: request %s: %w: held by another process or a kernel driver (consumer %s); stop it or choose another line",
				name, err, holder)
		}
		return nil, fmt.Errorf("gpio: request %s as output: %w", name, err)
	}
	cfg.logger.Info("gpio line requested", "line", name, "spec", sp.String(), "consumer", cfg.consumer, "value", cfg.initial)
	return &lineOutput{name: name, line: l, logger: cfg.logger}, nil
}

// lineOutput is an Output backed by a kernel GPIO line.
type lineOutput struct {
	name   string // "gpiochip0:21 (GPIO21)"
	line   *gpiocdev.Line
	logger *slog.Logger
	closed atomic.Bool
}

func (o *lineOutput) SetValue(value int) error {
	if value != 0 && value != 1 {
		return valueError(o.name, value)
	}
	if o.closed.Load() {
		return fmt.Errorf("gpio: set %s: %w", o.name, ErrClosed)
	}
	if err := o.line.SetValue(value); err != nil {
		if errors.Is(err, gpiocdev.ErrClosed) {
			err = ErrClosed
		}
		return fmt.Errorf("gpio: set %s to %d: %w", o.name, value, err)
	}
	if o.logger.Enabled(context.Background(), slog.LevelDebug) {
		o.logger.Debug("line set", "line", o.name, "value", value)
	}
	return nil
}

func (o *lineOutput) Value() (int, error) {
	if o.closed.Load() {
		return 0, fmt.Errorf("gpio: read %s: %w", o.name, ErrClosed)
	}
	v, err := o.line.Value()
	if err != nil {
		if errors.Is(err, gpiocdev.ErrClosed) {
			err = ErrClosed
		}
		return 0, fmt.Errorf("gpio: read %s: %w", o.name, err)
	}
	return v, nil
}

func (o *lineOutput) Close() error {
	if o.closed.Swap(true) {
		return nil
	}
	if err := o.line.Close(); err != nil && !errors.Is(err, gpiocdev.ErrClosed) {
		return fmt.Errorf("gpio: release %s: %w", o.name, err)
	}
	o.logger.Info("gpio line released", "line", o.name)
	return nil
}

func (o *lineOutput) String() string { return o.name }

// ListLines writes every GPIO chip and each of its lines to w, like
// gpioinfo: chip name and label, then per line its offset, name, consumer
// ("unused" if free, "kernel" if used without a name), direction and any
// non-default flags. A chip that cannot be opened is reported in the
// listing, the others are still listed, and the returned error explains
// (e.g. permission denied: add the user to group gpio). A system without
// GPIO chips is an error.
func ListLines(w io.Writer) error {
	chips := gpiocdev.Chips()
	if len(chips) == 0 {
		return errors.New("gpio: this system has no GPIO chip (no /dev/gpiochip*)")
	}
	var errs []error
	for _, name := range chips {
		path := "/dev/" + name
		if fi, err := os.Lstat(path); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
			target, err := filepath.EvalSymlinks(path)
			if err != nil {
				target = "?"
			}
			if _, err := fmt.Fprintf(w, "%s -> %s (symlink)\n", name, target); err != nil {
				return err
			}
			continue
		}
		c, err := gpiocdev.NewChip(path)
		if err != nil {
			// The listing gets the short cause; the returned error the advice.
			if _, werr := fmt.Fprintf(w, "%s: cannot open: %v\n", name, err); werr != nil {
				return werr
			}
			errs = append(errs, fmt.Errorf("gpio: list lines: %w", chipError(name, path, err)))
			continue
		}
		err = listChip(w, c)
		c.Close()
		if err != nil {
			return err
		}
	}
	return errors.Join(errs...)
}

func listChip(w io.Writer, c *gpiocdev.Chip) error {
	if _, err := fmt.Fprintf(w, "%s - %d lines:\n", chipTitle(c), c.Lines()); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for o := 0; o < c.Lines(); o++ {
		info, err := c.LineInfo(o)
		if err != nil {
			fmt.Fprintf(tw, "\tline %3d:\t%v\n", o, err)
			continue
		}
		name := "unnamed"
		if info.Name != "" {
			name = strconv.Quote(info.Name)
		}
		consumer := "unused"
		switch {
		case info.Used && info.Consumer != "":
			consumer = strconv.Quote(info.Consumer)
		case info.Used:
			consumer = "kernel"
		}
		fmt.Fprintf(tw, "\tline %3d:\t%s\t%s\t%s\n", o, name, consumer, strings.Join(lineFlags(info.Config), " "))
	}
	return tw.Flush()
}

// lineFlags describes a line's direction and its non-default settings.
func lineFlags(lc gpiocdev.LineConfig) []string {
	var f []string
	switch lc.Direction {
	case gpiocdev.LineDirectionInput:
		f = append(f, "input")
	case gpiocdev.LineDirectionOutput:
		f = append(f, "output")
	default:
		f = append(f, "direction-unknown")
	}
	if lc.ActiveLow {
		f = append(f, "active-low")
	}
	switch lc.Drive {
	case gpiocdev.LineDriveOpenDrain:
		f = append(f, "open-drain")
	case gpiocdev.LineDriveOpenSource:
		f = append(f, "open-source")
	}
	switch lc.Bias {
	case gpiocdev.LineBiasDisabled:
		f = append(f, "bias-disabled")
	case gpiocdev.LineBiasPullUp:
		f = append(f, "pull-up")
	case gpiocdev.LineBiasPullDown:
		f = append(f, "pull-down")
	}
	switch lc.EdgeDetection {
	case gpiocdev.LineEdgeRising:
		f = append(f, "edge-rising")
	case gpiocdev.LineEdgeFalling:
		f = append(f, "edge-falling")
	case gpiocdev.LineEdgeBoth:
		f = append(f, "edge-both")
	}
	if lc.Debounced {
		f = append(f, "debounced="+lc.DebouncePeriod.String())
	}
	return f
}
