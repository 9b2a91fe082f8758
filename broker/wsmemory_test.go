package broker

import (
	"fmt"
	"net"
	"runtime"
	"testing"
)

// idleHeapPerClient connects n clients to a listener of kind, keeps them
// idle and returns the heap each added (after a GC), in bytes.
func idleHeapPerClient(t *testing.T, kind string, n int) float64 {
	t.Helper()
	b, _ := startTestBroker(t, Options{Listeners: []ListenerConfig{{Kind: kind, Addr: "127.0.0.1:0"}}})
	addr := listenerAddr(t, b, kind)
	runtime.GC()
	heap0, _ := idleMemory()
	conns := make([]net.Conn, 0, n)
	// Everything this broker holds is released before the next
	// measurement starts.
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	}()
	for i := range n {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		pkt := connectFor(4, fmt.Sprintf("idle-%d", i))
		if kind == WebSocket {
			if err := bareWebSocketConnect(conn, pkt); err != nil {
				t.Fatal(err)
			}
			continue
		}
		cl := newRawClient(t, conn, 4)
		if err := cl.write(pkt); err != nil {
			t.Fatal(err)
		}
		cl.expect("CONNACK 0x00")
	}
	runtime.GC()
	heap1, _ := idleMemory()
	return (float64(heap1) - float64(heap0)) / float64(n)
}

// TestWebSocketIdleMemory: an idle WebSocket client costs little more
// than an idle TCP client: its connection keeps a small read buffer and
// no write buffer (gorilla's defaults, and pimqtt's before, kept 4 KiB of
// each per connection: 8.6 KiB more than TCP, measured).
func TestWebSocketIdleMemory(t *testing.T) {
	const n = 200
	tcp := idleHeapPerClient(t, TCP, n)
	ws := idleHeapPerClient(t, WebSocket, n)
	t.Logf("heap per idle client: TCP %.0f B, WebSocket %.0f B", tcp, ws)
	if extra := ws - tcp; extra > 3<<10 {
		t.Errorf("an idle WebSocket client costs %.0f B of heap more than a TCP client, want at most 3 KiB", extra)
	}
}
