// Package mqtttest provides helpers for tests that need real MQTT peers, in
// the way net/http/httptest does for HTTP: it owns finding the external
// tools the tests run (and failing, never skipping, when one is missing),
// waiting for a port to accept connections, collecting a child process's
// output, running (and stopping, or killing) the real mosquitto broker, and
// a relay that stands in for the network to a broker: down until told
// where the broker is, and able to cut or slow the link.
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
	"syscall"
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

	proc *mosquittoProcess
}

// mosquittoProcess is a mosquitto child process that is running or has
// exited.
type mosquittoProcess struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once it has exited and been waited for
}

// Stop ends the broker as `systemctl stop` does, with SIGTERM (mosquitto
// then closes every client's connection), and returns once it has exited;
// it fails the test if that takes longer than WaitTimeout. The broker is
// not restarted: start another one with StartMosquitto (mosquitto must be
// given its port, which another process may have taken meanwhile, so a
// test that restarts a broker puts a Relay in front of it and points the
// relay at the new one).
func (m *Mosquitto) Stop(t testing.TB) { m.end(t, syscall.SIGTERM) }

// Kill ends the broker with SIGKILL, as a crash or the OOM killer does,
// and returns once it has exited.
func (m *Mosquitto) Kill(t testing.TB) { m.end(t, syscall.SIGKILL) }

// resignalInterval is how long end waits for mosquitto to exit before it
// sends the signal again. mosquitto 2.0.11 logs "running" and then sets
// its run flag, so a SIGTERM that arrives in between, which a test that
// stops the broker at once can send, is lost: it would run on forever.
const resignalInterval = time.Second

func (m *Mosquitto) end(t testing.TB, sig syscall.Signal) {
	t.Helper()
	deadline := time.NewTimer(WaitTimeout)
	defer deadline.Stop()
	for {
		if err := m.proc.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
			t.Fatalf("mosquitto on port %d: signal %v: %v", m.Port, sig, err)
		}
		again := time.NewTimer(resignalInterval)
		select {
		case <-m.proc.exited:
			again.Stop()
			return
		case <-again.C:
		case <-deadline.C:
			t.Fatalf("mosquitto on port %d still running %v after %v", m.Port, WaitTimeout, sig)
		}
	}
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
		var err error
		m.proc, err = runMosquitto(t, bin, conf)
		return err
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
func runMosquitto(t testing.TB, bin, conf string) (*mosquittoProcess, error) {
	t.Helper()
	out := &SyncBuffer{}
	written := make(chan struct{}, 1)
	w := notifyWriter{w: out, written: written}
	cmd := exec.Command(bin, "-c", conf)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start mosquitto: %w", err)
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
			return &mosquittoProcess{cmd: cmd, exited: exited}, nil
		case <-exited:
			log := out.String()
			// Its log, not its exit code, tells a port conflict from a bad
			// configuration: both exit 1.
			if strings.Contains(log, "Address already in use") || strings.Contains(log, "Unable to create websockets listener") {
				return nil, fmt.Errorf("%w: mosquitto log:\n%s", ErrPortTaken, log)
			}
			return nil, fmt.Errorf("mosquitto exited before it was running; its log:\n%s", log)
		case <-deadline.C:
			_ = cmd.Process.Kill()
			<-exited
			return nil, fmt.Errorf("mosquitto not running after %v; its log:\n%s", WaitTimeout, out)
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
// standing in for the network between a client and a server. Until
// Forward is called it closes every connection it accepts, so a client
// sees the server down; afterwards it relays each new connection to the
// target. Tests use it where a client must be given an address before the
// server behind it can start (a device started before its broker), where
// the server comes back on another port (a broker restarted on ports
// picked again: Forward once more), and to play a bad network: Cut stops
// every byte without closing anything, SetDelay makes the link slow.
type Relay struct {
	ln net.Listener
	wg sync.WaitGroup

	mu       sync.Mutex
	target   string
	conns    map[net.Conn]struct{}
	accepted int
	closed   bool
	cut      bool
	delay    time.Duration
	// changed is closed, and replaced, whenever closed, cut or delay
	// change, so that held bytes move on without polling.
	changed chan struct{}
}

// NewRelay starts a Relay; it is closed, with every relayed connection, at
// the test's cleanup.
func NewRelay(t testing.TB) *Relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("relay: listen: %v", err)
	}
	r := &Relay{ln: ln, conns: make(map[net.Conn]struct{}), changed: make(chan struct{})}
	r.wg.Add(1)
	go r.serve()
	t.Cleanup(r.close)
	return r
}

// Addr returns the relay's address, 127.0.0.1:PORT.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// Forward makes the relay pass every connection it accepts from now on to
// target (host:port). Connections accepted before Forward was first
// called were closed; connections relayed already keep their target, as
// they would a server that moved.
func (r *Relay) Forward(target string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.target = target
}

// Accepted returns how many connections the relay has accepted so far,
// whether it relayed them or closed them: the number of times a client
// tried to reach the server.
func (r *Relay) Accepted() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.accepted
}

// Cut makes the relay a network that drops every packet (a pulled cable,
// Wi-Fi out of range) until Heal: no byte passes in either direction, on
// the connections relayed already and on new ones (which reach the
// server only after Heal), and neither side learns that the other closed,
// so both sockets stay open. Only keepalives can find such a dead link.
func (r *Relay) Cut() { r.set(func() { r.cut = true }) }

// Drop closes every connection the relay carries now, both sides, as a
// server that died or a NAT that forgot them would: each side sees the
// other close. New connections are relayed as before (Forward("") makes
// the relay close them too: a server that is down).
func (r *Relay) Drop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for c := range r.conns {
		_ = c.Close()
	}
}

// Heal ends a Cut. What either side sent meanwhile, a close included, is
// passed on in order, as TCP delivers what it retransmits once the
// network is back: a side that gave up during the cut is seen closing
// now, and a connection both sides kept carries on.
func (r *Relay) Heal() { r.set(func() { r.cut = false }) }

// SetDelay makes every byte read from either side from now on wait d
// before it is passed on (0 for none): a slow link, or a slow server. The
// delay is latency, not a rate limit: bytes read in a burst move on
// together.
func (r *Relay) SetDelay(d time.Duration) { r.set(func() { r.delay = d }) }

// set changes the relay's state under its lock and wakes every held chunk.
func (r *Relay) set(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f()
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *Relay) serve() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return // closed
		}
		r.mu.Lock()
		r.accepted++
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
	if !r.track(c) {
		return
	}
	defer r.untrack(c)
	// Behind a cut network the server must not hear of the client yet.
	if !r.pass(time.Time{}) {
		return
	}
	up, err := net.DialTimeout("tcp", target, WaitTimeout)
	if err != nil {
		return
	}
	defer up.Close()
	if !r.track(up) {
		return
	}
	defer r.untrack(up)
	done := make(chan struct{}, 2)
	go func() { r.pipe(up, c); done <- struct{}{} }()
	go func() { r.pipe(c, up); done <- struct{}{} }()
	<-done
	_ = c.Close()
	_ = up.Close()
	<-done
}

// relayChunk is what one read from a side gave: bytes, or the end of that
// side's stream, and when it may be passed on.
type relayChunk struct {
	b   []byte
	end bool
	due time.Time
}

// relayBacklog bounds the chunks held per direction: beyond it the relay
// stops reading, and the sender's TCP window fills as on a real network.
const relayBacklog = 16

// pipe passes what src sends on to dst, each chunk once pass allows, until
// src ends (its end passes on like its bytes) or dst fails.
func (r *Relay) pipe(dst, src net.Conn) {
	chunks := make(chan relayChunk, relayBacklog)
	quit := make(chan struct{})
	defer close(quit)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			ch := relayChunk{b: buf[:n], end: err != nil, due: time.Now().Add(r.currentDelay())}
			select {
			case chunks <- ch:
			case <-quit:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for ch := range chunks {
		if !r.pass(ch.due) {
			return
		}
		if len(ch.b) > 0 {
			if _, err := dst.Write(ch.b); err != nil {
				return
			}
		}
		if ch.end {
			return
		}
	}
}

func (r *Relay) currentDelay() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.delay
}

// pass waits until something read from a side may go on: the network is
// not cut and due has come (the timer plays the link's latency). It
// returns false if the relay closes first.
func (r *Relay) pass(due time.Time) bool {
	for {
		r.mu.Lock()
		closed, cut, changed := r.closed, r.cut, r.changed
		r.mu.Unlock()
		switch {
		case closed:
			return false
		case cut:
			<-changed
			continue
		}
		wait := time.Until(due)
		if wait <= 0 {
			return true
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-changed:
		}
		t.Stop()
	}
}

func (r *Relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *Relay) untrack(c net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.conns, c)
}

func (r *Relay) close() {
	r.set(func() {
		r.closed = true
		for c := range r.conns {
			_ = c.Close()
		}
	})
	_ = r.ln.Close()
	r.wg.Wait()
}
