//go:build !linux

package systemd

// monotonicUsec has nothing to give where there is no systemd.
func monotonicUsec() (uint64, bool) { return 0, false }
