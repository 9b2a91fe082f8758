// Package telemetry owns reading the machine's health: CPU temperature, uptime, load, memory
// and the free space of pimqtt's data directory. It speaks no MQTT: the device publishes what
// it reads (adding the broker's client count as "clients", which only MQTT can tell).
//
// A value this machine cannot give is left out of the Snapshot (and so of its JSON), never
// reported as 0: a Pi without a readable thermal zone has no cpu_temp_c, a Mac no memory
// figures. On Linux everything comes from procfs and sysfs; on macOS uptime and load come from
// sysctl; on Windows uptime comes from the tick count. Free disk space is read everywhere.
package telemetry

import (
	"bufio"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Snapshot is one reading. Its JSON keys end in the unit of their value (_c degrees Celsius,
// _s seconds, _bytes bytes, _percent percent), which pimqtt's control page uses to format
// them; a nil field is omitted.
type Snapshot struct {
	// CPUTempC is the CPU's temperature in °C, from the first CPU thermal zone of
	// /sys/class/thermal (Linux only).
	CPUTempC *float64 `json:"cpu_temp_c,omitempty"`
	// UptimeS is the time since the machine booted, in whole seconds.
	UptimeS *int64 `json:"uptime_s,omitempty"`
	// Load1m, Load5m and Load15m are the load averages over 1, 5 and 15 minutes.
	Load1m  *float64 `json:"load_1m,omitempty"`
	Load5m  *float64 `json:"load_5m,omitempty"`
	Load15m *float64 `json:"load_15m,omitempty"`
	// MemUsedPercent is the share of memory not available to new programs, to 0.1 %:
	// (MemTotal - MemAvailable) / MemTotal from /proc/meminfo (Linux only).
	MemUsedPercent *float64 `json:"mem_used_percent,omitempty"`
	// MemAvailableBytes is MemAvailable from /proc/meminfo (Linux only).
	MemAvailableBytes *uint64 `json:"mem_available_bytes,omitempty"`
	// DiskFreeBytes is the space an unprivileged user may still write on the file system of
	// the data directory (of its nearest existing parent, while it does not exist yet).
	DiskFreeBytes *uint64 `json:"disk_free_bytes,omitempty"`
	// Time is when the reading was taken, RFC 3339 in UTC.
	Time string `json:"time"`
}

// Reader reads snapshots. The zero value reads this machine and leaves disk_free_bytes out.
type Reader struct {
	// DataDir is the directory whose file system's free space is reported; "" leaves it out.
	DataDir string
	// Proc and Sys are where procfs and sysfs are mounted, "/proc" and "/sys" by default.
	// Only Linux reads them; tests point them at a fake tree.
	Proc, Sys string
	// Now gives the reading's time, default time.Now.
	Now func() time.Time
}

// Read takes one snapshot of this machine, with the free space of dataDir's file system.
func Read(dataDir string) Snapshot {
	return Reader{DataDir: dataDir}.Read()
}

// Read takes one snapshot. It never fails: what cannot be read is left out.
func (r Reader) Read() Snapshot {
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	s := Snapshot{Time: now().UTC().Format(time.RFC3339)}
	r.readPlatform(&s)
	if r.DataDir != "" {
		if free, ok := diskFree(r.DataDir, statfsFree); ok {
			s.DiskFreeBytes = &free
		}
	}
	return s
}

// readFS fills in what procfs and sysfs under proc and sys give.
func readFS(proc, sys string, s *Snapshot) {
	if t, ok := cpuTemp(filepath.Join(sys, "class", "thermal")); ok {
		s.CPUTempC = &t
	}
	if up, ok := uptime(filepath.Join(proc, "uptime")); ok {
		s.UptimeS = &up
	}
	if l, ok := loadavg(filepath.Join(proc, "loadavg")); ok {
		s.Load1m, s.Load5m, s.Load15m = &l[0], &l[1], &l[2]
	}
	if used, avail, ok := meminfo(filepath.Join(proc, "meminfo")); ok {
		s.MemUsedPercent, s.MemAvailableBytes = &used, &avail
	}
}

// Plausible CPU temperatures, in °C. Zones that cannot measure report values far outside
// (-274 °C, or a raw sensor code), which must not reach a dashboard as a temperature.
const minTempC, maxTempC = -50, 150

// cpuTemp reads the temperature of the CPU's thermal zone under dir (/sys/class/thermal).
// A zone whose type names the CPU (a Pi's "cpu-thermal", Intel's "x86_pkg_temp") is preferred;
// otherwise the lowest-numbered zone with a plausible reading is taken.
func cpuTemp(dir string) (float64, bool) {
	zones, err := filepath.Glob(filepath.Join(dir, "thermal_zone*"))
	if err != nil || len(zones) == 0 {
		return 0, false
	}
	type zone struct {
		n   int
		cpu bool
		c   float64
	}
	var found []zone
	for _, z := range zones {
		n, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(z), "thermal_zone"))
		if err != nil {
			continue
		}
		// Reading a zone can fail (EIO, ENODATA) while its sensor is not ready.
		milli, err := readInt(filepath.Join(z, "temp"))
		if err != nil {
			continue
		}
		c := float64(milli) / 1000
		if c < minTempC || c > maxTempC {
			continue
		}
		typ, _ := os.ReadFile(filepath.Join(z, "type"))
		t := strings.ToLower(string(typ))
		found = append(found, zone{n: n, c: c, cpu: strings.Contains(t, "cpu") || strings.Contains(t, "x86_pkg_temp") || strings.Contains(t, "soc")})
	}
	if len(found) == 0 {
		return 0, false
	}
	sort.Slice(found, func(i, j int) bool {
		if found[i].cpu != found[j].cpu {
			return found[i].cpu
		}
		return found[i].n < found[j].n
	})
	return found[0].c, true
}

// uptime reads /proc/uptime: seconds since boot, then idle seconds.
func uptime(path string) (int64, bool) {
	f, err := firstFields(path, 1)
	if err != nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, false
	}
	return int64(v), true
}

// loadavg reads the three load averages from /proc/loadavg.
func loadavg(path string) ([3]float64, bool) {
	var l [3]float64
	f, err := firstFields(path, 3)
	if err != nil {
		return l, false
	}
	for i := range l {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
			return l, false
		}
		l[i] = v
	}
	return l, true
}

// meminfo reads MemTotal and MemAvailable (kB) from /proc/meminfo. Kernels before 3.14 have
// no MemAvailable, and then memory is left out rather than guessed.
func meminfo(path string) (usedPercent float64, availBytes uint64, ok bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	var total, avail uint64
	var haveTotal, haveAvail bool
	sc := bufio.NewScanner(f)
	for sc.Scan() && !(haveTotal && haveAvail) {
		key, rest, found := strings.Cut(sc.Text(), ":")
		if !found {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 || (len(fields) == 2 && fields[1] != "kB") {
			continue
		}
		v, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			continue
		}
		switch key {
		case "MemTotal":
			total, haveTotal = v, true
		case "MemAvailable":
			avail, haveAvail = v, true
		}
	}
	if !haveTotal || !haveAvail || total == 0 || avail > total {
		return 0, 0, false
	}
	used := float64(total-avail) / float64(total) * 100
	return math.Round(used*10) / 10, avail * 1024, true
}

// diskFree is the free space of dir's file system, or of its nearest existing parent while
// dir does not exist yet (a data directory is made on first write). statfs is the platform's
// reading of one existing path.
func diskFree(dir string, statfs func(string) (uint64, error)) (uint64, bool) {
	p, err := filepath.Abs(dir)
	if err != nil {
		return 0, false
	}
	for {
		free, err := statfs(p)
		if err == nil {
			return free, true
		}
		parent := filepath.Dir(p)
		if !errors.Is(err, fs.ErrNotExist) || parent == p {
			return 0, false
		}
		p = parent
	}
}

// readInt reads a file holding one integer, as sysfs attributes do.
func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// firstFields returns the first n whitespace-separated fields of a small file.
func firstFields(path string, n int) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f := strings.Fields(string(b))
	if len(f) < n {
		return nil, errors.New(path + ": too few fields")
	}
	return f, nil
}
