//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pimqtt/pimqtt/broker"
	"github.com/pimqtt/pimqtt/mqtttest"
)

// restoreChildEnv, when set, holds the pimqtt arguments (one per line)
// TestVMRestoreChild runs: the VM has no Go toolchain to build the binary,
// so the test binary re-executes itself as the program (the same run() as
// main).
const restoreChildEnv = "PIMQTT_VM_RESTORE_CHILD_ARGS"

// TestVMRestoreChild is not a test: it is the pimqtt process of
// TestVMRestoreAcrossRestart, and returns at once in any other run.
func TestVMRestoreChild(t *testing.T) {
	args, ok := os.LookupEnv(restoreChildEnv)
	if !ok {
		return
	}
	os.Exit(run(strings.Split(args, "\n"), os.Stdin, os.Stdout, os.Stderr))
}

// restoreLine is one output of TestVMRestoreAcrossRestart and the
// physical levels its sim line may take, in order, while sampled.
type restoreLine struct {
	name, flag string
	off        int   // offset on the sim chip
	levels     []int // the physical levels seen, in order (consecutive repeats collapsed)
}

// TestVMRestoreAcrossRestart: an output with initial=restore that is on
// stays on through a restart of the service. The real program runs as a
// process on the gpio-sim chip, is stopped with SIGTERM and started again
// on the same data directory, while a goroutine samples every line's
// physical level in sysfs; the restore outputs must never change level.
//
// gpio-sim sets a released line to its pull (gpio_sim_free), where a
// Raspberry Pi kernel keeps a released output driven at its level
// (pinctrl_bcm2835/pinctrl_rp1 persist_gpio_outputs, the Raspberry Pi OS
// default). The test models that Pi pin by setting each restore line's
// pull to the level it is driven to before the stop: gpio-sim does not
// move a driven output when its pull changes, so the pull only decides
// the gap between release and the next request. What the program does to
// the line (driving it at stop, requesting it at another level at start)
// still shows in the samples.
func TestVMRestoreAcrossRestart(t *testing.T) {
	sysfs := simChip(t)
	lines := []*restoreLine{
		// Active-low: on is physical 0, so driving it to 0 (off) at stop would show as a 1.
		{name: "relay", flag: "relay=GPIO22,active-low,initial=restore", off: 22, levels: []int{0}},
		{name: "fan", flag: "fan=GPIO23,initial=restore", off: 23, levels: []int{1}},
		// Today's behaviour for the other initial= values: off goes to 0 at stop and stays
		// there; on goes to 0 at stop (its pull-down in the gap) and to 1 at start.
		{name: "led", flag: "led=GPIO24", off: 24, levels: []int{1, 0}},
		{name: "lamp", flag: "lamp=GPIO25,initial=on", off: 25, levels: []int{1, 0, 1}},
	}
	for _, l := range lines {
		simPull(t, sysfs, l.off, false)
	}
	t.Cleanup(func() {
		for _, l := range lines {
			simPull(t, sysfs, l.off, false)
		}
	})
	dataDir := t.TempDir()
	args := []string{"--listen", "127.0.0.1:0", "--ws-listen", "", "--http-listen", "", "--data-dir", dataDir}
	for _, l := range lines {
		args = append(args, "--output", l.flag)
	}

	first := startRestoreChild(t, args)
	url := "tcp://" + first.listenAddr(t, broker.TCP)
	waitLog(t, first.logs, "device ready")
	sub := newSubscriber(t, url, "", "", "raspberry/+/state")
	for _, c := range []struct{ name, cmd string }{{"relay", "ON"}, {"fan", "1"}, {"led", "1"}} {
		publish(t, url, "", "", "raspberry/"+c.name, []byte(c.cmd))
		sub.waitFor(t, "raspberry/"+c.name+"/state", "1")
	}
	for _, l := range lines {
		if v := simLevel(t, sysfs, l.off); v != l.levels[0] {
			t.Fatalf("%s: GPIO%d level %d before the restart, want %d", l.name, l.off, v, l.levels[0])
		}
	}
	// The Pi model (see above): a released restore line keeps its level.
	for _, l := range lines[:2] {
		simPull(t, sysfs, l.off, l.levels[0] == 1)
		if v := simLevel(t, sysfs, l.off); v != l.levels[0] {
			t.Fatalf("%s: setting GPIO%d's pull moved the driven line to %d", l.name, l.off, v)
		}
	}

	s := startSampler(t, sysfs, lines)
	s.waitSamples(t, 100)
	s.phase.Store(phaseStopping)
	if err := first.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := first.wait(t); code != 0 {
		t.Fatalf("first pimqtt exited %d after SIGTERM, want 0", code)
	}
	s.phase.Store(phaseStopped)
	assertStateFile(t, filepath.Join(dataDir, "state.json"), map[string]int{"relay": 1, "fan": 1})
	s.waitSamples(t, s.samples.Load()+50) // the gap: no process holds the lines

	s.phase.Store(phaseStarting)
	second := startRestoreChild(t, args)
	url = "tcp://" + second.listenAddr(t, broker.TCP)
	waitLog(t, second.logs, "device ready")
	s.phase.Store(phaseRunning)
	s.waitSamples(t, s.samples.Load()+100)
	counts := s.stop()

	t.Logf("%d samples of %d lines: %d before the stop, %d while stopping, %d stopped, %d starting, %d running again; at most %v between two during the restart",
		counts.total(), len(lines), counts[phaseBefore], counts[phaseStopping], counts[phaseStopped], counts[phaseStarting], counts[phaseRunning], s.maxGap)
	for _, l := range lines {
		got := s.seen[l.off]
		t.Logf("%s (GPIO%d): physical levels seen %s", l.name, l.off, got)
		if want := fmt.Sprint(l.levels); got.String() != want {
			t.Errorf("%s: GPIO%d went through physical levels %s during the restart, want %s", l.name, l.off, got, want)
		}
	}

	// The device agrees: the restored outputs are on.
	check := newSubscriber(t, url, "", "", "raspberry/relay/state", "raspberry/fan/state")
	check.waitFor(t, "raspberry/relay/state", "1")
	check.waitFor(t, "raspberry/fan/state", "1")
	if err := second.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := second.wait(t); code != 0 {
		t.Fatalf("second pimqtt exited %d after SIGTERM, want 0", code)
	}
}

// startRestoreChild starts this test binary as pimqtt with args.
func startRestoreChild(t *testing.T, args []string) *process {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestVMRestoreChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), restoreChildEnv+"="+strings.Join(args, "\n"))
	p := &process{cmd: cmd, logs: &mqtttest.SyncBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start pimqtt: %v", err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		err := <-p.done
		p.done <- err
		if t.Failed() {
			t.Logf("pimqtt %v log:\n%s", args, p.logs)
		}
	})
	return p
}

// assertStateFile checks that the state file remembers want.
func assertStateFile(t *testing.T, path string, want map[string]int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct{ Outputs map[string]int }
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	for name, v := range want {
		if got, ok := doc.Outputs[name]; !ok || got != v {
			t.Fatalf("%s remembers %s=%d (present %v), want %d: %s", path, name, got, ok, v, b)
		}
	}
}

// Phases of the restart, to count the samples taken in each.
const (
	phaseBefore   = iota // the first process runs
	phaseStopping        // SIGTERM sent, not exited yet
	phaseStopped         // exited; no process holds the lines
	phaseStarting        // the second process starts, not ready yet
	phaseRunning         // the second process is ready
	phases
)

type phaseCounts [phases]int64

func (c phaseCounts) total() (n int64) {
	for _, v := range c {
		n += v
	}
	return n
}

// levels is a sequence of levels with consecutive repeats collapsed.
type levels []int

func (l levels) String() string { return fmt.Sprint([]int(l)) }

// sampler reads the lines' physical levels from sysfs in a loop.
type sampler struct {
	phase   atomic.Int32
	samples atomic.Int64 // rounds completed (every line read once)
	quit    chan struct{}
	once    sync.Once // closes quit
	done    chan struct{}
	err     error // the first read error; the loop stops on it

	counts phaseCounts
	seen   map[int]levels // by offset
	// maxGap is the longest time between two rounds during the restart: a
	// change shorter than that may be missed.
	maxGap time.Duration
}

// sampleLimit bounds the sampling loop in time, whatever happens to the test.
const sampleLimit = 5 * time.Minute

func startSampler(t *testing.T, sysfs string, lines []*restoreLine) *sampler {
	s := &sampler{quit: make(chan struct{}), done: make(chan struct{}), seen: map[int]levels{}}
	files := make([]*os.File, len(lines))
	for i, l := range lines {
		f, err := os.Open(filepath.Join(sysfs, fmt.Sprintf("sim_gpio%d", l.off), "value"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		files[i] = f
	}
	go func() {
		defer close(s.done)
		// A read at offset 0 of a sysfs attribute asks the driver again, so
		// each file is opened once: a round is len(lines) preads.
		buf := make([]byte, 8)
		limit := time.Now().Add(sampleLimit)
		last := time.Now()
		for last.Before(limit) {
			select {
			case <-s.quit:
				return
			default:
			}
			for i, f := range files {
				n, err := f.ReadAt(buf, 0)
				if err == io.EOF {
					err = nil
				}
				var v int
				if err == nil {
					v, err = strconv.Atoi(strings.TrimSpace(string(buf[:n])))
				}
				if err != nil {
					s.err = fmt.Errorf("read GPIO%d: %w", lines[i].off, err)
					return
				}
				off := lines[i].off
				if seen := s.seen[off]; len(seen) == 0 || seen[len(seen)-1] != v {
					s.seen[off] = append(seen, v)
				}
			}
			now := time.Now()
			p := s.phase.Load()
			s.counts[p]++
			if p != phaseBefore && p != phaseRunning {
				s.maxGap = max(s.maxGap, now.Sub(last))
			}
			last = now
			s.samples.Add(1)
		}
	}()
	t.Cleanup(func() { s.stop() })
	return s
}

// waitSamples waits until n sampling rounds are done.
func (s *sampler) waitSamples(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for s.samples.Load() < n {
		select {
		case <-s.done:
			t.Fatalf("sampling stopped after %d rounds: %v", s.samples.Load(), s.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d sampling rounds within %v", s.samples.Load(), n, testTimeout)
		}
		time.Sleep(time.Millisecond) // polling interval, not synchronisation
	}
}

// stop ends the sampling and returns the rounds per phase; seen is then
// safe to read.
func (s *sampler) stop() phaseCounts {
	s.once.Do(func() { close(s.quit) })
	<-s.done
	return s.counts
}
