package load

import (
	"strings"
	"testing"
	"time"
)

func TestBitset(t *testing.T) {
	var a, b bitset
	for _, i := range []int{0, 1, 63, 64, 200} {
		a.set(i)
	}
	for _, i := range []int{1, 64, 65} {
		b.set(i)
	}
	for _, tc := range []struct {
		name      string
		got, want int64
	}{
		{"count a", a.count(), 5},
		{"count b", b.count(), 3},
		{"a and b", a.countAnd(b), 2},
		{"b and a", b.countAnd(a), 2},
		{"a and empty", a.countAnd(nil), 0},
		{"clone", a.clone().count(), 5},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %d, want %d", tc.name, tc.got, tc.want)
		}
	}
	if !a.has(200) || a.has(199) || a.has(100000) {
		t.Error("has: wrong membership")
	}
}

// TestCheck: every run is bounded and floods loopback only.
func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		err  string // part of the error; "" for none
	}{
		{"loopback v4", Config{Addr: "127.0.0.1:1883", Messages: 1}, ""},
		{"loopback v6", Config{Addr: "[::1]:1883", Duration: time.Second}, ""},
		{"LAN address", Config{Addr: "192.168.1.2:1883", Messages: 1}, "only loopback"},
		{"host name", Config{Addr: "localhost:1883", Messages: 1}, "only loopback"},
		{"no port", Config{Addr: "127.0.0.1", Messages: 1}, "broker address"},
		{"unbounded", Config{Addr: "127.0.0.1:1883"}, "bounded"},
		{"QoS 3", Config{Addr: "127.0.0.1:1883", Messages: 1, QoS: 3}, "QoS 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.check()
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("error %v, want one about %q", err, tc.err)
			}
		})
	}
}

// TestRecord counts duplicates and messages out of order.
func TestRecord(t *testing.T) {
	s := &subscriber{seen: make(map[uint32]*track)}
	payload := func(pub, seq uint32) []byte {
		return []byte{byte(pub >> 24), byte(pub >> 16), byte(pub >> 8), byte(pub), byte(seq >> 24), byte(seq >> 16), byte(seq >> 8), byte(seq)}
	}
	for _, m := range [][2]uint32{{0, 0}, {0, 1}, {1, 0}, {0, 3}, {0, 2}, {0, 3}, {1, 1}} {
		s.record(payload(m[0], m[1]))
	}
	s.record([]byte("short"))
	if s.duplicates != 1 || s.outOfOrder != 1 {
		t.Errorf("duplicates %d, out of order %d; want 1 and 1", s.duplicates, s.outOfOrder)
	}
	if n := s.seen[0].got.count() + s.seen[1].got.count(); n != 6 {
		t.Errorf("%d distinct messages, want 6", n)
	}
}
