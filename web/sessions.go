package web

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"
)

const (
	// cookieName is the session cookie's.
	cookieName = "pimqtt_session"
	// slideStep is how stale a session's expiry may get before a request renews it (and its
	// cookie, and the file): renewing on every request would write the file on every request.
	slideStep = 24 * time.Hour
	// sessionFileVersion is the format written to, and accepted from, SessionFile.
	sessionFileVersion = 1
	// maxSessionFile bounds what is read from SessionFile.
	maxSessionFile = 4 << 20
)

// session is one signed-in browser (or script).
type session struct {
	user    string
	expires time.Time
	done    chan struct{} // closed when the session ends, to end its event streams
}

// sessions is the server-side session table. Ids are random; only their SHA-256 is kept (in
// memory and in the file), so the file does not hold usable cookies.
type sessions struct {
	file     string
	lifetime time.Duration
	max      int
	log      *slog.Logger
	now      func() time.Time

	mu     sync.Mutex
	byHash map[[sha256.Size]byte]*session
	dirty  bool // changed since the last save

	saveMu sync.Mutex // one file write at a time
}

// sessionDoc is SessionFile's JSON form.
type sessionDoc struct {
	Version  int               `json:"version"`
	Sessions []sessionDocEntry `json:"sessions"`
}

type sessionDocEntry struct {
	IDHash  string    `json:"id_sha256"`
	User    string    `json:"user"`
	Expires time.Time `json:"expires"`
}

func newSessions(file string, lifetime time.Duration, maxN int, log *slog.Logger, now func() time.Time) *sessions {
	ss := &sessions{file: file, lifetime: lifetime, max: maxN, log: log, now: now, byHash: map[[sha256.Size]byte]*session{}}
	if file != "" {
		if err := ss.load(); err != nil {
			log.Warn("web: sessions not restored; everyone signs in again", "file", file, "err", err)
		}
	}
	return ss
}

// load reads the session file; a missing file is no error.
func (ss *sessions) load() error {
	f, err := os.Open(ss.file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	var doc sessionDoc
	dec := json.NewDecoder(&limitedReader{r: f, n: maxSessionFile})
	if err := dec.Decode(&doc); err != nil {
		return fmt.Errorf("read %s: %w", ss.file, err)
	}
	if doc.Version != sessionFileVersion {
		return fmt.Errorf("%s: version %d, want %d", ss.file, doc.Version, sessionFileVersion)
	}
	now := ss.now()
	for _, e := range doc.Sessions {
		raw, err := hex.DecodeString(e.IDHash)
		if err != nil || len(raw) != sha256.Size || e.User == "" || !e.Expires.After(now) {
			continue
		}
		if e.Expires.After(now.Add(ss.lifetime)) {
			// A shorter lifetime configured since: hold the session to it.
			e.Expires = now.Add(ss.lifetime)
		}
		var h [sha256.Size]byte
		copy(h[:], raw)
		ss.byHash[h] = &session{user: e.User, expires: e.Expires, done: make(chan struct{})}
	}
	for len(ss.byHash) > ss.max {
		ss.evictLocked()
	}
	ss.log.Debug("web: sessions restored", "file", ss.file, "sessions", len(ss.byHash))
	return nil
}

// create starts a session for user and returns its id, the cookie's value.
func (ss *sessions) create(user string) (string, *session, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", nil, fmt.Errorf("web: session id: %w", err)
	}
	id := base64.RawURLEncoding.EncodeToString(raw[:])
	s := &session{user: user, done: make(chan struct{})}
	ss.mu.Lock()
	ss.expireLocked()
	for len(ss.byHash) >= ss.max {
		ss.evictLocked()
	}
	s.expires = ss.now().Add(ss.lifetime)
	ss.byHash[sha256.Sum256([]byte(id))] = s
	ss.dirty = true
	ss.mu.Unlock()
	ss.save()
	return id, s, nil
}

// lookup returns the live session with id, sliding its expiry forward. renewed says the expiry
// moved, so the cookie should be sent again.
func (ss *sessions) lookup(id string) (s *session, renewed bool) {
	if id == "" || len(id) > 128 {
		return nil, false
	}
	h := sha256.Sum256([]byte(id))
	now := ss.now()
	changed := false
	ss.mu.Lock()
	s = ss.byHash[h]
	switch {
	case s == nil:
	case !s.expires.After(now):
		ss.endLocked(h, s)
		s, changed = nil, true
	case s.expires.Before(now.Add(ss.lifetime - slideStep)):
		s.expires = now.Add(ss.lifetime)
		ss.dirty, renewed, changed = true, true, true
	}
	ss.mu.Unlock()
	if changed {
		ss.save()
	}
	return s, renewed
}

// remove ends the session with id, if any.
func (ss *sessions) remove(id string) {
	h := sha256.Sum256([]byte(id))
	ss.mu.Lock()
	if s := ss.byHash[h]; s != nil {
		ss.endLocked(h, s)
	}
	ss.mu.Unlock()
	ss.save()
}

// removeUser ends every session of user (no longer in the password file).
func (ss *sessions) removeUser(user string) {
	ss.mu.Lock()
	for h, s := range ss.byHash {
		if s.user == user {
			ss.endLocked(h, s)
		}
	}
	ss.mu.Unlock()
	ss.save()
}

func (ss *sessions) endLocked(h [sha256.Size]byte, s *session) {
	delete(ss.byHash, h)
	close(s.done)
	ss.dirty = true
}

// expireLocked drops expired sessions.
func (ss *sessions) expireLocked() {
	now := ss.now()
	for h, s := range ss.byHash {
		if !s.expires.After(now) {
			ss.endLocked(h, s)
		}
	}
}

// evictLocked ends the session that expires first: with sliding expiry, the least recently
// used one.
func (ss *sessions) evictLocked() {
	var oldest [sha256.Size]byte
	var found *session
	for h, s := range ss.byHash {
		if found == nil || s.expires.Before(found.expires) {
			oldest, found = h, s
		}
	}
	if found != nil {
		ss.endLocked(oldest, found)
	}
}

// count returns the number of sessions (tests).
func (ss *sessions) count() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.byHash)
}

// save writes the table when it changed. A failed write is logged and retried at the next
// change; the sessions stay valid in memory.
func (ss *sessions) save() {
	if err := ss.flush(); err != nil {
		ss.log.Warn("web: cannot save sessions; a restart will sign everyone out", "err", err)
	}
}

// flush writes the table to the file if it changed.
func (ss *sessions) flush() error {
	if ss.file == "" {
		return nil
	}
	ss.saveMu.Lock()
	defer ss.saveMu.Unlock()
	ss.mu.Lock()
	if !ss.dirty {
		ss.mu.Unlock()
		return nil
	}
	doc := sessionDoc{Version: sessionFileVersion, Sessions: make([]sessionDocEntry, 0, len(ss.byHash))}
	for h, s := range ss.byHash {
		doc.Sessions = append(doc.Sessions, sessionDocEntry{IDHash: hex.EncodeToString(h[:]), User: s.user, Expires: s.expires.UTC()})
	}
	ss.dirty = false
	ss.mu.Unlock()
	data, err := json.Marshal(doc)
	if err == nil {
		err = writeFileAtomic(ss.file, data)
	}
	if err != nil {
		ss.mu.Lock()
		ss.dirty = true
		ss.mu.Unlock()
		return fmt.Errorf("web: save sessions to %s: %w", ss.file, err)
	}
	return nil
}

// writeFileAtomic replaces path with data, mode 0600: a temporary file in the same directory
// is written, synced and renamed over path, then the directory is synced, so a power cut leaves
// the old or the new content, never a mix.
//
// The same mechanism lives in auth, cert and state (each unexported); it belongs in one shared
// place, which is not this package's to make.
func writeFileAtomic(path string, data []byte) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, base+".tmp-*")
	if err != nil {
		return fmt.Errorf("create temporary file: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil && runtime.GOOS != "windows" {
		return fmt.Errorf("chmod temporary file: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write temporary file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync temporary file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close temporary file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename temporary file: %w", err)
	}
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory to sync: %w", err)
	}
	defer d.Close()
	// Some file systems cannot sync a directory (EINVAL): the rename stands all the same.
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("sync directory: %w", err)
	}
	return nil
}

// limitedReader fails, rather than truncating, when more than n bytes are read.
type limitedReader struct {
	r io.Reader
	n int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, fmt.Errorf("longer than %d bytes", maxSessionFile)
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}
