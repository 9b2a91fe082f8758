package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// connListener adapts any net.Listener (TCP, WebSocket upgrades, in-memory
// pipes) to Mochi's listener interface, adding what Mochi's own listeners
// lack: a bound on connections that have not finished CONNECT, a deadline
// and a size limit for CONNECT, containment of panics raised while serving
// one connection, and a shutdown that closes every connection it accepted,
// including those that never sent CONNECT.
type connListener struct {
	id       string
	protocol string
	ln       net.Listener
	guard    *connGuard
	log      *slog.Logger
	// trusted listeners (the in-memory one) are not counted against
	// MaxPendingConnections, so an attack cannot lock the device out.
	trusted bool

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// connGuard is what every listener of one broker shares.
type connGuard struct {
	limits Limits
	// pending counts connections whose CONNECT has not been read in full.
	pending atomic.Int64
	refused rateLimitedCounter
	// onPanic cleans up after a connection whose goroutine panicked.
	onPanic func(conn net.Conn)
	// disconnectAll ends the clients of one listener on shutdown. Mochi's
	// own closeListenerClients takes a read lock recursively (upstream
	// issue #488) and can deadlock against a concurrent connect.
	disconnectAll func(listenerID string)
	panics        atomic.Int64
}

func newConnListener(id, protocol string, ln net.Listener, guard *connGuard, log *slog.Logger) *connListener {
	return &connListener{
		id:       id,
		protocol: protocol,
		ln:       ln,
		guard:    guard,
		log:      log.With("listener", id),
		trusted:  protocol == inMemory,
		conns:    make(map[net.Conn]struct{}),
	}
}

// ID returns the listener's id, which Mochi records on each client.
func (l *connListener) ID() string { return l.id }

// Address returns the bound address.
func (l *connListener) Address() string { return l.ln.Addr().String() }

// Protocol returns "tcp", "ws" or "inmem".
func (l *connListener) Protocol() string { return l.protocol }

// Init receives Mochi's logger; pimqtt's own logger was set at creation.
func (l *connListener) Init(*slog.Logger) error { return nil }

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
		if !l.trusted && l.guard.pending.Add(1) > l.guard.limits.MaxPendingConnections {
			l.guard.pending.Add(-1)
			if n := l.guard.refused.add(); n > 0 {
				l.log.Warn("connections refused: too many have not sent CONNECT yet",
					"refused", n, "max_pending", l.guard.limits.MaxPendingConnections, "remote", conn.RemoteAddr().String())
			}
			_ = conn.Close()
			continue
		}
		done := func() { l.guard.pending.Add(-1) }
		if l.trusted {
			done = func() {}
		}
		gc := &guardedConn{Conn: conn, maxFirst: l.guard.limits.MaxConnectSize, done: done}
		if !l.track(gc) {
			gc.release()
			_ = conn.Close()
			return
		}
		go l.serveConn(establish, gc)
	}
}

func (l *connListener) serveConn(establish listeners.EstablishFn, conn *guardedConn) {
	defer l.wg.Done()
	defer l.untrack(conn)
	defer conn.release()
	defer func() {
		// A malformed packet can make Mochi index past a buffer (upstream
		// issue #501). Mochi's own deferred cleanup has run by now; what is
		// left is to forget the client and keep the process, and every
		// other client, alive.
		if p := recover(); p != nil {
			l.guard.panics.Add(1)
			l.log.Error("panic while serving a connection; connection closed",
				"remote", conn.RemoteAddr().String(), "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			_ = conn.Close()
			l.guard.onPanic(conn)
		}
	}()
	if t := l.guard.limits.ConnectTimeout; t > 0 {
		// Mochi waits forever for CONNECT; once CONNECT arrives it replaces
		// this deadline with one derived from the keepalive.
		_ = conn.SetReadDeadline(time.Now().Add(t))
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

// Close stops accepting, disconnects the listener's clients (their wills
// are sent), then closes whatever is still open, such as connections that
// never sent CONNECT, and waits for their goroutines, so that no connection
// is being established once Mochi waits for its clients (upstream #541).
func (l *connListener) Close(listeners.CloseFn) {
	l.mu.Lock()
	already := l.closed
	l.closed = true
	l.mu.Unlock()
	if already {
		return
	}
	_ = l.ln.Close()
	l.guard.disconnectAll(l.id)
	l.mu.Lock()
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

// trackHandshake counts WebSocket connections that have not finished the
// HTTP upgrade as pending, like TCP connections that have not sent CONNECT,
// so a flood of silent connections to the WebSocket port is bounded too.
// Once upgraded, the connection is counted again by its connListener.
func (g *connGuard) trackHandshake(log *slog.Logger) func(net.Conn, http.ConnState) {
	return func(c net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			if g.pending.Add(1) > g.limits.MaxPendingConnections {
				if n := g.refused.add(); n > 0 {
					log.Warn("connections refused: too many have not sent CONNECT yet",
						"refused", n, "max_pending", g.limits.MaxPendingConnections, "remote", c.RemoteAddr().String())
				}
				_ = c.Close() // StateClosed follows and releases the count
			}
		case http.StateHijacked, http.StateClosed:
			g.pending.Add(-1)
		}
	}
}

// errConnectTooLarge ends a connection whose first packet claims more
// than Limits.MaxConnectSize.
var errConnectTooLarge = errors.New("first packet larger than the CONNECT size limit")

// errMalformedLength ends a connection whose first remaining length takes
// more than the four bytes MQTT allows.
var errMalformedLength = errors.New("first packet's remaining length is longer than 4 bytes")

// guardedConn watches the first packet's fixed header as it streams past:
// before the client is authenticated it may not claim more than maxFirst
// bytes, because Mochi allocates the claimed length before reading it.
// Once the first packet has been read in full, done is called and the
// connection no longer counts as pending.
type guardedConn struct {
	net.Conn
	maxFirst uint32

	// Header state; only the read goroutine touches it.
	headerBytes int    // bytes of the fixed header seen
	remaining   uint64 // remaining length being decoded, then bytes left
	multiplier  uint64
	inBody      bool
	finished    bool

	once sync.Once
	done func()
}

// release marks the connection as no longer pending (idempotent).
func (c *guardedConn) release() { c.once.Do(c.done) }

func (c *guardedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if !c.finished && n > 0 {
		if scanErr := c.scan(p[:n]); scanErr != nil {
			return 0, scanErr
		}
	}
	return n, err
}

// scan follows the first packet: one type byte, a variable-length
// remaining length (1-4 bytes), then that many bytes.
func (c *guardedConn) scan(b []byte) error {
	for len(b) > 0 && !c.finished {
		switch {
		case c.inBody:
			k := uint64(len(b))
			if k >= c.remaining {
				b = b[c.remaining:]
				c.remaining = 0
			} else {
				c.remaining -= k
				b = nil
			}
			if c.remaining == 0 {
				c.finish()
			}
		case c.headerBytes == 0:
			c.headerBytes, c.multiplier = 1, 1
			b = b[1:]
		default:
			digit := b[0]
			b = b[1:]
			c.headerBytes++
			c.remaining += uint64(digit&0x7f) * c.multiplier
			c.multiplier *= 128
			if digit&0x80 != 0 {
				if c.headerBytes > 4 {
					// Four length bytes and still more: malformed. Mochi
					// accepts a fifth byte, so refuse it here.
					return errMalformedLength
				}
				continue
			}
			if c.remaining > uint64(c.maxFirst) {
				return fmt.Errorf("%w: %d > %d bytes", errConnectTooLarge, c.remaining, c.maxFirst)
			}
			c.inBody = true
			if c.remaining == 0 {
				c.finish()
			}
		}
	}
	return nil
}

func (c *guardedConn) finish() {
	c.finished = true
	c.release()
}

// rateLimitedCounter counts events and says how many to report at most
// once per interval, so an attack cannot flood the log.
type rateLimitedCounter struct {
	mu       sync.Mutex
	count    int64
	lastSaid time.Time
}

// add counts one event and returns the number to report now, or 0.
func (r *rateLimitedCounter) add() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.count++
	if time.Since(r.lastSaid) < 10*time.Second {
		return 0
	}
	n := r.count
	r.count, r.lastSaid = 0, time.Now()
	return n
}
