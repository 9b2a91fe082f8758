//go:build unix

package auth

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadExposureWarning: Load warns, as mosquitto 2.0.16+ does, when any
// "other" permission bit is set (mosquitto checks S_IRWXO), and says how to
// fix it; a group-readable file (root:mosquitto 0640, Debian's advice) is
// not warned about by either.
func TestLoadExposureWarning(t *testing.T) {
	tests := []struct {
		mode fs.FileMode
		warn bool
	}{
		{0o600, false},
		{0o400, false},
		{0o640, false},
		{0o660, false},
		{0o644, true},
		{0o604, true},
		{0o602, true},
		{0o601, true},
		{0o666, true},
	}
	for _, tt := range tests {
		t.Run(tt.mode.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "passwd")
			if err := os.WriteFile(path, []byte(piLine+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			logger, buf := captureLogger()
			p, err := Load(path, logger)
			if err != nil {
				t.Fatal(err)
			}
			if !p.Check("pi", "raspberry") {
				t.Error("the file is not loaded as usual")
			}
			warns := decodeLogs(t, buf, "WARN")
			if !tt.warn {
				if len(warns) != 0 {
					t.Errorf("warnings: %s", buf)
				}
				return
			}
			if len(warns) != 1 || !strings.Contains(warns[0].Msg, "every user of this machine may read it") ||
				!strings.Contains(buf.String(), "chmod o-rwx "+path) {
				t.Errorf("want one warning naming the fix, got: %s", buf)
			}
		})
	}
}

func TestFileExposure(t *testing.T) {
	tests := []struct {
		mode          fs.FileMode
		group, others bool
		who           string
	}{
		{0o600, false, false, "nobody else"},
		{0o640, true, false, "its group"},
		{0o620, true, false, "its group"},
		{0o604, false, true, "every user"},
		{0o644, true, true, "its group and every user"},
		{0o777, true, true, "its group and every user"},
	}
	for _, tt := range tests {
		path := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, tt.mode); err != nil {
			t.Fatal(err)
		}
		e, err := FileExposure(path)
		if err != nil {
			t.Fatal(err)
		}
		if e.Group() != tt.group || e.Others() != tt.others || e.Exposed() != (tt.group || tt.others) || e.Who() != tt.who || e.Mode != tt.mode {
			t.Errorf("%v: got mode %v group %v others %v who %q", tt.mode, e.Mode, e.Group(), e.Others(), e.Who())
		}
	}
	if _, err := FileExposure(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("FileExposure of a missing file succeeded")
	}
}
