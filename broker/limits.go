package broker

import (
	"fmt"
	"math"
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
	// MaxClients bounds the number of clients connected over the network
	// listeners; more get "server unavailable" (MQTT 5: "server busy").
	// The in-process device is not counted, so it always gets in.
	MaxClients int64
	// MaxPendingConnections bounds connections that have not finished
	// CONNECT yet, across all listeners; more are closed at once.
	MaxPendingConnections int64
	// MaxSessionExpiry caps how long a disconnected client's session (its
	// subscriptions and queued messages) is kept.
	MaxSessionExpiry time.Duration
	// MaxInflight is the window of each connected client: the QoS 1/2
	// messages sent to it that it has not acknowledged yet. A publisher
	// of a message for a client whose window is full waits, unacknowledged
	// and unread, until the client acknowledges one (see
	// SlowClientTimeout). It is also the Receive Maximum of each client's
	// own QoS 1/2 publishes.
	MaxInflight uint16
	// MaxQueued bounds the messages waiting to be written to one client:
	// QoS 0 messages beyond it are dropped (and counted, see
	// Broker.Dropped). It is also the room a session keeps above
	// MaxInflight for QoS 1/2 messages while its client is away (or was
	// disconnected as too slow): a session holds at most MaxInflight +
	// MaxQueued of them, and drops (and counts) any more.
	MaxQueued int32
	// SlowClientTimeout bounds how long publishers wait for a client whose
	// window stays full, or to which a write does not finish: the client
	// is then disconnected as too slow, and a persistent session keeps
	// the messages for its return. 0 means 5 s.
	SlowClientTimeout time.Duration
	// MaxKeepAlive is the longest keepalive a client may use, as
	// mosquitto's max_keepalive: an MQTT 5 client asking for more, or for
	// none (0), is held to it and told so in CONNACK (Server Keep Alive);
	// an MQTT 3.1.1 client, which cannot be told, is refused (CONNACK 2,
	// identifier rejected). 65535 s, the largest keepalive MQTT can
	// express, accepts every 3.1.1 keepalive, 0 included. Connections
	// whose keepalive never expires are still ended when the peer dies:
	// the listeners turn TCP keepalive on.
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
		// Never, as with mosquitto: an offline queue waits for its client
		// (each is bounded by MaxInflight+MaxQueued).
		MaxSessionExpiry:  (1<<32 - 1) * time.Second,
		MaxInflight:       256,
		MaxQueued:         1024,
		SlowClientTimeout: defaultSlowClientTimeout,
		MaxKeepAlive:      65535 * time.Second,
		MaxTopicLength:    1024,
		MaxTopicLevels:    32,
		MaxUserProperties: 32,
	}
}

// Validate reports limits that would disable a protection or break MQTT,
// by field name: the layer that knows the flag or configuration key
// checks them first in its own terms.
func (l Limits) Validate() error {
	switch {
	case l.MaxPacketSize < 64:
		return fmt.Errorf("broker: limit MaxPacketSize %d: must be at least 64 bytes", l.MaxPacketSize)
	case l.MaxConnectSize < 64 || l.MaxConnectSize > l.MaxPacketSize:
		return fmt.Errorf("broker: limit MaxConnectSize %d: must be from 64 bytes to MaxPacketSize", l.MaxConnectSize)
	case l.ConnectTimeout <= 0:
		return fmt.Errorf("broker: limit ConnectTimeout %v: must be positive", l.ConnectTimeout)
	case l.MaxClients < 1:
		return fmt.Errorf("broker: limit MaxClients %d: must be at least 1", l.MaxClients)
	case l.MaxPendingConnections < 1:
		return fmt.Errorf("broker: limit MaxPendingConnections %d: must be at least 1", l.MaxPendingConnections)
	case l.MaxSessionExpiry < 0 || l.MaxSessionExpiry/time.Second > 1<<32-1:
		return fmt.Errorf("broker: limit MaxSessionExpiry %v: must be from 0 to 136 years", l.MaxSessionExpiry)
	case l.MaxInflight < 1:
		return fmt.Errorf("broker: limit MaxInflight %d: must be at least 1", l.MaxInflight)
	case l.MaxQueued < 1:
		return fmt.Errorf("broker: limit MaxQueued %d: must be at least 1", l.MaxQueued)
	case l.SlowClientTimeout < 0:
		return fmt.Errorf("broker: limit SlowClientTimeout %v: must be positive (0 for the default, 5s)", l.SlowClientTimeout)
	case l.MaxKeepAlive < time.Second || l.MaxKeepAlive > 65535*time.Second:
		return fmt.Errorf("broker: limit MaxKeepAlive %v: must be from 1s to 65535s (65535s accepts every keepalive)", l.MaxKeepAlive)
	case l.MaxTopicLength < 1:
		return fmt.Errorf("broker: limit MaxTopicLength %d: must be at least 1", l.MaxTopicLength)
	case l.MaxTopicLevels < 1:
		return fmt.Errorf("broker: limit MaxTopicLevels %d: must be at least 1", l.MaxTopicLevels)
	case l.MaxUserProperties < 0:
		return fmt.Errorf("broker: limit MaxUserProperties %d: must be at least 0", l.MaxUserProperties)
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
	// MaxClients is enforced by limitsHook, which does not count the
	// in-process device; Mochi's own check counts every client.
	caps.MaximumClients = math.MaxInt64
	// Acks carry no copy of the PUBLISH's properties (user properties
	// included), and so no reason code 0x01 either (upstream issue 474).
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	caps.MaximumSessionExpiryInterval = uint32(l.MaxSessionExpiry / time.Second)
	// Mochi drops a QoS 1/2 message for a session holding this many; the
	// window (flowControl) keeps connected clients at MaxInflight, so
	// only sessions whose client is away or too slow reach it.
	caps.MaximumInflight = uint16(l.sessionQueue())
	caps.ReceiveMaximum = l.MaxInflight
	caps.MaximumClientWritesPending = l.MaxQueued
	// Mochi keeps the whole packet behind each topic alias (up to 65535 of
	// them, unannounced): one client could pin hundreds of megabytes.
	caps.TopicAliasMaximum = 0
	return caps
}

// defaultSlowClientTimeout is SlowClientTimeout's default: a window
// (MaxInflight messages) full for that long means a client that is gone
// or far slower than its publishers; and a publisher held that long still
// gets its answers within paho's default ping timeout, 10 s.
const defaultSlowClientTimeout = 5 * time.Second

// maxSessionQueue keeps a session's QoS 1/2 messages below the 65,535
// packet identifiers MQTT has, with room for the client's own.
const maxSessionQueue = 60000

// sessionQueue is the most QoS 1/2 messages one session keeps:
// MaxInflight + MaxQueued.
func (l Limits) sessionQueue() int {
	return int(min(int64(l.MaxInflight)+int64(max(l.MaxQueued, 0)), maxSessionQueue))
}

func (l Limits) slowClientTimeout() time.Duration {
	if l.SlowClientTimeout <= 0 {
		return defaultSlowClientTimeout
	}
	return l.SlowClientTimeout
}

// limitsHook enforces the limits Mochi has no setting for.
type limitsHook struct {
	mqtt.HookBase
	server *mqtt.Server
	limits Limits
	// trustedListener's clients (the device) are exempt from MaxClients
	// and from the 3.1.1 keepalive refusal.
	trustedListener string
	// refused and disconnected log per remote address, rate-limited.
	refused      *rateLimitedCounter
	disconnected *rateLimitedCounter
}

func (h *limitsHook) ID() string { return "pimqtt-limits" }

func (h *limitsHook) Provides(b byte) bool {
	return b == mqtt.OnConnect || b == mqtt.OnPacketRead || b == mqtt.OnPacketEncode
}

// OnPacketEncode tells MQTT 5 clients the maximum packet size in CONNACK,
// which Mochi enforces but does not announce, so well-behaved clients
// never send a packet that gets them disconnected. And it corrects
// Mochi's PUBACK to a QoS 1 PUBLISH, whose reason code is 0x01 ("granted
// QoS 1", a SUBACK code): it is only encoded when the ack has properties,
// which NoInheritedPropertiesOnAck removes, but no property may ever bring
// it back, as python paho 1.6 and other strict clients drop the
// connection on it. 0x00 is always right; 0x10 ("no matching
// subscribers") is optional, and Mochi builds the ack before it matches.
func (h *limitsHook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	switch {
	case pk.FixedHeader.Type == packets.Connack && pk.ReasonCode == packets.CodeSuccess.Code && cl.Properties.ProtocolVersion == 5:
		pk.Properties.MaximumPacketSize = h.limits.MaxPacketSize
	case pk.FixedHeader.Type == packets.Puback && pk.ReasonCode == packets.CodeGrantedQos1.Code:
		pk.ReasonCode = packets.CodeSuccess.Code
	}
	return pk
}

// OnConnect refuses a CONNECT over the limits (too many user properties,
// a will topic too long or too deep, a keepalive a 3.1.1 client cannot
// be told about) with a CONNACK that says why, bounds the keepalive of
// MQTT 5 clients, and takes one of Limits.MaxClients for a network client.
func (h *limitsHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	trusted := cl.Net.Listener == h.trustedListener
	// MQTT 3.1.1 has no code for "over a limit"; 5 ("not authorized") is
	// what mosquitto answers for a will it does not accept, and it tells
	// the user the refusal is the server's policy, not a network fault.
	if n := len(pk.Properties.User); n > h.limits.MaxUserProperties {
		return h.refuse(cl, notAuthorizedV3, packets.ErrImplementationSpecificError,
			"too many user properties", "user_properties", n, "max_user_properties", h.limits.MaxUserProperties)
	}
	if pk.Connect.WillFlag {
		if reason, n, limit, max := h.badTopic(pk.Connect.WillTopic); reason != "" {
			return h.refuse(cl, notAuthorizedV3, packets.ErrTopicNameInvalid, "will "+reason, "size", n, limit, max)
		}
		if n := len(pk.Connect.WillProperties.User); n > h.limits.MaxUserProperties {
			return h.refuse(cl, notAuthorizedV3, packets.ErrImplementationSpecificError,
				"too many will user properties", "user_properties", n, "max_user_properties", h.limits.MaxUserProperties)
		}
	}

	// Keepalive, as mosquitto does it: a 3.1.1 client cannot be told of
	// another keepalive, so it gets the one it asked for or, over the
	// limit, a refusal (identifier rejected) it can see; an MQTT 5 client
	// is told the limit in CONNACK's Server Keep Alive. At 65535 s no
	// 3.1.1 keepalive is over the limit, 0 ("never") included: dead
	// peers are then found by TCP keepalive (see listenConfig).
	maxKA := uint16(min(h.limits.MaxKeepAlive/time.Second, 65535))
	if ka := cl.State.Keepalive; ka == 0 || ka > maxKA {
		switch {
		case cl.Properties.ProtocolVersion == 5:
			cl.State.Keepalive = maxKA
			cl.State.ServerKeepalive = true
		case maxKA < 65535 && !trusted:
			return h.refuse(cl, identifierRejectedV3, packets.ErrClientIdentifierNotValid,
				"keepalive over the limit", "keepalive", ka, "max_keepalive", maxKA)
		}
	}

	if trusted {
		return nil
	}
	gc, ok := cl.Net.Conn.(*guardedConn)
	// A client taking its own session over (a phone back before the
	// broker noticed its old connection die) gets in even at the limit:
	// the old connection is ended and gives its slot back.
	existing, found := h.server.Clients.Get(cl.ID)
	takeover := found && !existing.Closed()
	if ok && !gc.takeClientSlot(takeover) {
		return h.refuse(cl, serverUnavailableV3, packets.ErrServerBusy,
			"too many clients", "max_clients", h.limits.MaxClients)
	}
	return nil
}

// refuse logs (rate-limited per remote address) and sends the refusal.
func (h *limitsHook) refuse(cl *mqtt.Client, v3, v5 packets.Code, reason string, attrs ...any) error {
	h.refused.add(remoteHost(cl.Net.Remote), append(append([]any{"reason", reason}, attrs...), clientAttrs(cl, "")...)...)
	return refuseConnect(h.server, cl, v3, v5)
}

// OnPacketRead refuses topics and property lists that are legal but
// absurd, the shapes of mosquitto's past CVEs (65,400 '/' levels, floods
// of user properties), before Mochi indexes them. CONNECT is checked in
// OnConnect, where a CONNACK can say why.
func (h *limitsHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Connect {
		return pk, nil
	}
	if n := len(pk.Properties.User); n > h.limits.MaxUserProperties {
		return pk, h.disconnect(cl, packets.ErrImplementationSpecificError, "too many user properties",
			"user_properties", n, "max_user_properties", h.limits.MaxUserProperties)
	}
	switch pk.FixedHeader.Type {
	case packets.Publish:
		if reason, n, limit, max := h.badTopic(pk.TopicName); reason != "" {
			return pk, h.disconnect(cl, packets.ErrTopicNameInvalid, reason, "size", n, limit, max)
		}
	case packets.Subscribe, packets.Unsubscribe:
		for _, f := range pk.Filters {
			if reason, n, limit, max := h.badTopic(f.Filter); reason != "" {
				return pk, h.disconnect(cl, packets.ErrTopicFilterInvalid, reason, "size", n, limit, max)
			}
		}
	}
	return pk, nil
}

// badTopic says what is wrong with a topic, if anything: the reason, the
// topic's size in bytes, and the limit's name and value.
func (h *limitsHook) badTopic(topic string) (reason string, size int, limit string, max int) {
	switch {
	case len(topic) > h.limits.MaxTopicLength:
		return "topic too long", len(topic), "max_topic_length", h.limits.MaxTopicLength
	case strings.Count(topic, "/")+1 > h.limits.MaxTopicLevels:
		return "too many topic levels", len(topic), "max_topic_levels", h.limits.MaxTopicLevels
	}
	return "", 0, "", 0
}

// disconnect tells an MQTT 5 client why (3.1.1 has no DISCONNECT from the
// server) and returns the error that makes Mochi close the connection:
// Mochi ignores every hook error from OnPacketRead except ErrRejectPacket.
func (h *limitsHook) disconnect(cl *mqtt.Client, code packets.Code, reason string, attrs ...any) error {
	h.disconnected.add(remoteHost(cl.Net.Remote), append(append([]any{"reason", reason}, attrs...), clientAttrs(cl, "")...)...)
	if cl.Properties.ProtocolVersion == 5 {
		_ = h.server.DisconnectClient(cl, code)
	}
	return fmt.Errorf("%s (%s): %w", reason, code.Reason, packets.ErrRejectPacket)
}
