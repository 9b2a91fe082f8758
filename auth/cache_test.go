package auth

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

// parseLines parses password file lines, failing the test on error.
func parseLines(t testing.TB, lines ...string) *Passwords {
	t.Helper()
	p, err := Parse(strings.NewReader(strings.Join(lines, "\n")+"\n"), "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCheckCache: which logins are answered without hashing. Each step
// is a Check on the same Passwords and the number of hashes it may add.
func TestCheckCache(t *testing.T) {
	type step struct {
		user, password string
		want           bool
		hashes         int64 // added by this step
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"a right password is hashed once", []step{
			{"pi", "raspberry", true, 1},
			{"pi", "raspberry", true, 0},
			{"pi", "raspberry", true, 0},
		}},
		{"a wrong password is never cached nor answered from the cache", []step{
			{"pi", "raspberry", true, 1},
			{"pi", "wrong", false, 1},
			{"pi", "wrong", false, 1},
			{"pi", "raspberr", false, 1},
			{"pi", "raspberry ", false, 1},
			{"pi", "", false, 1},
			{"pi", "raspberry", true, 0},
		}},
		{"the password of another user does not hit", []step{
			{"pi", "raspberry", true, 1},
			{"legacy", "raspberry", false, 1},
			{"legacy", "hunter2", true, 1},
			{"pi", "hunter2", false, 1},
			{"legacy", "hunter2", true, 0},
		}},
		{"an unknown user always pays the hash", []step{
			{"mallory", "raspberry", false, 1},
			{"mallory", "raspberry", false, 1},
		}},
		{"user name and password boundaries are part of the key", []step{
			{"pi", "raspberry", true, 1},
			{"pir", "aspberry", false, 1},
			{"p", "iraspberry", false, 1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := parseLines(t, piLine, legacyLine, "pir:"+strings.SplitN(piLine, ":", 2)[1])
			for i, s := range tt.steps {
				before := p.Hashes()
				if got := p.Check(s.user, s.password); got != s.want {
					t.Fatalf("step %d: Check(%q, %q) = %v, want %v", i, s.user, s.password, got, s.want)
				}
				if got := p.Hashes() - before; got != s.hashes {
					t.Fatalf("step %d: Check(%q, %q) hashed %d times, want %d", i, s.user, s.password, got, s.hashes)
				}
			}
		})
	}
}

// TestCheckCacheNewFile: a password file loaded again starts with nothing
// cached, so a changed password or a removed user never passes on what
// the previous file accepted.
func TestCheckCacheNewFile(t *testing.T) {
	old := parseLines(t, piLine, legacyLine)
	if !old.Check("pi", "raspberry") || !old.Check("legacy", "hunter2") {
		t.Fatal("the right passwords were refused")
	}
	changedPi, err := HashPassword("new secret")
	if err != nil {
		t.Fatal(err)
	}
	// pi's password changed, legacy removed.
	cur := parseLines(t, "pi:"+changedPi)
	for _, c := range []struct{ user, password string }{{"pi", "raspberry"}, {"legacy", "hunter2"}} {
		if cur.Check(c.user, c.password) {
			t.Errorf("Check(%q, %q) passed with the new file", c.user, c.password)
		}
	}
	if !cur.Check("pi", "new secret") {
		t.Error("the new password was refused")
	}
	if got := cur.Hashes(); got != 3 {
		t.Errorf("the new file hashed %d times, want 3 (nothing carried over)", got)
	}
}

// TestVerifiedCacheBounded: the cache never holds more than its maximum,
// and what it dropped is hashed again, with the same answer.
func TestVerifiedCacheBounded(t *testing.T) {
	c := newVerifiedCache(4)
	for i := range 50 {
		c.add(c.digest(fmt.Sprint("user", i), "pw"))
		if n := c.len(); n > 4 {
			t.Fatalf("after %d adds the cache holds %d entries, want at most 4", i+1, n)
		}
	}
	if !c.has(c.digest("user49", "pw")) {
		t.Error("the latest entry was dropped")
	}

	// Through Check: more users than the cache holds.
	var lines []string
	for i := range 6 {
		h, err := HashOptions{Algorithm: SHA512}.Hash(fmt.Sprint("pw", i))
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, fmt.Sprintf("u%d:%s", i, h))
	}
	p := parseLines(t, lines...)
	p.verified.max = 3
	for round := range 3 {
		for i := range 6 {
			if !p.Check(fmt.Sprint("u", i), fmt.Sprint("pw", i)) {
				t.Fatalf("round %d: u%d refused", round, i)
			}
			if n := p.verified.len(); n > 3 {
				t.Fatalf("round %d: the cache holds %d entries, want at most 3", round, n)
			}
		}
	}
}

// TestVerifiedCacheKeyed: the cache keeps no password, and its keys are
// of its own: another load of the same file keys the same login
// differently, so nothing computed for one is of use with another.
func TestVerifiedCacheKeyed(t *testing.T) {
	a, b := newVerifiedCache(maxVerified), newVerifiedCache(maxVerified)
	if a.digest("pi", "raspberry") == b.digest("pi", "raspberry") {
		t.Error("two caches key the same login alike: the key is not random per cache")
	}
	p := parseLines(t, piLine)
	p.Check("pi", "raspberry")
	for k := range p.verified.entries {
		if strings.Contains(string(k[:]), "raspberry") {
			t.Error("the cache holds the password")
		}
	}
}

// TestCheckCacheConcurrent: many clients checking at once, right and
// wrong passwords mixed (run with -race). Only right passwords pass, and
// once cached, right passwords stop hashing.
func TestCheckCacheConcurrent(t *testing.T) {
	p := parseLines(t, piLine, legacyLine)
	const workers, rounds = 8, 50
	var wg sync.WaitGroup
	errs := make(chan string, workers*rounds)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				user, right := "legacy", "hunter2"
				if (w+r)%5 == 0 {
					user, right = "pi", "raspberry"
				}
				if !p.Check(user, right) {
					errs <- fmt.Sprintf("worker %d: %s's right password refused", w, user)
				}
				if p.Check(user, fmt.Sprint("wrong", w, r)) {
					errs <- fmt.Sprintf("worker %d: %s's wrong password passed", w, user)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	// Every wrong password hashes; each right one at most once per
	// worker racing to be first.
	if got, most := p.Hashes(), int64(workers*rounds+2*workers); got > most {
		t.Errorf("%d hashes, want at most %d", got, most)
	}
}
