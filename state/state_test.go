package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// waitTimeout bounds every wait; nothing here should take more than milliseconds.
const waitTimeout = 10 * time.Second

// logRecorder keeps every record and lets a test wait, without sleeping, for one to appear.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
	ch   chan struct{} // closed and replaced on every record
}

func newLogger(t *testing.T) (*slog.Logger, *logRecorder) {
	r := &logRecorder{ch: make(chan struct{})}
	t.Cleanup(func() {
		if t.Failed() {
			for _, rec := range r.all() {
				t.Log(rec.Level, rec.Message)
			}
		}
	})
	return slog.New(r), r
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec.Clone())
	close(r.ch)
	r.ch = make(chan struct{})
	return nil
}

func (r *logRecorder) all() []slog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]slog.Record(nil), r.recs...)
}

// count returns how many records at level have a message starting with prefix.
func (r *logRecorder) count(level slog.Level, prefix string) int {
	n := 0
	for _, rec := range r.all() {
		if rec.Level == level && strings.HasPrefix(rec.Message, prefix) {
			n++
		}
	}
	return n
}

// waitCount waits until count(level, prefix) reaches n.
func (r *logRecorder) waitCount(t *testing.T, level slog.Level, prefix string, n int) {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ch := r.ch
		r.mu.Unlock()
		if r.count(level, prefix) >= n {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %d %v log(s) %q", n, level, prefix)
		}
	}
}

func mustOpen(t *testing.T, path string, log *slog.Logger) *File {
	t.Helper()
	f, err := Open(path, log)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

func mustClose(t *testing.T, f *File) {
	t.Helper()
	if err := f.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// tempFiles lists the temporary files writes leave when they do not clean up.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+tempInfix+"*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRoundTrip(t *testing.T) {
	cases := []struct {
		name string
		sets []struct {
			name  string
			value int
		}
		want     map[string]int
		wantFile string
	}{
		{"empty", nil, map[string]int{}, ""},
		{"one", []struct {
			name  string
			value int
		}{{"led", 1}}, map[string]int{"led": 1}, `{"version":1,"outputs":{"led":1}}` + "\n"},
		{"overwrite and several", []struct {
			name  string
			value int
		}{{"relay1", 1}, {"led", 1}, {"relay1", 0}}, map[string]int{"led": 1, "relay1": 0},
			`{"version":1,"outputs":{"led":1,"relay1":0}}` + "\n"},
		{"non-zero is 1", []struct {
			name  string
			value int
		}{{"led", 255}, {"x", -1}}, map[string]int{"led": 1, "x": 1},
			`{"version":1,"outputs":{"led":1,"x":1}}` + "\n"},
		{"odd names", []struct {
			name  string
			value int
		}{{`quo"te`, 1}, {"ünï", 0}, {"", 1}}, map[string]int{`quo"te`: 1, "ünï": 0, "": 1}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			log, logs := newLogger(t)
			f := mustOpen(t, path, log)
			for _, s := range tc.sets {
				f.Set(s.name, s.value)
			}
			for name, v := range tc.want {
				if got, ok := f.Get(name); !ok || got != v {
					t.Errorf("before Close: Get(%q) = %d, %v; want %d", name, got, ok, v)
				}
			}
			mustClose(t, f)
			if len(tc.sets) == 0 {
				if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("nothing set, yet a file was written (stat: %v)", err)
				}
			} else {
				st, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				if st.Mode().Perm() != 0o644 {
					t.Errorf("mode %v, want 0644", st.Mode().Perm())
				}
			}
			if tc.wantFile != "" {
				if got := readFile(t, path); got != tc.wantFile {
					t.Errorf("file = %q, want %q", got, tc.wantFile)
				}
			}

			g := mustOpen(t, path, log)
			for name, v := range tc.want {
				if got, ok := g.Get(name); !ok || got != v {
					t.Errorf("after reopen: Get(%q) = %d, %v; want %d", name, got, ok, v)
				}
			}
			if _, ok := g.Get("never-set"); ok {
				t.Error("Get of an unknown name reported ok")
			}
			mustClose(t, g)
			if n := logs.count(slog.LevelWarn, ""); n != 0 {
				t.Errorf("%d warnings for a clean round trip", n)
			}
		})
	}
}

func TestBadFiles(t *testing.T) {
	cases := []struct {
		name    string
		content string
		good    bool
		want    map[string]int
	}{
		{"not JSON", "garbage", false, nil},
		{"empty file", "", false, nil},
		{"truncated", `{"version":1,"outputs":{"led":`, false, nil},
		{"wrong version", `{"version":2,"outputs":{"led":1}}`, false, nil},
		{"no version", `{"outputs":{"led":1}}`, false, nil},
		{"level out of range", `{"version":1,"outputs":{"led":2}}`, false, nil},
		{"level not a number", `{"version":1,"outputs":{"led":"1"}}`, false, nil},
		{"trailing object", `{"version":1,"outputs":{}}{"version":1}`, false, nil},
		{"array", `[1,2]`, false, nil},
		{"NUL bytes", "\x00\x00\x00\x00", false, nil},
		{"unknown members ignored", `{"version":1,"outputs":{"led":1},"future":true}`, true, map[string]int{"led": 1}},
		{"null outputs", `{"version":1,"outputs":null}`, true, map[string]int{}},
		{"whitespace around", "\n {\"version\": 1, \"outputs\": {\"a\": 0}}\n\n", true, map[string]int{"a": 0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "state.json")
			if err := os.WriteFile(path, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			log, logs := newLogger(t)
			f := mustOpen(t, path, log)
			aside, _ := filepath.Glob(path + ".corrupt-*")
			if tc.good {
				if len(aside) != 0 || logs.count(slog.LevelWarn, "") != 0 {
					t.Fatalf("a good file was set aside (%v) or warned about", aside)
				}
				for name, v := range tc.want {
					if got, ok := f.Get(name); !ok || got != v {
						t.Errorf("Get(%q) = %d, %v; want %d", name, got, ok, v)
					}
				}
				return
			}
			if n := logs.count(slog.LevelWarn, "state file unusable"); n != 1 {
				t.Errorf("%d warnings, want 1", n)
			}
			if len(aside) != 1 {
				t.Fatalf("set-aside files %v, want one", aside)
			}
			if got := readFile(t, aside[0]); got != tc.content {
				t.Errorf("set-aside content %q, want the original %q", got, tc.content)
			}
			if _, ok := f.Get("led"); ok {
				t.Error("values from a bad file were kept")
			}
			// The state works from empty.
			f.Set("led", 1)
			mustClose(t, f)
			if got := readFile(t, path); got != `{"version":1,"outputs":{"led":1}}`+"\n" {
				t.Errorf("new file = %q", got)
			}
		})
	}
}

// TestUnreadablePath: the state path is a directory, which cannot be read as a file; it is set
// aside like a corrupt file.
func TestUnreadablePath(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	log, logs := newLogger(t)
	f := mustOpen(t, path, log)
	if n := logs.count(slog.LevelWarn, "state file unusable"); n != 1 {
		t.Errorf("%d warnings, want 1", n)
	}
	f.Set("led", 1)
	mustClose(t, f)
	if got := readFile(t, path); got != `{"version":1,"outputs":{"led":1}}`+"\n" {
		t.Errorf("file = %q", got)
	}
}

func TestMissingDir(t *testing.T) {
	base := t.TempDir()
	path := filepath.Join(base, "a", "b", "state.json")
	log, _ := newLogger(t)
	f := mustOpen(t, path, log)
	st, err := os.Stat(filepath.Join(base, "a", "b"))
	if err != nil || !st.IsDir() {
		t.Fatalf("directory not created: %v", err)
	}
	f.Set("relay1", 1)
	mustClose(t, f)
	g := mustOpen(t, path, nil) // nil logger: slog.Default
	if v, ok := g.Get("relay1"); !ok || v != 1 {
		t.Fatalf("Get = %d, %v", v, ok)
	}
}

// TestUnwritableDir: the directory cannot be created (a path component is a regular file):
// Open fails with the cause wrapped. chmod 0555 would not do, as root writes anyway.
func TestUnwritableDir(t *testing.T) {
	base := t.TempDir()
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{
		filepath.Join(file, "state.json"),
		filepath.Join(file, "sub", "state.json"),
	} {
		f, err := Open(path, nil)
		if err == nil {
			_ = f.Close()
			t.Fatalf("Open(%s) succeeded", path)
		}
		var pe *fs.PathError
		if !errors.As(err, &pe) {
			t.Errorf("Open(%s) = %v, want a wrapped *fs.PathError", path, err)
		}
	}
	if _, err := Open("", nil); err == nil {
		t.Error("Open of an empty path succeeded")
	}
}

// breakDir makes writes into dir fail by putting a regular file in its place (root ignores
// permissions, not file types), and returns a function that restores it.
func breakDir(t *testing.T, dir string) (restore func()) {
	t.Helper()
	aside := dir + ".away"
	if err := os.Rename(dir, aside); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if err := os.Remove(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(aside, dir); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWriteErrorRetried: a failing write is logged once (rate-limited), keeps the values in
// memory, and is retried on the next Set; Close reports a final failure.
func TestWriteErrorRetried(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(dir, "state.json")
	log, logs := newLogger(t)
	attempts := make(chan error, 100)
	f, err := open(path, log, func(err error) { attempts <- err })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	// next waits for the writer's next write attempt and returns its error.
	next := func() error {
		t.Helper()
		select {
		case err := <-attempts:
			return err
		case <-time.After(waitTimeout):
			t.Fatal("no write attempt")
			return nil
		}
	}
	f.Set("led", 1)
	if err := next(); err != nil {
		t.Fatalf("first write: %v", err)
	}

	restore := breakDir(t, dir)
	f.Set("led", 0)
	if err := next(); !errors.Is(err, syscall.ENOTDIR) {
		t.Fatalf("write into a broken directory = %v, want ENOTDIR", err)
	}
	for i := range 5 {
		f.Set("relay1", i%2) // every change is another failing write, not logged again
		if err := next(); err == nil {
			t.Fatal("write into a broken directory succeeded")
		}
	}
	if v, ok := f.Get("led"); !ok || v != 0 {
		t.Fatalf("Get after failed writes = %d, %v; want 0 kept in memory", v, ok)
	}
	if n := logs.count(slog.LevelWarn, "cannot save output levels"); n != 1 {
		t.Errorf("%d write-error warnings, want 1 (rate-limited)", n)
	}

	restore()
	f.Set("relay2", 1) // retried: everything is written
	if err := next(); err != nil {
		t.Fatalf("write after the directory came back: %v", err)
	}
	want := map[string]int{"led": 0, "relay1": 0, "relay2": 1}
	checkFile(t, path, want)
	if n := logs.count(slog.LevelInfo, "output levels saved again"); n != 1 {
		t.Errorf("%d recovery logs, want 1", n)
	}

	// A failing final flush is Close's error; the values stay readable.
	restore = breakDir(t, dir)
	f.Set("led", 1)
	_ = next()
	err = f.Close()
	if !errors.Is(err, syscall.ENOTDIR) {
		t.Fatalf("Close with a broken directory = %v, want ENOTDIR wrapped", err)
	}
	if v, _ := f.Get("led"); v != 1 {
		t.Errorf("Get after failed Close = %d, want 1", v)
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	restore()
	checkFile(t, path, want)
	if tmp := tempFiles(t, dir); len(tmp) != 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
}

// checkFile asserts the file parses and holds exactly want.
func checkFile(t *testing.T, path string, want map[string]int) {
	t.Helper()
	var doc document
	if err := json.Unmarshal([]byte(readFile(t, path)), &doc); err != nil {
		t.Fatalf("file does not parse: %v", err)
	}
	if doc.Version != Version || fmt.Sprint(doc.Outputs) != fmt.Sprint(want) {
		t.Fatalf("file holds %+v, want version %d outputs %v", doc, Version, want)
	}
}

// TestConcurrentSet runs Set and Get from many goroutines (meaningful under -race); each
// goroutine owns one name, so the final values are known.
func TestConcurrentSet(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	log, _ := newLogger(t)
	f := mustOpen(t, path, log)
	const workers, rounds = 8, 300
	var wg sync.WaitGroup
	want := map[string]int{}
	for w := range workers {
		name := fmt.Sprintf("out%d", w)
		want[name] = (rounds - 1 + w) % 2
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				f.Set(name, (i+w)%2)
				f.Get(fmt.Sprintf("out%d", (w+1)%workers))
			}
		}()
	}
	wg.Wait()
	mustClose(t, f)
	checkFile(t, path, want)
	f.Set("late", 1) // after Close: memory only, no panic, no write
	if v, ok := f.Get("late"); !ok || v != 1 {
		t.Errorf("Get after Close = %d, %v", v, ok)
	}
	checkFile(t, path, want)
}

// TestCloseFlushes: Close writes what Set recorded just before it, and nothing is written when
// nothing changed.
func TestCloseFlushes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	log, _ := newLogger(t)
	f := mustOpen(t, path, log)
	f.Set("led", 1)
	f.Set("relay1", 1)
	f.Set("relay1", 0)
	mustClose(t, f)
	checkFile(t, path, map[string]int{"led": 1, "relay1": 0})

	// Reopen and Set the same values: nothing to write (the file is not even replaced).
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	g := mustOpen(t, path, log)
	g.Set("led", 1)
	g.Set("relay1", 0)
	mustClose(t, g)
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Error("unchanged values rewrote the file")
	}
}

// TestCrashSafety: while hundreds of writes replace the file, a concurrent reader always finds
// it absent (before the first write) or complete; afterwards no temporary file remains.
// Temporary files a crash left behind are removed by Open. A burst without waiting then
// checks that coalesced writes end with the latest values.
func TestCrashSafety(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	stale := path + tempInfix + "123456"
	if err := os.WriteFile(stale, []byte(`{"version":1,"outp`), 0o600); err != nil {
		t.Fatal(err)
	}
	log, _ := newLogger(t)
	attempts := make(chan error, 1)
	f, err := open(path, log, func(err error) { attempts <- err })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	if _, err := os.Stat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale temporary file not removed: %v", err)
	}

	stop := make(chan struct{})
	readerDone := make(chan error)
	var reads int
	go func() {
		for {
			select {
			case <-stop:
				readerDone <- nil
				return
			default:
			}
			b, err := os.ReadFile(path)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				readerDone <- err
				return
			}
			if _, err := parse(b); err != nil {
				readerDone <- fmt.Errorf("read a partial file %q: %w", b, err)
				return
			}
			reads++
		}
	}()
	// Every Set changes a value, so each is exactly one write; waiting for it makes every
	// one a real replacement of the file under the reader.
	const slow = 300
	for i := range slow {
		f.Set(fmt.Sprintf("out%d", i%5), i%2)
		select {
		case err := <-attempts:
			if err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
		case <-time.After(waitTimeout):
			t.Fatalf("write %d did not happen", i)
		}
	}
	// A burst: coalesced, possibly into a single write.
	const fast = 2000
	go func() {
		for range attempts {
		}
	}()
	for i := range fast {
		f.Set(fmt.Sprintf("out%d", i%7), (i+1)%2)
	}
	mustClose(t, f)
	close(attempts)
	close(stop)
	if err := <-readerDone; err != nil {
		t.Fatal(err)
	}
	if reads == 0 {
		t.Error("the reader never saw the file")
	}
	t.Logf("%d complete reads during %d writes and a burst of %d Sets", reads, slow, fast)
	want := map[string]int{}
	for i := fast - 7; i < fast; i++ {
		want[fmt.Sprintf("out%d", i%7)] = (i + 1) % 2
	}
	checkFile(t, path, want)
	if tmp := tempFiles(t, dir); len(tmp) != 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %v, want only state.json", names)
	}
}
