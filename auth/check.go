package auth

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// checkError is a CheckPasswordFile error: a message that says what to do, over the system
// error it explains (for errors.Is), whose text would only repeat the path.
type checkError struct {
	msg string
	err error
}

func (e *checkError) Error() string { return e.msg }
func (e *checkError) Unwrap() error { return e.err }

// CheckPasswordFile reports whether SetPassword (with the same create) or DeleteUser (create
// false) could write the password file at path, before anything is asked of the user: a
// password prompted for twice and then lost to a typo in the path is a poor experience. Its
// errors say what is wrong and what to do, in the terms of mosquitto_passwd's flags (-c):
//   - the directory does not exist (it names the directory);
//   - without create, the file does not exist: "use -c to create it";
//   - the file is not a regular file, or cannot be read;
//   - the directory does not let this process create files (the file is replaced through a
//     temporary file beside it), or is on a read-only file system.
//
// Errors wrap the system error (fs.ErrNotExist, fs.ErrPermission, ...). To check that the
// directory is writable a temporary file is created and removed there. SetPassword and
// DeleteUser run this check themselves; a caller that prompts runs it first.
func CheckPasswordFile(path string, create bool) error {
	return checkPasswordFile(path, create, true)
}

// checkPasswordFile is CheckPasswordFile; createAdvice says whether a missing file gets the
// advice to create it (not when a user is to be deleted from it).
func checkPasswordFile(path string, create, createAdvice bool) error {
	if path == "" {
		return errors.New("no password file given")
	}
	target, err := filepath.EvalSymlinks(path)
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		dir := filepath.Dir(path)
		fi, derr := os.Stat(dir)
		switch {
		case errors.Is(derr, fs.ErrNotExist):
			return &checkError{fmt.Sprintf("cannot write %s: directory %s does not exist; create it first (mkdir -p %s)", path, dir, dir), derr}
		case derr != nil:
			return accessError(path, dir, derr)
		case !fi.IsDir():
			return &checkError{fmt.Sprintf("cannot write %s: %s is not a directory", path, dir), syscall.ENOTDIR}
		case !create && createAdvice:
			return &checkError{fmt.Sprintf("%s: no such file; use -c to create it", path), err}
		case !create:
			return &checkError{fmt.Sprintf("%s: no such file", path), err}
		}
		target = path
	default:
		return accessError(path, filepath.Dir(path), err)
	}

	if fi, err := os.Stat(target); err == nil {
		if !fi.Mode().IsRegular() {
			return &checkError{fmt.Sprintf("%s is not a regular file (%s); give the path of a password file", path, modeName(fi.Mode())), syscall.EINVAL}
		}
		if !create {
			f, err := os.Open(target)
			if err != nil {
				return accessError(path, path, err)
			}
			_ = f.Close()
		}
	}

	dir := filepath.Dir(target)
	probe, err := os.CreateTemp(dir, "."+filepath.Base(target)+".check-*")
	if err != nil {
		var why string
		switch {
		case errors.Is(err, syscall.EROFS):
			why = fmt.Sprintf("%s is on a read-only file system", dir)
		case errors.Is(err, fs.ErrPermission):
			why = fmt.Sprintf("no permission to create files in %s (the file is replaced through a temporary file there); run as a user who may, e.g. with sudo", dir)
		default:
			why = fmt.Sprintf("cannot create a file in %s: %v", dir, err)
		}
		return &checkError{fmt.Sprintf("cannot write %s: %s", path, why), err}
	}
	name := probe.Name()
	_ = probe.Close()
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("remove the test file %s: %w", name, err)
	}
	return nil
}

// accessError explains a failure to reach what (the file or its directory) on the way to
// path.
func accessError(path, what string, err error) error {
	if errors.Is(err, fs.ErrPermission) {
		return &checkError{fmt.Sprintf("cannot read %s: permission denied on %s; run as a user who may, e.g. with sudo", path, what), err}
	}
	return fmt.Errorf("cannot read %s: %w", path, err)
}

// modeName names a file type for an error.
func modeName(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "not a regular file"
}
