package auth

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
)

// nobody is the uid and gid the permission tests act as.
const nobody = 65534

// asNobody runs f with the file-system identity of nobody, so that permissions apply even when
// the tests run as root (as CI does): on its own locked thread it sets the fsuid and fsgid,
// which the kernel checks file access against, and with a non-zero fsuid it also drops the
// capabilities that let root override permissions. Run as anyone else, f just runs.
func asNobody(t *testing.T, f func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		f()
		return
	}
	runtime.LockOSThread()
	// The thread is not unlocked on failure to restore: the runtime then ends it with the
	// goroutine rather than reuse it with another identity.
	setfs := func(call uintptr, id int) {
		// setfsuid/setfsgid return the previous id, never an error: check the result instead.
		syscall.Syscall(call, uintptr(id), 0, 0)
		if prev, _, _ := syscall.Syscall(call, ^uintptr(0), 0, 0); int(prev) != id {
			t.Fatalf("syscall %d to %d: still %d", call, id, prev)
		}
	}
	setfs(syscall.SYS_SETFSGID, nobody)
	setfs(syscall.SYS_SETFSUID, nobody)
	defer func() {
		setfs(syscall.SYS_SETFSUID, 0)
		setfs(syscall.SYS_SETFSGID, 0)
		runtime.UnlockOSThread()
	}()
	f()
}

// openTempDir is t.TempDir, reachable by nobody (t.TempDir's directories are 0700).
func openTempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestCheckPasswordFilePermissions: a password file whose directory this user may not write
// to, or which it may not read, fails the check with what to do, before a prompt and before
// SetPassword writes anything.
func TestCheckPasswordFilePermissions(t *testing.T) {
	dir := openTempDir(t)
	p := func(name string) string { return filepath.Join(dir, name) }
	// Made open, filled, then closed down to modes that deny even their
	// owner, so the test means the same run as root (through asNobody) or
	// as a normal user, who owns these files.
	for _, d := range []string{"readonly", "writable", "locked"} {
		if err := os.Mkdir(p(d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"readonly/passwd", "writable/secret"} {
		if err := os.WriteFile(p(name), []byte(piLine+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	modes := []struct {
		name string
		mode os.FileMode
	}{{"readonly/passwd", 0o644}, {"writable/secret", 0o000}, {"readonly", 0o555}, {"writable", 0o777}, {"locked", 0o000}}
	for _, m := range modes {
		if err := os.Chmod(p(m.name), m.mode); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		// Let TempDir's clean-up in again.
		for _, d := range []string{"readonly", "writable", "locked"} {
			_ = os.Chmod(p(d), 0o700)
		}
	})

	tests := []struct {
		path   string
		create bool
		want   string
	}{
		{p("readonly/passwd"), false, "cannot write " + p("readonly/passwd") + ": no permission to create files in " + p("readonly") +
			" (the file is replaced through a temporary file there); run as a user who may, e.g. with sudo"},
		{p("readonly/new"), true, "cannot write " + p("readonly/new") + ": no permission to create files in " + p("readonly") +
			" (the file is replaced through a temporary file there); run as a user who may, e.g. with sudo"},
		{p("writable/secret"), false, "cannot read " + p("writable/secret") + ": permission denied on " + p("writable/secret") +
			"; run as a user who may, e.g. with sudo"},
		{p("locked/passwd"), false, "cannot read " + p("locked/passwd") + ": permission denied on " + p("locked") +
			"; run as a user who may, e.g. with sudo"},
		{p("writable/new"), true, ""}, // the control: nobody may create files here
	}
	asNobody(t, func() {
		for _, tt := range tests {
			err := CheckPasswordFile(tt.path, tt.create)
			if tt.want == "" {
				if err != nil {
					t.Errorf("CheckPasswordFile(%s, create=%v) = %v, want nil", tt.path, tt.create, err)
				}
				continue
			}
			if err == nil || err.Error() != tt.want || !errors.Is(err, fs.ErrPermission) {
				t.Errorf("CheckPasswordFile(%s, create=%v) = %v\nwant %s (wrapping fs.ErrPermission)", tt.path, tt.create, err, tt.want)
			}
			if err := SetPassword(tt.path, "alice", "pw", tt.create); err == nil || err.Error() != tt.want {
				t.Errorf("SetPassword(%s, create=%v) = %v\nwant %s", tt.path, tt.create, err, tt.want)
			}
		}
	})
	if data, err := os.ReadFile(p("readonly/passwd")); err != nil || string(data) != piLine+"\n" {
		t.Errorf("readonly/passwd now %q, %v", data, err)
	}
	if names := listDir(t, p("writable")); len(names) != 1 {
		t.Errorf("writable/ holds %v, want only secret", names)
	}
}
