package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"sync"
)

// maxVerified bounds the logins a verifiedCache remembers: more than the
// clients a Pi serves (the broker's default limit is 500), at about 100
// bytes each.
const maxVerified = 1024

// verifiedCache remembers the user name and password pairs that passed a
// check, so that a client reconnecting again and again (a phone after
// every Wi-Fi blip, a whole house of plugs after a router restart) does
// not pay a PBKDF2 derivation each time: on a Pi Zero that is most of a
// connect's CPU.
//
// What it keeps cannot be used to log in or to learn a password: not the
// password, only a digest of the user name and password under a random
// key of this cache's own, which never leaves the process. A pair that
// was never right is never added, so a wrong password cannot hit; a
// cache belongs to one loaded password file (Passwords is immutable, and
// a reload builds a new one), so a changed password or a removed user
// cannot hit either. Its size is bounded: past maxVerified entries one is
// dropped for each added, and the dropped login merely pays PBKDF2 again.
type verifiedCache struct {
	key [32]byte
	max int

	mu      sync.Mutex
	entries map[[sha256.Size]byte]struct{}
}

// newVerifiedCache returns an empty cache with a fresh random key.
func newVerifiedCache(max int) *verifiedCache {
	c := &verifiedCache{max: max}
	// crypto/rand.Read does not fail on supported platforms (it panics
	// rather than return weak bytes).
	_, _ = rand.Read(c.key[:])
	return c
}

// digest is the cache's key for a login: HMAC-SHA256 under the cache's
// key of the user name's length, the user name and the password, so that
// no two different pairs share an input ("ab"+"c" and "a"+"bc").
func (c *verifiedCache) digest(user, password string) [sha256.Size]byte {
	m := hmac.New(sha256.New, c.key[:])
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(user)))
	m.Write(n[:])
	m.Write([]byte(user))
	m.Write([]byte(password))
	var d [sha256.Size]byte
	m.Sum(d[:0])
	return d
}

// has reports whether the login with digest d passed a check before.
func (c *verifiedCache) has(d [sha256.Size]byte) bool {
	c.mu.Lock()
	_, ok := c.entries[d]
	c.mu.Unlock()
	return ok
}

// add remembers a login that passed a check, dropping another one if the
// cache is full (the map's iteration order picks it, at random).
func (c *verifiedCache) add(d [sha256.Size]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = make(map[[sha256.Size]byte]struct{})
	}
	if _, ok := c.entries[d]; ok {
		return
	}
	for k := range c.entries {
		if len(c.entries) < c.max {
			break
		}
		delete(c.entries, k)
	}
	c.entries[d] = struct{}{}
}

// len returns the number of logins remembered.
func (c *verifiedCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
