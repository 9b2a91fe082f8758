package broker

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// fakeClock is a settable time source for rateLimitedCounter.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTestCounter(sink *logSink, clock *fakeClock, maxKeys int) *rateLimitedCounter {
	r := newRateLimitedCounter(slog.New(slog.NewTextHandler(sink, nil)), "auth failed", "failures", "from")
	r.now, r.maxKeys = clock.now, maxKeys
	return r
}

func TestRateLimitedCounter(t *testing.T) {
	type step struct {
		advance time.Duration
		add     string // key to add; "" with flush
		flush   bool
		want    string // the log line it must write ("" none), as a substring
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"first event logged at once, then counted", []step{
			{add: "a", want: "failures=1 from=a"},
			{add: "a"}, {add: "a"},
			{advance: 9 * time.Second, add: "a"},
			{advance: time.Second, add: "a", want: "failures=4 from=a"},
		}},
		{"keys are independent", []step{
			{add: "a", want: "failures=1 from=a"},
			{add: "b", want: "failures=1 from=b"},
			{add: "a"},
		}},
		{"flush logs the end of a burst once quiet for an interval", []step{
			{add: "a", want: "failures=1 from=a"},
			{add: "a"}, {add: "a"},
			{advance: 5 * time.Second, flush: true},
			{advance: 5 * time.Second, flush: true, want: "failures=2 from=a"},
			{advance: 10 * time.Second, flush: true},
			{add: "a", want: "failures=1 from=a"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := &logSink{}
			clock := &fakeClock{t: time.Unix(1e9, 0)}
			r := newTestCounter(sink, clock, 16)
			for i, s := range tc.steps {
				clock.advance(s.advance)
				from := sink.len()
				if s.flush {
					r.flush()
				} else {
					r.add(s.add, "user", "u")
				}
				got := sink.since(from)
				switch {
				case s.want == "" && got != "":
					t.Fatalf("step %d: logged %q, want nothing", i, got)
				case s.want != "" && !strings.Contains(got, s.want):
					t.Fatalf("step %d: logged %q, want %q", i, got, s.want)
				case strings.Count(got, "\n") > 1:
					t.Fatalf("step %d: %d lines", i, strings.Count(got, "\n"))
				}
			}
		})
	}
}

// TestRateLimitedCounterBounded: an attacker with many addresses cannot
// grow the table without bound, and lines stay bounded: the events of
// addresses beyond it are counted together.
func TestRateLimitedCounterBounded(t *testing.T) {
	sink := &logSink{}
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	r := newTestCounter(sink, clock, 8)
	for i := 0; i < 10000; i++ {
		r.add(fmt.Sprintf("10.0.%d.%d", i/256, i%256))
		if i%1000 == 999 {
			clock.advance(time.Second)
		}
	}
	if n := r.len(); n > 9 {
		t.Fatalf("%d keys remembered, want at most 9", n)
	}
	lines := sink.countLines("auth failed")
	// 8 addresses, the overflow key once per interval, and once a sweep
	// ran, 8 more addresses.
	if lines > 8+2+8 {
		t.Fatalf("%d lines for 10000 events in 10 s", lines)
	}
	if !strings.Contains(sink.since(0), `from="(other addresses)"`) {
		t.Fatalf("no line for the other addresses:\n%s", sink.since(0))
	}
	// Once every key is quiet, a flush logs what is left, and the next
	// one, an interval later, empties the table.
	clock.advance(10 * reportInterval)
	r.flush()
	clock.advance(reportInterval)
	r.flush()
	if n := r.len(); n != 0 {
		t.Fatalf("%d keys remembered after two quiet flushes", n)
	}
}

func TestClientText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"alice", "alice"},
		{"", ""},
		{"with space", "with space"},
		{"new\nline", `new\nline`},
		{"\x1b[31mred", `\x1b[31mred`},
		{"quote\"back\\slash", `quote\"back\\slash`},
		{"bad \xff utf8", `bad \xff utf8`},
		{"grüße", "grüße"},
		{strings.Repeat("a", 100), strings.Repeat("a", 64)},
		// Cut at a character boundary, never inside one.
		{strings.Repeat("a", 63) + "ü" + "tail", strings.Repeat("a", 63)},
		{strings.Repeat("\n", 100), strings.Repeat(`\n`, 64)},
	} {
		got := clientText(tc.in)
		if got != tc.want {
			t.Errorf("clientText(%.20q…) = %q, want %q", tc.in, got, tc.want)
		}
		if !utf8.ValidString(got) {
			t.Errorf("clientText(%.20q…) = %q: not valid UTF-8", tc.in, got)
		}
	}
}

// TestClientTextPlain: the fast path for text that needs no escaping
// gives what strconv.QuoteToGraphic would, for every byte and at the
// length limit.
func TestClientTextPlain(t *testing.T) {
	quoted := func(s string) string { q := strconv.QuoteToGraphic(s); return q[1 : len(q)-1] }
	for c := range 256 {
		s := "id" + string([]byte{byte(c)})
		if got, want := clientText(s), quoted(s); got != want {
			t.Errorf("clientText(%q) = %q, want %q", s, got, want)
		}
	}
	for _, n := range []int{maxLoggedBytes - 1, maxLoggedBytes, maxLoggedBytes + 1} {
		s := strings.Repeat("x", n)
		if got, want := clientText(s), s[:min(n, maxLoggedBytes)]; got != want {
			t.Errorf("clientText of %d bytes = %d bytes, want %d", n, len(got), len(want))
		}
	}
}
