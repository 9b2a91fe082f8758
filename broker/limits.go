package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Limits bounds what clients can make the broker hold. Mochi's defaults are
// unbounded (or sized for servers with gigabytes to spare); a Pi has 512 MiB
// to 8 GiB and also runs the device, so every limit here has a Pi-sized
// default and a flag.
type Limits struct {
	// MaxPacketSize bounds every packet a connected client may send, in
	// bytes. Mochi allocates a packet's declared length before reading it.
	MaxPacketSize uint32
	// MaxConnectSize bounds the first packet (CONNECT) of a connection,
	// which arrives before the client is authenticated.
	MaxConnectSize uint32
	// ConnectTimeout is how long a new connection may take to send CONNECT.
	ConnectTimeout time.Duration
	// MaxClients bounds the number of connected clients.
	MaxClients int64
	// MaxPendingConnections bounds connections that have not finished
	// CONNECT yet, across all listeners; more are closed at once.
	MaxPendingConnections int64
	// MaxSessionExpiry caps how long a disconnected client's session (its
	// subscriptions and queued messages) is kept.
	MaxSessionExpiry time.Duration
	// MaxInflight bounds unacknowledged QoS 1/2 messages held per client.
	MaxInflight uint16
	// MaxQueued bounds messages waiting to be written to one client.
	MaxQueued int32
	// MaxKeepAlive is the longest keepalive granted; clients asking for more,
	// or for none (0), are held to it (MQTT 5 clients are told so).
	MaxKeepAlive time.Duration
	// MaxTopicLength bounds topic names and filters, in bytes.
	MaxTopicLength int
	// MaxTopicLevels bounds the number of '/'-separated levels.
	MaxTopicLevels int
	// MaxUserProperties bounds MQTT 5 user properties in one packet.
	MaxUserProperties int
}

// DefaultLimits are sized for a Raspberry Pi serving a household.
func DefaultLimits() Limits {
	return Limits{
		MaxPacketSize:         2 << 20,
		MaxConnectSize:        64 << 10,
		ConnectTimeout:        10 * time.Second,
		MaxClients:            500,
		MaxPendingConnections: 1000,
		MaxSessionExpiry:      24 * time.Hour,
		MaxInflight:           256,
		MaxQueued:             1024,
		MaxKeepAlive:          10 * time.Minute,
		MaxTopicLength:        1024,
		MaxTopicLevels:        32,
		MaxUserProperties:     32,
	}
}

// Validate reports limits that would disable a protection or break MQTT.
func (l Limits) Validate() error {
	switch {
	case l.MaxPacketSize < 64:
		return fmt.Errorf("--max-packet-size %d: must be at least 64 bytes", l.MaxPacketSize)
	case l.MaxConnectSize < 64 || l.MaxConnectSize > l.MaxPacketSize:
		return fmt.Errorf("--max-connect-size %d: must be from 64 bytes to --max-packet-size", l.MaxConnectSize)
	case l.ConnectTimeout <= 0:
		return fmt.Errorf("--connect-timeout %v: must be positive", l.ConnectTimeout)
	case l.MaxClients < 1 || l.MaxPendingConnections < 1:
		return errors.New("--max-clients and --max-pending must be at least 1")
	case l.MaxSessionExpiry < 0 || l.MaxSessionExpiry/time.Second > 1<<32-1:
		return fmt.Errorf("--max-session-expiry %v: must be from 0 to 136 years", l.MaxSessionExpiry)
	case l.MaxInflight < 1 || l.MaxQueued < 1:
		return errors.New("--max-inflight and --max-queued must be at least 1")
	case l.MaxKeepAlive < time.Second || l.MaxKeepAlive > 65535*time.Second:
		return fmt.Errorf("--max-keepalive %v: must be from 1s to 65535s", l.MaxKeepAlive)
	case l.MaxTopicLength < 1 || l.MaxTopicLevels < 1 || l.MaxUserProperties < 0:
		return errors.New("--max-topic-length and --max-topic-levels must be at least 1, --max-user-properties at least 0")
	}
	return nil
}

// capabilities applies the limits Mochi enforces itself.
func (l Limits) capabilities() *mqtt.Capabilities {
	caps := mqtt.NewDefaultServerCapabilities()
	// Retained state and status must outlive a day of quiet: Mochi's
	// default deletes every message after 24 h. 0 disables the cap; MQTT 5
	// clients can still set their own expiry.
	caps.MaximumMessageExpiryInterval = 0
	caps.MaximumPacketSize = l.MaxPacketSize
	caps.MaximumClients = l.MaxClients
	caps.MaximumSessionExpiryInterval = uint32(l.MaxSessionExpiry / time.Second)
	caps.MaximumInflight = l.MaxInflight
	caps.ReceiveMaximum = l.MaxInflight
	caps.MaximumClientWritesPending = l.MaxQueued
	// Mochi keeps the whole packet behind each topic alias (up to 65535 of
	// them, unannounced): one client could pin hundreds of megabytes.
	caps.TopicAliasMaximum = 0
	return caps
}

// limitsHook enforces the limits Mochi has no setting for.
type limitsHook struct {
	mqtt.HookBase
	server *mqtt.Server
	limits Limits
	log    *slog.Logger
}

func (h *limitsHook) ID() string { return "pimqtt-limits" }

func (h *limitsHook) Provides(b byte) bool {
	return b == mqtt.OnConnect || b == mqtt.OnPacketRead || b == mqtt.OnPacketEncode
}

// OnPacketEncode tells MQTT 5 clients the maximum packet size in CONNACK,
// which Mochi enforces but does not announce, so well-behaved clients
// never send a packet that gets them disconnected.
func (h *limitsHook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack && pk.ReasonCode == packets.CodeSuccess.Code && cl.Properties.ProtocolVersion == 5 {
		pk.Properties.MaximumPacketSize = h.limits.MaxPacketSize
	}
	return pk
}

// OnConnect bounds the keepalive: a client asking for none would keep a
// dead TCP connection (and its session) forever.
func (h *limitsHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	maxKA := uint16(h.limits.MaxKeepAlive / time.Second)
	if cl.State.Keepalive == 0 || cl.State.Keepalive > maxKA {
		cl.State.Keepalive = maxKA
		// MQTT 5 clients learn the granted value from CONNACK's Server
		// Keep Alive; 3.1.1 clients are simply disconnected after 1.5x it.
		cl.State.ServerKeepalive = cl.Properties.ProtocolVersion == 5
	}
	return nil
}

// OnPacketRead refuses topics and property lists that are legal but
// absurd, the shapes of mosquitto's past CVEs (65,400 '/' levels, floods
// of user properties), before Mochi indexes them.
func (h *limitsHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if n := len(pk.Properties.User); n > h.limits.MaxUserProperties {
		return pk, h.disconnect(cl, packets.ErrImplementationSpecificError, "too many user properties", n)
	}
	switch pk.FixedHeader.Type {
	case packets.Connect:
		if pk.Connect.WillFlag {
			if reason := h.badTopic(pk.Connect.WillTopic); reason != "" {
				return pk, h.disconnect(cl, packets.ErrTopicNameInvalid, "will "+reason, len(pk.Connect.WillTopic))
			}
			if n := len(pk.Connect.WillProperties.User); n > h.limits.MaxUserProperties {
				return pk, h.disconnect(cl, packets.ErrImplementationSpecificError, "too many will user properties", n)
			}
		}
	case packets.Publish:
		if reason := h.badTopic(pk.TopicName); reason != "" {
			return pk, h.disconnect(cl, packets.ErrTopicNameInvalid, reason, len(pk.TopicName))
		}
	case packets.Subscribe, packets.Unsubscribe:
		for _, f := range pk.Filters {
			if reason := h.badTopic(f.Filter); reason != "" {
				return pk, h.disconnect(cl, packets.ErrTopicFilterInvalid, reason, len(f.Filter))
			}
		}
	}
	return pk, nil
}

func (h *limitsHook) badTopic(topic string) string {
	switch {
	case len(topic) > h.limits.MaxTopicLength:
		return "topic too long"
	case strings.Count(topic, "/")+1 > h.limits.MaxTopicLevels:
		return "too many topic levels"
	}
	return ""
}

// disconnect tells an MQTT 5 client why (3.1.1 has no DISCONNECT from the
// server) and returns the error that makes Mochi close the connection:
// Mochi ignores every hook error from OnPacketRead except ErrRejectPacket.
func (h *limitsHook) disconnect(cl *mqtt.Client, code packets.Code, reason string, size int) error {
	h.log.Warn("client disconnected: limit exceeded", "client", cl.ID, "remote", cl.Net.Remote, "reason", reason, "size", size)
	if cl.Properties.ProtocolVersion == 5 {
		_ = h.server.DisconnectClient(cl, code)
	}
	return fmt.Errorf("%s (%s): %w", reason, code.Reason, packets.ErrRejectPacket)
}
