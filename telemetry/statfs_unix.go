//go:build linux || darwin

package telemetry

import "golang.org/x/sys/unix"

// statfsFree is the space an unprivileged user may still write on path's file system
// (f_bavail, not f_bfree: the blocks reserved for root are no use to pimqtt).
func statfsFree(path string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, err
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}
