package auth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// These tests run the real mosquitto tools so that compatibility is checked
// against mosquitto itself rather than against our reading of its sources.

// needTool returns the path of a mosquitto program or fails the test with
// the Debian package that provides it: skipping would let an incompatible
// change through on a machine that merely lacks the tools.
func needTool(t *testing.T, name, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found in PATH (%v): install the Debian package %q (apt-get install %s)",
			name, err, debianPackage, debianPackage)
	}
	return path
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
}

// TestMosquittoPasswdFilesAccepted loads files written by the real
// mosquitto_passwd, in both of its hash formats.
func TestMosquittoPasswdFilesAccepted(t *testing.T) {
	mp := needTool(t, "mosquitto_passwd", "mosquitto")
	path := filepath.Join(t.TempDir(), "passwd")
	run(t, mp, "-c", "-b", path, "alice", "alice-pw")
	run(t, mp, "-b", path, "bob", "bob pw with spaces: and colon")
	run(t, mp, "-H", "sha512", "-b", path, "carol", "pässwörd ✓")
	run(t, mp, "-b", path, "alice", "alice-new") // update in place

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "carol:$6$") || !strings.Contains(string(data), "alice:$7$101$") {
		t.Fatalf("unexpected mosquitto_passwd output:\n%s", data)
	}
	logger, logs := captureLogger()
	p, err := Load(path, logger)
	if err != nil {
		t.Fatal(err)
	}
	if p.Len() != 3 {
		t.Errorf("Len() = %d, want 3", p.Len())
	}
	if w := decodeLogs(t, logs, "WARN"); len(w) != 0 {
		t.Errorf("warnings for a mosquitto_passwd file: %+v", w)
	}
	tests := []struct {
		user, password string
		want           bool
	}{
		{"alice", "alice-new", true},
		{"alice", "alice-pw", false},
		{"bob", "bob pw with spaces: and colon", true},
		{"bob", "bob pw with spaces", false},
		{"carol", "pässwörd ✓", true},
		{"carol", "passwörd ✓", false},
		{"dave", "alice-new", false},
	}
	for _, tt := range tests {
		if got := p.Check(tt.user, tt.password); got != tt.want {
			t.Errorf("Check(%q, %q) = %v, want %v", tt.user, tt.password, got, tt.want)
		}
	}
}

// freePort asks the kernel for an unused port. Another process could take
// it before the broker binds; the broker would then fail to start and the
// test would say so.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startBroker runs a real mosquitto on 127.0.0.1 with passwordFile and
// returns its port once it accepts connections.
func startBroker(t *testing.T, passwordFile string) int {
	t.Helper()
	bin := needTool(t, "mosquitto", "mosquitto")
	dir := t.TempDir()
	port := freePort(t)
	conf := filepath.Join(dir, "mosquitto.conf")
	// "user root": the Debian broker started as root otherwise switches
	// to user mosquitto, which cannot read our 0600 file.
	config := fmt.Sprintf(`listener %d 127.0.0.1
allow_anonymous false
password_file %s
user root
persistence false
log_dest stderr
`, port, passwordFile)
	if err := os.WriteFile(conf, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "-c", conf)
	var stderr lockedBuffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start mosquitto: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cancel() // kills the broker
		<-exited
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", stderr.String())
		}
	})

	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			t.Fatalf("mosquitto exited before accepting connections: %v\n%s", err, stderr.String())
		default:
		}
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			return port
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto not accepting on %s after 10s: %v\n%s", addr, err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond) // poll interval, bounded by the deadline
	}
}

// publish runs mosquitto_pub once and returns its exit code and stderr.
func publish(t *testing.T, port int, user, password string) (int, string) {
	t.Helper()
	bin := needTool(t, "mosquitto_pub", "mosquitto-clients")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-h", "127.0.0.1", "-p", fmt.Sprint(port),
		"-u", user, "-P", password, "-t", "t", "-m", "x")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return 0, stderr.String()
	case errors.As(err, &exitErr):
		return exitErr.ExitCode(), stderr.String()
	default:
		t.Fatalf("run mosquitto_pub: %v", err)
		return -1, ""
	}
}

type brokerLogin struct {
	user, password string
	want           bool
}

func checkBrokerLogins(t *testing.T, port int, logins []brokerLogin) {
	t.Helper()
	for _, l := range logins {
		code, stderr := publish(t, port, l.user, l.password)
		switch {
		case l.want && code != 0:
			t.Errorf("mosquitto_pub -u %q -P %q: exit %d, want 0\n%s", l.user, l.password, code, stderr)
		case !l.want && code == 0:
			t.Errorf("mosquitto_pub -u %q -P %q succeeded, want refusal", l.user, l.password)
		case !l.want && !strings.Contains(stderr, "not authorised") && !strings.Contains(stderr, "bad user name or password"):
			t.Errorf("mosquitto_pub -u %q -P %q: exit %d, stderr %q does not say not authorised", l.user, l.password, code, stderr)
		}
	}
}

// TestBrokerAcceptsSetPasswordFile is the end-to-end check that files we
// write work in place of mosquitto_passwd's.
func TestBrokerAcceptsSetPasswordFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	steps := []func() error{
		func() error { return SetPassword(path, "alice", "old-pw", true) },
		func() error { return SetPassword(path, "bob", "bob pw: with colon", false) },
		func() error { return SetPassword(path, "émile", "pässwörd ✓", false) },
		func() error { return SetPassword(path, "alice", "new-pw", false) },
		func() error { return SetPassword(path, "gone", "pw", false) },
		func() error { return DeleteUser(path, "gone") },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	port := startBroker(t, path)
	checkBrokerLogins(t, port, []brokerLogin{
		{"alice", "new-pw", true},
		{"bob", "bob pw: with colon", true},
		{"émile", "pässwörd ✓", true},
		{"alice", "old-pw", false},
		{"alice", "wrong", false},
		{"gone", "pw", false},
		{"nobody", "new-pw", false},
	})
}

// TestBrokerAcceptsVectors checks that the python-computed vectors in
// testdata mean to mosquitto what they mean to us. Only 12-byte salts are
// used: mosquitto 2.0 refuses every other salt length.
func TestBrokerAcceptsVectors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(path, []byte(piLine+"\n"+legacyLine+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := startBroker(t, path)
	checkBrokerLogins(t, port, []brokerLogin{
		{"pi", "raspberry", true},
		{"legacy", "hunter2", true},
		{"pi", "hunter2", false},
	})
}
