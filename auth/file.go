package auth

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// fileMode is what every file we write gets: the hashes are salted but
// cheap to attack offline (101 iterations), so nobody else should read them.
const fileMode = 0o600

// SetPassword sets username's password in the mosquitto password file at
// path, like `mosquitto_passwd [-c] -b path username password`.
//
// With create, the file is replaced by one holding only this user. Without
// it, the file must exist: the user's first line is replaced in place (its
// line ending kept) or, if there is none, a line is appended; every other
// line, comments and malformed lines included, is kept byte for byte.
// Further lines for the same user are dropped, because the broker uses the
// last one and would otherwise ignore the new password.
//
// The file is replaced atomically (temporary file in the same directory,
// fsync, rename, fsync of the directory) with mode 0600, keeping the owner
// when the process is allowed to. A symbolic link at path is followed and
// the file it points to is replaced. Concurrent writers are not locked out:
// the last rename wins.
//
// A path that cannot be written fails before anything is written, with the errors of
// CheckPasswordFile.
func SetPassword(path, username, password string, create bool) error {
	return SetPasswordWith(path, username, password, create, HashOptions{})
}

// SetPasswordWith is SetPassword with the hash chosen by opts, like
// mosquitto_passwd's -H and -I. Options Hash refuses fail before the file
// is touched.
func SetPasswordWith(path, username, password string, create bool, opts HashOptions) error {
	if err := ValidateUsername(username); err != nil {
		return fmt.Errorf("set password in %s: %w", path, err)
	}
	if err := opts.Validate(); err != nil {
		return fmt.Errorf("set password in %s: %w", path, err)
	}
	if err := CheckPasswordFile(path, create); err != nil {
		return err
	}
	hash, err := opts.Hash(password)
	if err != nil {
		return fmt.Errorf("set password in %s for %q: %w", path, username, err)
	}
	newLine := []byte(username + ":" + hash)

	target, err := resolve(path, create)
	if err != nil {
		return fmt.Errorf("set password in %s: %w", path, err)
	}
	if create {
		if err := writeAtomic(target, append(newLine, '\n'), nil); err != nil {
			return fmt.Errorf("set password in %s: %w", path, err)
		}
		return nil
	}

	old, info, err := readExisting(target)
	if err != nil {
		return fmt.Errorf("set password in %s: %w", path, err)
	}
	if err := writeAtomic(target, setUserLine(old, username, newLine), info); err != nil {
		return fmt.Errorf("set password in %s: %w", path, err)
	}
	return nil
}

// setUserLine is SetPassword's edit of an existing file: old with
// username's first line replaced by newLine (keeping its line ending), its
// further lines dropped, or newLine appended if it had none.
func setUserLine(old []byte, username string, newLine []byte) []byte {
	eol := lineEnding(old)
	var out bytes.Buffer
	replaced := false
	for _, line := range bytes.SplitAfter(old, []byte{'\n'}) {
		if !isUserLine(line, username) {
			out.Write(line)
			continue
		}
		if replaced {
			continue
		}
		replaced = true
		out.Write(newLine)
		if end := ending(line); end != nil {
			out.Write(end)
		} else {
			out.Write(eol)
		}
	}
	if !replaced {
		// Without this, a file whose last line lacks its newline would
		// get the new entry glued onto that line.
		if out.Len() > 0 && !bytes.HasSuffix(out.Bytes(), []byte{'\n'}) {
			out.Write(eol)
		}
		out.Write(newLine)
		out.Write(eol)
	}
	return out.Bytes()
}

// DeleteUser removes every line for username from the password file at path,
// like `mosquitto_passwd -D path username`, keeping all other lines byte for
// byte. If the user has no line, it returns an error wrapping
// ErrUserNotFound and leaves the file untouched. The file is replaced the
// way SetPassword replaces it, and a path that cannot be written fails
// first with the errors of CheckPasswordFile.
func DeleteUser(path, username string) error {
	if err := ValidateUsername(username); err != nil {
		return fmt.Errorf("delete user from %s: %w", path, err)
	}
	if err := checkPasswordFile(path, false, false); err != nil {
		return err
	}
	target, err := resolve(path, false)
	if err != nil {
		return fmt.Errorf("delete user from %s: %w", path, err)
	}
	old, info, err := readExisting(target)
	if err != nil {
		return fmt.Errorf("delete user from %s: %w", path, err)
	}
	out, found := deleteUserLines(old, username)
	if !found {
		return fmt.Errorf("delete user %q from %s: %w", username, path, ErrUserNotFound)
	}
	if err := writeAtomic(target, out, info); err != nil {
		return fmt.Errorf("delete user from %s: %w", path, err)
	}
	return nil
}

// deleteUserLines is DeleteUser's edit: old without username's lines, and
// whether there were any.
func deleteUserLines(old []byte, username string) ([]byte, bool) {
	var out bytes.Buffer
	found := false
	for _, line := range bytes.SplitAfter(old, []byte{'\n'}) {
		if isUserLine(line, username) {
			found = true
			continue
		}
		out.Write(line)
	}
	return out.Bytes(), found
}

// HashResult says what HashPlaintext did.
type HashResult struct {
	// Hashed is the number of plaintext passwords replaced by hashes.
	Hashed int
	// Kept is the number of lines that were already hashed and are left
	// as they were.
	Kept int
}

// HashPlaintext replaces the plaintext passwords of a file of
// "user:password" lines by hashes, like `mosquitto_passwd -U path`, with
// the hash chosen by opts. Unlike mosquitto_passwd, which hashes every
// line again and so turns a hash into the password of nobody (upstream
// issue 3416), lines that already hold a usable hash are left as they are:
// a file may be part hashed, part plaintext, e.g. after a user was added
// by hand. Comments and blank lines are kept too (mosquitto_passwd 2.0.11
// refuses them as corrupt).
//
// The password is what the broker would have read in a plaintext file:
// the text after the first ':', blanks around it removed. A line whose
// password would be cut there (it holds another ':'), a line without ':',
// an empty user or password, a user name ValidateUsername refuses and a
// line that looks like a hash ("$6$", "$7$") but is not a usable one are
// errors with the file's name and line number, and the file is then left
// untouched: nothing is hashed unless everything can be. The file is
// replaced the way SetPassword replaces it, and only if something was
// hashed.
func HashPlaintext(path string, opts HashOptions) (HashResult, error) {
	var res HashResult
	if err := opts.Validate(); err != nil {
		return res, fmt.Errorf("hash passwords in %s: %w", path, err)
	}
	if err := checkPasswordFile(path, false, false); err != nil {
		return res, err
	}
	target, err := resolve(path, false)
	if err != nil {
		return res, fmt.Errorf("hash passwords in %s: %w", path, err)
	}
	old, info, err := readExisting(target)
	if err != nil {
		return res, fmt.Errorf("hash passwords in %s: %w", path, err)
	}
	out, res, err := hashPlaintext(old, opts)
	if err != nil {
		return HashResult{}, fmt.Errorf("%s:%w; nothing was changed", path, err)
	}
	if res.Hashed == 0 {
		return res, nil
	}
	if err := writeAtomic(target, out, info); err != nil {
		return HashResult{}, fmt.Errorf("hash passwords in %s: %w", path, err)
	}
	return res, nil
}

// hashPlaintext is HashPlaintext's edit of the file's content. Its errors
// start with the line number and ": ".
func hashPlaintext(old []byte, opts HashOptions) ([]byte, HashResult, error) {
	var res HashResult
	var out bytes.Buffer
	for i, line := range bytes.SplitAfter(old, []byte{'\n'}) {
		hashed, err := hashPlaintextLine(line, opts)
		if err != nil {
			return nil, HashResult{}, fmt.Errorf("%d: %w", i+1, err)
		}
		switch {
		case hashed == nil:
			res.Kept++
			out.Write(line)
		case len(hashed) == 0:
			out.Write(line) // comment or blank
		default:
			res.Hashed++
			out.Write(hashed)
			out.Write(ending(line))
		}
	}
	return out.Bytes(), res, nil
}

// hashPlaintextLine is HashPlaintext for one line: the new line without
// its ending, nil for a line already hashed, or an empty slice for a
// comment or blank line. Errors never quote the line: it holds a password.
func hashPlaintextLine(line []byte, opts HashOptions) ([]byte, error) {
	user, field, kind := splitLine(string(line))
	switch kind {
	case lineIgnored:
		return []byte{}, nil
	case lineNoColon:
		return nil, errors.New("no ':' between user name and password; fix or delete the line")
	}
	if user == "" {
		return nil, errors.New("empty user name; fix or delete the line")
	}
	// field is what the broker reads as the hash: up to the next ':'.
	if looksHashed(field) {
		if _, err := parseHash(field); err != nil {
			return nil, fmt.Errorf("user %q: looks like a hash but cannot be used (%v); fix the line, or delete it and set the password again", user, err)
		}
		return nil, nil
	}
	if err := ValidateUsername(user); err != nil {
		return nil, fmt.Errorf("user %q: %w", user, err)
	}
	_, rest, _ := strings.Cut(strings.Trim(string(line), blanks), ":")
	rest = strings.Trim(rest, blanks)
	switch {
	case rest == "":
		return nil, fmt.Errorf("user %q: no password; fix or delete the line", user)
	case strings.Contains(rest, ":"):
		// A plaintext broker read the password only up to the ':', and
		// mosquitto_passwd -U hashes only that part: refuse rather than
		// guess which one was meant.
		return nil, fmt.Errorf("user %q: the password holds a ':', which a mosquitto password file cannot hold; set it with pimqtt passwd -b instead", user)
	}
	hash, err := opts.Hash(rest)
	if err != nil {
		return nil, fmt.Errorf("user %q: %w", user, err)
	}
	return []byte(user + ":" + hash), nil
}

// looksHashed reports whether a password field is meant as one of
// mosquitto's hashes rather than a plaintext password.
func looksHashed(field string) bool {
	return strings.HasPrefix(field, "$6$") || strings.HasPrefix(field, "$7$")
}

// isUserLine reports whether the broker would read line as an entry for
// username (whether or not its hash is valid).
func isUserLine(line []byte, username string) bool {
	user, _, kind := splitLine(string(line))
	return kind == lineEntry && user == username
}

// lineEnding picks the ending for lines we add: CRLF if the file's first
// line uses it, so a file edited on Windows stays consistent.
func lineEnding(data []byte) []byte {
	if i := bytes.IndexByte(data, '\n'); i > 0 && data[i-1] == '\r' {
		return []byte("\r\n")
	}
	return []byte("\n")
}

// ending returns line's own line ending, or nil if it has none.
func ending(line []byte) []byte {
	switch {
	case bytes.HasSuffix(line, []byte("\r\n")):
		return []byte("\r\n")
	case bytes.HasSuffix(line, []byte("\n")):
		return []byte("\n")
	}
	return nil
}

// resolve follows symbolic links so that the rename replaces the real file
// rather than the link (mosquitto_passwd does the same with realpath). A
// missing file is fine only when it is about to be created.
func resolve(path string, create bool) (string, error) {
	target, err := filepath.EvalSymlinks(path)
	if err == nil {
		return target, nil
	}
	if create && errors.Is(err, fs.ErrNotExist) {
		return path, nil
	}
	return "", err
}

func readExisting(path string) ([]byte, fs.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if !info.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s is not a regular file", path)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, nil, err
	}
	return data, info, nil
}

// writeAtomic replaces path with data so that a crash or power cut (common
// on a Pi) leaves either the old file or the new one, never a truncated
// mix. old, if not nil, describes the file being replaced, whose owner is
// kept.
func writeAtomic(path string, data []byte, old fs.FileInfo) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("create temporary file: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	// Explicit, because CreateTemp's 0600 is subject to the umask.
	if err := f.Chmod(fileMode); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if old != nil {
		if err := copyOwner(f, old); err != nil {
			return fmt.Errorf("chown %s: %w", tmp, err)
		}
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	// The rename is only durable once the directory entry is on disk.
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
