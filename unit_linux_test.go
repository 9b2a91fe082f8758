package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/pimqtt/pimqtt/mqtttest"
)

// unitFile is the systemd unit the Debian package installs.
const unitFile = "dist/pimqtt.service"

// maxExposure is the bar for `systemd-analyze security`; Debian
// 12's mosquitto unit scores 9.6.
const maxExposure = 2.0

// TestUnitSecurity scores the packaged unit with systemd-analyze security
// (offline: no systemd needs to run here) and fails above maxExposure.
func TestUnitSecurity(t *testing.T) {
	analyze := mqtttest.RequireTool(t, "systemd-analyze", "systemd")
	out, err := exec.Command(analyze, "security", "--offline=yes", "--no-pager", unitFile).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for pimqtt\.service: (\d+\.\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze security exposure of %s: %.1f (bar %.1f)", unitFile, score, maxExposure)
	if score > maxExposure {
		t.Fatalf("exposure %.1f is above %.1f; what counts:\n%s", score, maxExposure, out)
	}
}

// TestUnitVerify runs systemd-analyze verify on the packaged unit, with
// ExecStart pointing at a freshly built pimqtt (verify checks the command
// is executable, and /usr/bin/pimqtt exists only once installed). Any
// complaint about the unit fails the test.
func TestUnitVerify(t *testing.T) {
	analyze := mqtttest.RequireTool(t, "systemd-analyze", "systemd")
	unit, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	const exec0 = "ExecStart=/usr/bin/pimqtt "
	if !strings.Contains(string(unit), "\n"+exec0) {
		t.Fatalf("%s has no %q line", unitFile, exec0)
	}
	copied := filepath.Join(t.TempDir(), "pimqtt.service")
	unit = []byte(strings.Replace(string(unit), exec0, "ExecStart="+pimqttBinary(t)+" ", 1))
	if err := os.WriteFile(copied, unit, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", "--no-pager", copied).CombinedOutput()
	if err != nil || strings.Contains(string(out), "pimqtt.service") {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
