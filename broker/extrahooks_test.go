package broker

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// publishRecorder is an extra hook of the kind later parts add (storage,
// a bridge): it sees every PUBLISH the broker accepts.
type publishRecorder struct {
	mqtt.HookBase
	mu     sync.Mutex
	topics []string
}

func (h *publishRecorder) ID() string           { return "test-recorder" }
func (h *publishRecorder) Provides(b byte) bool { return b == mqtt.OnPublished }
func (h *publishRecorder) OnPublished(_ *mqtt.Client, pk packets.Packet) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.topics = append(h.topics, pk.TopicName)
}

func (h *publishRecorder) seen(topic string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, t := range h.topics {
		if t == topic {
			return true
		}
	}
	return false
}

// permissiveACL answers ACL checks, which Mochi ORs across hooks.
type permissiveACL struct{ mqtt.HookBase }

func (*permissiveACL) ID() string { return "test-permissive-acl" }
func (*permissiveACL) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnACLCheck, mqtt.OnConnectAuthenticate}, []byte{b})
}

// TestExtraHooks: hooks passed in Options run beside pimqtt's own; a hook
// that would answer authentication or ACL checks is refused, since Mochi
// ORs those answers and it would open the broker.
func TestExtraHooks(t *testing.T) {
	rec := &publishRecorder{}
	b, _ := startTestBroker(t, Options{
		Listeners:      []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}},
		AllowAnonymous: true,
		Hooks:          []mqtt.Hook{rec},
	})
	roundTrip(t, listenerAddr(t, b, TCP))
	waitFor(t, 10*time.Second, "the extra hook to see the round trip's publish", func() bool { return rec.seen("hardening/echo") })

	_, err := New(Options{Hooks: []mqtt.Hook{&permissiveACL{}}})
	if err == nil || !strings.Contains(err.Error(), "test-permissive-acl") {
		t.Fatalf("New with an ACL-answering hook: err = %v, want a refusal naming it", err)
	}
}
