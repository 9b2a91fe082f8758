package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestSoakShort is the soak's short version that runs with the other
// tests (and in .ci/run through them): 40 clients, fan-in and fan-out at
// QoS 1 for 3 s against a broker in this process. Nothing acknowledged
// may be lost, and the broker drops nothing.
func TestSoakShort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out strings.Builder
	rep, err := run(ctx, config{clients: 40, duration: 3 * time.Second, rate: 20, qos: 1, payload: 64,
		sample: 250 * time.Millisecond, drain: 30 * time.Second}, &out)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if !rep.ok() || rep.res.Acked == 0 {
		t.Errorf("soak failed: %s", rep.res)
	}
	if rep.drops == nil || rep.drops.QueueFull != 0 || rep.drops.SessionFull != 0 || rep.drops.SlowClients != 0 {
		t.Errorf("broker drops %+v, want none", rep.drops)
	}
	if len(rep.rss.samples) < 3 || len(rep.goroutines.samples) < 3 {
		t.Errorf("too few samples: %d of memory, %d of goroutines", len(rep.rss.samples), len(rep.goroutines.samples))
	}
}

// TestLeastSquares checks the slope the soak reports.
func TestLeastSquares(t *testing.T) {
	for _, tc := range []struct {
		name    string
		samples []sample
		want    float64
		ok      bool
	}{
		{"flat", []sample{{0, 5}, {time.Second, 5}, {2 * time.Second, 5}}, 0, true},
		{"rising 2/s", []sample{{0, 1}, {time.Second, 3}, {2 * time.Second, 5}}, 2, true},
		{"noisy falling", []sample{{0, 10}, {time.Second, 9}, {2 * time.Second, 7}, {3 * time.Second, 7}}, -1.1, true},
		{"too few", []sample{{0, 1}, {time.Second, 2}}, 0, false},
		{"one instant", []sample{{0, 1}, {0, 2}, {0, 3}}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := leastSquares(tc.samples)
			if ok != tc.ok || (ok && (got < tc.want-1e-9 || got > tc.want+1e-9)) {
				t.Errorf("leastSquares = %v, %v; want %v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}
