package device

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/pimqtt/pimqtt/mqtttest"
)

// allowAll is mochi's auth.AllowHook, restated: importing hooks/auth would pull in
// gopkg.in/yaml.v3 (its Ledger), which go.sum does not carry.
type allowAll struct{ mochi.HookBase }

func (*allowAll) ID() string { return "test-allow-all" }
func (*allowAll) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck
}
func (*allowAll) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return true }
func (*allowAll) OnACLCheck(*mochi.Client, string, bool) bool              { return true }

// msg is one message seen by the in-test broker's inline subscriber.
type msg struct {
	Topic   string
	Payload string
}

// mochiBroker is an in-test Mochi server reached over net.Pipe, as the embedded broker is in
// all-in-one mode, plus a recorder of everything published on it.
type mochiBroker struct {
	s    *mochi.Server
	msgs watched[[]msg]

	mu     sync.Mutex
	pipes  []net.Conn   // server ends, closed before the server so Close does not wait on them
	active watched[int] // connections whose EstablishConnection has not returned
}

func newMochiBroker(t *testing.T, extra ...listeners.Listener) *mochiBroker {
	t.Helper()
	return newLoggedMochiBroker(t, io.Discard, extra...)
}

// newLoggedMochiBroker is newMochiBroker with Mochi's own log (its listeners' too) written to
// log.
func newLoggedMochiBroker(t *testing.T, log io.Writer, extra ...listeners.Listener) *mochiBroker {
	t.Helper()
	return newMochiBrokerAuth(t, log, new(allowAll), extra...)
}

// newMochiBrokerAuth is newLoggedMochiBroker with auth as its only auth and ACL hook.
func newMochiBrokerAuth(t *testing.T, log io.Writer, auth mochi.Hook, extra ...listeners.Listener) *mochiBroker {
	t.Helper()
	s := mochi.New(&mochi.Options{
		InlineClient:           true,
		Capabilities:           mochi.NewDefaultServerCapabilities(),
		Logger:                 slog.New(slog.NewTextHandler(log, nil)),
		SysTopicResendInterval: 3600,
	})
	if err := s.AddHook(auth, nil); err != nil {
		t.Fatalf("add auth hook: %v", err)
	}
	b := &mochiBroker{s: s}
	for _, l := range extra {
		if err := s.AddListener(l); err != nil {
			t.Fatalf("add listener %s: %v", l.ID(), err)
		}
	}
	if err := s.Serve(); err != nil {
		t.Fatalf("mochi serve: %v", err)
	}
	// Inline subscription handlers run synchronously in the publisher's goroutine; update is
	// quick and never blocks.
	if err := s.Subscribe("#", 1, func(_ *mochi.Client, _ packets.Subscription, pk packets.Packet) {
		b.msgs.update(func(m *[]msg) { *m = append(*m, msg{pk.TopicName, string(pk.Payload)}) })
	}); err != nil {
		t.Fatalf("inline subscribe: %v", err)
	}
	t.Cleanup(func() {
		b.mu.Lock()
		for _, c := range b.pipes {
			_ = c.Close()
		}
		b.mu.Unlock()
		_ = s.Close()
	})
	return b
}

// dial is a DialFunc into the broker through an in-memory pipe.
func (b *mochiBroker) dial(ctx context.Context) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	client, server := net.Pipe()
	b.mu.Lock()
	b.pipes = append(b.pipes, server)
	b.mu.Unlock()
	b.active.update(func(n *int) { *n++ })
	go func() {
		// EstablishConnection returns after Mochi's clean-up of the client (will sent,
		// subscriptions and client entry removed).
		_ = b.s.EstablishConnection("pipe", server)
		b.active.update(func(n *int) { *n-- })
	}()
	return client, nil
}

func (b *mochiBroker) publish(t *testing.T, topic string, payload []byte) {
	t.Helper()
	if err := b.s.Publish(topic, payload, false, 1); err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
}

// retained returns the broker's retained payload on topic, and whether there is one.
func (b *mochiBroker) retained(topic string) (string, bool) {
	pks := b.s.Topics.Messages(topic)
	if len(pks) != 1 {
		return "", false
	}
	return string(pks[0].Payload), true
}

func (b *mochiBroker) mark() int { return len(b.msgs.get()) }

// waitMsg waits for topic/payload published after position since; it returns the position
// after the match.
func (b *mochiBroker) waitMsg(t *testing.T, since int, topic, payload string) int {
	t.Helper()
	var next int
	b.msgs.waitFor(t, waitTimeout, fmt.Sprintf("message %s %q", topic, payload), func(ms []msg) bool {
		for i := min(since, len(ms)); i < len(ms); i++ {
			if ms[i].Topic == topic && ms[i].Payload == payload {
				next = i + 1
				return true
			}
		}
		return false
	})
	return next
}

func TestDeviceInMemory(t *testing.T) {
	b := newMochiBroker(t)
	log, logs := newLogger(t)
	line := &fakeLine{}
	d := newTestDevice(t, b.dial, line, log, "in-process")
	if err := d.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}

	// On connect: status On, then the current state.
	pos := b.waitMsg(t, 0, "raspberry/status", `{"status": "On"}`)
	pos = b.waitMsg(t, pos, "raspberry/led/state", "0")
	if got, _ := b.retained("raspberry/status"); got != `{"status": "On"}` {
		t.Fatalf("retained status = %q, want {\"status\": \"On\"}", got)
	}
	if got, _ := b.retained("raspberry/led/state"); got != "0" {
		t.Fatalf("retained state = %q, want 0", got)
	}
	if err := d.Start(t.Context()); err == nil {
		t.Fatal("second Start succeeded")
	}

	steps := []struct {
		payload []byte
		want    int
	}{
		{[]byte("1"), 1},
		{[]byte("TOGGLE"), 0},
		{[]byte(`{"state":"ON"}`), 1},
		{[]byte("off"), 0},
		{[]byte{0x01}, 1},
		{[]byte(" false\n"), 0},
		{[]byte(`{"state":"toggle"}`), 1},
	}
	for _, st := range steps {
		b.publish(t, "raspberry/led", st.payload)
		line.waitValue(t, st.want)
		pos = b.waitMsg(t, pos, "raspberry/led/state", strconv.Itoa(st.want))
		if got, _ := b.retained("raspberry/led/state"); got != strconv.Itoa(st.want) {
			t.Fatalf("after %q: retained state = %q, want %d", st.payload, got, st.want)
		}
	}
	if n := len(logs.all("line changed")); n != len(steps) {
		t.Errorf("%d \"line changed\" log lines, want one per change (%d)", n, len(steps))
	}

	// Unknown payloads change nothing. The sentinel "0" after them is handled after them
	// (paho delivers in order), so once it has landed they have all been seen.
	setsBefore := line.sets()
	big := bytes.Repeat([]byte("x"), 1<<20)
	bad := [][]byte{[]byte(""), []byte("2"), []byte("on x"), []byte("garbage"), big, []byte(`{"state":"BLINK"}`)}
	for _, p := range bad {
		b.publish(t, "raspberry/led", p)
	}
	b.publish(t, "raspberry/led", []byte("0"))
	line.waitValue(t, 0)
	if got, want := line.sets(), append(setsBefore, 0); !slicesEqual(got, want) {
		t.Fatalf("line sets = %v, want %v (unknown payloads must not touch the line)", got, want)
	}
	warns := logs.all("unknown payload")
	if len(warns) != len(bad) {
		t.Fatalf("%d \"unknown payload\" warnings, want %d: %v", len(warns), len(bad), warns)
	}
	for i, w := range warns {
		if w.Level != slog.LevelWarn || w.Attrs["topic"] != "raspberry/led" || w.Attrs["len"] != strconv.Itoa(len(bad[i])) {
			t.Errorf("warning %d = %v", i, w)
		}
	}
	if p := warns[4].Attrs["payload"]; p != strconv.Quote(string(big[:32])) {
		t.Errorf("1 MB payload logged as %q, want a 32-byte quoted excerpt", p)
	}

	// Close: the line goes to 0 (set it to 1 first so that is visible), Off and "0" retained.
	b.publish(t, "raspberry/led", []byte("1"))
	line.waitValue(t, 1)
	pos = b.waitMsg(t, pos, "raspberry/led/state", "1")
	closeDevice(t, d)
	if v, _ := line.Value(); v != 0 {
		t.Fatalf("line = %d after Close, want 0", v)
	}
	if got, _ := b.retained("raspberry/status"); got != `{"status": "Off"}` {
		t.Fatalf("retained status after Close = %q", got)
	}
	if got, _ := b.retained("raspberry/led/state"); got != "0" {
		t.Fatalf("retained state after Close = %q, want 0", got)
	}
	if err := d.Close(t.Context()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := d.Start(t.Context()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close = %v, want ErrClosed", err)
	}
}

func slicesEqual(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestDeviceInMemoryWillAndReconnect cuts the pipe: the broker must publish the will, and the
// device must reconnect, resubscribe and announce itself again.
func TestDeviceInMemoryWillAndReconnect(t *testing.T) {
	b := newMochiBroker(t)
	log, logs := newLogger(t)
	line := &fakeLine{}
	k := &killableDialer{inner: b.dial}
	d := newTestDevice(t, k.dial, line, log, "in-process")
	if err := d.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	pos := b.waitMsg(t, 0, "raspberry/status", `{"status": "On"}`)
	logsPos := logs.mark()

	// Hold reconnections until Mochi has fully dropped the old connection: a reconnection
	// racing that clean-up is a session takeover, where Mochi 2.7.9 may skip the will or
	// drop the new session's subscriptions (the device's reconnect grace makes that unlikely,
	// this makes the test deterministic).
	k.hold()
	k.killAll()
	pos = b.waitMsg(t, pos, "raspberry/status", `{"status": "Off"}`)
	logs.waitMsg(t, logsPos, "connection to broker lost")
	b.active.waitFor(t, waitTimeout, "Mochi to drop the old connection", func(n int) bool { return n == 0 })
	k.release()
	pos = b.waitMsg(t, pos, "raspberry/status", `{"status": "On"}`)
	logs.waitMsg(t, logsPos, "connected to broker")

	// Resubscribed: a command still works.
	logsPos = logs.mark()
	b.publish(t, "raspberry/led", []byte("ON"))
	line.waitValue(t, 1)
	b.waitMsg(t, pos, "raspberry/led/state", "1")
	closeDevice(t, d)
}

// TestLateWillRepaired: a live {"status": "Off"} while the device is online, as a broker sends
// when it notices an old connection's death only after the device reconnected, is answered
// with a fresh On so the retained status is right again.
func TestLateWillRepaired(t *testing.T) {
	b := newMochiBroker(t)
	log, logs := newLogger(t)
	d := newTestDevice(t, b.dial, &fakeLine{}, log, "in-process")
	if err := d.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	pos := b.waitMsg(t, 0, "raspberry/status", `{"status": "On"}`)
	logs.waitMsg(t, 0, "state published")

	// Retained, like a will; forwarded live to the device with the retain flag cleared.
	if err := b.s.Publish("raspberry/status", []byte(`{"status": "Off"}`), true, 1); err != nil {
		t.Fatal(err)
	}
	pos = b.waitMsg(t, pos, "raspberry/status", `{"status": "Off"}`)
	b.waitMsg(t, pos, "raspberry/status", `{"status": "On"}`)
	logs.waitMsg(t, 0, "status published", "status", "On")
	if got, _ := b.retained("raspberry/status"); got != `{"status": "On"}` {
		t.Fatalf("retained status = %q, want On", got)
	}
	closeDevice(t, d)
	if got, _ := b.retained("raspberry/status"); got != `{"status": "Off"}` {
		t.Fatalf("retained status after Close = %q, want Off (its echo must not trigger an On)", got)
	}
}

// TestCloseWithoutStart: Close only drives the line to its safe state.
func TestCloseWithoutStart(t *testing.T) {
	line := &fakeLine{}
	_ = line.SetValue(1)
	log, _ := newLogger(t)
	d := newTestDevice(t, func(context.Context) (net.Conn, error) {
		t.Error("dialled although never started")
		return nil, errors.New("unexpected dial")
	}, line, log, "nowhere")
	closeDevice(t, d)
	if v, _ := line.Value(); v != 0 {
		t.Fatalf("line = %d after Close, want 0", v)
	}
	closeDevice(t, d)
	if err := d.Start(t.Context()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close = %v, want ErrClosed", err)
	}
}

// TestCloseWhileUnreachable: Start returns at once with the broker unreachable, retries in the
// background, and Close still returns promptly.
func TestCloseWhileUnreachable(t *testing.T) {
	line := &fakeLine{}
	log, logs := newLogger(t)
	k := &killableDialer{inner: func(context.Context) (net.Conn, error) {
		return nil, errors.New("connection refused (test)")
	}}
	d := newTestDevice(t, k.dial, line, log, "nowhere")
	if err := d.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	logs.waitMsg(t, 0, "cannot connect to broker, retrying in the background")
	k.dials.waitFor(t, waitTimeout, "a retry", func(n int) bool { return n >= 2 })
	if n := len(logs.all("cannot connect to broker, retrying in the background")); n != 1 {
		t.Errorf("%d warnings for one outage, want 1", n)
	}
	start := time.Now()
	closeDevice(t, d)
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("Close took %v while unreachable", el)
	}
	if v, _ := line.Value(); v != 0 {
		t.Fatalf("line = %d after Close, want 0", v)
	}
}

// TestCloseTimeoutFallsBackToWill: when the Off publish cannot be confirmed within Close's
// context, the device drops the connection without DISCONNECT so the broker's will says Off.
func TestCloseTimeoutFallsBackToWill(t *testing.T) {
	b := newMochiBroker(t)
	log, _ := newLogger(t)
	line := &fakeLine{}
	var blackhole atomic.Bool
	dial := func(ctx context.Context) (net.Conn, error) {
		c, err := b.dial(ctx)
		if err != nil {
			return nil, err
		}
		return &blackholeConn{Conn: c, drop: &blackhole}, nil
	}
	d := newTestDevice(t, dial, line, log, "in-process")
	if err := d.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	pos := b.waitMsg(t, 0, "raspberry/status", `{"status": "On"}`)
	b.waitMsg(t, 0, "raspberry/led/state", "0")

	blackhole.Store(true) // from now on nothing the device sends reaches the broker
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := d.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close with an unacknowledged Off = %v, want context.DeadlineExceeded", err)
	}
	b.waitMsg(t, pos, "raspberry/status", `{"status": "Off"}`)
	if got, _ := b.retained("raspberry/status"); got != `{"status": "Off"}` {
		t.Fatalf("retained status = %q", got)
	}
	if v, _ := line.Value(); v != 0 {
		t.Fatalf("line = %d after Close, want 0", v)
	}
}

// blackholeConn silently discards writes once drop is set: a link that stalls without
// erroring, the case where only the will can report Off.
type blackholeConn struct {
	net.Conn
	drop *atomic.Bool
}

func (c *blackholeConn) Write(p []byte) (int, error) {
	if c.drop.Load() {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// TestWebSocketMochi runs NetDialer's ws:// path against Mochi's WebSocket listener, a second
// implementation beside mosquitto's.
func TestWebSocketMochi(t *testing.T) {
	b, addr, mochiLog := startMochiWebSocket(t)

	dial, err := NetDialer("ws://"+addr, 5*time.Second)
	if err != nil {
		t.Fatalf("NetDialer: %v", err)
	}
	log, _ := newLogger(t)
	line := &fakeLine{}
	d := newTestDevice(t, dial, line, log, "ws mochi")
	if err := d.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	pos := b.waitMsg(t, 0, "raspberry/status", `{"status": "On"}`)
	b.publish(t, "raspberry/led", []byte("1"))
	line.waitValue(t, 1)
	pos = b.waitMsg(t, pos, "raspberry/led/state", "1")
	closeDevice(t, d)
	b.waitMsg(t, pos, "raspberry/status", `{"status": "Off"}`)
	if strings.Contains(mochiLog.String(), mochiServeFailed) {
		t.Fatalf("Mochi's WebSocket listener did not serve on %s (another server answered):\n%s", addr, mochiLog)
	}
}

// mochiServeFailed is what Mochi's WebSocket listener logs when it cannot bind its address.
const mochiServeFailed = "failed to serve"

// startMochiWebSocket starts a Mochi broker with its stock WebSocket listener on 127.0.0.1 and
// returns it with the listener's address and Mochi's log. That listener takes an address, not
// a net.Listener, and binds it inside Serve's goroutine, reporting a conflict only in its log:
// so its port is picked, and picked again when Mochi logs that another process took it.
func startMochiWebSocket(t *testing.T) (*mochiBroker, string, *mqtttest.SyncBuffer) {
	t.Helper()
	var (
		b    *mochiBroker
		addr string
		log  *mqtttest.SyncBuffer
	)
	mqtttest.WithPickedPorts(t, 1, func(ports []int) error {
		log = &mqtttest.SyncBuffer{}
		addr = "127.0.0.1:" + strconv.Itoa(ports[0])
		b = newLoggedMochiBroker(t, log, listeners.NewWebsocket(listeners.Config{ID: "ws", Address: addr}))
		return mqtttest.WaitServing(addr, func() error {
			if strings.Contains(log.String(), mochiServeFailed) {
				// The broker stays until the test's cleanup closes it: Mochi's Close
				// must run once.
				return fmt.Errorf("%w: Mochi's log:\n%s", mqtttest.ErrPortTaken, log)
			}
			return nil
		})
	})
	return b, addr, log
}
