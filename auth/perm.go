package auth

import (
	"io/fs"
	"os"
	"runtime"
)

// Exposure is what a password file's permission bits grant to users other
// than its owner. The hashes are salted but cheap to try passwords against
// offline (101 PBKDF2 iterations, or one SHA-512 for "$6$" lines), so a
// reader of the file is a guesser of passwords.
type Exposure struct {
	// Mode is the file's permission bits.
	Mode fs.FileMode
}

// Group reports whether the file's group may read or write it.
func (e Exposure) Group() bool { return e.Mode&0o060 != 0 }

// Others reports whether every user of the machine may read or write it:
// what mosquitto 2.0.16 and later warn about ("has world readable
// permissions"), checking any of the other bits (S_IRWXO).
func (e Exposure) Others() bool { return e.Mode&0o007 != 0 }

// Exposed reports whether anyone but the owner has access.
func (e Exposure) Exposed() bool { return e.Group() || e.Others() }

// Who names those who have access besides the owner, for a message.
func (e Exposure) Who() string {
	switch {
	case e.Group() && e.Others():
		return "its group and every user"
	case e.Group():
		return "its group"
	case e.Others():
		return "every user"
	}
	return "nobody else"
}

// FileExposure stats the file at path (following symbolic links) and
// returns what its permissions grant to others. Where files have no Unix
// permission bits (Windows) nothing is ever exposed.
func FileExposure(path string) (Exposure, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return Exposure{}, err
	}
	return exposureOf(fi), nil
}

func exposureOf(fi fs.FileInfo) Exposure {
	if runtime.GOOS == "windows" || runtime.GOOS == "plan9" {
		// Go makes up 0666/0444 there from the read-only attribute.
		return Exposure{}
	}
	return Exposure{Mode: fi.Mode().Perm()}
}
