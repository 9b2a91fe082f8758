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
	base := func() Options { return Options{Dial: dial, Line: line, Logger: log} }

	bad := []struct {
		name   string
		mutate func(*Options)
		errHas string
	}{
		{"no dial", func(o *Options) { o.Dial = nil }, "Dial"},
		{"no line", func(o *Options) { o.Line = nil }, "Line"},
		{"password without username", func(o *Options) { o.Password = "x" }, "username"},
		{"wildcard topic", func(o *Options) { o.Topic = "raspberry/+" }, "wildcard"},
		{"hash status topic", func(o *Options) { o.StatusTopic = "raspberry/#" }, "wildcard"},
		{"status is the command topic", func(o *Options) { o.StatusTopic = "raspberry/led" }, "collides"},
		{"status is the state topic", func(o *Options) { o.StatusTopic = "raspberry/led/state" }, "collides"},
		{"NUL in topic", func(o *Options) { o.Topic = "a\x00b" }, "NUL"},
		{"invalid UTF-8 topic", func(o *Options) { o.Topic = "a\xffb" }, "UTF-8"},
		{"keepalive below 1s", func(o *Options) { o.KeepAlive = 500 * time.Millisecond }, "KeepAlive"},
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
	if d.topic != "raspberry/led" || d.stateTopic != "raspberry/led/state" || d.statusTopic != "raspberry/status" {
		t.Errorf("topics %q %q %q", d.topic, d.stateTopic, d.statusTopic)
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
}

func canceledContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
