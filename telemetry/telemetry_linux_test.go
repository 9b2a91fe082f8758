package telemetry

import (
	"testing"
	"time"
)

// Reader.Read on Linux reads the trees given as Proc and Sys, stamps the time in UTC and
// reports the data directory's free space.
func TestReaderRead(t *testing.T) {
	at := time.Date(2025, 3, 1, 12, 30, 5, 999, time.FixedZone("CET", 3600))
	r := Reader{DataDir: t.TempDir(), Proc: "testdata/pi4/proc", Sys: "testdata/pi4/sys", Now: func() time.Time { return at }}
	s := r.Read()
	if s.Time != "2025-03-01T11:30:05Z" {
		t.Errorf("time = %q, want 2025-03-01T11:30:05Z", s.Time)
	}
	if s.CPUTempC == nil || *s.CPUTempC != 48.686 || s.MemAvailableBytes == nil || *s.MemAvailableBytes != 2986471424 {
		t.Errorf("the fake tree was not read: %+v", s)
	}
	if s.DiskFreeBytes == nil || *s.DiskFreeBytes == 0 {
		t.Fatalf("disk_free_bytes = %v, want the temporary directory's free space", s.DiskFreeBytes)
	}
	if (Reader{Proc: "testdata/pi4/proc", Sys: "testdata/pi4/sys"}).Read().DiskFreeBytes != nil {
		t.Error("disk_free_bytes reported without a data directory")
	}
}
