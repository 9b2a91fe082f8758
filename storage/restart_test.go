package storage

import (
	"fmt"
	"testing"

	"github.com/pimqtt/pimqtt/broker"
)

// TestCleanRestart: retained messages, a persistent session's
// subscription and the messages queued for it while it was away survive a
// clean restart; a clean session leaves nothing behind.
func TestCleanRestart(t *testing.T) {
	path := storePath(t)
	p := startInProcess(t, Options{Path: path}, broker.Limits{})

	sub, present := connect(t, p.addr, "phone", false, nil)
	if present {
		t.Fatal("session present on the first connect")
	}
	subscribe(t, sub, "home/#", 1)
	sub.Disconnect(100)

	clean, _ := connect(t, p.addr, "laptop", true, nil)
	subscribe(t, clean, "home/#", 1)
	pub, _ := connect(t, p.addr, "sensor", true, nil)
	publish(t, pub, "home/door/state", 1, true, "open")
	for i := range 5 {
		publish(t, pub, "home/kitchen/temp", 1, false, fmt.Sprint(i))
	}
	pub.Disconnect(100)
	clean.Disconnect(100)
	if err := p.close(); err != nil {
		t.Fatal(err)
	}

	p = startInProcess(t, Options{Path: path}, broker.Limits{})
	got := newReceived()
	sub, present = connect(t, p.addr, "phone", false, got.handler)
	if !present {
		t.Fatal("session not present after a clean restart")
	}
	if missing := got.waitAll([]string{"0", "1", "2", "3", "4"}); len(missing) > 0 {
		t.Fatalf("queued messages missing after the restart: %v (got %v)", missing, got.all)
	}
	// The subscription is back without subscribing again.
	pub, _ = connect(t, p.addr, "sensor", true, nil)
	publish(t, pub, "home/kitchen/temp", 1, false, "after")
	if missing := got.waitAll([]string{"after"}); len(missing) > 0 {
		t.Fatal("the restored subscription does not deliver")
	}
	retained := newReceived()
	other, _ := connect(t, p.addr, "tablet", true, retained.handler)
	subscribe(t, other, "home/door/state", 1)
	if missing := retained.waitAll([]string{"open"}); len(missing) > 0 {
		t.Fatal("retained message missing after the restart")
	}
	_, present = connect(t, p.addr, "laptop", false, nil)
	if present {
		t.Fatal("a clean session came back after the restart")
	}
}
