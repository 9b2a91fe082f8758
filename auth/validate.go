package auth

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

const (
	// MaxUsernameLen is the longest user name, in bytes, that SetPassword
	// accepts: an MQTT string cannot be longer, so a longer name could never
	// log in.
	MaxUsernameLen = 65535

	// MaxPasswordLen is the longest password, in bytes, that HashPassword,
	// SetPassword and ReadPasswordTwice accept. mosquitto_passwd caps
	// interactive input at the same length. Check has no such cap, because
	// files written by `mosquitto_passwd -b` may hold longer ones.
	MaxPasswordLen = 512
)

// ErrUserNotFound is returned (wrapped) by DeleteUser when the file has no
// line for the user.
var ErrUserNotFound = errors.New("user not found")

// ErrPasswordMismatch is returned (wrapped) by ReadPasswordTwice when the two
// entries differ.
var ErrPasswordMismatch = errors.New("passwords do not match")

// blanks are the bytes mosquitto's trimblanks strips (C isspace): the
// broker trims them around both fields of a line, so we must too.
const blanks = " \t\r\n\v\f"

// ValidateUsername reports whether name can be stored in a password file and
// later log in. It refuses what mosquitto_passwd refuses (empty, ':',
// control characters, longer than MaxUsernameLen) and, beyond that, names the
// broker could never match: invalid UTF-8 (MQTT forbids it), leading or
// trailing blanks (the broker trims them when it reads the file) and a
// leading '#' (the line would be read as a comment).
func ValidateUsername(name string) error {
	switch {
	case name == "":
		return errors.New("invalid user name: empty")
	case len(name) > MaxUsernameLen:
		return fmt.Errorf("invalid user name: longer than %d bytes", MaxUsernameLen)
	case !utf8.ValidString(name):
		return errors.New("invalid user name: not valid UTF-8")
	case strings.ContainsRune(name, ':'):
		return errors.New("invalid user name: must not contain ':'")
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return errors.New("invalid user name: must not contain control characters")
	case strings.Trim(name, blanks) != name:
		return errors.New("invalid user name: must not begin or end with white space")
	case name[0] == '#':
		return errors.New("invalid user name: must not begin with '#'")
	}
	return nil
}

// validatePassword refuses what would make a useless or hostile entry.
// mosquitto_passwd 2.0.11 -b accepts an empty password; we do not, because
// an empty password is almost always a scripting mistake.
func validatePassword(password string) error {
	switch {
	case password == "":
		return errors.New("invalid password: empty")
	case len(password) > MaxPasswordLen:
		return fmt.Errorf("invalid password: longer than %d bytes", MaxPasswordLen)
	}
	return nil
}
