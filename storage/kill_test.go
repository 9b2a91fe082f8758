package storage

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/pimqtt/pimqtt/mqtttest"
)

// acked records the payloads whose publisher got its acknowledgement.
type acked struct {
	mu  sync.Mutex
	all []string
	n   atomic.Int64
}

func (a *acked) add(p string) {
	a.mu.Lock()
	a.all = append(a.all, p)
	a.mu.Unlock()
	a.n.Add(1)
}

func (a *acked) list() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.all...)
}

// stream publishes numbered messages at qos from publishers clients until
// stop is closed, recording each one acknowledged (PUBACK, or PUBCOMP for
// QoS 2) before killed is closed.
func stream(t *testing.T, addr string, publishers int, qos byte, stop, killed <-chan struct{}, ack *acked) *sync.WaitGroup {
	t.Helper()
	var wg sync.WaitGroup
	for k := range publishers {
		c, _ := connect(t, addr, fmt.Sprintf("pub%d", k), true, nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A bounded window of publishes in flight per publisher, each
			// watched for its acknowledgement.
			window := make(chan struct{}, 32)
			var inflight sync.WaitGroup
			defer inflight.Wait()
			for i := 0; i < 100000; i++ {
				select {
				case <-stop:
					return
				case window <- struct{}{}:
				}
				payload := fmt.Sprintf("p%d-%d", k, i)
				tok := c.Publish("stream/data", qos, false, payload)
				inflight.Add(1)
				go func() {
					defer inflight.Done()
					defer func() { <-window }()
					select {
					case <-tok.Done():
					case <-killed:
						// An acknowledgement read just before the kill
						// may still be on its way to the token: a last
						// look, then the publish counts as unacknowledged.
						select {
						case <-tok.Done():
						case <-time.After(100 * time.Millisecond):
							return
						}
					}
					if tok.Error() == nil {
						ack.add(payload)
					}
				}()
			}
		}()
	}
	return &wg
}

// slowly is a message handler that takes a millisecond per message, so
// that a subscriber falls behind its publishers and has a backlog in the
// broker when it is killed.
func slowly(h paho.MessageHandler) paho.MessageHandler {
	return func(c paho.Client, m paho.Message) {
		time.Sleep(time.Millisecond) // a slow consumer, not synchronisation
		h(c, m)
	}
}

// TestKillDuringQoS1Stream: four publishers stream QoS 1 messages to a
// slow persistent session; the broker is killed (kill -9) in the middle
// and restarted on the same store. Every message acknowledged to its
// publisher reaches the subscriber, after the restart if not before.
func TestKillDuringQoS1Stream(t *testing.T) {
	path := storePath(t)
	p := startBrokerProc(t, path, queueEnv+"=60000")
	got := newReceived()
	sub, _ := connect(t, p.addr, "logger", false, slowly(got.handler))
	subscribe(t, sub, "stream/#", 1)

	stop, killed := make(chan struct{}), make(chan struct{})
	ack := &acked{}
	wg := stream(t, p.addr, 4, 1, stop, killed, ack)
	waitFor(t, "2000 acknowledged messages", func() bool { return ack.n.Load() >= 2000 })
	p.kill(t)
	close(killed)
	close(stop)
	wg.Wait()
	before := got.total()

	p = startBrokerProc(t, path, queueEnv+"=60000")
	sub2, present := connect(t, p.addr, "logger", false, got.handler)
	if !present {
		t.Fatal("the subscriber's session is not present after kill -9")
	}
	want := ack.list()
	if missing := got.waitAll(want); len(missing) > 0 {
		t.Fatalf("%d of %d acknowledged messages never delivered, e.g. %v", len(missing), len(want), missing[:min(5, len(missing))])
	}
	t.Logf("acknowledged before the kill: %d; delivered before the kill: %d, after the restart: %d; delivered twice (QoS 1 allows it): %d",
		len(want), before, got.total()-before, len(got.duplicates()))

	// The subscription survived too: a new message arrives without
	// subscribing again.
	pub, _ := connect(t, p.addr, "late", true, nil)
	publish(t, pub, "stream/data", 1, false, "after-restart")
	if missing := got.waitAll([]string{"after-restart"}); len(missing) > 0 {
		t.Fatal("the restored subscription does not deliver")
	}
	sub2.Disconnect(0)
	p.stop(t)
}

// pahoSubscriber is python paho 1.6, a QoS 2 receiver that passes each
// message on exactly once (it holds a QoS 2 message until PUBREL and keeps
// that state across reconnects of its persistent session), driven over
// stdin: "connect PORT", "subscribe FILTER QOS". It prints CONNACK rc
// session-present, SUBACK qos, and MSG payload.
const pahoSubscriber = `
import sys, threading
import paho.mqtt.client as mqtt
c = mqtt.Client(client_id=sys.argv[1], clean_session=False)
lock = threading.Lock()
def say(*a):
    with lock:
        print(*a, flush=True)
c.on_connect = lambda cl, ud, flags, rc: say("CONNACK", rc, int(flags.get("session present", 0)))
c.on_subscribe = lambda cl, ud, mid, granted: say("SUBACK", granted[0])
c.on_message = lambda cl, ud, m: say("MSG", m.payload.decode())
for line in sys.stdin:
    cmd = line.split()
    if cmd and cmd[0] == "connect":
        c.loop_stop()
        c.connect("127.0.0.1", int(cmd[1]), keepalive=60)
        c.loop_start()
    elif cmd and cmd[0] == "subscribe":
        c.subscribe(cmd[1], qos=int(cmd[2]))
c.loop_stop()
`

// pythonSub runs pahoSubscriber.
type pythonSub struct {
	stdin io.WriteCloser
	lines chan string
	got   *received
}

func startPythonSub(t *testing.T, id string) *pythonSub {
	t.Helper()
	python := mqtttest.RequireTool(t, "python3", "python3-paho-mqtt")
	cmd := exec.Command(python, "-c", pahoSubscriber, id)
	stderr := &mqtttest.SyncBuffer{}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &pythonSub{lines: make(chan string, 16), got: newReceived()}
	if s.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("python subscriber stderr:\n%s", stderr.String())
		}
	})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m, ok := strings.CutPrefix(sc.Text(), "MSG "); ok {
				s.got.add(m)
				continue
			}
			s.lines <- sc.Text()
		}
		close(s.lines)
	}()
	return s
}

// do sends a command and waits for the line it answers with.
func (s *pythonSub) do(t *testing.T, cmd, wantPrefix string) string {
	t.Helper()
	if _, err := fmt.Fprintln(s.stdin, cmd); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(waitTimeout)
	for {
		select {
		case l, ok := <-s.lines:
			if !ok {
				t.Fatalf("python subscriber exited waiting for %q", wantPrefix)
			}
			if strings.HasPrefix(l, wantPrefix) {
				return l
			}
		case <-timeout:
			t.Fatalf("python subscriber: no %q after %q within %v", wantPrefix, cmd, waitTimeout)
		}
	}
}

func port(t *testing.T, addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestKillDuringQoS2Stream: as TestKillDuringQoS1Stream at QoS 2, to a
// python paho subscriber: every message acknowledged (PUBCOMP) to its
// publisher is passed on to the subscribing application, and none twice.
func TestKillDuringQoS2Stream(t *testing.T) {
	path := storePath(t)
	p := startBrokerProc(t, path, queueEnv+"=60000")
	sub := startPythonSub(t, "exactly-once")
	if l := sub.do(t, "connect "+port(t, p.addr), "CONNACK"); l != "CONNACK 0 0" {
		t.Fatalf("first connect: %q", l)
	}
	sub.do(t, "subscribe stream/# 2", "SUBACK 2")

	stop, killed := make(chan struct{}), make(chan struct{})
	ack := &acked{}
	wg := stream(t, p.addr, 4, 2, stop, killed, ack)
	waitFor(t, "600 acknowledged messages", func() bool { return ack.n.Load() >= 600 })
	p.kill(t)
	close(killed)
	close(stop)
	wg.Wait()
	before := sub.got.total()

	p = startBrokerProc(t, path, queueEnv+"=60000")
	if l := sub.do(t, "connect "+port(t, p.addr), "CONNACK"); l != "CONNACK 0 1" {
		t.Fatalf("reconnect after kill -9: %q, want session present", l)
	}
	want := ack.list()
	if missing := sub.got.waitAll(want); len(missing) > 0 {
		t.Fatalf("%d of %d acknowledged messages never delivered, e.g. %v", len(missing), len(want), missing[:min(5, len(missing))])
	}
	// A last message, sent after everything restored: once it is in,
	// so is anything sent again.
	pub, _ := connect(t, p.addr, "late", true, nil)
	publish(t, pub, "stream/data", 2, false, "last")
	if missing := sub.got.waitAll([]string{"last"}); len(missing) > 0 {
		t.Fatal("the restored subscription does not deliver")
	}
	if d := sub.got.duplicates(); len(d) > 0 {
		t.Fatalf("QoS 2 messages delivered more than once: %v", d)
	}
	t.Logf("acknowledged before the kill: %d; delivered before the kill: %d, after the restart: %d; none twice",
		len(want), before, sub.got.total()-before)
	p.stop(t)
}

// TestKillKeepsRetainedAndSessions: after kill -9, acknowledged retained
// messages are there (a retained message deleted with an empty payload
// stays deleted), a persistent session is present with its subscription,
// and the messages queued for it while it was away are delivered.
func TestKillKeepsRetainedAndSessions(t *testing.T) {
	path := storePath(t)
	p := startBrokerProc(t, path)
	phone, _ := connect(t, p.addr, "phone", false, nil)
	subscribe(t, phone, "home/+/state", 1)
	subscribe(t, phone, "home/alarm", 2)
	phone.Disconnect(100)

	pub, _ := connect(t, p.addr, "sensors", true, nil)
	publish(t, pub, "home/door/state", 1, true, "open")
	publish(t, pub, "home/window/state", 1, true, "closed")
	publish(t, pub, "home/gone/state", 1, true, "soon deleted")
	publish(t, pub, "home/gone/state", 1, true, "")
	publish(t, pub, "home/alarm", 2, false, "ring")
	p.kill(t)

	p = startBrokerProc(t, path)
	got := newReceived()
	_, present := connect(t, p.addr, "phone", false, got.handler)
	if !present {
		t.Fatal("persistent session not present after kill -9")
	}
	// Queued while it was away: the three retained publishes to its
	// filter, the empty one included, and the QoS 2 alarm.
	if missing := got.waitAll([]string{"open", "closed", "soon deleted", "ring"}); len(missing) > 0 {
		t.Fatalf("queued messages missing after kill -9: %v (got %q)", missing, got.all)
	}
	fresh := newReceived()
	tablet, _ := connect(t, p.addr, "tablet", true, fresh.handler)
	subscribe(t, tablet, "home/#", 1)
	if missing := fresh.waitAll([]string{"open", "closed"}); len(missing) > 0 {
		t.Fatalf("retained messages missing after kill -9: %v", missing)
	}
	pub, _ = connect(t, p.addr, "sensors", true, nil)
	publish(t, pub, "home/door/state", 1, false, "shut")
	if missing := got.waitAll([]string{"shut"}); len(missing) > 0 {
		t.Fatal("the restored subscription does not deliver")
	}
	if n := fresh.has("soon deleted"); n != 0 {
		t.Fatal("a deleted retained message came back after kill -9")
	}
	p.stop(t)
}
