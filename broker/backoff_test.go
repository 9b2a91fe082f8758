package broker

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pimqtt/pimqtt/auth"
)

func newTestBackoff() (*loginBackoff, *fakeClock) {
	clock := &fakeClock{t: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
	b := newLoginBackoff()
	b.now = clock.now
	return b, clock
}

// attempt runs one login through the backoff and reports whether its
// password was checked.
func attempt(b *loginBackoff, host, user string, right bool) bool {
	if _, ok := b.begin(host); !ok {
		return false
	}
	b.end(host, user, right)
	return true
}

// TestLoginBackoffDelays: five failures are checked as usual; then one
// check per delay, the delay doubling from 1 s to a cap of 1 min; other
// addresses are not affected; a success of the same user clears it all.
func TestLoginBackoffDelays(t *testing.T) {
	b, clock := newTestBackoff()
	for i := 0; i < backoffThreshold; i++ {
		if !attempt(b, "10.0.0.1", "owner", false) {
			t.Fatalf("failure %d was not checked", i+1)
		}
	}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60}
	for i, w := range want {
		w *= time.Second
		wait, ok := b.begin("10.0.0.1")
		if ok || wait != w {
			t.Fatalf("after %d failures: begin = %v, %v; want a wait of %v", backoffThreshold+i, wait, ok, w)
		}
		if !attempt(b, "10.0.0.2", "owner", true) {
			t.Fatal("another address was slowed down")
		}
		clock.advance(w - time.Millisecond)
		if attempt(b, "10.0.0.1", "owner", false) {
			t.Fatalf("checked %v before the delay of %v ended", time.Millisecond, w)
		}
		clock.advance(time.Millisecond)
		if !attempt(b, "10.0.0.1", "owner", false) {
			t.Fatalf("not checked once the delay of %v ended", w)
		}
	}
	clock.advance(time.Minute)
	if !attempt(b, "10.0.0.1", "owner", true) {
		t.Fatal("the right password was not checked after the delay")
	}
	if b.len() != 0 || !attempt(b, "10.0.0.1", "owner", false) {
		t.Fatal("a success should clear the address")
	}
}

// TestLoginBackoffOtherAccount: a guesser holding one account cannot
// clear the count of its guesses at another's password by logging in;
// after the forget period an address starts afresh.
func TestLoginBackoffOtherAccount(t *testing.T) {
	b, clock := newTestBackoff()
	checked := 0
	for round := 0; round < 20; round++ {
		for i := 0; i < 3; i++ {
			if attempt(b, "10.0.0.9", "owner", false) {
				checked++
			}
		}
		attempt(b, "10.0.0.9", "guest", false)
		attempt(b, "10.0.0.9", "guest", true)
	}
	if checked > backoffThreshold+1 {
		t.Fatalf("%d guesses at the owner's password checked in a burst, want at most %d", checked, backoffThreshold+1)
	}
	clock.advance(backoffForget)
	if !attempt(b, "10.0.0.9", "owner", false) {
		t.Fatal("an address quiet for the forget period should start afresh")
	}
}

// TestLoginBackoffParallel: checks running at the same time count, so a
// burst of parallel connections gets no more checks than a sequence.
func TestLoginBackoffParallel(t *testing.T) {
	b, _ := newTestBackoff()
	let := 0
	for i := 0; i < 50; i++ {
		if _, ok := b.begin("10.0.0.3"); ok {
			let++
		}
	}
	if let != backoffThreshold+1 {
		t.Fatalf("%d of 50 parallel logins checked, want %d", let, backoffThreshold+1)
	}
}

// TestLoginBackoffBounded: an attacker with many addresses cannot grow
// the table past its bound, and the addresses that failed most are the
// last to be forgotten.
func TestLoginBackoffBounded(t *testing.T) {
	b, clock := newTestBackoff()
	for i := 0; i < 20; i++ {
		attempt(b, "worst", "owner", false)
		clock.advance(time.Minute)
	}
	for i := 0; i < 3*backoffMaxHosts; i++ {
		attempt(b, fmt.Sprintf("fd00::%x", i), fmt.Sprintf("user%d", i), false)
	}
	if n := b.len(); n > backoffMaxHosts {
		t.Fatalf("%d addresses remembered, bound %d", n, backoffMaxHosts)
	}
	b.mu.Lock()
	worst := b.hosts["worst"]
	b.mu.Unlock()
	if worst == nil || worst.failures < backoffThreshold {
		t.Fatal("the address with the most failures was forgotten")
	}
	// Many user names from one address: bounded too, and their failures
	// still count.
	for i := 0; i < 1000; i++ {
		attempt(b, "names", strings.Repeat("u", i), false)
	}
	b.mu.Lock()
	h := b.hosts["names"]
	users := len(h.byUser)
	b.mu.Unlock()
	if users > backoffMaxUsers {
		t.Fatalf("%d user names remembered for one address, bound %d", users, backoffMaxUsers)
	}
}

// dialFrom opens a raw MQTT connection to addr from the local address
// from (any address of 127.0.0.0/8 is loopback on Linux).
func dialFrom(t *testing.T, from, addr string, version byte) *rawClient {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: replyTimeout}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, from, err)
	}
	return newRawClient(t, conn, version)
}

// TestLoginBackoff: 50 wrong passwords from one address get few of their
// passwords checked, and the right password from that address is refused
// until the delay has passed; meanwhile the right password from another
// address connects at once.
func TestLoginBackoff(t *testing.T) {
	file := filepath.Join(t.TempDir(), "passwd")
	if err := auth.SetPassword(file, "owner", "right password", true); err != nil {
		t.Fatal(err)
	}
	b, logs := startTestBroker(t, Options{
		Listeners:    []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}},
		PasswordFile: file,
	})
	addr := listenerAddr(t, b, TCP)
	login := func(from, password string) string {
		c := dialFrom(t, from, addr, 4)
		defer c.close()
		return rawConnect(t, c, "c-"+from, "owner", password)
	}

	start := time.Now()
	before := b.auth.passwordChecks.Load()
	for i := 0; i < 50; i++ {
		if got := login("127.0.0.1", fmt.Sprintf("guess %d", i)); got != "CONNACK 0x04" {
			t.Fatalf("guess %d: %s, want CONNACK 0x04", i, got)
		}
	}
	guessing := time.Since(start)
	checked := b.auth.passwordChecks.Load() - before
	// The first five, then one per elapsed delay (1 s, 2 s, ...).
	if max := int64(backoffThreshold + 1 + int(guessing/backoffBase)); checked > max {
		t.Fatalf("50 guesses in %v: %d passwords checked, want at most %d", guessing, checked, max)
	}

	t0 := time.Now()
	if got := login("127.0.0.2", "right password"); got != "CONNACK 0x00" {
		t.Fatalf("the owner from another address: %s, want CONNACK 0x00", got)
	}
	other := time.Since(t0)
	if other > time.Second {
		t.Fatalf("the owner from another address waited %v", other)
	}

	if got := login("127.0.0.1", "right password"); got != "CONNACK 0x04" {
		t.Fatalf("the right password from the guessing address during its delay: %s, want CONNACK 0x04", got)
	}
	var accepted time.Duration
	attempts := 0
	for deadline := time.Now().Add(backoffMax + 10*time.Second); ; {
		attempts++
		if login("127.0.0.1", "right password") == "CONNACK 0x00" {
			accepted = time.Since(t0)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the right password from the guessing address never accepted")
		}
		time.Sleep(50 * time.Millisecond) // the client's retry interval, not synchronisation
	}
	if accepted < backoffBase/2 {
		t.Fatalf("the right password from the guessing address was accepted after %v: no delay", accepted)
	}
	// The owner logged in: the address is cleared, the next typo is
	// checked at once.
	before = b.auth.passwordChecks.Load()
	login("127.0.0.1", "typo")
	if b.auth.passwordChecks.Load() == before {
		t.Fatal("a login after the owner's success was not checked")
	}
	if !strings.Contains(logs.since(0), "auth refused without checking the password") {
		t.Errorf("no log line for the refusals:\n%s", logs.since(0))
	}
	t.Logf("50 wrong passwords from 127.0.0.1 in %v: %d checked; the owner from 127.0.0.2 in %v; the right password from 127.0.0.1 accepted after %v (%d attempts)",
		guessing.Round(time.Millisecond), checked, other.Round(time.Millisecond), accepted.Round(time.Millisecond), attempts)
}
