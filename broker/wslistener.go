package broker

import (
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
type wsListener struct {
	tcp      net.Listener
	server   *http.Server
	conns    chan net.Conn
	done     chan struct{}
	once     sync.Once
	upgrader websocket.Upgrader
}

func newWSListener(tcp net.Listener, log *slog.Logger) *wsListener {
	l := &wsListener{
		tcp:   tcp,
		conns: make(chan net.Conn),
		done:  make(chan struct{}),
		upgrader: websocket.Upgrader{
			Subprotocols:    []string{wsnet.Subprotocol},
			ReadBufferSize:  4096,
			WriteBufferSize: 4096,
			// Phones and dashboards served from other origins are the normal
			// case on a LAN; authentication happens in CONNECT, not here.
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}
	l.server = &http.Server{
		Handler:           http.HandlerFunc(l.upgrade),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	go func() {
		if err := l.server.Serve(tcp); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("websocket listener stopped", "addr", tcp.Addr().String(), "error", err)
		}
	}()
	return l
}

// upgrade accepts the WebSocket handshake on any path (clients use /mqtt,
// /ws or /) and hands the connection to Accept.
func (l *wsListener) upgrade(w http.ResponseWriter, r *http.Request) {
	ws, err := l.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has already answered with an HTTP error
	}
	conn := wsnet.New(ws)
	select {
	case l.conns <- conn:
	case <-l.done:
		_ = conn.Close()
	}
}

// Accept waits for the next upgraded connection.
func (l *wsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops the HTTP server; upgraded connections are closed by their owner.
func (l *wsListener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.server.Close()
	})
	return err
}

// Addr returns the bound TCP address.
func (l *wsListener) Addr() net.Addr { return l.tcp.Addr() }
