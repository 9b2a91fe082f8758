package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pimqtt/pimqtt/broker"
	"github.com/pimqtt/pimqtt/config"
	"github.com/pimqtt/pimqtt/systemd"
)

// notifySocket is the test's side of NOTIFY_SOCKET: it binds a unixgram
// socket the way systemd does and hands each datagram over in order.
type notifySocket struct {
	path string
	msgs chan string
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatalf("bind %s: %v", path, err)
	}
	s := &notifySocket{path: path, msgs: make(chan string, 1024)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			s.msgs <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return s
}

// next returns the next datagram that is not a watchdog ping (counted
// into pings), failing after the test timeout.
func (s *notifySocket) next(t *testing.T, pings *int) string {
	t.Helper()
	deadline := time.After(testTimeout)
	for {
		select {
		case m := <-s.msgs:
			if m == "WATCHDOG=1\n" {
				*pings++
				continue
			}
			return m
		case <-deadline:
			t.Fatalf("no notification within %v", testTimeout)
		}
	}
}

// TestSystemdNotify runs the binary as systemd runs a Type=notify service
// with WatchdogSec: READY=1 comes only once a client connecting that very
// moment gets the device's retained status (device subscribed, listeners
// open), with the bound addresses as STATUS; the watchdog is pinged at
// half its interval; SIGHUP gives RELOADING=1 (with MONOTONIC_USEC) then
// READY=1; SIGTERM gives STOPPING=1 and a clean exit.
func TestSystemdNotify(t *testing.T) {
	sock := listenNotify(t)
	pw := passwordFile(t, "phone", "secret")
	const watchdog = 200 * time.Millisecond
	p := startProcess(t, []string{"NOTIFY_SOCKET=" + sock.path, "WATCHDOG_USEC=200000"},
		"--password-file", pw, "--gpio", "sim", "--listen", "127.0.0.1:0", "--ws-listen", "")
	pings := 0

	ready := sock.next(t, &pings)
	if pings != 0 || !strings.HasPrefix(ready, "READY=1\nSTATUS=listening on ") {
		t.Fatalf("first notification %q after %d watchdog pings, want READY=1 with STATUS first", ready, pings)
	}
	m := regexp.MustCompile(`\b` + broker.TCP + ` (127\.0\.0\.1:\d+)`).FindStringSubmatch(ready)
	if m == nil || !strings.Contains(ready, ", page 127.0.0.1:") {
		t.Fatalf("READY's STATUS %q does not name the MQTT listener and the page", ready)
	}
	// No waiting on the log: READY=1 itself must mean the broker accepts
	// and the device has published its retained status.
	sub := newSubscriber(t, "tcp://"+m[1], "phone", "secret", config.Default().Device.StatusTopic)
	select {
	case got := <-sub.msgs:
		if got.payload != `{"status": "On"}` || !got.retained {
			t.Fatalf("right after READY=1 the status was %+v, want the retained On", got)
		}
	case <-time.After(testTimeout):
		t.Fatal("no retained status right after READY=1")
	}

	// Pings keep coming at half the interval while the program runs. Those
	// that came while the client connected are dropped first, so that the
	// five counted are five ticks; the gap allowed between two is wider
	// than systemd's 200ms only because a loaded CI machine under -race
	// is not a Pi (the interval itself is TestWatchdogInterval's).
	for len(sock.msgs) > 0 {
		if msg := <-sock.msgs; msg != "WATCHDOG=1\n" {
			t.Fatalf("unexpected notification %q", msg)
		}
	}
	start := time.Now()
	for n := 0; n < 5; {
		select {
		case msg := <-sock.msgs:
			if msg != "WATCHDOG=1\n" {
				t.Fatalf("unexpected notification %q", msg)
			}
			n++
		case <-time.After(5 * watchdog):
			t.Fatalf("no watchdog ping within %v (WATCHDOG_USEC=200000 wants one every 100ms)", 5*watchdog)
		}
	}
	if d := time.Since(start); d < 5*watchdog/4 { // 4 intervals of 100ms, one tick may be late
		t.Fatalf("5 pings in %v: faster than every %v", d, watchdog/2)
	}

	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if msg := sock.next(t, &pings); !regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=\d+\n$`).MatchString(msg) {
		t.Fatalf("after SIGHUP %q, want RELOADING=1 with MONOTONIC_USEC", msg)
	}
	if msg := sock.next(t, &pings); msg != ready {
		t.Fatalf("after the reload %q, want %q", msg, ready)
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if msg := sock.next(t, &pings); msg != "STOPPING=1\n" {
		t.Fatalf("after SIGTERM %q, want STOPPING=1", msg)
	}
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// TestWatchdogWithheld: the watchdog is pinged only while the broker
// accepts connections; once it does not, the ping is withheld (and said
// so in the log), so that systemd restarts a wedged pimqtt.
func TestWatchdogWithheld(t *testing.T) {
	sock := listenNotify(t)
	m, logs := startMain(t, testConfig(""))
	sd, err := systemd.New(func(k string) string { return map[string]string{"NOTIFY_SOCKET": sock.path}[k] }, os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pings := 0
	// A marker after each call shows what the call sent, without waiting
	// for something that should not come.
	check := func(wantPing bool) {
		t.Helper()
		m.pingWatchdog(ctx, sd, time.Second)
		if err := sd.Status("marker"); err != nil {
			t.Fatal(err)
		}
		pings = 0
		if msg := sock.next(t, &pings); msg != "STATUS=marker\n" || (pings == 1) != wantPing {
			t.Fatalf("%d pings before %q, want ping %v", pings, msg, wantPing)
		}
	}
	check(true)
	if err := m.broker.Close(); err != nil {
		t.Fatal(err)
	}
	check(false)
	waitLog(t, logs, "withholding the systemd watchdog ping", "the broker accepts no connection")
}
