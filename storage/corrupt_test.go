package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/pimqtt/pimqtt/broker"
)

// damage is a way a store file goes bad.
type damage struct {
	name string
	do   func(t *testing.T, path string, data []byte) []byte
}

// pageOf returns the page id of the root of bucket in a closed store file,
// and the id of the free-list page.
func pagesOf(t *testing.T, path string, bucket []byte) (root, freelist uint64) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(func(tx *bolt.Tx) error {
		root = uint64(tx.Bucket(bucket).Root())
		return nil
	})
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The meta page with the higher transaction id is the current one:
	// page header (16 bytes), magic, version, page size, flags (4 each),
	// root bucket (16), then the free list's page id; the txid is 16
	// bytes further.
	var txid uint64
	for _, off := range []int{0, pageSize} {
		m := data[off+16:]
		if id := binary.LittleEndian.Uint64(m[48:]); id >= txid {
			txid, freelist = id, binary.LittleEndian.Uint64(m[32:])
		}
	}
	if root == 0 || freelist == 0 {
		t.Fatalf("no page to damage: root %d, free list %d", root, freelist)
	}
	return root, freelist
}

// TestCorruptStoreAtStart: a store file that is damaged in any of these
// ways is renamed aside (PATH.corrupt-<unix time>, with a log line naming
// both), pimqtt starts with an empty store, and what it stores from then
// on survives a restart. None of them may crash the process (bbolt
// panics, and faults on pages outside the file, are contained).
func TestCorruptStoreAtStart(t *testing.T) {
	garbage := func(n int) []byte { return bytes.Repeat([]byte("not a bbolt file "), n/17+1)[:n] }
	smash := func(page uint64, from int) func(t *testing.T, path string, data []byte) []byte {
		return func(t *testing.T, path string, data []byte) []byte {
			off := int(page)*pageSize + from
			copy(data[off:off+pageSize-from], garbage(pageSize-from))
			return data
		}
	}
	for _, d := range []damage{
		{"garbage", func(*testing.T, string, []byte) []byte { return garbage(100 << 10) }},
		{"truncated", func(_ *testing.T, _ string, data []byte) []byte { return data[:len(data)/3] }},
		{"both meta pages", func(_ *testing.T, _ string, data []byte) []byte {
			copy(data, garbage(2*pageSize))
			return data
		}},
		{"free-list page", func(t *testing.T, path string, data []byte) []byte {
			_, fl := pagesOf(t, path, bucketRetained)
			return smash(fl, 0)(t, path, data)
		}},
		{"page header", func(t *testing.T, path string, data []byte) []byte {
			root, _ := pagesOf(t, path, bucketRetained)
			return smash(root, 0)(t, path, data)
		}},
		{"page body", func(t *testing.T, path string, data []byte) []byte {
			root, _ := pagesOf(t, path, bucketRetained)
			return smash(root, 16)(t, path, data)
		}},
	} {
		t.Run(d.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "pimqtt.db")
			p := startInProcess(t, Options{Path: path}, broker.Limits{})
			pub, _ := connect(t, p.addr, "pub", true, nil)
			for i := range 40 {
				publish(t, pub, fmt.Sprintf("old/%d", i), 1, true, strings.Repeat("v", 200))
			}
			pub.Disconnect(100)
			if err := p.close(); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			bad := d.do(t, path, data)
			if err := os.WriteFile(path, bad, 0o600); err != nil {
				t.Fatal(err)
			}

			p = startInProcess(t, Options{Path: path}, broker.Limits{})
			aside, _ := filepath.Glob(path + ".corrupt-*")
			if len(aside) != 1 {
				t.Fatalf("set aside: %v, want one file\n%s", aside, p.logs)
			}
			if kept, err := os.ReadFile(aside[0]); err != nil || !bytes.Equal(kept, bad) {
				t.Fatalf("the file set aside is not the damaged file (%v)", err)
			}
			if l := p.logs.String(); !strings.Contains(l, "store file damaged") || !strings.Contains(l, path) || !strings.Contains(l, aside[0]) {
				t.Fatalf("no log line naming the damaged file and where it was kept:\n%s", l)
			}
			pub, _ = connect(t, p.addr, "pub", true, nil)
			publish(t, pub, "new", 1, true, "after")
			if err := p.close(); err != nil {
				t.Fatal(err)
			}
			if got := retainedIn(t, path); len(got) != 1 || got[0] != "new" {
				t.Fatalf("retained in the new store: %q, want new", got)
			}
		})
	}
}

// TestUnreadableRecords: a record that does not decode is left out (and
// deleted) without setting the store aside: the rest is restored.
func TestUnreadableRecords(t *testing.T) {
	path := storePath(t)
	p := startInProcess(t, Options{Path: path}, broker.Limits{})
	pub, _ := connect(t, p.addr, "pub", true, nil)
	publish(t, pub, "good", 1, true, "kept")
	publish(t, pub, "bad", 1, true, "lost")
	pub.Disconnect(100)
	if err := p.close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRetained).Put([]byte("bad"), []byte{recordVersion, 0xff})
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	p = startInProcess(t, Options{Path: path}, broker.Limits{})
	got := newReceived()
	sub, _ := connect(t, p.addr, "sub", true, got.handler)
	subscribe(t, sub, "#", 1)
	if missing := got.waitAll([]string{"kept"}); len(missing) > 0 {
		t.Fatal("the readable retained message is not restored")
	}
	if !strings.Contains(p.logs.String(), "unreadable") {
		t.Fatalf("no log line about the unreadable record:\n%s", p.logs)
	}
	if err := p.close(); err != nil {
		t.Fatal(err)
	}
	if k := retainedIn(t, path); len(k) != 1 || k[0] != "good" {
		t.Fatalf("retained left: %q, want the unreadable one deleted", k)
	}
	if m, _ := filepath.Glob(path + ".corrupt-*"); len(m) > 0 {
		t.Fatalf("set aside for one bad record: %v", m)
	}
}

// FuzzDamagedStore: whatever bytes of a store file are damaged, Open
// returns (setting the file aside or reading what it can) and never
// crashes the process, whose other goroutines bbolt could take down.
func FuzzDamagedStore(f *testing.F) {
	template := filepath.Join(f.TempDir(), "template.db")
	st, err := Open(Options{Path: template, Logger: discard()})
	if err != nil {
		f.Fatal(err)
	}
	var ops []op
	for i := range 30 {
		ops = append(ops,
			put(bRetained, fmt.Sprintf("t/%d", i), encodeMessage(message{Topic: fmt.Sprintf("t/%d", i), Payload: bytes.Repeat([]byte{'v'}, 100)})),
			put(bSessions, fmt.Sprintf("c%d", i), encodeSession(session{ProtocolVersion: 4})),
			put(bSubscriptions, subscriptionKey(fmt.Sprintf("c%d", i), "a/#"), encodeSubscription(subscription{QoS: 1})))
	}
	c := &change{ops: ops, done: make(chan error, 1)}
	st.w.enqueue(c)
	if err := c.wait(waitTimeout); err != nil {
		f.Fatal(err)
	}
	if err := st.Close(); err != nil {
		f.Fatal(err)
	}
	good, err := os.ReadFile(template)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(uint32(0), []byte("garbage"))
	f.Add(uint32(2*pageSize), bytes.Repeat([]byte{0xff}, 64))
	f.Add(uint32(3*pageSize+16), []byte{0, 0, 0, 0, 0, 0, 0, 0})
	f.Add(uint32(5*pageSize+20), []byte{0x7f})
	f.Fuzz(func(t *testing.T, at uint32, patch []byte) {
		data := bytes.Clone(good)
		if len(data) > 0 {
			off := int(at) % len(data)
			copy(data[off:], patch)
		}
		path := filepath.Join(t.TempDir(), "pimqtt.db")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		st, err := Open(Options{Path: path, Logger: discard()})
		if err != nil {
			t.Fatal(err)
		}
		caps := mqtt.NewDefaultServerCapabilities()
		st.SetOpts(st.log, &mqtt.HookOptions{Capabilities: caps})
		_, _ = st.StoredClients()
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
