package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/pimqtt/pimqtt/config"
	"github.com/pimqtt/pimqtt/mqtttest"
)

// Test helpers shared by the end-to-end tests. Every external tool is
// required: a missing one fails the test with the Debian package to
// install, so CI can never pass by skipping.

const testTimeout = 20 * time.Second

// passwordFile makes a password file with the real mosquitto_passwd.
func passwordFile(t testing.TB, users ...string) string {
	t.Helper()
	bin := mqtttest.RequireTool(t, "mosquitto_passwd", "mosquitto")
	path := filepath.Join(t.TempDir(), "passwd")
	for i := 0; i+1 < len(users); i += 2 {
		args := []string{"-b", path, users[i], users[i+1]}
		if i == 0 {
			args = append([]string{"-c"}, args...)
		}
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd %v: %v\n%s", args, err, out)
		}
	}
	return path
}

// testConfig is an all-in-one configuration on loopback ports chosen by the
// kernel, with a simulated line.
func testConfig(passwordFile string) config.Config {
	cfg := config.Default()
	cfg.Broker.Listeners = []config.Listener{
		{Address: "127.0.0.1:0", Kind: config.KindMQTT},
		{Address: "127.0.0.1:0", Kind: config.KindWS},
	}
	cfg.Broker.PasswordFile = passwordFile
	cfg.Device.GPIO = "sim"
	cfg.HTTP.Listen = []string{"127.0.0.1:0"}
	// Never the machine's own store in /var/lib/pimqtt (a Pi running the
	// service has one); the storage tests give a data directory.
	cfg.Storage.Persistence = false
	return cfg
}

// startMain runs the program in-process and returns it with its log.
func startMain(t testing.TB, cfg config.Config) (*Main, *mqtttest.SyncBuffer) {
	t.Helper()
	logs := &mqtttest.SyncBuffer{}
	m := &Main{Config: cfg, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := m.Run(ctx); err != nil {
		t.Fatalf("Run: %v\nlog:\n%s", err, logs)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if t.Failed() {
			t.Logf("program log:\n%s", logs)
		}
	})
	if cfg.Mode == config.ModeAll {
		waitDeviceReady(t, m)
	}
	return m, logs
}

// waitDeviceReady returns once the in-process device has subscribed: it
// publishes its retained status On only after the broker acknowledged its
// subscriptions, so a command published afterwards cannot be missed. It
// listens through the broker's in-memory listener, which needs no password.
func waitDeviceReady(t testing.TB, m *Main) {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker("tcp://in-process:0").
		SetClientID(fmt.Sprintf("test-ready-%d", time.Now().UnixNano())).SetAutoReconnect(false).
		SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) {
			return m.broker.DialInMemory(context.Background())
		})
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
		t.Fatalf("ready check: connect: %v", tok.Error())
	}
	defer c.Disconnect(50)
	on := make(chan struct{}, 1)
	tok := c.Subscribe(m.Config.Device.StatusTopic, 1, func(_ paho.Client, msg paho.Message) {
		if string(msg.Payload()) == `{"status": "On"}` {
			select {
			case on <- struct{}{}:
			default:
			}
		}
	})
	if !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
		t.Fatalf("ready check: subscribe: %v", tok.Error())
	}
	select {
	case <-on:
	case <-time.After(testTimeout):
		t.Fatalf("device did not report On within %v", testTimeout)
	}
}

// addr returns the host and port of the first listener of a kind.
func addr(t testing.TB, m *Main, kind string) (string, string) {
	t.Helper()
	for _, a := range m.BrokerAddrs() {
		if a.Kind == kind {
			host, port, err := net.SplitHostPort(a.Addr.String())
			if err != nil {
				t.Fatal(err)
			}
			return host, port
		}
	}
	t.Fatalf("no %s listener", kind)
	return "", ""
}

// lineValue reads the device's line.
func lineValue(t testing.TB, m *Main) int {
	t.Helper()
	v, err := m.outputs["led"].Value()
	if err != nil {
		t.Fatalf("line value: %v", err)
	}
	return v
}

// message is one received publish.
type message struct {
	topic    string
	payload  string
	retained bool
}

// subscriber is a paho Go client that records what it receives.
type subscriber struct {
	client paho.Client
	msgs   chan message
}

func newSubscriber(t testing.TB, brokerURL, user, password string, topics ...string) *subscriber {
	t.Helper()
	return newSubscriberQoS(t, brokerURL, user, password, 1, topics...)
}

// newSubscriberQoS is newSubscriber subscribing at qos.
func newSubscriberQoS(t testing.TB, brokerURL, user, password string, qos byte, topics ...string) *subscriber {
	t.Helper()
	s := &subscriber{msgs: make(chan message, 256)}
	opts := paho.NewClientOptions().AddBroker(brokerURL).
		SetClientID(fmt.Sprintf("test-sub-%d", time.Now().UnixNano())).
		SetUsername(user).SetPassword(password).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	s.client = paho.NewClient(opts)
	if tok := s.client.Connect(); !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
		t.Fatalf("subscriber connect to %s: %v", brokerURL, tok.Error())
	}
	t.Cleanup(func() { s.client.Disconnect(100) })
	for _, topic := range topics {
		tok := s.client.Subscribe(topic, qos, func(_ paho.Client, m paho.Message) {
			s.msgs <- message{topic: m.Topic(), payload: string(m.Payload()), retained: m.Retained()}
		})
		if !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
			t.Fatalf("subscribe %s: %v", topic, tok.Error())
		}
	}
	return s
}

// waitFor returns the first message on topic with the payload, failing
// after the test timeout.
func (s *subscriber) waitFor(t testing.TB, topic, payload string) message {
	t.Helper()
	deadline := time.After(testTimeout)
	var seen []string
	for {
		select {
		case m := <-s.msgs:
			if m.topic == topic && m.payload == payload {
				return m
			}
			seen = append(seen, m.topic+"="+m.payload)
		case <-deadline:
			t.Fatalf("no %q on %s within %v; saw %v", payload, topic, testTimeout, seen)
		}
	}
}

// publish sends one message with a paho Go client and waits for the PUBACK.
func publish(t testing.TB, brokerURL, user, password, topic string, payload []byte) {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker(brokerURL).
		SetClientID(fmt.Sprintf("test-pub-%d", time.Now().UnixNano())).
		SetUsername(user).SetPassword(password).SetAutoReconnect(false)
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
		t.Fatalf("publisher connect to %s: %v", brokerURL, tok.Error())
	}
	defer c.Disconnect(100)
	if tok := c.Publish(topic, 1, false, payload); !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// process is a pimqtt child process.
type process struct {
	cmd  *exec.Cmd
	logs *mqtttest.SyncBuffer
	done chan error
}

// startProcess runs the test binary of pimqtt with args.
func startProcess(t testing.TB, env []string, args ...string) *process {
	t.Helper()
	if !slices.Contains(args, "--config") && !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--http-listen") }) {
		// The page's default :8080 is a fixed port; tests bind :0.
		args = append(args, "--http-listen", "127.0.0.1:0")
	}
	cmd := exec.Command(pimqttBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	p := &process{cmd: cmd, logs: &mqtttest.SyncBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start pimqtt: %v", err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("pimqtt %v log:\n%s", args, p.logs)
		}
	})
	return p
}

// wait waits for the process to exit and returns its exit code.
func (p *process) wait(t testing.TB) int {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err // let Cleanup's receive return
		if err == nil {
			return 0
		}
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		t.Fatalf("wait: %v", err)
	case <-time.After(testTimeout):
		t.Fatalf("pimqtt did not exit within %v; log:\n%s", testTimeout, p.logs)
	}
	return -1
}

// listenAddr waits for the process's "listening" log line for a listener
// of kind (broker.TCP or broker.WebSocket) and returns the address it
// bound: the tests start pimqtt on 127.0.0.1:0 and read the port back.
func (p *process) listenAddr(t testing.TB, kind string) string {
	t.Helper()
	re := regexp.MustCompile(`\bmsg=listening .*\bkind=` + regexp.QuoteMeta(kind) + ` .*\baddr=(\S+)`)
	return waitLogLine(t, p.logs, "a listening line for kind="+kind, re.FindStringSubmatch)[1]
}

// waitLog waits until one line of the log contains s and each of more.
func waitLog(t testing.TB, logs interface{ String() string }, s string, more ...string) {
	t.Helper()
	parts := append([]string{s}, more...)
	waitLogLine(t, logs, fmt.Sprintf("a line containing %q", parts), func(l string) []string {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				return nil
			}
		}
		return []string{l}
	})
}

// waitLogLine waits until match returns non-nil for a line of the log, and
// returns what it returned; what describes the line for the failure.
func waitLogLine(t testing.TB, logs interface{ String() string }, what string, match func(line string) []string) []string {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		for _, l := range strings.Split(logs.String(), "\n") {
			if m := match(l); m != nil {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s in the log within %v:\n%s", what, testTimeout, logs)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// pimqttBinary builds the real binary once per test run.
func pimqttBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "pimqtt-bin")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "pimqtt")
		out, err := exec.Command("go", "build", "-o", buildPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// lines reads r line by line into a channel, for child processes that
// announce readiness on stdout.
func lines(r io.Reader) <-chan string {
	ch := make(chan string, 64)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			ch <- sc.Text()
		}
	}()
	return ch
}
