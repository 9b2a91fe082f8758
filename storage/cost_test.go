package storage

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pimqtt/pimqtt/broker"
)

// writeBytes is what this process has had written to storage so far
// (/proc/self/io write_bytes), or -1 where there is no such file.
func writeBytes(t *testing.T) int64 {
	t.Helper()
	if runtime.GOOS != "linux" {
		return -1
	}
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "write_bytes: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no write_bytes in /proc/self/io")
	return 0
}

// TestIdleWritesNothing: with persistent sessions, subscriptions and
// retained messages stored and clients connected (pinging every second),
// the store writes nothing while nothing changes: no transaction, the
// file's size and time unchanged, and (Linux) no byte written by the
// process. The 60 s measurement of the whole pimqtt is in the README.
func TestIdleWritesNothing(t *testing.T) {
	path := storePath(t)
	p := startInProcess(t, Options{Path: path, FlushDelay: 50 * time.Millisecond}, broker.Limits{})
	phone, _ := connect(t, p.addr, "phone", false, nil)
	subscribe(t, phone, "home/#", 1)
	pub, _ := connect(t, p.addr, "sensor", true, nil)
	publish(t, pub, "home/door/state", 1, true, "open")
	publish(t, pub, "home/door/event", 1, false, "opened")
	away, _ := connect(t, p.addr, "away", false, nil)
	subscribe(t, away, "home/#", 2)
	away.Disconnect(100)
	waitFor(t, "the disconnect seen and everything written", func() bool {
		p.st.mu.Lock()
		defer p.st.mu.Unlock()
		sess := p.st.sessions["away"]
		return sess != nil && !sess.connected && p.st.Stats().Pending == 0
	})

	before := p.st.Stats()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	written := writeBytes(t)
	time.Sleep(3 * time.Second) // idling is what is measured
	after := p.st.Stats()
	fi2, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if after.Commits != before.Commits || after.Bytes != before.Bytes {
		t.Errorf("idle store wrote %d transactions, %d bytes", after.Commits-before.Commits, after.Bytes-before.Bytes)
	}
	if fi.Size() != fi2.Size() || !fi.ModTime().Equal(fi2.ModTime()) {
		t.Errorf("idle store file changed: size %d → %d, modified %v → %v", fi.Size(), fi2.Size(), fi.ModTime(), fi2.ModTime())
	}
	if w := writeBytes(t); w != written {
		t.Errorf("the process wrote %d bytes to storage while idle", w-written)
	}
}

// TestWriteCost measures what 1,000 QoS 1 messages cost the store (the
// figures go to the README): from four publishers at once, and one
// message at a time, to a persistent session; and checks that messages
// for clean sessions only cost nothing.
func TestWriteCost(t *testing.T) {
	const n = 1000
	run := func(t *testing.T, publishers int, persistent bool) Stats {
		p := startInProcess(t, Options{Path: storePath(t)}, broker.Limits{})
		got := newReceived()
		sub, _ := connect(t, p.addr, "sub", !persistent, got.handler)
		subscribe(t, sub, "cost/#", 1)
		waitFor(t, "the subscription written", func() bool { return p.st.Stats().Pending == 0 })
		before := p.st.Stats()
		var want []string
		var wg sync.WaitGroup
		for k := range publishers {
			c, _ := connect(t, p.addr, fmt.Sprintf("pub%d", k), true, nil)
			var mine []string
			for i := range n / publishers {
				mine = append(mine, fmt.Sprintf("%d-%d", k, i))
			}
			want = append(want, mine...)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, m := range mine {
					if tok := c.Publish("cost/x", 1, false, m); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
						t.Errorf("publish: %v", tok.Error())
						return
					}
				}
			}()
		}
		wg.Wait()
		if missing := got.waitAll(want); len(missing) > 0 {
			t.Fatalf("%d messages not delivered", len(missing))
		}
		if err := p.close(); err != nil {
			t.Fatal(err)
		}
		after := p.st.Stats()
		return Stats{Commits: after.Commits - before.Commits, Syncs: after.Syncs - before.Syncs, Bytes: after.Bytes - before.Bytes}
	}
	t.Run("clean sessions only", func(t *testing.T) {
		if st := run(t, 4, false); st.Commits != 0 {
			t.Fatalf("messages to clean sessions only wrote %d transactions", st.Commits)
		}
	})
	for _, publishers := range []int{4, 1} {
		t.Run(fmt.Sprintf("%d publishers to a persistent session", publishers), func(t *testing.T) {
			st := run(t, publishers, true)
			t.Logf("per %d QoS 1 messages: %d transactions, %d fdatasync, %d KiB written", n, st.Commits, st.Syncs, st.Bytes>>10)
			// At most: each message stored before its PUBACK, and its
			// acknowledgement by the subscriber in a transaction of its own.
			if st.Commits > 2*n+5 {
				t.Fatalf("%d transactions for %d messages", st.Commits, n)
			}
		})
	}
}
