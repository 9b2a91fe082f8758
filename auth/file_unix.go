//go:build unix

package auth

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
)

// copyOwner gives the new file the owner and group of the one it replaces,
// so that running the tool as root does not leave a 0600 root file that a
// broker running as its own user can no longer read. Only root may give a
// file away; for anyone else EPERM is expected and the file stays theirs,
// which is the best they can do.
func copyOwner(f *os.File, old fs.FileInfo) error {
	st, ok := old.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	err := f.Chown(int(st.Uid), int(st.Gid))
	if err != nil && !errors.Is(err, fs.ErrPermission) {
		return err
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
