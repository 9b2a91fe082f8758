package broker

import (
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestTCPKeepAlive: every accepted connection, on TCP and WebSocket
// listeners, has TCP keepalive on with the period tcpKeepAlive names, so
// a vanished peer is found even when its MQTT keepalive is 0.
func TestTCPKeepAlive(t *testing.T) {
	b, _ := startTestBroker(t, Options{
		Listeners:      []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}, {Kind: WebSocket, Addr: "127.0.0.1:0"}},
		AllowAnonymous: true,
	})
	for i, kind := range []string{TCP, WebSocket} {
		conn := dialKind(t, kind, listenerAddr(t, b, kind))
		defer conn.Close()
		cl := newRawClient(t, conn, 4)
		cl.connect("ka-" + kind)

		l, ok := b.server.Listeners.Get(fmt.Sprintf("%s%d", kind, i))
		if !ok {
			t.Fatalf("no listener for %s", kind)
		}
		ln := l.(*connListener)
		var tcp *net.TCPConn
		ln.mu.Lock()
		for c := range ln.conns {
			switch u := c.(*guardedConn).Conn.(type) {
			case *net.TCPConn:
				tcp = u
			case wsConn:
				tcp, _ = u.ws.NetConn().(*net.TCPConn)
			}
		}
		ln.mu.Unlock()
		if tcp == nil {
			t.Fatalf("%s: no TCP connection found", kind)
		}
		raw, err := tcp.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int{}
		opts := []struct {
			name       string
			level, opt int
			want       int
		}{
			{"SO_KEEPALIVE", syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
			{"TCP_KEEPIDLE", syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, int(tcpKeepAlive.Idle / time.Second)},
			{"TCP_KEEPINTVL", syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, int(tcpKeepAlive.Interval / time.Second)},
			{"TCP_KEEPCNT", syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, tcpKeepAlive.Count},
		}
		if err := raw.Control(func(fd uintptr) {
			for _, o := range opts {
				v, err := syscall.GetsockoptInt(int(fd), o.level, o.opt)
				if err != nil {
					t.Errorf("%s: getsockopt %s: %v", kind, o.name, err)
				}
				got[o.name] = v
			}
		}); err != nil {
			t.Fatal(err)
		}
		for _, o := range opts {
			if got[o.name] != o.want {
				t.Errorf("%s: %s = %d, want %d", kind, o.name, got[o.name], o.want)
			}
		}
	}
}
