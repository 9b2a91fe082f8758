package proc

import (
	"os"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		name string
		stat string
		want time.Duration
		ok   bool
	}{
		{"plain", "1234 (mosquitto) S 1 1234 1234 0 -1 4194560 300 0 0 0 25 7 0 0 20 0 1 0 100 0 0", 320 * time.Millisecond, true},
		{"name with blanks and parens", "99 (a) b) c) R 1 99 99 0 -1 0 0 0 0 0 3 4 0 0", 70 * time.Millisecond, true},
		{"truncated", "99 (x) R 1 2 3", 0, false},
		{"no name", "99 x R", 0, false},
		{"not a number", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 a 4 0", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStat(tc.stat)
			if (err == nil) != tc.ok || got != tc.want {
				t.Errorf("parseStat = %v, %v; want %v, ok %v", got, err, tc.want, tc.ok)
			}
		})
	}
}

// TestSelf reads this process's own figures, which must exist on Linux.
func TestSelf(t *testing.T) {
	if rss, err := RSSKiB(0); err != nil || rss <= 0 {
		t.Errorf("RSSKiB(self) = %d, %v", rss, err)
	}
	if _, err := CPUTime(os.Getpid()); err != nil {
		t.Errorf("CPUTime(self): %v", err)
	}
	if cpu, err := SelfCPUTime(); err != nil || cpu <= 0 {
		t.Errorf("SelfCPUTime = %v, %v", cpu, err)
	}
}
