package telemetry

import (
	"time"

	"golang.org/x/sys/unix"
)

// readPlatform reads uptime and load from sysctl; macOS gives no simple figure of available
// memory, so memory is left out.
func (r Reader) readPlatform(s *Snapshot) {
	if tv, err := unix.SysctlTimeval("kern.boottime"); err == nil {
		if up := int64(time.Since(time.Unix(tv.Unix())) / time.Second); up >= 0 {
			s.UptimeS = &up
		}
	}
	if raw, err := unix.SysctlRaw("vm.loadavg"); err == nil {
		if l, ok := parseSysctlLoadavg(raw); ok {
			s.Load1m, s.Load5m, s.Load15m = &l[0], &l[1], &l[2]
		}
	}
}
