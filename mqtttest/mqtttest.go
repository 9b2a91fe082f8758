// Package mqtttest provides helpers for tests that need real MQTT peers, in
// the way net/http/httptest does for HTTP: it owns finding the external
// tools the tests run (and failing, never skipping, when one is missing),
// picking free loopback ports, waiting for a port to accept connections,
// collecting a child process's output, and running the real mosquitto
// broker for the length of a test.
//
// It is a normal package so that the tests of several packages can share
// it, but only tests should import it: every helper takes a testing.TB and
// fails the test on error.
package mqtttest

import (
	"bytes"
	"fmt"
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
func RequireTool(t testing.TB, name, debianPackage string) string {
	t.Helper()
	if name == "python3" {
		name = "/usr/bin/python3"
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found (%v): install the Debian package %s (apt-get install %s; .ci/run does)",
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

// FreePort returns a port on 127.0.0.1 that was free a moment ago: the
// kernel picks it for a listener that is closed at once. It is for
// programs that must be told their port up front; another process could
// take it first, in which case the program fails to start and the test
// says so.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// WaitListening dials the TCP address addr until it accepts a connection,
// and fails the test if it has not within WaitTimeout. It polls: a dial
// loop is the only portable readiness signal a separate process gives, so
// use it for those, never to order events within the test's own process.
func WaitListening(t testing.TB, addr string) {
	t.Helper()
	waitListening(t, addr, nil, nil)
}

// waitListening is WaitListening that also fails as soon as the mosquitto
// process whose output is out exits (exited is closed).
func waitListening(t testing.TB, addr string, exited <-chan struct{}, out *SyncBuffer) {
	t.Helper()
	deadline := time.Now().Add(WaitTimeout)
	for {
		select {
		case <-exited: // never ready when nil
			t.Fatalf("mosquitto exited before accepting connections on %s:\n%s", addr, out)
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listening on %s after %v: %v", addr, WaitTimeout, err)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
}

// MosquittoConfig says how StartMosquitto configures the broker.
type MosquittoConfig struct {
	// Port is the MQTT over TCP port on 127.0.0.1. Zero picks a free one.
	Port int
	// WebSocket adds a listener for MQTT over WebSocket on another free
	// port of 127.0.0.1 (any path), beside the TCP one.
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
// from a configuration in t.TempDir() and returns once its ports accept
// connections. The broker is killed at cleanup, and its log printed if the
// test failed.
//
// Besides cfg, the configuration always says "persistence false",
// "log_dest stderr" and "user root": the Debian broker started as root
// otherwise switches to user mosquitto, which cannot read 0600 files in
// the test's temporary directories (a password file, for one).
func StartMosquitto(t testing.TB, cfg MosquittoConfig) *Mosquitto {
	t.Helper()
	bin := RequireTool(t, "mosquitto", "mosquitto")
	m := &Mosquitto{Port: cfg.Port}
	if m.Port == 0 {
		m.Port = FreePort(t)
	}
	lines := append([]string{
		fmt.Sprintf("listener %d 127.0.0.1", m.Port),
		"persistence false",
		"log_dest stderr",
		"user root",
	}, cfg.Extra...)
	if cfg.WebSocket {
		for m.WebSocketPort == 0 || m.WebSocketPort == m.Port {
			m.WebSocketPort = FreePort(t)
		}
		lines = append(lines,
			fmt.Sprintf("listener %d 127.0.0.1", m.WebSocketPort),
			"protocol websockets")
	}
	conf := filepath.Join(t.TempDir(), "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	out := &SyncBuffer{}
	cmd := exec.Command(bin, "-c", conf)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", out)
		}
	})
	waitListening(t, fmt.Sprintf("127.0.0.1:%d", m.Port), exited, out)
	if m.WebSocketPort != 0 {
		waitListening(t, fmt.Sprintf("127.0.0.1:%d", m.WebSocketPort), exited, out)
	}
	return m
}
