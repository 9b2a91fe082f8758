package storage

import (
	"os"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/pimqtt/pimqtt/broker"
)

// keys lists the keys of a bucket of a closed store file.
func keys(t *testing.T, path string, bucket []byte) []string {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var out []string
	if err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, _ []byte) error {
			out = append(out, string(k))
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestExpiredSessionsDoNotComeBack: a session that expires while pimqtt
// runs is deleted from the store with its subscription and queued
// messages; one that expires while pimqtt is stopped is not restored.
func TestExpiredSessionsDoNotComeBack(t *testing.T) {
	t.Parallel()
	t.Run("while running", func(t *testing.T) {
		t.Parallel()
		path := storePath(t)
		p := startBrokerProc(t, path, expiryEnv+"=1s")
		c, _ := connect(t, p.addr, "brief", false, nil)
		subscribe(t, c, "a/#", 1)
		c.Disconnect(100)
		pub, _ := connect(t, p.addr, "pub", true, nil)
		publish(t, pub, "a/b", 1, false, "queued")
		keep, _ := connect(t, p.addr, "keeper", false, nil)
		subscribe(t, keep, "x", 1)
		// Mochi checks expiry every second: "keeper" stays connected, and
		// "brief" is gone once a fresh connect finds no session.
		time.Sleep(3 * time.Second) // the expiry is what is tested
		p.stop(t)
		if got := keys(t, path, bucketSessions); len(got) != 1 || got[0] != "keeper" {
			t.Fatalf("sessions in the store: %q, want only keeper", got)
		}
		if got := keys(t, path, bucketSubscriptions); len(got) != 1 {
			t.Fatalf("subscriptions in the store: %q, want keeper's only", got)
		}
		for _, b := range [][]byte{bucketInflight, bucketDeliveries, bucketMessages} {
			if got := keys(t, path, b); len(got) != 0 {
				t.Fatalf("%s left in the store: %q", b, got)
			}
		}
	})
	t.Run("while stopped", func(t *testing.T) {
		t.Parallel()
		path := storePath(t)
		p := startBrokerProc(t, path, expiryEnv+"=2s")
		c, _ := connect(t, p.addr, "brief", false, nil)
		subscribe(t, c, "a/#", 1)
		c.Disconnect(100)
		p.kill(t)
		time.Sleep(3 * time.Second) // the expiry is what is tested
		p = startBrokerProc(t, path, expiryEnv+"=2s")
		if _, present := connect(t, p.addr, "brief", false, nil); present {
			t.Fatal("a session that expired while pimqtt was stopped came back")
		}
		p.stop(t)
	})
}

// TestExpiryRunsOnAcrossRestarts: a session's expiry counts from when it
// disconnected, not from the restart (Mochi alone restarts it at every
// boot, so that a Pi rebooting daily never expires anything).
func TestExpiryRunsOnAcrossRestarts(t *testing.T) {
	t.Parallel()
	const expiry = 8 * time.Second
	path := storePath(t)
	p := startBrokerProc(t, path, expiryEnv+"="+expiry.String())
	c, _ := connect(t, p.addr, "roamer", false, nil)
	subscribe(t, c, "a/#", 1)
	c.Disconnect(100)
	disconnected := time.Now()
	p.kill(t)
	time.Sleep(time.Until(disconnected.Add(5 * time.Second))) // the expiry is what is tested
	p = startBrokerProc(t, path, expiryEnv+"="+expiry.String())
	// Counted from the disconnect, the session is gone by +10 s (Mochi
	// works in whole seconds and checks every second); counted from the
	// restart it would last until at least +13 s.
	time.Sleep(time.Until(disconnected.Add(12 * time.Second)))
	if _, present := connect(t, p.addr, "roamer", false, nil); present {
		t.Fatal("the session's expiry started again at the restart")
	}
	p.stop(t)
}

// TestRestoreExpiry: what StoredClients hands Mochi, with a clock that
// stands still: the time left of each session's expiry (MQTT 3.1.1 ones
// under the broker's maximum), counted from its disconnect time, or from
// the file's last write for a session that was connected when pimqtt
// stopped; expired sessions are deleted, with their subscriptions.
func TestRestoreExpiry(t *testing.T) {
	path := storePath(t)
	now := time.Unix(1_700_000_000, 0)
	mtime := now.Add(-50 * time.Second)
	sessions := map[string]session{
		"v3-away":      {ProtocolVersion: 4, Disconnected: now.Add(-100 * time.Second).Unix()},
		"v3-gone":      {ProtocolVersion: 4, Disconnected: now.Add(-400 * time.Second).Unix()},
		"v5-away":      {ProtocolVersion: 5, Expiry: 120, ExpiryFlag: true, Disconnected: now.Add(-20 * time.Second).Unix()},
		"v5-gone":      {ProtocolVersion: 5, Expiry: 120, ExpiryFlag: true, Disconnected: now.Add(-121 * time.Second).Unix()},
		"v5-over-max":  {ProtocolVersion: 5, Expiry: 100000, ExpiryFlag: true, Disconnected: now.Add(-10 * time.Second).Unix()},
		"v3-connected": {ProtocolVersion: 4},
	}
	want := map[string]uint32{"v3-away": 200, "v5-away": 100, "v5-over-max": 290, "v3-connected": 250}

	st, err := Open(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	var ops []op
	for id, rec := range sessions {
		ops = append(ops, put(bSessions, id, encodeSession(rec)))
		ops = append(ops, put(bSubscriptions, subscriptionKey(id, "t/#"), encodeSubscription(subscription{QoS: 1})))
	}
	c := &change{ops: ops, done: make(chan error, 1)}
	st.w.enqueue(c)
	if err := c.wait(waitTimeout); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}

	st, err = Open(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	st.now = func() time.Time { return now }
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumSessionExpiryInterval = 300
	st.SetOpts(st.log, &mqtt.HookOptions{Capabilities: caps})
	clients, err := st.StoredClients()
	if err != nil {
		t.Fatal(err)
	}
	subs, _ := st.StoredSubscriptions()
	got := map[string]uint32{}
	for _, c := range clients {
		if c.ProtocolVersion != 5 || !c.Properties.SessionExpiryIntervalFlag {
			t.Errorf("%s handed over as version %d, expiry flag %v: Mochi would not apply the time left", c.ID, c.ProtocolVersion, c.Properties.SessionExpiryIntervalFlag)
		}
		got[c.ID] = c.Properties.SessionExpiryInterval
	}
	for id, left := range want {
		if got[id] != left {
			t.Errorf("%s: %d s left, want %d", id, got[id], left)
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			t.Errorf("%s restored, want it expired", id)
		}
	}
	if len(subs) != len(want) {
		t.Errorf("%d subscriptions restored, want %d", len(subs), len(want))
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if got := keys(t, path, bucketSessions); len(got) != len(want) {
		t.Errorf("sessions left in the store: %q", got)
	}
	if got := keys(t, path, bucketSubscriptions); len(got) != len(want) {
		t.Errorf("subscriptions left in the store: %q", got)
	}
}

// TestQueueExpiry: with QueueExpiry set, a message queued for a
// disconnected session is dropped once older, from the store and from
// the broker's memory; newer ones are delivered. (Without it, queued
// messages last as long as the session: the other tests.)
func TestQueueExpiry(t *testing.T) {
	t.Parallel()
	path := storePath(t)
	p := startInProcess(t, Options{Path: path, QueueExpiry: 2 * time.Second}, broker.Limits{})
	sub, _ := connect(t, p.addr, "phone", false, nil)
	subscribe(t, sub, "news/#", 1)
	sub.Disconnect(100)
	pub, _ := connect(t, p.addr, "pub", true, nil)
	publish(t, pub, "news/a", 1, false, "stale")
	time.Sleep(3500 * time.Millisecond) // the expiry is what is tested
	publish(t, pub, "news/a", 1, false, "fresh")
	got := newReceived()
	if _, present := connect(t, p.addr, "phone", false, got.handler); !present {
		t.Fatal("session gone: QueueExpiry must drop messages, not sessions")
	}
	if missing := got.waitAll([]string{"fresh"}); len(missing) > 0 {
		t.Fatal("the fresh message is not delivered")
	}
	if n := got.has("stale"); n != 0 {
		t.Fatal("a message older than QueueExpiry was delivered")
	}
	if err := p.close(); err != nil {
		t.Fatal(err)
	}
	if k := keys(t, path, bucketMessages); len(k) > 0 {
		t.Fatalf("messages left in the store: %d", len(k))
	}
}
