package auth

import (
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
