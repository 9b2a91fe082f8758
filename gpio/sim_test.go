package gpio

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// logBuffer collects log output; safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testLogger returns a debug-level logger whose text output is collected in
// the returned buffer and shown in the test log if the test fails.
func testLogger(t testing.TB) (*slog.Logger, *logBuffer) {
	t.Helper()
	b := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", b)
		}
	})
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

func TestSimValues(t *testing.T) {
	logger, logs := testLogger(t)
	s := NewSim("GPIO21", WithLogger(logger))
	var _ Output = s
	if s.String() != "sim:GPIO21" {
		t.Errorf("String() = %q", s.String())
	}
	if v, err := s.Value(); err != nil || v != 0 {
		t.Fatalf("initial Value() = %d, %v; want 0", v, err)
	}
	for _, v := range []int{1, 1, 0, 1, 0} {
		if err := s.SetValue(v); err != nil {
			t.Fatalf("SetValue(%d): %v", v, err)
		}
		if got, err := s.Value(); err != nil || got != v {
			t.Fatalf("Value() = %d, %v after SetValue(%d)", got, err, v)
		}
	}
	// Four changes (0→1, 1→0, 0→1, 1→0) and the repeated 1, all at debug:
	// the device logs changes at info.
	out := logs.String()
	if n := strings.Count(out, `level=DEBUG msg="simulated line changed" name=GPIO21 value=`); n != 4 {
		t.Errorf("%d \"simulated line changed\" records, want 4:\n%s", n, out)
	}
	if !strings.Contains(out, `level=DEBUG msg="simulated line changed" name=GPIO21 value=1`) ||
		!strings.Contains(out, `level=DEBUG msg="simulated line set" name=GPIO21 value=1`) {
		t.Errorf("unexpected log:\n%s", out)
	}
}

func TestSimInitialValue(t *testing.T) {
	logger, logs := testLogger(t)
	s := NewSim("LED", WithLogger(logger), WithInitialValue(1), WithConsumer("ignored"))
	if v, _ := s.Value(); v != 1 {
		t.Errorf("Value() = %d, want 1", v)
	}
	bad := NewSim("LED", WithLogger(logger), WithInitialValue(7))
	if v, _ := bad.Value(); v != 0 {
		t.Errorf("Value() with initial 7 = %d, want 0", v)
	}
	if !strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("no warning for initial value 7:\n%s", logs)
	}
}

func TestSimInvalidValue(t *testing.T) {
	logger, _ := testLogger(t)
	s := NewSim("GPIO21", WithLogger(logger), WithInitialValue(1))
	for _, v := range []int{-1, 2, 255, 1 << 30} {
		err := s.SetValue(v)
		if err == nil {
			t.Fatalf("SetValue(%d) succeeded", v)
		}
		want := fmt.Sprintf("gpio: set sim:GPIO21 to %d: value must be 0 or 1", v)
		if err.Error() != want {
			t.Errorf("SetValue(%d) error %q, want %q", v, err, want)
		}
		if got, _ := s.Value(); got != 1 {
			t.Errorf("Value() = %d after invalid SetValue(%d), want 1", got, v)
		}
	}
}

func TestSimClose(t *testing.T) {
	logger, _ := testLogger(t)
	s := NewSim("GPIO21", WithLogger(logger))
	for i := range 2 {
		if err := s.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
	if err := s.SetValue(1); !errors.Is(err, ErrClosed) {
		t.Errorf("SetValue after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Value(); !errors.Is(err, ErrClosed) {
		t.Errorf("Value after Close: %v, want ErrClosed", err)
	}
}

// TestSimConcurrent is for -race: writers and readers at once, and the log
// records the changes in the order they happened.
func TestSimConcurrent(t *testing.T) {
	logs := &logBuffer{}
	s := NewSim("GPIO21", WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	const goroutines, rounds = 8, 500
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				if err := s.SetValue((g + i) & 1); err != nil {
					t.Error(err)
					return
				}
				if v, err := s.Value(); err != nil || (v != 0 && v != 1) {
					t.Errorf("Value() = %d, %v", v, err)
					return
				}
				_ = s.String()
			}
		}()
	}
	wg.Wait()
	final, _ := s.Value()
	// Changes alternate, starting from the initial 0: 1, 0, 1, ... and the
	// last one logged is the final value.
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	want := 1
	for _, l := range lines {
		if !strings.Contains(l, `msg="simulated line changed"`) {
			continue
		}
		if !strings.HasSuffix(l, fmt.Sprintf("value=%d", want)) {
			t.Fatalf("change log out of order: %q, want value=%d", l, want)
		}
		want ^= 1
	}
	if last := want ^ 1; last != final {
		t.Errorf("last logged change %d, final value %d", last, final)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenOutputSim(t *testing.T) {
	logger, logs := testLogger(t)
	for spec, name := range map[string]string{"sim": "sim:GPIO21", "SIM": "sim:GPIO21", "sim:LED": "sim:LED"} {
		out, err := OpenOutput(spec, WithLogger(logger), WithInitialValue(1))
		if err != nil {
			t.Fatalf("OpenOutput(%q): %v", spec, err)
		}
		if _, ok := out.(*Sim); !ok || out.String() != name {
			t.Errorf("OpenOutput(%q) = %T %q, want *Sim %q", spec, out, out, name)
		}
		if v, err := out.Value(); err != nil || v != 1 {
			t.Errorf("OpenOutput(%q) initial value %d, %v", spec, v, err)
		}
		out.Close()
	}
	if strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("sim must not warn:\n%s", logs)
	}
}

func TestOpenOutputOptionErrors(t *testing.T) {
	logger, logs := testLogger(t)
	tests := []struct {
		opts []Option
		want string
	}{
		{[]Option{WithInitialValue(2)}, "gpio: initial value 2: want 0 or 1"},
		{[]Option{WithInitialValue(-1)}, "initial value -1"},
		{[]Option{WithConsumer("")}, `gpio: consumer name "": want 1..31 bytes`},
		{[]Option{WithConsumer(strings.Repeat("c", 32))}, "want 1..31 bytes"},
	}
	for _, tc := range tests {
		for _, spec := range []string{"sim", "auto", "GPIO21"} {
			out, err := OpenOutput(spec, tc.opts...)
			if err == nil {
				out.Close()
				t.Errorf("OpenOutput(%q, %v) succeeded", spec, tc.opts)
				continue
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("OpenOutput(%q, %v) error %q, want %q", spec, tc.opts, err, tc.want)
			}
		}
	}
	// 31 bytes is the kernel's limit and fine; nil options are ignored.
	out, err := OpenOutput("sim", nil, WithConsumer(strings.Repeat("c", 31)), WithLogger(logger), WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	out.Close()
	if !strings.Contains(logs.String(), "simulated line") {
		t.Errorf("WithLogger(nil) replaced the logger:\n%s", logs)
	}
	if _, err := OpenOutput("pin6"); err == nil || !strings.Contains(err.Error(), "ground") {
		t.Errorf("OpenOutput(pin6) error %v, want the spec error", err)
	}
}

func BenchmarkSetValue(b *testing.B) {
	b.Run("sim", func(b *testing.B) {
		s := NewSim("GPIO21", WithLogger(slog.New(slog.DiscardHandler)))
		benchSetValue(b, s)
	})
	b.Run("sim-textlog", func(b *testing.B) {
		s := NewSim("GPIO21", WithLogger(slog.New(slog.NewTextHandler(discard{}, nil))))
		benchSetValue(b, s)
	})
	b.Run("line", benchKernelLine)
}

func benchSetValue(b *testing.B, out Output) {
	b.Helper()
	defer out.Close()
	b.ReportAllocs()
	v := 0
	for b.Loop() {
		v ^= 1
		if err := out.SetValue(v); err != nil {
			b.Fatal(err)
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
