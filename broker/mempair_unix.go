//go:build unix

package broker

import (
	"fmt"
	"net"
	"os"
	"syscall"
)

// connPair returns the two ends of an in-process connection with the
// kernel's socket buffers between them (a Unix socket pair: no port, no
// file). net.Pipe has no buffer at all, and with it Mochi's writer, which
// holds a client's lock while it writes, and a paho client writing its
// PUBACK while nobody reads deadlocked as soon as a subscription brought a
// few retained QoS 1 messages at once.
func connPair() (client, server net.Conn, err error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("broker: in-memory connection: %w", err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		syscall.CloseOnExec(fd)
		f := os.NewFile(uintptr(fd), "pimqtt-in-process")
		c, err := net.FileConn(f) // dups the descriptor
		_ = f.Close()
		if err != nil {
			for _, done := range conns[:i] {
				_ = done.Close()
			}
			if i == 0 {
				_ = syscall.Close(fds[1])
			}
			return nil, nil, fmt.Errorf("broker: in-memory connection: %w", err)
		}
		conns[i] = memConn{c}
	}
	return conns[0], conns[1], nil
}
