package telemetry

// readPlatform reads procfs and sysfs.
func (r Reader) readPlatform(s *Snapshot) {
	proc, sys := r.Proc, r.Sys
	if proc == "" {
		proc = "/proc"
	}
	if sys == "" {
		sys = "/sys"
	}
	readFS(proc, sys, s)
}
