package broker

import (
	"log/slog"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Defaults of rateLimitedCounter.
const (
	reportInterval = 10 * time.Second
	// maxReportKeys bounds the remote addresses (or other keys) one
	// counter remembers: an attacker with many addresses must not grow it
	// without bound. 256 keys and one line per key and interval keep the
	// worst case at about 26 lines a second per counter.
	maxReportKeys = 256
)

// overflowKey is the key events are counted under once a counter
// remembers maxKeys keys.
const overflowKey = "(other addresses)"

// rateLimitedCounter writes one warning per kind of event (a refused
// connection, a failed login) and key (usually the remote address), at
// most once per interval per key, so an attack cannot flood the log: the
// first event of a key is logged at once; later ones are counted and
// logged as one line with the count, either by the next event after the
// interval or by flush, which the broker calls every interval, so the
// end of a burst is reported too.
type rateLimitedCounter struct {
	log       *slog.Logger
	msg       string // the warning
	countAttr string // the name of the count attribute, e.g. "failures"
	keyAttr   string // the name of the key attribute, e.g. "remote"; "" logs no key
	interval  time.Duration
	maxKeys   int
	now       func() time.Time

	mu        sync.Mutex
	keys      map[string]*keyCount
	lastSweep time.Time
}

// keyCount is one key's state.
type keyCount struct {
	count    int64     // events not logged yet
	lastSaid time.Time // when the key was last logged
	attrs    []any     // the attributes of the latest event not logged yet
}

// newRateLimitedCounter returns a counter that logs msg at warn level
// with the count of events under countAttr and the key under keyAttr.
func newRateLimitedCounter(log *slog.Logger, msg, countAttr, keyAttr string) *rateLimitedCounter {
	return &rateLimitedCounter{
		log: log, msg: msg, countAttr: countAttr, keyAttr: keyAttr,
		interval: reportInterval, maxKeys: maxReportKeys, now: time.Now,
		keys: make(map[string]*keyCount),
	}
}

// add counts one event for key, described by attrs (slog key-value
// pairs), and logs it if the key has not been logged for an interval.
func (r *rateLimitedCounter) add(key string, attrs ...any) {
	r.mu.Lock()
	now := r.now()
	e, ok := r.keys[key]
	if !ok {
		if len(r.keys) >= r.maxKeys {
			r.sweepLocked(now)
		}
		if len(r.keys) >= r.maxKeys {
			key = overflowKey
			e = r.keys[key]
		}
		if e == nil {
			e = &keyCount{}
			r.keys[key] = e
		}
	}
	e.count++
	e.attrs = attrs
	if !e.lastSaid.IsZero() && now.Sub(e.lastSaid) < r.interval {
		r.mu.Unlock()
		return
	}
	n, said := e.count, e.attrs
	e.count, e.attrs, e.lastSaid = 0, nil, now
	r.mu.Unlock()
	r.write(key, n, said)
}

// flush logs the events of every key that has been quiet for an
// interval, and forgets keys with nothing left to log.
func (r *rateLimitedCounter) flush() {
	type line struct {
		key   string
		n     int64
		attrs []any
	}
	var lines []line
	r.mu.Lock()
	now := r.now()
	for k, e := range r.keys {
		if now.Sub(e.lastSaid) < r.interval {
			continue
		}
		if e.count == 0 {
			delete(r.keys, k)
			continue
		}
		lines = append(lines, line{k, e.count, e.attrs})
		e.count, e.attrs, e.lastSaid = 0, nil, now
	}
	r.mu.Unlock()
	for _, l := range lines {
		r.write(l.key, l.n, l.attrs)
	}
}

// sweepLocked makes room: keys last logged more than an interval ago are
// dropped, their unlogged events moving to the overflow key. It runs at
// most once per interval, so a table full of fresh keys costs nothing
// per event.
func (r *rateLimitedCounter) sweepLocked(now time.Time) {
	if now.Sub(r.lastSweep) < r.interval {
		return
	}
	r.lastSweep = now
	var moved int64
	for k, e := range r.keys {
		if k != overflowKey && now.Sub(e.lastSaid) >= r.interval {
			moved += e.count
			delete(r.keys, k)
		}
	}
	if moved > 0 {
		o := r.keys[overflowKey]
		if o == nil {
			o = &keyCount{lastSaid: now}
			r.keys[overflowKey] = o
		}
		o.count += moved
	}
}

// len returns the number of keys remembered.
func (r *rateLimitedCounter) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.keys)
}

func (r *rateLimitedCounter) write(key string, n int64, attrs []any) {
	args := make([]any, 0, len(attrs)+4)
	args = append(args, r.countAttr, n)
	if r.keyAttr != "" {
		args = append(args, r.keyAttr, key)
	}
	r.log.Warn(r.msg, append(args, attrs...)...)
}

// maxLoggedBytes bounds what the log shows of a string a client chose (a
// user name, a client id): user names up to 64 KiB are legal, and people
// type passwords there.
const maxLoggedBytes = 64

// clientText makes a string a client sent safe to log: at most
// maxLoggedBytes of it (cut at a character boundary), escaped the way
// strconv.Quote escapes (without the quotes), so the result is valid,
// printable UTF-8 whatever the client sent.
func clientText(s string) string {
	if plainText(s) {
		return s // nothing to cut or escape: most client ids and names
	}
	if len(s) > maxLoggedBytes {
		cut := maxLoggedBytes
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		if cut == 0 { // no character boundary: not UTF-8 anyway
			cut = maxLoggedBytes
		}
		s = s[:cut]
	}
	q := strconv.QuoteToGraphic(s)
	return q[1 : len(q)-1]
}

// plainText reports whether clientText would return s unchanged: short,
// printable ASCII, nothing strconv.Quote escapes.
func plainText(s string) bool {
	if len(s) > maxLoggedBytes {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// appendClientText is clientTextAttrs as slog attributes.
func appendClientText(attrs []slog.Attr, name, s string) []slog.Attr {
	attrs = append(attrs, slog.String(name, clientText(s)))
	if len(s) > maxLoggedBytes {
		attrs = append(attrs, slog.Int(name+"_bytes", len(s)))
	}
	return attrs
}

// clientTextAttrs returns the slog attributes for a string a client chose:
// the safe text under name and, when it was cut, its full length under
// name_bytes.
func clientTextAttrs(name, s string) []any {
	if len(s) <= maxLoggedBytes {
		return []any{name, clientText(s)}
	}
	return []any{name, clientText(s), name + "_bytes", len(s)}
}
