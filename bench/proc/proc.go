// Package proc runs a pimqtt binary as a child process for the benchmark
// commands (bench, bench/soak) and reads what Linux says about a process:
// its CPU time and resident memory from /proc.
//
// pimqtt binds 127.0.0.1:0 and says which port it got in one "listening"
// log line per listener; StartPimqtt reads them, so no port is ever
// picked in advance.
package proc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ListenTimeout bounds the wait for pimqtt's "listening" log lines.
const ListenTimeout = 30 * time.Second

// closeTimeout bounds a graceful shutdown before the process is killed.
const closeTimeout = 15 * time.Second

// maxWarnings bounds the warning and error log lines kept.
const maxWarnings = 20

// listeningLine finds a listener's kind and bound address in pimqtt's log:
// msg=listening component=broker kind=tcp addr=127.0.0.1:40217 ...
var listeningLine = regexp.MustCompile(`msg=listening .*kind=(\S+) addr=(\S+)`)

// Pimqtt is a running pimqtt process.
type Pimqtt struct {
	cmd    *exec.Cmd
	addrs  map[string]string // listener kind ("tcp", "ws", ...) → address
	exited chan struct{}     // closed once the process has exited and been waited for

	mu     sync.Mutex
	logged []string // the first warning and error log lines
}

// StartPimqtt runs the pimqtt binary path with args, which must make it log
// at info level or below (the "listening" lines are info) and should bind
// 127.0.0.1:0. It returns once a "listening" line has come for every
// listener kind in kinds ("tcp", "ws"), or an error if the process exits
// first, ListenTimeout passes or ctx ends; the process is then stopped.
func StartPimqtt(ctx context.Context, path string, args []string, kinds ...string) (*Pimqtt, error) {
	if len(kinds) == 0 {
		return nil, errors.New("proc: StartPimqtt needs at least one listener kind to wait for")
	}
	cmd := exec.Command(path, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("proc: %s: stderr pipe: %w", path, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("proc: start %s: %w (build it first: go build -o %s .)", path, err, path)
	}
	p := &Pimqtt{cmd: cmd, addrs: make(map[string]string), exited: make(chan struct{})}
	type listener struct{ kind, addr string }
	found := make(chan listener, 16)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			if m := listeningLine.FindStringSubmatch(line); m != nil {
				select {
				case found <- listener{m[1], m[2]}:
				default: // nobody waits any more
				}
			}
			if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
				p.mu.Lock()
				if len(p.logged) < maxWarnings {
					p.logged = append(p.logged, line)
				}
				p.mu.Unlock()
			}
		}
		_ = cmd.Wait()
		close(p.exited)
	}()
	deadline := time.NewTimer(ListenTimeout)
	defer deadline.Stop()
	for !p.hasAll(kinds) {
		select {
		case l := <-found:
			p.addrs[l.kind] = l.addr
		case <-p.exited:
			return nil, fmt.Errorf("proc: %s exited before listening on %v; its warnings: %v", path, kinds, p.Warnings())
		case <-deadline.C:
			p.Close()
			return nil, fmt.Errorf("proc: %s: no \"listening\" log line for each of %v after %v (is --log-level info?)", path, kinds, ListenTimeout)
		case <-ctx.Done():
			p.Close()
			return nil, fmt.Errorf("proc: %s: %w", path, ctx.Err())
		}
	}
	return p, nil
}

func (p *Pimqtt) hasAll(kinds []string) bool {
	for _, k := range kinds {
		if p.addrs[k] == "" {
			return false
		}
	}
	return true
}

// Addr returns the bound address of the listener of that kind ("tcp",
// "ws"), or "" if StartPimqtt was not asked to wait for it.
func (p *Pimqtt) Addr(kind string) string { return p.addrs[kind] }

// PID returns the process id.
func (p *Pimqtt) PID() int { return p.cmd.Process.Pid }

// Args returns the command line.
func (p *Pimqtt) Args() []string { return p.cmd.Args }

// Warnings returns the first warning and error lines pimqtt logged.
func (p *Pimqtt) Warnings() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.logged...)
}

// Close stops pimqtt as systemd would, with SIGINT, and kills it if it has
// not exited within closeTimeout. It returns once the process is gone.
func (p *Pimqtt) Close() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	t := time.NewTimer(closeTimeout)
	defer t.Stop()
	select {
	case <-p.exited:
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// StatusKiB reads one "Name: N kB" line of /proc/PID/status, e.g. VmRSS.
// pid 0 means this process.
func StatusKiB(pid int, name string) (int64, error) {
	path := procPath(pid, "status")
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("proc: %w (Linux only)", err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == name+":" {
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("proc: %s: %s: %w", path, name, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("proc: %s has no %s line", path, name)
}

// RSSKiB is the resident memory of process pid (0: this one), VmRSS.
func RSSKiB(pid int) (int64, error) { return StatusKiB(pid, "VmRSS") }

// clockTick is the unit of the CPU times in /proc/PID/stat: USER_HZ,
// which is 100 on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// CPUTime is the CPU time process pid (0: this one) has used so far, user
// and system. It is the sum of its threads' run times from
// /proc/PID/task/TID/schedstat, in nanoseconds; /proc/PID/stat's utime +
// stime count in 10 ms ticks, too coarse for a scenario of a few hundred
// milliseconds (a 4 ms interval once read as 511 % of a core). The sum
// misses threads that ended before the call, which neither Go's runtime
// nor mosquitto does while serving. Without schedstat (a kernel without
// CONFIG_SCHED_INFO) it falls back to /proc/PID/stat.
func CPUTime(pid int) (time.Duration, error) {
	if d, err := schedstatTime(pid); err == nil {
		return d, nil
	}
	path := procPath(pid, "stat")
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("proc: %w (Linux only)", err)
	}
	return parseStat(string(data))
}

// schedstatTime sums the first field of every thread's schedstat: the
// time it has run on a CPU, in nanoseconds.
func schedstatTime(pid int) (time.Duration, error) {
	dir := procPath(pid, "task")
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var total time.Duration
	for _, t := range tasks {
		data, err := os.ReadFile(dir + "/" + t.Name() + "/schedstat")
		if errors.Is(err, fs.ErrNotExist) {
			continue // the thread ended meanwhile
		}
		if err != nil {
			return 0, err
		}
		f := strings.Fields(string(data))
		if len(f) == 0 {
			return 0, fmt.Errorf("proc: %s/%s/schedstat is empty", dir, t.Name())
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("proc: %s/%s/schedstat: %w", dir, t.Name(), err)
		}
		total += time.Duration(ns)
	}
	return total, nil
}

// parseStat reads utime and stime from the contents of /proc/PID/stat.
// The command name (field 2) is in parentheses and may contain blanks and
// parentheses: the fields that follow are counted from the last ')'.
func parseStat(s string) (time.Duration, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("proc: stat %q: no command name", s)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("proc: stat %q: too few fields", s)
	}
	var total int64
	for _, x := range f[11:13] {
		n, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("proc: stat utime/stime %q: %w", x, err)
		}
		total += n
	}
	return time.Duration(total) * clockTick, nil
}

func procPath(pid int, file string) string {
	if pid == 0 {
		return "/proc/self/" + file
	}
	return "/proc/" + strconv.Itoa(pid) + "/" + file
}
