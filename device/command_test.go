package device

import (
	"bytes"
	"errors"
	"testing"
)

func TestParseCommand(t *testing.T) {
	accept := []struct {
		payload string
		current int
		want    int
	}{
		{"1", 0, 1},
		{"0", 1, 0},
		{"\x01", 0, 1},
		{"\x00", 1, 0},
		{"ON", 0, 1},
		{"on", 0, 1},
		{"On", 0, 1},
		{"oN", 0, 1},
		{"OFF", 1, 0},
		{"off", 1, 0},
		{"Off", 1, 0},
		{"true", 0, 1},
		{"TRUE", 0, 1},
		{"True", 0, 1},
		{"false", 1, 0},
		{"FALSE", 1, 0},
		{"TOGGLE", 0, 1},
		{"TOGGLE", 1, 0},
		{"toggle", 0, 1},
		{"Toggle", 1, 0},
		{"toggle", 255, 0}, // any non-zero level counts as high
		{" 1 ", 0, 1},
		{"\t0\r\n", 1, 0},
		{"ON\n", 0, 1},
		{"  off", 1, 0},
		{`{"state":"ON"}`, 0, 1},
		{`{"state":"OFF"}`, 1, 0},
		{`{"state":"on"}`, 0, 1},
		{`{"state":"Off"}`, 1, 0},
		{`{"state":"TOGGLE"}`, 0, 1},
		{`{"state":"toggle"}`, 1, 0},
		{`{"STATE":"ON"}`, 0, 1},
		{` { "state" : "ON" } `, 0, 1},
		{"\n{\"state\":\"off\"}\n", 1, 0},
		{`{"state":"ON","brightness":255}`, 0, 1}, // Home Assistant extras are ignored
		{"1", 1, 1},                               // idempotent
		{"OFF", 0, 0},                             // idempotent
	}
	for _, tc := range accept {
		got, err := ParseCommand([]byte(tc.payload), tc.current)
		if err != nil {
			t.Errorf("ParseCommand(%q, %d): unexpected error %v", tc.payload, tc.current, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseCommand(%q, %d) = %d, want %d", tc.payload, tc.current, got, tc.want)
		}
	}

	reject := []struct {
		name    string
		payload []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
		{"whitespace only", []byte(" \t\n")},
		{"2", []byte("2")},
		{"-1", []byte("-1")},
		{"01", []byte("01")},
		{"10", []byte("10")},
		{"byte 0x02", []byte{0x02}},
		{"two zero bytes", []byte{0x00, 0x00}},
		{"zero byte and newline", []byte{0x00, '\n'}},
		{"inner junk", []byte("on x")},
		{"on space junk", []byte("on \x00")},
		{"split word", []byte("o n")},
		{"onn", []byte("onn")},
		{"yes", []byte("yes")},
		{"garbage", []byte("garbage")},
		{"quoted ON", []byte(`"ON"`)},
		{"JSON without state", []byte(`{"status":"ON"}`)},
		{"JSON state null", []byte(`{"state":null}`)},
		{"JSON state bool", []byte(`{"state":true}`)},
		{"JSON state number", []byte(`{"state":1}`)},
		{"JSON state 1 string", []byte(`{"state":"1"}`)},
		{"JSON unknown state", []byte(`{"state":"BLINK"}`)},
		{"JSON trailing junk", []byte(`{"state":"ON"}x`)},
		{"JSON two objects", []byte(`{"state":"ON"}{"state":"OFF"}`)},
		{"JSON truncated", []byte(`{"state":"ON"`)},
		{"JSON array", []byte(`[{"state":"ON"}]`)},
		{"1 MB", bytes.Repeat([]byte("1"), 1<<20)},
		{"1 MB of spaces around ON", append(append(bytes.Repeat([]byte(" "), 1<<19), "ON"...), bytes.Repeat([]byte(" "), 1<<19)...)},
	}
	for _, tc := range reject {
		got, err := ParseCommand(tc.payload, 1)
		if err == nil {
			t.Errorf("%s: ParseCommand accepted it as %d", tc.name, got)
			continue
		}
		if !errors.Is(err, ErrUnknownCommand) {
			t.Errorf("%s: error %v does not wrap ErrUnknownCommand", tc.name, err)
		}
	}
}
