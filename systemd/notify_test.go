package systemd

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// listen binds a unixgram socket the way systemd does, at a path in a
// temporary directory or, for a name starting with '@', in the abstract
// namespace, and returns the name for NOTIFY_SOCKET.
func listen(t *testing.T, abstract bool) (*net.UnixConn, string) {
	t.Helper()
	name := filepath.Join(t.TempDir(), "notify")
	if abstract {
		name = fmt.Sprintf("@pimqtt-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatalf("bind %s: %v", name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c, name
}

// receive returns the next datagram, failing after a deadline.
func receive(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(buf[:n])
}

func TestNotify(t *testing.T) {
	cases := []struct {
		name string
		send func(*Notifier) error
		want string // the datagram; a field ending in '=' matches any value
	}{
		{"ready", func(n *Notifier) error { return n.Ready("") }, "READY=1\n"},
		{"ready with status", func(n *Notifier) error { return n.Ready("listening on mqtt 127.0.0.1:1883") },
			"READY=1\nSTATUS=listening on mqtt 127.0.0.1:1883\n"},
		{"status on one line", func(n *Notifier) error { return n.Status("a\nb") }, "STATUS=a b\n"},
		{"reloading", (*Notifier).Reloading, "RELOADING=1\nMONOTONIC_USEC=\n"},
		{"stopping", (*Notifier).Stopping, "STOPPING=1\n"},
		{"watchdog", (*Notifier).Watchdog, "WATCHDOG=1\n"},
		{"raw fields", func(n *Notifier) error { return n.Notify("ERRNO=5", "STATUS=x") }, "ERRNO=5\nSTATUS=x\n"},
	}
	for _, abstract := range []bool{false, true} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/abstract=%v", tc.name, abstract), func(t *testing.T) {
				c, name := listen(t, abstract)
				n, err := New(env(map[string]string{"NOTIFY_SOCKET": name}), os.Getpid())
				if err != nil {
					t.Fatal(err)
				}
				if err := tc.send(n); err != nil {
					t.Fatalf("send: %v", err)
				}
				got := receive(t, c)
				if !matches(got, tc.want) {
					t.Fatalf("datagram %q, want %q", got, tc.want)
				}
			})
		}
	}
}

// TestReloadingMonotonic: MONOTONIC_USEC is CLOCK_MONOTONIC now, which
// systemd compares with its own clock to tell this reload from a stale one.
func TestReloadingMonotonic(t *testing.T) {
	c, name := listen(t, false)
	n, _ := New(env(map[string]string{"NOTIFY_SOCKET": name}), os.Getpid())
	before, _ := monotonicUsec()
	if err := n.Reloading(); err != nil {
		t.Fatal(err)
	}
	after, _ := monotonicUsec()
	got := receive(t, c)
	v, ok := strings.CutPrefix(strings.Split(got, "\n")[1], "MONOTONIC_USEC=")
	us, err := strconv.ParseUint(v, 10, 64)
	if !ok || err != nil || us < before || us > after {
		t.Fatalf("datagram %q: MONOTONIC_USEC not between %d and %d", got, before, after)
	}
}

// TestRefusedFields: a field that would split into two lines, or has no
// '=', is refused instead of sending systemd something else.
func TestRefusedFields(t *testing.T) {
	_, name := listen(t, false)
	n, _ := New(env(map[string]string{"NOTIFY_SOCKET": name}), os.Getpid())
	for _, f := range []string{"READY=1\nSTOPPING=1", "READY"} {
		if err := n.Notify(f); err == nil {
			t.Errorf("Notify(%q) sent", f)
		}
	}
}

// TestNoSocket: without NOTIFY_SOCKET (pimqtt run by hand) every call does
// nothing and succeeds, and there is no watchdog even if one is named.
func TestNoSocket(t *testing.T) {
	for _, n := range []*Notifier{nil, {}, mustNew(t, map[string]string{"WATCHDOG_USEC": "200000"})} {
		if n.Enabled() {
			t.Fatal("enabled without NOTIFY_SOCKET")
		}
		for _, err := range []error{n.Ready("x"), n.Reloading(), n.Stopping(), n.Watchdog(), n.Status("x")} {
			if err != nil {
				t.Fatal(err)
			}
		}
		if _, ok := n.WatchdogInterval(); ok {
			t.Fatal("watchdog without NOTIFY_SOCKET")
		}
	}
}

// TestGoneSocket: a socket nobody listens on any more is an error that
// says where, not a silent drop.
func TestGoneSocket(t *testing.T) {
	n := mustNew(t, map[string]string{"NOTIFY_SOCKET": filepath.Join(t.TempDir(), "gone")})
	if err := n.Ready(""); err == nil || !strings.Contains(err.Error(), "gone") {
		t.Fatalf("Ready to a missing socket: %v", err)
	}
}

func TestWatchdogInterval(t *testing.T) {
	pid := os.Getpid()
	cases := []struct {
		name    string
		usec    string
		wpid    string
		want    time.Duration // 0: no watchdog
		wantErr bool
	}{
		{"off", "", "", 0, false},
		{"half the interval", "30000000", "", 15 * time.Second, false},
		{"small", "200000", "", 100 * time.Millisecond, false},
		{"for this process", "200000", strconv.Itoa(pid), 100 * time.Millisecond, false},
		{"for another process", "200000", strconv.Itoa(pid + 1), 0, false},
		{"bad pid", "200000", "x", 0, true},
		{"zero", "0", "", 0, true},
		{"not a number", "30s", "", 0, true},
		{"negative", "-1", "", 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, err := New(env(map[string]string{"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": tc.usec, "WATCHDOG_PID": tc.wpid}), pid)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want error %v", err, tc.wantErr)
			}
			d, ok := n.WatchdogInterval()
			if d != tc.want || ok != (tc.want != 0) {
				t.Fatalf("WatchdogInterval() = %v, %v; want %v", d, ok, tc.want)
			}
		})
	}
}

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func mustNew(t *testing.T, m map[string]string) *Notifier {
	t.Helper()
	n, err := New(env(m), os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// matches compares a datagram with want line by line; a wanted line that
// ends in '=' takes any value that is a number.
func matches(got, want string) bool {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	if len(g) != len(w) {
		return false
	}
	for i := range w {
		if strings.HasSuffix(w[i], "=") && strings.HasPrefix(g[i], w[i]) {
			if _, err := strconv.ParseUint(strings.TrimPrefix(g[i], w[i]), 10, 64); err == nil {
				continue
			}
		}
		if g[i] != w[i] {
			return false
		}
	}
	return true
}
