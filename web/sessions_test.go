package web

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// clock is a settable time for sessions and the throttle.
type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock               { return &clock{t: time.Unix(1_700_000_000, 0)} }
func (c *clock) sessions(file string, max int, t *testing.T) *sessions {
	log, _ := testLog(t)
	return newSessions(file, 30*24*time.Hour, max, log, c.now)
}

func TestSessionsLifetime(t *testing.T) {
	clk := newClock()
	ss := clk.sessions("", 10, t)
	id, s, err := ss.create("alice")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		advance     time.Duration
		wantLive    bool
		wantRenewed bool
	}{
		{"at once", 0, true, false},
		{"an hour on: no renewal yet", time.Hour, true, false},
		{"two days on: renewed", 2 * 24 * time.Hour, true, true},
		{"29 days after the renewal", 29 * 24 * time.Hour, true, true},
		{"30 days without use", 30 * 24 * time.Hour, false, false},
	}
	for _, tt := range tests {
		clk.add(tt.advance)
		got, renewed := ss.lookup(id)
		if (got != nil) != tt.wantLive || renewed != tt.wantRenewed {
			t.Fatalf("%s: live %v renewed %v, want %v %v", tt.name, got != nil, renewed, tt.wantLive, tt.wantRenewed)
		}
	}
	select {
	case <-s.done:
	default:
		t.Fatal("an expired session's streams are not told")
	}
	if ss.count() != 0 {
		t.Fatalf("%d sessions left", ss.count())
	}
	for _, bad := range []string{"", "x", strings.Repeat("a", 200)} {
		if got, _ := ss.lookup(bad); got != nil {
			t.Errorf("lookup(%q) found a session", bad)
		}
	}
}

// The table is bounded: beyond MaxSessions the least recently used session ends.
func TestSessionsBounded(t *testing.T) {
	clk := newClock()
	ss := clk.sessions("", 3, t)
	ids := make([]string, 4)
	for i := range 3 {
		ids[i], _, _ = ss.create("user")
		clk.add(2 * 24 * time.Hour)
	}
	ss.lookup(ids[0]) // renewed: now the most recently used
	ids[3], _, _ = ss.create("user")
	if ss.count() != 3 {
		t.Fatalf("%d sessions, want 3", ss.count())
	}
	for i, want := range []bool{true, false, true, true} {
		if got, _ := ss.lookup(ids[i]); (got != nil) != want {
			t.Errorf("session %d live %v, want %v", i, got != nil, want)
		}
	}
}

// Sessions survive a restart through the file, which holds no usable cookie.
func TestSessionsFile(t *testing.T) {
	clk := newClock()
	file := filepath.Join(t.TempDir(), "sessions.json")
	ss := clk.sessions(file, 10, t)
	alice, _, _ := ss.create("alice")
	bob, _, _ := ss.create("bob")
	ss.remove(bob)
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), alice) || !strings.Contains(string(data), `"user":"alice"`) || strings.Contains(string(data), "bob") {
		t.Fatalf("file %s", data)
	}
	if fi, err := os.Stat(file); err != nil || (runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600) {
		t.Fatalf("file mode %v %v, want 0600", fi.Mode(), err)
	}
	again := clk.sessions(file, 10, t)
	if s, _ := again.lookup(alice); s == nil || s.user != "alice" {
		t.Fatal("alice's session did not survive")
	}
	if s, _ := again.lookup(bob); s != nil {
		t.Fatal("bob's ended session came back")
	}
	// Expired sessions are not restored.
	clk.add(31 * 24 * time.Hour)
	if n := clk.sessions(file, 10, t).count(); n != 0 {
		t.Fatalf("%d expired sessions restored", n)
	}
}

// A file that cannot be used starts an empty table, which is saved over it.
func TestSessionsBadFile(t *testing.T) {
	for _, content := range []string{"not json", `{"version":99,"sessions":[]}`, `{"version":1,"sessions":[{"id_sha256":"zz","user":"a","expires":"2100-01-01T00:00:00Z"}]}`} {
		clk := newClock()
		file := filepath.Join(t.TempDir(), "sessions.json")
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		ss := clk.sessions(file, 10, t)
		if ss.count() != 0 {
			t.Fatalf("%q: %d sessions", content, ss.count())
		}
		id, _, _ := ss.create("alice")
		if s, _ := clk.sessions(file, 10, t).lookup(id); s == nil {
			t.Fatalf("%q: the new session was not saved over the bad file", content)
		}
	}
	// A directory that does not exist: sessions work in memory, the failure is an error.
	clk := newClock()
	ss := clk.sessions(filepath.Join(t.TempDir(), "nodir", "sessions.json"), 10, t)
	id, _, err := ss.create("alice")
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := ss.lookup(id); s == nil {
		t.Fatal("session lost")
	}
	if err := ss.flush(); err == nil || !strings.Contains(err.Error(), "save sessions") {
		t.Fatalf("flush: %v", err)
	}
}
