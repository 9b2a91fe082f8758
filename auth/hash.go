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

// HashPassword returns exactly what mosquitto_passwd 2.0 writes after
// "user:": "$7$101$" + base64(12-byte random salt) + "$" +
// base64(PBKDF2-HMAC-SHA512(password, salt, 101, 64)). The result is accepted
// by mosquitto 2.0 and 2.1 and by Load.
func HashPassword(password string) (string, error) {
	if err := validatePassword(password); err != nil {
		return "", err
	}
	salt := make([]byte, writeSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("hash password: read random salt: %w", err)
	}
	sum, err := pbkdf2.Key(sha512.New, password, salt, writeIterations, hashLen)
	if err != nil {
		return "", fmt.Errorf("hash password: pbkdf2: %w", err)
	}
	return fmt.Sprintf("$7$%d$%s$%s", writeIterations, b64.EncodeToString(salt), b64.EncodeToString(sum)), nil
}
