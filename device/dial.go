package device

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// NetDialer returns a DialFunc that reaches an external MQTT broker, for device-only mode.
//
// Accepted URLs:
//   - tcp://host[:port], mqtt://host[:port]: plain TCP, default port 1883
//   - mqtts://host[:port], ssl://host[:port], tls://host[:port]: TLS over TCP, default port 8883,
//     server certificate verified against the system roots
//   - ws://host[:port][/path]: WebSocket, default port 80, default path /mqtt
//   - wss://host[:port][/path]: WebSocket over TLS, default port 443, default path /mqtt
//
// WebSocket connections offer the "mqtt" subprotocol and carry MQTT in binary frames. No HTTP
// proxy is used. Credentials do not belong in the URL (they would end up in logs): pass them in
// Options. timeout bounds connecting, including the TLS and WebSocket handshakes; 0 means 10 s.
func NetDialer(brokerURL string, timeout time.Duration) (DialFunc, error) {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	u, err := url.Parse(brokerURL)
	if err != nil {
		return nil, fmt.Errorf("broker URL %q: %w", brokerURL, err)
	}
	if u.User != nil {
		return nil, fmt.Errorf("broker URL %q: credentials in the URL are not supported, set the username and password options instead", u.Redacted())
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("broker URL %q: no host (want e.g. tcp://127.0.0.1:1883)", brokerURL)
	}
	scheme := strings.ToLower(u.Scheme)
	netDialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}

	switch scheme {
	case "tcp", "mqtt", "mqtts", "ssl", "tls":
		if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("broker URL %q: a %s:// URL takes no path, query or fragment", brokerURL, scheme)
		}
		if scheme == "tcp" || scheme == "mqtt" {
			addr := hostPort(u, "1883")
			return func(ctx context.Context) (net.Conn, error) {
				c, err := netDialer.DialContext(ctx, "tcp", addr)
				if err != nil {
					return nil, fmt.Errorf("dial tcp %s: %w", addr, err)
				}
				return c, nil
			}, nil
		}
		addr := hostPort(u, "8883")
		tlsDialer := &tls.Dialer{
			NetDialer: netDialer,
			Config:    &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12},
		}
		return func(ctx context.Context) (net.Conn, error) {
			c, err := tlsDialer.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, fmt.Errorf("dial tls %s: %w", addr, err)
			}
			return c, nil
		}, nil

	case "ws", "wss":
		target := *u
		target.Scheme = scheme
		if target.Path == "" {
			target.Path = "/mqtt"
		}
		wsDialer := &websocket.Dialer{
			NetDialContext:   netDialer.DialContext,
			HandshakeTimeout: timeout,
			Subprotocols:     []string{"mqtt"},
		}
		if scheme == "wss" {
			wsDialer.TLSClientConfig = &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12}
		}
		urlStr := target.String()
		return func(ctx context.Context) (net.Conn, error) {
			ws, resp, err := wsDialer.DialContext(ctx, urlStr, nil)
			if resp != nil && resp.Body != nil {
				// The handshake response body is only useful on failure; close it either way
				// so the underlying connection is not kept alive by an unread body.
				_ = resp.Body.Close()
			}
			if err != nil {
				if resp != nil {
					return nil, fmt.Errorf("websocket handshake with %s: HTTP %s: %w", urlStr, resp.Status, err)
				}
				return nil, fmt.Errorf("websocket dial %s: %w", urlStr, err)
			}
			return &wsConn{ws: ws}, nil
		}, nil
	}
	return nil, fmt.Errorf("broker URL %q: unsupported scheme %q (want tcp, mqtt, mqtts, ssl, tls, ws or wss)", brokerURL, u.Scheme)
}

// hostPort adds the scheme's default port when the URL has none.
func hostPort(u *url.URL, defaultPort string) string {
	if p := u.Port(); p != "" {
		return net.JoinHostPort(u.Hostname(), p)
	}
	return net.JoinHostPort(u.Hostname(), defaultPort)
}

// wsConn presents a WebSocket as the byte stream paho expects. MQTT packets may span or share
// WebSocket messages, so Read drains one binary message at a time and moves on to the next.
type wsConn struct {
	ws *websocket.Conn

	readMu sync.Mutex // paho reads from one goroutine; the lock documents and enforces that
	r      io.Reader  // current message, nil between messages

	// gorilla allows one concurrent writer, but paho writes both from its outgoing-packet
	// goroutine and from its keepalive goroutine (PINGREQ), so writes must be serialised.
	writeMu sync.Mutex

	closeOnce sync.Once
	closeErr  error
}

// errTextFrame reports a peer speaking MQTT in text frames, which the MQTT WebSocket binding
// forbids (and which would corrupt binary payloads).
var errTextFrame = errors.New("websocket: received a text frame, MQTT requires binary frames")

func (c *wsConn) Read(p []byte) (int, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, errTextFrame
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n > 0 {
				return n, nil
			}
			continue // empty message: nothing to hand back yet
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close sends a close frame (bounded, so a dead peer cannot stall shutdown) and closes the
// socket. It is idempotent because paho may close a connection from more than one path.
func (c *wsConn) Close() error {
	c.closeOnce.Do(func() {
		// WriteControl may run concurrently with Write (gorilla serialises it internally), and
		// must not take writeMu: a Write stuck on a dead peer holds it, and Close is what
		// unblocks that Write.
		_ = c.ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""),
			time.Now().Add(500*time.Millisecond))
		c.closeErr = c.ws.Close()
	})
	return c.closeErr
}

func (c *wsConn) LocalAddr() net.Addr  { return c.ws.LocalAddr() }
func (c *wsConn) RemoteAddr() net.Addr { return c.ws.RemoteAddr() }

func (c *wsConn) SetDeadline(t time.Time) error {
	return errors.Join(c.ws.SetReadDeadline(t), c.ws.SetWriteDeadline(t))
}
func (c *wsConn) SetReadDeadline(t time.Time) error  { return c.ws.SetReadDeadline(t) }
func (c *wsConn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }
