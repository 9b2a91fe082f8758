package broker

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestWebSocketFailedUpgradeEndsConnection: a request on the WebSocket
// port that is not a valid upgrade gets an HTTP error and its connection
// ends, whatever keep-alive it asked for, so it stops counting as pending.
// Before, net/http kept the connection alive after the 400 with no
// deadline, counted as pending for ever: 30 of them with MaxPending 20
// locked every MQTT client out of every listener.
func TestWebSocketFailedUpgradeEndsConnection(t *testing.T) {
	limits := DefaultLimits()
	limits.MaxPendingConnections = 20
	// Far beyond the test's bounds: only ending the connection frees it.
	limits.ConnectTimeout = 5 * time.Minute
	b, _ := startTestBroker(t, Options{
		Listeners:      []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}, {Kind: WebSocket, Addr: "127.0.0.1:0"}},
		AllowAnonymous: true,
		Limits:         limits,
	})
	wsAddr := listenerAddr(t, b, WebSocket)
	requests := []struct{ name, req string }{
		{"GET without upgrade", "GET / HTTP/1.1\r\nHost: pi\r\n\r\n"},
		{"GET /mqtt without upgrade, keep-alive", "GET /mqtt HTTP/1.1\r\nHost: pi\r\nConnection: keep-alive\r\n\r\n"},
		{"HTTP/1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"},
		{"POST with a body", "POST / HTTP/1.1\r\nHost: pi\r\nContent-Length: 5\r\n\r\nhello"},
		{"POST whose body never comes", "POST / HTTP/1.1\r\nHost: pi\r\nContent-Length: 100000\r\n\r\nhel"},
		{"upgrade with a bad version", "GET /mqtt HTTP/1.1\r\nHost: pi\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
			"Sec-WebSocket-Version: 12\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"},
	}
	type attempt struct {
		name string
		conn net.Conn
	}
	var attempts []attempt
	t.Cleanup(func() {
		for _, a := range attempts {
			_ = a.conn.Close()
		}
	})
	for i := 0; i < 30; i++ {
		r := requests[i%len(requests)]
		c, err := net.Dial("tcp", wsAddr)
		if err != nil {
			t.Fatal(err)
		}
		attempts = append(attempts, attempt{r.name, c})
		if _, err := c.Write([]byte(r.req)); err != nil {
			t.Fatalf("%s: write: %v", r.name, err)
		}
		// Each one is answered and ended before the next is sent, so
		// they never hold more than one pending slot at a time, and the
		// client side is never closed: only the broker can free them.
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s (connection %d): no HTTP answer: %v", r.name, i, err)
		}
		if resp.StatusCode < 400 {
			t.Fatalf("%s: %s, want an HTTP error", r.name, resp.Status)
		}
		t.Logf("%s: %s", r.name, resp.Status)
		waitClosed(t, c, 5*time.Second)
	}
	// Every connection has ended; nothing stays pending, and MQTT clients
	// get in on both listeners.
	waitFor(t, 5*time.Second, "pending count back to 0", func() bool { return b.guard.pending.Load() == 0 })
	roundTrip(t, listenerAddr(t, b, TCP))
	roundTripURL(t, "ws://"+wsAddr+"/mqtt")
	waitFor(t, 5*time.Second, "pending count back to 0", func() bool { return b.guard.pending.Load() == 0 })
}

// TestWebSocketLockOut is the attack of issue 8 as it was reported: thirty
// sockets each send a plain GET and keep their connection; with
// MaxPending 20 a real MQTT client must still get in.
func TestWebSocketLockOut(t *testing.T) {
	limits := DefaultLimits()
	limits.MaxPendingConnections = 20
	limits.ConnectTimeout = 5 * time.Minute
	b, _ := startTestBroker(t, Options{
		Listeners:      []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}, {Kind: WebSocket, Addr: "127.0.0.1:0"}},
		AllowAnonymous: true,
		Limits:         limits,
	})
	wsAddr := listenerAddr(t, b, WebSocket)
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			_ = c.Close()
		}
	})
	for i := 0; i < 30; i++ {
		c, err := net.Dial("tcp", wsAddr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: pi\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	// Every socket ends: answered and closed (or, over the cap while the
	// others were pending, closed at once).
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4096)
		for {
			_, err := c.Read(buf)
			if err == nil {
				continue
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("socket %d still open after its request: it stays pending", i)
			}
			break
		}
	}
	waitFor(t, 5*time.Second, "pending count back to 0", func() bool { return b.guard.pending.Load() == 0 })
	roundTrip(t, listenerAddr(t, b, TCP))
	waitFor(t, 5*time.Second, "pending count back to 0 after the client", func() bool { return b.guard.pending.Load() == 0 })
}
