package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/pimqtt/pimqtt/auth"
)

// Listener kinds.
const (
	TCP       = "tcp"
	WebSocket = "ws"
	// MQTTS is MQTT over TLS (usually port 8883).
	MQTTS = "mqtts"
	// WSS is MQTT over WebSocket over TLS (pimqtt's default port 8084).
	WSS      = "wss"
	inMemory = "inmem"
)

// ListenerConfig is one address to serve MQTT on.
type ListenerConfig struct {
	Kind string // TCP, WebSocket, MQTTS or WSS
	Addr string // host:port; port 0 picks a free port
	// Optional listeners that fail to bind are logged and skipped; pimqtt
	// uses it for the IPv6 loopback, which some Pi images disable.
	Optional bool
	// CertFile and KeyFile are the PEM certificate (chain) and key of an
	// MQTTS or WSS listener; both are required for those kinds and
	// refused for the others. Reload reads them again.
	CertFile, KeyFile string
	// ClientCAFile, if set, makes an MQTTS or WSS listener require a client
	// certificate signed by one of the PEM certificates in it.
	ClientCAFile string
	// AllowedOrigins lists the web origins (https://dash.example:8443)
	// whose pages may open a WebSocket to a WebSocket or WSS listener;
	// other browser pages get 403. Empty allows any origin. Clients that
	// send no Origin header (anything but a browser) are always let
	// through, and so are those whose Origin is the IP address and port
	// they connect to, as python paho 1.6 sends.
	AllowedOrigins []string
}

// Options configures a Broker.
type Options struct {
	Listeners []ListenerConfig
	// PasswordFile is a mosquitto password file; empty means no password
	// file, so only anonymous access is possible.
	PasswordFile string
	// AllowAnonymous lets clients connect without a user name.
	AllowAnonymous bool
	// DeviceClientID is the client id reserved for the in-process device
	// on the in-memory listener: a client on a network listener that
	// presents it is refused (CONNACK 0x85, MQTT 3.1.1: 2), as accepting
	// it would take the device's session over. Empty reserves nothing.
	DeviceClientID string
	// MosquittoRefusalCodes answers a wrong user name or password as
	// mosquitto 2.0 does, "not authorized" (3.1.1: 5, MQTT 5: 0x87),
	// instead of the spec's "bad user name or password" (4, 0x86), so
	// that clients moved over from mosquitto see the same answers.
	MosquittoRefusalCodes bool
	// ACLFile is a mosquitto ACL file (see auth.ACL): which topics each
	// client may read and write. Empty means pimqtt's default rights:
	// every client may read everything and write everything but $SYS and
	// DeviceTopics. Reload reads it again.
	ACLFile string
	// DeviceTopics are topic filters that, without an ACL file, only the
	// in-process device may publish to (its state and status topics), so
	// that no other client can forge them; another client's will on one
	// is dropped. With an ACL file, the file decides.
	DeviceTopics []string
	Limits       Limits
	// Hooks are added after pimqtt's own (authentication, limits,
	// logging), in order: storage, a bridge's loop guard. None of them may
	// answer OnConnectAuthenticate or OnACLCheck (Mochi ORs those answers
	// across hooks, so one permissive hook would open the broker): New
	// refuses such a hook.
	Hooks []mqtt.Hook
	// ShutdownTimeout bounds Close; default 10 s.
	ShutdownTimeout time.Duration
	Logger          *slog.Logger

	// noFastPath leaves every PUBLISH to Mochi's own routing (see
	// fastPath), for benchmarks and tests that compare both.
	noFastPath bool
}

// Addr describes a bound listener.
type Addr struct {
	Kind string
	Addr net.Addr
}

// Broker is the embedded MQTT server.
type Broker struct {
	opts      Options
	log       *slog.Logger
	server    *mqtt.Server
	passwords atomic.Pointer[auth.Passwords]
	rights    *accessControl // who may read and write which topics
	auth      *authHook
	flow      *flowControl // back-pressure: see backpressure.go
	fast      *fastPath    // nil when off
	mem       *memListener
	guard     *connGuard
	addrs     []Addr
	// netListeners are the bound network listeners, for CloseNetwork.
	netListeners []net.Listener
	tls          []*tlsSource // the TLS listeners' certificates, for Reload
	anyOrigin    []Addr       // WebSocket listeners open to pages of any origin
	// network is closed by OpenNetwork; the network listeners accept
	// only then.
	network  chan struct{}
	openOnce sync.Once
	// counters log refusals, rate-limited; flushed every interval.
	counters  []*rateLimitedCounter
	stopFlush chan struct{}
	startOnce sync.Once
	closeOnce sync.Once
	closeErr  error
}

// listenerKind is how one ListenerConfig.Kind serves what its bound TCP
// listener accepts.
type listenerKind struct {
	// frame turns the TCP listener into one of MQTT byte streams; nil
	// serves the TCP connections as they are. A TLS listener's Accept
	// never shakes hands: each connection does, in its own goroutine.
	frame func(tcp net.Listener, f framing) net.Listener
	tls   bool // needs CertFile and KeyFile
	web   bool // serves WebSocket upgrades; takes AllowedOrigins
}

// framing is what a kind's frame may use.
type framing struct {
	guard   *connGuard
	log     *slog.Logger
	tls     *tlsSource    // TLS kinds only
	origins *originPolicy // web kinds only
}

// listenerKinds are the kinds of ListenerConfig.Kind. A new kind is a new
// entry here.
var listenerKinds = map[string]listenerKind{
	TCP:       {},
	WebSocket: {web: true, frame: func(tcp net.Listener, f framing) net.Listener { return newWSListener(tcp, f) }},
	MQTTS: {tls: true, frame: func(tcp net.Listener, f framing) net.Listener {
		return tls.NewListener(tcp, f.tls.serverConfig())
	}},
	WSS: {tls: true, web: true, frame: func(tcp net.Listener, f framing) net.Listener {
		return newWSListener(tls.NewListener(tcp, f.tls.serverConfig()), f)
	}},
}

// TCP keepalive on every accepted connection (TCP and WebSocket): a peer
// that vanished (power cut, Wi-Fi gone) is found within about two
// minutes (60 s idle, then 4 probes 15 s apart) even when its MQTT
// keepalive is 0 or 18 hours, and its will is published.
var tcpKeepAlive = net.KeepAliveConfig{Enable: true, Idle: 60 * time.Second, Interval: 15 * time.Second, Count: 4}

// New loads the password file, binds every listener and prepares the
// server. Nothing is served until Start, and nothing from the network
// until OpenNetwork. A listener that cannot bind is an error that names
// its kind and address and wraps the cause (errors.Is(err,
// syscall.EADDRINUSE) for a port in use), and whatever was bound before
// it is released.
func New(opts Options) (*Broker, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Limits == (Limits{}) {
		opts.Limits = DefaultLimits()
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 10 * time.Second
	}
	b := &Broker{opts: opts, log: opts.Logger, mem: newMemListener(), network: make(chan struct{}), stopFlush: make(chan struct{})}
	counter := func(msg, countAttr, keyAttr string) *rateLimitedCounter {
		c := newRateLimitedCounter(opts.Logger, msg, countAttr, keyAttr)
		b.counters = append(b.counters, c)
		return c
	}
	rights, err := newAccessControl(opts.DeviceTopics, inMemory)
	if err != nil {
		return nil, err
	}
	b.rights = rights
	if _, err := b.loadAccessFiles(); err != nil {
		return nil, err
	}

	b.server = mqtt.New(&mqtt.Options{
		Capabilities:           opts.Limits.capabilities(),
		Logger:                 mochiLogger(opts.Logger),
		SysTopicResendInterval: 10,
		// The inline client publishes the will of a client whose
		// connection panicked, which Mochi's cleanup never reached.
		InlineClient: true,
	})
	b.guard = &connGuard{
		limits:        opts.Limits,
		refused:       counter("connections refused: too many have not sent CONNECT yet", "refused", ""),
		tlsFailed:     counter("TLS handshake failed", "failures", "from"),
		originRefused: counter("websocket handshake refused: origin not allowed", "refused", "from"),
		onPanic:       b.forgetClient,
		disconnectAll: b.disconnectListener,
	}
	b.auth = &authHook{
		server:          b.server,
		passwords:       &b.passwords,
		allowAnonymous:  opts.AllowAnonymous || opts.PasswordFile == "",
		trustedListener: inMemory,
		deviceClientID:  opts.DeviceClientID,
		mosquittoCodes:  opts.MosquittoRefusalCodes,
		access:          b.rights,
		bridges:         newBridgeClients(),
		backoff:         newLoginBackoff(),
		badCredentials:  counter("auth failed: bad user name or password", "failures", "from"),
		backedOff:       counter("auth refused without checking the password: too many failed logins from this address", "refused", "from"),
		anonymous:       counter("auth failed: anonymous client refused", "failures", "from"),
		reservedID:      counter("client refused: client id reserved for the in-process device", "refused", "from"),
		badName:         counter("client refused: control character in the client id or user name", "refused", "from"),
		publishDenied:   counter("publish dropped: the client may not write the topic", "dropped", "from"),
		subscribeDenied: counter("subscription refused: nothing on the filter may be read by the client", "refused", "from"),
		willDropped:     counter("will dropped: the client may not write its topic", "dropped", "from"),
	}
	if err := b.server.AddHook(b.auth, nil); err != nil {
		return nil, fmt.Errorf("broker: add auth hook: %w", err)
	}
	if err := b.server.AddHook(&bridgeHook{clients: b.auth.bridges, log: opts.Logger}, nil); err != nil {
		return nil, fmt.Errorf("broker: add bridge hook: %w", err)
	}
	if err := b.server.AddHook(&limitsHook{
		server:          b.server,
		limits:          opts.Limits,
		trustedListener: inMemory,
		refused:         counter("client refused: limit exceeded", "refused", "from"),
		disconnected:    counter("client disconnected: limit exceeded", "disconnected", "from"),
	}, nil); err != nil {
		return nil, fmt.Errorf("broker: add limits hook: %w", err)
	}
	if err := b.server.AddHook(&logHook{log: opts.Logger}, nil); err != nil {
		return nil, fmt.Errorf("broker: add log hook: %w", err)
	}
	if err := b.server.AddHook(newTakeoverGuard(b.server), nil); err != nil {
		return nil, fmt.Errorf("broker: add takeover guard: %w", err)
	}
	for _, h := range opts.Hooks {
		// Mochi allows a client or a topic when any hook allows it, so an
		// extra hook answering these would open what the auth hook closed.
		if h.Provides(mqtt.OnConnectAuthenticate) || h.Provides(mqtt.OnACLCheck) {
			return nil, fmt.Errorf("broker: hook %s answers authentication or ACL checks; only pimqtt's auth hook may", h.ID())
		}
		if err := b.server.AddHook(h, nil); err != nil {
			return nil, fmt.Errorf("broker: add hook %s: %w", h.ID(), err)
		}
	}
	// Last, so that it holds a publisher only for a message no hook
	// refused, as the other hooks will see it.
	b.flow = newFlowControl(b.server, opts.Limits, opts.Hooks,
		counter("client disconnected: cannot keep up with the messages for it", "disconnected", "from"), opts.Logger)
	if err := b.server.AddHook(b.flow, nil); err != nil {
		return nil, fmt.Errorf("broker: add flow control hook: %w", err)
	}
	// After the flow control, so that it writes only what every other
	// hook has let through and the window has made room for.
	if !opts.noFastPath {
		if b.fast = newFastPath(b.server, b.auth, b.flow, opts.Limits); b.fast == nil {
			opts.Logger.Warn("fast publish path off: this Mochi version's client state is not the one it was written for")
		} else if err := b.server.AddHook(b.fast, nil); err != nil {
			return nil, fmt.Errorf("broker: add fast path hook: %w", err)
		} else {
			b.flow.subscribers = b.fast.subscribers
		}
	}

	var bound []net.Listener
	release := func() {
		for _, ln := range bound {
			_ = ln.Close()
		}
	}
	listenConfig := net.ListenConfig{KeepAliveConfig: tcpKeepAlive}
	for i, lc := range opts.Listeners {
		f, kind, err := b.framing(lc)
		if err != nil {
			release()
			return nil, err
		}
		tcp, err := listenConfig.Listen(context.Background(), "tcp", lc.Addr)
		if err != nil {
			if lc.Optional {
				opts.Logger.Warn("listener skipped", "kind", lc.Kind, "addr", lc.Addr, "error", err)
				continue
			}
			release()
			return nil, fmt.Errorf("broker: %s listener on %s: %w", lc.Kind, lc.Addr, err)
		}
		var ln net.Listener = tcp
		if kind.frame != nil {
			ln = kind.frame(tcp, f)
		}
		bound = append(bound, ln)
		id := fmt.Sprintf("%s%d", lc.Kind, i)
		if err := b.server.AddListener(newConnListener(id, lc.Kind, ln, b.guard, b.network, opts.Logger)); err != nil {
			release()
			return nil, fmt.Errorf("broker: add listener %s: %w", lc.Addr, err)
		}
		b.addrs = append(b.addrs, Addr{Kind: lc.Kind, Addr: ln.Addr()})
		b.netListeners = append(b.netListeners, ln)
		if f.tls != nil {
			b.tls = append(b.tls, f.tls)
		}
		if openToAnyPage(kind, f.origins, ln.Addr()) {
			b.anyOrigin = append(b.anyOrigin, Addr{Kind: lc.Kind, Addr: ln.Addr()})
		}
	}
	if err := b.server.AddListener(newConnListener(inMemory, inMemory, b.mem, b.guard, nil, opts.Logger)); err != nil {
		release()
		return nil, fmt.Errorf("broker: add in-memory listener: %w", err)
	}
	return b, nil
}

// framing checks lc against its kind and prepares what its frame needs:
// the certificate loaded (an error names the file at fault; Reload reads
// it again once the listener is bound), the origin allow-list checked.
func (b *Broker) framing(lc ListenerConfig) (framing, listenerKind, error) {
	kind, known := listenerKinds[lc.Kind]
	if !known {
		return framing{}, kind, fmt.Errorf("broker: listener %q: unknown kind %q (want %q, %q, %q or %q)", lc.Addr, lc.Kind, TCP, WebSocket, MQTTS, WSS)
	}
	if err := lc.checkTLSFields(kind); err != nil {
		return framing{}, kind, err
	}
	f := framing{guard: b.guard, log: b.log}
	if !kind.web && len(lc.AllowedOrigins) > 0 {
		return framing{}, kind, fmt.Errorf("broker: %s listener on %s: allowed origins are only for %s and %s listeners", lc.Kind, lc.Addr, WebSocket, WSS)
	}
	if kind.web {
		p, err := newOriginPolicy(lc.AllowedOrigins)
		if err != nil {
			return framing{}, kind, fmt.Errorf("broker: %s listener on %s: %w", lc.Kind, lc.Addr, err)
		}
		f.origins = p
	}
	if kind.tls {
		src, err := newTLSSource(lc, b.log)
		if err != nil {
			return framing{}, kind, err
		}
		f.tls = src
	}
	return f, kind, nil
}

// AnyOriginListeners returns the bound WebSocket and WSS listeners that
// any web page may open a connection to (no AllowedOrigins) and that are
// reachable from other machines: a page in a browser on the network could
// use that browser to reach the broker. The caller logs a warning for
// each, in the terms of its flags.
func (b *Broker) AnyOriginListeners() []Addr { return append([]Addr(nil), b.anyOrigin...) }

// isLoopbackAddr reports whether a bound address is on loopback only.
func isLoopbackAddr(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// mochiLogger keeps Mochi's own start/stop chatter out of the info log;
// pimqtt logs connects, disconnects and auth failures itself.
func mochiLogger(l *slog.Logger) *slog.Logger {
	return slog.New(minLevelHandler{Handler: l.Handler(), min: slog.LevelWarn}).With("component", "mochi")
}

type minLevelHandler struct {
	slog.Handler
	min slog.Level
}

func (h minLevelHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return level >= h.min && h.Handler.Enabled(ctx, level)
}

// Handle drops the "pk" attribute Mochi adds to packet errors: it is the
// whole packet, payload included, and a client could fill the log with it.
// It drops Mochi's warning about keepalives under 5 s too: it fires for
// every client asking for none (0), which pimqtt accepts by design, and
// names a client id of any length.
func (h minLevelHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == mqtt.ErrMinimumKeepalive.Error() {
		return nil
	}
	trimmed := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key != "pk" {
			trimmed.AddAttrs(a)
		}
		return true
	})
	return h.Handler.Handle(ctx, trimmed)
}

func (h minLevelHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return minLevelHandler{Handler: h.Handler.WithAttrs(attrs), min: h.min}
}

func (h minLevelHandler) WithGroup(name string) slog.Handler {
	return minLevelHandler{Handler: h.Handler.WithGroup(name), min: h.min}
}

// Start serves the in-memory listener, so the in-process device can
// connect, subscribe and publish its state, and prepares the network
// listeners, which accept only once OpenNetwork is called: until then a
// network client's connection waits in the kernel's backlog, so what it
// sends is served late, never lost. It returns at once.
func (b *Broker) Start() error {
	if err := b.server.Serve(); err != nil {
		return fmt.Errorf("broker: serve: %w", err)
	}
	b.startOnce.Do(func() {
		go b.flushCounters()
		if b.fast != nil {
			go b.fast.watch(b.stopFlush)
		}
	})
	return nil
}

// OpenNetwork lets the network listeners accept connections and logs one
// "listening" line per listener, with its kind, address and who may
// connect on it. Calling it again does nothing.
func (b *Broker) OpenNetwork() {
	b.openOnce.Do(func() {
		close(b.network)
		for _, a := range b.addrs {
			b.log.Info("listening", "kind", a.Kind, "addr", a.Addr.String(), "access", b.access(a.Addr))
		}
	})
}

// CloseNetwork stops accepting new network connections; clients already
// connected stay until Close. Shutdown calls it first, so that nobody
// connects while the device says goodbye.
func (b *Broker) CloseNetwork() {
	for _, ln := range b.netListeners {
		_ = ln.Close()
	}
}

// access says who may connect on a listener bound to addr.
func (b *Broker) access(addr net.Addr) string {
	who := "anyone on the network"
	if isLoopbackAddr(addr) {
		who = "anyone on this machine"
	}
	switch {
	case b.opts.PasswordFile == "":
		return who + " (anonymous allowed)"
	case b.opts.AllowAnonymous:
		return fmt.Sprintf("users in %s, or %s without a user name (anonymous allowed)", b.opts.PasswordFile, who)
	default:
		return "users in " + b.opts.PasswordFile
	}
}

// flushCounters logs the ends of refusal bursts every interval, until
// Close.
func (b *Broker) flushCounters() {
	t := time.NewTicker(reportInterval)
	defer t.Stop()
	for {
		select {
		case <-b.stopFlush:
			return
		case <-t.C:
			for _, c := range b.counters {
				c.flush()
			}
			b.flow.report()
		}
	}
}

// Addrs returns the bound listeners, in the order they were configured.
func (b *Broker) Addrs() []Addr { return append([]Addr(nil), b.addrs...) }

// DialInMemory connects to the broker through an in-memory pipe. Clients
// on it are trusted: it is how the in-process device connects.
func (b *Broker) DialInMemory(ctx context.Context) (net.Conn, error) {
	return b.mem.dial(ctx)
}

// Reload re-reads the password file and the ACL file (see
// reloadAccessFiles: both or neither are put in force; connected clients
// whose password no longer checks out are disconnected, the others keep
// their subscriptions under the new rules). It also re-reads the TLS
// listeners' certificates (see reloadCertificates).
func (b *Broker) Reload() (err error) {
	defer func() { err = errors.Join(err, b.reloadCertificates()) }()
	return b.reloadAccessFiles()
}

// Close disconnects every client (their wills are sent) and stops the
// listeners, whether OpenNetwork was called or not, giving up after
// Options.ShutdownTimeout so that a wedged connection or an upstream
// deadlock cannot stop the process from exiting. Clients that were sent a
// DISCONNECT get up to two seconds to read it. It is safe to call more
// than once.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		close(b.stopFlush)
		b.drainDeliveries(time.Second)
		done := make(chan error, 1)
		go func() { done <- b.server.Close() }()
		select {
		case err := <-done:
			if err != nil {
				b.closeErr = fmt.Errorf("broker: close: %w", err)
			}
		case <-time.After(b.opts.ShutdownTimeout):
			b.closeErr = fmt.Errorf("broker: close: still waiting for connections after %v; giving up", b.opts.ShutdownTimeout)
		}
	})
	return b.closeErr
}

// drainDeliveries gives network clients up to limit to acknowledge the
// QoS 1/2 messages sent to them before Close disconnects them: Mochi drops
// a client's unsent queue with its connection, and the last messages
// before a shutdown (the device's {"status": "Off"}) are the ones
// subscribers must not miss. It polls, since Mochi signals no drain.
func (b *Broker) drainDeliveries(limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		pending := false
		for _, cl := range b.server.Clients.GetAll() {
			if cl.Net.Listener != inMemory && !cl.Closed() && cl.State.Inflight.Len() > 0 {
				pending = true
				break
			}
		}
		if !pending {
			return
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}

// RecoveredPanics counts connections whose goroutine panicked inside Mochi
// and was contained. Fuzz tests watch it; anything above zero is a bug
// upstream worth a regression test.
func (b *Broker) RecoveredPanics() int64 { return b.guard.panics.Load() }

// disconnectListener ends every client of one listener, as mosquitto does
// on shutdown: DISCONNECT "server shutting down" to MQTT 5 clients, and
// each client's will is published as its connection ends.
func (b *Broker) disconnectListener(id string) {
	for _, cl := range b.server.Clients.GetAll() {
		if cl.Net.Listener == id && !cl.Closed() {
			_ = b.server.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
}

// forgetClient does what Mochi's connection cleanup would have done had
// the connection's goroutine not panicked: publish the will and, for a
// clean session, drop the client and its subscriptions.
func (b *Broker) forgetClient(conn net.Conn) {
	for _, cl := range b.server.Clients.GetAll() {
		if cl.Net.Conn != conn {
			continue
		}
		will := cl.Properties.Will
		if atomic.LoadUint32(&will.Flag) == 1 && b.auth.allowWill(cl, will.TopicName) {
			if err := b.server.Publish(will.TopicName, will.Payload, will.Retain, will.Qos); err != nil {
				b.log.Warn("could not publish the will of a failed connection", "client", cl.ID, "error", err)
			}
		}
		clean := (cl.Properties.ProtocolVersion == 5 && cl.Properties.Props.SessionExpiryInterval == 0) ||
			(cl.Properties.ProtocolVersion < 5 && cl.Properties.Clean)
		if clean {
			b.server.UnsubscribeClient(cl)
			b.server.Clients.Delete(cl.ID)
		}
		return
	}
}
