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
	lo := newObserver(t, "local", local.dial, "raspberry/#", "$SYS/broker/connection/#")
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

	n2 := newObserver(t, "n2", tcpDial(cl.Nodes[1].MQTTAddr()), "raspberry/#")
	n2.limit = natsLimit
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

	// Kill n1, the bridge's node. n3 publishes commands meanwhile (n2 is the observer's
	// node; n3 stands for another client of the cluster), and the Pi its states.
	n3 := newObserver(t, "n3", tcpDial(cl.Nodes[2].MQTTAddr()))
	mark := logs.mark()
	killed := time.Now()
	cl.Nodes[0].Kill(t)
	const n = 5
	var toks []mqtt.Token
	for i := range n {
		toks = append(toks, n3.c.Publish("raspberry/cmd", 1, false, fmt.Sprintf("in%d", i)))
		lo.publish("raspberry/out", 1, false, fmt.Sprintf("out%d", i))
	}
	line := logs.waitLineSince(mark, "connected to the remote", "side=remote")
	connectedAfter := time.Since(killed)
	if b.Remote() == "n1" || b.Remote() == "" {
		t.Fatalf("after n1's death: %s (Remote() = %q)", line, b.Remote())
	}
	probe := marker("probe")
	n3.publish("raspberry/probe", 1, false, probe)
	lo.waitMsg("raspberry/probe", probe)
	crossedAfter := time.Since(killed)
	t.Logf("bridge recovery: connected to %s %v after n1's SIGKILL; a message from the cluster crossed %v after it",
		b.Remote(), connectedAfter.Round(time.Millisecond), crossedAfter.Round(time.Millisecond))
	for i, tok := range toks {
		if !tok.WaitTimeout(natsLimit) || tok.Error() != nil {
			t.Fatalf("n3: publish in%d during the outage: %v", i, tok.Error())
		}
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
		if !slices.Equal(seq, want) {
			t.Errorf("%s got %v on %s, want %v (at least once: %v)", o.name, seq, topic, want, slices.Compact(slices.Clone(seq)))
		}
	}
	inOrder(lo, "raspberry/cmd", "in")
	inOrder(n2, "raspberry/out", "out")
	t.Logf("after the outage: %d in-messages locally, %d out-messages on the cluster",
		len(filter(lo.all(), "raspberry/cmd")), len(filter(n2.all(), "raspberry/out")))
}

func filter(ms []rec, topic string) []rec {
	var out []rec
	for _, m := range ms {
		if m.Topic == topic {
			out = append(out, m)
		}
	}
	return out
}
