package auth

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
)

// maxLineLen bounds the memory one line of a password file may take. It is
// above anything mosquitto accepts (65535-byte name + 65535-byte hash), so
// only a corrupt or hostile file hits it.
const maxLineLen = 1 << 18

// Passwords is an immutable set of users and their hashes, loaded from a
// mosquitto password file. It is safe for concurrent use. The zero value and
// a nil *Passwords refuse everyone.
type Passwords struct {
	users map[string]*entry
	// decoy is hashed when the user is unknown, so that a refusal costs
	// what a wrong password for a real user costs and timing does not
	// reveal which user names exist.
	decoy *entry
	// verified remembers the logins that passed, so that reconnecting
	// clients skip the hash (see verifiedCache); nil in the zero value.
	// It lives and dies with this set: a reloaded file starts afresh.
	verified *verifiedCache
	// hashes counts the password hashes computed by Check.
	hashes atomic.Int64
}

// Load reads a mosquitto password file. It fails only if the file cannot be
// read; malformed lines are logged at warn level and skipped, the way the
// mosquitto broker skips them. A file every user of the machine may read
// is loaded with a warning, as mosquitto 2.0.16 and later warn about it. A
// nil logger discards the messages.
func Load(path string, logger *slog.Logger) (*Passwords, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load password file: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
		if e := exposureOf(fi); e.Others() && logger != nil {
			logger.Warn("password file: every user of this machine may read it and guess passwords offline",
				"file", path, "mode", fmt.Sprintf("%04o", uint32(e.Mode)), "fix", "chmod o-rwx "+path)
		}
	}
	p, err := Parse(f, path, logger)
	if err != nil {
		return nil, fmt.Errorf("load password file: %w", err)
	}
	return p, nil
}

// Parse reads a password file from r; name is used only in "name:line"
// positions of log messages. It fails only if r does.
//
// It follows the mosquitto 2.0 broker: lines whose first non-blank byte is
// '#', blank lines and lines without ':' are skipped; blanks (including
// '\r') around the user name and the hash are ignored; the hash ends at the
// next ':'; a line whose hash cannot be used is skipped with a warning; if a
// user has several usable lines, the last one wins.
func Parse(r io.Reader, name string, logger *slog.Logger) (*Passwords, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Passwords{users: make(map[string]*entry), verified: newVerifiedCache(maxVerified)}
	seenAt := make(map[string]int)
	br := bufio.NewReader(r)
	var buf []byte
	for lineNo := 1; ; lineNo++ {
		line, tooLong, err := readLine(br, buf[:0])
		buf = line
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read %s:%d: %w", name, lineNo, err)
		}
		at := fmt.Sprintf("%s:%d", name, lineNo)
		if tooLong {
			logger.Warn("password file: line skipped", "at", at, "reason", fmt.Sprintf("longer than %d bytes", maxLineLen))
			continue
		}
		user, hashPart, kind := splitLine(string(line))
		switch kind {
		case lineIgnored:
			continue
		case lineNoColon:
			// The content is not logged: a line without ':' may well be
			// a password pasted into the wrong place.
			logger.Warn("password file: line skipped", "at", at, "reason", "no ':' separator")
			continue
		}
		if user == "" {
			logger.Warn("password file: line skipped", "at", at, "reason", "empty user name")
			continue
		}
		if hashPart == "" {
			logger.Warn("password file: line skipped", "at", at, "user", user, "reason", "no password hash")
			continue
		}
		e, err := parseHash(hashPart)
		if err != nil {
			logger.Warn("password file: line skipped", "at", at, "user", user, "reason", err.Error())
			continue
		}
		if prev, dup := seenAt[user]; dup {
			// mosquitto 2.0 keeps every line in a hash table and finds
			// the most recently added one, so the last usable line wins.
			logger.Warn("password file: duplicate user, the later line wins",
				"at", at, "user", user, "ignored", fmt.Sprintf("%s:%d", name, prev))
		}
		seenAt[user] = lineNo
		p.users[user] = e
	}
	p.decoy = newDecoy(p.users)
	logger.Debug("password file loaded", "file", name, "users", len(p.users))
	return p, nil
}

type lineKind uint8

const (
	lineIgnored lineKind = iota // blank or comment
	lineNoColon                 // text without ':', skipped by mosquitto
	lineEntry                   // "user:hash", either part possibly empty
)

// splitLine reads one line (with or without its line ending) the way the
// mosquitto 2.0 broker does, so that Parse, SetPassword and DeleteUser agree
// with it about which user a line belongs to. One deliberate difference:
// mosquitto treats only a '#' in the first column as a comment and would
// read "  #x:hash" as user "#x"; we treat it as the indented comment it
// almost certainly is (ValidateUsername refuses such names anyway).
func splitLine(line string) (user, hash string, kind lineKind) {
	text := strings.Trim(line, blanks)
	if text == "" || text[0] == '#' {
		return "", "", lineIgnored
	}
	user, rest, found := strings.Cut(text, ":")
	if !found {
		return "", "", lineNoColon
	}
	// mosquitto splits with strtok(":"), which skips empty fields: the hash
	// is the first non-empty field after the user ("user::hash" logs in) and
	// ends at the next ':'. A second deliberate difference: strtok would
	// also skip a leading ':' and read ":hash" as user "hash"; we report an
	// empty user name, which keeps the hash out of the log.
	rest = strings.TrimLeft(rest, ":")
	hash, _, _ = strings.Cut(rest, ":")
	return strings.Trim(user, blanks), strings.Trim(hash, blanks), lineEntry
}

// readLine appends the next line of br (without its '\n') to buf. A line
// longer than maxLineLen is consumed but reported as tooLong and not
// returned, so one bad line cannot exhaust memory or stop the parse. It
// returns io.EOF only when no bytes are left.
func readLine(br *bufio.Reader, buf []byte) (line []byte, tooLong bool, err error) {
	read := false
	for {
		chunk, err := br.ReadSlice('\n')
		read = read || len(chunk) > 0
		if !tooLong && len(buf)+len(chunk) <= maxLineLen+1 {
			buf = append(buf, chunk...)
		} else {
			tooLong = true
			buf = buf[:0]
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if !read {
				return buf, false, io.EOF
			}
			return buf, tooLong, nil
		case err != nil:
			return buf, tooLong, err
		}
		return bytes.TrimSuffix(buf, []byte{'\n'}), tooLong, nil
	}
}

// decoyShape is the part of an entry that decides how long a check takes.
type decoyShape struct {
	kind       hashKind
	iterations int
	saltLen    int
}

func (a decoyShape) less(b decoyShape) bool {
	if a.kind != b.kind {
		return a.kind < b.kind
	}
	if a.iterations != b.iterations {
		return a.iterations < b.iterations
	}
	return a.saltLen < b.saltLen
}

// newDecoy builds the entry hashed for unknown users. It copies the
// parameters most entries use (so the decoy costs what a typical real
// check costs) with a random salt and hash.
func newDecoy(users map[string]*entry) *entry {
	best, bestN := decoyShape{kindPBKDF2, writeIterations, writeSaltLen}, 0
	counts := make(map[decoyShape]int)
	for _, e := range users {
		s := decoyShape{e.kind, e.iterations, len(e.salt)}
		counts[s]++
		// Ties are broken on the parameters themselves, not on map
		// order, so the decoy is the same every time a file is loaded.
		if n := counts[s]; n > bestN || (n == bestN && s.less(best)) {
			best, bestN = s, n
		}
	}
	d := &entry{kind: best.kind, iterations: best.iterations, salt: make([]byte, best.saltLen), hash: make([]byte, hashLen)}
	// crypto/rand.Read does not fail on supported platforms, and the
	// values do not matter for safety: Check refuses an unknown user
	// whatever the comparison says.
	_, _ = rand.Read(d.salt)
	_, _ = rand.Read(d.hash)
	return d
}

// defaultDecoy serves the zero Passwords value.
var defaultDecoy = newDecoy(nil)

// Check reports whether password is right for username. The comparison is
// constant-time, and an unknown user still costs one hash computation, so
// neither the password nor the existence of a user leaks through timing.
//
// A user name and password that passed before (with this Passwords, that
// is, this load of the file) pass again without hashing: a reconnect
// storm costs a keyed SHA-256 per client instead of a PBKDF2 derivation.
// Only the right password can be answered that fast, so the timing tells
// a client nothing its CONNACK does not; wrong passwords and unknown
// users always pay the full hash.
func (p *Passwords) Check(username, password string) bool {
	if p == nil {
		defaultDecoy.matches(password)
		return false
	}
	e, known := p.users[username]
	if !known {
		e = defaultDecoy
		if p.decoy != nil {
			e = p.decoy
		}
	}
	// The digest and the look-up are made for unknown users too, so that
	// they cost what a wrong password for a real user costs.
	var d [32]byte
	if p.verified != nil {
		d = p.verified.digest(username, password)
		if p.verified.has(d) && known {
			return true
		}
	}
	p.hashes.Add(1)
	ok := e.matches(password) && known
	if ok && p.verified != nil {
		p.verified.add(d)
	}
	return ok
}

// Hashes returns the number of password hashes (PBKDF2 derivations, for
// "$7$" lines) Check has computed: the logins it could not answer from
// the logins that passed before. Tests and benchmarks watch it.
func (p *Passwords) Hashes() int64 {
	if p == nil {
		return 0
	}
	return p.hashes.Load()
}

// Len returns the number of users that can log in.
func (p *Passwords) Len() int {
	if p == nil {
		return 0
	}
	return len(p.users)
}
