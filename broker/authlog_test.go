package broker

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pimqtt/pimqtt/auth"
)

// TestFailedLoginsLogBounded: a password-guessing loop does not flood the
// log. 1000 failed logins from one address give a bounded number of lines
// (the first at once, then at most one per interval with a count), a
// 64 KiB user name is logged cut to 64 bytes and escaped, and the password
// never appears.
func TestFailedLoginsLogBounded(t *testing.T) {
	const password = "Tr0ub4dor&3-secret"
	file := filepath.Join(t.TempDir(), "passwd")
	if err := auth.SetPassword(file, "alice", "right-password", true); err != nil {
		t.Fatal(err)
	}
	limits := DefaultLimits()
	limits.MaxConnectSize = 256 << 10 // so that a 64 KiB user name reaches the check
	b, logs := startTestBroker(t, Options{
		Listeners:    []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}},
		PasswordFile: file,
		Limits:       limits,
	})
	addr := listenerAddr(t, b, TCP)
	long := strings.Repeat("p", 65535) // the longest user name MQTT can carry

	const attempts = 1000
	start := time.Now()
	for i := 0; i < attempts; i++ {
		user := fmt.Sprintf("guess%d", i)
		if i == 0 {
			user = long
		}
		version := byte(4 + i%2) // both versions
		cl := dialRaw(t, addr, version)
		var connect string
		if version == 5 {
			connect = fmt.Sprintf("%sC2 H60 00 s'c%d' s'%s' s'%s'", connect5, i, user, password)
		} else {
			connect = fmt.Sprintf("%sC2 H60 s'c%d' s'%s' s'%s'", connect4, i, user, password)
		}
		if err := cl.write(pk(connect)); err != nil {
			t.Fatal(err)
		}
		if version == 5 {
			cl.expect("CONNACK 0x86")
		} else {
			cl.expect("CONNACK 0x04")
		}
		cl.close()
	}
	elapsed := time.Since(start)

	log := logs.since(0)
	if strings.Contains(log, password) {
		t.Fatal("the password is in the log")
	}
	lines := logs.countLines("auth failed: bad user name or password")
	// The first at once, then at most one per interval (the burst's end
	// may be logged by the next one or by the flush).
	if max := 2 + int(elapsed/reportInterval); lines < 1 || lines > max {
		t.Fatalf("%d failed logins in %v gave %d log lines, want 1 to %d", attempts, elapsed, lines, max)
	}
	first := ""
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "auth failed") {
			first = line
			break
		}
	}
	want := "user=" + strings.Repeat("p", maxLoggedBytes) + " user_bytes=65535"
	if !strings.Contains(first, want) || strings.Contains(first, strings.Repeat("p", maxLoggedBytes+1)) {
		t.Fatalf("first failure logged as\n%s\nwant the user name cut to %d bytes (%s)", first, maxLoggedBytes, want)
	}
	if len(first) > 1024 {
		t.Fatalf("a %d-byte log line", len(first))
	}
	t.Logf("%d failed logins in %v: %d log line(s); the first:\n%s", attempts, elapsed.Round(time.Millisecond), lines, first)
}
