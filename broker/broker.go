package broker

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/pimqtt/pimqtt/auth"
)

// Listener kinds.
const (
	TCP       = "tcp"
	WebSocket = "ws"
	inMemory  = "inmem"
)

// ListenerConfig is one address to serve MQTT on.
type ListenerConfig struct {
	Kind string // TCP or WebSocket
	Addr string // host:port; port 0 picks a free port
	// Optional listeners that fail to bind are logged and skipped; pimqtt
	// uses it for the IPv6 loopback, which some Pi images disable.
	Optional bool
}

// Options configures a Broker.
type Options struct {
	Listeners []ListenerConfig
	// PasswordFile is a mosquitto password file; empty means no password
	// file, so only anonymous access is possible.
	PasswordFile string
	// AllowAnonymous lets clients connect without a user name.
	AllowAnonymous bool
	Limits         Limits
	Logger         *slog.Logger
}

// Limits bounds what one client can make the broker hold.
type Limits struct {
	// MaxPacketSize bounds every packet a client may send, in bytes. Mochi
	// allocates a packet's declared length before reading it, so without a
	// bound one header can claim hundreds of megabytes.
	MaxPacketSize uint32
	// ConnectTimeout is how long a new connection may take to send CONNECT.
	ConnectTimeout time.Duration
	// MaxClients bounds the number of connected clients.
	MaxClients int64
}

// DefaultLimits are sized for a Raspberry Pi serving a household.
func DefaultLimits() Limits {
	return Limits{
		MaxPacketSize:  2 << 20,
		ConnectTimeout: 10 * time.Second,
		MaxClients:     1000,
	}
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
	mem       *memListener
	addrs     []Addr
	closeOnce sync.Once
}

// New loads the password file, binds every listener and prepares the
// server. Nothing is served until Start. A listener that cannot bind is an
// error, and whatever was bound before it is released.
func New(opts Options) (*Broker, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Limits == (Limits{}) {
		opts.Limits = DefaultLimits()
	}
	b := &Broker{opts: opts, log: opts.Logger, mem: newMemListener()}
	if opts.PasswordFile != "" {
		if err := b.Reload(); err != nil {
			return nil, err
		}
	}

	caps := mqtt.NewDefaultServerCapabilities()
	// Retained state and status must outlive a day of quiet: Mochi's
	// default deletes every message after 24 h. 0 disables the cap; MQTT 5
	// clients can still set their own expiry.
	caps.MaximumMessageExpiryInterval = 0
	caps.MaximumPacketSize = opts.Limits.MaxPacketSize
	caps.MaximumClients = opts.Limits.MaxClients
	b.server = mqtt.New(&mqtt.Options{
		Capabilities:           caps,
		Logger:                 mochiLogger(opts.Logger),
		SysTopicResendInterval: 10,
	})
	if err := b.server.AddHook(&authHook{
		server:          b.server,
		passwords:       &b.passwords,
		allowAnonymous:  opts.AllowAnonymous || opts.PasswordFile == "",
		trustedListener: inMemory,
		log:             opts.Logger,
	}, nil); err != nil {
		return nil, fmt.Errorf("broker: add auth hook: %w", err)
	}
	if err := b.server.AddHook(&logHook{log: opts.Logger}, nil); err != nil {
		return nil, fmt.Errorf("broker: add log hook: %w", err)
	}

	var bound []net.Listener
	release := func() {
		for _, ln := range bound {
			_ = ln.Close()
		}
	}
	for i, lc := range opts.Listeners {
		tcp, err := net.Listen("tcp", lc.Addr)
		if err != nil {
			if lc.Optional {
				opts.Logger.Warn("listener skipped", "kind", lc.Kind, "addr", lc.Addr, "error", err)
				continue
			}
			release()
			return nil, fmt.Errorf("broker: %s listener on %s: %w", lc.Kind, lc.Addr, err)
		}
		var ln net.Listener = tcp
		switch lc.Kind {
		case TCP:
		case WebSocket:
			ln = newWSListener(tcp, opts.Logger)
		default:
			_ = tcp.Close()
			release()
			return nil, fmt.Errorf("broker: listener %q: unknown kind %q (want %q or %q)", lc.Addr, lc.Kind, TCP, WebSocket)
		}
		bound = append(bound, ln)
		id := fmt.Sprintf("%s%d", lc.Kind, i)
		if err := b.server.AddListener(newConnListener(id, lc.Kind, ln, opts.Limits.ConnectTimeout)); err != nil {
			release()
			return nil, fmt.Errorf("broker: add listener %s: %w", lc.Addr, err)
		}
		b.addrs = append(b.addrs, Addr{Kind: lc.Kind, Addr: ln.Addr()})
	}
	if err := b.server.AddListener(newConnListener(inMemory, inMemory, b.mem, opts.Limits.ConnectTimeout)); err != nil {
		release()
		return nil, fmt.Errorf("broker: add in-memory listener: %w", err)
	}
	return b, nil
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

func (h minLevelHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return minLevelHandler{Handler: h.Handler.WithAttrs(attrs), min: h.min}
}

func (h minLevelHandler) WithGroup(name string) slog.Handler {
	return minLevelHandler{Handler: h.Handler.WithGroup(name), min: h.min}
}

// Start serves every listener. It returns at once.
func (b *Broker) Start() error {
	if err := b.server.Serve(); err != nil {
		return fmt.Errorf("broker: serve: %w", err)
	}
	for _, a := range b.addrs {
		b.log.Info("listening", "kind", a.Kind, "addr", a.Addr.String())
	}
	return nil
}

// Addrs returns the bound listeners, in the order they were configured.
func (b *Broker) Addrs() []Addr { return append([]Addr(nil), b.addrs...) }

// DialInMemory connects to the broker through an in-memory pipe. Clients
// on it are trusted: it is how the in-process device connects.
func (b *Broker) DialInMemory(ctx context.Context) (net.Conn, error) {
	return b.mem.dial(ctx)
}

// Reload re-reads the password file. Connected clients stay connected; new
// connections are checked against the new file. On error the old file's
// users stay in force.
func (b *Broker) Reload() error {
	if b.opts.PasswordFile == "" {
		return nil
	}
	pw, err := auth.Load(b.opts.PasswordFile, b.log)
	if err != nil {
		return fmt.Errorf("broker: password file: %w", err)
	}
	b.passwords.Store(pw)
	b.log.Info("password file loaded", "path", b.opts.PasswordFile, "users", pw.Len())
	return nil
}

// Close disconnects every client (their wills are sent) and stops the
// listeners. It is safe to call more than once.
func (b *Broker) Close() error {
	var err error
	b.closeOnce.Do(func() {
		err = b.server.Close()
		if err != nil {
			err = fmt.Errorf("broker: close: %w", err)
		}
	})
	return err
}
