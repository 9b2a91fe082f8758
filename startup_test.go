package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/pimqtt/pimqtt/broker"
	"github.com/pimqtt/pimqtt/config"
)

// Tests of what start-up promises: what is logged about access, what a
// port conflict says, that "listening" means the LED obeys, and what
// --version prints.

// TestAccessLogSaysWhoMayConnect: the start-up line about access must
// describe what is actually bound. It used to say "default listeners bind
// loopback only" for --allow-anonymous --listen 0.0.0.0:PORT, which is open
// to the whole network.
func TestAccessLogSaysWhoMayConnect(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		want    []string
		notWant []string
	}{
		{
			name: "defaults without password file",
			args: nil,
			want: []string{"level=WARN", "listening on loopback only", "anyone on this machine", "pimqtt passwd -c", "tcp 127.0.0.1:1883"},
		},
		{
			name:    "allow-anonymous on all interfaces",
			args:    []string{"--allow-anonymous", "--listen", "0.0.0.0:1883", "--ws-listen", ""},
			want:    []string{"level=WARN", "over the network", "without a password", "tcp 0.0.0.0:1883"},
			notWant: []string{"loopback only"},
		},
		{
			name:    "password file",
			args:    []string{"--password-file", "/etc/pimqtt/passwd"},
			want:    []string{"level=INFO", "only users in the password file may connect", "tcp :1883", "ws :8083"},
			notWant: []string{"loopback only", "without a password"},
		},
		{
			name:    "password file and allow-anonymous",
			args:    []string{"--password-file", "/etc/pimqtt/passwd", "--allow-anonymous"},
			want:    []string{"level=WARN", "clients without a user name may connect"},
			notWant: []string{"loopback only"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := resolve(t, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			listeners, err := brokerListeners(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			logAccess(slog.New(slog.NewTextHandler(&logs, nil)), cfg, listeners)
			for _, w := range tc.want {
				if !strings.Contains(logs.String(), w) {
					t.Errorf("log lacks %q:\n%s", w, logs.String())
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(logs.String(), w) {
					t.Errorf("log says %q:\n%s", w, logs.String())
				}
			}
		})
	}
}

// TestPortInUseHint: a taken port names the address and the usual culprit
// on a Pi, Debian's mosquitto service.
func TestPortInUseHint(t *testing.T) {
	hold, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	cfg := testConfig("")
	cfg.Broker.Listeners = []config.Listener{{Address: hold.Addr().String(), Kind: config.KindMQTT}}
	m := &Main{Config: cfg, Logger: discardLogger()}
	err = m.Run(context.Background())
	if err == nil {
		_ = m.Close()
		t.Fatal("Run succeeded on a port that is in use")
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("error does not wrap EADDRINUSE: %v", err)
	}
	for _, want := range []string{hold.Addr().String(), "sudo systemctl disable --now mosquitto", "--listen"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

// TestListeningMeansReady: once Run has returned (and the network
// listeners are open) the device has subscribed and published its retained
// status and state, so a command sent at once is obeyed. Before, the
// network listeners opened before the device had even connected, and a
// command sent the moment the port answered was dropped.
func TestListeningMeansReady(t *testing.T) {
	for i := range 5 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			m := &Main{Config: testConfig(""), Logger: discardLogger()}
			if err := m.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			defer m.Close()

			// The retained status and state are there already: a client
			// subscribing now gets them at once, with no device activity
			// to wait for.
			retained := retainedNow(t, m, "raspberry/status", "raspberry/led/state")
			if got := retained["raspberry/status"]; got != `{"status": "On"}` {
				t.Errorf("retained status right after Run = %q, want On", got)
			}
			if got := retained["raspberry/led/state"]; got != "0" {
				t.Errorf("retained state right after Run = %q, want 0", got)
			}

			// And a command sent over TCP at once is obeyed.
			host, port := addr(t, m, broker.TCP)
			state := newSubscriber(t, "tcp://"+net.JoinHostPort(host, port), "", "", "raspberry/led/state")
			publish(t, "tcp://"+net.JoinHostPort(host, port), "", "", "raspberry/led", []byte("1"))
			state.waitFor(t, "raspberry/led/state", "1")
		})
	}
}

// retainedNow subscribes through the in-memory listener and returns the
// retained messages the broker had for topics at that moment. Mochi queues
// them while it handles the SUBSCRIBE; a message the client then publishes
// to a fence topic it also subscribed to is queued behind them, so once
// the fence arrives every retained message has.
func retainedNow(t *testing.T, m *Main, topics ...string) map[string]string {
	t.Helper()
	const fence = "pimqtt-test/fence"
	got := make(chan [2]string, 16)
	opts := paho.NewClientOptions().AddBroker("tcp://in-process:0").
		SetClientID(fmt.Sprintf("test-retained-%d", time.Now().UnixNano())).SetAutoReconnect(false).
		SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) {
			return m.broker.DialInMemory(context.Background())
		})
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(50)
	filters := map[string]byte{fence: 0}
	for _, topic := range topics {
		filters[topic] = 0
	}
	tok := c.SubscribeMultiple(filters, func(_ paho.Client, msg paho.Message) {
		if msg.Retained() || msg.Topic() == fence {
			got <- [2]string{msg.Topic(), string(msg.Payload())}
		}
	})
	if !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	if tok := c.Publish(fence, 0, false, "x"); !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
		t.Fatalf("fence publish: %v", tok.Error())
	}
	out := map[string]string{}
	deadline := time.After(testTimeout)
	for {
		select {
		case kv := <-got:
			if kv[0] == fence {
				return out
			}
			out[kv[0]] = kv[1]
		case <-deadline:
			t.Fatalf("fence message never arrived; retained so far: %v", out)
		}
	}
}

// TestVersion: --version names the module version (or the one set at
// build time), the commit and the Go version, for bug reports.
func TestVersion(t *testing.T) {
	gitBin, err := exec.LookPath("git")
	if err != nil {
		t.Fatal("git is needed to check the commit in --version: apt-get install git")
	}
	revOut, err := exec.Command(gitBin, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatalf("git rev-parse HEAD: %v", err)
	}
	rev := strings.TrimSpace(string(revOut))
	bin := filepath.Join(t.TempDir(), "pimqtt")
	build := exec.Command("go", "build", "-buildvcs=true", "-ldflags=-X main.version=v9.8.7-test", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("pimqtt --version: %v\n%s", err, out)
	}
	for _, want := range []string{"pimqtt v9.8.7-test", "commit " + rev, runtime.Version(), runtime.GOOS + "/" + runtime.GOARCH} {
		if !strings.Contains(string(out), want) {
			t.Errorf("--version output lacks %q: %s", want, out)
		}
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestPasswdChecksPathBeforePrompting: a password file in a directory that
// does not exist, or a missing file without -c, is refused before either
// password prompt, saying what to do.
func TestPasswdChecksPathBeforePrompting(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"missing directory", []string{"passwd", filepath.Join(dir, "nope", "passwd"), "phone"}, "mkdir -p " + filepath.Join(dir, "nope")},
		{"missing file without -c", []string{"passwd", filepath.Join(dir, "passwd"), "phone"}, "use -c to create it"},
		{"missing file without -c, batch", []string{"passwd", "-b", filepath.Join(dir, "passwd"), "phone", "pw"}, "use -c to create it"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(pimqttBinary(t), tc.args...)
			cmd.Stdin = strings.NewReader("secret\nsecret\n")
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("exit 0: %s", out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("output lacks %q: %s", tc.want, out)
			}
			if strings.Contains(string(out), "Password:") {
				t.Errorf("prompted before refusing the path: %s", out)
			}
		})
	}
}

// TestGPIOListWithoutChips: `pimqtt gpio` on a machine without GPIO chips
// (CI, a laptop) says so and names --gpio sim; on a machine with chips it
// lists them.
func TestGPIOListWithoutChips(t *testing.T) {
	chips, _ := filepath.Glob("/dev/gpiochip*")
	out, err := exec.Command(pimqttBinary(t), "gpio").CombinedOutput()
	if len(chips) > 0 {
		if err != nil {
			t.Fatalf("pimqtt gpio with chips %v: %v\n%s", chips, err, out)
		}
		return
	}
	if err == nil {
		t.Fatalf("pimqtt gpio without chips exited 0: %s", out)
	}
	for _, want := range []string{"no GPIO chip", "--gpio sim"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q: %s", want, out)
		}
	}
}
