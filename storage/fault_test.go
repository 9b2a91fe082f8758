package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pimqtt/pimqtt/broker"
)

// faultOptions retry fast, so that the tests see writing resume at once.
func faultOptions(path string) Options {
	return Options{Path: path, RetryInterval: 100 * time.Millisecond}
}

// retainedIn lists the retained topics of a closed store file.
func retainedIn(t *testing.T, path string) []string {
	t.Helper()
	k := keys(t, path, bucketRetained)
	slices.Sort(k)
	return k
}

// noneSetAside fails if a store file was renamed aside in dir.
func noneSetAside(t *testing.T, dir string) {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "*.corrupt-*"))
	if len(m) > 0 {
		t.Fatalf("store set aside as damaged: %v", m)
	}
}

// TestUnwritableDataDirectory: with a data directory that cannot be
// written, pimqtt logs it, restores what the store holds (read-only), and
// serves from memory; once the directory is writable again, what changed
// meanwhile is written. As root on Linux the directory is a tmpfs
// remounted read-only; otherwise file and directory lose their write
// permission.
func TestUnwritableDataDirectory(t *testing.T) {
	dir := t.TempDir()
	if canMount() {
		mountTmpfs(t, dir, "4m")
	}
	path := filepath.Join(dir, "pimqtt.db")
	p := startInProcess(t, faultOptions(path), broker.Limits{})
	pub, _ := connect(t, p.addr, "pub", true, nil)
	publish(t, pub, "before", 1, true, "stored")
	pub.Disconnect(100)
	if err := p.close(); err != nil {
		t.Fatal(err)
	}

	readOnly := func(on bool) {
		if canMount() {
			remount(t, dir, on)
			return
		}
		mode, fileMode := os.FileMode(0o500), os.FileMode(0o400)
		if !on {
			mode, fileMode = 0o755, 0o600
		}
		if err := os.Chmod(path, fileMode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
	}
	readOnly(true)
	t.Cleanup(func() { readOnly(false) })

	p = startInProcess(t, faultOptions(path), broker.Limits{})
	if !strings.Contains(p.logs.String(), "cannot open the store for writing") || !strings.Contains(p.logs.String(), path) {
		t.Fatalf("no log line naming the store that cannot be written:\n%s", p.logs)
	}
	got := newReceived()
	sub, _ := connect(t, p.addr, "sub", true, got.handler)
	subscribe(t, sub, "#", 1)
	if missing := got.waitAll([]string{"stored"}); len(missing) > 0 {
		t.Fatal("the read-only store's retained message is not served")
	}
	pub, _ = connect(t, p.addr, "pub", true, nil)
	start := time.Now()
	publish(t, pub, "during", 1, true, "in memory")
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the acknowledgement took %v: publishers wait for a disk that cannot be written", d)
	}
	if missing := got.waitAll([]string{"in memory"}); len(missing) > 0 {
		t.Fatal("the broker does not serve from memory")
	}
	if p.st.Stats().Pending == 0 {
		t.Fatal("the change is not kept for later")
	}

	readOnly(false)
	waitFor(t, "writing to resume", func() bool { st := p.st.Stats(); return st.Commits > 0 && st.Pending == 0 })
	if !strings.Contains(p.logs.String(), "saving again") {
		t.Fatalf("no log line saying the store is written again:\n%s", p.logs)
	}
	if err := p.close(); err != nil {
		t.Fatal(err)
	}
	if got := retainedIn(t, path); !slices.Equal(got, []string{"before", "during"}) {
		t.Fatalf("retained in the store: %q, want before and during", got)
	}
	noneSetAside(t, dir)
}

// TestFullDisk: when the disk fills up, a write fails, which is logged;
// publishers are still acknowledged and subscribers served from memory;
// what was stored before stays intact (also when pimqtt stops while the
// disk is full); writing resumes once there is space. As root on Linux
// the disk is a 1 MiB tmpfs filled with a file; otherwise the writer's
// commit is made to fail with ENOSPC.
func TestFullDisk(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pimqtt.db")
	var full atomic.Bool
	var fill, free func()
	inject := func(st *Store) {
		st.w.inject = func() error {
			if full.Load() {
				return &os.PathError{Op: "write", Path: path, Err: syscall.ENOSPC}
			}
			return nil
		}
	}
	if canMount() {
		mountTmpfs(t, dir, "1m")
		filler := filepath.Join(dir, "filler")
		fill = func() {
			f, err := os.Create(filler)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			block := make([]byte, 4096)
			for {
				if _, err := f.Write(block); err != nil {
					if !errors.Is(err, syscall.ENOSPC) {
						t.Fatal(err)
					}
					return
				}
			}
		}
		free = func() {
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
		}
		inject = func(*Store) {}
	} else {
		fill = func() { full.Store(true) }
		free = func() { full.Store(false) }
	}
	big := strings.Repeat("x", 64<<10)

	p := startInProcess(t, faultOptions(path), broker.Limits{})
	inject(p.st)
	pub, _ := connect(t, p.addr, "pub", true, nil)
	publish(t, pub, "a", 1, true, "stored before")
	phone, _ := connect(t, p.addr, "phone", false, nil)
	subscribe(t, phone, "big/#", 1)
	phone.Disconnect(100)

	fill()
	got := newReceived()
	watcher, _ := connect(t, p.addr, "watcher", true, got.handler)
	subscribe(t, watcher, "big/#", 1)
	for _, topic := range []string{"big/1", "big/2", "big/3"} {
		publish(t, pub, topic, 1, true, big+topic)
	}
	if missing := got.waitAll([]string{big + "big/1", big + "big/2", big + "big/3"}); len(missing) > 0 {
		t.Fatal("the broker does not serve from memory while the disk is full")
	}
	waitFor(t, "a failed write", func() bool { return p.st.Stats().Failures > 0 })
	if l := p.logs.String(); !strings.Contains(l, "cannot save changes") || !strings.Contains(l, "no space left on device") {
		t.Fatalf("no log line saying the disk is full:\n%s", l)
	}
	// Stopping while the disk is full: the last write fails too.
	if err := p.close(); err == nil || !strings.Contains(err.Error(), "could not be written") {
		t.Fatalf("closing on a full disk: %v, want the changes not written", err)
	}
	if got := retainedIn(t, path); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("retained in the store after stopping on a full disk: %q, want what was stored before", got)
	}

	p = startInProcess(t, faultOptions(path), broker.Limits{})
	inject(p.st)
	pub, _ = connect(t, p.addr, "pub", true, nil)
	publish(t, pub, "c", 1, true, big+"stored once there is space")
	waitFor(t, "a failed write", func() bool { return p.st.Stats().Failures > 0 })
	free()
	waitFor(t, "writing to resume", func() bool { st := p.st.Stats(); return st.Commits > 0 && st.Pending == 0 })
	if !strings.Contains(p.logs.String(), "saving again") {
		t.Fatalf("no log line saying the store is written again:\n%s", p.logs)
	}
	if err := p.close(); err != nil {
		t.Fatal(err)
	}
	if got := retainedIn(t, path); !slices.Equal(got, []string{"a", "c"}) {
		t.Fatalf("retained in the store: %q, want a and c", got)
	}
	if got := keys(t, path, bucketSessions); !slices.Equal(got, []string{"phone"}) {
		t.Fatalf("sessions in the store: %q, want phone", got)
	}
	noneSetAside(t, dir)
}

// TestOnlyIfWritable: persistence nobody asked for is given up, without
// creating anything, when the directory is missing or cannot be written.
func TestOnlyIfWritable(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "absent", "pimqtt.db")
	if _, err := Open(Options{Path: missing, OnlyIfWritable: true}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("missing directory: %v, want ErrUnavailable", err)
	}
	if _, err := os.Stat(filepath.Dir(missing)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the directory was created (%v)", err)
	}
	dir := t.TempDir()
	if canMount() {
		mountTmpfs(t, dir, "1m")
		remount(t, dir, true)
	} else if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Options{Path: filepath.Join(dir, "pimqtt.db"), OnlyIfWritable: true}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("read-only directory: %v, want ErrUnavailable", err)
	}
	st, err := Open(Options{Path: storePath(t), OnlyIfWritable: true})
	if err != nil {
		t.Fatalf("writable directory: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestRetryPacing: while the store cannot be written, attempts come
// after a second, then doubling up to RetryInterval (here scaled down),
// also when the file could not be opened at start: never a busy loop.
func TestRetryPacing(t *testing.T) {
	for _, notOpened := range []bool{true, false} {
		t.Run(fmt.Sprintf("file not opened at start %v", notOpened), func(t *testing.T) {
			var attempts atomic.Int64
			w := &writer{
				path: "test", log: discard(), flushDelay: time.Millisecond,
				retryMin: 20 * time.Millisecond, retryMax: 80 * time.Millisecond,
				maxQueue: 1 << 20, maxPending: 1 << 20,
				open: func() (*bolt.DB, error) { attempts.Add(1); return nil, syscall.EROFS },
				inject: func() error {
					attempts.Add(1)
					return syscall.ENOSPC
				},
			}
			if notOpened {
				w.inject = nil // open fails
			}
			newWriter(w, nil)
			defer w.close(time.Second)
			w.enqueue(&change{ops: []op{put(bRetained, "t", []byte("v"))}})
			time.Sleep(500 * time.Millisecond) // the pacing over time is what is tested
			// 20, 40, 80, 80, ... ms: about 7 attempts in half a second.
			if n := attempts.Load(); n < 3 || n > 12 {
				t.Fatalf("%d attempts in 500 ms, want about 7", n)
			}
		})
	}
}
