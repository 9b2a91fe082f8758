package auth

import (
	"bytes"
	"crypto/pbkdf2"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"testing"
)

const vectorDir = "../testdata/passwd/"

// Lines from the test vector files, reused by the inline cases below.
const (
	piLine     = "pi:$7$101$cGktbGVkLXNhbHQx$4Hp42OEI9/V5rF7Iz4iekc3twnSSuZjlJlfEdK6UrkP82dHTVF9idms4ot3KpAEkT3E6AZYtFrF3jzS99Obyxg=="
	legacyLine = "legacy:$6$cGltcXR0LXNhbHQh$jX0H6E8Nc1/E12Jed5gT9+G5YeNjV5Cez91Rvi5eBjWd0q6ertmhuu8mVYbV0YK7BC5USg1MBYRM9+XQFdZ6Xw=="
	userLine   = "user:$7$1000$h0tqVxBwkB9rKAXukTtffzdbBQtNy1q5FBTDwSW4hucfjpqunBbxW10NVnRk7Cfh0lQndnOv2+k4wJavgz1JNw==$02ujkUXlKkJGFzlQHNjUgXwG3XRB1mr3vs8NX5teGCJGbN4hdgSpHNHuj47j8r5SHXsO7GeHpmkpPNhLraVVcQ=="
)

// logRecord is one JSON log line as written by slog.NewJSONHandler.
type logRecord struct {
	Level  string `json:"level"`
	Msg    string `json:"msg"`
	At     string `json:"at"`
	User   string `json:"user"`
	Reason string `json:"reason"`
	Ignore string `json:"ignored"`
}

// captureLogger returns a logger whose output can be decoded afterwards.
func captureLogger() (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	return slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), &buf
}

func decodeLogs(t *testing.T, buf *bytes.Buffer, level string) []logRecord {
	t.Helper()
	var out []logRecord
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if line == "" {
			continue
		}
		var r logRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if r.Level == level {
			out = append(out, r)
		}
	}
	return out
}

func TestVectors(t *testing.T) {
	tests := []struct {
		file, user, password string
		want                 bool
	}{
		// mosquitto's own test vector (2.1 format: 1000 iterations, 64-byte salt).
		{"mosquitto-vector.txt", "user", "password", true},
		{"mosquitto-vector.txt", "user", "Password", false},
		{"mosquitto-vector.txt", "user", "password ", false},
		{"mosquitto-vector.txt", "user", "", false},
		{"mosquitto-vector.txt", "User", "password", false},
		{"mosquitto-vector.txt", "nobody", "password", false},
		// $7$101 lines computed with python3 hashlib (commands in the file).
		{"pbkdf2-101.txt", "pi", "raspberry", true},
		{"pbkdf2-101.txt", "pi", "raspberrY", false},
		{"pbkdf2-101.txt", "émile", "pässwörd ✓", true},
		{"pbkdf2-101.txt", "émile", "passwörd ✓", false},
		// $6$ lines computed with python3 hashlib (commands in the file).
		{"sha512.txt", "legacy", "hunter2", true},
		{"sha512.txt", "legacy", "hunter3", false},
		{"sha512.txt", "legacy16", "pässwörd ✓", true},
		{"sha512.txt", "legacy16", "hunter2", false},
		// Good lines among comments, CRLF, blanks and malformed lines.
		{"mixed.txt", "pi", "raspberry", true},
		{"mixed.txt", "legacy", "hunter2", true},
		{"mixed.txt", "user", "password", true},
		{"mixed.txt", "pi", "password", false},
		{"mixed.txt", "badbase64", "raspberry", false},
		{"mixed.txt", "zeroiter", "raspberry", false},
		{"mixed.txt", "hugeiter", "raspberry", false},
		{"mixed.txt", "shorthash", "raspberry", false},
		{"mixed.txt", "nohash", "", false},
		{"mixed.txt", "no-colon-line", "", false},
		{"mixed.txt", "", "raspberry", false},
	}
	loaded := make(map[string]*Passwords)
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%s/%s", tt.file, tt.user, tt.password), func(t *testing.T) {
			p, ok := loaded[tt.file]
			if !ok {
				var err error
				p, err = Load(vectorDir+tt.file, nil)
				if err != nil {
					t.Fatal(err)
				}
				loaded[tt.file] = p
			}
			if got := p.Check(tt.user, tt.password); got != tt.want {
				t.Errorf("Check(%q, %q) = %v, want %v", tt.user, tt.password, got, tt.want)
			}
		})
	}
}

func TestLoadLen(t *testing.T) {
	tests := []struct {
		file string
		want int
	}{
		{"mosquitto-vector.txt", 1},
		{"pbkdf2-101.txt", 2},
		{"sha512.txt", 2},
		{"mixed.txt", 3},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			p, err := Load(vectorDir+tt.file, nil)
			if err != nil {
				t.Fatal(err)
			}
			if p.Len() != tt.want {
				t.Errorf("Len() = %d, want %d", p.Len(), tt.want)
			}
		})
	}
}

// TestMixedWarnings checks that every malformed line of mixed.txt is
// reported once, with its file:line, user and reason, and that no hash
// material reaches the log.
func TestMixedWarnings(t *testing.T) {
	logger, buf := captureLogger()
	name := vectorDir + "mixed.txt"
	// Parse, not Load: a checked-out file has the umask's mode, and Load's
	// warning about that is TestLoadExposureWarning's.
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := Parse(f, name, logger); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		line   int
		user   string
		reason string
	}{
		{9, "", "no ':' separator"},
		{10, "badbase64", "salt is not valid base64"},
		{11, "badtype", `unsupported hash type "5"`},
		{12, "zeroiter", "iteration count"},
		{13, "negiter", "iteration count"},
		{14, "hugeiter", "iteration count"},
		{15, "shorthash", "hash is 33 bytes, want 64"},
		{16, "nohash", "no password hash"},
		{17, "", "empty user name"},
	}
	got := decodeLogs(t, buf, "WARN")
	if len(got) != len(want) {
		t.Fatalf("got %d warnings, want %d:\n%s", len(got), len(want), buf)
	}
	for i, w := range want {
		g := got[i]
		if wantAt := fmt.Sprintf("%s:%d", name, w.line); g.At != wantAt || g.User != w.user || !strings.Contains(g.Reason, w.reason) {
			t.Errorf("warning %d = at %q user %q reason %q; want at %q user %q reason containing %q",
				i, g.At, g.User, g.Reason, wantAt, w.user, w.reason)
		}
	}
	for _, secret := range []string{"cGktbGVkLXNhbHQx", "4Hp42OEI9", "no-colon-line"} {
		if strings.Contains(buf.String(), secret) {
			t.Errorf("log contains %q (hash material or raw line content):\n%s", secret, buf)
		}
	}
}

// pbkdf2Line builds a $7$ line for cases that need unusual parameters. The
// algorithm itself is checked against independent vectors in TestVectors.
func pbkdf2Line(user, password string, iterations int, salt []byte) string {
	sum, err := pbkdf2.Key(sha512.New, password, salt, iterations, 64)
	if err != nil {
		panic(err)
	}
	return fmt.Sprintf("%s:$7$%d$%s$%s", user, iterations, b64.EncodeToString(salt), b64.EncodeToString(sum))
}

func TestParse(t *testing.T) {
	// Two lines for "dup" with different passwords.
	dupFirst := pbkdf2Line("dup", "first", 101, []byte("saltsaltsalt"))
	dupSecond := pbkdf2Line("dup", "second", 101, []byte("tlastlastlas"))
	type login struct {
		user, password string
		want           bool
	}
	tests := []struct {
		name     string
		input    string
		len      int
		warnings int
		logins   []login
	}{
		{"empty input", "", 0, 0, []login{{"pi", "raspberry", false}}},
		{"only comments and blanks", "# a\n\n   \n\t# b\r\n", 0, 0, nil},
		{"no trailing newline", piLine, 1, 0, []login{{"pi", "raspberry", true}}},
		{"CRLF", piLine + "\r\n" + legacyLine + "\r\n", 2, 0,
			[]login{{"pi", "raspberry", true}, {"legacy", "hunter2", true}}},
		{"blanks around fields", "  pi \t: " + strings.TrimPrefix(piLine, "pi:") + " \t\r\n", 1, 0,
			[]login{{"pi", "raspberry", true}, {" pi ", "raspberry", false}}},
		// mosquitto splits with strtok(":"), so anything after a second ':' is ignored.
		{"text after a second colon", piLine + ":extra\n", 1, 0, []login{{"pi", "raspberry", true}}},
		// strtok also skips empty fields: mosquitto 2.0.11 logs "pi" in with "pi::HASH" (checked
		// against the real broker).
		{"empty field before the hash", strings.Replace(piLine, ":", "::", 1) + "\n", 1, 0,
			[]login{{"pi", "raspberry", true}}},
		{"blank field before the hash", strings.Replace(piLine, ":", ": :", 1) + "\n", 0, 1, nil},
		{"duplicate: last wins", dupFirst + "\n" + dupSecond + "\n", 1, 1,
			[]login{{"dup", "second", true}, {"dup", "first", false}}},
		// The broker drops the malformed line and then finds the earlier one.
		{"duplicate: last usable wins", dupFirst + "\ndup:$7$101$!!!$!!!\n", 1, 1,
			[]login{{"dup", "first", true}}},
		{"one iteration", pbkdf2Line("one", "pw", 1, []byte("s")), 1, 0, []login{{"one", "pw", true}}},
		{"64-byte salt", pbkdf2Line("big", "pw", 10, bytes.Repeat([]byte("x"), 64)), 1, 0, []login{{"big", "pw", true}}},
		{"iterations at cap parsed", "cap:$7$1000000$c2FsdA==$" + b64.EncodeToString(make([]byte, 64)), 1, 0, nil},
		{"iterations over cap", "over:$7$1000001$c2FsdA==$" + b64.EncodeToString(make([]byte, 64)), 0, 1, nil},
		{"iterations not a number", "nan:$7$1e3$c2FsdA==$" + b64.EncodeToString(make([]byte, 64)), 0, 1, nil},
		{"argon2id unsupported", "a:$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", 0, 1, nil},
		{"no dollar", "plain:password\n", 0, 1, []login{{"plain", "password", false}}},
		{"$6$ with iteration field", "x:$6$101$c2FsdA==$" + b64.EncodeToString(make([]byte, 64)), 0, 1, nil},
		{"empty salt", "x:$6$$" + b64.EncodeToString(make([]byte, 64)), 0, 1, nil},
		{"unpadded base64", "x:$6$c2FsdA$" + b64.EncodeToString(make([]byte, 64)), 0, 1, nil},
		{"over-long line then good line", strings.Repeat("a", maxLineLen+10) + ":x\n" + piLine + "\n", 1, 1,
			[]login{{"pi", "raspberry", true}}},
		{"over-long last line", piLine + "\n" + strings.Repeat("b", maxLineLen+10), 1, 1,
			[]login{{"pi", "raspberry", true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logger, buf := captureLogger()
			p, err := Parse(strings.NewReader(tt.input), "test", logger)
			if err != nil {
				t.Fatal(err)
			}
			if p.Len() != tt.len {
				t.Errorf("Len() = %d, want %d", p.Len(), tt.len)
			}
			if n := len(decodeLogs(t, buf, "WARN")); n != tt.warnings {
				t.Errorf("%d warnings, want %d:\n%s", n, tt.warnings, buf)
			}
			for _, l := range tt.logins {
				if got := p.Check(l.user, l.password); got != l.want {
					t.Errorf("Check(%q, %q) = %v, want %v", l.user, l.password, got, l.want)
				}
			}
		})
	}
}

func TestDuplicateWarningNamesBothLines(t *testing.T) {
	logger, buf := captureLogger()
	input := piLine + "\n# comment\n" + strings.Replace(piLine, "pi:", "pi :", 1) + "\n"
	if _, err := Parse(strings.NewReader(input), "pw.txt", logger); err != nil {
		t.Fatal(err)
	}
	warns := decodeLogs(t, buf, "WARN")
	if len(warns) != 1 {
		t.Fatalf("got %d warnings, want 1:\n%s", len(warns), buf)
	}
	w := warns[0]
	if w.At != "pw.txt:3" || w.Ignore != "pw.txt:1" || w.User != "pi" || !strings.Contains(w.Msg, "later line wins") {
		t.Errorf("duplicate warning = %+v", w)
	}
}

func TestLoadErrors(t *testing.T) {
	_, err := Load(vectorDir+"does-not-exist.txt", nil)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) error = %v, want fs.ErrNotExist", err)
	}
	_, err = Load(vectorDir, nil) // a directory: opens, but cannot be read
	if err == nil {
		t.Error("Load(directory) succeeded")
	}
}

type failingReader struct{ after string }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.after != "" {
		n := copy(p, r.after)
		r.after = r.after[n:]
		return n, nil
	}
	return 0, errors.New("disk on fire")
}

func TestParseReadError(t *testing.T) {
	_, err := Parse(&failingReader{after: piLine + "\n"}, "broken", nil)
	if err == nil || !strings.Contains(err.Error(), "disk on fire") || !strings.Contains(err.Error(), "broken:2") {
		t.Errorf("Parse error = %v, want the reader's error with position broken:2", err)
	}
}

// TestCheckUnknownUser only checks the answer; that an unknown user still
// costs a hash is checked structurally in TestDecoyShape.
func TestCheckUnknownUser(t *testing.T) {
	p, err := Load(vectorDir+"pbkdf2-101.txt", nil)
	if err != nil {
		t.Fatal(err)
	}
	var zero Passwords
	var nilP *Passwords
	tests := []struct {
		name string
		p    *Passwords
		user string
		pass string
	}{
		{"unknown user", p, "mallory", "raspberry"},
		{"unknown user, empty password", p, "mallory", ""},
		{"empty user", p, "", ""},
		{"zero Passwords", &zero, "pi", "raspberry"},
		{"nil Passwords", nilP, "pi", "raspberry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.p.Check(tt.user, tt.pass) {
				t.Errorf("Check(%q, %q) = true", tt.user, tt.pass)
			}
		})
	}
	if nilP.Len() != 0 || zero.Len() != 0 {
		t.Error("nil or zero Passwords has users")
	}
}

// TestDecoyShape checks that unknown users are hashed with the parameters
// most real users have, so that their refusal takes as long.
func TestDecoyShape(t *testing.T) {
	tests := []struct {
		name       string
		input      string
		kind       hashKind
		iterations int
		saltLen    int
	}{
		{"empty file", "", kindPBKDF2, 101, 12},
		{"1000 iterations", userLine, kindPBKDF2, 1000, 64},
		{"sha512 majority", legacyLine + "\n" + strings.Replace(legacyLine, "legacy:", "l2:", 1) + "\n" + piLine, kindSHA512, 0, 12},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse(strings.NewReader(tt.input), "t", nil)
			if err != nil {
				t.Fatal(err)
			}
			d := p.decoy
			if d.kind != tt.kind || d.iterations != tt.iterations || len(d.salt) != tt.saltLen || len(d.hash) != 64 {
				t.Errorf("decoy = kind %d, %d iterations, %d-byte salt; want kind %d, %d, %d",
					d.kind, d.iterations, len(d.salt), tt.kind, tt.iterations, tt.saltLen)
			}
		})
	}
}

func TestParseHashReasons(t *testing.T) {
	zeros := b64.EncodeToString(make([]byte, 64))
	tests := []struct {
		hash, reason string
	}{
		{"abc", "does not start with '$'"},
		{"$7$101$c2FsdA==", "has 3 fields, want 4"},
		{"$6$c2FsdA==$" + zeros + "$x", "has 4 fields, want 3"},
		{"$7$0$c2FsdA==$" + zeros, "iteration count"},
		{"$7$-1$c2FsdA==$" + zeros, "iteration count"},
		{"$7$99999999999999999999$c2FsdA==$" + zeros, "iteration count"},
		{"$7$101$%%%$" + zeros, "salt is not valid base64"},
		{"$7$101$c2FsdA==$%%%", "hash is not valid base64"},
		{"$7$101$c2FsdA==$c2FsdA==", "hash is 4 bytes, want 64"},
		{"$1$c2FsdA==$" + zeros, `unsupported hash type "1"`},
		{"$\x1b[31mred$c2FsdA==$" + zeros, `unsupported hash type "?[31mred"`},
	}
	for _, tt := range tests {
		t.Run(tt.reason, func(t *testing.T) {
			_, err := parseHash(tt.hash)
			if err == nil || !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("parseHash(%q) error = %v, want %q", tt.hash, err, tt.reason)
			}
		})
	}
}
