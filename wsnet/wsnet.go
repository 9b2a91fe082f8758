// Package wsnet owns MQTT-over-WebSocket framing: it turns a WebSocket
// connection carrying binary frames into a net.Conn, so the broker's
// listeners and the device's dialer both speak plain byte streams.
// MQTT over WebSocket uses the "mqtt" subprotocol and binary messages only
// (MQTT 3.1.1 §6, MQTT 5 §6).
package wsnet

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Subprotocol is the WebSocket subprotocol MQTT clients ask for.
const Subprotocol = "mqtt"

// ErrTextFrame is returned by Read when the peer sends a text frame, which
// MQTT over WebSocket forbids.
var ErrTextFrame = errors.New("wsnet: text frame received; MQTT over WebSocket needs binary frames")

// Conn is a net.Conn over one WebSocket connection. Each Write becomes one
// binary message; Read returns the bytes of consecutive messages as a stream,
// because MQTT packets may span or share WebSocket messages.
type Conn struct {
	ws *websocket.Conn

	readMu  sync.Mutex
	reader  io.Reader // the message being read, nil between messages
	readErr error     // the error that ended reading; every later Read returns it

	writeMu sync.Mutex
	// writeDeadline is applied under writeMu before each write: gorilla's
	// SetWriteDeadline is not safe to call while another goroutine writes,
	// and MQTT servers refresh deadlines from their read loop.
	writeDeadline atomic.Pointer[time.Time]
}

// New wraps ws. The caller must not use ws directly afterwards.
func New(ws *websocket.Conn) *Conn {
	return &Conn{ws: ws}
}

// Read reads from the current binary message, moving on to the next one
// when it is exhausted. A read error other than ErrTextFrame is final, a
// timeout included (gorilla cannot resume after one): every later Read
// returns it again, whatever the deadline.
func (c *Conn) Read(p []byte) (int, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	if c.readErr != nil {
		return 0, c.readErr
	}
	for {
		if c.reader == nil {
			kind, r, err := c.ws.NextReader()
			if err != nil {
				// gorilla's read errors are permanent, and it panics
				// on the 1000th NextReader call after one: answer
				// later Reads ourselves.
				c.readErr = translateCloseError(err)
				return 0, c.readErr
			}
			if kind != websocket.BinaryMessage {
				return 0, ErrTextFrame
			}
			c.reader = r
		}
		n, err := c.reader.Read(p)
		if errors.Is(err, io.EOF) {
			c.reader = nil
			if n == 0 {
				continue // empty or finished message: wait for the next one
			}
			return n, nil
		}
		if err != nil {
			return n, translateCloseError(err)
		}
		return n, nil
	}
}

// translateCloseError maps a normal WebSocket close to io.EOF, which is what
// MQTT implementations expect from a stream that ended cleanly.
func translateCloseError(err error) error {
	if websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway, websocket.CloseNoStatusReceived) {
		return io.EOF
	}
	return err
}

// Write sends p as one binary message.
func (c *Conn) Write(p []byte) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if d := c.writeDeadline.Load(); d != nil {
		if err := c.ws.SetWriteDeadline(*d); err != nil {
			return 0, fmt.Errorf("wsnet: set write deadline: %w", err)
		}
	}
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, fmt.Errorf("wsnet: write: %w", err)
	}
	return len(p), nil
}

// Close closes the underlying connection without a closing handshake: MQTT
// has already said goodbye (or not) at its own layer.
func (c *Conn) Close() error { return c.ws.Close() }

// LocalAddr returns the local network address.
func (c *Conn) LocalAddr() net.Addr { return c.ws.LocalAddr() }

// RemoteAddr returns the remote network address.
func (c *Conn) RemoteAddr() net.Addr { return c.ws.RemoteAddr() }

// SetDeadline sets both the read and the write deadline.
func (c *Conn) SetDeadline(t time.Time) error {
	c.writeDeadline.Store(&t)
	return c.ws.SetReadDeadline(t)
}

// SetReadDeadline sets the read deadline. Unlike a TCP connection's, a
// read that times out ends the connection's reading for good.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.ws.SetReadDeadline(t) }

// SetWriteDeadline sets the deadline for the next writes.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.writeDeadline.Store(&t)
	return nil
}
