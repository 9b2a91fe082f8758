package main

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pimqtt/pimqtt/config"
	"github.com/pimqtt/pimqtt/mqtttest"
)

// bridgeRecoveryBound bounds how long the bridge may take to be connected to another node
// after the node it used was killed. nats-server 2.9 answers nothing that needs JetStream
// (a CONNECT writes the session) until a new leader is elected, 5-16 s after a leader dies
// (mqtttest/nats.go), and the bridge's backoff adds to it.
const bridgeRecoveryBound = 60 * time.Second

// TestBridgeLEDNATSCluster is the Pi's broker bridged both ways to a real three-node nats-server
// cluster (raspberry/# both 1), the whole program running with a simulated LED: a phone on the
// cluster toggles the LED and sees its state there; the command crosses once (no echo back
// to the cluster, no echo of the state back to the Pi); SIGKILL of the node the bridge uses
// and the bridge recovers on another; during an outage of every node QoS 1 commands
// published on the cluster and QoS 1 messages published on the Pi wait, and arrive after it.
func TestBridgeLEDNATSCluster(t *testing.T) {
	cluster := mqtttest.StartNATSCluster(t, 3)
	nodes := cluster.Nodes
	// The bridge reaches each node through a relay, so the test can take every node out of
	// its reach (an outage) without killing the cluster's quorum.
	relays := make([]*mqtttest.Relay, len(nodes))
	var addrs []string
	for i, n := range nodes {
		relays[i] = mqtttest.NewRelay(t)
		relays[i].Forward(n.MQTTAddr())
		addrs = append(addrs, "tcp://"+relays[i].Addr())
	}
	cfg := testConfig(passwordFile(t, "phone", "secret"))
	cfg.Bridges = []config.Bridge{{
		Name: "cluster", Addresses: addrs, Topics: []string{"raspberry/# both 1"}, ClientID: "pi-kitchen",
	}}
	m, logs := startMain(t, cfg)
	host, port := addr(t, m, "tcp")
	local := "tcp://" + net.JoinHostPort(host, port)
	const stateTopic = "$SYS/broker/connection/cluster/state"
	state := newSubscriber(t, local, "phone", "secret", stateTopic)
	state.waitFor(t, stateTopic, "1")
	onPi := newSubscriber(t, local, "phone", "secret", "raspberry/#")

	// 1. A phone on node 1 watches, a phone on node 2 commands. The watcher subscribes at
	// QoS 0: nats-server 2.9 serves a QoS 1 subscription through a JetStream consumer, which
	// once lost a message after the node leading it was killed (the bridge's own subscription
	// had received all of them, as its dropped echoes showed); at QoS 0 it is a plain NATS
	// subscription, and on loopback the watcher sees everything the cluster took.
	watch := newSubscriberQoS(t, nodes[1].URL(), "", "", 0, "raspberry/#")
	publish(t, nodes[2].URL(), "", "", "raspberry/led", []byte("1"))
	onPi.waitFor(t, "raspberry/led/state", "1")
	if v := lineValue(t, m); v != 1 {
		t.Fatalf("line %d after 1 from the cluster", v)
	}
	// Exactly once on the cluster: an echo of the command (Pi → cluster) would leave the
	// bridge's local subscription before this marker does, and a node passes one client's
	// messages on in order.
	publish(t, local, "phone", "secret", "raspberry/marker", []byte("pi-1"))
	seen := until(t, watch, "raspberry/marker", "pi-1")
	if n := count(seen, "raspberry/led", "1"); n != 1 {
		t.Errorf("the command was seen %d times on the cluster, want 1 (no echo): %v", n, seen)
	}
	if n := count(seen, "raspberry/led/state", "1"); n != 1 {
		t.Errorf("the state 1 was seen %d times on the cluster, want 1: %v", n, seen)
	}
	// Exactly once on the Pi: the cluster echoes the bridge's own publish of the state back
	// to it (3.1.1 has no no-local); node 0, which the bridge is on, sends that echo before a
	// marker published there afterwards.
	publish(t, nodes[0].URL(), "", "", "raspberry/marker", []byte("cluster-1"))
	seenPi := until(t, onPi, "raspberry/marker", "cluster-1")
	if n := count(seenPi, "raspberry/led/state", "1"); n != 0 {
		t.Errorf("the state came back to the Pi %d more times (an echo): %v", n, seenPi)
	}
	if n := count(seenPi, "raspberry/led", "1"); n != 0 {
		t.Errorf("the command came back to the Pi %d more times: %v", n, seenPi)
	}

	// 2. SIGKILL the node the bridge is on: it connects to another, and commands cross again.
	killed := time.Now()
	nodes[0].Kill(t)
	state.waitFor(t, stateTopic, "0")
	waitForWithin(t, state, stateTopic, "1", bridgeRecoveryBound)
	recovery := time.Since(killed)
	publish(t, nodes[2].URL(), "", "", "raspberry/led", []byte("0"))
	onPi.waitFor(t, "raspberry/led/state", "0")
	watch.waitFor(t, "raspberry/led/state", "0")
	crossed := time.Since(killed)
	t.Logf("bridge recovery: node killed → bridge connected to another node in %v; a command from the cluster switched the LED %v after the kill",
		recovery.Round(time.Millisecond), crossed.Round(time.Millisecond))
	if !strings.Contains(logs.String(), "127.0.0.1") {
		t.Errorf("the log does not say which node the bridge uses")
	}

	// 3. An outage of every node: none reachable, the cluster itself healthy.
	dead := deadAddr(t)
	for _, r := range relays {
		r.Forward(dead)
	}
	for _, r := range relays {
		r.Drop()
	}
	state.waitFor(t, stateTopic, "0")
	publish(t, nodes[2].URL(), "", "", "raspberry/led", []byte("1"))
	for i := range 3 {
		publish(t, local, "phone", "secret", "raspberry/log", []byte(fmt.Sprintf("during-%d", i)))
	}
	if v := lineValue(t, m); v != 0 {
		t.Fatalf("line %d during the outage: the bridge was not down", v)
	}
	healed := time.Now()
	relays[1].Forward(nodes[1].MQTTAddr())
	waitForWithin(t, state, stateTopic, "1", bridgeRecoveryBound)
	onPi.waitFor(t, "raspberry/led/state", "1")
	got := until(t, watch, "raspberry/log", "during-2")
	var order []string
	for _, msg := range got {
		if msg.topic == "raspberry/log" {
			order = append(order, msg.payload)
		}
	}
	if strings.Join(order, " ") != "during-0 during-1 during-2" {
		t.Errorf("messages published on the Pi during the outage reached the cluster as %v, want during-0 during-1 during-2", order)
	}
	t.Logf("after the outage: reconnected and delivered both ways %v after a node was reachable again", time.Since(healed).Round(time.Millisecond))
}

// until returns every message s receives up to and including topic=payload.
func until(t testing.TB, s *subscriber, topic, payload string) []message {
	t.Helper()
	deadline := time.After(testTimeout)
	var seen []message
	for {
		select {
		case msg := <-s.msgs:
			seen = append(seen, msg)
			if msg.topic == topic && msg.payload == payload {
				return seen
			}
		case <-deadline:
			t.Fatalf("no %q on %s within %v; saw %v", payload, topic, testTimeout, seen)
		}
	}
}

// waitForWithin is subscriber.waitFor with its own bound.
func waitForWithin(t testing.TB, s *subscriber, topic, payload string, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case msg := <-s.msgs:
			if msg.topic == topic && msg.payload == payload {
				return
			}
		case <-deadline:
			t.Fatalf("no %q on %s within %v", payload, topic, within)
		}
	}
}

func count(msgs []message, topic, payload string) int {
	n := 0
	for _, m := range msgs {
		if m.topic == topic && m.payload == payload {
			n++
		}
	}
	return n
}

// deadAddr is an address on 127.0.0.1 where nothing listens: a port the kernel gave and that
// was closed again, so connections to it are refused.
func deadAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	_ = ln.Close()
	return a
}
