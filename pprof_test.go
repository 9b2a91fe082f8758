package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestProfiler serves the profiler on a loopback port the kernel picks,
// answers a goroutine profile, and stops with the program.
func TestProfiler(t *testing.T) {
	cfg := testConfig(passwordFile(t, "phone", "secret"))
	cfg.Debug.PprofListen = "127.0.0.1:0"
	m, logs := startMain(t, cfg)
	a := m.ProfilerAddr()
	if a == nil {
		t.Fatal("no profiler address with pprof_listen set")
	}
	waitLog(t, logs, "profiler listening", a.String())
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + a.String() + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine profile:") {
		t.Fatalf("GET goroutine profile: %s\n%.300s", resp.Status, body)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Get("http://" + a.String() + "/debug/pprof/"); err == nil {
		t.Error("the profiler still answers after Close")
	}
}

// TestProfilerOffByDefault: no profiler unless asked for.
func TestProfilerOffByDefault(t *testing.T) {
	m, _ := startMain(t, testConfig(passwordFile(t, "phone", "secret")))
	if a := m.ProfilerAddr(); a != nil {
		t.Fatalf("profiler on %s without pprof_listen", a)
	}
}
