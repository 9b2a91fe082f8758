package auth

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

func TestHashPasswordFormat(t *testing.T) {
	// What mosquitto_passwd 2.0 writes: 12-byte salt = 16 base64 chars,
	// 64-byte hash = 86 chars + "==".
	format := regexp.MustCompile(`^\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==$`)
	seen := make(map[string]bool)
	for _, pw := range []string{"x", "raspberry", "pässwörd ✓", "with:colon and $dollar", strings.Repeat("p", MaxPasswordLen)} {
		h, err := HashPassword(pw)
		if err != nil {
			t.Fatalf("HashPassword(%q): %v", pw, err)
		}
		if !format.MatchString(h) {
			t.Errorf("HashPassword(%q) = %q, not in mosquitto_passwd 2.0 format", pw, h)
		}
		e, err := parseHash(h)
		if err != nil {
			t.Fatalf("parseHash(HashPassword(%q)): %v", pw, err)
		}
		if !e.matches(pw) || e.matches(pw+"x") {
			t.Errorf("hash of %q does not verify correctly", pw)
		}
		salt := strings.Split(h, "$")[3]
		if seen[salt] {
			t.Errorf("salt %s reused", salt)
		}
		seen[salt] = true
	}
}

func TestHashPasswordRejects(t *testing.T) {
	for _, pw := range []string{"", strings.Repeat("p", MaxPasswordLen+1)} {
		if h, err := HashPassword(pw); err == nil {
			t.Errorf("HashPassword(%d bytes) = %q, want error", len(pw), h)
		}
	}
}

func TestValidateUsername(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"alice", true},
		{"émile", true},
		{"with space", true},
		{"a#b", true},
		{"device/led-1+x", true},
		{strings.Repeat("u", MaxUsernameLen), true},
		{"", false},
		{"a:b", false},
		{"a\tb", false},
		{"a\nb", false},
		{"a\x00b", false},
		{"a\x7fb", false},
		{"a\u0085b", false}, // C1 control
		{" alice", false},
		{"alice ", false},
		{"#alice", false},
		{"\xff\xfe", false},
		{strings.Repeat("u", MaxUsernameLen+1), false},
	}
	for _, tt := range tests {
		err := ValidateUsername(tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateUsername(%.20q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestHashOptions(t *testing.T) {
	salt16, hash88 := `[A-Za-z0-9+/]{16}`, `[A-Za-z0-9+/]{86}==`
	tests := []struct {
		opts   HashOptions
		format string
	}{
		{HashOptions{}, `^\$7\$101\$` + salt16 + `\$` + hash88 + `$`},
		{HashOptions{Algorithm: PBKDF2, Iterations: 1}, `^\$7\$1\$` + salt16 + `\$` + hash88 + `$`},
		{HashOptions{Algorithm: PBKDF2, Iterations: 1000}, `^\$7\$1000\$` + salt16 + `\$` + hash88 + `$`},
		{HashOptions{Algorithm: SHA512}, `^\$6\$` + salt16 + `\$` + hash88 + `$`},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v/%d", tt.opts.Algorithm, tt.opts.Iterations), func(t *testing.T) {
			h, err := tt.opts.Hash("pässwörd ✓")
			if err != nil {
				t.Fatal(err)
			}
			if !regexp.MustCompile(tt.format).MatchString(h) {
				t.Errorf("Hash = %q, want %s", h, tt.format)
			}
			e, err := parseHash(h)
			if err != nil {
				t.Fatalf("parseHash(Hash()): %v", err)
			}
			if !e.matches("pässwörd ✓") || e.matches("passwörd ✓") {
				t.Error("the hash does not verify its own password only")
			}
			if e.String() != h {
				t.Errorf("entry.String() = %q, want the line it was parsed from %q", e.String(), h)
			}
		})
	}
}

func TestHashOptionsRefused(t *testing.T) {
	tests := []struct {
		opts HashOptions
		want string
	}{
		{HashOptions{Algorithm: PBKDF2, Iterations: -1}, "want 1 to 1000000"},
		{HashOptions{Algorithm: PBKDF2, Iterations: MaxIterations + 1}, "want 1 to 1000000"},
		{HashOptions{Algorithm: SHA512, Iterations: 5}, "sha512-pbkdf2 only"},
		{HashOptions{Algorithm: 7}, "unknown hash algorithm"},
	}
	for _, tt := range tests {
		if err := tt.opts.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v.Validate() = %v, want %q", tt.opts, err, tt.want)
		}
		if h, err := tt.opts.Hash("pw"); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v.Hash() = %q, %v; want error %q", tt.opts, h, err, tt.want)
		}
	}
}

func TestParseAlgorithm(t *testing.T) {
	for _, a := range []Algorithm{PBKDF2, SHA512} {
		got, err := ParseAlgorithm(a.String())
		if err != nil || got != a {
			t.Errorf("ParseAlgorithm(%q) = %v, %v", a.String(), got, err)
		}
	}
	// mosquitto_passwd compares with strcmp: names are case-sensitive.
	for _, name := range []string{"", "md5", "SHA512", "sha512-PBKDF2", "pbkdf2", "argon2id"} {
		if _, err := ParseAlgorithm(name); err == nil || !strings.Contains(err.Error(), "unknown hash type") {
			t.Errorf("ParseAlgorithm(%q) = %v, want unknown hash type", name, err)
		}
	}
}

// TestPBKDF2TrailingNUL records what FuzzHashLine found (its input is the
// seed nul-nul-and-nul): for "$7$" hashes, passwords that differ only in
// trailing NUL bytes are the same password, because HMAC pads keys shorter
// than its block with zeros. mosquitto computes the same PBKDF2, so its
// broker cannot tell them apart either; "$6$" hashes can.
func TestPBKDF2TrailingNUL(t *testing.T) {
	tests := []struct {
		alg              Algorithm
		password, other  string
		otherAlsoMatches bool
	}{
		{PBKDF2, "\x00\x00", "\x00", true},
		{PBKDF2, "pw", "pw\x00", true},
		{PBKDF2, "pw", "\x00pw", false},
		{PBKDF2, "pw", "pw ", false},
		{SHA512, "pw", "pw\x00", false},
		{SHA512, "\x00\x00", "\x00", false},
	}
	for _, tt := range tests {
		h, err := HashOptions{Algorithm: tt.alg}.Hash(tt.password)
		if err != nil {
			t.Fatal(err)
		}
		e, err := parseHash(h)
		if err != nil {
			t.Fatal(err)
		}
		if !e.matches(tt.password) || e.matches(tt.other) != tt.otherAlsoMatches {
			t.Errorf("%v hash of %q: matches %q = %v, want %v", tt.alg, tt.password, tt.other, e.matches(tt.other), tt.otherAlsoMatches)
		}
	}
}
