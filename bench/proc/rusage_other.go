//go:build !unix

package proc

import (
	"errors"
	"time"
)

// SelfCPUTime is not available here: the benchmarks measure on Linux.
func SelfCPUTime() (time.Duration, error) {
	return 0, errors.New("proc: no getrusage on this system")
}
