package broker

import (
	"context"
	"net"
	"sync"
)

// memAddr names the in-memory listener's end of each pipe.
type memAddr struct{}

func (memAddr) Network() string { return "inmem" }
func (memAddr) String() string  { return "in-process" }

// memListener is a net.Listener whose connections are in-memory pipes made
// by dial. It lets the in-process device reach the broker without opening a
// port, so all-in-one mode needs neither a free port nor a password on disk.
type memListener struct {
	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

func newMemListener() *memListener {
	return &memListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

// Accept waits for the next dialled pipe.
func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting; pipes already handed out stay open.
func (l *memListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

// Addr returns the listener's symbolic address.
func (l *memListener) Addr() net.Addr { return memAddr{} }

// dial returns the client end of a new pipe whose server end is accepted
// by the broker.
func (l *memListener) dial(ctx context.Context) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
		_ = client.Close()
		_ = server.Close()
		return nil, net.ErrClosed
	case <-ctx.Done():
		_ = client.Close()
		_ = server.Close()
		return nil, ctx.Err()
	}
}
