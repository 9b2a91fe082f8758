package auth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pimqtt/pimqtt/mqtttest"
)

// These tests run the real mosquitto tools so that compatibility is checked
// against mosquitto itself rather than against our reading of its sources.

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
	mp := mqtttest.RequireTool(t, "mosquitto_passwd", "mosquitto")
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
	// mosquitto_passwd 2.0.11 creates the file with the umask's mode (0644
	// with the usual 022), which Load warns about (TestLoadExposureWarning):
	// only the lines' warnings are this test's.
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
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

// startBroker runs a real mosquitto on 127.0.0.1 with passwordFile and
// returns its port once it accepts connections.
func startBroker(t *testing.T, passwordFile string) int {
	t.Helper()
	return mqtttest.StartMosquitto(t, mqtttest.MosquittoConfig{
		Extra: []string{"allow_anonymous false", "password_file " + passwordFile},
	}).Port
}

// publish runs mosquitto_pub once and returns its exit code and stderr.
func publish(t *testing.T, port int, user, password string) (int, string) {
	t.Helper()
	bin := mqtttest.RequireTool(t, "mosquitto_pub", "mosquitto-clients")
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
