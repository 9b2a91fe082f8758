package main

import (
	"path/filepath"
	"testing"

	"github.com/pimqtt/pimqtt/mqtttest"
)

// TestQEMUSelfTest runs each ARM binary under Debian's qemu-user-static:
// the broker starts with its in-process device on a simulated line, a
// client switches the line and reads the state back, and SIGTERM stops
// it cleanly (exit 0).
func TestQEMUSelfTest(t *testing.T) {
	out := released(t)
	for _, tt := range []struct{ bin, qemu string }{
		{"pimqtt-linux-arm64", "qemu-aarch64-static"},
		{"pimqtt-linux-armv6", "qemu-arm-static"},
	} {
		t.Run(tt.bin, func(t *testing.T) {
			qemu := mqtttest.RequireTool(t, tt.qemu, "qemu-user-static")
			addr, stop := startBroker(t, qemu, filepath.Join(out, tt.bin),
				"--config", "/dev/null", "--data-dir", t.TempDir())
			mosquittoToggle(t, addr)
			if err := stop(); err != nil {
				t.Errorf("%s under %s after SIGTERM: %v, want exit 0", tt.bin, tt.qemu, err)
			}
		})
	}
}
