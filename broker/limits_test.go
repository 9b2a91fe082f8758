package broker

import (
	"strings"
	"testing"
	"time"
)

// TestSessionBounds: what one session may hold and how long publishers
// wait for a slow client, from the limits.
func TestSessionBounds(t *testing.T) {
	for _, tc := range []struct {
		name        string
		inflight    uint16
		queued      int32
		slow        time.Duration
		wantSession int
		wantSlow    time.Duration
		wantErr     string
	}{
		{"defaults", 256, 1024, 0, 1280, 5 * time.Second, ""},
		{"mosquitto's max_inflight_messages and max_queued_messages", 20, 1000, time.Second, 1020, time.Second, ""},
		{"capped below the packet identifiers", 65535, 65535, 0, maxSessionQueue, 5 * time.Second, ""},
		{"negative timeout", 256, 1024, -time.Second, 1280, 5 * time.Second, "SlowClientTimeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := DefaultLimits()
			l.MaxInflight, l.MaxQueued, l.SlowClientTimeout = tc.inflight, tc.queued, tc.slow
			if got := l.sessionQueue(); got != tc.wantSession {
				t.Errorf("sessionQueue = %d, want %d", got, tc.wantSession)
			}
			if got := int(l.capabilities().MaximumInflight); got != tc.wantSession {
				t.Errorf("Mochi's MaximumInflight = %d, want %d", got, tc.wantSession)
			}
			if got := l.slowClientTimeout(); got != tc.wantSlow {
				t.Errorf("slowClientTimeout = %v, want %v", got, tc.wantSlow)
			}
			err := l.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("Validate = %v, want an error about %s", err, tc.wantErr)
			}
		})
	}
}
