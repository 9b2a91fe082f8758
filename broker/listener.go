package broker

import (
	"crypto/tls"
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
	"github.com/mochi-mqtt/server/v2/packets"
)

// connListener adapts any net.Listener (TCP, WebSocket upgrades, in-memory
// pipes) to Mochi's listener interface, adding what Mochi's own listeners
// lack: a bound on connections that have not finished CONNECT, a deadline
// and a size limit for CONNECT, containment of panics raised while serving
// one connection, a gate that holds network connections in the kernel's
// backlog until the broker is ready for them, and a shutdown that closes
// every connection it accepted, including those that never sent CONNECT.
type connListener struct {
	id       string
	protocol string
	ln       net.Listener
	guard    *connGuard
	log      *slog.Logger
	// trusted listeners (the in-memory one) are not counted against
	// MaxPendingConnections or MaxClients, so an attack cannot lock the
	// device out.
	trusted bool
	// open is closed when the listener may accept; nil accepts at once.
	// Until then connections wait in the kernel's backlog, so a client
	// that connects early is served late rather than lost.
	open <-chan struct{}
	stop chan struct{} // closed by Close

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
	// clients counts network clients past CONNECT (Limits.MaxClients);
	// the in-memory device is not counted.
	clients atomic.Int64
	// lingering counts connections draining after a DISCONNECT.
	lingering atomic.Int64
	refused   *rateLimitedCounter
	// tlsFailed counts failed TLS handshakes, per remote host.
	tlsFailed *rateLimitedCounter
	// originRefused counts WebSocket handshakes refused for their Origin.
	originRefused *rateLimitedCounter
	// onPanic cleans up after a connection whose goroutine panicked.
	onPanic func(conn net.Conn)
	// disconnectAll ends the clients of one listener on shutdown. Mochi's
	// own closeListenerClients takes a read lock recursively (upstream
	// issue #488) and can deadlock against a concurrent connect.
	disconnectAll func(listenerID string)
	panics        atomic.Int64
}

func newConnListener(id, protocol string, ln net.Listener, guard *connGuard, open <-chan struct{}, log *slog.Logger) *connListener {
	return &connListener{
		id:       id,
		protocol: protocol,
		ln:       ln,
		guard:    guard,
		log:      log.With("listener", id),
		trusted:  protocol == inMemory,
		open:     open,
		stop:     make(chan struct{}),
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

// Serve waits for the listener to be opened, then accepts connections
// until it is closed.
func (l *connListener) Serve(establish listeners.EstablishFn) {
	if l.open != nil {
		select {
		case <-l.open:
		case <-l.stop:
			return
		}
	}
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
			l.guard.refused.add("", "max_pending", l.guard.limits.MaxPendingConnections, "remote", conn.RemoteAddr().String())
			_ = conn.Close()
			continue
		}
		gc := newGuardedConn(conn, l.guard, l.trusted, &l.wg)
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
	var deadline time.Time
	if t := l.guard.limits.ConnectTimeout; t > 0 {
		// Mochi waits forever for CONNECT; once CONNECT arrives it replaces
		// this deadline with one derived from the keepalive.
		deadline = time.Now().Add(t)
		_ = conn.SetReadDeadline(deadline)
	}
	// An mqtts connection shakes hands here, in its own goroutine and
	// within the CONNECT deadline, never in Accept: a client that stalls
	// its handshake holds up nobody else, and counts as pending meanwhile.
	if tc, ok := conn.Conn.(*tls.Conn); ok {
		if err := l.handshake(tc, deadline); err != nil {
			return
		}
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
// Connections that were sent a DISCONNECT linger (at most lingerTime) so
// their clients can read it; Close waits for them too.
func (l *connListener) Close(listeners.CloseFn) {
	l.mu.Lock()
	already := l.closed
	l.closed = true
	l.mu.Unlock()
	if already {
		return
	}
	close(l.stop)
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
func (g *connGuard) trackHandshake() func(net.Conn, http.ConnState) {
	return func(c net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			if g.pending.Add(1) > g.limits.MaxPendingConnections {
				g.refused.add("", "max_pending", g.limits.MaxPendingConnections, "remote", c.RemoteAddr().String())
				_ = c.Close() // StateClosed follows and releases the count
			}
		case http.StateHijacked, http.StateClosed:
			g.pending.Add(-1)
		}
	}
}

// Lingering after a DISCONNECT: how long and how many bytes the broker
// reads (and discards) from a client it has told to go, so that the
// client can read the reason before the connection ends. Closing a TCP
// socket with unread data sends a reset, and a reset makes the peer's
// kernel drop what it had received but not yet handed to the client.
const (
	lingerTime  = 2 * time.Second
	lingerBytes = 1 << 20
)

// errConnectTooLarge ends a connection whose first packet claims more
// than Limits.MaxConnectSize.
var errConnectTooLarge = errors.New("first packet larger than the CONNECT size limit")

// errMalformedLength ends a connection whose first remaining length takes
// more than the four bytes MQTT allows.
var errMalformedLength = errors.New("first packet's remaining length is longer than 4 bytes")

// guardedConn is every connection the broker serves. It watches the first
// packet's fixed header as it streams past: before the client is
// authenticated it may not claim more than maxFirst bytes, because Mochi
// allocates the claimed length before reading it; once the first packet
// has been read in full the connection no longer counts as pending. It
// holds the connection's client slot (Limits.MaxClients) until it ends.
// And it watches the packets the broker writes: when the last one is a
// DISCONNECT, Close half-closes and lingers (see linger) instead of
// resetting a client that is still writing.
type guardedConn struct {
	net.Conn
	guard    *connGuard
	maxFirst uint32
	wg       *sync.WaitGroup // the listener's, which Close waits on

	in       packetScanner // the first packet; only the read goroutine touches it
	finished bool

	outMu   sync.Mutex
	out     packetScanner // the packets the broker writes
	lastOut atomic.Uint32 // the type of the last packet written

	closing   atomic.Bool
	closeOnce sync.Once

	// pending is set while the connection counts in guard.pending (never
	// for the trusted listener's).
	pending atomic.Bool
	slot    atomic.Bool // holds a client slot
}

func newGuardedConn(conn net.Conn, guard *connGuard, trusted bool, wg *sync.WaitGroup) *guardedConn {
	c := &guardedConn{Conn: conn, guard: guard, maxFirst: guard.limits.MaxConnectSize, wg: wg}
	c.pending.Store(!trusted)
	return c
}

// release marks the connection as no longer pending and gives back its
// client slot (idempotent).
func (c *guardedConn) release() {
	if c.pending.CompareAndSwap(true, false) {
		c.guard.pending.Add(-1)
	}
	if c.slot.CompareAndSwap(true, false) {
		c.guard.clients.Add(-1)
	}
}

// takeClientSlot claims one of Limits.MaxClients for the connection until
// it ends, or reports that all are taken; force claims one regardless.
func (c *guardedConn) takeClientSlot(force bool) bool {
	if c.slot.Load() {
		return true
	}
	if c.guard.clients.Add(1) > c.guard.limits.MaxClients && !force {
		c.guard.clients.Add(-1)
		return false
	}
	c.slot.Store(true)
	return true
}

func (c *guardedConn) Read(p []byte) (int, error) {
	if c.closing.Load() {
		return 0, net.ErrClosed
	}
	n, err := c.Conn.Read(p)
	if c.closing.Load() {
		// Closed while reading: what arrived belongs to the drain.
		return 0, net.ErrClosed
	}
	if !c.finished && n > 0 {
		if scanErr := c.scanFirst(p[:n]); scanErr != nil {
			return 0, scanErr
		}
	}
	return n, err
}

// scanFirst follows the first packet and ends the pending state once it
// has been read.
func (c *guardedConn) scanFirst(b []byte) error {
	for len(b) > 0 && !c.finished {
		var ev scanEvent
		var err error
		b, ev, err = c.in.feed(b)
		switch {
		case errors.Is(err, errLengthTooLong):
			// Mochi accepts a fifth length byte, so refuse it here.
			return errMalformedLength
		case ev == scanLength && c.in.remaining > uint64(c.maxFirst):
			return fmt.Errorf("%w: %d > %d bytes", errConnectTooLarge, c.in.remaining, c.maxFirst)
		case ev == scanEnd:
			c.finished = true
			c.release()
		}
	}
	return nil
}

func (c *guardedConn) Write(p []byte) (int, error) {
	if c.closing.Load() {
		return 0, net.ErrClosed
	}
	c.outMu.Lock()
	b := p
	for len(b) > 0 {
		var err error
		if b, _, err = c.out.feed(b); err != nil {
			break // the broker never writes that; stop following
		}
	}
	c.lastOut.Store(uint32(c.out.typ >> 4))
	c.outMu.Unlock()
	return c.Conn.Write(p)
}

// SetDeadline passes the deadline on, except once the connection is
// closing: the drain's deadline is its own.
func (c *guardedConn) SetDeadline(t time.Time) error {
	if c.closing.Load() {
		return nil
	}
	return c.Conn.SetDeadline(t)
}

// SetReadDeadline passes the deadline on, except once the connection is
// closing.
func (c *guardedConn) SetReadDeadline(t time.Time) error {
	if c.closing.Load() {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

// halfCloser is a connection whose write side can be closed alone.
type halfCloser interface{ CloseWrite() error }

// Close ends the connection. If the last packet the broker wrote was a
// DISCONNECT, the client may still be writing (a client over its Receive
// Maximum usually is) and a plain close would reset the connection before
// the client read the reason; so Close closes the write side only and
// lingers (see linger). Reads and writes fail from now on either way.
func (c *guardedConn) Close() error {
	c.closeOnce.Do(func() {
		c.closing.Store(true)
		hc, ok := c.Conn.(halfCloser)
		if !ok || c.lastOut.Load() != uint32(packets.Disconnect) {
			_ = c.Conn.Close()
			return
		}
		// Lingering connections are bounded like pending ones, so a flood
		// of clients that earn a DISCONNECT cannot hold sockets without
		// limit; past the bound they are closed at once.
		if c.guard.lingering.Add(1) > c.guard.limits.MaxPendingConnections {
			c.guard.lingering.Add(-1)
			_ = c.Conn.Close()
			return
		}
		if err := hc.CloseWrite(); err != nil {
			c.guard.lingering.Add(-1)
			_ = c.Conn.Close()
			return
		}
		// Close is always called while the connection's serveConn holds
		// the listener's WaitGroup, so adding to it here is safe, and the
		// listener's Close waits for the drain.
		c.wg.Add(1)
		go c.linger()
	})
	return nil
}

// linger reads and discards what the client still sends, until it closes
// its side (it has read the DISCONNECT), lingerBytes have come, or
// lingerTime has passed; then it closes the connection.
func (c *guardedConn) linger() {
	defer c.wg.Done()
	defer c.guard.lingering.Add(-1)
	// A deadline already past (Mochi's, for the keepalive) would end the
	// drain at once; a timer too, since a read waiting for wsnet's lock
	// does not see deadlines.
	_ = c.Conn.SetReadDeadline(time.Now().Add(lingerTime))
	t := time.AfterFunc(lingerTime, func() { _ = c.Conn.Close() })
	defer t.Stop()
	// A small buffer: up to MaxPendingConnections of these may run.
	buf := make([]byte, 1024)
	for n := 0; n < lingerBytes; {
		k, err := c.Conn.Read(buf)
		n += k
		if err != nil {
			break
		}
	}
	_ = c.Conn.Close()
}

// scanEvent is what packetScanner.feed stopped at.
type scanEvent int

const (
	scanNone   scanEvent = iota // the input ran out
	scanLength                  // a packet's remaining length is known
	scanEnd                     // a packet has ended
)

// errLengthTooLong is a remaining length of more than 4 bytes.
var errLengthTooLong = errors.New("remaining length longer than 4 bytes")

// packetScanner follows MQTT packet boundaries in a byte stream without
// buffering it: one type byte, a remaining length of 1-4 bytes, then that
// many bytes. It is the one parser of fixed headers for both directions
// of a guardedConn.
type packetScanner struct {
	typ         byte   // the first byte of the current (or last) packet
	headerBytes int    // bytes of the fixed header seen
	remaining   uint64 // remaining length being decoded, then bytes left
	multiplier  uint64
	inBody      bool
}

// feed consumes b up to the next event and returns the rest.
func (s *packetScanner) feed(b []byte) ([]byte, scanEvent, error) {
	for len(b) > 0 {
		switch {
		case s.inBody:
			k := uint64(len(b))
			if k < s.remaining {
				s.remaining -= k
				return nil, scanNone, nil
			}
			b = b[s.remaining:]
			s.endPacket()
			return b, scanEnd, nil
		case s.headerBytes == 0:
			s.typ = b[0]
			s.headerBytes, s.multiplier, s.remaining = 1, 1, 0
			b = b[1:]
		default:
			digit := b[0]
			b = b[1:]
			s.headerBytes++
			s.remaining += uint64(digit&0x7f) * s.multiplier
			s.multiplier *= 128
			if digit&0x80 != 0 {
				if s.headerBytes > 4 {
					return b, scanNone, errLengthTooLong
				}
				continue
			}
			s.inBody = true
			if s.remaining == 0 {
				s.endPacket()
				// The length event comes first; the next feed reports
				// nothing for an empty body, so report the end now.
				return b, scanEnd, nil
			}
			return b, scanLength, nil
		}
	}
	return nil, scanNone, nil
}

func (s *packetScanner) endPacket() {
	s.headerBytes, s.remaining, s.inBody = 0, 0, false
}
