package device

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

func TestNewValidation(t *testing.T) {
	dial := func(context.Context) (net.Conn, error) { return nil, nil }
	line := &fakeLine{}
	log, _ := newLogger(t)
	in := newFakeInput(0)
	base := func() Options {
		return Options{Dial: dial, Logger: log,
			Outputs: []Output{{Name: "led", CommandTopic: "raspberry/led", Line: line}}}
	}
	two := func(o *Options) {
		o.Outputs = append(o.Outputs, Output{Name: "relay1", CommandTopic: "raspberry/relay1", Line: &fakeLine{}})
		o.Inputs = []Input{{Name: "button", StateTopic: "raspberry/button", Line: in}}
	}

	bad := []struct {
		name   string
		mutate func(*Options)
		errHas string
	}{
		{"no dial", func(o *Options) { o.Dial = nil }, "Dial"},
		{"no lines", func(o *Options) { o.Outputs = nil }, "at least one output or input"},
		{"no line", func(o *Options) { o.Outputs[0].Line = nil }, "Line"},
		{"no input line", func(o *Options) { two(o); o.Inputs[0].Line = nil }, "Inputs[0] (button) Line"},
		{"no name", func(o *Options) { o.Outputs[0].Name = "" }, "Name"},
		{"invalid UTF-8 name", func(o *Options) { o.Outputs[0].Name = "a\xffb" }, "UTF-8"},
		{"duplicate output names", func(o *Options) { two(o); o.Outputs[1].Name = "led" }, "already used"},
		{"input named like an output", func(o *Options) { two(o); o.Inputs[0].Name = "relay1" }, "already used"},
		{"password without username", func(o *Options) { o.Password = "x" }, "username"},
		{"no command topic", func(o *Options) { o.Outputs[0].CommandTopic = "" }, "empty"},
		{"wildcard topic", func(o *Options) { o.Outputs[0].CommandTopic = "raspberry/+" }, "wildcard"},
		{"wildcard state topic", func(o *Options) { o.Outputs[0].StateTopic = "raspberry/#" }, "wildcard"},
		{"no input state topic", func(o *Options) { two(o); o.Inputs[0].StateTopic = "" }, "empty"},
		{"wildcard input topic", func(o *Options) { two(o); o.Inputs[0].StateTopic = "raspberry/+/b" }, "wildcard"},
		{"hash status topic", func(o *Options) { o.StatusTopic = "raspberry/#" }, "wildcard"},
		{"status is the command topic", func(o *Options) { o.StatusTopic = "raspberry/led" }, "collides"},
		{"status is the state topic", func(o *Options) { o.StatusTopic = "raspberry/led/state" }, "collides"},
		{"status is an input's topic", func(o *Options) { two(o); o.StatusTopic = "raspberry/button" }, "collides"},
		{"two outputs on one command topic", func(o *Options) { two(o); o.Outputs[1].CommandTopic = "raspberry/led" }, "collides"},
		{"state topic is another command topic", func(o *Options) { two(o); o.Outputs[1].StateTopic = "raspberry/led" }, "collides"},
		{"command topic is another state topic", func(o *Options) { two(o); o.Outputs[1].CommandTopic = "raspberry/led/state" }, "collides"},
		{"input state is a command topic", func(o *Options) { two(o); o.Inputs[0].StateTopic = "raspberry/relay1" }, "collides"},
		{"input state is an output state", func(o *Options) { two(o); o.Inputs[0].StateTopic = "raspberry/led/state" }, "collides"},
		{"shared explicit state topic", func(o *Options) {
			two(o)
			o.Outputs[0].StateTopic = "s"
			o.Outputs[1].StateTopic = "s"
		}, "collides"},
		{"NUL in topic", func(o *Options) { o.Outputs[0].CommandTopic = "a\x00b" }, "NUL"},
		{"invalid UTF-8 topic", func(o *Options) { o.Outputs[0].CommandTopic = "a\xffb" }, "UTF-8"},
		{"keepalive below 1s", func(o *Options) { o.KeepAlive = 500 * time.Millisecond }, "KeepAlive"},
		// MQTT carries the keepalive in 16 bits and paho truncates: 65536 s would go out as 0,
		// which disables keepalive.
		{"keepalive beyond 65535s", func(o *Options) { o.KeepAlive = 65536 * time.Second }, "KeepAlive"},
		{"negative backoff", func(o *Options) { o.MaxReconnectInterval = -time.Second }, "MaxReconnectInterval"},
	}
	for _, tc := range bad {
		o := base()
		tc.mutate(&o)
		_, err := New(o)
		if err == nil {
			t.Errorf("%s: New accepted it", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.errHas) {
			t.Errorf("%s: error %q does not mention %q", tc.name, err, tc.errHas)
		}
	}

	d, err := New(base())
	if err != nil {
		t.Fatalf("New with defaults: %v", err)
	}
	host, _ := os.Hostname()
	if want := "pimqtt-" + host; host != "" && d.clientID != want {
		t.Errorf("client id %q, want %q", d.clientID, want)
	}
	if o := d.outputs[0]; o.commandTopic != "raspberry/led" || o.stateTopic != "raspberry/led/state" || d.statusTopic != "raspberry/status" {
		t.Errorf("topics %q %q %q", o.commandTopic, o.stateTopic, d.statusTopic)
	}
	if d.keepAlive != 30*time.Second || d.maxBackoff != 30*time.Second {
		t.Errorf("keepalive %v, max backoff %v", d.keepAlive, d.maxBackoff)
	}
	if err := d.Start(canceledContext()); err == nil {
		t.Error("Start with a cancelled context succeeded")
	}
	if err := d.Close(t.Context()); err != nil {
		t.Errorf("Close: %v", err)
	}

	// Valid: several outputs and inputs; inputs alone; an explicit state topic.
	good := []func(*Options){
		two,
		func(o *Options) {
			o.Outputs = nil
			o.Inputs = []Input{{Name: "b", StateTopic: "raspberry/b", Line: in}}
		},
		func(o *Options) { o.Outputs[0].StateTopic = "raspberry/led-level" },
	}
	for i, mutate := range good {
		o := base()
		mutate(&o)
		d, err := New(o)
		if err != nil {
			t.Errorf("good options %d: %v", i, err)
			continue
		}
		_ = d.Close(t.Context())
	}
}

func canceledContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
