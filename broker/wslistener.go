package broker

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pimqtt/pimqtt/wsnet"
)

// wsReadBuffer is the size of each WebSocket connection's read buffer.
const wsReadBuffer = 1024

// wsListener is a net.Listener whose connections are MQTT-over-WebSocket
// upgrades served from a listener the caller already bound (TCP, or TLS
// over TCP for wss), so a port conflict is a startup error rather than a
// log line (Mochi's own WebSocket listener binds inside its goroutine and
// only logs the failure).
//
// The HTTP server starts with the first Accept, so like a TCP listener it
// leaves connections in the kernel's backlog until the broker opens it.
type wsListener struct {
	*connQueue
	ln        net.Listener
	server    *http.Server
	upgrader  websocket.Upgrader
	log       *slog.Logger
	startOnce sync.Once
}

func newWSListener(ln net.Listener, f framing) *wsListener {
	l := &wsListener{
		connQueue: newConnQueue(ln.Addr()),
		ln:        ln,
		log:       f.log,
		upgrader: websocket.Upgrader{
			Subprotocols: []string{wsnet.Subprotocol},
			// Per connection, for as long as it lasts: Mochi reads
			// through a buffer of its own on top of this one, so a small
			// one does (longer frames are read straight into Mochi's).
			ReadBufferSize: wsReadBuffer,
			// Write buffers are taken from a pool for each message and
			// given back once it is written: an idle client holds none
			// (4 KiB each before).
			WriteBufferSize: 4096,
			WriteBufferPool: &sync.Pool{},
			// Authentication happens in CONNECT, not here; the Origin
			// check only keeps pages from other sites out when asked to.
			CheckOrigin: f.origins.check(f.guard),
		},
	}
	t := f.guard.limits.ConnectTimeout
	l.server = &http.Server{
		Handler: http.HandlerFunc(l.upgrade),
		// The handshake counts towards the CONNECT deadline's purpose: a
		// connection that says nothing, or dribbles a request or its
		// body, is closed. net/http clears these deadlines when the
		// upgrade hijacks the connection; from then on the CONNECT
		// deadline applies. On a wss listener the smallest of them also
		// bounds the TLS handshake, which net/http runs in the
		// connection's own goroutine, counted as pending from the start.
		ReadHeaderTimeout: t,
		ReadTimeout:       t,
		WriteTimeout:      t,
		IdleTimeout:       t,
		ErrorLog:          log.New(httpErrorLog{guard: f.guard, log: f.log}, "", 0),
		ConnState:         f.guard.trackHandshake(),
	}
	// Every request that is not an upgrade is answered with an error and
	// "Connection: close", and the connection ends: a kept-alive
	// connection would stay counted as pending (net/http has no deadline
	// between requests without IdleTimeout), and a few dozen of them
	// would lock every client out of every listener.
	l.server.SetKeepAlivesEnabled(false)
	return l
}

// Accept starts the HTTP server on first use, then waits for the next
// upgraded connection.
func (l *wsListener) Accept() (net.Conn, error) {
	l.startOnce.Do(func() {
		go func() {
			// After Close, Serve returns ErrServerClosed at once.
			if err := l.server.Serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				l.log.Error("websocket listener stopped", "addr", l.ln.Addr().String(), "error", err)
			}
		}()
	})
	return l.connQueue.Accept()
}

// upgrade accepts the WebSocket handshake on any path (clients use /mqtt,
// /ws or /) and hands the connection to Accept.
func (l *wsListener) upgrade(w http.ResponseWriter, r *http.Request) {
	ws, err := l.upgrader.Upgrade(w, r, nil)
	if err != nil {
		// The upgrader has answered with an HTTP error, and the
		// connection ends (keep-alives are off). net/http would first
		// read what is left of the request's body, up to 256 KiB, which
		// a client may never send: stop reading now.
		_ = http.NewResponseController(w).SetReadDeadline(time.Now())
		return
	}
	_ = l.offer(context.Background(), wsConn{Conn: wsnet.New(ws), ws: ws})
}

// Close stops accepting and stops the HTTP server; upgraded connections
// are closed by their owner. The bound listener is closed here too, since
// the server never saw it if it never started.
func (l *wsListener) Close() error {
	_ = l.connQueue.Close()
	err := l.server.Close()
	if cerr := l.ln.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
		err = cerr
	}
	return err
}

// wsConn is an upgraded connection whose write side can be closed alone,
// for guardedConn's lingering close: CloseWrite sends a WebSocket close
// frame, after which nothing more is written, and the client answers with
// its own close frame once it has read everything before it.
type wsConn struct {
	*wsnet.Conn
	// ws is used only for the close frame: gorilla allows WriteControl
	// concurrently with every other method, so it does not disturb
	// wsnet's use of the connection.
	ws *websocket.Conn
}

// CloseWrite sends a close frame (normal closure).
func (c wsConn) CloseWrite() error {
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	return c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
}

// originPolicy is which web pages may open a WebSocket to a listener, by
// the Origin header browsers send. Requests without one (MQTT clients,
// scripts, apps) are always let through: only a browser's own Origin can
// be trusted to say which page is asking, and only browsers need keeping
// in check, because a page from any site can open a WebSocket to any
// address the browser reaches.
type originPolicy struct {
	// allowed holds normalised origins; empty allows every origin.
	allowed map[string]bool
}

// newOriginPolicy checks and normalises an allow-list of origins such as
// "https://dash.example:8443" or "http://192.168.1.20:8080"; an empty
// list allows any origin.
func newOriginPolicy(origins []string) (*originPolicy, error) {
	p := &originPolicy{allowed: make(map[string]bool, len(origins))}
	for _, o := range origins {
		n, err := normalizeOrigin(o)
		if err != nil {
			return nil, fmt.Errorf("allowed origin %q: %w", o, err)
		}
		p.allowed[n] = true
	}
	return p, nil
}

// anyOrigin reports whether every web page may connect.
func (p *originPolicy) anyOrigin() bool { return len(p.allowed) == 0 }

// openToAnyPage reports whether a listener of kind k bound to a lets
// pages of any origin connect from other machines, which deserves a
// warning: a page in a browser on the LAN could reach the broker through
// that browser, with no more than the credentials the page holds.
func openToAnyPage(k listenerKind, p *originPolicy, a net.Addr) bool {
	return k.web && p.anyOrigin() && !isLoopbackAddr(a)
}

// check returns the upgrader's CheckOrigin: a refused handshake is
// answered 403 Forbidden by the upgrader and logged here, rate-limited.
func (p *originPolicy) check(g *connGuard) func(*http.Request) bool {
	return func(r *http.Request) bool {
		origin := r.Header.Get("Origin")
		if origin == "" || p.anyOrigin() {
			return true
		}
		if n, err := normalizeOrigin(origin); err == nil && (p.allowed[n] || ownAddress(n, r)) {
			return true
		}
		g.originRefused.add(remoteHost(r.RemoteAddr), append([]any{"remote", r.RemoteAddr}, clientTextAttrs("origin", origin)...)...)
		return false
	}
}

// ownAddress reports whether the normalised origin n is the IP address and
// port the request was sent to. A browser sends that Origin only for a
// page loaded from this very address and port, where the listener serves
// no pages; python paho 1.6 sends it as a matter of course
// ("https://HOST:PORT" of the broker it dials), so it is let through. A
// host name gets no such pass: a page whose name an attacker pointed at
// the Pi (DNS rebinding) would send one.
func ownAddress(n string, r *http.Request) bool {
	u, err := url.Parse(n)
	if err != nil || net.ParseIP(u.Hostname()) == nil {
		return false
	}
	originPort := u.Port()
	if originPort == "" {
		originPort = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil {
		// No port: the default of the scheme the client used.
		host, port = strings.Trim(r.Host, "[]"), "80"
		if r.TLS != nil {
			port = "443"
		}
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.Equal(net.ParseIP(u.Hostname())) && port == originPort
}

// normalizeOrigin returns an origin as scheme://host[:port], lower case,
// without the scheme's default port, as browsers serialise it (RFC 6454).
func normalizeOrigin(s string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		return "", err
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", errors.New("want http://HOST[:PORT] or https://HOST[:PORT], the page's address without a path")
	}
	if u.Hostname() == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", errors.New("want http://HOST[:PORT] or https://HOST[:PORT], the page's address without a path")
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		port = ""
	}
	switch {
	case port != "":
		host = net.JoinHostPort(host, port)
	case strings.Contains(host, ":"):
		host = "[" + host + "]"
	}
	return scheme + "://" + host, nil
}
