package broker

import (
	"bytes"
	"log/slog"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/pimqtt/pimqtt/auth"
)

// authHook decides who may connect. It is the only hook that answers
// OnConnectAuthenticate and OnACLCheck: Mochi ORs those answers across
// hooks, so a second permissive hook would silently open the broker.
type authHook struct {
	mqtt.HookBase
	server *mqtt.Server
	// passwords is nil when no password file is configured; it is swapped
	// whole on reload so a check never sees a half-read file.
	passwords       *atomic.Pointer[auth.Passwords]
	allowAnonymous  bool
	trustedListener string
	log             *slog.Logger
}

func (h *authHook) ID() string { return "pimqtt-auth" }

func (h *authHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck}, []byte{b})
}

// OnConnect refuses anonymous clients with "not authorized" (3.1.1 code 5,
// MQTT 5 0x87), the answer mosquitto gives and the seed's paho client
// documents. Mochi would otherwise answer every refusal with "bad user name
// or password", so the CONNACK is sent here and the connection ended.
func (h *authHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if cl.Net.Listener == h.trustedListener || h.allowAnonymous || pk.Connect.UsernameFlag {
		return nil
	}
	h.log.Warn("auth failed: anonymous client refused", "client", cl.ID, "remote", cl.Net.Remote, "listener", cl.Net.Listener)
	if err := h.server.SendConnack(cl, packets.ErrNotAuthorized, false, nil); err != nil {
		h.log.Debug("could not send CONNACK", "client", cl.ID, "error", err)
	}
	return packets.ErrNotAuthorized
}

// OnConnectAuthenticate checks the user name and password. A false answer
// makes Mochi send "bad user name or password" (4 / 0x86).
func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if cl.Net.Listener == h.trustedListener {
		return true
	}
	if !pk.Connect.UsernameFlag {
		return h.allowAnonymous
	}
	pw := h.passwords.Load()
	if pw == nil {
		// No password file: the operator chose anonymous access (the
		// listeners are loopback-only or --allow-anonymous was given), and
		// mosquitto likewise accepts any user name then.
		return true
	}
	user := string(pk.Connect.Username)
	if pw.Check(user, string(pk.Connect.Password)) {
		return true
	}
	h.log.Warn("auth failed: bad user name or password", "client", cl.ID, "user", user, "remote", cl.Net.Remote, "listener", cl.Net.Listener)
	return false
}

// OnACLCheck allows every authenticated client to publish and subscribe
// anywhere; per-user topic rules are not part of pimqtt yet.
func (h *authHook) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

// logHook writes one line per client connect and disconnect.
type logHook struct {
	mqtt.HookBase
	log *slog.Logger
}

func (h *logHook) ID() string { return "pimqtt-log" }

func (h *logHook) Provides(b byte) bool {
	return b == mqtt.OnSessionEstablished || b == mqtt.OnDisconnect
}

func (h *logHook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	h.log.Info("client connected", "client", cl.ID, "user", string(cl.Properties.Username),
		"remote", cl.Net.Remote, "listener", cl.Net.Listener, "protocol", cl.Properties.ProtocolVersion)
}

func (h *logHook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	h.log.Info("client disconnected", "client", cl.ID, "remote", cl.Net.Remote, "listener", cl.Net.Listener, "reason", errText(err))
}

func errText(err error) string {
	if err == nil {
		return "client sent DISCONNECT"
	}
	return err.Error()
}
