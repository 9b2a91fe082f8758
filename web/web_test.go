package web

import (
	"context"
	"net"
	"strings"
	"testing"
)

func TestNewValidation(t *testing.T) {
	dial := func(context.Context) (net.Conn, error) { return nil, net.ErrClosed }
	led := Output{Name: "led", CommandTopic: ledTopic}
	tests := []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"no dial", func(o *Options) { o.Dial = nil }, "Dial is required"},
		{"no auth", func(o *Options) { o.Auth = nil }, "Auth is required"},
		{"password without user", func(o *Options) { o.Password = "x" }, "password needs a username"},
		{"no lines", func(o *Options) { o.Outputs = nil }, "at least one output or input"},
		{"no name", func(o *Options) { o.Outputs[0].Name = "" }, "has no name"},
		{"slash in name", func(o *Options) { o.Outputs[0].Name = "a/b" }, `line name "a/b"`},
		{"spaces around name", func(o *Options) { o.Outputs[0].Name = " led" }, `line name " led"`},
		{"long name", func(o *Options) { o.Outputs[0].Name = strings.Repeat("x", maxNameLen+1) }, "at most 64 bytes"},
		{"duplicate name", func(o *Options) { o.Inputs = []Input{{Name: "led", StateTopic: "x"}} }, `two lines are called "led"`},
		{"no command topic", func(o *Options) { o.Outputs[0].CommandTopic = "" }, "command topic of led: empty topic"},
		{"wildcard", func(o *Options) { o.Outputs[0].CommandTopic = "a/+" }, "wildcard"},
		{"input without topic", func(o *Options) { o.Inputs = []Input{{Name: "door"}} }, "state topic of door: empty topic"},
		{"shared topic", func(o *Options) { o.Inputs = []Input{{Name: "door", StateTopic: ledTopic + "/state"}} }, "are both"},
		{"status is a state", func(o *Options) { o.StatusTopic = ledTopic + "/state" }, "are both"},
		{"bad telemetry topic", func(o *Options) { o.TelemetryTopic = "t/#" }, "telemetry topic"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := Options{Dial: dial, Auth: mapAuth{}, Outputs: []Output{led}}
			tt.edit(&o)
			_, err := New(o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v, want an error with %q", err, tt.want)
			}
		})
	}
	s, err := New(Options{Dial: dial, Anonymous: true, Outputs: []Output{led}})
	if err != nil {
		t.Fatalf("anonymous: %v", err)
	}
	if s.opts.Outputs[0].StateTopic != ledTopic+"/state" || s.opts.StatusTopic != "raspberry/status" || s.opts.Title != "pimqtt" ||
		!strings.HasPrefix(s.opts.ClientID, "pimqtt-web-") {
		t.Fatalf("defaults: %+v", s.opts)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != ErrClosed {
		t.Fatalf("Start after Close: %v", err)
	}
}

func TestLoggedName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"alice", "alice"},
		{strings.Repeat("a", 64), strings.Repeat("a", 64)},
		{strings.Repeat("a", 65), strings.Repeat("a", 64) + "…"},
		{strings.Repeat("a", 63) + "é", strings.Repeat("a", 63) + "…"}, // not cut inside a rune
	}
	for _, tt := range tests {
		if got := loggedName(tt.in); got != tt.want {
			t.Errorf("loggedName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
