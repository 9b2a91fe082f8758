//go:build !linux && !darwin && !windows

package telemetry

import "errors"

// readPlatform reads nothing: this system's sources are not known.
func (r Reader) readPlatform(*Snapshot) {}

// statfsFree is not known here.
func statfsFree(string) (uint64, error) { return 0, errors.ErrUnsupported }
