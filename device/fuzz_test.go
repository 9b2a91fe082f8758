package device

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// FuzzParseCommand: whatever a client publishes on a command topic,
// ParseCommand answers a level of 0 or 1, or an error wrapping
// ErrUnknownCommand with level 0; it leaves the payload alone; it accepts
// only the documented forms; and the answer depends on the current level
// only for TOGGLE, which then inverts it. Seed corpus:
// testdata/fuzz/FuzzParseCommand (the seed's "0"/"1", Home Assistant's
// JSON, the forms a phone app sends).
func FuzzParseCommand(f *testing.F) {
	f.Add([]byte("1"), 0)
	f.Fuzz(func(t *testing.T, payload []byte, current int) {
		orig := bytes.Clone(payload)
		got, err := ParseCommand(payload, current)
		if !bytes.Equal(payload, orig) {
			t.Fatalf("ParseCommand changed its payload from %q to %q", orig, payload)
		}
		if err != nil {
			if !errors.Is(err, ErrUnknownCommand) {
				t.Fatalf("ParseCommand(%q) error %v does not wrap ErrUnknownCommand", payload, err)
			}
			if got != 0 {
				t.Fatalf("ParseCommand(%q) = %d with an error", payload, got)
			}
			return
		}
		if got != 0 && got != 1 {
			t.Fatalf("ParseCommand(%q, %d) = %d, want 0 or 1", payload, current, got)
		}
		if len(payload) > maxCommandLen {
			t.Fatalf("ParseCommand accepted %d bytes, over the %d-byte limit", len(payload), maxCommandLen)
		}
		if !documentedForm(payload) {
			t.Fatalf("ParseCommand(%q) = %d: not one of the documented forms", payload, got)
		}
		low, lowErr := ParseCommand(payload, 0)
		high, highErr := ParseCommand(payload, 1)
		switch {
		case lowErr != nil || highErr != nil:
			t.Fatalf("ParseCommand(%q) depends on the level for its verdict: %v / %v", payload, lowErr, highErr)
		case low == high: // an absolute command
		case low != 1 || high != 0:
			t.Fatalf("ParseCommand(%q): %d from 0, %d from 1: neither absolute nor a toggle", payload, low, high)
		}
		want := low
		if current != 0 {
			want = high
		}
		if got != want {
			t.Fatalf("ParseCommand(%q, %d) = %d, but %d from level %d", payload, current, got, want, min(current, 1))
		}
	})
}

// documentedForm is ParseCommand's doc comment as a predicate, written
// independently of its code: the single bytes 0x00/0x01; or, surrounded by
// whitespace, 0/1, ON/OFF, true/false, TOGGLE in any case; or a JSON
// object with a string "state".
func documentedForm(payload []byte) bool {
	if len(payload) == 1 && payload[0] <= 1 {
		return true
	}
	p := strings.TrimSpace(string(payload))
	if isWord(p, "0", "1", "on", "off", "true", "false", "toggle") {
		return true
	}
	if !strings.HasPrefix(p, "{") || !json.Valid([]byte(p)) {
		return false
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal([]byte(p), &obj) != nil {
		return false
	}
	for k, v := range obj {
		// encoding/json matches member names case-insensitively
		// (Unicode folding: "ſtate" is "state" to it).
		var s string
		if strings.EqualFold(k, "state") && json.Unmarshal(v, &s) == nil && isWord(strings.TrimSpace(s), "on", "off", "toggle") {
			return true
		}
	}
	return false
}

// isWord reports whether s is one of words in any case. strings.ToLower
// maps a few non-ASCII letters to ASCII ones (the Kelvin sign to k), none
// of them in these words, so s must be ASCII too.
func isWord(s string, words ...string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	for _, w := range words {
		if strings.EqualFold(s, w) {
			return true
		}
	}
	return false
}
