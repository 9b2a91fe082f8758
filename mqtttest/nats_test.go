package mqtttest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// natsFailoverBound is how long after the SIGKILL of one node of three the
// others must serve MQTT again (connect, QoS 1 subscribe, retained QoS 1
// publish). Measured 8.5-17.6 s when the killed node led JetStream, 37 s
// once on a loaded machine.
const natsFailoverBound = 60 * time.Second

// natsMsg is one message a natsClient received.
type natsMsg struct {
	topic    string
	payload  string
	retained bool
}

// natsClient is a paho client that records what it receives.
type natsClient struct {
	paho.Client
	msgs chan natsMsg
}

// connectNATS connects a client with id to node, failing the test on error.
func connectNATS(t *testing.T, node *NATSNode, id string, will func(*paho.ClientOptions)) *natsClient {
	t.Helper()
	c, err := dialNATS(node, id, natsProbeTimeout, will)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// dialNATS connects a client with id to node.
func dialNATS(node *NATSNode, id string, timeout time.Duration, will func(*paho.ClientOptions)) (*natsClient, error) {
	c := &natsClient{msgs: make(chan natsMsg, 64)}
	opts := paho.NewClientOptions().AddBroker(node.URL()).SetClientID(id).
		SetProtocolVersion(4).SetAutoReconnect(false).
		SetConnectTimeout(timeout).SetWriteTimeout(timeout).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			c.msgs <- natsMsg{m.Topic(), string(m.Payload()), m.Retained()}
		})
	if will != nil {
		will(opts)
	}
	c.Client = paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(timeout) {
		c.Disconnect(0)
		return nil, fmt.Errorf("connect %s to %s: no CONNACK within %v", id, node.Name, timeout)
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("connect %s to %s: %w", id, node.Name, err)
	}
	return c, nil
}

// sub subscribes with QoS 1, failing the test on error.
func (c *natsClient) sub(t *testing.T, topic string) {
	t.Helper()
	if err := wait(c.Subscribe(topic, 1, nil), "subscribe "+topic); err != nil {
		t.Fatalf("%v", err)
	}
}

// pub publishes with QoS 1 and waits for the PUBACK, failing the test on
// error.
func (c *natsClient) pub(t *testing.T, topic, payload string, retained bool) {
	t.Helper()
	if err := wait(c.Publish(topic, 1, retained, payload), "publish "+topic); err != nil {
		t.Fatalf("%v", err)
	}
}

// waitMsg returns the next message on topic, skipping others, failing the
// test after natsProbeTimeout.
func (c *natsClient) waitMsg(t *testing.T, topic string) natsMsg {
	t.Helper()
	deadline := time.After(natsProbeTimeout)
	for {
		select {
		case m := <-c.msgs:
			if m.topic == topic {
				return m
			}
		case <-deadline:
			t.Fatalf("nothing on %s within %v", topic, natsProbeTimeout)
		}
	}
}

// noMsg fails the test if a message on topic arrives within d. It is the
// one place where the test waits for something not to happen: there is no
// event to wait for instead.
func (c *natsClient) noMsg(t *testing.T, topic string, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case m := <-c.msgs:
			if m.topic == topic {
				t.Fatalf("unexpected %+v", m)
			}
		case <-deadline:
			return
		}
	}
}

// rawConnect sends a CONNECT for client id with protocol level level (4 is
// 3.1.1; 0x84 is mosquitto's bridge bit), with an optional will, and returns
// the connection and the CONNACK's return code.
func rawConnect(t *testing.T, addr string, level byte, id, willTopic, willPayload string) (net.Conn, byte) {
	t.Helper()
	str := func(b *bytes.Buffer, s string) {
		_ = binary.Write(b, binary.BigEndian, uint16(len(s)))
		b.WriteString(s)
	}
	var body bytes.Buffer
	str(&body, "MQTT")
	flags := byte(0x02) // clean session
	if willTopic != "" {
		flags |= 0x04 | 0x08 | 0x20 // will, QoS 1, retained
	}
	body.Write([]byte{level, flags, 0, 60})
	str(&body, id)
	if willTopic != "" {
		str(&body, willTopic)
		str(&body, willPayload)
	}
	conn, err := net.DialTimeout("tcp", addr, natsProbeTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(natsProbeTimeout))
	if _, err := conn.Write(append([]byte{0x10, byte(body.Len())}, body.Bytes()...)); err != nil {
		t.Fatalf("write CONNECT: %v", err)
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(conn, ack); err != nil {
		t.Fatalf("read CONNACK for level %#x: %v", level, err)
	}
	if ack[0] != 0x20 || ack[1] != 2 {
		t.Fatalf("CONNECT level %#x: answer % x, not a CONNACK", level, ack)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, ack[3]
}

// TestNATSFacts checks the behaviour of nats-server's MQTT side that the
// bridge and failover code rely on (see the comment at the top of nats.go).
func TestNATSFacts(t *testing.T) {
	c := StartNATSCluster(t, 3)
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]

	t.Run("retained across nodes, live messages retain=0", func(t *testing.T) {
		watcher := connectNATS(t, n2, "facts-watcher", nil)
		watcher.sub(t, "facts/r/#")
		p := connectNATS(t, n1, "facts-pub", nil)
		p.pub(t, "facts/r/kept", "on", true)
		if m := watcher.waitMsg(t, "facts/r/kept"); m.retained || m.payload != "on" {
			t.Errorf("live copy of a retained publish on another node: %+v, want retain=0", m)
		}
		late := connectNATS(t, n3, "facts-late", nil)
		late.sub(t, "facts/r/#")
		if m := late.waitMsg(t, "facts/r/kept"); !m.retained || m.payload != "on" {
			t.Errorf("retained message published on n1, subscribed on n3: %+v, want retain=1 on", m)
		}
	})

	t.Run("own publish echoed back", func(t *testing.T) {
		e := connectNATS(t, n1, "facts-echo", nil)
		e.sub(t, "facts/echo")
		e.pub(t, "facts/echo", "mine", false)
		if m := e.waitMsg(t, "facts/echo"); m.payload != "mine" {
			t.Errorf("echo: %+v", m)
		}
	})

	t.Run("QoS 2 subscription granted QoS 1", func(t *testing.T) {
		q := connectNATS(t, n2, "facts-qos2", nil)
		tok := q.Subscribe("facts/q2", 2, nil)
		if err := wait(tok, "subscribe QoS 2"); err != nil {
			t.Fatal(err)
		}
		if got := tok.(*paho.SubscribeToken).Result()["facts/q2"]; got != 1 {
			t.Errorf("QoS 2 SUBSCRIBE granted %#x, want 1", got)
		}
	})

	t.Run("protocol level 0x84 refused with CONNACK 1", func(t *testing.T) {
		if _, rc := rawConnect(t, n1.MQTTAddr(), 0x84, "facts-bridge", "", ""); rc != 1 {
			t.Errorf("CONNECT level 0x84: CONNACK %d, want 1 (unacceptable protocol version)", rc)
		}
		if _, rc := rawConnect(t, n1.MQTTAddr(), 4, "facts-plain", "", ""); rc != 0 {
			t.Errorf("CONNECT level 4: CONNACK %d, want 0", rc)
		}
	})

	t.Run("will published on another node when the connection drops", func(t *testing.T) {
		watcher := connectNATS(t, n3, "facts-will-watcher", nil)
		watcher.sub(t, "facts/will")
		conn, rc := rawConnect(t, n1.MQTTAddr(), 4, "facts-will", "facts/will", "gone")
		if rc != 0 {
			t.Fatalf("CONNACK %d", rc)
		}
		_ = conn.Close() // no DISCONNECT: the will must go out
		if m := watcher.waitMsg(t, "facts/will"); m.payload != "gone" {
			t.Errorf("will: %+v", m)
		}
	})
}

// TestNATSCluster exercises the harness: messages cross nodes, killing one
// node of three leaves MQTT working on the others after a bounded time
// (measured and logged), and a restarted node rejoins.
func TestNATSCluster(t *testing.T) {
	c := StartNATSCluster(t, 3)
	if len(c.Nodes) != 3 || len(c.URLs()) != 3 {
		t.Fatalf("nodes %d, URLs %v", len(c.Nodes), c.URLs())
	}
	for _, n := range c.Nodes {
		if !strings.HasPrefix(n.URL(), "tcp://127.0.0.1:") || n.URL() != "tcp://"+n.MQTTAddr() {
			t.Errorf("%s: URL %s, MQTTAddr %s", n.Name, n.URL(), n.MQTTAddr())
		}
	}
	n2 := c.Nodes[1]
	sub := connectNATS(t, n2, "cluster-sub", nil)
	sub.sub(t, "cluster/#")
	for _, n := range c.Nodes {
		p := connectNATS(t, n, "cluster-pub-"+n.Name, nil)
		p.pub(t, "cluster/from/"+n.Name, "hi", false)
		if m := sub.waitMsg(t, "cluster/from/"+n.Name); m.payload != "hi" {
			t.Errorf("from %s: %+v", n.Name, m)
		}
	}

	// Kill the node that leads JetStream's meta group: the worst case, since
	// every node then waits for a new election.
	victim := c.MetaLeader(t)
	var alive []*NATSNode
	for _, n := range c.Nodes {
		if n != victim {
			alive = append(alive, n)
		}
	}
	// A client with a will and a retained status on the victim, as a
	// device has: what becomes of its status, and of its client id?
	dev := connectNATS(t, victim, "cluster-dev", func(o *paho.ClientOptions) {
		o.SetWill("cluster/dev/status", "off", 1, true)
	})
	dev.pub(t, "cluster/dev/status", "on", true)
	watcher := connectNATS(t, alive[0], "cluster-watcher", nil)
	watcher.sub(t, "cluster/dev/status")
	watcher.waitMsg(t, "cluster/dev/status")

	killed := time.Now()
	victim.Kill(t)
	t.Logf("killed %s (JetStream meta leader)", victim.Name)
	var wg sync.WaitGroup
	results := make([]string, 2)
	for i, id := range []string{"", "cluster-dev"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = untilServed(alive[i%len(alive)], id, killed)
		}()
	}
	wg.Wait()
	for _, r := range results {
		t.Log(r)
		if strings.Contains(r, "FAILED") {
			t.Error(r)
		}
	}
	// The will was with the killed node: it is never published, and the
	// retained status stays "on". Any will would have arrived by now: the
	// survivors have served clients again.
	watcher.noMsg(t, "cluster/dev/status", 500*time.Millisecond)

	victim.Restart(t)
	after := connectNATS(t, victim, "cluster-after", nil)
	after.sub(t, "cluster/again")
	connectNATS(t, alive[0], "cluster-pub-again", nil).pub(t, "cluster/again", "back", false)
	if m := after.waitMsg(t, "cluster/again"); m.payload != "back" {
		t.Errorf("after restart: %+v", m)
	}
}

// untilServed retries, on node, a client that connects (with id, or a
// fresh id each time when id is ""), subscribes with QoS 1, publishes a
// retained QoS 1 message and receives it, until that works or
// natsFailoverBound has passed since killed, and says how long it took and
// how each failed attempt failed.
func untilServed(node *NATSNode, id string, killed time.Time) string {
	what := "fresh client ids"
	if id != "" {
		what = "client id " + id + " (its session was on the killed node)"
	}
	var failed []string
	for attempt := 1; time.Since(killed) < natsFailoverBound; attempt++ {
		cid := id
		if cid == "" {
			cid = fmt.Sprintf("cluster-fresh-%d", attempt)
		}
		began := time.Since(killed)
		err := serveOnce(node, cid)
		if err == nil {
			return fmt.Sprintf("failover: %s on %s served (CONNECT, QoS 1 SUBSCRIBE, retained QoS 1 PUBLISH, delivery) %v after the SIGKILL, attempt %d; failed attempts: %v",
				what, node.Name, time.Since(killed).Round(10*time.Millisecond), attempt, failed)
		}
		failed = append(failed, fmt.Sprintf("[%v-%v: %v]", began.Round(10*time.Millisecond), time.Since(killed).Round(10*time.Millisecond), err))
		time.Sleep(100 * time.Millisecond) // between attempts, not synchronisation
	}
	return fmt.Sprintf("FAILED: %s on %s not served within %v of the SIGKILL: %v", what, node.Name, natsFailoverBound, failed)
}

// serveOnce is one attempt of untilServed.
func serveOnce(node *NATSNode, id string) error {
	c, err := dialNATS(node, id, natsProbeTimeout, nil)
	if err != nil {
		return err
	}
	defer c.Disconnect(0)
	topic := "cluster/served/" + id
	if err := wait(c.Subscribe(topic, 1, nil), "subscribe"); err != nil {
		return err
	}
	if err := wait(c.Publish(topic, 1, true, "x"), "publish"); err != nil {
		return err
	}
	select {
	case <-c.msgs:
		return nil
	case <-time.After(natsProbeTimeout):
		return fmt.Errorf("own retained publish not delivered within %v", natsProbeTimeout)
	}
}

// TestStartNATSClusterPortTaken: when another process binds a picked port
// (a node's MQTT port, or its route port) before nats-server does, the
// whole cluster is started again on new ports.
func TestStartNATSClusterPortTaken(t *testing.T) {
	for _, which := range []string{"mqtt", "cluster"} {
		t.Run(which, func(t *testing.T) {
			held, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer held.Close()
			heldPort := held.Addr().(*net.TCPAddr).Port
			picks := 0
			pick := func(tb testing.TB, n int) []int {
				ports := pickPorts(tb, n)
				if picks++; picks == 1 {
					if which == "mqtt" {
						ports[n-1] = heldPort // the last node's MQTT port
					} else {
						ports[0] = heldPort // the first node's route port
					}
				}
				return ports
			}
			c := startNATSCluster(t, 2, pick)
			if picks != 2 {
				t.Fatalf("picks %d: want a second attempt on other ports", picks)
			}
			for _, n := range c.Nodes {
				if n.mqttPort == heldPort || n.clusterPort == heldPort {
					t.Fatalf("%s on the held port %d", n.Name, heldPort)
				}
			}
		})
	}
}
