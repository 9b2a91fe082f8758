package bridge

import (
	"fmt"
	"slices"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/pimqtt/pimqtt/mqtttest"
)

// natsLimit bounds waits across a node's death: nats-server answers nothing that needs
// JetStream (CONNECT, QoS 1 SUBSCRIBE, retained PUBLISH) until a new leader is elected, 5-16 s
// after a SIGKILL of a leader (see mqtttest/nats.go).
const natsLimit = 60 * time.Second

// TestBridgeNATSCluster bridges raspberry/# both ways between pimqtt's broker and a
// three-node nats-server cluster (Remotes = the three nodes): a command published on node 2
// arrives locally exactly once and is seen on the cluster exactly once (nats-server echoes a
// client's own publish; the bridge drops its echoes). Then the node the bridge is on is
// killed: the bridge connects to another node, and the QoS 1 messages published on either
// side during the outage arrive after it.
func TestBridgeNATSCluster(t *testing.T) {
	log, logs := newLog(t)
	logs.limit = natsLimit
	local := startLocal(t, "pimqtt", log)
	cl := mqtttest.StartNATSCluster(t, 3)
	var remotes []Remote
	for _, n := range cl.Nodes {
		remotes = append(remotes, Remote{Label: n.Name, Dial: tcpDial(n.MQTTAddr())})
	}
	topic, _ := ParseTopic("raspberry/# both 1")
	lo := newObserver(t, "local", local.dial, "raspberry/#", stateTopic)
	lo.limit = natsLimit
	b := startBridge(t, Options{
		Remotes: remotes,
		Topics:  []Topic{topic},
		Local:   local.dial,
		Logger:  log,
		// The bridge's subscription and what it has not acknowledged stay at the cluster
		// across its reconnections, so commands published while it is away are delivered
		// when it is back (with a clean session they are lost).
		CleanSession: false,
	})
	waitConnected(t, b)
	if got := b.Remote(); got != "n1" {
		t.Fatalf("connected to %q, want n1 (the first)", got)
	}
	lo.waitFor("state 1", func(ms []rec) bool { return lastState(ms) == "1" })

	// QoS 0: nats-server 2.9 serves a QoS 1 subscription through a JetStream consumer, which
	// once lost a message after the node leading it was killed while the bridge's own
	// subscription got it; at QoS 0 the observer sees all the cluster took.
	n2 := newObserverQoS(t, "n2", tcpDial(cl.Nodes[1].MQTTAddr()), 0, "raspberry/#", "$SYS/broker/connection/+/state")
	n2.limit = natsLimit
	// mosquitto's notifications work on nats-server: the bridge's state is retained there.
	remoteState := "$SYS/broker/connection/" + b.opts.ClientID + "/state"
	n2.waitFor("the bridge's state at the remote", func(ms []rec) bool { return count(ms, remoteState, "1") > 0 })
	n2.publish("raspberry/led", 1, false, "ON")
	lo.waitMsg("raspberry/led", "ON")
	lo.publish("raspberry/led/state", 1, false, "1")
	n2.waitMsg("raspberry/led/state", "1")
	settle(t, n2, "raspberry/led", lo, "raspberry/led")
	settle(t, lo, "raspberry/led", n2, "raspberry/led")
	for _, c := range []struct {
		o            *observer
		topic, value string
	}{
		{lo, "raspberry/led", "ON"}, {n2, "raspberry/led", "ON"},
		{lo, "raspberry/led/state", "1"}, {n2, "raspberry/led/state", "1"},
	} {
		if n := count(c.o.all(), c.topic, c.value); n != 1 {
			t.Errorf("%s saw %s %q %d times, want exactly once", c.o.name, c.topic, c.value, n)
		}
	}

	// Kill n1, the bridge's node. A client of n3 publishes commands meanwhile (n2 is the
	// observer's node), and the Pi its states.
	mark := logs.mark()
	killed := time.Now()
	cl.Nodes[0].Kill(t)
	const n = 5
	var ins, outs []string
	for i := range n {
		ins = append(ins, fmt.Sprintf("in%d", i))
		outs = append(outs, fmt.Sprintf("out%d", i))
	}
	inDone := make(chan error, 1)
	go func() { inDone <- publishAcked(cl.Nodes[2].MQTTAddr(), "raspberry/cmd", ins) }()
	for _, p := range outs {
		lo.publish("raspberry/out", 1, false, p)
	}
	line := logs.waitLineSince(mark, "connected to the remote", "side=remote")
	connectedAfter := time.Since(killed)
	if r := b.Remote(); r == "n1" || r == "" {
		t.Fatalf("after n1's death: %s (Remote() = %q)", line, r)
	}
	probe := marker("probe")
	if err := publishAcked(cl.Nodes[2].MQTTAddr(), "raspberry/probe", []string{probe}); err != nil {
		t.Fatal(err)
	}
	lo.waitMsg("raspberry/probe", probe)
	crossedAfter := time.Since(killed)
	t.Logf("bridge recovery: connected to %s %v after n1's SIGKILL; a message from the cluster crossed %v after it",
		b.Remote(), connectedAfter.Round(time.Millisecond), crossedAfter.Round(time.Millisecond))
	if err := <-inDone; err != nil {
		t.Fatal(err)
	}

	inOrder := func(o *observer, topic, prefix string) {
		t.Helper()
		got := o.waitFor(fmt.Sprintf("%s%d", prefix, n-1), func(ms []rec) bool { return count(ms, topic, fmt.Sprintf("%s%d", prefix, n-1)) > 0 })
		var seq, want []string
		for _, m := range got {
			if m.Topic == topic {
				seq = append(seq, m.Payload)
			}
		}
		for i := range n {
			want = append(want, fmt.Sprintf("%s%d", prefix, i))
		}
		// At least once: a message may come twice (the publisher's retry, or the bridge's
		// resend of one whose PUBACK the dead node took with it), but in order.
		if got := slices.Compact(slices.Clone(seq)); !slices.Equal(got, want) {
			t.Errorf("%s got %v on %s, want %v in order", o.name, seq, topic, want)
		} else if len(seq) > n {
			t.Logf("%s got %d duplicates on %s: %v", o.name, len(seq)-n, topic, seq)
		}
	}
	inOrder(lo, "raspberry/cmd", "in")
	inOrder(n2, "raspberry/out", "out")
}

// publishAcked publishes payloads on topic at QoS 1 through the nats-server node at addr, one
// at a time, each until the node acknowledged it: while JetStream elects a leader after a
// node's death nats-server answers a QoS 1 PUBLISH with nothing and then drops the client
// ("timeout for request type MS"), so the client connects again and publishes it again.
func publishAcked(addr, topic string, payloads []string) error {
	deadline := time.Now().Add(natsLimit)
	var c mqtt.Client
	defer func() {
		if c != nil {
			c.Disconnect(0)
		}
	}()
	for _, p := range payloads {
		for attempt := 1; ; attempt++ {
			if time.Now().After(deadline) {
				return fmt.Errorf("publish %s %q through %s: not acknowledged within %v (%d attempts)", topic, p, addr, natsLimit, attempt-1)
			}
			if c == nil || !c.IsConnectionOpen() {
				if c != nil {
					c.Disconnect(0)
				}
				c = mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).
					SetClientID(fmt.Sprintf("pub-%d", time.Now().UnixNano())).
					SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(10 * time.Second))
				if tok := c.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
					c = nil
					continue
				}
			}
			tok := c.Publish(topic, 1, false, p)
			if tok.WaitTimeout(15*time.Second) && tok.Error() == nil {
				break
			}
			c.Disconnect(0)
			c = nil
		}
	}
	return nil
}
