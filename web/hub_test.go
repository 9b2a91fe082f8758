package web

import (
	"strings"
	"testing"
	"time"
)

func TestParseLevel(t *testing.T) {
	tests := []struct {
		in    string
		level int
		ok    bool
	}{
		{"1", 1, true}, {"0", 0, true}, {" 1\n", 1, true}, {"ON", 1, true}, {"off", 0, true},
		{"True", 1, true}, {"false", 0, true},
		{"", 0, false}, {"2", 0, false}, {"toggle", 0, false}, {`{"state":"ON"}`, 0, false},
		{strings.Repeat(" ", maxStateLen) + "1", 0, false},
	}
	for _, tt := range tests {
		level, ok := parseLevel([]byte(tt.in))
		if level != tt.level || ok != tt.ok {
			t.Errorf("parseLevel(%q) = %d, %v; want %d, %v", tt.in, level, ok, tt.level, tt.ok)
		}
	}
}

func TestParseStatus(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"status": "On"}`, statusOnline}, // pimqtt's device, byte for byte
		{`{"status": "Off"}`, statusOffline},
		{`{"status":"on"}`, statusOnline},
		{"online", statusOnline}, {"offline", statusOffline}, {"1", statusOnline}, {"0", statusOffline},
		{`{"status": "maybe"}`, ""}, {`{"state": "On"}`, ""}, {"{", ""}, {"", ""}, {"up", ""},
	}
	for _, tt := range tests {
		got, ok := parseStatus([]byte(tt.in))
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("parseStatus(%q) = %q, %v; want %q", tt.in, got, ok, tt.want)
		}
	}
}

func testHub(clk *clock) *hub {
	h := newHub(Options{
		StatusTopic:    statusTopic,
		TelemetryTopic: telemetryTopic,
		Outputs:        []Output{{Name: "led", CommandTopic: ledTopic, StateTopic: ledStateTopic}},
		Inputs:         []Input{{Name: "door", StateTopic: doorStateTopic}},
	})
	h.now = clk.now
	return h
}

func all(string, string) bool { return true }

// A state change is the page user's when it follows their command to that level in time;
// otherwise it is "MQTT". The first state seen and repeats are no change.
func TestAttribution(t *testing.T) {
	clk := newClock()
	h := testHub(clk)
	msg := func(topic, payload string) {
		t.Helper()
		if !h.message(topic, []byte(payload)) {
			t.Fatalf("message %s %q not taken", topic, payload)
		}
	}
	msg(ledStateTopic, "0") // first sight: no event
	msg(statusTopic, `{"status": "On"}`)
	h.expect("led", "alice", 1)
	msg(ledStateTopic, "1") // alice's
	msg(ledStateTopic, "1") // repeat: nothing
	h.expect("led", "bob", 1)
	msg(ledStateTopic, "0") // not what bob asked for
	msg(ledStateTopic, "1") // bob's, still in time
	h.expect("led", "carol", 0)
	clk.add(attributionWindow + time.Second)
	msg(ledStateTopic, "0") // too late for carol
	msg(doorStateTopic, "0")
	msg(doorStateTopic, "1")
	msg(statusTopic, `{"status": "Off"}`)
	got := h.snapshot("alice", all, all, true).Events
	want := []string{"status offline", "input door on MQTT", "output led off MQTT", "output led on bob", "output led off MQTT", "output led on alice"}
	if len(got) != len(want) {
		t.Fatalf("events %+v, want %v", got, want)
	}
	for i, e := range got {
		if s := strings.Join(strings.Fields(e.Kind+" "+e.Name+" "+e.State+" "+e.By), " "); s != strings.TrimSpace(want[i]) {
			t.Errorf("event %d: %q, want %q", i, s, want[i])
		}
	}
	if h.message("other/topic", []byte("1")) || h.message(ledStateTopic, []byte("2")) || h.message(statusTopic, []byte("?")) {
		t.Error("a message that is not the hub's was taken")
	}
}

// The event log keeps the last maxEvents, and shows the last eventsShown, newest first.
func TestEventLogBounded(t *testing.T) {
	h := testHub(newClock())
	h.message(ledStateTopic, []byte("0"))
	for i := range maxEvents + 10 {
		h.message(ledStateTopic, []byte{'0' + byte((i+1)%2)})
	}
	if len(h.events) != maxEvents {
		t.Fatalf("%d events kept", len(h.events))
	}
	shown := h.snapshot("", all, all, true).Events
	if len(shown) != eventsShown || shown[0].State != "off" || shown[1].State != "on" {
		t.Fatalf("shown %d, first %+v", len(shown), shown[0])
	}
}

// Telemetry must be a JSON object of bounded size; an empty retained message clears it.
func TestTelemetryDocument(t *testing.T) {
	h := testHub(newClock())
	for _, bad := range []string{"42", "[1]", "{", "{\"a\":1} x", "{\"a\":\"" + strings.Repeat("x", maxTelemetryLen) + "\"}"} {
		if h.message(telemetryTopic, []byte(bad)) {
			t.Errorf("telemetry %.20q taken", bad)
		}
	}
	if !h.message(telemetryTopic, []byte(" { \"a\" : 1 } ")) {
		t.Fatal("telemetry not taken")
	}
	if doc, at := h.telemetryDoc(); string(doc) != `{"a":1}` || at.IsZero() {
		t.Fatalf("telemetry %s at %v", doc, at)
	}
	h.message(telemetryTopic, nil)
	if doc, _ := h.telemetryDoc(); doc != nil {
		t.Fatalf("telemetry %s after an empty message", doc)
	}
}
