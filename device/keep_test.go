package device

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
)

// TestCloseKeep: Close drives every output to 0 except those with Keep, which it leaves at
// their level without touching the line (no SetValue at all, not even to the same level).
func TestCloseKeep(t *testing.T) {
	for _, c := range []struct {
		name     string
		keep     bool
		level    int
		wantSets []int // SetValue calls made by Close
		want     int
	}{
		{"kept on", true, 1, nil, 1},
		{"kept off", true, 0, nil, 0},
		{"not kept, on", false, 1, []int{0}, 0},
		{"not kept, off", false, 0, []int{0}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			line := &fakeLine{}
			line.w.update(func(s *lineState) { s.value = c.level })
			log, _ := newLogger(t)
			d := newTestDeviceOpts(t, Options{
				Dial: func(context.Context) (net.Conn, error) {
					t.Error("dialled although never started")
					return nil, errors.New("unexpected dial")
				},
				BrokerLabel: "nowhere",
				Outputs:     []Output{{Name: "relay", CommandTopic: "raspberry/relay", Line: line, Keep: c.keep}},
				Logger:      log,
			})
			closeDevice(t, d)
			if got := line.sets(); fmt.Sprint(got) != fmt.Sprint(c.wantSets) {
				t.Errorf("Close set the line to %v, want %v", got, c.wantSets)
			}
			if v, _ := line.Value(); v != c.want {
				t.Errorf("line = %d after Close, want %d", v, c.want)
			}
		})
	}
}
