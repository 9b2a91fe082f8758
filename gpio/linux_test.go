//go:build linux

package gpio

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/warthog618/go-gpiocdev"
	"github.com/warthog618/go-gpiosim"
)

// The real-kernel tests below run inside the project's QEMU VM
// (.ci/vm/run-in-vm.sh, driven by .ci/gpio-vm; .ci/test runs both), as
// root, against the prepared gpio-sim chip: label gpio-vm-sim, lines named
// GPIO0..GPIO31, so GPIO21 is offset 21 as on a Pi. Extra chips made with
// go-gpiosim use line names of their own.

// needsVM is the skip message of the tests that need a gpio-sim chip. They
// skip only when GPIOSIM_CHIP is unset; .ci/test allows that on the host
// and .ci/gpio-vm fails on any skip inside the VM.
const needsVM = "needs a gpio-sim chip: runs inside the VM of .ci/vm/run-in-vm.sh (.ci/test and CI run it: .ci/gpio-vm)"

// permHelperEnv makes the test binary run permHelper instead of the tests:
// TestPermissionDenied starts it as an unprivileged user.
const permHelperEnv = "PIMQTT_GPIO_PERM_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(permHelperEnv) != "" {
		os.Exit(permHelper())
	}
	os.Exit(m.Run())
}

func needSimChip(t *testing.T) string {
	t.Helper()
	dev := os.Getenv("GPIOSIM_CHIP")
	if dev == "" {
		t.Skip(needsVM)
	}
	return dev
}

// simChip is the chip the gpio-vm harness prepared.
type simChip struct {
	dev   string // /dev/gpiochipN
	name  string // gpiochipN
	num   string // N
	sysfs string // /sys/devices/platform/gpio-sim.0/gpiochipN
	lines int
}

func envChip(t *testing.T) simChip {
	t.Helper()
	dev := needSimChip(t)
	c := simChip{dev: dev, name: filepath.Base(dev), sysfs: os.Getenv("GPIOSIM_SYSFS")}
	c.num = strings.TrimPrefix(c.name, "gpiochip")
	n, err := strconv.Atoi(os.Getenv("GPIOSIM_LINES"))
	if err != nil || c.sysfs == "" || n < 22 {
		t.Fatalf("GPIOSIM_SYSFS=%q GPIOSIM_LINES=%q: want the gpio-vm environment", c.sysfs, os.Getenv("GPIOSIM_LINES"))
	}
	c.lines = n
	return c
}

// level reads the level the kernel sees on line off of the sim chip.
func (c simChip) level(t *testing.T, off int) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.sysfs, fmt.Sprintf("sim_gpio%d", off), "value"))
	if err != nil {
		t.Fatalf("read sim value: %v", err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("parse sim value %q: %v", b, err)
	}
	return v
}

// lineInfo returns the kernel's view of line off of the sim chip.
func (c simChip) lineInfo(t *testing.T, off int) gpiocdev.LineInfo {
	t.Helper()
	ch, err := gpiocdev.NewChip(c.dev)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	info, err := ch.LineInfo(off)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func mustOpen(t *testing.T, spec string, opts ...Option) Output {
	t.Helper()
	out, err := OpenOutput(spec, opts...)
	if err != nil {
		t.Fatalf("OpenOutput(%q): %v", spec, err)
	}
	t.Cleanup(func() { out.Close() })
	return out
}

// checkDrives toggles out and checks what the kernel sees on line off.
func checkDrives(t *testing.T, c simChip, out Output, off int) {
	t.Helper()
	for _, v := range []int{1, 0, 1, 0} {
		if err := out.SetValue(v); err != nil {
			t.Fatalf("%s: SetValue(%d): %v", out, v, err)
		}
		if got := c.level(t, off); got != v {
			t.Fatalf("%s: kernel sees %d after SetValue(%d)", out, got, v)
		}
		if got, err := out.Value(); err != nil || got != v {
			t.Fatalf("%s: Value() = %d, %v after SetValue(%d)", out, got, err, v)
		}
	}
}

func TestOpenOutputSpecs(t *testing.T) {
	c := envChip(t)
	want := c.name + ":21 (GPIO21)"
	for _, spec := range []string{"GPIO21", "gpio21", "pin40", "J8p40", c.dev + ":21", c.name + ":21", c.num + ":21", "auto"} {
		t.Run(spec, func(t *testing.T) {
			logger, logs := testLogger(t)
			out, err := OpenOutput(spec, WithLogger(logger))
			if err != nil {
				t.Fatalf("OpenOutput(%q): %v", spec, err)
			}
			if _, isSim := out.(*Sim); isSim || out.String() != want {
				t.Fatalf("OpenOutput(%q) = %T %q, want the kernel line %q", spec, out, out, want)
			}
			if got := c.level(t, 21); got != 0 {
				t.Errorf("initial level %d, want 0", got)
			}
			info := c.lineInfo(t, 21)
			if !info.Used || info.Consumer != "pimqtt" || info.Config.Direction != gpiocdev.LineDirectionOutput {
				t.Errorf("line info %+v, want output used by pimqtt", info)
			}
			checkDrives(t, c, out, 21)
			for i := range 2 {
				if err := out.Close(); err != nil {
					t.Fatalf("Close #%d: %v", i+1, err)
				}
			}
			if strings.Contains(logs.String(), "level=WARN") {
				t.Errorf("unexpected warning:\n%s", logs)
			}
			if !strings.Contains(logs.String(), `msg="gpio line requested" line="`+want+`"`) {
				t.Errorf("no request log:\n%s", logs)
			}
		})
	}
}

func TestInitialValue(t *testing.T) {
	c := envChip(t)
	logger, _ := testLogger(t)
	out := mustOpen(t, "GPIO21", WithLogger(logger), WithInitialValue(1))
	if got := c.level(t, 21); got != 1 {
		t.Errorf("level %d right after the request with initial value 1", got)
	}
	if v, err := out.Value(); err != nil || v != 1 {
		t.Errorf("Value() = %d, %v", v, err)
	}
}

func TestSetValueInvalid(t *testing.T) {
	c := envChip(t)
	logger, _ := testLogger(t)
	out := mustOpen(t, "GPIO21", WithLogger(logger), WithInitialValue(1))
	for _, v := range []int{-1, 2, 256} {
		err := out.SetValue(v)
		want := fmt.Sprintf("gpio: set %s:21 (GPIO21) to %d: value must be 0 or 1", c.name, v)
		if err == nil || err.Error() != want {
			t.Errorf("SetValue(%d) = %v, want %q", v, err, want)
		}
		if got := c.level(t, 21); got != 1 {
			t.Errorf("level %d after invalid SetValue(%d), want 1", got, v)
		}
	}
}

func TestBusy(t *testing.T) {
	c := envChip(t)
	logger, _ := testLogger(t)
	first := mustOpen(t, "GPIO21", WithLogger(logger))
	for _, spec := range []string{"GPIO21", "pin40", c.name + ":21", "auto"} {
		out, err := OpenOutput(spec, WithLogger(logger))
		if err == nil {
			out.Close()
			t.Fatalf("second OpenOutput(%q) of a held line succeeded (%T %s)", spec, out, out)
		}
		msg := err.Error()
		want := fmt.Sprintf(`gpio: request %s:21 (GPIO21): device or resource busy: held by another process or a kernel driver (consumer "pimqtt"); stop it or choose another line`, c.name)
		if !errors.Is(err, syscall.EBUSY) || msg != want {
			t.Errorf("OpenOutput(%q) error\n %q\nwant\n %q", spec, msg, want)
		}
	}
	checkDrives(t, c, first, 21) // the holder is unaffected
	first.Close()

	holder := mustOpen(t, c.dev+":21", WithLogger(logger), WithConsumer("holder-x"))
	_, err := OpenOutput("GPIO21", WithLogger(logger))
	if !errors.Is(err, syscall.EBUSY) || !strings.Contains(err.Error(), `(consumer "holder-x")`) {
		t.Errorf("busy error %v, want one naming consumer holder-x", err)
	}
	holder.Close()
}

// TestBusyKernelHog: a line held by the kernel (a gpio-hog, as a device
// tree overlay would make) on a chip of its own.
func TestBusyKernelHog(t *testing.T) {
	envChip(t)
	s, err := gpiosim.NewSim(gpiosim.WithBank(gpiosim.NewBank("pimqtt-hog", 8,
		gpiosim.WithNamedLine(3, "PIMQTT_HOGGED"),
		gpiosim.WithHoggedLine(3, "other-app", gpiosim.HogDirectionOutputLow))))
	if err != nil {
		t.Fatalf("gpiosim.NewSim: %v", err)
	}
	defer s.Close()
	logger, _ := testLogger(t)
	_, err = OpenOutput("PIMQTT_HOGGED", WithLogger(logger))
	want := fmt.Sprintf(`gpio: request %s:3 (PIMQTT_HOGGED): device or resource busy: held by another process or a kernel driver (consumer "other-app")`, s.Chips[0].ChipName())
	if !errors.Is(err, syscall.EBUSY) || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error\n %v\nwant it to start with\n %s", err, want)
	}
}

func TestUnknownName(t *testing.T) {
	c := envChip(t)
	logger, logs := testLogger(t)
	for _, spec := range []string{"PIMQTT_NO_SUCH_LINE", "GPIO99"} {
		out, err := OpenOutput(spec, WithLogger(logger))
		if err == nil {
			out.Close()
			t.Fatalf("OpenOutput(%q) succeeded: %s", spec, out)
		}
		want := fmt.Sprintf(`gpio: line %s: not found on any GPIO chip (searched %s [gpio-vm-sim]); run "pimqtt gpio" to list the lines, or use the line spec "sim" to simulate the line`, spec, c.name)
		if !errors.Is(err, gpiocdev.ErrNotFound) || err.Error() != want {
			t.Errorf("OpenOutput(%q) error\n %v\nwant\n %s", spec, err, want)
		}
	}
	if logs.String() != "" {
		t.Errorf("unexpected log:\n%s", logs)
	}
}

func TestMissingChip(t *testing.T) {
	c := envChip(t)
	logger, _ := testLogger(t)
	_, err := OpenOutput("gpiochip999:1", WithLogger(logger))
	want := fmt.Sprintf(`gpio: chip gpiochip999: lstat /dev/gpiochip999: no such file or directory; the chips here are %s (run "pimqtt gpio" to list their lines); or use the line spec "sim" to simulate the line`, c.name)
	if !errors.Is(err, fs.ErrNotExist) || err.Error() != want {
		t.Errorf("error\n %v\nwant\n %s", err, want)
	}
}

func TestInvalidOffset(t *testing.T) {
	c := envChip(t)
	logger, _ := testLogger(t)
	_, err := OpenOutput(c.name+":"+strconv.Itoa(c.lines), WithLogger(logger))
	want := fmt.Sprintf(`gpio: %s:%d: invalid offset: %s [gpio-vm-sim] has lines 0..%d; run "pimqtt gpio" to list them`, c.name, c.lines, c.name, c.lines-1)
	if !errors.Is(err, gpiocdev.ErrInvalidOffset) || err.Error() != want {
		t.Errorf("error\n %v\nwant\n %s", err, want)
	}
}

// TestAutoFallback: auto falls back to a simulated line, with a warning,
// when no chip has the line (here a name nobody has, since the sim chip has
// GPIO21), and never when the line exists (TestOpenOutputSpecs, TestBusy)
// or cannot be searched for (TestPermissionDenied).
func TestAutoFallback(t *testing.T) {
	envChip(t)
	logger, logs := testLogger(t)
	out, err := openSpec(Spec{Kind: KindAuto, Name: "PIMQTT_NO_SUCH_LINE"}, newConfig([]Option{WithLogger(logger)}))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, ok := out.(*Sim); !ok || out.String() != "sim:PIMQTT_NO_SUCH_LINE" {
		t.Errorf("got %T %s, want a Sim", out, out)
	}
	if !strings.Contains(logs.String(), `level=WARN msg="no GPIO chip has line PIMQTT_NO_SUCH_LINE; using a simulated line"`) {
		t.Errorf("no warning:\n%s", logs)
	}
}

func TestCloseReleases(t *testing.T) {
	c := envChip(t)
	logger, _ := testLogger(t)
	out, err := OpenOutput("GPIO21", WithLogger(logger), WithInitialValue(1))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := out.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
	if info := c.lineInfo(t, 21); info.Used {
		t.Errorf("line still used after Close: %+v", info)
	}
	if err := out.SetValue(0); !errors.Is(err, ErrClosed) {
		t.Errorf("SetValue after Close: %v, want ErrClosed", err)
	}
	if _, err := out.Value(); !errors.Is(err, ErrClosed) {
		t.Errorf("Value after Close: %v, want ErrClosed", err)
	}
	again := mustOpen(t, "GPIO21", WithLogger(logger))
	checkDrives(t, c, again, 21)
}

func TestConcurrentKernelLine(t *testing.T) {
	c := envChip(t)
	logger, _ := testLogger(t)
	out := mustOpen(t, "GPIO21", WithLogger(logger))
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				if err := out.SetValue((g + i) & 1); err != nil {
					t.Error(err)
					return
				}
				if _, err := out.Value(); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	v, _ := out.Value()
	if got := c.level(t, 21); got != v {
		t.Errorf("kernel level %d, Value() %d", got, v)
	}
}

func TestListLines(t *testing.T) {
	c := envChip(t)
	logger, _ := testLogger(t)
	mustOpen(t, "GPIO21", WithLogger(logger))
	var b strings.Builder
	if err := ListLines(&b); err != nil {
		t.Fatalf("ListLines: %v\n%s", err, b.String())
	}
	out := b.String()
	t.Logf("ListLines:\n%s", out)
	if !strings.Contains(out, fmt.Sprintf("%s [gpio-vm-sim] - %d lines:\n", c.name, c.lines)) {
		t.Errorf("no chip header for %s", c.name)
	}
	fields := func(offset int) []string {
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) > 2 && f[0] == "line" && f[1] == strconv.Itoa(offset)+":" {
				return f[2:]
			}
		}
		t.Fatalf("line %d not listed", offset)
		return nil
	}
	if f := fields(21); strings.Join(f, " ") != `"GPIO21" "pimqtt" output` {
		t.Errorf("line 21 listed as %q", f)
	}
	if f := fields(20); strings.Join(f, " ") != `"GPIO20" unused input` {
		t.Errorf("line 20 listed as %q", f)
	}
}

// TestPiHeaderFallback: a Pi whose device tree does not name a line GPIOn
// (a Pi 4 calls GPIO2 "SDA1") still finds GPIOn at offset n of its header
// chip. The sim chip has GPIO0..31, so GPIO45 is looked up that way.
func TestPiHeaderFallback(t *testing.T) {
	envChip(t)
	s, err := gpiosim.NewSim(gpiosim.WithBank(gpiosim.NewBank("pinctrl-bcm2711", 58)))
	if err != nil {
		t.Fatalf("gpiosim.NewSim: %v", err)
	}
	defer s.Close()
	sc := &s.Chips[0]
	logger, logs := testLogger(t)
	out := mustOpen(t, "GPIO45", WithLogger(logger))
	if want := sc.ChipName() + ":45"; out.String() != want {
		t.Fatalf("OpenOutput(GPIO45) = %s, want %s", out, want)
	}
	for _, v := range []int{1, 0} {
		if err := out.SetValue(v); err != nil {
			t.Fatal(err)
		}
		if lv, err := sc.Level(45); err != nil || lv != v {
			t.Fatalf("Level(45) = %d, %v after SetValue(%d)", lv, err, v)
		}
	}
	if !strings.Contains(logs.String(), "no line is named GPIO45") {
		t.Errorf("fallback not logged:\n%s", logs)
	}
	if !isPiHeaderChip("pinctrl-rp1") || !isPiHeaderChip("pinctrl-bcm2835") || isPiHeaderChip("gpio-vm-sim") {
		t.Error("isPiHeaderChip")
	}
}

// TestSymlinkChip: Raspberry Pi OS links /dev/gpiochip4 to gpiochip0 on a
// Pi 5 with a newer kernel; go-gpiocdev refuses symlinks, we follow them.
func TestSymlinkChip(t *testing.T) {
	c := envChip(t)
	const link = "/dev/gpiochip900"
	if err := os.Symlink(c.dev, link); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(link) })
	logger, logs := testLogger(t)
	out := mustOpen(t, "gpiochip900:21", WithLogger(logger))
	if want := c.name + ":21 (GPIO21)"; out.String() != want {
		t.Errorf("got %s, want %s", out, want)
	}
	checkDrives(t, c, out, 21)
	if !strings.Contains(logs.String(), "GPIO chip is a symlink; using its target") {
		t.Errorf("symlink not logged:\n%s", logs)
	}
	out.Close()
	// The symlink is not a chip that cannot be searched.
	if _, err := OpenOutput("PIMQTT_NO_SUCH_LINE", WithLogger(logger)); !errors.Is(err, gpiocdev.ErrNotFound) {
		t.Errorf("unknown name beside a symlink: %v", err)
	}
	var b strings.Builder
	if err := ListLines(&b); err != nil || !strings.Contains(b.String(), "gpiochip900 -> "+c.dev+" (symlink)\n") {
		t.Errorf("ListLines = %v:\n%s", err, b.String())
	}
}

func TestPermissionHint(t *testing.T) {
	got := permissionHint("/dev/gpiochip0", "gpio", true)
	want := "/dev/gpiochip0 belongs to group gpio: add the user to it (sudo usermod -aG gpio $USER) and log in again, or use the line spec \"sim\" to simulate the line"
	if got != want {
		t.Errorf("group gpio:\n %s\nwant\n %s", got, want)
	}
	for _, group := range []string{"root", "gpio", ""} {
		got := permissionHint("/dev/gpiochip0", group, group == "root")
		if !strings.HasPrefix(got, "/dev/gpiochip0 is for root only: run as root, or give group gpio access") ||
			!strings.Contains(got, "sudo usermod -aG gpio $USER") {
			t.Errorf("group %q: %s", group, got)
		}
	}
}

// TestPermissionDenied runs permHelper as an unprivileged user (uid 65534)
// against the sim chip, first root-only (0600, as devtmpfs makes it), then
// as on Raspberry Pi OS (group-owned, 0660) with the user not in the group.
func TestPermissionDenied(t *testing.T) {
	c := envChip(t)
	var st syscall.Stat_t
	if err := syscall.Stat(c.dev, &st); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.Chown(c.dev, int(st.Uid), int(st.Gid))
		os.Chmod(c.dev, fs.FileMode(st.Mode&0o777))
	})
	tests := []struct {
		name   string
		gid    int // of the chip; the helper runs with gid 65533
		mode   fs.FileMode
		advice string
	}{
		{"root-only", 0, 0o600, c.dev + " is for root only: run as root, or give group gpio access"},
		{"group", 65534, 0o660, c.dev + " belongs to group nogroup: add the user to it (sudo usermod -aG nogroup $USER) and log in again, or use the line spec \"sim\" to simulate the line"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.Chown(c.dev, 0, tc.gid); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(c.dev, tc.mode); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), permHelperEnv+"=1")
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65533}}
			b, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("helper: %v\n%s", err, b)
			}
			res := map[string]string{}
			for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				k, v, _ := strings.Cut(l, "\t")
				res[k] = v
			}
			t.Logf("helper (uid/gid %s):\n%s", res["uid"], b)
			denied := "open " + c.dev + ": permission denied: " + tc.advice
			wants := map[string]string{
				"name":    "gpio: cannot look for line GPIO21 on " + c.name + ": " + denied,
				"auto":    "gpio: cannot look for line GPIO21 on " + c.name + ": " + denied,
				"chipoff": "gpio: " + denied,
				"list":    "gpio: list lines: " + denied,
				"listing": c.name + ": cannot open: open " + c.dev + ": permission denied | ",
			}
			for k, want := range wants {
				if !strings.HasPrefix(res[k], want) {
					t.Errorf("%s:\n %s\nwant it to start with\n %s", k, res[k], want)
				}
			}
		})
	}
}

// permHelper is the unprivileged side of TestPermissionDenied: it reports
// one result per line as KEY<tab>error (or "ok ..." on success).
func permHelper() int {
	logger := slog.New(slog.DiscardHandler)
	report := func(key string, out Output, err error) {
		if err != nil {
			fmt.Printf("%s\t%s\n", key, strings.ReplaceAll(err.Error(), "\n", " | "))
			return
		}
		fmt.Printf("%s\tok %T %s\n", key, out, out)
		out.Close()
	}
	out, err := OpenOutput("GPIO21", WithLogger(logger))
	report("name", out, err)
	out, err = OpenOutput("auto", WithLogger(logger))
	report("auto", out, err)
	out, err = OpenOutput(os.Getenv("GPIOSIM_CHIP")+":21", WithLogger(logger))
	report("chipoff", out, err)
	var b strings.Builder
	err = ListLines(&b)
	fmt.Printf("list\t%v\n", strings.ReplaceAll(fmt.Sprint(err), "\n", " | "))
	fmt.Printf("listing\t%s\n", strings.ReplaceAll(b.String(), "\n", " | "))
	fmt.Printf("uid\t%d/%d\n", os.Getuid(), os.Getgid())
	return 0
}

func benchKernelLine(b *testing.B) {
	if os.Getenv("GPIOSIM_CHIP") == "" {
		b.Skip(needsVM)
	}
	out, err := OpenOutput("GPIO21", WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	benchSetValue(b, out)
}

// BenchmarkGpiocdevSetValue is go-gpiocdev's own SetValue on the same line,
// to show what the Output wrapper adds.
func BenchmarkGpiocdevSetValue(b *testing.B) {
	dev := os.Getenv("GPIOSIM_CHIP")
	if dev == "" {
		b.Skip(needsVM)
	}
	l, err := gpiocdev.RequestLine(dev, 21, gpiocdev.AsOutput(0))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	b.ReportAllocs()
	v := 0
	for b.Loop() {
		v ^= 1
		if err := l.SetValue(v); err != nil {
			b.Fatal(err)
		}
	}
}
