package auth

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
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
	if err := ValidateUsername(username); err != nil {
		return fmt.Errorf("set password in %s: %w", path, err)
	}
	if err := CheckPasswordFile(path, create); err != nil {
		return err
	}
	hash, err := HashPassword(password)
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
	if err := writeAtomic(target, out.Bytes(), info); err != nil {
		return fmt.Errorf("set password in %s: %w", path, err)
	}
	return nil
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
	var out bytes.Buffer
	found := false
	for _, line := range bytes.SplitAfter(old, []byte{'\n'}) {
		if isUserLine(line, username) {
			found = true
			continue
		}
		out.Write(line)
	}
	if !found {
		return fmt.Errorf("delete user %q from %s: %w", username, path, ErrUserNotFound)
	}
	if err := writeAtomic(target, out.Bytes(), info); err != nil {
		return fmt.Errorf("delete user from %s: %w", path, err)
	}
	return nil
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
