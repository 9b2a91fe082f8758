package storage

import (
	"os"
	"syscall"
	"testing"
)

// canMount says whether the test may mount file systems (root on Linux):
// then the faults are real ones of a small tmpfs.
func canMount() bool { return os.Geteuid() == 0 }

// mountTmpfs mounts a tmpfs of size bytes on dir until the test ends.
func mountTmpfs(t *testing.T, dir string, size string) {
	t.Helper()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0755"); err != nil {
		t.Fatalf("mount a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
}

// remount makes the tmpfs on dir read-only or writable again.
func remount(t *testing.T, dir string, readOnly bool) {
	t.Helper()
	flags := uintptr(syscall.MS_REMOUNT)
	if readOnly {
		flags |= syscall.MS_RDONLY
	}
	if err := syscall.Mount("", dir, "", flags, ""); err != nil {
		t.Fatalf("remount %s (read-only %v): %v", dir, readOnly, err)
	}
}
