package broker

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/pimqtt/pimqtt/auth"
)

// authHook decides who may connect and, with access, what each client may
// read and write. It is the only hook that answers OnConnectAuthenticate
// and OnACLCheck: Mochi ORs those answers across hooks, so a second
// permissive hook would silently open the broker.
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
	// mosquittoCodes answers bad credentials as mosquitto 2.0 does.
	mosquittoCodes bool
	access         *accessControl
	// bridges are the clients that connected as bridges (see
	// bridgeClients): they may publish their state under $SYS.
	bridges *bridgeClients
	backoff *loginBackoff
	// passwordChecks counts the passwords checked, for tests of the
	// backoff.
	passwordChecks atomic.Int64
	// Failures and refusals are logged per remote address, at most once
	// per interval each, with a count: a password-guessing loop must not
	// flood the log.
	badCredentials  *rateLimitedCounter
	backedOff       *rateLimitedCounter
	anonymous       *rateLimitedCounter
	reservedID      *rateLimitedCounter
	badName         *rateLimitedCounter
	publishDenied   *rateLimitedCounter
	subscribeDenied *rateLimitedCounter
	willDropped     *rateLimitedCounter
}

func (h *authHook) ID() string { return "pimqtt-auth" }

// refuseCredentials refuses a login whose user name or password is wrong
// (or was not checked, under the backoff): "bad user name or password"
// (3.1.1: 4, MQTT 5: 0x86), or mosquitto 2.0's "not authorized" (5, 0x87)
// when clients are to see exactly what mosquitto answered.
func (h *authHook) refuseCredentials(cl *mqtt.Client) error {
	if h.mosquittoCodes {
		return refuseConnect(h.server, cl, notAuthorizedV3, packets.ErrNotAuthorized)
	}
	return refuseConnect(h.server, cl, badCredentialsV3, packets.ErrBadUsernameOrPassword)
}

// Provides is asked by Mochi before every call of every hook, for every
// packet: a switch, not a search.
func (h *authHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPacketRead,
		mqtt.OnPublish, mqtt.OnSubscribed, mqtt.OnWill, mqtt.OnDisconnect:
		return true
	}
	return false
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
// refusal: a client id with control characters gets 2 (MQTT 5: 0x85), a
// user name with control characters 4 (0x86), a wrong user name or
// password 4 (0x86), so does a login from an address in its login backoff
// (see loginBackoff), an anonymous client when anonymous access is off
// gets 5 (0x87), and a network client presenting the device's client id
// gets 2 (0x85), since accepting it would take the device's session over.
func (h *authHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if cl.Net.Listener == h.trustedListener {
		return nil
	}
	// Control characters turn a log line or a topic built from %c or %u
	// into a trap; mosquitto closes such connections without a CONNACK.
	if hasControl(cl.ID) {
		h.badName.add(remoteHost(cl.Net.Remote), append([]any{"reason", "control character in the client id"}, clientAttrs(cl, "")...)...)
		return refuseConnect(h.server, cl, identifierRejectedV3, packets.ErrClientIdentifierNotValid)
	}
	if pk.Connect.UsernameFlag && hasControl(string(pk.Connect.Username)) {
		h.badName.add(remoteHost(cl.Net.Remote), append([]any{"reason", "control character in the user name"}, clientAttrs(cl, string(pk.Connect.Username))...)...)
		return h.refuseCredentials(cl)
	}
	if err := h.checkCredentials(cl, pk); err != nil {
		return err
	}
	if h.deviceClientID != "" && cl.ID == h.deviceClientID {
		h.reservedID.add(remoteHost(cl.Net.Remote), clientAttrs(cl, "")...)
		return refuseConnect(h.server, cl, identifierRejectedV3, packets.ErrClientIdentifierNotValid)
	}
	h.access.register(cl, pk)
	return nil
}

// hasControl reports whether s holds a control character (U+0000 to
// U+001F, U+007F to U+009F), which MQTT says strings should not.
func hasControl(s string) bool {
	return strings.IndexFunc(s, unicode.IsControl) >= 0
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
	host := remoteHost(cl.Net.Remote)
	if wait, ok := h.backoff.begin(host); !ok {
		// Refused as a wrong password is, so that a guesser cannot tell
		// a guess that was checked from one that was not.
		h.backedOff.add(host, append(clientAttrs(cl, user), "retry_after", wait.Round(time.Second).String())...)
		return h.refuseCredentials(cl)
	}
	h.passwordChecks.Add(1)
	ok := pw.Check(user, string(pk.Connect.Password))
	h.backoff.end(host, user, ok)
	if ok {
		return nil
	}
	// Never the password; the user name cut and escaped, since people
	// type passwords there too.
	h.badCredentials.add(host, clientAttrs(cl, user)...)
	return h.refuseCredentials(cl)
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

// appendClientAttrs is clientAttrs as slog attributes, for the lines
// written for every client.
func appendClientAttrs(attrs []slog.Attr, cl *mqtt.Client, user string) []slog.Attr {
	attrs = appendClientText(attrs, "client", cl.ID)
	if user != "" {
		attrs = appendClientText(attrs, "user", user)
	}
	return append(attrs, slog.String("remote", cl.Net.Remote), slog.String("listener", cl.Net.Listener))
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

// OnACLCheck answers Mochi's read checks: a SUBSCRIBE's filter (before
// it is granted) and each message's topic (before it is delivered,
// retained messages included). Write checks are made in OnPublish, which
// can answer a refused PUBLISH the way mosquitto does: Mochi would
// disconnect an MQTT 3.1.1 client instead.
func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	switch {
	case write:
		return true
	case strings.ContainsAny(topic, "+#") || strings.HasPrefix(topic, "$share/"):
		return h.access.maySubscribe(cl, topic)
	default:
		// A topic name, or a filter without wildcards, which matches that
		// topic alone.
		return h.access.mayRead(cl, topic)
	}
}

// sysMarker replaces the '$' of a network client's PUBLISH to $SYS (see
// OnPacketRead). Mochi refuses a NUL in every string a client sends, so
// no client can forge it.
const sysMarker = "\x00"

// OnPacketRead hands a network client's PUBLISH to $SYS on to OnPublish
// in disguise. Mochi drops such a PUBLISH before any hook sees it and
// never acknowledges it, so a QoS 1 or 2 publisher waits forever;
// mosquitto refuses it like any PUBLISH without write access, which
// OnPublish does once it sees the marker. A bridge's PUBLISH to $SYS is
// disguised on the trusted listener too, so that OnPublish can let its
// state through (see bridgeState).
func (h *authHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Publish &&
		len(pk.TopicName) >= len(mqtt.SysPrefix) && strings.EqualFold(pk.TopicName[:len(mqtt.SysPrefix)], mqtt.SysPrefix) &&
		(!h.access.trusted(cl) || h.bridges.is(cl)) {
		pk.TopicName = sysMarker + pk.TopicName[1:]
	}
	return pk, nil
}

// bridgeState reports whether cl may publish to the $SYS topic: a bridge
// its state under $SYS/broker/connection/, as mosquitto bridges do, when
// the client may write it (pimqtt's default rights, like mosquitto's,
// allow $SYS/broker/connection/+/state; an ACL file must grant it).
// Other clients keep pimqtt's refusal of every $SYS publish.
func (h *authHook) bridgeState(cl *mqtt.Client, topic string) bool {
	return isBridgeStateTopic(topic) && h.bridges.is(cl) && h.access.mayWrite(cl, topic)
}

// OnPublish refuses a PUBLISH to a topic the client may not write, as
// mosquitto 2.0 does: QoS 0 is dropped; MQTT 5 gets PUBACK or PUBREC
// "not authorized" (0x87); MQTT 3.1.1, which has no such code, gets the
// usual acknowledgement, and the message is neither delivered nor
// retained.
func (h *authHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	topic, sys := pk.TopicName, strings.HasPrefix(pk.TopicName, sysMarker)
	if sys {
		topic = "$" + topic[len(sysMarker):]
		if h.bridgeState(cl, topic) {
			// Mochi has checked the disguised name; it retains and
			// routes the real one.
			pk.TopicName = topic
			return pk, nil
		}
	} else if h.access.mayWrite(cl, topic) {
		return pk, nil
	}
	h.publishDenied.add(remoteHost(cl.Net.Remote), append([]any{"topic", clientText(topic)}, clientAttrs(cl, "")...)...)
	switch {
	case pk.FixedHeader.Qos == 0:
		return pk, packets.ErrRejectPacket
	case cl.Properties.ProtocolVersion < 5:
		return pk, packets.CodeSuccessIgnore
	}
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID, ReasonCode: packets.ErrNotAuthorized.Code}
	if pk.FixedHeader.Qos == 2 {
		ack.FixedHeader.Type = packets.Pubrec
	}
	// Whatever the write's outcome, the message must go no further: any
	// other error from here would let Mochi publish it.
	_ = cl.WritePacket(ack)
	return pk, packets.ErrRejectPacket
}

// OnSubscribed logs the filters refused (Mochi has already answered
// 0x87, or 0x80 to MQTT 3.1.1).
func (h *authHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	for i, f := range pk.Filters {
		if i < len(codes) && codes[i] >= packets.ErrUnspecifiedError.Code {
			h.subscribeDenied.add(remoteHost(cl.Net.Remote),
				append([]any{"filter", clientText(f.Filter), "code", fmt.Sprintf("0x%02x", codes[i])}, clientAttrs(cl, "")...)...)
		}
	}
}

// OnWill drops a will its client may not write: Mochi would publish it
// unchecked (upstream 503). It is checked as it is about to be sent, as
// mosquitto does, so a reload in between counts. A dropped will becomes
// one to the empty topic without retain, which Mochi publishes to nobody.
func (h *authHook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if h.allowWill(cl, will.TopicName) {
		return will, nil
	}
	return mqtt.Will{}, nil
}

// allowWill reports whether cl may leave a will on topic, and logs one it
// may not.
func (h *authHook) allowWill(cl *mqtt.Client, topic string) bool {
	if h.access.mayWrite(cl, topic) {
		return true
	}
	h.willDropped.add(remoteHost(cl.Net.Remote), append([]any{"topic", clientText(topic)}, clientAttrs(cl, "")...)...)
	return false
}

// OnDisconnect forgets what the access checks kept about the client.
func (h *authHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.access.forget(cl)
}

// logHook writes one line per client connect and disconnect.
type logHook struct {
	mqtt.HookBase
	log *slog.Logger
}

func (h *logHook) ID() string { return "pimqtt-log" }

func (h *logHook) Provides(b byte) bool {
	return b == mqtt.OnSessionEstablished || b == mqtt.OnDisconnect
}

// OnSessionEstablished and OnDisconnect run for every client: the lines
// are built as attributes (no []any of boxed values) and only when the
// level is on.
func (h *logHook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	ctx := context.Background()
	if !h.log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	var buf [8]slog.Attr
	attrs := appendClientAttrs(buf[:0], cl, string(cl.Properties.Username))
	attrs = append(attrs, slog.Int("protocol", int(cl.Properties.ProtocolVersion)), slog.Int("keepalive", int(cl.State.Keepalive)))
	h.log.LogAttrs(ctx, slog.LevelInfo, "client connected", attrs...)
}

func (h *logHook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	ctx := context.Background()
	if !h.log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	var buf [8]slog.Attr
	attrs := append(appendClientAttrs(buf[:0], cl, ""), slog.String("reason", errText(err)))
	h.log.LogAttrs(ctx, slog.LevelInfo, "client disconnected", attrs...)
}

func errText(err error) string {
	if err == nil {
		return "client sent DISCONNECT"
	}
	return err.Error()
}
