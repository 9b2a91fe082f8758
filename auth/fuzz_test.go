package auth

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// The seed corpora are in testdata/fuzz/<target>/: mosquitto's example
// password file, files written by mosquitto_passwd 2.0.11 and pimqtt, the
// vectors of ../testdata/passwd, plaintext files for -U. `go test` runs
// them; .ci/fuzz fuzzes from them.

// fuzzIterations keeps the PBKDF2 work per input small: the properties do
// not depend on the count, and the fuzzer's speed does.
const fuzzIterations = 1

// parseBytes is Parse of data, which cannot fail on a bytes.Reader.
func parseBytes(t *testing.T, data []byte) *Passwords {
	t.Helper()
	p, err := Parse(bytes.NewReader(data), "fuzz", nil)
	if err != nil {
		t.Fatalf("Parse failed on an in-memory reader: %v", err)
	}
	return p
}

func sameEntry(a, b *entry) bool {
	return a.kind == b.kind && a.iterations == b.iterations && bytes.Equal(a.salt, b.salt) && bytes.Equal(a.hash, b.hash)
}

// FuzzParse: whatever the file holds, Parse keeps only well-formed users
// (a name the broker could match, a usable hash); writing the users back
// out with entry.String and parsing again gives the same users and hashes;
// and the line editors of SetPassword and DeleteUser agree with Parse: a
// user they set has exactly the new hash, one they delete is gone, and no
// other user changes.
func FuzzParse(f *testing.F) {
	f.Add([]byte(piLine + "\n" + legacyLine + "\r\n# comment\n\n" + userLine))
	newHash, err := HashOptions{Iterations: fuzzIterations}.Hash("fuzz-pw")
	if err != nil {
		f.Fatal(err)
	}
	newEntry, err := parseHash(newHash)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p := parseBytes(t, data)
		entries := 0
		for _, line := range bytes.SplitAfter(data, []byte{'\n'}) {
			if _, _, kind := splitLine(string(line)); kind == lineEntry {
				entries++
			}
		}
		if p.Len() > entries {
			t.Fatalf("%d users from %d lines with ':'", p.Len(), entries)
		}
		users := make([]string, 0, p.Len())
		for user, e := range p.users {
			users = append(users, user)
			switch {
			case user == "" || strings.Contains(user, ":") || strings.Trim(user, blanks) != user || user[0] == '#' || strings.Contains(user, "\n"):
				t.Fatalf("user %q cannot come from a line the broker reads", user)
			case len(e.hash) != hashLen || len(e.salt) == 0:
				t.Fatalf("user %q: %d-byte hash, %d-byte salt", user, len(e.hash), len(e.salt))
			case e.kind == kindPBKDF2 && (e.iterations < 1 || e.iterations > MaxIterations):
				t.Fatalf("user %q: %d iterations", user, e.iterations)
			case e.kind == kindSHA512 && e.iterations != 0:
				t.Fatalf("user %q: $6$ with iterations", user)
			}
		}
		slices.Sort(users)

		// Round trip through the writer.
		var out strings.Builder
		for _, u := range users {
			out.WriteString(u + ":" + p.users[u].String() + "\n")
		}
		q := parseBytes(t, []byte(out.String()))
		if q.Len() != p.Len() {
			t.Fatalf("round trip: %d users, want %d", q.Len(), p.Len())
		}
		for _, u := range users {
			if e, ok := q.users[u]; !ok || !sameEntry(e, p.users[u]) {
				t.Fatalf("round trip changed user %q", u)
			}
		}

		// The editors, on a few users and on one that is not there.
		targets := append(users[:min(len(users), 3):min(len(users), 3)], "fuzz-new-user")
		for _, u := range targets {
			set := parseBytes(t, setUserLine(data, u, []byte(u+":"+newHash)))
			if e, ok := set.users[u]; !ok || !sameEntry(e, newEntry) {
				t.Fatalf("setUserLine(%q): the user does not have the new hash", u)
			}
			if !set.Check(u, "fuzz-pw") {
				t.Fatalf("setUserLine(%q): the new password does not log in", u)
			}
			assertOthersKept(t, "setUserLine", p, set, u)

			del, found := deleteUserLines(data, u)
			if _, known := p.users[u]; known && !found {
				t.Fatalf("deleteUserLines(%q) did not find a user Parse found", u)
			}
			d := parseBytes(t, del)
			if _, ok := d.users[u]; ok {
				t.Fatalf("deleteUserLines(%q): the user is still there", u)
			}
			assertOthersKept(t, "deleteUserLines", p, d, u)
		}
	})
}

// assertOthersKept fails if after differs from before in any user but u.
func assertOthersKept(t *testing.T, what string, before, after *Passwords, u string) {
	t.Helper()
	for user, e := range before.users {
		if user == u {
			continue
		}
		if got, ok := after.users[user]; !ok || !sameEntry(got, e) {
			t.Fatalf("%s(%q) changed user %q", what, u, user)
		}
	}
	for user := range after.users {
		if _, ok := before.users[user]; !ok && user != u {
			t.Fatalf("%s(%q) made up user %q", what, u, user)
		}
	}
}

// FuzzHashLine: a hash written for a password, with any -H and -I, always
// verifies that password and no other, reads back to the same text, and
// as a line of a file logs its user in, whatever the user name and
// password hold (when they are accepted at all).
func FuzzHashLine(f *testing.F) {
	f.Add("pi", "raspberry", uint8(0), uint16(0))
	f.Fuzz(func(t *testing.T, user, password string, alg uint8, iterations uint16) {
		opts := HashOptions{Algorithm: Algorithm(alg % 2)}
		if opts.Algorithm == PBKDF2 {
			opts.Iterations = int(iterations % 64) // 0 = the default, 101
		}
		h, err := opts.Hash(password)
		if validatePassword(password) != nil {
			if err == nil {
				t.Fatalf("Hash accepted a password validatePassword refuses (%d bytes)", len(password))
			}
			return
		}
		if err != nil {
			t.Fatalf("Hash(%+v): %v", opts, err)
		}
		e, err := parseHash(h)
		if err != nil {
			t.Fatalf("parseHash(Hash()) = %v for %q", err, h)
		}
		if e.String() != h {
			t.Fatalf("entry.String() = %q, want %q", e.String(), h)
		}
		// Not password+"\x00" or password[1:]: HMAC pads short keys with
		// zero bytes, so PBKDF2 (and mosquitto) cannot tell passwords apart
		// that differ only in trailing NULs (TestPBKDF2TrailingNUL).
		if !e.matches(password) || e.matches(password+"x") || e.matches("x"+password) {
			t.Fatal("the hash does not verify its own password only")
		}
		if ValidateUsername(user) != nil {
			return
		}
		p := parseBytes(t, setUserLine(nil, user, []byte(user+":"+h)))
		if p.Len() != 1 || !p.Check(user, password) || p.Check(user, password+"x") {
			t.Fatalf("the line for %q does not log in exactly with its password", user)
		}
	})
}

// FuzzHashPlaintext (pimqtt passwd -U): on success every line keeps its
// place, comments and blank lines are kept, every user logs in with the
// plaintext password its last line held or keeps the hash it had, and
// running it again changes nothing (mosquitto_passwd -U re-hashes hashed
// lines, upstream 3416). On failure the error names a line of the input.
func FuzzHashPlaintext(f *testing.F) {
	f.Add([]byte("# users\nalice:alice pw\r\n" + piLine + "\n\nbob :  bob-pw \n"))
	opts := HashOptions{Iterations: fuzzIterations}
	f.Fuzz(func(t *testing.T, data []byte) {
		out, res, err := hashPlaintext(data, opts)
		lines := bytes.SplitAfter(data, []byte{'\n'})
		if err != nil {
			var n int
			if _, serr := fmt.Sscanf(err.Error(), "%d:", &n); serr != nil || n < 1 || n > len(lines) {
				t.Fatalf("error %q does not start with a line number of the input (%d lines)", err, len(lines))
			}
			return
		}
		outLines := bytes.SplitAfter(out, []byte{'\n'})
		if len(outLines) != len(lines) {
			t.Fatalf("%d lines became %d", len(lines), len(outLines))
		}
		type want struct {
			password string // plaintext, or
			hashed   *entry // the hash kept
		}
		last := map[string]want{}
		entries := 0
		for i, line := range lines {
			user, field, kind := splitLine(string(line))
			if kind != lineEntry {
				if !bytes.Equal(outLines[i], line) {
					t.Fatalf("line %d (no entry) changed from %q to %q", i+1, line, outLines[i])
				}
				continue
			}
			entries++
			if looksHashed(field) {
				e, err := parseHash(field)
				if err != nil {
					t.Fatalf("line %d: an unusable hash was accepted", i+1)
				}
				if !bytes.Equal(outLines[i], line) {
					t.Fatalf("line %d (hashed) changed from %q to %q", i+1, line, outLines[i])
				}
				last[user] = want{hashed: e}
				continue
			}
			_, rest, _ := strings.Cut(strings.Trim(string(line), blanks), ":")
			last[user] = want{password: strings.Trim(rest, blanks)}
		}
		if res.Hashed+res.Kept != entries {
			t.Fatalf("result %+v for %d entries", res, entries)
		}
		p := parseBytes(t, out)
		if p.Len() != len(last) {
			t.Fatalf("%d users after -U, want %d", p.Len(), len(last))
		}
		for user, w := range last {
			switch {
			case w.hashed != nil:
				if e, ok := p.users[user]; !ok || !sameEntry(e, w.hashed) {
					t.Fatalf("user %q lost its hash", user)
				}
			case !p.Check(user, w.password):
				t.Fatalf("user %q does not log in with its plaintext password", user)
			}
		}
		again, res2, err := hashPlaintext(out, opts)
		if err != nil || res2.Hashed != 0 || !bytes.Equal(again, out) {
			t.Fatalf("a second -U changed the file: %+v, %v", res2, err)
		}
	})
}
