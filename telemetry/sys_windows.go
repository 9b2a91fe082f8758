package telemetry

import (
	"time"

	"golang.org/x/sys/windows"
)

// readPlatform reads the uptime; Windows has no load average, and memory is left out.
func (r Reader) readPlatform(s *Snapshot) {
	up := int64(windows.DurationSinceBoot() / time.Second)
	s.UptimeS = &up
}

// statfsFree is the space the calling user may still write on path's volume.
func statfsFree(path string) (uint64, error) {
	p, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return 0, err
	}
	var free uint64
	if err := windows.GetDiskFreeSpaceEx(p, &free, nil, nil); err != nil {
		return 0, err
	}
	return free, nil
}
