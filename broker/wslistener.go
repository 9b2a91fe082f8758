package broker

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pimqtt/pimqtt/wsnet"
)

// wsListener is a net.Listener whose connections are MQTT-over-WebSocket
// upgrades served from a TCP listener the caller already bound, so a port
// conflict is a startup error rather than a log line (Mochi's own WebSocket
// listener binds inside its goroutine and only logs the failure).
//
// The HTTP server starts with the first Accept, so like a TCP listener it
// leaves connections in the kernel's backlog until the broker opens it.
type wsListener struct {
	*connQueue
	tcp       net.Listener
	server    *http.Server
	upgrader  websocket.Upgrader
	log       *slog.Logger
	startOnce sync.Once
}

func newWSListener(tcp net.Listener, guard *connGuard, log *slog.Logger) *wsListener {
	l := &wsListener{
		connQueue: newConnQueue(tcp.Addr()),
		tcp:       tcp,
		log:       log,
		upgrader: websocket.Upgrader{
			Subprotocols:    []string{wsnet.Subprotocol},
			ReadBufferSize:  4096,
			WriteBufferSize: 4096,
			// Phones and dashboards served from other origins are the normal
			// case on a LAN; authentication happens in CONNECT, not here.
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}
	t := guard.limits.ConnectTimeout
	l.server = &http.Server{
		Handler: http.HandlerFunc(l.upgrade),
		// The handshake counts towards the CONNECT deadline's purpose: a
		// connection that says nothing, or dribbles a request or its
		// body, is closed. net/http clears these deadlines when the
		// upgrade hijacks the connection; from then on the CONNECT
		// deadline applies.
		ReadHeaderTimeout: t,
		ReadTimeout:       t,
		WriteTimeout:      t,
		IdleTimeout:       t,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ConnState:         guard.trackHandshake(),
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
			if err := l.server.Serve(l.tcp); err != nil && !errors.Is(err, http.ErrServerClosed) {
				l.log.Error("websocket listener stopped", "addr", l.tcp.Addr().String(), "error", err)
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
// are closed by their owner. The TCP listener is closed here too, since
// the server never saw it if it never started.
func (l *wsListener) Close() error {
	_ = l.connQueue.Close()
	err := l.server.Close()
	if cerr := l.tcp.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
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
