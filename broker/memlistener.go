package broker

import (
	"context"
	"net"
	"sync"
)

// connQueue is a net.Listener whose connections are handed to it in
// process: in-memory pipes for the device, upgraded WebSocket connections.
type connQueue struct {
	addr      net.Addr
	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// Accept waits for the next handed-over connection.
func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.conns:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting; connections already handed out stay open.
func (q *connQueue) Close() error {
	q.closeOnce.Do(func() { close(q.done) })
	return nil
}

// Addr returns the listener's address.
func (q *connQueue) Addr() net.Addr { return q.addr }

// offer hands c to Accept, or closes it if the queue is closed or ctx
// ends first.
func (q *connQueue) offer(ctx context.Context, c net.Conn) error {
	select {
	case q.conns <- c:
		return nil
	case <-q.done:
		_ = c.Close()
		return net.ErrClosed
	case <-ctx.Done():
		_ = c.Close()
		return ctx.Err()
	}
}

// memAddr names the in-memory listener's end of each pipe.
type memAddr struct{}

func (memAddr) Network() string { return "inmem" }
func (memAddr) String() string  { return "in-process" }

// memConn is one end of an in-process connection: both ends are named
// "in-process" (a socket pair has no addresses, and Mochi logs them).
type memConn struct{ net.Conn }

func (memConn) LocalAddr() net.Addr  { return memAddr{} }
func (memConn) RemoteAddr() net.Addr { return memAddr{} }

// memListener lets the in-process device reach the broker without opening
// a port, so all-in-one mode needs neither a free port nor a password on
// disk.
type memListener struct{ *connQueue }

func newMemListener() *memListener { return &memListener{newConnQueue(memAddr{})} }

// dial returns the client end of a new in-process connection whose
// server end is accepted by the broker.
func (l *memListener) dial(ctx context.Context) (net.Conn, error) {
	client, server, err := connPair()
	if err != nil {
		return nil, err
	}
	if err := l.offer(ctx, server); err != nil {
		_ = client.Close()
		return nil, err
	}
	return client, nil
}
