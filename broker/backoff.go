package broker

import (
	"hash/maphash"
	"sync"
	"time"
)

// Defaults of loginBackoff.
const (
	// backoffThreshold failed logins from one address are checked as
	// usual; from then on each further check waits for a delay.
	backoffThreshold = 5
	// backoffBase is the delay after backoffThreshold failures; it doubles
	// with each further failure, up to backoffMax.
	backoffBase = time.Second
	backoffMax  = time.Minute
	// backoffForget: an address quiet this long starts afresh.
	backoffForget = 15 * time.Minute
	// backoffMaxHosts bounds the addresses remembered, so an attacker with
	// many addresses (an IPv6 prefix holds billions) cannot grow the table
	// without bound: about 100 bytes each, 100 KiB in all.
	backoffMaxHosts = 1024
	// backoffMaxUsers bounds the user names remembered per address; the
	// failures of further names are counted together, and no login clears
	// them.
	backoffMaxUsers = 4
)

// loginBackoff slows password guessing from one remote address without
// locking the owner out from another: after backoffThreshold failed
// logins from an address, its next login is let through to the password
// check only once a delay has passed since the last failure, a delay that
// doubles with each further failure up to backoffMax. Logins refused for
// the delay are not checked at all, so they teach a guesser nothing and
// cost no hashing. A successful login clears the failures of its own user
// name only: a guesser holding one account (a guest's, say) cannot wipe
// the count of its guesses at another's password by logging in.
//
// Checks running at the same time count as failures until they end, so a
// burst of parallel connections gets no more checks than a sequence.
type loginBackoff struct {
	threshold int
	base, max time.Duration
	forget    time.Duration
	maxHosts  int
	now       func() time.Time
	seed      maphash.Seed

	mu    sync.Mutex
	hosts map[string]*hostLogins
}

// hostLogins is what one remote address did.
type hostLogins struct {
	failures int // settled failed checks
	pending  int // checks running now
	// byUser counts failures per user name hash; otherUsers the failures
	// of names beyond backoffMaxUsers.
	byUser     map[uint64]int
	otherUsers int
	last       time.Time // the last failure or check let through
	notBefore  time.Time // no check before then
}

func newLoginBackoff() *loginBackoff {
	return &loginBackoff{
		threshold: backoffThreshold,
		base:      backoffBase,
		max:       backoffMax,
		forget:    backoffForget,
		maxHosts:  backoffMaxHosts,
		now:       time.Now,
		seed:      maphash.MakeSeed(),
		hosts:     make(map[string]*hostLogins),
	}
}

// delay is the wait earned by n failures.
func (b *loginBackoff) delay(n int) time.Duration {
	if n < b.threshold {
		return 0
	}
	d := b.base
	for i := b.threshold; i < n && d < b.max; i++ {
		d *= 2
	}
	return min(d, b.max)
}

// begin asks whether a login from host may have its password checked
// now. If not, it returns how long until one may. A check it lets through
// must be followed by end.
func (b *loginBackoff) begin(host string) (wait time.Duration, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	h := b.hosts[host]
	if h != nil && h.pending == 0 && now.Sub(h.last) >= b.forget {
		delete(b.hosts, host)
		h = nil
	}
	if h == nil {
		b.makeRoom(now)
		h = &hostLogins{}
		b.hosts[host] = h
	}
	if now.Before(h.notBefore) {
		return h.notBefore.Sub(now), false
	}
	if n := h.failures + h.pending; n >= b.threshold {
		// One check per delay: the next waits as if this one fails.
		h.notBefore = now.Add(b.delay(n + 1))
		h.last = now
	}
	h.pending++
	return 0, true
}

// end records the outcome of a check that begin let through.
func (b *loginBackoff) end(host, user string, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	h := b.hosts[host]
	if h == nil {
		return // evicted meanwhile
	}
	h.pending = max(h.pending-1, 0)
	now := b.now()
	key := maphash.String(b.seed, user)
	if ok {
		n := h.byUser[key]
		delete(h.byUser, key)
		h.failures -= n
		if h.failures < b.threshold {
			h.notBefore = time.Time{}
		} else {
			h.notBefore = h.last.Add(b.delay(h.failures))
		}
		if h.failures == 0 && h.pending == 0 {
			delete(b.hosts, host)
		}
		return
	}
	h.failures++
	if _, known := h.byUser[key]; known || len(h.byUser) < backoffMaxUsers {
		if h.byUser == nil {
			h.byUser = make(map[uint64]int)
		}
		h.byUser[key]++
	} else {
		h.otherUsers++
	}
	h.last = now
	if d := b.delay(h.failures); d > 0 {
		if t := now.Add(d); t.After(h.notBefore) {
			h.notBefore = t
		}
	}
}

// makeRoom keeps the table under maxHosts before a new address is added:
// addresses quiet for the forget period go first; if none is, the one
// with the fewest failures (the least suspicious) is dropped, so an
// attacker who fills the table from many addresses pushes out its own
// entries sooner than the ones that have failed most.
func (b *loginBackoff) makeRoom(now time.Time) {
	if len(b.hosts) < b.maxHosts {
		return
	}
	for k, h := range b.hosts {
		if h.pending == 0 && now.Sub(h.last) >= b.forget {
			delete(b.hosts, k)
		}
	}
	if len(b.hosts) < b.maxHosts {
		return
	}
	var victim string
	var vh *hostLogins
	for k, h := range b.hosts {
		if vh == nil || h.failures < vh.failures || (h.failures == vh.failures && h.last.Before(vh.last)) {
			victim, vh = k, h
		}
	}
	delete(b.hosts, victim)
}

// len returns the number of addresses remembered.
func (b *loginBackoff) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.hosts)
}
