package gpio

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warthog618/go-gpiocdev"
)

// Real-kernel input tests (inside the project's VM, see linux_test.go).
// Each test uses lines of its own and first sets the gpio-sim pull of the
// lines it reads, since the pull outlives a request.

// pullPath is the gpio-sim file that drives line off from outside.
func (c simChip) pullPath(off int) string {
	return filepath.Join(c.sysfs, fmt.Sprintf("sim_gpio%d", off), "pull")
}

// setPull drives line off of the sim chip from outside: physical 1
// (pull-up) or 0 (pull-down).
func (c simChip) setPull(t testing.TB, off, level int) {
	t.Helper()
	pull := "pull-down"
	if level == 1 {
		pull = "pull-up"
	}
	if err := os.WriteFile(c.pullPath(off), []byte(pull), 0); err != nil {
		t.Fatalf("write %s: %v", c.pullPath(off), err)
	}
}

// pull reads back the gpio-sim pull of line off.
func (c simChip) pull(t testing.TB, off int) string {
	t.Helper()
	b, err := os.ReadFile(c.pullPath(off))
	if err != nil {
		t.Fatalf("read %s: %v", c.pullPath(off), err)
	}
	return strings.TrimSpace(string(b))
}

func mustOpenInput(t *testing.T, spec string, opts ...Option) Input {
	t.Helper()
	in, err := OpenInput(spec, opts...)
	if err != nil {
		t.Fatalf("OpenInput(%q): %v", spec, err)
	}
	t.Cleanup(func() { in.Close() })
	return in
}

// expectEvents drives line off of c to each physical level and checks the
// logical event and Value() after each (logical = physical ^ invert).
func expectEvents(t *testing.T, c simChip, in Input, off int, levels []int, invert int) {
	t.Helper()
	for _, lv := range levels {
		c.setPull(t, off, lv)
		want := lv ^ invert
		if got := recv(t, in.Events(), 1)[0]; got != want {
			t.Fatalf("%s: event %d after physical %d, want %d", in, got, lv, want)
		}
		if v, err := in.Value(); err != nil || v != want {
			t.Fatalf("%s: Value() = %d, %v after physical %d, want %d", in, v, err, lv, want)
		}
	}
	noEvent(t, in.Events(), 50*time.Millisecond)
}

func TestActiveLowOutput(t *testing.T) {
	c := envChip(t)
	logger, logs := testLogger(t)
	out := mustOpen(t, "GPIO21", WithLogger(logger), WithActiveLow())
	if got := c.level(t, 21); got != 1 {
		t.Errorf("active-low output at logical 0: physical %d, want 1", got)
	}
	info := c.lineInfo(t, 21)
	if !info.Config.ActiveLow || info.Config.Direction != gpiocdev.LineDirectionOutput {
		t.Errorf("line info %+v, want an active-low output", info.Config)
	}
	for _, v := range []int{1, 0, 1} {
		if err := out.SetValue(v); err != nil {
			t.Fatal(err)
		}
		if got := c.level(t, 21); got != v^1 {
			t.Errorf("SetValue(%d): physical %d, want %d", v, got, v^1)
		}
		if got, err := out.Value(); err != nil || got != v {
			t.Errorf("Value() = %d, %v after SetValue(%d): want the logical value", got, err, v)
		}
	}
	out.Close()
	on := mustOpen(t, "GPIO21", WithLogger(logger), WithActiveLow(), WithInitialValue(1))
	if got := c.level(t, 21); got != 0 {
		t.Errorf("active-low output with initial value 1: physical %d, want 0", got)
	}
	on.Close()
	if !strings.Contains(logs.String(), "active_low=true") {
		t.Errorf("request log does not say active-low:\n%s", logs)
	}
}

func TestInputEvents(t *testing.T) {
	c := envChip(t)
	const off = 5 // GPIO5, board pin 29
	want := c.name + ":5 (GPIO5)"
	for _, spec := range []string{"GPIO5", "pin29", c.name + ":5", c.dev + ":5"} {
		t.Run(spec, func(t *testing.T) {
			c.setPull(t, off, 0)
			logger, logs := testLogger(t)
			in := mustOpenInput(t, spec, WithLogger(logger))
			if _, isSim := in.(*SimInput); isSim || in.String() != want {
				t.Fatalf("OpenInput(%q) = %T %s, want the kernel line %s", spec, in, in, want)
			}
			if v, err := in.Value(); err != nil || v != 0 {
				t.Fatalf("initial Value() = %d, %v; want 0", v, err)
			}
			info := c.lineInfo(t, off)
			if !info.Used || info.Consumer != "pimqtt" || info.Config.Direction != gpiocdev.LineDirectionInput ||
				info.Config.EdgeDetection != gpiocdev.LineEdgeBoth || info.Config.ActiveLow || info.Config.Debounced {
				t.Errorf("line info %+v, want an input with both edges used by pimqtt", info)
			}
			expectEvents(t, c, in, off, []int{1, 0, 1, 0, 1, 0}, 0)
			if n := in.(interface{ Dropped() uint64 }).Dropped(); n != 0 {
				t.Errorf("Dropped() = %d", n)
			}
			if !strings.Contains(logs.String(), `msg="gpio line requested" line="`+want+`"`) ||
				!strings.Contains(logs.String(), `direction=input pull=none debounce=0s active_low=false`) {
				t.Errorf("no request log:\n%s", logs)
			}
			if !strings.Contains(logs.String(), `level=DEBUG msg="input changed" line="`+want+`" value=1`) {
				t.Errorf("no event log:\n%s", logs)
			}
		})
	}
}

// TestInputActiveLow: with AsActiveLow the kernel reports edges of the
// logical level: the pin going low is a rising edge, i.e. value 1.
func TestInputActiveLow(t *testing.T) {
	c := envChip(t)
	const off = 6
	c.setPull(t, off, 1)
	logger, _ := testLogger(t)
	in := mustOpenInput(t, "GPIO6", WithLogger(logger), WithActiveLow())
	if v, err := in.Value(); err != nil || v != 0 {
		t.Fatalf("pin high, active-low: Value() = %d, %v; want 0", v, err)
	}
	if info := c.lineInfo(t, off); !info.Config.ActiveLow {
		t.Errorf("line info %+v, want active-low", info.Config)
	}
	expectEvents(t, c, in, off, []int{0, 1, 0, 1}, 1)
}

// TestActiveLowEdgeTypes checks go-gpiocdev directly: an active-low line
// gets a rising edge event when the pin goes low.
func TestActiveLowEdgeTypes(t *testing.T) {
	c := envChip(t)
	const off = 7
	c.setPull(t, off, 1)
	events := make(chan gpiocdev.LineEventType, 8)
	l, err := gpiocdev.RequestLine(c.dev, off, gpiocdev.AsInput, gpiocdev.AsActiveLow, gpiocdev.WithBothEdges,
		gpiocdev.WithEventHandler(func(e gpiocdev.LineEvent) { events <- e.Type }))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, tc := range []struct {
		level int
		want  gpiocdev.LineEventType
	}{{0, gpiocdev.LineEventRisingEdge}, {1, gpiocdev.LineEventFallingEdge}} {
		c.setPull(t, off, tc.level)
		select {
		case got := <-events:
			if got != tc.want {
				t.Errorf("pin to %d: %v, want %v", tc.level, got, tc.want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no event after pin to %d", tc.level)
		}
	}
}

// bounce drives line off up/down/up (or down/up/down) to settled, step
// apart, and returns the longest gap between two writes.
func (c simChip) bounce(t *testing.T, off, settled int, step time.Duration) time.Duration {
	t.Helper()
	var gap time.Duration
	last := time.Now()
	for i, lv := range []int{settled, settled ^ 1, settled} {
		if i > 0 {
			time.Sleep(step)
		}
		c.setPull(t, off, lv)
		now := time.Now()
		gap = max(gap, now.Sub(last))
		last = now
	}
	return gap
}

// drain receives whatever arrives on ch within d.
func drain(ch <-chan int, d time.Duration) []int {
	var got []int
	timeout := time.After(d)
	for {
		select {
		case v := <-ch:
			got = append(got, v)
		case <-timeout:
			return got
		}
	}
}

// TestInputDebounce: a bounce up/down/up with steps shorter than the
// debounce period gives only the settled edge; without debounce the same
// bounce gives every edge. The steps are 3 ms apart: gpio-sim raises its
// interrupts from an irq_work, so writes much closer than that can merge
// into one edge even without debounce (observed: [1] or [0 1] instead of
// [1 0 1] for writes 0.3 ms apart), which would prove nothing.
func TestInputDebounce(t *testing.T) {
	c := envChip(t)
	const off, period, step = 8, 20 * time.Millisecond, 3 * time.Millisecond
	logger, _ := testLogger(t)

	c.setPull(t, off, 0)
	raw := mustOpenInput(t, "GPIO8", WithLogger(logger))
	gap := c.bounce(t, off, 1, step)
	if got := drain(raw.Events(), 200*time.Millisecond); fmt.Sprint(got) != "[1 0 1]" {
		t.Fatalf("bounce without debounce (steps %v apart at most): events %v, want [1 0 1]", gap, got)
	}
	raw.Close()

	c.setPull(t, off, 0)
	in := mustOpenInput(t, "GPIO8", WithLogger(logger), WithDebounce(period))
	info := c.lineInfo(t, off)
	if !info.Config.Debounced || info.Config.DebouncePeriod != period {
		t.Errorf("line info %+v, want debounced %v", info.Config, period)
	}
	for _, settled := range []int{1, 0, 1} {
		// The emulated VM may stall a step past the period; then the bounce
		// proves nothing, so settle and try again (a few times).
		for try := 1; ; try++ {
			gap := c.bounce(t, off, settled, step)
			if gap < period {
				if got := drain(in.Events(), 100*time.Millisecond); len(got) != 1 || got[0] != settled {
					t.Fatalf("bounce to %d (steps %v apart at most): events %v, want only [%d]", settled, gap, got, settled)
				}
				break
			}
			t.Logf("bounce to %d: a step took %v, not shorter than the debounce period; again", settled, gap)
			c.setPull(t, off, settled^1) // back to where the bounce started
			drain(in.Events(), 100*time.Millisecond)
			if try == 5 {
				t.Fatalf("5 bounces too slow to test a %v debounce", period)
			}
		}
		if v, _ := in.Value(); v != settled {
			t.Fatalf("Value() = %d, want %d", v, settled)
		}
	}
}

// TestInputDebounceNeedsV2: a kernel before 5.10 has only uAPI v1, which
// cannot debounce (forced here with the test-only abi setting).
func TestInputDebounceNeedsV2(t *testing.T) {
	c := envChip(t)
	logger, _ := testLogger(t)
	cfg := newConfig([]Option{WithLogger(logger), WithDebounce(10 * time.Millisecond)})
	cfg.abi = 1
	in, err := openInputSpec(Spec{Kind: KindName, Name: "GPIO9"}, cfg)
	if err == nil {
		in.Close()
		t.Fatal("debounced request through uAPI v1 succeeded")
	}
	want := fmt.Sprintf("gpio: request %s:9 (GPIO9) as input with debounce 10ms: debounce not available in kernel GPIO uAPI v1: kernel debounce needs Linux 5.10 or later; upgrade the kernel, or drop the debounce", c.name)
	var uerr gpiocdev.ErrUapiIncompatibility
	if err.Error() != want || !errors.As(err, &uerr) {
		t.Errorf("error\n %v\nwant\n %s", err, want)
	}
	if info := c.lineInfo(t, 9); info.Used {
		t.Errorf("line left requested: %+v", info)
	}
}

// TestInputPull: the bias of the request. gpio-sim implements a bias as
// its own pull: requesting with pull-up sets the sim's pull to pull-up
// (and the line reads 1 with nothing else driving it), overriding what
// the pull file said; the pull file still drives the line afterwards, and
// the request's bias stays the sim's pull after release.
func TestInputPull(t *testing.T) {
	c := envChip(t)
	const off = 10
	logger, _ := testLogger(t)
	for _, tc := range []struct {
		pull   Pull
		before int // the sim's pull before the request
		want   int
		bias   gpiocdev.LineBias
	}{
		{PullUp, 0, 1, gpiocdev.LineBiasPullUp},
		{PullDown, 1, 0, gpiocdev.LineBiasPullDown},
		{PullUp, 1, 1, gpiocdev.LineBiasPullUp},
		{PullNone, 1, 1, gpiocdev.LineBiasUnknown},
		{PullNone, 0, 0, gpiocdev.LineBiasUnknown},
	} {
		t.Run(fmt.Sprintf("%s-over-%d", tc.pull, tc.before), func(t *testing.T) {
			c.setPull(t, off, tc.before)
			in, err := OpenInput("GPIO10", WithLogger(logger), WithPull(tc.pull))
			if err != nil {
				t.Fatal(err)
			}
			defer in.Close()
			if v, err := in.Value(); err != nil || v != tc.want {
				t.Errorf("Value() = %d, %v; want %d", v, err, tc.want)
			}
			if info := c.lineInfo(t, off); info.Config.Bias != tc.bias {
				t.Errorf("bias %v, want %v", info.Config.Bias, tc.bias)
			}
			during := c.pull(t, off)
			noEvent(t, in.Events(), 50*time.Millisecond) // the bias is set before edge detection
			// The pull file still drives the line.
			expectEvents(t, c, in, off, []int{tc.want ^ 1, tc.want}, 0)
			in.Close()
			t.Logf("sim pull before %d, %s request: pull file %q while requested, %q after release, level %d",
				tc.before, tc.pull, during, c.pull(t, off), c.level(t, off))
		})
	}
	// The observation the doc comment makes, asserted.
	c.setPull(t, off, 0)
	in := mustOpenInput(t, "GPIO10", WithLogger(logger), WithPull(PullUp))
	if got := c.pull(t, off); got != "pull-up" {
		t.Errorf("sim pull file %q while requested with pull-up", got)
	}
	in.Close()
	if got := c.pull(t, off); got != "pull-up" {
		t.Errorf("sim pull file %q after release", got)
	}
}

// TestInputActiveLowPullUp: a button to ground: pull-up, active-low. It
// reads 0 released and 1 pressed.
func TestInputActiveLowPullUp(t *testing.T) {
	c := envChip(t)
	const off = 11
	c.setPull(t, off, 0)
	logger, _ := testLogger(t)
	in := mustOpenInput(t, "GPIO11", WithLogger(logger), WithPull(PullUp), WithActiveLow(), WithDebounce(time.Millisecond))
	if v, err := in.Value(); err != nil || v != 0 {
		t.Fatalf("released button: Value() = %d, %v; want 0", v, err)
	}
	expectEvents(t, c, in, off, []int{0, 1}, 1) // press, release
}

func TestInputBusy(t *testing.T) {
	c := envChip(t)
	logger, _ := testLogger(t)
	c.setPull(t, 12, 0)
	first := mustOpenInput(t, "GPIO12", WithLogger(logger), WithConsumer("button-holder"))
	busy := fmt.Sprintf(`gpio: request %s:12 (GPIO12): device or resource busy: held by another process or a kernel driver (consumer "button-holder"); stop it or choose another line`, c.name)
	for _, spec := range []string{"GPIO12", c.name + ":12", "pin32"} {
		in, err := OpenInput(spec, WithLogger(logger))
		if err == nil {
			in.Close()
			t.Fatalf("second OpenInput(%q) succeeded", spec)
		}
		if !errors.Is(err, syscall.EBUSY) || err.Error() != busy {
			t.Errorf("OpenInput(%q) error\n %v\nwant\n %s", spec, err, busy)
		}
	}
	// An output cannot take it either, and an input cannot take an output.
	if _, err := OpenOutput("GPIO12", WithLogger(logger)); err == nil || err.Error() != busy {
		t.Errorf("OpenOutput of a held input: %v", err)
	}
	mustOpen(t, "GPIO13", WithLogger(logger))
	if _, err := OpenInput("GPIO13", WithLogger(logger)); !errors.Is(err, syscall.EBUSY) || !strings.Contains(err.Error(), `(consumer "pimqtt")`) {
		t.Errorf("OpenInput of a held output: %v", err)
	}
	// The holder is unaffected.
	expectEvents(t, c, first, 12, []int{1, 0}, 0)
}

func TestInputCloseReleases(t *testing.T) {
	c := envChip(t)
	const off = 14
	c.setPull(t, off, 0)
	logger, logs := testLogger(t)
	in, err := OpenInput("GPIO14", WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	c.setPull(t, off, 1)
	recv(t, in.Events(), 1)
	c.setPull(t, off, 0)
	// Wait for the event to be buffered, then close without reading it.
	deadline := time.Now().Add(10 * time.Second)
	for len(in.Events()) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	for i := range 3 {
		if err := in.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
	if info := c.lineInfo(t, off); info.Used {
		t.Errorf("line still used after Close: %+v", info)
	}
	if v, ok := <-in.Events(); !ok || v != 0 {
		t.Errorf("buffered event after Close = %d, %v; want 0", v, ok)
	}
	if v, ok := <-in.Events(); ok {
		t.Errorf("Events delivered %d after Close, want it closed", v)
	}
	if _, err := in.Value(); !errors.Is(err, ErrClosed) {
		t.Errorf("Value after Close: %v, want ErrClosed", err)
	}
	if !strings.Contains(logs.String(), `msg="gpio line released" line="`+c.name+`:14 (GPIO14)"`) {
		t.Errorf("no release log:\n%s", logs)
	}
	again := mustOpenInput(t, "GPIO14", WithLogger(logger))
	expectEvents(t, c, again, off, []int{1, 0}, 0)
}

// TestInputDrops: nobody reads Events while the line keeps changing. The
// kernel event goroutine must not block: drops are counted, and once the
// consumer reads again new edges arrive.
func TestInputDrops(t *testing.T) {
	c := envChip(t)
	const off = 15
	c.setPull(t, off, 0)
	logger, logs := testLogger(t)
	in := mustOpenInput(t, "GPIO15", WithLogger(logger))
	dropped := in.(interface{ Dropped() uint64 }).Dropped
	const edges = EventBuffer + 36
	for i := range edges {
		c.setPull(t, off, (i+1)&1)
		time.Sleep(time.Millisecond) // one kernel event per write
	}
	deadline := time.Now().Add(10 * time.Second)
	for dropped() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if dropped() == 0 || len(in.Events()) != EventBuffer {
		t.Fatalf("after %d edges unread: Dropped() = %d, %d buffered", edges, dropped(), len(in.Events()))
	}
	t.Logf("%d edges unread: %d buffered, %d dropped", edges, len(in.Events()), dropped())
	if !strings.Contains(logs.String(), `level=WARN msg="events dropped: the consumer of Events is not keeping up" line="`+c.name+`:15 (GPIO15)" dropped=1 total=1`) {
		t.Errorf("no drop warning:\n%s", logs)
	}
	recv(t, in.Events(), EventBuffer)
	// Let any late event of the burst arrive, then check the goroutine
	// still delivers.
	time.Sleep(50 * time.Millisecond)
	for len(in.Events()) > 0 {
		<-in.Events()
	}
	cur, _ := in.Value()
	expectEvents(t, c, in, off, []int{cur ^ 1, cur}, 0)
	done := make(chan error)
	go func() { done <- in.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung")
	}
}

// TestInputNoAuto: auto is refused even where GPIO21 exists.
func TestInputNoAuto(t *testing.T) {
	c := envChip(t)
	logger, _ := testLogger(t)
	if _, err := OpenInput("auto", WithLogger(logger)); err == nil || !strings.Contains(err.Error(), "an input needs its line named") {
		t.Errorf("OpenInput(auto) = %v", err)
	}
	if info := c.lineInfo(t, 21); info.Used {
		t.Errorf("auto requested GPIO21: %+v", info)
	}
	if _, err := OpenInput("PIMQTT_NO_SUCH_LINE", WithLogger(logger)); !errors.Is(err, gpiocdev.ErrNotFound) {
		t.Errorf("unknown line: %v", err)
	}
	if _, err := OpenInput(c.name+":99", WithLogger(logger)); !errors.Is(err, gpiocdev.ErrInvalidOffset) {
		t.Errorf("invalid offset: %v", err)
	}
}

// benchKernelEdge measures the time from writing the gpio-sim pull file to
// the new value arriving on Events (kernel IRQ simulation, cdev event,
// go-gpiocdev's event goroutine, our handler and channel).
func benchKernelEdge(b *testing.B) {
	dev := os.Getenv("GPIOSIM_CHIP")
	if dev == "" {
		b.Skip(needsVM)
	}
	const off = 16
	c := simChip{sysfs: os.Getenv("GPIOSIM_SYSFS")}
	c.setPull(b, off, 0)
	in, err := OpenInput(dev+":16", WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	f, err := os.OpenFile(c.pullPath(off), os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	pulls := [2][]byte{[]byte("pull-down"), []byte("pull-up")}
	benchEdges(b, in, func(v int) error {
		_, err := f.WriteAt(pulls[v], 0)
		return err
	})
}
