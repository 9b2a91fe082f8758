package auth

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestHashPlaintext: plaintext passwords are hashed in place, every other
// line (comments, blanks, lines already hashed in any format mosquitto
// reads) is kept byte for byte, and each line keeps its own ending.
func TestHashPlaintext(t *testing.T) {
	const (
		hashed7 = `\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==`
		hashed6 = `\$6\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==`
	)
	type login struct{ user, password string }
	tests := []struct {
		name    string
		opts    HashOptions
		input   string
		want    string // a regular expression for the whole file
		hashed  int
		kept    int
		logins  []login
		refused []login
	}{
		{
			name: "mixed file",
			input: "# users\r\nalice:alice-pw\r\n" + piLine + "\n\n  bob :  pw with spaces \t\n" +
				legacyLine + "\ncarol:pässwörd ✓",
			want: `^# users\r\nalice:` + hashed7 + `\r\n` + regexp.QuoteMeta(piLine) + `\n\nbob:` + hashed7 + `\n` +
				regexp.QuoteMeta(legacyLine) + `\ncarol:` + hashed7 + `$`,
			hashed: 3, kept: 2,
			logins:  []login{{"alice", "alice-pw"}, {"bob", "pw with spaces"}, {"carol", "pässwörd ✓"}, {"pi", "raspberry"}, {"legacy", "hunter2"}},
			refused: []login{{"bob", "  pw with spaces"}, {"alice", "alice-pw\r"}},
		},
		{
			name:   "-H sha512",
			opts:   HashOptions{Algorithm: SHA512},
			input:  "alice:alice-pw\n" + piLine + "\n",
			want:   `^alice:` + hashed6 + `\n` + regexp.QuoteMeta(piLine) + `\n$`,
			hashed: 1, kept: 1,
			logins: []login{{"alice", "alice-pw"}, {"pi", "raspberry"}},
		},
		{
			name:   "-I 5",
			opts:   HashOptions{Iterations: 5},
			input:  "alice:alice-pw\n",
			want:   `^alice:\$7\$5\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==\n$`,
			hashed: 1,
			logins: []login{{"alice", "alice-pw"}},
		},
		{
			// What the broker reads as hashed is kept, odd as it looks:
			// an empty field before the hash, text after it, mosquitto
			// 2.1's 64-byte salt.
			name:   "hashed lines in every shape the broker reads",
			input:  strings.Replace(piLine, ":", "::", 1) + "\n" + legacyLine + ":extra\n" + userLine + "\nnew:pw\n",
			want:   `^` + regexp.QuoteMeta(strings.Replace(piLine, ":", "::", 1)+"\n"+legacyLine+":extra\n"+userLine) + `\nnew:` + hashed7 + `\n$`,
			hashed: 1, kept: 3,
			logins: []login{{"pi", "raspberry"}, {"legacy", "hunter2"}, {"user", "password"}, {"new", "pw"}},
		},
		{
			name:   "a password that only starts with a dollar is plaintext",
			input:  "alice:$ecret\nbob:$5$x\n",
			want:   `^alice:` + hashed7 + `\nbob:` + hashed7 + `\n$`,
			hashed: 2,
			logins: []login{{"alice", "$ecret"}, {"bob", "$5$x"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "passwd")
			if err := os.WriteFile(path, []byte(tt.input), 0o644); err != nil {
				t.Fatal(err)
			}
			res, err := HashPlaintext(path, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if res.Hashed != tt.hashed || res.Kept != tt.kept {
				t.Errorf("result %+v, want %d hashed, %d kept", res, tt.hashed, tt.kept)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !regexp.MustCompile(tt.want).Match(data) {
				t.Errorf("file =\n%q\nwant it to match\n%s", data, tt.want)
			}
			p := mustLoad(t, path)
			for _, l := range tt.logins {
				if !p.Check(l.user, l.password) {
					t.Errorf("Check(%q, %q) = false", l.user, l.password)
				}
			}
			for _, l := range tt.refused {
				if p.Check(l.user, l.password) {
					t.Errorf("Check(%q, %q) = true", l.user, l.password)
				}
			}
			assertMode0600(t, path)
			assertOnlyFiles(t, dir, "passwd")
		})
	}
}

// TestHashPlaintextNothingToDo: a file with nothing to hash is not
// rewritten at all (its mode stays), and running -U twice is harmless,
// unlike mosquitto_passwd -U (upstream 3416).
func TestHashPlaintextNothingToDo(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(path, []byte("alice:pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := HashPlaintext(path, HashOptions{}); err != nil {
		t.Fatal(err)
	}
	once, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	res, err := HashPlaintext(path, HashOptions{Algorithm: SHA512})
	if err != nil {
		t.Fatal(err)
	}
	if res != (HashResult{Kept: 1}) {
		t.Errorf("second run: %+v, want 1 kept", res)
	}
	twice, _ := os.ReadFile(path)
	if string(twice) != string(once) {
		t.Errorf("second run changed the file:\n%q\n%q", once, twice)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode changed to %v by a run that wrote nothing", fi.Mode().Perm())
	}
	if !mustLoad(t, path).Check("alice", "pw") {
		t.Error("alice's password lost")
	}
}

// TestHashPlaintextRefusals: a line that cannot be hashed safely stops the
// whole run with its file:line, leaves the file as it was, and never
// quotes the password.
func TestHashPlaintextRefusals(t *testing.T) {
	const good = "# head\nalice:secret-a\n"
	tests := []struct {
		name, line, want string
	}{
		{"no colon", "secret-pw", "no ':' between user name and password"},
		{"empty user", ":secret-pw", "empty user name"},
		{"blank user", " \t:secret-pw", "empty user name"},
		{"no password", "bob:", `user "bob": no password`},
		{"blank password", "bob: \t", `user "bob": no password`},
		{"colon in the password", "bob:secret:pw", "holds a ':'"},
		{"empty field first", "bob::secret-pw", "holds a ':'"},
		{"control character in the user", "b\x01b:secret-pw", "control characters"},
		{"invalid UTF-8 user", "b\xffb:secret-pw", "not valid UTF-8"},
		{"password too long", "bob:secret-pw" + strings.Repeat("x", MaxPasswordLen), "longer than 512 bytes"},
		{"broken $7$", "bob:$7$0$c2FsdA==$secret-pw", "looks like a hash but cannot be used (iteration count"},
		{"broken $6$", "bob:$6$c2FsdA==$secret-pw", "looks like a hash but cannot be used (hash is not valid base64"},
		{"$7$ with three fields", "bob:$7$101$secret-pw", "looks like a hash but cannot be used ($7$ hash has 3 fields"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "passwd")
			input := good + tt.line + "\ncarol:secret-c\n"
			if err := os.WriteFile(path, []byte(input), 0o644); err != nil {
				t.Fatal(err)
			}
			res, err := HashPlaintext(path, HashOptions{})
			if err == nil {
				t.Fatalf("HashPlaintext succeeded: %+v", res)
			}
			msg := err.Error()
			if !strings.Contains(msg, path+":3: ") || !strings.Contains(msg, tt.want) || !strings.Contains(msg, "nothing was changed") {
				t.Errorf("error %q, want %s:3 and %q", msg, path, tt.want)
			}
			if strings.Contains(msg, "secret") {
				t.Errorf("error quotes the password: %q", msg)
			}
			if data, _ := os.ReadFile(path); string(data) != input {
				t.Errorf("file changed to %q", data)
			}
			if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
				t.Errorf("mode changed to %v", fi.Mode().Perm())
			}
			assertOnlyFiles(t, dir, "passwd")
		})
	}
}

func TestHashPlaintextErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := HashPlaintext(filepath.Join(dir, "missing"), HashOptions{}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}
	path := filepath.Join(dir, "passwd")
	if err := os.WriteFile(path, []byte("alice:pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := HashPlaintext(path, HashOptions{Algorithm: SHA512, Iterations: 3}); err == nil || !strings.Contains(err.Error(), "sha512-pbkdf2 only") {
		t.Errorf("sha512 with iterations: %v", err)
	}
	if data, _ := os.ReadFile(path); string(data) != "alice:pw\n" {
		t.Errorf("file changed to %q", data)
	}
}

// TestSetPasswordWith: -H and -I reach the line written, and refused
// options leave the file alone.
func TestSetPasswordWith(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	if err := SetPasswordWith(path, "alice", "a-pw", true, HashOptions{Algorithm: SHA512}); err != nil {
		t.Fatal(err)
	}
	if err := SetPasswordWith(path, "bob", "b-pw", false, HashOptions{Iterations: 2000}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^alice:\$6\$[^$]{16}\$[^$]{88}\nbob:\$7\$2000\$[^$]{16}\$[^$]{88}\n$`).Match(data) {
		t.Errorf("file = %q", data)
	}
	p := mustLoad(t, path)
	if !p.Check("alice", "a-pw") || !p.Check("bob", "b-pw") {
		t.Error("the users cannot log in")
	}
	if err := SetPasswordWith(path, "carol", "c-pw", false, HashOptions{Iterations: MaxIterations + 1}); err == nil {
		t.Error("too many iterations accepted")
	}
	if after, _ := os.ReadFile(path); string(after) != string(data) {
		t.Errorf("refused options changed the file to %q", after)
	}
}
