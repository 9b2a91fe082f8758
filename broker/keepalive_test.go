package broker

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestKeepAliveAsMosquitto: 3.1.1 clients get the keepalive they asked
// for, or, over MaxKeepAlive, a refusal they can see (CONNACK 2) and a log
// line naming the limit; at the default 65535 s every keepalive is
// accepted, 0 included. MQTT 5 clients asking for more, or for 0, are held
// to the limit and told so in CONNACK (Server Keep Alive). Before, 3.1.1
// clients were silently held to 10 minutes.
func TestKeepAliveAsMosquitto(t *testing.T) {
	for _, tc := range []struct {
		name     string
		max      time.Duration // 0: DefaultLimits
		version  byte
		asked    uint16
		want     string // the CONNACK
		granted  uint16 // the keepalive the broker holds the client to
		told     bool   // Server Keep Alive in CONNACK
		logLimit string // a log line must name it
	}{
		{name: "default, v3 0", version: 4, asked: 0, want: "CONNACK 0x00", granted: 0},
		{name: "default, v3 60", version: 4, asked: 60, want: "CONNACK 0x00", granted: 60},
		{name: "default, v3 65535", version: 4, asked: 65535, want: "CONNACK 0x00", granted: 65535},
		{name: "default, v5 0", version: 5, asked: 0, want: "CONNACK 0x00", granted: 65535, told: true},
		{name: "default, v5 600", version: 5, asked: 600, want: "CONNACK 0x00", granted: 600},
		{name: "60s, v3 60", max: time.Minute, version: 4, asked: 60, want: "CONNACK 0x00", granted: 60},
		{name: "60s, v3 30", max: time.Minute, version: 4, asked: 30, want: "CONNACK 0x00", granted: 30},
		{name: "60s, v3 61", max: time.Minute, version: 4, asked: 61, want: "CONNACK 0x02", logLimit: "max_keepalive=60"},
		{name: "60s, v3 0", max: time.Minute, version: 4, asked: 0, want: "CONNACK 0x02", logLimit: "max_keepalive=60"},
		{name: "60s, v5 61", max: time.Minute, version: 5, asked: 61, want: "CONNACK 0x00", granted: 60, told: true},
		{name: "60s, v5 0", max: time.Minute, version: 5, asked: 0, want: "CONNACK 0x00", granted: 60, told: true},
		{name: "60s, v5 59", max: time.Minute, version: 5, asked: 59, want: "CONNACK 0x00", granted: 59},
	} {
		t.Run(tc.name, func(t *testing.T) {
			limits := DefaultLimits()
			if tc.max != 0 {
				limits.MaxKeepAlive = tc.max
			}
			b, logs := startTestBroker(t, Options{
				Listeners:      []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}},
				AllowAnonymous: true,
				Limits:         limits,
			})
			cl := dialRaw(t, listenerAddr(t, b, TCP), tc.version)
			defer cl.close()
			id := "ka-client"
			var connect string
			if tc.version == 5 {
				connect = fmt.Sprintf("%s02 H%d 00 s'%s'", connect5, tc.asked, id)
			} else {
				connect = fmt.Sprintf("%s02 H%d s'%s'", connect4, tc.asked, id)
			}
			if err := cl.write(pk(connect)); err != nil {
				t.Fatal(err)
			}
			ack := cl.expect(tc.want)
			// Mochi warns about every keepalive under 5 s, 0 included,
			// which pimqtt accepts by design: not a warning.
			defer func() {
				if strings.Contains(logs.since(0), "below minimum") {
					t.Errorf("keepalive warning logged:\n%s", logs.since(0))
				}
			}()
			if tc.want != "CONNACK 0x00" {
				cl.expectClosed()
				if !strings.Contains(logs.since(0), tc.logLimit) {
					t.Fatalf("no log line naming %s:\n%s", tc.logLimit, logs.since(0))
				}
				return
			}
			if tc.version == 5 {
				ska, told := connackProps(t, ack)[0x13]
				if told != tc.told || (told && binary.BigEndian.Uint16(ska) != tc.granted) {
					t.Fatalf("CONNACK % x: Server Keep Alive %v % x, want %v %d", ack.body, told, ska, tc.told, tc.granted)
				}
			}
			cl.ping() // CONNACK is sent after the session is in place
			c, ok := b.server.Clients.Get(id)
			if !ok {
				t.Fatal("client not found")
			}
			if c.State.Keepalive != tc.granted {
				t.Fatalf("keepalive %d, want %d", c.State.Keepalive, tc.granted)
			}
		})
	}
}
