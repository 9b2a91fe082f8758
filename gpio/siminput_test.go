package gpio

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// recv receives n values from ch, failing after a generous timeout.
func recv(t testing.TB, ch <-chan int, n int) []int {
	t.Helper()
	var got []int
	timeout := time.After(10 * time.Second)
	for len(got) < n {
		select {
		case v, ok := <-ch:
			if !ok {
				t.Fatalf("Events closed after %v, want %d values", got, n)
			}
			got = append(got, v)
		case <-timeout:
			t.Fatalf("got %v, want %d values within 10s", got, n)
		}
	}
	return got
}

// noEvent fails if ch delivers a value within d.
func noEvent(t testing.TB, ch <-chan int, d time.Duration) {
	t.Helper()
	select {
	case v, ok := <-ch:
		t.Fatalf("unexpected event %d (open %v)", v, ok)
	case <-time.After(d):
	}
}

func TestSimInputEvents(t *testing.T) {
	logger, logs := testLogger(t)
	s := NewSimInput("BUTTON", WithLogger(logger))
	var _ Input = s
	if s.String() != "sim:BUTTON" {
		t.Errorf("String() = %q", s.String())
	}
	if v, err := s.Value(); err != nil || v != 0 {
		t.Fatalf("initial Value() = %d, %v", v, err)
	}
	if s.Events() != s.Events() {
		t.Error("Events returns different channels")
	}
	tests := []struct {
		drive []int
		want  []int // events
	}{
		{[]int{0}, nil},                  // unchanged: no event
		{[]int{1}, []int{1}},             // rising
		{[]int{1, 1}, nil},               // unchanged
		{[]int{0, 1, 0}, []int{0, 1, 0}}, // in order
		{[]int{0, 0, 1, 1, 0}, []int{1, 0}},
	}
	for _, tc := range tests {
		for _, v := range tc.drive {
			if err := s.Drive(v); err != nil {
				t.Fatalf("Drive(%d): %v", v, err)
			}
		}
		got := recv(t, s.Events(), len(tc.want))
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("Drive %v: events %v, want %v", tc.drive, got, tc.want)
		}
		noEvent(t, s.Events(), 0)
		last := tc.drive[len(tc.drive)-1]
		if v, err := s.Value(); err != nil || v != last {
			t.Errorf("Value() = %d, %v after Drive %v", v, err, tc.drive)
		}
	}
	if !strings.Contains(logs.String(), `level=DEBUG msg="simulated input changed" name=BUTTON value=1`) {
		t.Errorf("no change log:\n%s", logs)
	}
	if s.Dropped() != 0 {
		t.Errorf("Dropped() = %d", s.Dropped())
	}
}

func TestSimInputDriveErrors(t *testing.T) {
	logger, _ := testLogger(t)
	s := NewSimInput("B", WithLogger(logger))
	for _, v := range []int{-1, 2, 1 << 20} {
		err := s.Drive(v)
		want := fmt.Sprintf("gpio: drive sim:B to %d: value must be 0 or 1", v)
		if err == nil || err.Error() != want {
			t.Errorf("Drive(%d) = %v, want %q", v, err, want)
		}
	}
	noEvent(t, s.Events(), 0)
	if v, _ := s.Value(); v != 0 {
		t.Errorf("Value() = %d after invalid drives", v)
	}
}

func TestSimInputClose(t *testing.T) {
	logger, _ := testLogger(t)
	s := NewSimInput("B", WithLogger(logger))
	if err := s.Drive(1); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := s.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
	// The buffered value is still there, then the channel is closed.
	if v, ok := <-s.Events(); !ok || v != 1 {
		t.Errorf("first receive after Close = %d, %v; want the buffered 1", v, ok)
	}
	select {
	case v, ok := <-s.Events():
		if ok {
			t.Errorf("Events delivered %d after Close", v)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Events not closed by Close")
	}
	if err := s.Drive(0); !errors.Is(err, ErrClosed) {
		t.Errorf("Drive after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Value(); !errors.Is(err, ErrClosed) {
		t.Errorf("Value after Close: %v, want ErrClosed", err)
	}
}

// TestSimInputDrops: nobody reads Events; Drive never blocks, drops are
// counted and logged rate-limited (once at the first drop, the rest at
// Close), and the buffer holds the first EventBuffer changes in order.
func TestSimInputDrops(t *testing.T) {
	logger, logs := testLogger(t)
	s := NewSimInput("B", WithLogger(logger))
	const changes = EventBuffer + 100
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range changes {
			if err := s.Drive((i + 1) & 1); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Drive blocked with nobody reading Events")
	}
	if got := s.Dropped(); got != changes-EventBuffer {
		t.Errorf("Dropped() = %d, want %d", got, changes-EventBuffer)
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
		t.Errorf("%d warnings before Close, want 1 (rate-limited):\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), `level=WARN msg="events dropped: the consumer of Events is not keeping up" line=sim:B dropped=1 total=1 buffer=64`) {
		t.Errorf("no drop warning:\n%s", logs)
	}
	got := recv(t, s.Events(), EventBuffer)
	for i, v := range got {
		if v != (i+1)&1 {
			t.Fatalf("buffered events %v: not the first %d changes in order", got, EventBuffer)
		}
	}
	// Reading made room again.
	cur, _ := s.Value()
	if err := s.Drive(cur ^ 1); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, s.Events(), 1); got[0] != cur^1 {
		t.Errorf("event after the drops = %d, want %d", got[0], cur^1)
	}
	s.Close()
	if !strings.Contains(logs.String(), `dropped=99 total=100 buffer=64`) {
		t.Errorf("Close did not log the drops not logged yet:\n%s", logs)
	}
}

// TestSimInputConcurrent is for -race: drivers, a reader and Close at
// once; every delivered event alternates, as the changes did.
func TestSimInputConcurrent(t *testing.T) {
	s := NewSimInput("B", WithLogger(slog.New(slog.DiscardHandler)))
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				err := s.Drive((g + i) & 1)
				if err != nil && !errors.Is(err, ErrClosed) {
					t.Error(err)
					return
				}
				_, _ = s.Value()
			}
		}()
	}
	read := make(chan []int)
	go func() {
		var got []int
		for v := range s.Events() {
			got = append(got, v)
		}
		read <- got
	}()
	wg.Wait()
	s.Close()
	got := <-read
	want := 1
	for _, v := range got {
		if v != want && s.Dropped() == 0 {
			t.Fatalf("events %v do not alternate", got)
		}
		want = v ^ 1
	}
}

func TestSimInputInitial(t *testing.T) {
	logger, _ := testLogger(t)
	tests := []struct {
		opts []Option
		want int
	}{
		{nil, 0},
		{[]Option{WithPull(PullDown)}, 0},
		{[]Option{WithPull(PullUp)}, 1},
		{[]Option{WithActiveLow()}, 1},
		{[]Option{WithPull(PullDown), WithActiveLow()}, 1},
		{[]Option{WithPull(PullUp), WithActiveLow()}, 0},
		{[]Option{WithPull(PullUp), WithDebounce(time.Millisecond), WithConsumer("x")}, 1},
	}
	for _, tc := range tests {
		s := NewSimInput("B", append(tc.opts, WithLogger(logger))...)
		if v, _ := s.Value(); v != tc.want {
			t.Errorf("NewSimInput(%v): Value() = %d, want %d", tc.opts, v, tc.want)
		}
		// Driving to the initial value is no change.
		s.Drive(tc.want)
		noEvent(t, s.Events(), 0)
		s.Close()
	}
}

func TestOpenInputSim(t *testing.T) {
	logger, logs := testLogger(t)
	for spec, name := range map[string]string{"sim": "sim:GPIO21", "SIM": "sim:GPIO21", "sim:BUTTON": "sim:BUTTON"} {
		in, err := OpenInput(spec, WithLogger(logger), WithPull(PullUp), WithDebounce(10*time.Millisecond))
		if err != nil {
			t.Fatalf("OpenInput(%q): %v", spec, err)
		}
		s, ok := in.(*SimInput)
		if !ok || in.String() != name {
			t.Fatalf("OpenInput(%q) = %T %q, want *SimInput %q", spec, in, in, name)
		}
		if v, err := in.Value(); err != nil || v != 1 {
			t.Errorf("OpenInput(%q) with pull-up: Value() = %d, %v", spec, v, err)
		}
		s.Drive(0)
		if got := recv(t, in.Events(), 1); got[0] != 0 {
			t.Errorf("event %d, want 0", got[0])
		}
		in.Close()
	}
	if strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("sim must not warn:\n%s", logs)
	}
}

func TestOpenInputErrors(t *testing.T) {
	tests := []struct {
		spec string
		opts []Option
		want string
	}{
		{"auto", nil, `gpio: input line spec "auto": "auto" is for the LED output`},
		{"AUTO", nil, "an input needs its line named"},
		{"pin6", nil, "board pin 6 is ground"},
		{"", nil, "empty spec"},
		{"sim", []Option{WithInitialValue(1)}, "gpio: WithInitialValue(1) is for outputs"},
		{"sim", []Option{WithPull(Pull(7))}, "gpio: pull Pull(7): want PullNone, PullUp or PullDown"},
		{"sim", []Option{WithDebounce(-time.Millisecond)}, "gpio: WithDebounce(-1ms): negative"},
		{"sim", []Option{WithDebounce(2 * time.Second)}, "gpio: WithDebounce(2s): too long; want 0 (no debounce) up to 1s"},
		{"sim", []Option{WithDebounce(1500 * time.Nanosecond)}, "not a whole number of microseconds"},
		{"sim", []Option{WithConsumer("")}, "consumer name"},
		{"GPIO17", []Option{WithDebounce(time.Hour)}, "too long"},
	}
	for _, tc := range tests {
		in, err := OpenInput(tc.spec, tc.opts...)
		if err == nil {
			in.Close()
			t.Errorf("OpenInput(%q, %v) succeeded", tc.spec, tc.opts)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("OpenInput(%q, %v) error\n %v\nwant it to contain\n %s", tc.spec, tc.opts, err, tc.want)
		}
	}
	// Input-only options on an output are errors, not silently ignored;
	// their defaults are fine.
	for _, tc := range []struct {
		opt  Option
		want string
	}{
		{WithPull(PullUp), "gpio: WithPull(pull-up) is for inputs"},
		{WithPull(PullDown), "WithPull(pull-down) is for inputs"},
		{WithDebounce(time.Millisecond), "gpio: WithDebounce(1ms) is for inputs"},
	} {
		if out, err := OpenOutput("sim", tc.opt); err == nil || !strings.Contains(err.Error(), tc.want) {
			if out != nil {
				out.Close()
			}
			t.Errorf("OpenOutput(sim, %v) = %v, want %q", tc.opt, err, tc.want)
		}
	}
	logger, _ := testLogger(t)
	out, err := OpenOutput("sim", WithLogger(logger), WithPull(PullNone), WithDebounce(0), WithActiveLow())
	if err != nil {
		t.Fatal(err)
	}
	out.Close()
	in, err := OpenInput("sim", WithLogger(logger), WithInitialValue(0), WithDebounce(MaxDebounce), WithPull(PullNone))
	if err != nil {
		t.Fatal(err)
	}
	in.Close()
}

// TestSimActiveLowOutput: a simulated output keeps logical values.
func TestSimActiveLowOutput(t *testing.T) {
	logger, _ := testLogger(t)
	out, err := OpenOutput("sim:LED", WithLogger(logger), WithActiveLow(), WithInitialValue(1))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if v, _ := out.Value(); v != 1 {
		t.Errorf("Value() = %d, want the logical 1", v)
	}
}

func BenchmarkEdgeToEvent(b *testing.B) {
	b.Run("sim", func(b *testing.B) {
		s := NewSimInput("B", WithLogger(slog.New(slog.DiscardHandler)))
		defer s.Close()
		benchEdges(b, s, s.Drive)
	})
	b.Run("line", benchKernelEdge)
}

// benchEdges toggles in through drive and reports how long each new value
// takes to arrive on Events: ns/op, and the median and 99th percentile.
func benchEdges(b *testing.B, in Input, drive func(int) error) {
	b.Helper()
	b.ReportAllocs()
	lat := make([]time.Duration, 0, b.N)
	timeout := time.NewTimer(time.Hour)
	defer timeout.Stop()
	v := 0
	for b.Loop() {
		v ^= 1
		start := time.Now()
		if err := drive(v); err != nil {
			b.Fatal(err)
		}
		timeout.Reset(10 * time.Second)
		select {
		case got := <-in.Events():
			lat = append(lat, time.Since(start))
			if got != v {
				b.Fatalf("event %d after driving %d", got, v)
			}
		case <-timeout.C:
			b.Fatalf("no event within 10s of driving %d", v)
		}
	}
	reportLatency(b, lat)
}

// reportLatency reports the 50th and 99th percentiles of lat in ns.
func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	pct := func(p int) float64 { return float64(lat[(len(lat)-1)*p/100].Nanoseconds()) }
	b.ReportMetric(pct(50), "p50-ns")
	b.ReportMetric(pct(99), "p99-ns")
}
