package broker

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"testing"
	"time"
)

// idleMemory reads the runtime's heap and goroutine stack bytes in use.
func idleMemory() (heap, stacks uint64) {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/stacks:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64(), s[1].Value.Uint64()
}

// BenchmarkIdleClientMemory connects idleClients clients that then stay
// idle, and reports what each costs the broker: heap (live objects, GC
// run before each reading) and goroutine stacks (as they are after the
// connects, which is what the process's resident memory shows until
// the GC shrinks them). The clients' own ends of the connections (a
// socket each, no goroutine, no buffer) are in the heap figure: about
// 0.3 KiB each, measured by "client-side".
func BenchmarkIdleClientMemory(b *testing.B) {
	const idleClients = 500
	for _, c := range []struct {
		name     string
		kind     string
		password bool
	}{{"anonymous", TCP, false}, {"password", TCP, true}, {"websocket", WebSocket, false}} {
		b.Run(c.name, func(b *testing.B) {
			opts := Options{
				Listeners: []ListenerConfig{{Kind: c.kind, Addr: "127.0.0.1:0"}},
				Logger:    slog.New(slog.NewTextHandler(discardWriter{}, nil)),
				Limits:    DefaultLimits(),
			}
			opts.Limits.MaxClients = 2 * idleClients
			if c.password {
				opts.PasswordFile = writeBenchPasswords(b)
			}
			br, err := New(opts)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = br.Close() })
			if err := br.Start(); err != nil {
				b.Fatal(err)
			}
			br.OpenNetwork()
			addr := listenerAddr(b, br, c.kind)
			for b.Loop() {
				runtime.GC()
				heap0, stacks0 := idleMemory()
				g0 := runtime.NumGoroutine()
				conns := make([]net.Conn, 0, idleClients)
				for i := range idleClients {
					pkt := connectFor(4, fmt.Sprintf("idle-%d", i))
					if c.password {
						u := connectBenchUsers[i%len(connectBenchUsers)]
						pkt = connectWithPassword(fmt.Sprintf("idle-%d", i), u, u)
					}
					conn, err := net.Dial("tcp", addr)
					if err != nil {
						b.Fatal(err)
					}
					if c.kind == WebSocket {
						if err := bareWebSocketConnect(conn, pkt); err != nil {
							b.Fatal(err)
						}
					} else {
						cl := newRawClient(b, conn, 4)
						if err := cl.write(pkt); err != nil {
							b.Fatal(err)
						}
						cl.expect("CONNACK 0x00")
					}
					conns = append(conns, conn)
				}
				_, stacks1 := idleMemory()
				g1 := runtime.NumGoroutine()
				runtime.GC()
				heap1, _ := idleMemory()
				if path := os.Getenv("PIMQTT_HEAP_PROFILE"); path != "" {
					// With -memprofilerate 1: every live allocation with
					// the clients connected, by where it was made.
					writeHeapProfile(b, path+"."+c.name)
				}
				b.ReportMetric(float64(heap1-heap0)/idleClients, "heap-B/client")
				b.ReportMetric(float64(stacks1-stacks0)/idleClients, "stack-B/client")
				b.ReportMetric(float64(g1-g0)/idleClients, "goroutines/client")
				for _, conn := range conns {
					_ = conn.Close()
				}
				waitFor(b, replyTimeout, "the clients gone", func() bool { return br.guard.clients.Load() == 0 })
			}
		})
	}
}

// writeHeapProfile writes the live heap to path.
func writeHeapProfile(tb testing.TB, path string) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		tb.Fatal(err)
	}
}

// bareWebSocketConnect upgrades conn to a WebSocket, sends connect in one
// binary frame and reads the CONNACK frame, keeping no buffer of its own
// (a WebSocket library's would be counted with the broker's).
func bareWebSocketConnect(conn net.Conn, connect []byte) error {
	_ = conn.SetDeadline(time.Now().Add(replyTimeout))
	defer conn.SetDeadline(time.Time{})
	req := "GET /mqtt HTTP/1.1\r\nHost: broker\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		return err
	}
	// The response, up to its blank line, one byte at a time: nothing
	// after it may be consumed here.
	var resp []byte
	for !bytes.HasSuffix(resp, []byte("\r\n\r\n")) {
		var one [1]byte
		if _, err := io.ReadFull(conn, one[:]); err != nil {
			return fmt.Errorf("upgrade response: %w", err)
		}
		resp = append(resp, one[0])
	}
	if !bytes.HasPrefix(resp, []byte("HTTP/1.1 101")) {
		return fmt.Errorf("upgrade refused: %q", resp)
	}
	if len(connect) > 125 {
		return fmt.Errorf("CONNECT of %d bytes: one short frame only", len(connect))
	}
	// A final binary frame, masked with a zero key (clients must mask).
	frame := append([]byte{0x82, 0x80 | byte(len(connect)), 0, 0, 0, 0}, connect...)
	if _, err := conn.Write(frame); err != nil {
		return err
	}
	var ack [6]byte // frame header 82 04, CONNACK 20 02 00 00
	if _, err := io.ReadFull(conn, ack[:]); err != nil {
		return fmt.Errorf("CONNACK frame: %w", err)
	}
	if ack != [6]byte{0x82, 0x04, 0x20, 0x02, 0x00, 0x00} {
		return fmt.Errorf("want a CONNACK 0x00 frame, got % x", ack)
	}
	return nil
}
