//go:build !linux

package storage

import "testing"

// canMount: only Linux tests mount a tmpfs; elsewhere the faults are
// permissions and an injected write error.
func canMount() bool { return false }

func mountTmpfs(t *testing.T, _, _ string) { t.Fatal("mountTmpfs: Linux only") }

func remount(t *testing.T, _ string, _ bool) { t.Fatal("remount: Linux only") }
