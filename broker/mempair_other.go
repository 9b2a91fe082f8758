//go:build !unix

package broker

import "net"

// connPair returns the two ends of an in-process connection. Without Unix
// socket pairs it is net.Pipe, which has no buffer (see the Unix version).
func connPair() (client, server net.Conn, err error) {
	c, s := net.Pipe()
	return c, s, nil
}
