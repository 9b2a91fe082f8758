package broker

import (
	"context"
	"errors"
	"net"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestNetworkOpensAfterOpenNetwork: after Start the in-memory listener
// serves (the device connects), but a network client is served only
// after OpenNetwork: its connection waits in the kernel's backlog, and
// its CONNECT, sent early, is answered then, not lost.
func TestNetworkOpensAfterOpenNetwork(t *testing.T) {
	b, logs := newTestBroker(t, Options{
		Listeners:      []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}, {Kind: WebSocket, Addr: "127.0.0.1:0"}},
		AllowAnonymous: true,
	})
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	tcp := dialRaw(t, listenerAddr(t, b, TCP), 4) // the kernel completes the handshake
	defer tcp.close()
	if err := tcp.write(connectFor(4, "early")); err != nil {
		t.Fatal(err)
	}
	wsDone := make(chan error, 1)
	wsAddr := listenerAddr(t, b, WebSocket)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := dialWebSocket(ctx, wsAddr)
		if err == nil {
			_ = c.Close()
		}
		wsDone <- err
	}()

	// The device gets in meanwhile.
	ctx, cancel := context.WithTimeout(context.Background(), replyTimeout)
	defer cancel()
	conn, err := b.DialInMemory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	device := newRawClient(t, conn, 5)
	defer device.close()
	device.connect("device")
	device.roundTrip("raspberry/led")

	// Neither network client has been served: no CONNACK, no upgrade,
	// nothing accepted (a bounded wait for something that must not come).
	_ = tcp.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := tcp.r.ReadByte(); err == nil {
		t.Fatal("a network client was served before OpenNetwork")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("network client before OpenNetwork: %v, want no answer yet", err)
	}
	select {
	case err := <-wsDone:
		t.Fatalf("WebSocket upgrade answered before OpenNetwork: %v", err)
	default:
	}
	if n, _ := brokerOpenConns(b); n != 1 || b.guard.pending.Load() != 0 {
		t.Fatalf("before OpenNetwork: %d connections served, %d pending; want only the device's", n, b.guard.pending.Load())
	}
	if strings.Contains(logs.since(0), "msg=listening") {
		t.Fatal("listening logged before OpenNetwork")
	}

	b.OpenNetwork()
	b.OpenNetwork() // idempotent
	tcp.expect("CONNACK 0x00")
	tcp.roundTrip("early/check")
	if err := <-wsDone; err != nil {
		t.Fatalf("WebSocket after OpenNetwork: %v", err)
	}
	for _, a := range b.Addrs() {
		re := regexp.MustCompile(`msg=listening kind=` + a.Kind + ` addr=` + regexp.QuoteMeta(a.Addr.String()) + ` access=`)
		if n := len(re.FindAllString(logs.since(0), -1)); n != 1 {
			t.Fatalf("%d listening lines for %s %s:\n%s", n, a.Kind, a.Addr, logs.since(0))
		}
	}
}

// TestCloseBeforeOpenNetwork: a broker closed before its network was
// opened (a start-up that failed later) closes promptly, with or without
// a connection waiting in the backlog, and with or without Start.
func TestCloseBeforeOpenNetwork(t *testing.T) {
	for _, tc := range []struct {
		name         string
		start, early bool
	}{
		{"never started", false, false},
		{"started", true, false},
		{"started, a client waiting", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := New(Options{
				Listeners:      []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}, {Kind: WebSocket, Addr: "127.0.0.1:0"}},
				AllowAnonymous: true,
				Logger:         discardLogger(),
			})
			if err != nil {
				t.Fatal(err)
			}
			if tc.start {
				if err := b.Start(); err != nil {
					t.Fatal(err)
				}
			}
			if tc.early {
				for _, a := range b.Addrs() {
					c := dialRaw(t, a.Addr.String(), 4)
					defer c.close()
					_ = c.write(connectFor(4, "early"))
				}
			}
			done := make(chan error, 1)
			go func() { done <- b.Close() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Close hangs before OpenNetwork")
			}
			// The ports are free again.
			for _, a := range b.Addrs() {
				ln, err := net.Listen("tcp", a.Addr.String())
				if err != nil {
					t.Fatalf("%s still bound after Close: %v", a.Addr, err)
				}
				_ = ln.Close()
			}
		})
	}
}

// TestPortInUse: a port already in use is an error from New that names
// the listener's kind and address and wraps the cause, so the caller can
// tell (errors.Is(err, syscall.EADDRINUSE)) and say what to do.
func TestPortInUse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()
	for _, kind := range []string{TCP, WebSocket} {
		t.Run(kind, func(t *testing.T) {
			_, err := New(Options{
				Listeners:      []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}, {Kind: kind, Addr: addr}},
				AllowAnonymous: true,
				Logger:         discardLogger(),
			})
			if err == nil {
				t.Fatal("New succeeded on a port in use")
			}
			if !errors.Is(err, syscall.EADDRINUSE) {
				t.Fatalf("%v: does not wrap EADDRINUSE", err)
			}
			if msg := err.Error(); !strings.Contains(msg, kind+" listener") || !strings.Contains(msg, addr) {
				t.Fatalf("%q: want the kind (%s) and the address (%s)", msg, kind, addr)
			}
		})
	}
	t.Run("optional", func(t *testing.T) {
		b, logs := newTestBroker(t, Options{
			Listeners:      []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}, {Kind: TCP, Addr: addr, Optional: true}},
			AllowAnonymous: true,
		})
		if n := len(b.Addrs()); n != 1 {
			t.Fatalf("%d listeners bound, want 1", n)
		}
		if !strings.Contains(logs.since(0), "listener skipped") {
			t.Fatalf("no log line for the skipped listener:\n%s", logs.since(0))
		}
	})
}

func TestAccessText(t *testing.T) {
	loopback := &net.TCPAddr{IP: net.IPv6loopback, Port: 1883}
	lan := &net.TCPAddr{IP: net.IPv4zero, Port: 1883}
	for _, tc := range []struct {
		name      string
		file      string
		anonymous bool
		addr      net.Addr
		want      string
	}{
		{"no file, loopback", "", false, loopback, "anyone on this machine (anonymous allowed)"},
		{"no file, all addresses", "", true, lan, "anyone on the network (anonymous allowed)"},
		{"file", "/etc/pimqtt/passwd", false, lan, "users in /etc/pimqtt/passwd"},
		{"file and anonymous", "/etc/pimqtt/passwd", true, lan,
			"users in /etc/pimqtt/passwd, or anyone on the network without a user name (anonymous allowed)"},
		{"file and anonymous, loopback", "/etc/pimqtt/passwd", true, loopback,
			"users in /etc/pimqtt/passwd, or anyone on this machine without a user name (anonymous allowed)"},
	} {
		b := &Broker{opts: Options{PasswordFile: tc.file, AllowAnonymous: tc.anonymous}}
		if got := b.access(tc.addr); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
