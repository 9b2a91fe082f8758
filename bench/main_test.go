package main

import (
	"context"
	"io"
	"math"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pimqtt/pimqtt/mqtttest"
)

// TestBenchSmoke runs the whole benchmark once with tiny sizes against a
// pimqtt built from this tree and Debian's mosquitto: every row must be
// there with plausible figures for both brokers. It checks that the
// command works, not how fast anything is (CI machines vary).
func TestBenchSmoke(t *testing.T) {
	mqtttest.RequireTool(t, "mosquitto", "mosquitto")
	mqtttest.RequireTool(t, "python3", "python3-paho-mqtt")
	// The pimqtt of this tree, as a user builds it.
	bin := filepath.Join(t.TempDir(), "pimqtt")
	build := exec.Command(mqtttest.RequireTool(t, "go", "golang-go"), "build", "-o", bin, ".")
	build.Dir = ".." // the repository root: package main of pimqtt
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build pimqtt: %v\n%s", err, out)
	}
	cfg, err := parseFlags([]string{"-pimqtt", bin, "-reps", "1", "-messages", "2000", "-fanout", "5",
		"-rounds", "50", "-clients", "60", "-few-clients", "20", "-connect-workers", "4",
		"-line-rounds", "20", "-python-rounds", "3", "-seed-script", "../testdata/seed/led_device.py",
		"-idle", "1s", "-timeout", "40s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, progress strings.Builder
	tab, err := run(ctx, cfg, &out, &progress)
	t.Log("\n" + progress.String() + "\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range tab.rows {
		if !strings.Contains(out.String(), "| "+r.label+" |") {
			t.Errorf("row %s missing from the table", r.key)
		}
		for _, b := range brokers {
			m := r.median(b)
			if m.n != 1 {
				t.Errorf("%s, %s: %d samples, want 1", r.key, b, m.n)
				continue
			}
			for i, v := range m.vals {
				// A per-client figure may be 0: resident memory grows by
				// whole pages, and mosquitto needs < 1 KiB a client.
				min := 0.0
				if r.kind == memoryPer && i == 1 || r.kind == connects && i == 1 {
					min = -1 // RSS may even shrink; CPU has a 10 ms tick
				}
				if math.IsNaN(v) || math.IsInf(v, 0) || v <= min {
					t.Errorf("%s, %s: figure %d is %v", r.key, b, i, v)
				}
			}
			if r.kind == percentiles && m.vals[1] < m.vals[0] {
				t.Errorf("%s, %s: p99 %v below p50 %v", r.key, b, m.vals[1], m.vals[0])
			}
			if r.kind == rate && (math.IsNaN(m.lost) || m.lost < 0) {
				t.Errorf("%s, %s: lost %v", r.key, b, m.lost)
			}
		}
	}
}

func TestStats(t *testing.T) {
	ms := func(xs ...int) []time.Duration {
		d := make([]time.Duration, len(xs))
		for i, x := range xs {
			d[i] = time.Duration(x) * time.Millisecond
		}
		return d
	}
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"median odd", median([]float64{3, 1, 2}), 2.0},
		{"median even", median([]float64{4, 1, 3, 2}), 2.5},
		{"median none", math.IsNaN(median(nil)), true},
		{"p50 of 4", percentile(ms(1, 2, 3, 4), 50), 2 * time.Millisecond},
		{"p99 of 4", percentile(ms(1, 2, 3, 4), 99), 4 * time.Millisecond},
		{"p99 of 200", percentile(ms(make([]int, 198)...), 99), time.Duration(0)},
		{"p100", percentile(ms(1, 2, 3), 100), 3 * time.Millisecond},
		{"group", group("1234567"), "1,234,567"},
		{"group short", group("123"), "123"},
		{"group negative", group("-1234"), "-1,234"},
		{"number big", number(106143.4), "106,143"},
		{"number mid", number(54.25), "54.2"},
		{"number small", number(0.766), "0.77"},
		{"number NaN", number(math.NaN()), "–"},
		{"count", count(112247), "112,247"},
		{"ratio", ratio(73224, 106143), "0.69×"},
		{"ratio big", ratio(41, 1), "41×"},
		{"ratio by zero", ratio(1, 0), "–"},
		{"cpu percent", cpuPercent(time.Second, 2*time.Second), 50.0},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}

func TestCells(t *testing.T) {
	for _, tc := range []struct {
		name      string
		k         kind
		m, p      []float64
		lost      float64
		cell, rat string
	}{
		{"rate", rate, []float64{106143}, []float64{73224}, 112247, "73,224 (112,247 lost)", "0.69×"},
		{"percentiles", percentiles, []float64{54, 230}, []float64{119, 333}, math.NaN(), "119 / 333", "2.20× / 1.45×"},
		{"connects", connects, []float64{4807, 153}, []float64{5413, 202}, math.NaN(), "5,413 (202 µs)", "1.13× (CPU 1.32×)"},
		{"memory per client", memoryPer, []float64{11, 0.77}, []float64{26.7, 31.8}, math.NaN(), "26.7 (31.8 KiB)", "2.43× (41×)"},
		{"failed", memory, []float64{10}, nil, math.NaN(), "failed", "–"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.k.cell(tc.p, tc.lost); got != tc.cell {
				t.Errorf("cell %q, want %q", got, tc.cell)
			}
			if got := tc.k.ratio(tc.p, tc.m); got != tc.rat {
				t.Errorf("ratio %q, want %q", got, tc.rat)
			}
		})
	}
}

func TestFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		err  string // part of the error; "" for none
	}{
		{"defaults", nil, ""},
		{"no repetitions", []string{"-reps", "0"}, "-reps 0"},
		{"few above many", []string{"-clients", "100", "-few-clients", "100"}, "-few-clients 100"},
		{"idle beyond timeout", []string{"-idle", "1m", "-timeout", "30s"}, "-idle"},
		{"bad regexp", []string{"-run", "("}, "-run"},
		{"stray argument", []string{"now"}, "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseFlags(tc.args, io.Discard)
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("error %v, want one about %q", err, tc.err)
			}
		})
	}
}

func TestBitsetCountBelow(t *testing.T) {
	b := make(bitset, 3)
	for _, i := range []int{0, 5, 63, 64, 130} {
		b.set(i)
	}
	for _, tc := range []struct{ n, want int }{{0, 0}, {1, 1}, {6, 2}, {64, 3}, {65, 4}, {130, 4}, {131, 5}, {192, 5}, {1000, 5}} {
		if got := b.countBelow(tc.n); got != int64(tc.want) {
			t.Errorf("countBelow(%d) = %d, want %d", tc.n, got, tc.want)
		}
	}
}
