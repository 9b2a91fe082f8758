package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// connListener adapts any net.Listener (TCP, WebSocket upgrades, in-memory
// pipes) to Mochi's listener interface, adding what Mochi's own listeners
// lack: a deadline for the first packet, containment of panics raised while
// serving one connection, and closing every connection it accepted on
// shutdown, including those that never sent CONNECT.
type connListener struct {
	id             string
	protocol       string
	ln             net.Listener
	connectTimeout time.Duration
	log            *slog.Logger

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func newConnListener(id, protocol string, ln net.Listener, connectTimeout time.Duration) *connListener {
	return &connListener{
		id:             id,
		protocol:       protocol,
		ln:             ln,
		connectTimeout: connectTimeout,
		conns:          make(map[net.Conn]struct{}),
	}
}

// ID returns the listener's id, which Mochi records on each client.
func (l *connListener) ID() string { return l.id }

// Address returns the bound address.
func (l *connListener) Address() string { return l.ln.Addr().String() }

// Protocol returns "tcp", "ws" or "inmem".
func (l *connListener) Protocol() string { return l.protocol }

// Init receives Mochi's logger.
func (l *connListener) Init(log *slog.Logger) error {
	l.log = log.With("listener", l.id)
	return nil
}

// Serve accepts connections until the listener is closed.
func (l *connListener) Serve(establish listeners.EstablishFn) {
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			if !l.isClosed() && !errors.Is(err, net.ErrClosed) {
				l.log.Error("accept failed; listener stopped", "error", err)
			}
			return
		}
		if !l.track(conn) {
			_ = conn.Close()
			return
		}
		go l.serveConn(establish, conn)
	}
}

func (l *connListener) serveConn(establish listeners.EstablishFn, conn net.Conn) {
	defer l.wg.Done()
	defer l.untrack(conn)
	defer func() {
		// A malformed packet can make Mochi index past a buffer (upstream
		// issue #501). Mochi's own deferred cleanup has run by now; what is
		// left is to keep the process, and every other client, alive.
		if p := recover(); p != nil {
			l.log.Error("panic while serving a connection; connection closed",
				"remote", conn.RemoteAddr().String(), "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			_ = conn.Close()
		}
	}()
	if l.connectTimeout > 0 {
		// Mochi waits forever for CONNECT; once CONNECT arrives it replaces
		// this deadline with one derived from the keepalive.
		_ = conn.SetReadDeadline(time.Now().Add(l.connectTimeout))
	}
	if err := establish(l.id, conn); err != nil {
		l.log.Debug("connection ended", "remote", conn.RemoteAddr().String(), "error", err)
	}
}

func (l *connListener) track(conn net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.conns[conn] = struct{}{}
	l.wg.Add(1)
	return true
}

func (l *connListener) untrack(conn net.Conn) {
	l.mu.Lock()
	delete(l.conns, conn)
	l.mu.Unlock()
	_ = conn.Close()
}

func (l *connListener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// Close stops accepting, lets Mochi disconnect its clients (sending wills),
// then closes whatever is still open, such as connections that never sent
// CONNECT, so that Mochi's wait for its clients cannot hang.
func (l *connListener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	already := l.closed
	l.closed = true
	l.mu.Unlock()
	if already {
		return
	}
	_ = l.ln.Close()
	closeClients(l.id)
	l.mu.Lock()
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}
