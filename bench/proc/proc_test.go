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

// TestCPUTimeAgrees: the threads' schedstat sum and /proc/PID/stat's
// ticks tell the same CPU time, within the ticks' resolution.
func TestCPUTimeAgrees(t *testing.T) {
	deadline := time.Now().Add(200 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ { // burn some CPU
	}
	precise, err := CPUTime(0)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	ticks, err := parseStat(string(data))
	if err != nil {
		t.Fatal(err)
	}
	if diff := precise - ticks; diff < -3*clockTick || diff > 3*clockTick {
		t.Errorf("schedstat sum %v, stat ticks %v: more than 3 ticks apart", precise, ticks)
	}
}
