package web

import (
	"strconv"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	clk := newClock()
	b := newBackoff(clk.now)
	// Waits after each failure, in seconds: free ones, then 1, 2, 4, … capped at 300.
	want := []time.Duration{0, 0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300}
	wait := func(addr string) time.Duration {
		w, ok := b.Begin(addr)
		if ok != (w == 0) {
			t.Fatalf("Begin(%s) = %v, %v", addr, w, ok)
		}
		return w
	}
	for i, w := range want {
		b.End("10.0.0.1", "alice", false)
		if got := wait("10.0.0.1"); got != w*time.Second {
			t.Fatalf("after failure %d: wait %v, want %v", i+1, got, w*time.Second)
		}
	}
	if got := wait("10.0.0.2"); got != 0 {
		t.Fatalf("another address waits %v", got)
	}
	clk.add(100 * time.Second)
	if got := wait("10.0.0.1"); got != 200*time.Second {
		t.Fatalf("wait counts down: %v", got)
	}
	b.End("10.0.0.1", "alice", true)
	if got := wait("10.0.0.1"); got != 0 {
		t.Fatalf("after a success: %v", got)
	}
	// Failures an hour apart never add up.
	for range 10 {
		b.End("10.0.0.3", "alice", false)
		clk.add(forgetAfter + time.Second)
	}
	b.End("10.0.0.3", "alice", false)
	if got := wait("10.0.0.3"); got != 0 {
		t.Fatalf("old failures counted: %v", got)
	}
}

// The table stays bounded under failures from many addresses.
func TestBackoffBounded(t *testing.T) {
	clk := newClock()
	b := newBackoff(clk.now)
	for i := range maxTracked * 3 {
		b.End("10.1."+strconv.Itoa(i/256)+"."+strconv.Itoa(i%256), "alice", false)
		clk.add(time.Millisecond)
	}
	if n := len(b.addrs); n > maxTracked {
		t.Fatalf("%d addresses tracked, bound %d", n, maxTracked)
	}
}
