package broker

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
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
	// deviceClientID is reserved for clients of the trusted listener.
	deviceClientID string
	// Failures and refusals are logged per remote address, at most once
	// per interval each, with a count: a password-guessing loop must not
	// flood the log.
	badCredentials *rateLimitedCounter
	anonymous      *rateLimitedCounter
	reservedID     *rateLimitedCounter
}

func (h *authHook) ID() string { return "pimqtt-auth" }

func (h *authHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck}, []byte{b})
}

// MQTT 3.1.1 refusal codes. Mochi maps "bad user name or password" to
// 3.1.1's code 5 and sends MQTT 5 codes it has no mapping for unchanged
// to 3.1.1 clients, so pimqtt chooses the 3.1.1 code of every refusal
// itself, with the codes the spec and the seed's paho client use.
var (
	identifierRejectedV3 = packets.Code{Code: 0x02, Reason: "identifier rejected"}
	serverUnavailableV3  = packets.Code{Code: 0x03, Reason: "server unavailable"}
	badCredentialsV3     = packets.Code{Code: 0x04, Reason: "bad user name or password"}
	notAuthorizedV3      = packets.Code{Code: 0x05, Reason: "not authorized"}
)

// OnConnect decides whether the client may connect and, if not, sends the
// refusal: a wrong user name or password gets 4 (MQTT 5: 0x86), an
// anonymous client when anonymous access is off gets 5 (0x87), and a
// network client presenting the device's client id gets 2 (0x85), since
// accepting it would take the device's session over.
func (h *authHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if cl.Net.Listener == h.trustedListener {
		return nil
	}
	if err := h.checkCredentials(cl, pk); err != nil {
		return err
	}
	if h.deviceClientID != "" && cl.ID == h.deviceClientID {
		h.reservedID.add(remoteHost(cl.Net.Remote), clientAttrs(cl, "")...)
		return refuseConnect(h.server, cl, identifierRejectedV3, packets.ErrClientIdentifierNotValid)
	}
	return nil
}

func (h *authHook) checkCredentials(cl *mqtt.Client, pk packets.Packet) error {
	if !pk.Connect.UsernameFlag {
		if h.allowAnonymous {
			return nil
		}
		h.anonymous.add(remoteHost(cl.Net.Remote), clientAttrs(cl, "")...)
		return refuseConnect(h.server, cl, notAuthorizedV3, packets.ErrNotAuthorized)
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
	// Never the password; the user name cut and escaped, since people
	// type passwords there too.
	h.badCredentials.add(remoteHost(cl.Net.Remote), clientAttrs(cl, user)...)
	return refuseConnect(h.server, cl, badCredentialsV3, packets.ErrBadUsernameOrPassword)
}

// refuseConnect sends a refusing CONNACK, v3 to MQTT 3.1.1 clients and v5
// to MQTT 5 clients, and returns the error that makes Mochi close the
// connection.
func refuseConnect(server *mqtt.Server, cl *mqtt.Client, v3, v5 packets.Code) error {
	code := v5
	if cl.Properties.ProtocolVersion < 5 {
		code = v3
	}
	if err := server.SendConnack(cl, code, false, nil); err != nil {
		return fmt.Errorf("%s; the CONNACK saying so failed: %w", v5.Reason, err)
	}
	return v5
}

// clientAttrs describes a client for a log line: its client id and user
// name (both chosen by the client, so cut and escaped), remote address
// and listener.
func clientAttrs(cl *mqtt.Client, user string) []any {
	attrs := clientTextAttrs("client", cl.ID)
	if user != "" {
		attrs = append(attrs, clientTextAttrs("user", user)...)
	}
	return append(attrs, "remote", cl.Net.Remote, "listener", cl.Net.Listener)
}

// remoteHost is the host part of a remote address, the key refusals are
// counted under: a client reconnects from a new port each time.
func remoteHost(remote string) string {
	if host, _, err := net.SplitHostPort(remote); err == nil {
		return host
	}
	return remote
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
	h.log.Info("client connected", append(clientAttrs(cl, string(cl.Properties.Username)),
		"protocol", cl.Properties.ProtocolVersion, "keepalive", cl.State.Keepalive)...)
}

func (h *logHook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	h.log.Info("client disconnected", append(clientAttrs(cl, ""), "reason", errText(err))...)
}

func errText(err error) string {
	if err == nil {
		return "client sent DISCONNECT"
	}
	return err.Error()
}
