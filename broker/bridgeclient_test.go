package broker

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Tests of the clients that CONNECT with the bridge bit (protocol level
// 0x83 or 0x84), as a stock mosquitto bridge does (try_private true).

// connectBridgeFor is a valid CONNECT with the bridge bit: level 0x84 for
// MQTT 3.1.1, 0x83 for MQTT 3.1 ("MQIsdp"), clean session, keepalive 60 s.
func connectBridgeFor(level byte, clientID string) []byte {
	name := "MQTT"
	if level&0x7f == 3 {
		name = "MQIsdp"
	}
	return pk(fmt.Sprintf("10 r? s'%s' %02x 02 H60 s'%s'", name, level, clientID))
}

// TestBridgeConnectRaw: a CONNECT with the bridge bit over TCP gets
// CONNACK 0 and the session then speaks 3.1.1 (SUBACK, PUBLISH, PINGRESP
// without MQTT 5 properties); the bit on a level it does not belong to is
// still refused.
func TestBridgeConnectRaw(t *testing.T) {
	b, logs := startTestBroker(t, Options{Listeners: []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}}, AllowAnonymous: true})
	addr := b.Addrs()[0].Addr.String()
	for i, tc := range []struct {
		name    string
		connect []byte
		want    string // "CONNACK 0x00", or "refused": any other CONNACK, then closed
	}{
		{"3.1.1 bridge (0x84)", connectBridgeFor(0x84, "bridge-84"), "CONNACK 0x00"},
		{"3.1 bridge (0x83)", connectBridgeFor(0x83, "bridge-83"), "CONNACK 0x00"},
		{"MQTT 5 with the bit (0x85)", connectBridgeFor(0x85, "bridge-85"), "refused"},
		{"MQIsdp with 0x84", pk("10 r? s'MQIsdp' 84 02 H60 s'bridge-mqisdp'"), "refused"},
		{"MQTT with 0x83", pk("10 r? s'MQTT' 83 02 H60 s'bridge-mqtt3'"), "refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, addr, 4)
			defer c.close()
			if err := c.write(tc.connect); err != nil {
				t.Fatalf("write CONNECT: %v", err)
			}
			if tc.want == "refused" {
				// Mochi's answer, unchanged by pimqtt: 0x82, an MQTT 5 code.
				p, err := c.next()
				if err != nil || p.header>>4 != 2 || p.describe(4) == "CONNACK 0x00" {
					t.Fatalf("want a refusing CONNACK, got %s (%v)", p.describe(4), err)
				}
				c.expectClosed()
				return
			}
			c.expect(tc.want)
			// 3.1.1 framing both ways: SUBACK and PUBACK without MQTT 5
			// reason codes or properties. Its own message does not come
			// back (no-local): the PINGRESP is next.
			topic := fmt.Sprintf("bridge/raw/%d", i)
			if err := c.write(pk("82 r? m7 s'" + topic + "' 01")); err != nil {
				t.Fatal(err)
			}
			if p := c.expect("SUBACK 0x01"); len(p.body) != 3 {
				t.Fatalf("SUBACK body % x, want 3.1.1's 3 bytes", p.body)
			}
			if err := c.write(pk("32 r? s'" + topic + "' m8 'ok'")); err != nil {
				t.Fatal(err)
			}
			if p := c.expect("PUBACK"); len(p.body) != 2 {
				t.Fatalf("PUBACK body % x, want 3.1.1's 2 bytes", p.body)
			}
			c.ping()
		})
	}
	waitLogged(t, logs, "bridge connected", "bridge-84")
	waitLogged(t, logs, "bridge connected", "bridge-83")
}

// waitLogged waits until a line holding every one of parts was logged.
func waitLogged(t *testing.T, logs *logSink, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(replyTimeout)
	for {
		for _, line := range strings.Split(logs.since(0), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(line, p)
			}
			if all {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q; log:\n%s", parts, logs.since(0))
		}
		time.Sleep(10 * time.Millisecond) // polling a log for a condition
	}
}

// msgLog collects the messages a paho client receives.
type msgLog struct {
	mu   sync.Mutex
	msgs []paho.Message
	got  chan paho.Message
}

func newMsgLog() *msgLog { return &msgLog{got: make(chan paho.Message, 256)} }

func (m *msgLog) handler(_ paho.Client, msg paho.Message) {
	m.mu.Lock()
	m.msgs = append(m.msgs, msg)
	m.mu.Unlock()
	m.got <- msg
}

// waitFor returns the first message on topic, skipping others (they stay
// in msgs).
func (m *msgLog) waitFor(t *testing.T, topic string) paho.Message {
	t.Helper()
	return m.waitForPayload(t, topic, "")
}

// waitForPayload is waitFor for a message with the payload ("" for any).
// Mochi may send a subscriber one message twice, live and retained, when
// it is published while the SUBSCRIBE is being answered.
func (m *msgLog) waitForPayload(t *testing.T, topic, payload string) paho.Message {
	t.Helper()
	timeout := time.After(replyTimeout)
	for {
		select {
		case msg := <-m.got:
			if msg.Topic() == topic && (payload == "" || string(msg.Payload()) == payload) {
				return msg
			}
		case <-timeout:
			t.Fatalf("no message on %s; got %v", topic, m.topics())
			return nil
		}
	}
}

func (m *msgLog) topics() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, msg := range m.msgs {
		out = append(out, msg.Topic())
	}
	return out
}

// pahoAt connects a paho client with the protocol version (4, or 0x84 for
// a bridge) over url ("tcp://…", "ws://…", or "inmem" for the in-memory
// listener), with a clean session; it is disconnected when the test ends.
func pahoAt(t *testing.T, b *Broker, u, clientID string, version uint, onMsg paho.MessageHandler) paho.Client {
	t.Helper()
	opts := paho.NewClientOptions().SetClientID(clientID).SetProtocolVersion(version).
		SetAutoReconnect(false).SetConnectTimeout(10 * time.Second).SetDefaultPublishHandler(onMsg)
	if u == inMemory {
		opts.AddBroker("tcp://in-process:0").SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return b.DialInMemory(ctx)
		})
	} else {
		opts.AddBroker(u)
	}
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("client %s (protocol 0x%02x) on %s could not connect: %v", clientID, version, u, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

// settle returns once the broker has finished with c's earlier packets:
// Mochi reads a client's packets one after the other, and answers a
// SUBSCRIBE before it sends the retained messages, so a message published
// between the SUBACK and then would reach c twice, live and retained.
func settle(t *testing.T, c paho.Client) {
	t.Helper()
	waitToken(t, "settle", c.Publish("settle", 1, false, "s"))
}

func waitToken(t *testing.T, what string, tok paho.Token) {
	t.Helper()
	if !tok.WaitTimeout(replyTimeout) || tok.Error() != nil {
		t.Fatalf("%s: %v", what, tok.Error())
	}
}

// TestBridgeConnectEveryListener: paho with protocol version 0x84 (as
// pimqtt's own bridge connects in memory) connects on TCP, WebSocket and
// the in-memory listener, and is logged as a bridge.
func TestBridgeConnectEveryListener(t *testing.T) {
	b, logs := startTestBroker(t, Options{
		Listeners:      []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}, {Kind: WebSocket, Addr: "127.0.0.1:0"}},
		AllowAnonymous: true,
	})
	for _, tc := range []struct{ listener, url string }{
		{TCP, "tcp://" + listenerAddr(t, b, TCP)},
		{WebSocket, "ws://" + listenerAddr(t, b, WebSocket) + "/mqtt"},
		{inMemory, inMemory},
	} {
		t.Run(tc.listener, func(t *testing.T) {
			id := "bridge-on-" + tc.listener
			msgs := newMsgLog()
			c := pahoAt(t, b, tc.url, id, 0x84, msgs.handler)
			waitToken(t, "subscribe", c.Subscribe("check/"+id, 1, nil))
			// A normal client's message reaches the bridge.
			n := pahoAt(t, b, tc.url, "normal-on-"+tc.listener, 4, nil)
			waitToken(t, "publish", n.Publish("check/"+id, 1, false, "x"))
			msgs.waitFor(t, "check/"+id)
			waitLogged(t, logs, "bridge connected", "client="+id)
		})
	}
}

// TestBridgeNoEcho: a bridge subscribed to a/# does not get back what it
// publishes to a/x (QoS 0 takes the fast path, QoS 1 Mochi's), while a
// normal subscriber gets it, and a normal client still gets its own
// messages back.
func TestBridgeNoEcho(t *testing.T) {
	for _, qos := range []byte{0, 1} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			b, _ := startTestBroker(t, Options{Listeners: []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}}, AllowAnonymous: true})
			u := "tcp://" + b.Addrs()[0].Addr.String()
			bridgeMsgs, normalMsgs := newMsgLog(), newMsgLog()
			bridge := pahoAt(t, b, u, "bridge", 0x84, bridgeMsgs.handler)
			normal := pahoAt(t, b, u, "normal", 4, normalMsgs.handler)
			waitToken(t, "bridge subscribe", bridge.Subscribe("a/#", qos, nil))
			waitToken(t, "normal subscribe", normal.Subscribe("a/#", qos, nil))

			waitToken(t, "bridge publish", bridge.Publish("a/x", qos, false, "from-bridge"))
			// Its next packet is read once a/x has been routed: a copy of
			// a/x for the bridge would be queued before the marker below.
			waitToken(t, "bridge sync publish", bridge.Publish("sync/1", 1, false, "sync"))
			normalMsgs.waitFor(t, "a/x")
			// A normal client gets its own message back.
			waitToken(t, "normal publish", normal.Publish("a/marker", qos, false, "marker"))
			normalMsgs.waitFor(t, "a/marker")
			bridgeMsgs.waitFor(t, "a/marker")
			if got := bridgeMsgs.topics(); len(got) != 1 {
				t.Fatalf("bridge got %v, want only a/marker (no echo of a/x)", got)
			}
		})
	}
}

// TestBridgeRetainAsPublished: a live retained message reaches a bridge
// with its retain flag (so that it stays retained across the bridge),
// and a normal 3.1.1 subscriber without it, as the spec says.
func TestBridgeRetainAsPublished(t *testing.T) {
	for _, qos := range []byte{0, 1} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			b, _ := startTestBroker(t, Options{Listeners: []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}}, AllowAnonymous: true})
			u := "tcp://" + b.Addrs()[0].Addr.String()
			bridgeMsgs, normalMsgs := newMsgLog(), newMsgLog()
			bridge := pahoAt(t, b, u, "bridge", 0x84, bridgeMsgs.handler)
			normal := pahoAt(t, b, u, "normal", 4, normalMsgs.handler)
			waitToken(t, "bridge subscribe", bridge.Subscribe("r/#", qos, nil))
			waitToken(t, "normal subscribe", normal.Subscribe("r/#", qos, nil))
			settle(t, bridge)
			settle(t, normal)
			pub := pahoAt(t, b, u, "publisher", 4, nil)
			waitToken(t, "publish", pub.Publish("r/live", qos, true, "v"))
			waitToken(t, "publish", pub.Publish("r/plain", qos, false, "p"))
			if m := bridgeMsgs.waitFor(t, "r/live"); !m.Retained() {
				t.Error("bridge got the live retained message without its retain flag")
			}
			if m := bridgeMsgs.waitFor(t, "r/plain"); m.Retained() {
				t.Error("bridge got a message that was not retained with the retain flag")
			}
			if m := normalMsgs.waitFor(t, "r/live"); m.Retained() {
				t.Error("normal 3.1.1 subscriber got a live message with the retain flag")
			}
		})
	}
}

// TestBridgeStateTopic: a bridge may publish its state retained on
// mosquitto's notification topic $SYS/broker/connection/<name>/state and
// leave a will there; it is kept, delivered, and the bridge stays
// connected. A normal client's publish there is acknowledged and dropped
// (today's behaviour), and a bridge's publish elsewhere in $SYS too.
func TestBridgeStateTopic(t *testing.T) {
	b, _ := startTestBroker(t, Options{Listeners: []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}}, AllowAnonymous: true})
	addr := b.Addrs()[0].Addr.String()
	u := "tcp://" + addr
	retained := func(topic string) string {
		t.Helper()
		if m, ok := b.server.Topics.Retained.Get(topic); ok {
			return string(m.Payload)
		}
		return ""
	}
	for _, tc := range []struct {
		name     string
		url      string
		version  uint
		topic    string
		wantKept bool
		clientID string
		qos      byte
	}{
		{"bridge state qos1", u, 0x84, "$SYS/broker/connection/pi.x/state", true, "bridge-1", 1},
		{"bridge state qos0", u, 0x84, "$SYS/broker/connection/pi.y/state", true, "bridge-0", 0},
		{"bridge other $SYS", u, 0x84, "$SYS/pimqtt/other", false, "bridge-2", 1},
		{"bridge deeper connection topic", u, 0x84, "$SYS/broker/connection/pi.x/state/extra", false, "bridge-3", 1},
		{"normal client state", u, 4, "$SYS/broker/connection/pi.z/state", false, "normal-1", 1},
		{"in-memory bridge state", inMemory, 0x84, "$SYS/broker/connection/pi.m/state", true, "bridge-mem", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			watchMsgs := newMsgLog()
			watch := pahoAt(t, b, u, "watch-"+tc.clientID, 4, watchMsgs.handler)
			waitToken(t, "subscribe", watch.Subscribe(tc.topic, 1, nil))
			waitToken(t, "subscribe", watch.Subscribe("sync/"+tc.clientID, 1, nil))
			settle(t, watch)
			c := pahoAt(t, b, tc.url, tc.clientID, tc.version, nil)
			waitToken(t, "publish", c.Publish(tc.topic, tc.qos, true, "1"))
			// The publisher's next message is routed after the first.
			waitToken(t, "publish", c.Publish("sync/"+tc.clientID, 1, false, "s"))
			watchMsgs.waitFor(t, "sync/"+tc.clientID)
			got := retained(tc.topic)
			if kept := got == "1"; kept != tc.wantKept {
				t.Errorf("retained on %s = %q, want kept=%v", tc.topic, got, tc.wantKept)
			}
			delivered := false
			for _, topic := range watchMsgs.topics() {
				delivered = delivered || topic == tc.topic
			}
			if delivered != tc.wantKept {
				t.Errorf("delivered on %s = %v, want %v", tc.topic, delivered, tc.wantKept)
			}
			if !c.IsConnectionOpen() {
				t.Errorf("client disconnected after publishing to %s", tc.topic)
			}
		})
	}

	t.Run("bridge will", func(t *testing.T) {
		const topic = "$SYS/broker/connection/pi.w/state"
		watchMsgs := newMsgLog()
		watch := pahoAt(t, b, u, "watch-will", 4, watchMsgs.handler)
		waitToken(t, "subscribe", watch.Subscribe(topic, 1, nil))
		settle(t, watch)
		c := dialRaw(t, addr, 4)
		// CONNECT 0x84, will QoS 1 retained "0" on the state topic.
		if err := c.write(pk("10 r? s'MQTT' 84 2E H60 s'bridge-will' s'" + topic + "' s'0'")); err != nil {
			t.Fatal(err)
		}
		c.expect("CONNACK 0x00")
		if err := c.write(pk("31 r? s'" + topic + "' '1'")); err != nil {
			t.Fatal(err)
		}
		watchMsgs.waitForPayload(t, topic, "1")
		c.close() // no DISCONNECT: the will is sent
		watchMsgs.waitForPayload(t, topic, "0")
		if got := retained(topic); got != "0" {
			t.Fatalf("retained will = %q, want 0", got)
		}
	})
}

// TestBridgeStateUnderACL: with an ACL file, a bridge's state is kept
// only where the ACL grants its user write access, as in mosquitto.
func TestBridgeStateUnderACL(t *testing.T) {
	acl := filepath.Join(t.TempDir(), "acl")
	if err := os.WriteFile(acl, []byte("user granted\ntopic write $SYS/broker/connection/+/state\ntopic readwrite sync/#\n\nuser plain\ntopic readwrite sync/#\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, _ := startTestBroker(t, Options{Listeners: []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}}, AllowAnonymous: true, ACLFile: acl})
	u := "tcp://" + b.Addrs()[0].Addr.String()
	for _, tc := range []struct {
		user     string
		wantKept bool
	}{
		{"granted", true},
		{"plain", false},
	} {
		t.Run(tc.user, func(t *testing.T) {
			topic := "$SYS/broker/connection/" + tc.user + "/state"
			c := paho.NewClient(paho.NewClientOptions().AddBroker(u).SetClientID("bridge-" + tc.user).SetUsername(tc.user).
				SetProtocolVersion(0x84).SetAutoReconnect(false).SetConnectTimeout(10 * time.Second))
			waitToken(t, "connect", c.Connect())
			defer c.Disconnect(50)
			waitToken(t, "publish", c.Publish(topic, 1, true, "1")) // retained before the PUBACK
			_, kept := b.server.Topics.Retained.Get(topic)
			if kept != tc.wantKept {
				t.Fatalf("retained on %s: %v, want %v", topic, kept, tc.wantKept)
			}
			if !c.IsConnectionOpen() {
				t.Fatal("bridge disconnected")
			}
		})
	}
}
