// Package rawmqtt is a minimal MQTT 3.1.1 client for load generation: it
// writes packets straight into a bufio.Writer and reads them into one
// reused buffer, so that a benchmark measures the broker, not its client
// (a paho client spends more CPU per message than the broker under test).
//
// It does no more than a benchmark needs: CONNECT with user name and
// password, SUBSCRIBE to one filter, PUBLISH at QoS 0 and 1, PUBACK,
// PINGREQ, DISCONNECT. It keeps no session state: the caller owns packet
// ids and acknowledgements. A Client may be written by one goroutine while
// another reads it; neither side is safe for concurrent use by itself.
package rawmqtt

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pimqtt/pimqtt/wsnet"
)

// Packet types (MQTT 3.1.1 §2.2.1), as the high nibble of the first byte.
const (
	CONNECT    byte = 1
	CONNACK    byte = 2
	PUBLISH    byte = 3
	PUBACK     byte = 4
	SUBSCRIBE  byte = 8
	SUBACK     byte = 9
	PINGREQ    byte = 12
	PINGRESP   byte = 13
	DISCONNECT byte = 14
)

// maxRemaining bounds the length a packet from the broker may claim: a
// benchmark never receives more than a few KiB, and a corrupt length must
// not allocate a huge buffer.
const maxRemaining = 1 << 20

// Network says how to reach the broker.
type Network string

// The transports Dial knows.
const (
	TCP       Network = "tcp"
	WebSocket Network = "ws" // MQTT over WebSocket, subprotocol "mqtt", path /mqtt
)

// Dial connects to a broker on a loopback address (the only kind a load
// generator may flood) over network, within timeout.
func Dial(network Network, addr string, timeout time.Duration) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("rawmqtt: broker address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("rawmqtt: broker address %q: only loopback addresses (127.0.0.1, ::1) may be loaded", addr)
	}
	switch network {
	case TCP:
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			return nil, fmt.Errorf("rawmqtt: dial %s: %w", addr, err)
		}
		return c, nil
	case WebSocket:
		d := websocket.Dialer{Subprotocols: []string{wsnet.Subprotocol}, HandshakeTimeout: timeout,
			ReadBufferSize: 4096, WriteBufferSize: 4096}
		ws, resp, err := d.Dial("ws://"+addr+"/mqtt", nil)
		if resp != nil && resp.Body != nil {
			_ = resp.Body.Close()
		}
		if err != nil {
			return nil, fmt.Errorf("rawmqtt: WebSocket dial ws://%s/mqtt: %w", addr, err)
		}
		return wsnet.New(ws), nil
	}
	return nil, fmt.Errorf("rawmqtt: network %q: want %q or %q", network, TCP, WebSocket)
}

// Options are a client's CONNECT fields and buffer sizes.
type Options struct {
	ClientID           string
	Username, Password string // empty: not sent
	KeepAlive          uint16 // seconds; 0 turns keepalive off
	// Persistent asks for a persistent session (clean session 0); the
	// default is a clean session.
	Persistent bool
	// BufferSize is the size of the read and of the write buffer (default
	// 4 KiB). Throughput clients want 64 KiB; thousands of idle clients
	// want little.
	BufferSize int
}

// Client is one MQTT connection.
type Client struct {
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
	body []byte // the last packet's body, reused
}

// ConnectError is a CONNACK with a non-zero return code.
type ConnectError struct{ Code byte }

func (e ConnectError) Error() string {
	return fmt.Sprintf("rawmqtt: CONNACK return code %d (4: bad user name or password, 5: not authorised, 3: server unavailable)", e.Code)
}

// Connect sends CONNECT on conn and waits for the CONNACK, within timeout.
// On error conn is closed.
func Connect(conn net.Conn, o Options, timeout time.Duration) (*Client, error) {
	size := o.BufferSize
	if size <= 0 {
		size = 4096
	}
	c := &Client{conn: conn, r: bufio.NewReaderSize(conn, size), w: bufio.NewWriterSize(conn, size)}
	if err := c.connect(o, timeout); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return c, nil
}

func (c *Client) connect(o Options, timeout time.Duration) error {
	if err := c.conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("rawmqtt: %w", err)
	}
	var flags byte
	n := 10 + 2 + len(o.ClientID)
	if o.Username != "" {
		flags |= 0x80
		n += 2 + len(o.Username)
	}
	if o.Password != "" {
		flags |= 0x40
		n += 2 + len(o.Password)
	}
	if !o.Persistent {
		flags |= 0x02
	}
	c.header(CONNECT<<4, n)
	c.str("MQTT")
	_ = c.w.WriteByte(4) // protocol level: 3.1.1
	_ = c.w.WriteByte(flags)
	c.u16(o.KeepAlive)
	c.str(o.ClientID)
	if o.Username != "" {
		c.str(o.Username)
	}
	if o.Password != "" {
		c.str(o.Password)
	}
	if err := c.Flush(); err != nil {
		return err
	}
	typ, _, body, err := c.ReadPacket()
	if err != nil {
		return fmt.Errorf("rawmqtt: waiting for CONNACK: %w", err)
	}
	if typ != CONNACK || len(body) != 2 {
		return fmt.Errorf("rawmqtt: packet type %d of %d bytes where CONNACK was due", typ, len(body))
	}
	if body[1] != 0 {
		return ConnectError{body[1]}
	}
	if err := c.conn.SetDeadline(time.Time{}); err != nil {
		return fmt.Errorf("rawmqtt: %w", err)
	}
	return nil
}

// Conn returns the connection, e.g. to set deadlines.
func (c *Client) Conn() net.Conn { return c.conn }

// Close closes the connection without DISCONNECT.
func (c *Client) Close() error { return c.conn.Close() }

// Flush writes what is buffered.
func (c *Client) Flush() error {
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("rawmqtt: write: %w", err)
	}
	return nil
}

// Buffered is the number of received bytes not read yet: when it is 0,
// the next ReadPacket blocks, so a reader flushes its acknowledgements
// first.
func (c *Client) Buffered() int { return c.r.Buffered() }

// Publish buffers a PUBLISH; pid is ignored at QoS 0. Flush sends it
// and reports any write error (bufio keeps the first one).
func (c *Client) Publish(topic string, qos byte, retain bool, pid uint16, payload []byte) {
	first := PUBLISH<<4 | qos<<1
	if retain {
		first |= 1
	}
	n := 2 + len(topic) + len(payload)
	if qos > 0 {
		n += 2
	}
	c.header(first, n)
	c.str(topic)
	if qos > 0 {
		c.u16(pid)
	}
	_, _ = c.w.Write(payload)
}

// Puback buffers a PUBACK.
func (c *Client) Puback(pid uint16) {
	c.header(PUBACK<<4, 2)
	c.u16(pid)
}

// Pingreq buffers a PINGREQ.
func (c *Client) Pingreq() { c.header(PINGREQ<<4, 0) }

// Disconnect sends DISCONNECT.
func (c *Client) Disconnect() error {
	c.header(DISCONNECT<<4, 0)
	return c.Flush()
}

// Subscribe subscribes to one filter at qos and waits for the SUBACK,
// within timeout. Nothing else may be read from c meanwhile.
func (c *Client) Subscribe(filter string, qos byte, timeout time.Duration) error {
	const pid = 1
	c.header(SUBSCRIBE<<4|2, 2+2+len(filter)+1)
	c.u16(pid)
	c.str(filter)
	_ = c.w.WriteByte(qos)
	if err := c.Flush(); err != nil {
		return err
	}
	if err := c.conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("rawmqtt: %w", err)
	}
	defer func() { _ = c.conn.SetReadDeadline(time.Time{}) }()
	for {
		typ, _, body, err := c.ReadPacket()
		if err != nil {
			return fmt.Errorf("rawmqtt: waiting for SUBACK of %s: %w", filter, err)
		}
		if typ != SUBACK {
			continue // a retained message may come first
		}
		if len(body) != 3 || binary.BigEndian.Uint16(body) != pid {
			return fmt.Errorf("rawmqtt: malformed SUBACK % x", body)
		}
		if body[2] == 0x80 {
			return fmt.Errorf("rawmqtt: subscription to %s refused", filter)
		}
		return nil
	}
}

// ReadPacket reads the next packet: its type, the flags of its first byte
// and its body, which stays valid until the next ReadPacket.
func (c *Client) ReadPacket() (typ, flags byte, body []byte, err error) {
	first, err := c.r.ReadByte()
	if err != nil {
		return 0, 0, nil, err
	}
	n, mul := 0, 1
	for i := 0; ; i++ {
		b, err := c.r.ReadByte()
		if err != nil {
			return 0, 0, nil, err
		}
		n += int(b&0x7f) * mul
		if b&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, 0, nil, errors.New("rawmqtt: malformed remaining length")
		}
		mul <<= 7
	}
	if n > maxRemaining {
		return 0, 0, nil, fmt.Errorf("rawmqtt: packet of %d bytes: more than a benchmark ever receives", n)
	}
	if cap(c.body) < n {
		c.body = make([]byte, n, max(n, 256))
	}
	c.body = c.body[:n]
	if _, err := io.ReadFull(c.r, c.body); err != nil {
		return 0, 0, nil, err
	}
	return first >> 4, first & 0x0f, c.body, nil
}

// ParsePublish splits a PUBLISH body (flags from ReadPacket) into topic,
// packet id (0 at QoS 0) and payload, which share the body's memory.
func ParsePublish(flags byte, body []byte) (topic []byte, pid uint16, payload []byte, err error) {
	if len(body) < 2 {
		return nil, 0, nil, errors.New("rawmqtt: PUBLISH without topic")
	}
	tl := int(binary.BigEndian.Uint16(body))
	rest := body[2:]
	if len(rest) < tl {
		return nil, 0, nil, errors.New("rawmqtt: PUBLISH topic longer than the packet")
	}
	topic, rest = rest[:tl], rest[tl:]
	if flags>>1&3 > 0 {
		if len(rest) < 2 {
			return nil, 0, nil, errors.New("rawmqtt: PUBLISH without packet id")
		}
		pid, rest = binary.BigEndian.Uint16(rest), rest[2:]
	}
	return topic, pid, rest, nil
}

// header buffers a fixed header: the first byte and the remaining length.
func (c *Client) header(first byte, n int) {
	_ = c.w.WriteByte(first)
	for {
		b := byte(n & 0x7f)
		n >>= 7
		if n > 0 {
			b |= 0x80
		}
		_ = c.w.WriteByte(b)
		if n == 0 {
			return
		}
	}
}

func (c *Client) u16(v uint16) {
	_ = c.w.WriteByte(byte(v >> 8))
	_ = c.w.WriteByte(byte(v))
}

func (c *Client) str(s string) {
	c.u16(uint16(len(s)))
	_, _ = c.w.WriteString(s)
}
