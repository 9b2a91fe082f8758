// Package mqtttest provides helpers for tests that need real MQTT peers, in
// the way net/http/httptest does for HTTP: it owns finding the external
// tools the tests run (and failing, never skipping, when one is missing),
// waiting for a port to accept connections, collecting a child process's
// output, running the real mosquitto broker for the length of a test, and
// a relay that stands in for a broker that is not up yet.
//
// It is a normal package so that the tests of several packages can share
// it, but only tests should import it: every helper takes a testing.TB and
// fails the test on error.
package mqtttest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// WaitTimeout bounds WaitListening and the start of StartMosquitto.
// Generous, because -race slows everything down.
const WaitTimeout = 20 * time.Second

// RequireTool returns the path of the program name, or fails the test
// naming the Debian package that provides it. It never skips: a test that
// skipped on a machine lacking the tool could let a regression through.
//
// "python3" resolves to /usr/bin/python3, Debian's interpreter, the one
// python3-paho-mqtt is installed for, whatever else comes first in PATH.
// A program not in PATH is also looked for in /usr/sbin and /sbin, where
// Debian installs daemons such as mosquitto: a normal user's PATH lacks them.
func RequireTool(t testing.TB, name, debianPackage string) string {
	t.Helper()
	if name == "python3" {
		name = "/usr/bin/python3"
	}
	p, err := exec.LookPath(name)
	if err != nil && !strings.Contains(name, "/") {
		for _, dir := range []string{"/usr/sbin", "/sbin"} {
			if sp, serr := exec.LookPath(filepath.Join(dir, name)); serr == nil {
				return sp
			}
		}
	}
	if err != nil {
		t.Fatalf("%s not found (%v): install the Debian package %s (apt-get install %s; .ci/test does)",
			name, err, debianPackage, debianPackage)
	}
	return p
}

// SyncBuffer is a bytes.Buffer that one goroutine (a child process's
// output, a logger) may write while another reads it. The zero value is an
// empty buffer ready to use.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p to the buffer. It is safe for concurrent use.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns a copy of what has been written so far. It is safe for
// concurrent use.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// WaitListening dials the TCP address addr until it accepts a connection,
// and fails the test if it has not within WaitTimeout. It polls: a dial
// loop is the only portable readiness signal a separate process gives, so
// use it for those, never to order events within the test's own process.
func WaitListening(t testing.TB, addr string) {
	t.Helper()
	if err := WaitServing(addr, nil); err != nil {
		t.Fatalf("%v", err)
	}
}

// WaitServing is WaitListening for a server that can also report that it
// failed: it returns nil once addr accepts a connection, the error failed
// returns as soon as that is not nil (failed may be nil), or an error
// after WaitTimeout.
func WaitServing(addr string, failed func() error) error {
	deadline := time.Now().Add(WaitTimeout)
	for {
		if failed != nil {
			if err := failed(); err != nil {
				return err
			}
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listening on %s after %v: %w", addr, WaitTimeout, err)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
}

// ErrPortTaken is what a start function given to WithPickedPorts returns,
// wrapped, when its server could not bind a port it was given.
var ErrPortTaken = errors.New("port taken by another process")

// portAttempts bounds how many times WithPickedPorts picks new ports.
const portAttempts = 5

// WithPickedPorts is for servers that must be told their port numbers
// rather than binding 127.0.0.1:0 and saying which port they got (our own
// listeners always do the latter). It calls start with n distinct ports of
// 127.0.0.1 that were free a moment ago; another process may bind one
// before the server does, so when start returns an error wrapping
// ErrPortTaken it picks new ports and calls start again, up to portAttempts
// times. Any other error fails the test at once.
func WithPickedPorts(t testing.TB, n int, start func(ports []int) error) {
	t.Helper()
	withPorts(t, n, pickPorts, start)
}

// withPorts is WithPickedPorts with the port picker as a parameter, so a
// test can hand it a port that is taken.
func withPorts(t testing.TB, n int, pick func(testing.TB, int) []int, start func(ports []int) error) {
	t.Helper()
	var taken []string
	for attempt := 1; attempt <= portAttempts; attempt++ {
		ports := pick(t, n)
		err := start(ports)
		if err == nil {
			return
		}
		if !errors.Is(err, ErrPortTaken) {
			t.Fatalf("%v", err)
		}
		taken = append(taken, fmt.Sprintf("attempt %d, ports %v: %v", attempt, ports, err))
	}
	t.Fatalf("no server could bind freshly picked ports in %d attempts:\n%s", portAttempts, strings.Join(taken, "\n"))
}

// pickPorts returns n distinct ports of 127.0.0.1 that were free a moment
// ago. All n listeners are open at once, so the ports differ.
func pickPorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("find a free port: %v", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// MosquittoConfig says how StartMosquitto configures the broker.
type MosquittoConfig struct {
	// WebSocket adds a listener for MQTT over WebSocket on another port of
	// 127.0.0.1 (any path), beside the TCP one.
	WebSocket bool
	// Extra lines are added to the configuration after the TCP listener
	// and before the WebSocket one, e.g. "allow_anonymous true" or
	// "password_file /path". Options that are per listener in mosquitto
	// (protocol, mount_point, ...) thus apply to the TCP listener.
	Extra []string
}

// Mosquitto is a running mosquitto broker.
type Mosquitto struct {
	// Port is the MQTT over TCP port on 127.0.0.1.
	Port int
	// WebSocketPort is the MQTT over WebSocket port on 127.0.0.1, or zero.
	WebSocketPort int
}

// StartMosquitto runs the real mosquitto broker (Debian package mosquitto)
// from a configuration in t.TempDir() and returns once it has bound its
// ports. The broker is killed at cleanup, and its log printed if the test
// failed. mosquitto must be told its port numbers: they are picked, and
// picked again when another process took one first (WithPickedPorts).
//
// Besides cfg, the configuration always says "persistence false",
// "log_dest stderr" and "user root": the Debian broker started as root
// otherwise switches to user mosquitto, which cannot read 0600 files in
// the test's temporary directories (a password file, for one).
func StartMosquitto(t testing.TB, cfg MosquittoConfig) *Mosquitto {
	t.Helper()
	return startMosquitto(t, cfg, pickPorts)
}

// startMosquitto is StartMosquitto with the port picker as a parameter.
func startMosquitto(t testing.TB, cfg MosquittoConfig, pick func(testing.TB, int) []int) *Mosquitto {
	t.Helper()
	bin := RequireTool(t, "mosquitto", "mosquitto")
	dir := t.TempDir()
	n := 1
	if cfg.WebSocket {
		n = 2
	}
	var m *Mosquitto
	attempt := 0
	withPorts(t, n, pick, func(ports []int) error {
		attempt++
		m = &Mosquitto{Port: ports[0]}
		if cfg.WebSocket {
			m.WebSocketPort = ports[1]
		}
		conf := filepath.Join(dir, fmt.Sprintf("mosquitto-%d.conf", attempt))
		if err := os.WriteFile(conf, []byte(mosquittoConf(m, cfg)), 0o600); err != nil {
			return err
		}
		return runMosquitto(t, bin, conf)
	})
	return m
}

// mosquittoConf is the configuration file for a broker on m's ports.
func mosquittoConf(m *Mosquitto, cfg MosquittoConfig) string {
	lines := append([]string{
		fmt.Sprintf("listener %d 127.0.0.1", m.Port),
		"persistence false",
		"log_dest stderr",
		"user root",
	}, cfg.Extra...)
	if m.WebSocketPort != 0 {
		lines = append(lines,
			fmt.Sprintf("listener %d 127.0.0.1", m.WebSocketPort),
			"protocol websockets")
	}
	return strings.Join(lines, "\n") + "\n"
}

// runMosquitto starts mosquitto with conf and waits for its "running" log
// line, which it writes once every listener is bound. On success the
// process runs until the test's cleanup; otherwise it has exited and the
// error carries its log (wrapping ErrPortTaken when a port was taken).
func runMosquitto(t testing.TB, bin, conf string) error {
	t.Helper()
	out := &SyncBuffer{}
	written := make(chan struct{}, 1)
	w := notifyWriter{w: out, written: written}
	cmd := exec.Command(bin, "-c", conf)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start mosquitto: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	deadline := time.NewTimer(WaitTimeout)
	defer deadline.Stop()
	for {
		select {
		case <-written:
			if !mosquittoRunning(out.String()) {
				continue
			}
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				<-exited
				if t.Failed() {
					t.Logf("mosquitto log:\n%s", out)
				}
			})
			return nil
		case <-exited:
			log := out.String()
			// Its log, not its exit code, tells a port conflict from a bad
			// configuration: both exit 1.
			if strings.Contains(log, "Address already in use") || strings.Contains(log, "Unable to create websockets listener") {
				return fmt.Errorf("%w: mosquitto log:\n%s", ErrPortTaken, log)
			}
			return fmt.Errorf("mosquitto exited before it was running; its log:\n%s", log)
		case <-deadline.C:
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("mosquitto not running after %v; its log:\n%s", WaitTimeout, out)
		}
	}
}

// mosquittoRunning reports whether mosquitto's log says it has bound its
// listeners: "mosquitto version 2.0.11 running".
func mosquittoRunning(log string) bool {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "mosquitto version") && strings.HasSuffix(strings.TrimSpace(l), " running") {
			return true
		}
	}
	return false
}

// notifyWriter writes to w and then signals written without blocking, so
// a reader can wait for output instead of polling for it.
type notifyWriter struct {
	w       io.Writer
	written chan<- struct{}
}

func (n notifyWriter) Write(p []byte) (int, error) {
	k, err := n.w.Write(p)
	select {
	case n.written <- struct{}{}:
	default:
	}
	return k, err
}

// Relay is a TCP listener on a port of 127.0.0.1 that the kernel chose,
// standing in for a server that is not up yet. Until Forward is called it
// closes every connection it accepts, so a client sees the server down;
// afterwards it relays each new connection to the target. Tests use it
// where a client must be given an address before the server behind it can
// start (a device started before its broker): the client's address is
// bound from the start, and the server's own port may be picked, and
// retried, later.
type Relay struct {
	ln net.Listener
	wg sync.WaitGroup

	mu     sync.Mutex
	target string
	conns  map[net.Conn]struct{}
	closed bool
}

// NewRelay starts a Relay; it is closed, with every relayed connection, at
// the test's cleanup.
func NewRelay(t testing.TB) *Relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("relay: listen: %v", err)
	}
	r := &Relay{ln: ln, conns: make(map[net.Conn]struct{})}
	r.wg.Add(1)
	go r.serve()
	t.Cleanup(r.close)
	return r
}

// Addr returns the relay's address, 127.0.0.1:PORT.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// Forward makes the relay pass every connection it accepts from now on to
// target (host:port); connections it accepted before stay closed.
func (r *Relay) Forward(target string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.target = target
}

func (r *Relay) serve() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return // closed
		}
		r.mu.Lock()
		target, closed := r.target, r.closed
		r.mu.Unlock()
		if target == "" || closed {
			_ = c.Close()
			continue
		}
		r.wg.Add(1)
		go r.relay(c, target)
	}
}

// relay copies both ways between c and a new connection to target until
// either side ends, then closes both.
func (r *Relay) relay(c net.Conn, target string) {
	defer r.wg.Done()
	defer c.Close()
	up, err := net.DialTimeout("tcp", target, WaitTimeout)
	if err != nil {
		return
	}
	defer up.Close()
	if !r.track(c, up) {
		return
	}
	defer r.untrack(c, up)
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
	_ = c.Close()
	_ = up.Close()
	<-done
}

func (r *Relay) track(cs ...net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	for _, c := range cs {
		r.conns[c] = struct{}{}
	}
	return true
}

func (r *Relay) untrack(cs ...net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range cs {
		delete(r.conns, c)
	}
}

func (r *Relay) close() {
	r.mu.Lock()
	r.closed = true
	for c := range r.conns {
		_ = c.Close()
	}
	r.mu.Unlock()
	_ = r.ln.Close()
	r.wg.Wait()
}
