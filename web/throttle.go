package web

import (
	"sync"
	"time"
)

const (
	// freeFailures failed sign-ins from one address cost nothing; typos happen.
	freeFailures = 5
	// backoffStart is the wait after the first failure beyond freeFailures; it doubles with
	// every further failure, up to backoffMax.
	backoffStart = time.Second
	backoffMax   = 5 * time.Minute
	// forgetAfter clears an address's failures after this long without one.
	forgetAfter = time.Hour
	// maxTracked bounds the table; a full table drops the address whose last failure is oldest.
	maxTracked = 1024
)

// backoff is the built-in Throttle: per address, exponential after freeFailures failures. It
// slows guessing from one address without locking the owner out from another. The broker's login
// backoff is the fuller one (it counts checks running in parallel, and a success clears only its
// own user's failures); pimqtt passes that one in, and this serves a Server used alone.
type backoff struct {
	now   func() time.Time
	mu    sync.Mutex
	addrs map[string]*failures
}

type failures struct {
	count int
	last  time.Time // of the last failure
	until time.Time // no attempt before
}

func newBackoff(now func() time.Time) *backoff {
	return &backoff{now: now, addrs: map[string]*failures{}}
}

// Begin implements Throttle.
func (b *backoff) Begin(addr string) (time.Duration, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f := b.addrs[addr]
	if f == nil {
		return 0, true
	}
	if wait := f.until.Sub(b.now()); wait > 0 {
		return wait, false
	}
	return 0, true
}

// End implements Throttle.
func (b *backoff) End(addr, _ string, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ok {
		delete(b.addrs, addr)
		return
	}
	now := b.now()
	f := b.addrs[addr]
	if f != nil && now.Sub(f.last) > forgetAfter {
		f.count = 0
	}
	if f == nil {
		if len(b.addrs) >= maxTracked {
			b.evictLocked(now)
		}
		f = &failures{}
		b.addrs[addr] = f
	}
	f.count++
	f.last = now
	if n := f.count - freeFailures; n > 0 {
		wait := backoffMax
		if n <= 20 { // beyond that the shift below overflows the cap anyway
			wait = min(backoffStart<<(n-1), backoffMax)
		}
		f.until = now.Add(wait)
	}
}

// evictLocked makes room: addresses idle for forgetAfter go, and if none is, the one whose
// last failure is oldest.
func (b *backoff) evictLocked(now time.Time) {
	var oldest string
	var oldestAt time.Time
	for a, f := range b.addrs {
		if now.Sub(f.last) > forgetAfter {
			delete(b.addrs, a)
			continue
		}
		if oldest == "" || f.last.Before(oldestAt) {
			oldest, oldestAt = a, f.last
		}
	}
	if len(b.addrs) >= maxTracked {
		delete(b.addrs, oldest)
	}
}
