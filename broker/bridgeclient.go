package broker

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Bridges that connect to pimqtt. A stock mosquitto bridge (a
// "connection" block, try_private true by default) sends CONNECT with the
// high bit of the protocol level set: 0x84 for MQTT 3.1.1, 0x83 for MQTT
// 3.1 ("MQIsdp"). It asks the broker to treat the client as a bridge: no
// echo of its own messages back to it (else every message would loop
// between the two brokers) and messages forwarded with their retain flag
// as published (else a retained message would arrive on the other side as
// a plain one). Mochi refuses that level (CONNACK 0x82, a code 3.1.1 does
// not have), so bridgeHook clears the bit as the CONNECT is read, before
// Mochi validates it, and remembers the client as a bridge; Mochi then
// speaks plain 3.1.1 (or 3.1) to it. pimqtt's own bridge connects the same
// way over the in-memory listener.

// bridgeBit is the bit of the CONNECT's protocol level that marks a
// bridge.
const bridgeBit = 0x80

// bridgeStatePrefix is where bridges publish their state: mosquitto's
// notification topic is $SYS/broker/connection/<client id>/state,
// retained "1" once connected and a retained will "0".
const bridgeStatePrefix = "$SYS/broker/connection/"

// bridgeClients are the connected clients that said they are bridges.
// Clients are keyed by their *mqtt.Client, which Mochi makes per
// connection: a bridge reconnecting under the same client id is a new
// entry, and the old one is dropped at its OnDisconnect.
type bridgeClients struct {
	mu      sync.RWMutex
	clients map[*mqtt.Client]struct{}
	// sweepAt is the size at which closed clients are swept out: a
	// client refused after its CONNECT was read (a bad password) never
	// reaches OnDisconnect.
	sweepAt int
}

func newBridgeClients() *bridgeClients {
	return &bridgeClients{clients: make(map[*mqtt.Client]struct{}), sweepAt: minSweep}
}

// mark remembers cl as a bridge.
func (b *bridgeClients) mark(cl *mqtt.Client) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.clients[cl] = struct{}{}
	if len(b.clients) >= b.sweepAt {
		for c := range b.clients {
			if c.Closed() {
				delete(b.clients, c)
			}
		}
		b.sweepAt = max(2*len(b.clients), minSweep)
	}
}

// is reports whether cl connected as a bridge.
func (b *bridgeClients) is(cl *mqtt.Client) bool {
	b.mu.RLock()
	_, ok := b.clients[cl]
	b.mu.RUnlock()
	return ok
}

// forget drops a client whose connection has ended.
func (b *bridgeClients) forget(cl *mqtt.Client) {
	b.mu.Lock()
	delete(b.clients, cl)
	b.mu.Unlock()
}

// bridgeConnectLevel returns the protocol level of a CONNECT with the
// bridge bit cleared, and whether it had the bit on a level that takes it:
// 0x84 with "MQTT", 0x83 with "MQIsdp", as mosquitto accepts. Other
// levels with the bit are left to Mochi, which refuses them.
func bridgeConnectLevel(pk packets.Packet) (byte, bool) {
	switch {
	case pk.ProtocolVersion == bridgeBit|4 && bytes.Equal(pk.Connect.ProtocolName, []byte("MQTT")):
		return 4, true
	case pk.ProtocolVersion == bridgeBit|3 && bytes.Equal(pk.Connect.ProtocolName, []byte("MQIsdp")):
		return 3, true
	}
	return pk.ProtocolVersion, false
}

// bridgeHook accepts bridges (see bridgeClients) and treats them as
// mosquitto does. What a bridge may publish to $SYS is decided by the
// auth hook (see authHook.bridgeState).
type bridgeHook struct {
	mqtt.HookBase
	clients *bridgeClients
	log     *slog.Logger
}

func (h *bridgeHook) ID() string { return "pimqtt-bridge" }

// Provides is asked for every packet: a switch.
func (h *bridgeHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnPacketRead, mqtt.OnSubscribe, mqtt.OnSessionEstablished, mqtt.OnDisconnect:
		return true
	}
	return false
}

// OnPacketRead clears the bridge bit of a CONNECT's protocol level. Mochi
// calls it as soon as the CONNECT is decoded (ConnectDecode reads a level
// other than 5 as 3.1.1: no properties), before it copies the level into
// the client and validates the packet, so everything after sees a 3.1.1
// (or 3.1) client. Only the first CONNECT counts (the client id is set
// once it has been parsed); Mochi refuses a second one.
func (h *bridgeHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type != packets.Connect || pk.ProtocolVersion&bridgeBit == 0 || cl.ID != "" {
		return pk, nil
	}
	if level, ok := bridgeConnectLevel(pk); ok {
		pk.ProtocolVersion = level
		h.clients.mark(cl)
	}
	return pk, nil
}

// OnSubscribe gives a bridge's subscriptions mosquitto's bridge
// semantics: no-local, so a message the bridge brought in does not go
// back out through it (Mochi and the fast path both honour it, keyed by
// the client id), and retain as published: FwdRetainedFlag, since Mochi
// clears the retain flag of every live message to a 3.1.1 client
// otherwise. No-local is not set on a shared subscription, which Mochi
// would refuse for it ([MQTT-3.8.3-4]).
func (h *bridgeHook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if !h.clients.is(cl) {
		return pk
	}
	for i := range pk.Filters {
		f := &pk.Filters[i]
		if !mqtt.IsSharedFilter(f.Filter) {
			f.NoLocal = true
		}
		f.RetainAsPublished = true
		f.FwdRetainedFlag = true
	}
	return pk
}

// OnSessionEstablished logs a bridge's arrival: one line beside the
// usual "client connected", so that an operator sees which remote broker
// bridged in.
func (h *bridgeHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if !h.clients.is(cl) {
		return
	}
	h.log.LogAttrs(context.Background(), slog.LevelInfo, "bridge connected",
		append(appendClientAttrs(nil, cl, string(cl.Properties.Username)), slog.Int("protocol", int(cl.Properties.ProtocolVersion)))...)
}

// OnDisconnect forgets the client.
func (h *bridgeHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.clients.forget(cl)
}

// isBridgeStateTopic reports whether topic is under mosquitto's bridge
// notification topics.
func isBridgeStateTopic(topic string) bool {
	return strings.HasPrefix(topic, bridgeStatePrefix)
}
