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

// Refusal codes. Mochi maps "bad user name or password" to 3.1.1's code 5
// and sends MQTT 5's 0x87 unmapped to 3.1.1 clients, so pimqtt answers
// refusals itself with the codes the spec and the seed's paho client use.
var (
	badCredentialsV3 = packets.Code{Code: 0x04, Reason: "bad user name or password"}
	notAuthorizedV3  = packets.Code{Code: 0x05, Reason: "not authorized"}
)

// OnConnect decides whether the client may connect and, if not, sends the
// refusal: a wrong user name or password gets 4 (MQTT 5: 0x86), an
// anonymous client when anonymous access is off gets 5 (0x87).
func (h *authHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if cl.Net.Listener == h.trustedListener {
		return nil
	}
	if !pk.Connect.UsernameFlag {
		if h.allowAnonymous {
			return nil
		}
		h.log.Warn("auth failed: anonymous client refused", "client", cl.ID, "remote", cl.Net.Remote, "listener", cl.Net.Listener)
		return h.refuse(cl, notAuthorizedV3, packets.ErrNotAuthorized)
	}
	pw := h.passwords.Load()
	if pw == nil {
		// No password file: the operator chose anonymous access (loopback
		// listeners or --allow-anonymous), and mosquitto likewise accepts
		// any user name then.
		return nil
	}
	user := string(pk.Connect.Username)
	if pw.Check(user, string(pk.Connect.Password)) {
		return nil
	}
	h.log.Warn("auth failed: bad user name or password", "client", cl.ID, "user", user, "remote", cl.Net.Remote, "listener", cl.Net.Listener)
	return h.refuse(cl, badCredentialsV3, packets.ErrBadUsernameOrPassword)
}

func (h *authHook) refuse(cl *mqtt.Client, v3, v5 packets.Code) error {
	code := v5
	if cl.Properties.ProtocolVersion < 5 {
		code = v3
	}
	if err := h.server.SendConnack(cl, code, false, nil); err != nil {
		h.log.Debug("could not send CONNACK", "client", cl.ID, "error", err)
	}
	return v5
}

// OnConnectAuthenticate lets through every client that reached it: Mochi
// only calls it after OnConnect, which has already refused the others.
func (h *authHook) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

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
