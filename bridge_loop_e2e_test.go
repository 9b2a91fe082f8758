package main

import (
	"net"
	"strconv"
	"testing"

	"github.com/pimqtt/pimqtt/config"
	"github.com/pimqtt/pimqtt/mqtttest"
)

// TestTwoPisBridgedNoLoop: two Pis bridge shared/# both ways to one mosquitto. A message
// published on Pi A reaches the remote and Pi B once and comes back to neither: Pi B's broker
// never hands its bridge what that bridge brought in, and each bridge drops the remote's echo
// of what it sent. Were either broken, the message would circle A → remote → B → remote → A
// for ever; a copy would pass each Pi before a marker that Pi's peer published afterwards
// (the same bridge connections carry both, in order).
func TestTwoPisBridgedNoLoop(t *testing.T) {
	t.Parallel()
	remote := mqtttest.StartMosquitto(t, mqtttest.MosquittoConfig{Extra: []string{"allow_anonymous true"}})
	remoteURL := "tcp://127.0.0.1:" + strconv.Itoa(remote.Port)
	const stateTopic = "$SYS/broker/connection/cluster/state"
	pis := make([]string, 2)
	for i, id := range []string{"pi-a", "pi-b"} {
		cfg := testConfig(passwordFile(t, "phone", "secret"))
		cfg.Device.ClientID = id
		cfg.Bridges = []config.Bridge{{Name: "cluster", Addresses: []string{remoteURL}, Topics: []string{"shared/# both 1"}, ClientID: id + ".cluster"}}
		m, _ := startMain(t, cfg)
		host, port := addr(t, m, "tcp")
		pis[i] = "tcp://" + net.JoinHostPort(host, port)
		newSubscriber(t, pis[i], "phone", "secret", stateTopic).waitFor(t, stateTopic, "1")
	}
	onA := newSubscriber(t, pis[0], "phone", "secret", "shared/#")
	onB := newSubscriber(t, pis[1], "phone", "secret", "shared/#")
	onRemote := newSubscriber(t, remoteURL, "", "", "shared/#")

	publish(t, pis[0], "phone", "secret", "shared/x", []byte("hello"))
	onB.waitFor(t, "shared/x", "hello")
	// A loop would bring hello back to A ahead of this marker from B.
	publish(t, pis[1], "phone", "secret", "shared/marker", []byte("from-b"))
	if got := count(until(t, onA, "shared/marker", "from-b"), "shared/x", "hello"); got != 1 {
		t.Errorf("Pi A saw hello %d times, want 1", got)
	}
	// And back to B ahead of a marker from A.
	publish(t, pis[0], "phone", "secret", "shared/marker", []byte("from-a"))
	if got := count(until(t, onB, "shared/marker", "from-a"), "shared/x", "hello"); got != 0 {
		t.Errorf("Pi B saw hello %d more times, want none", got)
	}
	seen := until(t, onRemote, "shared/marker", "from-a")
	if got := count(seen, "shared/x", "hello"); got != 1 {
		t.Errorf("the remote saw hello %d times, want 1: %v", got, seen)
	}
}
