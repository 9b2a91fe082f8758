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
	return "", 0, lineNotFound(name, searched)
}

// lineNotFound is findLine's error when no chip of searched (their
// titles) has the line called name. It wraps gpiocdev.ErrNotFound, and
// ErrNoChip when there is no chip at all.
func lineNotFound(name string, searched []string) error {
	if len(searched) == 0 {
		return fmt.Errorf("gpio: line %s %w: %w (no /dev/gpiochip*); %s", name, gpiocdev.ErrNotFound, ErrNoChip, simAdvice)
	}
	return fmt.Errorf("gpio: line %s: %w on any GPIO chip (searched %s); run \"pimqtt gpio\" to list the lines, or use the line spec \"sim\" to simulate the line",
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
		cc := gpiocdev.Chips()
		if len(cc) == 0 {
			return fmt.Errorf("chip %s: %w; %w (no /dev/gpiochip*); %s", chip, err, ErrNoChip, simAdvice)
		}
		return fmt.Errorf("chip %s: %w; the chips here are %s (run \"pimqtt gpio\" to list their lines); or use the line spec \"sim\" to simulate the line",
			chip, err, strings.Join(cc, ", "))
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
		return fmt.Sprintf("%s belongs to group %s: add the user to it (sudo usermod -aG %s $USER) and log in again, or use the line spec \"sim\" to simulate the line",
			path, group, group)
	}
	return fmt.Sprintf("%s is for root only: run as root, or give group gpio access (udev rule SUBSYSTEM==\"gpio\", GROUP=\"gpio\", MODE=\"0660\"), "+
		"add the user to group gpio (sudo usermod -aG gpio $USER) and log in again; or use the line spec \"sim\" to simulate the line", path)
}

// requestOutput requests offset of chip as an output.
func requestOutput(chip string, offset int, sp Spec, cfg config) (Output, error) {
	c, name, err := prepareLine(chip, offset, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	l, err := requestLine(c, offset, name, "output", cfg, gpiocdev.AsOutput(cfg.initial))
	if err != nil {
		return nil, err
	}
	cfg.logger.Info("gpio line requested", "line", name, "spec", sp.String(), "consumer", cfg.consumer, "value", cfg.initial,
		"active_low", cfg.activeLow)
	return &lineOutput{name: name, line: l, logger: cfg.logger}, nil
}

// prepareLine opens chip and checks offset. It returns the open chip, for
// the caller to close, and the line's human name: "gpiochip0:21 (GPIO21)".
func prepareLine(chip string, offset int, cfg config) (*gpiocdev.Chip, string, error) {
	c, err := openChip(chip, cfg.logger)
	if err != nil {
		return nil, "", fmt.Errorf("gpio: %w", err)
	}
	if offset < 0 || offset >= c.Lines() {
		c.Close()
		return nil, "", fmt.Errorf("gpio: %s:%d: %w: %s has lines 0..%d; run \"pimqtt gpio\" to list them",
			c.Name, offset, gpiocdev.ErrInvalidOffset, chipTitle(c), c.Lines()-1)
	}
	name := c.Name + ":" + strconv.Itoa(offset)
	if info, err := c.LineInfo(offset); err == nil && info.Name != "" {
		name += " (" + info.Name + ")"
	}
	return c, name, nil
}

// requestLine requests offset of c (called name) with opts and the
// options every line gets from cfg (consumer, active-low). dir ("input"
// or "output") is for the error.
func requestLine(c *gpiocdev.Chip, offset int, name, dir string, cfg config, opts ...gpiocdev.LineReqOption) (*gpiocdev.Line, error) {
	opts = append(opts, gpiocdev.WithConsumer(cfg.consumer))
	if cfg.activeLow {
		opts = append(opts, gpiocdev.AsActiveLow)
	}
	if cfg.abi != 0 {
		opts = append(opts, gpiocdev.WithABIVersion(cfg.abi))
	}
	l, err := c.RequestLine(offset, opts...)
	if err == nil {
		return l, nil
	}
	var uerr gpiocdev.ErrUapiIncompatibility
	switch {
	case errors.Is(err, syscall.EBUSY):
		holder := "unknown"
		if info, ierr := c.LineInfo(offset); ierr == nil && info.Consumer != "" {
			holder = strconv.Quote(info.Consumer)
		}
		return nil, fmt.Errorf("gpio: request %s: %w: held by another process or a kernel driver (consumer %s); stop it or choose another line",
			name, err, holder)
	case errors.As(err, &uerr) && uerr.Feature == "debounce":
		return nil, fmt.Errorf("gpio: request %s as %s with debounce %s: %w: kernel debounce needs Linux 5.10 or later; upgrade the kernel, or drop the debounce",
			name, dir, cfg.debounce, err)
	case errors.Is(err, syscall.EINVAL) && cfg.pull != PullNone:
		return nil, fmt.Errorf("gpio: request %s as %s with %s: %w: the kernel or the chip's driver refused the bias (pull-up/pull-down need Linux 5.5 or later); drop the pull option and use an external resistor",
			name, dir, cfg.pull, err)
	}
	return nil, fmt.Errorf("gpio: request %s as %s: %w", name, dir, err)
}

// openInputSpec opens a kernel line for OpenInput; sp is neither auto nor
// sim.
func openInputSpec(sp Spec, cfg config) (Input, error) {
	var chip string
	var offset int
	switch sp.Kind {
	case KindName:
		var err error
		if chip, offset, err = findLine(sp.Name, cfg.logger); err != nil {
			return nil, err
		}
	case KindChipOffset:
		chip, offset = sp.Chip, sp.Offset
	default:
		return nil, fmt.Errorf("gpio: spec %s: cannot be opened as a kernel input line", sp)
	}
	c, name, err := prepareLine(chip, offset, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	// The input exists before the request: the kernel may deliver an event
	// before RequestLine returns.
	in := &lineInput{name: name, logger: cfg.logger, events: newEventQueue(name, cfg.logger)}
	opts := []gpiocdev.LineReqOption{gpiocdev.AsInput, gpiocdev.WithBothEdges, gpiocdev.WithEventHandler(in.handle)}
	switch cfg.pull {
	case PullUp:
		opts = append(opts, gpiocdev.WithPullUp)
	case PullDown:
		opts = append(opts, gpiocdev.WithPullDown)
	}
	if cfg.debounce > 0 {
		opts = append(opts, gpiocdev.WithDebounce(cfg.debounce))
	}
	l, err := requestLine(c, offset, name, "input", cfg, opts...)
	if err != nil {
		return nil, err
	}
	in.line = l
	cfg.logger.Info("gpio line requested", "line", name, "spec", sp.String(), "consumer", cfg.consumer, "direction", "input",
		"pull", cfg.pull.String(), "debounce", cfg.debounce.String(), "active_low", cfg.activeLow)
	return in, nil
}

// lineInput is an Input backed by a kernel GPIO line with edge detection.
type lineInput struct {
	name   string // "gpiochip0:17 (GPIO17)"
	line   *gpiocdev.Line
	logger *slog.Logger
	events *eventQueue
	closed atomic.Bool

	// lastSeq is the kernel's sequence number of the line's last event;
	// only handle uses it, and go-gpiocdev calls handle serially.
	lastSeq uint32
}

// handle runs in go-gpiocdev's event goroutine, once per edge: it must
// never block, and never call Close (which waits for it).
func (in *lineInput) handle(e gpiocdev.LineEvent) {
	// uAPI v2 numbers each line's events from 1; a gap means the kernel's
	// event buffer overflowed. (v1 has no numbers: LineSeqno stays 0.)
	if in.lastSeq != 0 && e.LineSeqno > in.lastSeq+1 {
		in.events.lost(uint64(e.LineSeqno - in.lastSeq - 1))
	}
	in.lastSeq = e.LineSeqno
	// The kernel reports edges of the logical level (with AsActiveLow a
	// falling pin is a rising edge), so the edge is the new value.
	v := 0
	if e.Type == gpiocdev.LineEventRisingEdge {
		v = 1
	}
	if in.logger.Enabled(context.Background(), slog.LevelDebug) {
		in.logger.Debug("input changed", "line", in.name, "value", v)
	}
	in.events.push(v)
}

func (in *lineInput) Value() (int, error) {
	if in.closed.Load() {
		return 0, fmt.Errorf("gpio: read %s: %w", in.name, ErrClosed)
	}
	v, err := in.line.Value()
	if err != nil {
		if errors.Is(err, gpiocdev.ErrClosed) {
			err = ErrClosed
		}
		return 0, fmt.Errorf("gpio: read %s: %w", in.name, err)
	}
	return v, nil
}

func (in *lineInput) Events() <-chan int { return in.events.ch }

// Dropped returns how many events were dropped because the Events buffer
// was full, or lost because the kernel's event buffer overflowed.
func (in *lineInput) Dropped() uint64 { return in.events.dropped.Load() }

func (in *lineInput) Close() error {
	if in.closed.Swap(true) {
		return nil
	}
	// Line.Close waits for a running handle to return, so no event is
	// pushed after the channel is closed.
	err := in.line.Close()
	in.events.close()
	if err != nil && !errors.Is(err, gpiocdev.ErrClosed) {
		return fmt.Errorf("gpio: release %s: %w", in.name, err)
	}
	in.logger.Info("gpio line released", "line", in.name)
	return nil
}

func (in *lineInput) String() string { return in.name }

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
// GPIO chips is an error wrapping [ErrNoChip].
func ListLines(w io.Writer) error {
	chips := gpiocdev.Chips()
	if len(chips) == 0 {
		return fmt.Errorf("gpio: no lines to list: %w (no /dev/gpiochip*); %s", ErrNoChip, simAdvice)
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
