package broker

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// startBroker runs a broker on a loopback port with the given limits.
func startBroker(t testing.TB, limits Limits) (*Broker, string) {
	t.Helper()
	b, err := New(Options{
		Listeners:      []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}},
		AllowAnonymous: true,
		Limits:         limits,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	b.OpenNetwork()
	t.Cleanup(func() { _ = b.Close() })
	return b, b.Addrs()[0].Addr.String()
}

// roundTrip checks that a normal client can connect over TCP, subscribe
// and get its own message back.
func roundTrip(t testing.TB, addr string) {
	t.Helper()
	roundTripURL(t, "tcp://"+addr)
}

// roundTripURL is roundTrip for any broker URL paho takes (tcp://, ws://).
func roundTripURL(t testing.TB, url string) {
	t.Helper()
	got := make(chan string, 1)
	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).
		SetClientID(fmt.Sprintf("normal-%d", time.Now().UnixNano())).
		SetAutoReconnect(false).SetConnectTimeout(10 * time.Second))
	if tok := c.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("normal client could not connect: %v", tok.Error())
	}
	defer c.Disconnect(50)
	if tok := c.Subscribe("hardening/echo", 1, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	c.Publish("hardening/echo", 1, false, "ping")
	select {
	case p := <-got:
		if p != "ping" {
			t.Fatalf("got %q", p)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no echo")
	}
}

// dialSilent opens n connections that never send anything; they are
// closed when the test ends.
func dialSilent(t testing.TB, addr string, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("silent connection %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	return conns
}

// waitClosed reads from conn until the broker closes it, failing if that
// takes longer than limit.
func waitClosed(t testing.TB, conn net.Conn, limit time.Duration) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(limit))
	buf := make([]byte, 64)
	for {
		_, err := conn.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection still open after %v", limit)
		}
		return // EOF or reset: closed by the broker
	}
}

func TestSlowlorisClosedAfterConnectTimeout(t *testing.T) {
	const silent = 500
	limits := DefaultLimits()
	limits.ConnectTimeout = 5 * time.Second
	b, addr := startBroker(t, limits)
	before := runtime.NumGoroutine()

	start := time.Now()
	conns := dialSilent(t, addr, silent)
	// The broker has accepted every one of them: the attack is on.
	waitFor(t, 10*time.Second, "silent connections counted as pending", func() bool { return b.guard.pending.Load() >= silent })
	// A normal client gets through while all of them are open: they are
	// still pending once its round trip is over.
	roundTrip(t, addr)
	if p := b.guard.pending.Load(); p < silent {
		t.Fatalf("only %d of %d silent connections were still open after the round trip: it did not run during the attack "+
			"(raise ConnectTimeout if the machine is that slow)", p, silent)
	}
	for _, c := range conns {
		waitClosed(t, c, 15*time.Second)
	}
	// Closed by the CONNECT deadline, not before it: each deadline was set
	// after its connection was accepted, so after start.
	if d := time.Since(start); d < limits.ConnectTimeout {
		t.Fatalf("silent connections closed after %v, before the %v CONNECT deadline", d, limits.ConnectTimeout)
	}
	// The client saw EOF; the server side releases its count just after.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := waitBrokerConns(ctx, b, 0); err != nil {
		t.Fatal(err)
	}
	if p := b.guard.pending.Load(); p != 0 {
		t.Fatalf("%d connections still counted as pending", p)
	}
	// Their goroutines are gone too (bounded wait: the count settles as
	// Mochi's write loops notice their connections closed).
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before+20 {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: %d before the attack, %d after", before, runtime.NumGoroutine())
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
}

func TestPendingConnectionsCapped(t *testing.T) {
	limits := DefaultLimits()
	limits.MaxPendingConnections = 20
	limits.ConnectTimeout = 2 * time.Second
	_, addr := startBroker(t, limits)
	idle := dialSilent(t, addr, 20)
	// Over the cap: closed at once, long before the CONNECT deadline.
	extra, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	waitClosed(t, extra, time.Second)
	// Once the idle ones time out, clients get in again.
	for _, c := range idle {
		waitClosed(t, c, 10*time.Second)
	}
	roundTrip(t, addr)
}

func TestOversizedConnectHeaderRefused(t *testing.T) {
	b, addr := startBroker(t, DefaultLimits())
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	headers := [][]byte{
		// The header: CONNECT claiming 256 MiB, over every limit.
		{0x10, 0xFF, 0xFF, 0xFF, 0x7F}, {0x10, 0xFF, 0xFF, 0xFF, 0x7F}, {0x10, 0xFF, 0xFF, 0xFF, 0x7F},
	}
	// 1 MiB claims are under MaxPacketSize, so only the CONNECT size limit
	// stops Mochi allocating each of them before authentication.
	for i := 0; i < 50; i++ {
		headers = append(headers, []byte{0x10, 0x80, 0x80, 0x40})
	}
	var conns []net.Conn
	for _, h := range headers {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(h); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		waitClosed(t, c, 5*time.Second)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap: %.1f MiB before, %.1f MiB after %d hostile headers", float64(before.HeapAlloc)/(1<<20), float64(after.HeapAlloc)/(1<<20), len(headers))
	if grew > 16<<20 {
		t.Fatalf("heap grew by %d MiB", grew>>20)
	}
	if b.RecoveredPanics() != 0 {
		t.Fatal("panic while refusing the header")
	}
	roundTrip(t, addr)
}

// TestKeepAliveBounded: under a MaxKeepAlive of 2 s, an MQTT 5 client
// asking for no keepalive is told 2 s in CONNACK and, once silent, is
// disconnected after 1.5x that; a 3.1.1 client, which cannot be told, is
// refused (CONNACK 2) rather than held to a keepalive it never agreed to.
func TestKeepAliveBounded(t *testing.T) {
	limits := DefaultLimits()
	limits.MaxKeepAlive = 2 * time.Second
	_, addr := startBroker(t, limits)

	v5 := dialRaw(t, addr, 5)
	defer v5.close()
	if err := v5.write(pk(connect5 + "02 H0 00 s'idler5'")); err != nil {
		t.Fatal(err)
	}
	ack := v5.expect("CONNACK 0x00")
	if ka, ok := connackProps(t, ack)[0x13]; !ok || binary.BigEndian.Uint16(ka) != 2 {
		t.Fatalf("CONNACK % x: want Server Keep Alive 2", ack.body)
	}
	start := time.Now()
	waitClosed(t, v5.conn, 10*time.Second)
	if d := time.Since(start); d < 3*time.Second {
		t.Fatalf("disconnected after %v, before 1.5x the granted keepalive", d)
	}

	v4 := dialRaw(t, addr, 4)
	defer v4.close()
	if err := v4.write(pk(connect4 + "02 H0 s'idler4'")); err != nil {
		t.Fatal(err)
	}
	v4.expect("CONNACK 0x02")
	v4.expectClosed()
}

// TestCloseUnderConnectionChurn closes the broker while clients connect
// and disconnect over TCP, WebSocket and the in-memory listener, and
// checks that Close neither hangs nor fails.
func TestCloseUnderConnectionChurn(t *testing.T) {
	const rounds = 50
	for round := 0; round < rounds; round++ {
		b, err := New(Options{
			Listeners:       []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}, {Kind: WebSocket, Addr: "127.0.0.1:0"}},
			AllowAnonymous:  true,
			ShutdownTimeout: 5 * time.Second,
			Logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(); err != nil {
			t.Fatal(err)
		}
		b.OpenNetwork()
		tcpAddr, wsAddr := listenerAddr(t, b, TCP), listenerAddr(t, b, WebSocket)
		dials := map[string]func(context.Context) (net.Conn, error){
			TCP: func(ctx context.Context) (net.Conn, error) {
				d := net.Dialer{Timeout: time.Second}
				return d.DialContext(ctx, "tcp", tcpAddr)
			},
			WebSocket: func(ctx context.Context) (net.Conn, error) { return dialWebSocket(ctx, wsAddr) },
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		connected := map[string]*atomic.Int64{TCP: new(atomic.Int64), WebSocket: new(atomic.Int64)}
		for w := 0; w < 8; w++ {
			kind := TCP
			if w%4 >= 2 {
				kind = WebSocket
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Bounded: each worker stops at cancel or after 200 connects.
				for i := 0; i < 200 && ctx.Err() == nil; i++ {
					if churn(ctx, dials[kind], fmt.Sprintf("r%dw%di%d", round, w, i), w%2 == 0) {
						connected[kind].Add(1)
					}
					if c, err := b.DialInMemory(ctx); err == nil {
						c.Close()
					}
				}
			}()
		}
		// Close only once the workers are connecting and disconnecting
		// over both network listeners.
		deadline := time.Now().Add(10 * time.Second)
		for connected[TCP].Load() < 8 || connected[WebSocket].Load() < 8 {
			if time.Now().After(deadline) {
				cancel()
				wg.Wait()
				_ = b.Close()
				t.Fatalf("round %d: workers never connected (tcp %d, ws %d)", round, connected[TCP].Load(), connected[WebSocket].Load())
			}
			time.Sleep(time.Millisecond) // polling interval, not synchronisation
		}
		start := time.Now()
		err = b.Close()
		cancel()
		wg.Wait()
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("round %d: Close took %v", round, d)
		}
	}
}

// churn connects with a raw MQTT 3.1.1 CONNECT and either disconnects
// politely or just drops the connection. It reports whether CONNACK came.
func churn(ctx context.Context, dial func(context.Context) (net.Conn, error), id string, polite bool) bool {
	c, err := dial(ctx)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	pk := []byte{0x10, byte(12 + len(id)), 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x3c, 0x00, byte(len(id))}
	pk = append(pk, id...)
	if _, err := c.Write(pk); err != nil {
		return false
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil {
		return false
	}
	if polite {
		_, _ = c.Write([]byte{0xE0, 0x00})
	}
	return true
}

func TestMaximumPacketSizeAnnounced(t *testing.T) {
	limits := DefaultLimits()
	limits.MaxPacketSize = 0x00012345
	_, addr := startBroker(t, limits)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// MQTT 5 CONNECT, clean start, no properties, empty client id.
	if _, err := c.Write([]byte{0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x02, 0x00, 0x3C, 0x00, 0x00, 0x00}); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	ack := make([]byte, 256)
	n, err := c.Read(ack)
	if err != nil || n < 4 || ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("CONNACK % x, %v", ack[:n], err)
	}
	// Property 0x27 (Maximum Packet Size) with the configured value.
	if !bytes.Contains(ack[:n], []byte{0x27, 0x00, 0x01, 0x23, 0x45}) {
		t.Fatalf("CONNACK % x does not announce the maximum packet size", ack[:n])
	}
}

func TestWebSocketHandshakesCountAsPending(t *testing.T) {
	limits := DefaultLimits()
	limits.MaxPendingConnections = 10
	limits.ConnectTimeout = time.Second
	b, err := New(Options{
		Listeners:      []ListenerConfig{{Kind: WebSocket, Addr: "127.0.0.1:0"}},
		AllowAnonymous: true,
		Limits:         limits,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	b.OpenNetwork()
	defer b.Close()
	addr := b.Addrs()[0].Addr.String()
	silent := dialSilent(t, addr, 10)
	// The server sees connections asynchronously: wait until all ten count.
	deadline := time.Now().Add(10 * time.Second)
	for b.guard.pending.Load() < 10 {
		if time.Now().After(deadline) {
			t.Fatalf("pending = %d, want 10", b.guard.pending.Load())
		}
		time.Sleep(time.Millisecond) // polling interval, not synchronisation
	}
	extra, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	waitClosed(t, extra, 900*time.Millisecond) // refused before the 1 s handshake deadline
	// The silent ones are closed by the handshake deadline, and the count
	// returns to zero.
	for _, c := range silent {
		waitClosed(t, c, 10*time.Second)
	}
	deadline = time.Now().Add(10 * time.Second)
	for b.guard.pending.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("pending = %d after the handshakes timed out", b.guard.pending.Load())
		}
		time.Sleep(time.Millisecond) // polling interval, not synchronisation
	}
}
