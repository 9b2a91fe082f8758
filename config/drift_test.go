package config_test

import (
	"testing"

	"github.com/pimqtt/pimqtt/broker"
	"github.com/pimqtt/pimqtt/config"
)

// TestLimitsMatchBroker keeps config's defaults equal to the broker's, so
// that a file or flag that leaves a limit alone changes nothing. (It
// belongs beside the code that maps config.Limits onto broker.Limits once
// that exists.)
func TestLimitsMatchBroker(t *testing.T) {
	c, b := config.Default().Broker.Limits, broker.DefaultLimits()
	pairs := []struct {
		name      string
		cfg, brok any
	}{
		{"max_packet_size", c.MaxPacketSize, b.MaxPacketSize},
		{"max_connect_size", c.MaxConnectSize, b.MaxConnectSize},
		{"connect_timeout", c.ConnectTimeout.D(), b.ConnectTimeout},
		{"max_clients", c.MaxClients, b.MaxClients},
		{"max_pending", c.MaxPending, b.MaxPendingConnections},
		{"max_session_expiry", c.MaxSessionExpiry.D(), b.MaxSessionExpiry},
		{"max_inflight", c.MaxInflight, b.MaxInflight},
		{"max_queued", c.MaxQueued, b.MaxQueued},
		{"max_keepalive", c.MaxKeepAlive.D(), b.MaxKeepAlive},
		{"max_topic_length", c.MaxTopicLength, b.MaxTopicLength},
		{"max_topic_levels", c.MaxTopicLevels, b.MaxTopicLevels},
		{"max_user_properties", c.MaxUserProperties, b.MaxUserProperties},
	}
	for _, p := range pairs {
		if p.cfg != p.brok {
			t.Errorf("%s: config default %v, broker default %v", p.name, p.cfg, p.brok)
		}
	}
}
