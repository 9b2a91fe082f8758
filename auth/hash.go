package auth

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

const (
	// MaxIterations is the highest PBKDF2 iteration count Load accepts.
	// Every login costs one derivation, so a file with an absurd count
	// would turn each CONNECT into minutes of CPU on a Raspberry Pi; real
	// files use 101 (mosquitto 2.0) or 1000 (mosquitto 2.1).
	MaxIterations = 1_000_000

	// Parameters mosquitto_passwd 2.0 writes. 2.1 writes 1000 iterations
	// and a 64-byte salt, but the 2.0 broker (Debian 12) refuses any salt
	// that is not 12 bytes long, so writing the 2.0 form keeps our files
	// usable by both brokers.
	writeIterations = 101
	writeSaltLen    = 12

	hashLen = sha512.Size
)

type hashKind uint8

const (
	kindSHA512 hashKind = iota // "$6$": SHA-512(password || salt)
	kindPBKDF2                 // "$7$": PBKDF2-HMAC-SHA512
)

// entry is one decoded password hash.
type entry struct {
	kind       hashKind
	iterations int // kindPBKDF2 only
	salt       []byte
	hash       []byte
}

// digest computes what hash would be if password were right.
func (e *entry) digest(password string) []byte {
	switch e.kind {
	case kindSHA512:
		h := sha512.New()
		h.Write([]byte(password))
		h.Write(e.salt)
		return h.Sum(nil)
	case kindPBKDF2:
		sum, err := pbkdf2.Key(sha512.New, password, e.salt, e.iterations, hashLen)
		if err != nil {
			// Only reachable in FIPS-140-only mode with parameters it
			// refuses; nil never matches, so the login is refused.
			return nil
		}
		return sum
	}
	return nil
}

// matches reports in constant time (for a given entry) whether password is
// right.
func (e *entry) matches(password string) bool {
	return subtle.ConstantTimeCompare(e.digest(password), e.hash) == 1
}

// b64 is what mosquitto reads and writes: standard alphabet with padding.
// Not Strict, because OpenSSL's decoder, which mosquitto uses, tolerates
// non-zero trailing bits.
var b64 = base64.StdEncoding

// parseHash decodes the part of a line after "user:". Errors are short
// reasons for the log and never contain the hash itself.
func parseHash(s string) (*entry, error) {
	if !strings.HasPrefix(s, "$") {
		return nil, errors.New("hash does not start with '$'")
	}
	fields := strings.Split(s[1:], "$")
	var e entry
	switch fields[0] {
	case "6":
		if len(fields) != 3 {
			return nil, fmt.Errorf("$6$ hash has %d fields, want 3", len(fields))
		}
		e.kind = kindSHA512
		fields = fields[1:]
	case "7":
		if len(fields) != 4 {
			return nil, fmt.Errorf("$7$ hash has %d fields, want 4", len(fields))
		}
		n, err := strconv.Atoi(fields[1])
		if err != nil || n < 1 || n > MaxIterations {
			return nil, fmt.Errorf("iteration count must be a number from 1 to %d", MaxIterations)
		}
		e.kind = kindPBKDF2
		e.iterations = n
		fields = fields[2:]
	default:
		return nil, fmt.Errorf("unsupported hash type %q", safeType(fields[0]))
	}
	var err error
	if e.salt, err = b64.DecodeString(fields[0]); err != nil {
		return nil, errors.New("salt is not valid base64")
	}
	if len(e.salt) == 0 {
		return nil, errors.New("salt is empty")
	}
	if e.hash, err = b64.DecodeString(fields[1]); err != nil {
		return nil, errors.New("hash is not valid base64")
	}
	if len(e.hash) != hashLen {
		return nil, fmt.Errorf("hash is %d bytes, want %d", len(e.hash), hashLen)
	}
	return &e, nil
}

// safeType trims an unknown hash type id (e.g. "argon2id" from a mosquitto
// built with argon2) to something fit for a log line, so a corrupt file
// cannot smuggle a long string or escape codes into the log.
func safeType(id string) string {
	if len(id) > 16 {
		id = id[:16]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, id)
}

// Algorithm is a hash mosquitto_passwd can write, chosen with -H.
type Algorithm uint8

const (
	// PBKDF2 is "sha512-pbkdf2", mosquitto 2.0's default:
	// "$7$ITERATIONS$SALT$HASH", PBKDF2-HMAC-SHA512.
	PBKDF2 Algorithm = iota
	// SHA512 is "sha512", mosquitto 1.6's default: "$6$SALT$HASH", one
	// round of SHA-512(password || salt). It is thousands of times cheaper
	// to attack than PBKDF2 and exists for brokers older than 1.6.
	SHA512
)

// DefaultIterations is the PBKDF2 iteration count mosquitto_passwd 2.0
// writes when not told otherwise (-I).
const DefaultIterations = writeIterations

// String returns the name -H takes: "sha512-pbkdf2" or "sha512".
func (a Algorithm) String() string {
	switch a {
	case PBKDF2:
		return "sha512-pbkdf2"
	case SHA512:
		return "sha512"
	}
	return fmt.Sprintf("Algorithm(%d)", uint8(a))
}

// ParseAlgorithm reads the names mosquitto_passwd's -H takes.
func ParseAlgorithm(name string) (Algorithm, error) {
	switch name {
	case "sha512-pbkdf2":
		return PBKDF2, nil
	case "sha512":
		return SHA512, nil
	}
	return 0, fmt.Errorf("unknown hash type %q: want sha512-pbkdf2 (the default) or sha512", name)
}

// HashOptions says how a password is hashed; the zero value is what
// mosquitto_passwd 2.0 writes by default (PBKDF2, 101 iterations).
type HashOptions struct {
	Algorithm Algorithm
	// Iterations is the PBKDF2 iteration count (mosquitto_passwd -I), from
	// 1 to MaxIterations; 0 means DefaultIterations. It must be 0 with
	// SHA512, which has no iterations: a count given there would be
	// silently ignored (as mosquitto_passwd 2.0.11 ignores it).
	Iterations int
}

// Validate reports options Hash would refuse, so a caller can refuse them
// before asking for a password.
func (o HashOptions) Validate() error {
	switch o.Algorithm {
	case PBKDF2:
		if o.Iterations < 0 || o.Iterations > MaxIterations {
			return fmt.Errorf("iteration count %d: want 1 to %d (the most a password file may hold)", o.Iterations, MaxIterations)
		}
	case SHA512:
		if o.Iterations != 0 {
			return errors.New("an iteration count applies to sha512-pbkdf2 only: sha512 has none")
		}
	default:
		return fmt.Errorf("unknown hash algorithm %d", uint8(o.Algorithm))
	}
	return nil
}

// Hash returns what mosquitto_passwd 2.0 writes after "user:" with the
// same -H and -I: a 12-byte random salt and a 64-byte hash, standard
// base64 with padding. "$7$" lines are accepted by mosquitto 2.0 and 2.1,
// "$6$" lines by every mosquitto since 1.4, and both by Load.
func (o HashOptions) Hash(password string) (string, error) {
	if err := o.Validate(); err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	if err := validatePassword(password); err != nil {
		return "", err
	}
	e := entry{kind: kindPBKDF2, iterations: o.Iterations, salt: make([]byte, writeSaltLen)}
	if o.Algorithm == SHA512 {
		e.kind = kindSHA512
	} else if e.iterations == 0 {
		e.iterations = DefaultIterations
	}
	if _, err := rand.Read(e.salt); err != nil {
		return "", fmt.Errorf("hash password: read random salt: %w", err)
	}
	if e.hash = e.digest(password); e.hash == nil {
		return "", errors.New("hash password: pbkdf2 refused the parameters (FIPS 140-only mode?)")
	}
	return e.String(), nil
}

// String writes e the way mosquitto_passwd does; parseHash reads it back.
func (e *entry) String() string {
	if e.kind == kindSHA512 {
		return fmt.Sprintf("$6$%s$%s", b64.EncodeToString(e.salt), b64.EncodeToString(e.hash))
	}
	return fmt.Sprintf("$7$%d$%s$%s", e.iterations, b64.EncodeToString(e.salt), b64.EncodeToString(e.hash))
}

// HashPassword returns exactly what mosquitto_passwd 2.0 writes after
// "user:" by default: "$7$101$" + base64(12-byte random salt) + "$" +
// base64(PBKDF2-HMAC-SHA512(password, salt, 101, 64)). It is
// HashOptions{}.Hash.
func HashPassword(password string) (string, error) {
	return HashOptions{}.Hash(password)
}
