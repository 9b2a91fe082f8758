package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// TestReceiveMaximumDisconnectIsRead: a client that floods QoS 2
// PUBLISHes past the Receive Maximum without reading is sent DISCONNECT
// 0x93 and must be able to read it once it reads. Before, the broker
// closed the socket with the flood unread, which resets the connection:
// the client's kernel then drops what it had received, DISCONNECT
// included, and the client reads ECONNRESET.
//
// (Mochi counts a QoS 1 PUBLISH against the quota only while it writes
// its PUBACK, so only unreleased QoS 2 messages exhaust it.)
func TestReceiveMaximumDisconnectIsRead(t *testing.T) {
	for _, kind := range []string{TCP, WebSocket} {
		t.Run(kind, func(t *testing.T) {
			limits := DefaultLimits()
			limits.MaxInflight = 10 // also the Receive Maximum
			b, logs := startTestBroker(t, Options{
				Listeners:      []ListenerConfig{{Kind: kind, Addr: "127.0.0.1:0"}},
				AllowAnonymous: true,
				Limits:         limits,
			})
			conn := dialKind(t, kind, listenerAddr(t, b, kind))
			cl := newRawClient(t, conn, 5)
			defer cl.close()
			cl.connect("flooder")

			// 2000 QoS 2 PUBLISHes (~250 KiB) in one burst, never a PUBREL,
			// nothing read meanwhile.
			var flood bytes.Buffer
			payload := strings.Repeat("x", 100)
			for id := 1; id <= 2000; id++ {
				flood.Write(pk(fmt.Sprintf("34 r? s'flood/t' m%d 00 '%s'", id, payload)))
			}
			_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := conn.Write(flood.Bytes()); err != nil {
				t.Fatalf("the broker stopped reading before the client could finish writing: %v", err)
			}

			// Now read: 10 PUBRECs, then the reason, then the end.
			for i := 0; ; i++ {
				p, err := cl.nextRaw()
				if err != nil {
					t.Fatalf("after %d packets: %v (want DISCONNECT 0x93)\nbroker log:\n%s", i, err, logs.since(0))
				}
				d := p.describe(5)
				if d == "PUBREC" && i < int(limits.MaxInflight) {
					continue
				}
				if d != "DISCONNECT 0x93" {
					t.Fatalf("packet %d: %s, want DISCONNECT 0x93", i, d)
				}
				break
			}
			if p, err := cl.nextRaw(); !errors.Is(err, io.EOF) {
				t.Fatalf("after the DISCONNECT: %v %s, want the connection's end (EOF)", err, p.describe(5))
			}
			// The client closes too, which ends the broker's drain.
			cl.close()
			ctx, cancel := context.WithTimeout(context.Background(), 2*lingerTime)
			defer cancel()
			if err := waitBrokerConns(ctx, b, 0); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 2*lingerTime, "no connection lingering", func() bool { return b.guard.lingering.Load() == 0 })
		})
	}
}

// TestLingerIsBounded: a client that keeps writing after its DISCONNECT
// is not read for ever: the broker closes after lingerTime.
func TestLingerIsBounded(t *testing.T) {
	limits := DefaultLimits()
	limits.MaxInflight = 1
	b, _ := startTestBroker(t, Options{
		Listeners:      []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}},
		AllowAnonymous: true,
		Limits:         limits,
	})
	cl := dialRaw(t, listenerAddr(t, b, TCP), 5)
	defer cl.close()
	cl.connect("writer")
	start := time.Now()
	for id := 1; id <= 2; id++ {
		if err := cl.write(pk(fmt.Sprintf("34 r? s'w' m%d 00 'p'", id))); err != nil {
			t.Fatal(err)
		}
	}
	cl.expect("PUBREC")
	cl.expect("DISCONNECT 0x93")
	// Keep writing a PINGREQ every few milliseconds: the broker must end
	// the connection anyway, after lingerTime (bounded loop).
	for time.Since(start) < 5*lingerTime {
		if err := cl.write([]byte{0xC0, 0x00}); err != nil {
			break
		}
		time.Sleep(5 * time.Millisecond) // the client's pace, not synchronisation
	}
	if d := time.Since(start); d >= 5*lingerTime {
		t.Fatalf("still accepting writes %v after DISCONNECT", d)
	}
	waitFor(t, 2*lingerTime, "no connection lingering", func() bool { return b.guard.lingering.Load() == 0 })
}
