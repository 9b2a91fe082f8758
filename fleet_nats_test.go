package main

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/pimqtt/pimqtt/config"
	"github.com/pimqtt/pimqtt/mqtttest"
)

// fleetFailoverBound is how long after the SIGKILL of its node every device
// must obey a command again. nats-server 2.9 itself needs 5-16 s before it
// answers CONNECT and SUBSCRIBE again when the killed node led JetStream
// (see mqtttest/nats.go), once 37 s while other test packages loaded this
// 2-core machine; the device's backoff comes on top. The figures are
// reported; the bound only catches a device that never comes back.
const fleetFailoverBound = 60 * time.Second

// fleetCommandInterval is how often the test repeats a command to a device
// that has not obeyed yet: commands are QoS 0 and a device that is between
// brokers misses them, as a real one would.
const fleetCommandInterval = 250 * time.Millisecond

// fleetDevice is one device-only pimqtt of the fleet.
type fleetDevice struct {
	n         int
	m         *Main
	logs      *mqtttest.SyncBuffer
	cmdTopic  string
	home      int // index of the node it prefers
	connected int // how many "connected to broker" lines its log had before the kill
}

// TestFleetFailoverNATS runs twenty device-only pimqtt devices against a
// three-node nats-server cluster, device N preferring node N%3 (its brokers
// are the three nodes rotated). A command published on any node reaches the
// right device and no other, and its state comes back on any node. Then the
// node seven devices are on is killed with SIGKILL: each of them must fail
// over to another node and obey a fresh command within fleetFailoverBound,
// without being restarted; the failover times are logged.
func TestFleetFailoverNATS(t *testing.T) {
	cluster := mqtttest.StartNATSCluster(t, 3)
	urls := cluster.URLs()
	const count = 20
	start := time.Now()

	status := newSubscriber(t, urls[0], "", "", "fleet/+/status")
	fleet := make([]*fleetDevice, count)
	// Closed together: each says goodbye (a retained QoS 1 publish) and
	// waits up to 3 s for its PUBACK, which a cluster short of a node can
	// take; one after the other that added 20 s to the test.
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, d := range fleet {
			if d == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := d.m.Close(); err != nil {
					t.Errorf("device %d: Close: %v", d.n, err)
				}
			}()
		}
		wg.Wait()
		if t.Failed() {
			var refused []int
			for _, d := range fleet {
				if d != nil {
					t.Logf("device %d log:\n%s", d.n, d.logs)
					if strings.Contains(d.logs.String(), "subscribe failed") {
						refused = append(refused, d.n)
					}
				}
			}
			// The failure seen most: nats-server answers SUBACK 0x80 when
			// a QoS 1 subscription's JetStream consumer is not created
			// within 4 s (a burst of subscriptions, or during an election),
			// and a device that stays connected without its command topic
			// never obeys.
			if len(refused) > 0 {
				t.Logf("devices whose SUBSCRIBE was refused (see their logs): %v", refused)
			}
		}
	})
	for n := range count {
		cfg := testConfig("")
		cfg.Mode = config.ModeDevice
		cfg.Broker.Listeners = nil
		cfg.HTTP.Listen = nil
		home := n % len(urls)
		cfg.Device.Brokers = append(slices.Clone(urls[home:]), urls[:home]...)
		cfg.Device.ClientID = fmt.Sprintf("fleet-d%d", n)
		cfg.Device.Topic = fmt.Sprintf("fleet/d%d/led", n)
		cfg.Device.StatusTopic = fmt.Sprintf("fleet/d%d/status", n)
		cfg.Device.Prefix = fmt.Sprintf("fleet/d%d", n)
		cfg.Device.TelemetryInterval = 0
		m, logs := startFleetMain(t, cfg)
		fleet[n] = &fleetDevice{n: n, m: m, logs: logs, cmdTopic: cfg.Device.Topic, home: home}
	}
	var online []string
	for _, d := range fleet {
		online = append(online, fmt.Sprintf("fleet/d%d/status", d.n))
	}
	waitAll(t, status, online, `{"status": "On"}`)
	t.Logf("%d devices up in %v", count, time.Since(start).Round(time.Millisecond))

	// (a) A command published on node K reaches its device, whichever
	// node that device is on, and no other device; the state comes back on
	// node K+1.
	// QoS 0 watchers: nats-server 2.9 serves a QoS 1 subscription through a
	// JetStream consumer, which once lost a message after the node leading
	// it was killed; a QoS 0 one is a plain NATS subscription.
	states := make([]*subscriber, len(urls))
	for k, u := range urls {
		states[k] = newSubscriberQoS(t, u, "", "", 0, "fleet/+/led/state")
	}
	want := make([]int, count)
	checkLines := func(when string) {
		t.Helper()
		for _, d := range fleet {
			if got := lineValue(t, d.m); got != want[d.n] {
				t.Fatalf("%s: device %d's line is %d, want %d (lines should be %v)", when, d.n, got, want[d.n], want)
			}
		}
	}
	checkLines("at start")
	for _, d := range fleet {
		k := (d.home + 1) % len(urls)
		publish(t, urls[k], "", "", d.cmdTopic, []byte("1"))
		states[(k+1)%len(urls)].waitFor(t, d.cmdTopic+"/state", "1")
		want[d.n] = 1
		checkLines(fmt.Sprintf("after the command to device %d on %s", d.n, cluster.Nodes[k].Name))
	}

	// (b) Kill the node of seven devices (nodes 0 and 1 have seven, node 2
	// six); the JetStream meta leader if it is one of them: the worst case.
	victim := 0
	if leader := slices.Index(cluster.Nodes, cluster.MetaLeader(t)); leader == 0 || leader == 1 {
		victim = leader
	}
	var survivors []int
	for k := range urls {
		if k != victim {
			survivors = append(survivors, k)
		}
	}
	// Publishers on the survivors connect now: a CONNECT during the
	// failover would wait for JetStream like the devices do.
	pubs := make([]paho.Client, len(survivors))
	for i, k := range survivors {
		pubs[i] = fleetPublisher(t, urls[k], fmt.Sprintf("fleet-pub-%d", k))
	}
	var moved []*fleetDevice
	for _, d := range fleet {
		if d.home == victim {
			moved = append(moved, d)
			d.connected = strings.Count(d.logs.String(), "connected to broker")
		}
	}

	wasLeader := cluster.MetaLeader(t) == cluster.Nodes[victim]
	killed := time.Now()
	cluster.Nodes[victim].Kill(t)
	t.Logf("killed %s (%d devices on it; JetStream meta leader: %v)", cluster.Nodes[victim].Name, len(moved), wasLeader)

	took := make([]time.Duration, len(moved))
	errs := make([]error, len(moved))
	var wg sync.WaitGroup
	for i, d := range moved {
		wg.Add(1)
		go func() {
			defer wg.Done()
			took[i], errs[i] = d.obeyAfter(killed, "the kill", pubs[i%len(pubs)], 0, "0")
		}()
	}
	wg.Wait()
	for i, d := range moved {
		if errs[i] != nil {
			t.Errorf("device %d: %v", d.n, errs[i])
			continue
		}
		want[d.n] = 0
	}
	if t.Failed() {
		t.FailNow()
	}
	sorted := slices.Clone(took)
	slices.Sort(sorted)
	t.Logf("failover: %d devices off %s obeyed a fresh command after min %v, median %v, max %v (each: %v)",
		len(moved), cluster.Nodes[victim].Name, sorted[0].Round(10*time.Millisecond),
		sorted[len(sorted)/2].Round(10*time.Millisecond), sorted[len(sorted)-1].Round(10*time.Millisecond), roundAll(took))

	// Their state comes back on the survivors, only the moved devices'
	// lines changed, and each moved device connected again (same *Main: no
	// restart) to a node that is not the dead one.
	var movedStates []string
	for _, d := range moved {
		movedStates = append(movedStates, d.cmdTopic+"/state")
	}
	for _, k := range survivors {
		waitAll(t, states[k], movedStates, "0")
	}
	for _, d := range moved {
		if n := strings.Count(d.logs.String(), "connected to broker"); n <= d.connected {
			t.Errorf("device %d obeyed but its log has no new \"connected to broker\" line", d.n)
		}
	}
	checkLines("after the failover")
	// The devices that were not on the killed node still obey, QoS 1
	// commands too (those reach them through a JetStream consumer, whose
	// replicas lost one node).
	for _, d := range fleet {
		if d.home == victim {
			continue
		}
		if _, err := d.obeyAfter(time.Now(), "the first command", pubs[d.n%len(pubs)], 1, "0"); err != nil {
			t.Errorf("device %d (on a surviving node): %v", d.n, err)
		}
		want[d.n] = 0
	}
	checkLines("at the end")
	t.Logf("whole test %v", time.Since(start).Round(time.Millisecond))
}

// startFleetMain is startMain without its cleanup: the test closes the
// whole fleet at once.
func startFleetMain(t testing.TB, cfg config.Config) (*Main, *mqtttest.SyncBuffer) {
	t.Helper()
	logs := &mqtttest.SyncBuffer{}
	m := &Main{Config: cfg, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := m.Run(ctx); err != nil {
		t.Fatalf("Run: %v\nlog:\n%s", err, logs)
	}
	return m, logs
}

// obeyAfter publishes payload to the device's command topic through pub
// with qos every fleetCommandInterval until the device's line has that
// level, and returns how long after since that took; an error after
// fleetFailoverBound (what names since for it).
func (d *fleetDevice) obeyAfter(since time.Time, what string, pub paho.Client, qos byte, payload string) (time.Duration, error) {
	level := 0
	if payload == "1" {
		level = 1
	}
	tick := time.NewTicker(fleetCommandInterval)
	defer tick.Stop()
	sent := 0
	for {
		v, err := d.m.outputs["led"].Value()
		if err != nil {
			return 0, fmt.Errorf("line value: %w", err)
		}
		if v == level {
			return time.Since(since), nil
		}
		if time.Since(since) > fleetFailoverBound {
			// The test prints every device's log when it failed.
			return 0, fmt.Errorf("line still %d %v after %s (%d commands sent)", v, fleetFailoverBound, what, sent)
		}
		// QoS 0 is delivered without JetStream, so the command reaches the
		// device the moment it is subscribed again. The token is not
		// waited for: errors (none expected, pub's node is alive) show as a
		// device that never obeys.
		pub.Publish(d.cmdTopic, qos, false, payload)
		sent++
		<-tick.C
	}
}

// fleetPublisher connects a paho client that publishes the test's commands
// and stays connected; it reconnects by itself if its node drops it.
func fleetPublisher(t testing.TB, url, id string) paho.Client {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker(url).SetClientID(id).
		SetProtocolVersion(4).SetAutoReconnect(true).SetConnectTimeout(5 * time.Second)
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
		t.Fatalf("publisher connect to %s: %v", url, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// waitAll waits until s has received payload on every one of topics, in
// any order, failing the test after testTimeout.
func waitAll(t testing.TB, s *subscriber, topics []string, payload string) {
	t.Helper()
	missing := make(map[string]bool, len(topics))
	for _, tp := range topics {
		missing[tp] = true
	}
	deadline := time.After(testTimeout)
	for len(missing) > 0 {
		select {
		case m := <-s.msgs:
			if m.payload == payload {
				delete(missing, m.topic)
			}
		case <-deadline:
			t.Fatalf("no %q within %v on %d topics: %v", payload, testTimeout, len(missing), slices.Sorted(maps.Keys(missing)))
		}
	}
}

// roundAll rounds each duration to 10 ms, for the log.
func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(10 * time.Millisecond)
	}
	return out
}
