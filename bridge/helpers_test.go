package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/pimqtt/pimqtt/broker"
	"github.com/pimqtt/pimqtt/mqtttest"
)

// waitLimit bounds every wait for something to cross a bridge in these tests; generous, since
// -race and a shared machine slow everything down.
const waitLimit = 20 * time.Second

// rec is one message an observer saw.
type rec struct {
	Topic    string
	Payload  string
	Retained bool
}

// observer is a test client of one broker that records every message on its subscriptions.
type observer struct {
	t     testing.TB
	name  string
	c     mqtt.Client
	limit time.Duration // of waitFor; waitLimit unless a test sets it

	mu      sync.Mutex
	msgs    []rec
	changed chan struct{} // closed and replaced on every new message
}

// tcpDial dials addr on every call.
func tcpDial(addr string) DialFunc {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

// newObserver connects a plain MQTT 3.1.1 client through dial and subscribes it to filters
// (QoS 1); it is disconnected at cleanup.
func newObserver(t testing.TB, name string, dial DialFunc, filters ...string) *observer {
	t.Helper()
	return newObserverQoS(t, name, dial, 1, filters...)
}

// newObserverQoS is newObserver subscribing at qos.
func newObserverQoS(t testing.TB, name string, dial DialFunc, qos byte, filters ...string) *observer {
	t.Helper()
	o := &observer{t: t, name: name, changed: make(chan struct{}), limit: waitLimit}
	opts := mqtt.NewClientOptions().
		AddBroker("tcp://observer.invalid:1883").
		SetClientID(fmt.Sprintf("obs-%s-%d", name, time.Now().UnixNano())).
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetCustomOpenConnectionFn(func(*url.URL, mqtt.ClientOptions) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return dial(ctx)
		}).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			o.mu.Lock()
			o.msgs = append(o.msgs, rec{m.Topic(), string(m.Payload()), m.Retained()})
			close(o.changed)
			o.changed = make(chan struct{})
			o.mu.Unlock()
		})
	o.c = mqtt.NewClient(opts)
	must(t, o.c.Connect(), "connect observer "+name)
	t.Cleanup(func() { o.c.Disconnect(0) })
	if len(filters) > 0 {
		subs := map[string]byte{}
		for _, f := range filters {
			subs[f] = qos
		}
		must(t, o.c.SubscribeMultiple(subs, nil), "subscribe observer "+name)
	}
	return o
}

// must waits for tok and fails the test on error or after waitLimit.
func must(t testing.TB, tok mqtt.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(waitLimit) {
		t.Fatalf("%s: no answer within %v", what, waitLimit)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// publish publishes and waits for the broker's acknowledgement (QoS 1) or the write.
func (o *observer) publish(topic string, qos byte, retained bool, payload string) {
	o.t.Helper()
	must(o.t, o.c.Publish(topic, qos, retained, payload), fmt.Sprintf("%s: publish %s %q", o.name, topic, payload))
}

// all returns a copy of what was seen.
func (o *observer) all() []rec {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]rec(nil), o.msgs...)
}

// waitFor waits until pred holds for the messages seen, failing the test after waitLimit, and
// returns them. pred must not keep the slice.
func (o *observer) waitFor(what string, pred func([]rec) bool) []rec {
	o.t.Helper()
	deadline := time.NewTimer(o.limit)
	defer deadline.Stop()
	for {
		// pred runs under the lock on the live slice: copying it on every message would
		// make a long wait quadratic and slow the handler (and the broker) down.
		o.mu.Lock()
		ok := pred(o.msgs)
		ch := o.changed
		o.mu.Unlock()
		if ok {
			return o.all()
		}
		select {
		case <-ch:
		case <-deadline.C:
			msgs := o.all()
			o.t.Fatalf("%s: %s: not seen within %v; seen %d messages: %v", o.name, what, o.limit, len(msgs), tail(msgs, 20))
		}
	}
}

// waitMsg waits for a message with topic and payload.
func (o *observer) waitMsg(topic, payload string) {
	o.t.Helper()
	o.waitFor(fmt.Sprintf("%s %q", topic, payload), func(ms []rec) bool { return count(ms, topic, payload) > 0 })
}

func count(ms []rec, topic, payload string) int {
	n := 0
	for _, m := range ms {
		if m.Topic == topic && m.Payload == payload {
			n++
		}
	}
	return n
}

func tail(ms []rec, n int) []rec {
	if len(ms) > n {
		return ms[len(ms)-n:]
	}
	return ms
}

// localBroker is a local broker for the bridge: pimqtt's own, in-process, or a mosquitto.
type localBroker struct {
	kind string
	dial DialFunc
	// kill ends it abruptly, when the kind can (mosquitto).
}

// startLocal starts a local broker of the given kind: "pimqtt" (broker.New with an in-memory
// dial, as in all-in-one mode) or "mosquitto".
func startLocal(t testing.TB, kind string, log *slog.Logger) localBroker {
	t.Helper()
	switch kind {
	case "pimqtt":
		b, err := broker.New(broker.Options{
			AllowAnonymous: true,
			Logger:         log.With("component", "broker"),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		if err := b.Start(); err != nil {
			t.Fatal(err)
		}
		return localBroker{kind: kind, dial: b.DialInMemory}
	case "mosquitto":
		m := mqtttest.StartMosquitto(t, mqtttest.MosquittoConfig{Extra: []string{"allow_anonymous true"}})
		return localBroker{kind: kind, dial: tcpDial(fmt.Sprintf("127.0.0.1:%d", m.Port))}
	}
	t.Fatalf("unknown local broker kind %q", kind)
	return localBroker{}
}

// startRemote starts a mosquitto as the remote broker.
func startRemote(t testing.TB) (*mqtttest.Mosquitto, DialFunc) {
	t.Helper()
	m := mqtttest.StartMosquitto(t, mqtttest.MosquittoConfig{Extra: []string{"allow_anonymous true"}})
	return m, tcpDial(fmt.Sprintf("127.0.0.1:%d", m.Port))
}

// startBridge creates and starts a bridge, closed at cleanup.
func startBridge(t testing.TB, o Options) *Bridge {
	t.Helper()
	if o.Name == "" {
		o.Name = "cloud"
	}
	if o.ClientID == "" {
		o.ClientID = fmt.Sprintf("test-%s-%d", o.Name, time.Now().UnixNano())
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = time.Second
	}
	b, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// waitConnected waits until b is connected to the remote.
func waitConnected(t testing.TB, b *Bridge) {
	t.Helper()
	select {
	case <-b.Connected():
	case <-time.After(waitLimit):
		t.Fatalf("bridge not connected to the remote within %v", waitLimit)
	}
}

// logRecorder is a slog handler that keeps every record, for tests that wait on log lines.
type logRecorder struct {
	mu      sync.Mutex
	lines   []string
	changed chan struct{}
	t       testing.TB
	limit   time.Duration // of waitLine; waitLimit unless a test sets it
}

type recHandler struct {
	r     *logRecorder
	attrs []slog.Attr
}

func newLog(t testing.TB) (*slog.Logger, *logRecorder) {
	r := &logRecorder{changed: make(chan struct{}), t: t, limit: waitLimit}
	return slog.New(&recHandler{r: r}), r
}

func (h *recHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recHandler) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", rec.Level, rec.Message)
	for _, a := range h.attrs {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
	}
	rec.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	h.r.mu.Lock()
	h.r.lines = append(h.r.lines, b.String())
	close(h.r.changed)
	h.r.changed = make(chan struct{})
	h.r.mu.Unlock()
	if testing.Verbose() {
		h.r.t.Log(b.String())
	}
	return nil
}
func (h *recHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &recHandler{r: h.r, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}
func (h *recHandler) WithGroup(string) slog.Handler { return h }

// waitLine waits for a log line containing every one of parts and returns it.
func (r *logRecorder) waitLine(parts ...string) string {
	r.t.Helper()
	return r.waitLineSince(0, parts...)
}

// mark returns how many lines there are so far, for waitLineSince.
func (r *logRecorder) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.lines)
}

// waitLineSince is waitLine for the lines after the first since.
func (r *logRecorder) waitLineSince(since int, parts ...string) string {
	r.t.Helper()
	deadline := time.NewTimer(r.limit)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ch := r.changed
		for _, l := range r.lines[since:] {
			ok := true
			for _, p := range parts {
				if !strings.Contains(l, p) {
					ok = false
					break
				}
			}
			if ok {
				r.mu.Unlock()
				return l
			}
		}
		r.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			r.t.Fatalf("no log line with %q within %v", parts, r.limit)
		}
	}
}

// count is how many lines contain every one of parts.
func (r *logRecorder) count(parts ...string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, l := range r.lines {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			n++
		}
	}
	return n
}

// matching returns the lines that contain every one of parts.
func (r *logRecorder) matching(parts ...string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, l := range r.lines {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}
