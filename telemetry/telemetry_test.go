package telemetry

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The fake procfs and sysfs trees under testdata are copies of real machines' files, cut down:
// pi4 a Raspberry Pi 4, pc a laptop with several thermal zones, soc a board without a CPU
// zone, oldvm a VM on a kernel before MemAvailable with garbage where numbers belong.
func TestReadFS(t *testing.T) {
	for _, tc := range []struct {
		tree string
		want string
	}{
		{"pi4", `{"cpu_temp_c":48.686,"uptime_s":351234,"load_1m":0.52,"load_5m":0.58,"load_15m":0.59,"mem_used_percent":24.9,"mem_available_bytes":2986471424,"time":""}`},
		// The CPU package zone wins over lower-numbered ones; the unreadable zone is skipped;
		// loads of 0 stay.
		{"pc", `{"cpu_temp_c":55,"uptime_s":12,"load_1m":0,"load_5m":0,"load_15m":0,"mem_used_percent":75,"mem_available_bytes":4096000000,"time":""}`},
		// No CPU zone: the lowest-numbered plausible one (zones are numbered: zone10 is not
		// before zone3); -274 °C is no temperature.
		{"soc", `{"cpu_temp_c":31,"time":""}`},
		// Nothing readable: every field absent, none 0.
		{"oldvm", `{"time":""}`},
		{"missing", `{"time":""}`},
	} {
		t.Run(tc.tree, func(t *testing.T) {
			root := filepath.Join("testdata", tc.tree)
			var s Snapshot
			readFS(filepath.Join(root, "proc"), filepath.Join(root, "sys"), &s)
			got, err := json.Marshal(s)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

// This machine, read for real: on the test machines (Linux) uptime, load and memory are always
// there, and the keys are the documented ones.
func TestReadThisMachine(t *testing.T) {
	s := Read(t.TempDir())
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{"cpu_temp_c": true, "uptime_s": true, "load_1m": true, "load_5m": true, "load_15m": true,
		"mem_used_percent": true, "mem_available_bytes": true, "disk_free_bytes": true, "time": true}
	for k := range m {
		if !known[k] {
			t.Errorf("undocumented key %q in %s", k, b)
		}
	}
	want := []string{"time", "disk_free_bytes", "uptime_s"}
	if runtime.GOOS == "linux" {
		want = append(want, "load_1m", "load_5m", "load_15m", "mem_used_percent", "mem_available_bytes")
	}
	for _, k := range want {
		if _, ok := m[k]; !ok {
			t.Errorf("%s missing from %s", k, b)
		}
	}
	if _, err := time.Parse(time.RFC3339, s.Time); err != nil {
		t.Errorf("time %q is not RFC 3339: %v", s.Time, err)
	}
}

// A data directory that does not exist yet reports its nearest existing parent's file system;
// other errors leave the field out.
func TestDiskFree(t *testing.T) {
	dir := t.TempDir()
	sep := string(filepath.Separator)
	statfs := func(existing ...string) func(string) (uint64, error) {
		return func(p string) (uint64, error) {
			for _, e := range existing {
				if p == e {
					return uint64(len(p)), nil
				}
			}
			return 0, &fs.PathError{Op: "statfs", Path: p, Err: syscall.ENOENT}
		}
	}
	for _, tc := range []struct {
		name   string
		dir    string
		statfs func(string) (uint64, error)
		want   uint64
		ok     bool
	}{
		{"exists", dir, statfs(dir), uint64(len(dir)), true},
		{"made later", filepath.Join(dir, "a", "b"), statfs(dir), uint64(len(dir)), true},
		{"nothing exists", filepath.Join(dir, "a"), statfs(), 0, false},
		{"other error", dir, func(string) (uint64, error) { return 0, errors.New("EIO") }, 0, false},
		{"root", sep, statfs(sep), 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := diskFree(tc.dir, tc.statfs)
			if got != tc.want || ok != tc.ok {
				t.Errorf("diskFree(%q) = %d, %v; want %d, %v", tc.dir, got, ok, tc.want, tc.ok)
			}
		})
	}

	// And for real: a directory not made yet has its parent's free space.
	free, ok := diskFree(filepath.Join(dir, "not", "yet"), statfsFree)
	if !ok || free == 0 {
		t.Fatalf("free space below a missing directory: %d, %v", free, ok)
	}
	if _, err := os.Stat(filepath.Join(dir, "not")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("reading free space made the directory: %v", err)
	}
}

// macOS's vm.loadavg as the kernel hands it over (fscale 2048).
func TestParseSysctlLoadavg(t *testing.T) {
	le := func(vals ...uint64) []byte {
		var b []byte
		for i, v := range vals {
			if i < 3 {
				b = append(b, byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
				continue
			}
			b = append(b, 0, 0, 0, 0) // padding before the long
			for j := range 8 {
				b = append(b, byte(v>>(8*j)))
			}
		}
		return b
	}
	for _, tc := range []struct {
		name string
		raw  []byte
		want [3]float64
		ok   bool
	}{
		{"busy", le(3072, 2048, 1229, 2048), [3]float64{1.5, 1, 0.6}, true},
		{"idle", le(0, 0, 0, 2048), [3]float64{}, true},
		{"no scale", le(3072, 2048, 1229, 0), [3]float64{}, false},
		{"short", le(3072, 2048, 1229, 2048)[:23], [3]float64{}, false},
		{"empty", nil, [3]float64{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := parseSysctlLoadavg(tc.raw)
			if ok != tc.ok || (ok && got != tc.want) {
				t.Errorf("got %v, %v; want %v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// The JSON keys end in the units the control page formats by (_c, _s, _bytes, _percent), and
// absent values are left out rather than sent as 0 or null.
func TestSnapshotJSON(t *testing.T) {
	b, err := json.Marshal(Snapshot{Time: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"time":"t"}` {
		t.Errorf("empty snapshot = %s", b)
	}
	zero, none := 0.0, uint64(0)
	b, _ = json.Marshal(Snapshot{Load1m: &zero, DiskFreeBytes: &none})
	if !strings.Contains(string(b), `"load_1m":0`) || !strings.Contains(string(b), `"disk_free_bytes":0`) {
		t.Errorf("a measured 0 must be kept: %s", b)
	}
}
