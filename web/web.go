// Package web owns pimqtt's control page and HTTP API: a page a phone signs in to (one toggle
// per output, a live indicator per input, the device's online status, telemetry, recent changes
// and who made them), installable on the home screen, and the JSON and Server-Sent Events API
// the page itself uses, for scripts and phone shortcuts too.
//
// The package is an MQTT client of the broker, like the device: it is handed a DialFunc (an
// in-memory connection into the embedded broker in all-in-one mode, a network connection to any
// broker in device-only mode), subscribes to the lines' state topics, the status topic and the
// telemetry topic, and publishes commands on the outputs' command topics. It never imports
// pimqtt's broker or device packages. Users and their rights come in as small interfaces
// (Authenticator, Rights) so the same password file and ACL as MQTT apply.
package web

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// DialFunc opens the byte stream to the broker, before any MQTT is spoken. It is called for the
// first connection and for every reconnection; ctx is cancelled when the attempt times out or
// the server is closed. device.DialFunc and broker.DialInMemory have this shape.
type DialFunc func(ctx context.Context) (net.Conn, error)

// Output is a line the page can switch.
type Output struct {
	// Name is shown on the page and names the output in the API (/api/outputs/NAME). Required,
	// unique among outputs and inputs.
	Name string
	// CommandTopic is where commands are published ("1" or "0"). Required.
	CommandTopic string
	// StateTopic carries the line's level, "1" or "0". Empty means CommandTopic+"/state".
	StateTopic string
}

// Input is a line the page shows.
type Input struct {
	// Name is shown on the page. Required, unique among outputs and inputs.
	Name string
	// StateTopic carries the line's level, "1" or "0". Required.
	StateTopic string
}

// Authenticator checks a user's password; *auth.Passwords satisfies it. It must be safe for
// concurrent use. A caller that reloads the password file passes something that always asks the
// latest one.
//
// If it also has a method Has(user string) bool, a signed-in user who is no longer known (taken
// out of the password file) is signed out at the next request.
type Authenticator interface {
	Check(user, password string) bool
}

// Rights says what a user may do with a topic, with the broker's rules (the ACL). The page
// shows a line only to a user who may read its state topic or write its command topic, shows
// its toggle disabled without the right to write, and the API answers 403. Calls must be cheap
// and safe for concurrent use: they are made for every update sent to every open page.
type Rights interface {
	CanRead(user, topic string) bool
	CanWrite(user, topic string) bool
}

// Throttle slows password guessing per remote address (an IP address without port, e.g.
// "192.168.1.20" or "::1"). Before checking a password the server calls Begin; when it answers
// !ok, the attempt is refused at once with 429 and Retry-After (wait), and the password is not
// checked. Every check Begin lets through is followed by End with its user and outcome. It must
// be safe for concurrent use. The shape is the broker's login backoff's, so one table can serve
// MQTT and the page: guesses made on either count for both.
type Throttle interface {
	Begin(addr string) (wait time.Duration, ok bool)
	End(addr, user string, ok bool)
}

// Options configure a Server. Zero values get the documented defaults.
type Options struct {
	// Dial opens connections to the broker. Required.
	Dial DialFunc
	// BrokerLabel names the broker in logs only, e.g. "in-process" or "tcp://pi:1883".
	BrokerLabel string
	// Username and Password are sent in CONNECT when Username is non-empty (device-only mode
	// against a broker that wants them).
	Username, Password string
	// ClientID defaults to "pimqtt-web-<hostname>". It must differ from the device's.
	ClientID string

	// Outputs and Inputs are the lines the page shows, in this order. At least one is required.
	Outputs []Output
	Inputs  []Input
	// StatusTopic carries the device's retained online status ({"status": "On"} or
	// {"status": "Off"}), default "raspberry/status".
	StatusTopic string
	// TelemetryTopic carries a retained JSON object of telemetry; empty means none.
	TelemetryTopic string

	// Title names the page and the installed app, default "pimqtt".
	Title string
	// PageURL is the page's address as a phone on the LAN would use it, e.g.
	// "http://192.168.1.20:8080/". The page's QR code shows the address the browser used,
	// except when that is a loopback address: then PageURL (when set).
	PageURL string

	// Auth checks passwords at sign-in. Required unless Anonymous is set.
	Auth Authenticator
	// Anonymous turns sign-in off: everyone is the user "" (the ACL's anonymous rules apply).
	// Only for a page that listens on loopback addresses alone, as MQTT allows anonymous clients
	// on loopback listeners when there is no password file.
	Anonymous bool
	// Rights, when nil, lets every signed-in user read and write every line.
	Rights Rights
	// Throttle, when nil, is a built-in per-address backoff: after 5 failed sign-ins an address
	// waits 1 s before the next attempt, doubling with each further failure up to 5 min; a
	// success clears it.
	Throttle Throttle

	// SessionFile keeps sign-ins across restarts (written atomically, mode 0600, holding only
	// hashes of the session ids); empty keeps them in memory only, and a restart signs everyone
	// out.
	SessionFile string
	// SessionLifetime is how long a session lives after its last use, default 30 days.
	SessionLifetime time.Duration
	// MaxSessions bounds the session table, default 1000; beyond it the least recently used
	// session ends.
	MaxSessions int

	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// KeepAlive is the MQTT keepalive, default 30 s.
	KeepAlive time.Duration
}

const (
	defaultStatusTopic     = "raspberry/status"
	defaultTitle           = "pimqtt"
	defaultSessionLifetime = 30 * 24 * time.Hour
	defaultMaxSessions     = 1000
	defaultKeepAlive       = 30 * time.Second
	// maxNameLen bounds line names: they end up in URLs, logs and the page.
	maxNameLen = 64
)

// ErrClosed is returned by Start after Close.
var ErrClosed = errors.New("web: closed")

// Server is the page and API. Create it with New, Start its MQTT connection, Serve it on one or
// more listeners (or mount Handler), and Close it.
type Server struct {
	opts     Options
	log      *slog.Logger
	hub      *hub
	link     *link
	sessions *sessions
	throttle Throttle
	assets   *assets
	handler  http.Handler
	httpSrv  *http.Server

	// ctx spans the server's life; Close cancels it, which ends every event stream.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	started bool
	closed  bool
	streams int // open event streams, bounded by maxStreams
	// streamEnded is poked (buffer 1) when a stream ends, for whoever waits for the count to drop.
	streamEnded chan struct{}
}

// New validates opts and prepares the server. Nothing connects or listens until Start and
// Serve. Sessions are loaded from SessionFile here; a file that cannot be read is logged and
// ignored (everyone signs in again).
func New(opts Options) (*Server, error) {
	opts, err := normalize(opts)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	s := &Server{opts: opts, log: log, throttle: opts.Throttle, streamEnded: make(chan struct{}, 1)}
	if s.throttle == nil {
		s.throttle = newBackoff(time.Now)
	}
	s.hub = newHub(opts)
	s.sessions = newSessions(opts.SessionFile, opts.SessionLifetime, opts.MaxSessions, log, time.Now)
	s.assets, err = newAssets(opts.Title)
	if err != nil {
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.link = newLink(s.ctx, opts, s.hub, log)
	s.handler = s.routes()
	s.httpSrv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		// No WriteTimeout: it would cut the event streams. Each stream is bounded by Close.
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 16 << 10,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		BaseContext:    func(net.Listener) context.Context { return s.ctx },
	}
	return s, nil
}

// normalize checks opts and fills in the defaults.
func normalize(o Options) (Options, error) {
	if o.Dial == nil {
		return o, errors.New("web: Options.Dial is required")
	}
	if o.Auth == nil && !o.Anonymous {
		return o, errors.New("web: Options.Auth is required (or Anonymous, for a page on loopback only)")
	}
	if o.Password != "" && o.Username == "" {
		return o, errors.New("web: a password needs a username")
	}
	if len(o.Outputs)+len(o.Inputs) == 0 {
		return o, errors.New("web: at least one output or input is required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.StatusTopic == "" {
		o.StatusTopic = defaultStatusTopic
	}
	if o.Title == "" {
		o.Title = defaultTitle
	}
	if o.SessionLifetime <= 0 {
		o.SessionLifetime = defaultSessionLifetime
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = defaultMaxSessions
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = defaultKeepAlive
	}
	if o.ClientID == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "unknown"
		}
		o.ClientID = "pimqtt-web-" + host
	}
	if o.BrokerLabel == "" {
		o.BrokerLabel = "broker"
	}
	outs := make([]Output, len(o.Outputs))
	copy(outs, o.Outputs)
	for i := range outs {
		if outs[i].StateTopic == "" {
			outs[i].StateTopic = outs[i].CommandTopic + "/state"
		}
	}
	o.Outputs = outs
	o.Inputs = append([]Input(nil), o.Inputs...)

	names := map[string]bool{}
	topics := map[string]string{} // topic → what it is, for the error message
	checkTopic := func(what, topic string) error {
		if err := validTopic(topic); err != nil {
			return fmt.Errorf("web: %s: %w", what, err)
		}
		if other, dup := topics[topic]; dup && other != what {
			return fmt.Errorf("web: %s and %s are both %q", other, what, topic)
		}
		topics[topic] = what
		return nil
	}
	checkName := func(name string) error {
		switch {
		case name == "":
			return errors.New("web: a line has no name")
		case len(name) > maxNameLen || !utf8.ValidString(name) || strings.ContainsAny(name, "/?#%\x00") || strings.TrimSpace(name) != name:
			return fmt.Errorf("web: line name %q: want at most %d bytes of UTF-8 without / ? # %% or surrounding spaces", name, maxNameLen)
		case names[name]:
			return fmt.Errorf("web: two lines are called %q", name)
		}
		names[name] = true
		return nil
	}
	for _, out := range o.Outputs {
		if err := checkName(out.Name); err != nil {
			return o, err
		}
		if err := checkTopic("the command topic of "+out.Name, out.CommandTopic); err != nil {
			return o, err
		}
		if err := checkTopic("the state topic of "+out.Name, out.StateTopic); err != nil {
			return o, err
		}
	}
	for _, in := range o.Inputs {
		if err := checkName(in.Name); err != nil {
			return o, err
		}
		if err := checkTopic("the state topic of "+in.Name, in.StateTopic); err != nil {
			return o, err
		}
	}
	if err := checkTopic("the status topic", o.StatusTopic); err != nil {
		return o, err
	}
	if o.TelemetryTopic != "" {
		if err := checkTopic("the telemetry topic", o.TelemetryTopic); err != nil {
			return o, err
		}
	}
	return o, nil
}

// validTopic refuses what cannot be published or subscribed to as one exact topic.
func validTopic(t string) error {
	switch {
	case t == "":
		return errors.New("empty topic")
	case !utf8.ValidString(t):
		return fmt.Errorf("topic %q is not valid UTF-8", t)
	case strings.ContainsAny(t, "+#\x00"):
		return fmt.Errorf("topic %q holds a wildcard or NUL", t)
	case len(t) > 65535:
		return errors.New("topic longer than 65535 bytes")
	}
	return nil
}

// Start begins connecting to the broker and returns without waiting for it: the connection and
// every reconnection happen in the background until Close, and the page shows "no connection
// to the broker" meanwhile. Start fails if ctx is already done, if called twice, or after Close.
func (s *Server) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("web: start: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.started:
		return errors.New("web: already started")
	}
	s.started = true
	s.link.start()
	return nil
}

// Handler returns the page and API, for a caller that runs its own http.Server. Event streams
// end when Close is called.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves the page and API on l until Close, which closes l; it may be called for several
// listeners (IPv4 and IPv6 loopback, say). A listener wrapped by tls.NewListener serves HTTPS,
// and then the session cookie is Secure. It returns nil after Close.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		_ = l.Close()
		return nil
	}
	s.log.Info("serving the control page", "address", l.Addr().String())
	err := s.httpSrv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("web: serve %s: %w", l.Addr(), err)
}

// Close ends every event stream, stops the listeners given to Serve (waiting for requests in
// progress until ctx is done), disconnects from the broker and saves the sessions. It is
// idempotent.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()

	s.cancel()
	var errs []error
	if err := s.httpSrv.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("web: shut down HTTP: %w", err))
		_ = s.httpSrv.Close()
	}
	s.link.close(ctx)
	if err := s.sessions.flush(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
