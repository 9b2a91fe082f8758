// Package state remembers output levels across restarts and power cuts.
//
// A File keeps the last commanded level of each named output in memory and persists it, off
// the caller's path, to a small JSON file:
//
//	{"version":1,"outputs":{"led":1,"relay1":0}}
//
// Every write is atomic (a temporary file in the same directory, fsync, rename, fsync of the
// directory), so after a crash or a power cut the file holds either the previous or the new
// complete content, never a mix. A file that cannot be read or parsed never stops the program:
// it is set aside as PATH.corrupt-<unix time> and the File starts empty.
//
// *File satisfies device.StateStore.
package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Version is the format version written to, and accepted from, the file.
const Version = 1

const (
	// fileMode is the mode of the state file.
	fileMode = 0o644
	// dirMode is the mode of a directory Open creates.
	dirMode = 0o755
	// errorLogInterval rate-limits the logging of write errors: a read-only or full file
	// system fails every write, and a busy output would otherwise fill the log.
	errorLogInterval = time.Minute
	// tempInfix is between the state file's name and the random suffix of a temporary file,
	// so Open can recognise, and remove, those a crash left behind.
	tempInfix = ".tmp-"
)

// document is the file's JSON form.
type document struct {
	Version int            `json:"version"`
	Outputs map[string]int `json:"outputs"`
}

// File is a persistent map from output name to level. Create it with Open; Get and Set are safe
// for concurrent use; Close it to flush the latest values.
type File struct {
	path string
	log  *slog.Logger

	mu      sync.Mutex
	values  map[string]int
	gen     uint64 // bumped by every Set that changes values
	written uint64 // the gen last written successfully
	closed  bool
	lastErr error // the last write's error, nil after a success
	// Write-error log rate limiting.
	lastErrLog time.Time
	suppressed int

	kick chan struct{} // buffer 1: "values changed"
	stop chan struct{} // closed by Close
	done chan struct{} // closed when the writer exits
	// closeErr is the final flush's error, set by the writer before done is closed.
	closeErr error
	// onWrite, if set, is called by the writer after every write attempt (tests only).
	onWrite func(error)
}

// Open loads the state file at path and starts its writer.
//
// A missing file is an empty state. An unreadable or corrupt file (bad JSON, unknown version,
// a level other than 0 or 1) is logged at warn level, renamed to PATH.corrupt-<unix time>, and
// the state starts empty: Open never refuses to start over the file's content. Temporary files
// a crash left behind are removed. The directory is created (mode 0755) if missing.
//
// Open returns an error only when the directory cannot be created or written to. logger nil
// means slog.Default().
func Open(path string, logger *slog.Logger) (*File, error) {
	return open(path, logger, nil)
}

// open is Open with a hook called after every write attempt.
func open(path string, logger *slog.Logger, onWrite func(error)) (*File, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if path == "" {
		return nil, errors.New("state: empty path")
	}
	f := &File{
		path:    path,
		log:     logger.With("state_file", path),
		values:  map[string]int{},
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		onWrite: onWrite,
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("state: create directory: %w", err)
	}
	f.removeStaleTemps()
	if err := probeWritable(dir); err != nil {
		return nil, fmt.Errorf("state: directory %s is not writable: %w", dir, err)
	}
	f.load()
	go f.writer()
	return f, nil
}

// probeWritable creates and removes a file in dir.
func probeWritable(dir string) error {
	tmp, err := os.CreateTemp(dir, ".pimqtt-probe-*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	cerr := tmp.Close()
	rerr := os.Remove(name)
	return errors.Join(cerr, rerr)
}

// removeStaleTemps deletes temporary files of this state file that a crash during a write
// left behind. Failures only cost disk space and are ignored.
func (f *File) removeStaleTemps() {
	matches, err := filepath.Glob(globEscape(f.path) + tempInfix + "*")
	if err != nil {
		return
	}
	for _, m := range matches {
		if err := os.Remove(m); err == nil {
			f.log.Info("removed a temporary state file left by an interrupted write", "temp", m)
		}
	}
}

// globEscape escapes the pattern metacharacters of a literal path for filepath.Glob.
func globEscape(p string) string {
	if runtime.GOOS == "windows" {
		// '\' is the separator there, not an escape; brackets cannot be escaped, so a path
		// with metacharacters simply finds nothing.
		return p
	}
	var b strings.Builder
	for _, r := range p {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// load reads the file into f.values, setting a bad file aside.
func (f *File) load() {
	data, err := os.ReadFile(f.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		f.log.Debug("no state file yet; starting empty")
		return
	case err != nil:
		f.setAside(fmt.Errorf("read: %w", err))
		return
	}
	values, err := parse(data)
	if err != nil {
		f.setAside(err)
		return
	}
	f.values = values
	f.log.Debug("state loaded", "outputs", len(values))
}

// parse decodes and checks the file's content.
func parse(data []byte) (map[string]int, error) {
	var doc document
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if dec.More() {
		return nil, errors.New("parse: data after the JSON object")
	}
	if doc.Version != Version {
		return nil, fmt.Errorf("parse: version %d, want %d", doc.Version, Version)
	}
	values := make(map[string]int, len(doc.Outputs))
	for name, v := range doc.Outputs {
		if v != 0 && v != 1 {
			return nil, fmt.Errorf("parse: output %q has level %d, want 0 or 1", name, v)
		}
		values[name] = v
	}
	return values, nil
}

// setAside renames a file that could not be loaded, keeping it for inspection, so the next
// write does not destroy it and the next start does not trip over it again.
func (f *File) setAside(why error) {
	aside, err := SetAside(f.path)
	if err != nil {
		f.log.Warn("state file unusable, starting empty; it could not be set aside either",
			"err", why, "rename_err", err)
		return
	}
	f.log.Warn("state file unusable, starting empty; the bad file is kept", "err", why, "kept_as", aside)
}

// Get returns the level last recorded for name, and whether there is one.
func (f *File) Get(name string) (value int, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	value, ok = f.values[name]
	return value, ok
}

// Set records value (any non-zero value is stored as 1) as name's level and returns at once.
// The file is written asynchronously by a single writer goroutine: a burst of Sets costs one
// or two writes of the latest values. A failed write is logged (rate-limited) and retried on
// the next Set or at Close; the in-memory value is kept either way, and Get returns it. After
// Close, Set only records in memory.
func (f *File) Set(name string, value int) {
	if value != 0 {
		value = 1
	}
	f.mu.Lock()
	if old, ok := f.values[name]; !ok || old != value {
		f.values[name] = value
		f.gen++
	}
	pending := f.gen != f.written && !f.closed
	f.mu.Unlock()
	if pending {
		select {
		case f.kick <- struct{}{}:
		default:
		}
	}
}

// Close flushes the latest values, stops the writer and returns the final flush's error, nil
// when there was nothing left to write or the write succeeded. Later calls return nil.
func (f *File) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	f.mu.Unlock()
	close(f.stop)
	<-f.done
	return f.closeErr
}

// writer is the only goroutine writing the file.
func (f *File) writer() {
	defer close(f.done)
	for {
		select {
		case <-f.kick:
			f.flush()
		case <-f.stop:
			f.closeErr = f.flush()
			return
		}
	}
}

// flush writes the current values if they have not been written yet.
func (f *File) flush() (err error) {
	f.mu.Lock()
	if f.gen == f.written {
		f.mu.Unlock()
		return nil
	}
	if f.onWrite != nil {
		defer func() { f.onWrite(err) }()
	}
	gen := f.gen
	var data []byte
	data, err = json.Marshal(document{Version: Version, Outputs: f.values})
	f.mu.Unlock()
	if err == nil {
		err = writeAtomic(f.path, append(data, '\n'))
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		err = fmt.Errorf("state: write %s: %w", f.path, err)
		f.lastErr = err
		now := time.Now()
		if f.lastErrLog.IsZero() || now.Sub(f.lastErrLog) >= errorLogInterval {
			f.log.Warn("cannot save output levels; kept in memory, retrying on the next change",
				"err", err, "errors_not_logged", f.suppressed)
			f.lastErrLog, f.suppressed = now, 0
		} else {
			f.suppressed++
		}
		return err
	}
	f.written = gen
	if f.lastErr != nil {
		f.log.Info("output levels saved again", "errors_not_logged", f.suppressed)
		f.lastErr, f.lastErrLog, f.suppressed = nil, time.Time{}, 0
	}
	return nil
}

// writeAtomic replaces path with data: a temporary file in the same directory is written,
// synced and renamed over path, then the directory is synced so the rename survives a power
// cut. On failure the temporary file is removed and path is untouched.
func writeAtomic(path string, data []byte) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, base+tempInfix+"*")
	if err != nil {
		return fmt.Errorf("create temporary file: %w", err)
	}
	tmpName := tmp.Name()
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmpName)
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write temporary file: %w", err)
	}
	if err := tmp.Chmod(fileMode); err != nil && runtime.GOOS != "windows" {
		return fmt.Errorf("chmod temporary file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync temporary file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close temporary file: %w", err)
	}
	if err := os.Rename(tmpName, path); err != nil {
		return fmt.Errorf("rename temporary file: %w", err)
	}
	if err := syncDir(dir); err != nil {
		// The new content is in place; only its durability across a power cut is in doubt.
		return fmt.Errorf("sync directory: %w", err)
	}
	return nil
}

// syncDir makes a rename in dir durable. Windows cannot sync a directory handle (its renames
// are journaled by NTFS) and some file systems refuse with EINVAL: both are not errors.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	cerr := d.Close()
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		err = nil
	}
	return errors.Join(err, cerr)
}
