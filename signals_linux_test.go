package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSIGHUPDuringStartup: `systemctl reload` can come while pimqtt is
// still starting. The SIGHUP handler used to be installed only after
// start-up, so Go's default action ended the process. Here start-up is
// held inside the read of the password file (a FIFO the test writes only
// after the signal), so the signal lands exactly there.
func TestSIGHUPDuringStartup(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "passwd")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	p := startProcess(t, nil, "--mode", "broker", "--password-file", fifo,
		"--listen", "127.0.0.1:0", "--ws-listen", "", "--log-level", "debug")
	// Opening the write end blocks until pimqtt opens the read end, which
	// it does while starting.
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("open fifo: %v", err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// The password file written after the signal: start-up goes on with it.
	feed := func() {
		t.Helper()
		if _, err := w.WriteString("phone:$6$c2FsdA==$AAAA\n"); err != nil {
			t.Fatalf("write fifo: %v (did the SIGHUP end pimqtt?)\n%s", err, p.logs)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	feed()
	waitLog(t, p.logs, "msg=listening")
	// The reload asked for during start-up is carried out once running:
	// it reads the FIFO again.
	if w, err = os.OpenFile(fifo, os.O_WRONLY, 0); err != nil {
		t.Fatalf("open fifo for the reload: %v", err)
	}
	feed()
	waitLogCount(t, p.logs, "password file loaded", 2)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit %d; log:\n%s", code, p.logs)
	}
}

// waitLogCount waits until s occurs n times in the log.
func waitLogCount(t *testing.T, logs interface{ String() string }, s string, n int) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for strings.Count(logs.String(), s) < n {
		if time.Now().After(deadline) {
			t.Fatalf("log never contained %q %d times:\n%s", s, n, logs)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
}
