package storage

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/pimqtt/pimqtt/broker"
	"github.com/pimqtt/pimqtt/mqtttest"
)

// waitTimeout bounds every wait for something that should take
// milliseconds; generous, because -race and a busy machine slow things
// down.
const waitTimeout = 30 * time.Second

// Environment of the test binary re-run as a broker process (TestMain):
// kill -9 needs a process of its own.
const (
	brokerEnv = "PIMQTT_STORAGE_TEST_BROKER" // the store file; set = be the broker
	expiryEnv = "PIMQTT_STORAGE_TEST_MAX_SESSION_EXPIRY"
	// queueEnv raises MaxInflight and MaxQueued, so that a slow
	// subscriber's backlog is queued in its session rather than dropped
	// (what happens at those bounds is the broker's business, not the
	// store's).
	queueEnv = "PIMQTT_STORAGE_TEST_MAX_QUEUE"
)

func TestMain(m *testing.M) {
	if path := os.Getenv(brokerEnv); path != "" {
		os.Exit(brokerProcess(path))
	}
	os.Exit(m.Run())
}

// brokerProcess is pimqtt's broker with a store, on 127.0.0.1:0, saying
// "LISTENING addr" on stdout once it serves. SIGTERM closes it; kill -9 is
// what the tests are about. It ends when its parent's stdin pipe closes,
// so a failed test leaves no process behind.
func brokerProcess(path string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st, err := Open(Options{Path: path, Logger: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	limits := broker.DefaultLimits()
	if v := os.Getenv(expiryEnv); v != "" {
		if limits.MaxSessionExpiry, err = time.ParseDuration(v); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if v := os.Getenv(queueEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		limits.MaxInflight, limits.MaxQueued = uint16(n), int32(n)
	}
	b, err := broker.New(broker.Options{
		Listeners:      []broker.ListenerConfig{{Kind: broker.TCP, Addr: "127.0.0.1:0"}},
		AllowAnonymous: true,
		Limits:         limits,
		Hooks:          []mqtt.Hook{st},
		Logger:         log,
	})
	if err == nil {
		err = b.Start()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	b.OpenNetwork()
	// SIGTERM is caught before the parent learns the address: a SIGTERM
	// sent right after "LISTENING" must close the store, not kill us.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	fmt.Printf("LISTENING %s\n", b.Addrs()[0].Addr)
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop <- syscall.SIGTERM
	}()
	<-stop
	_ = b.Close()
	if err := st.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// brokerProc is a broker process started by a test.
type brokerProc struct {
	cmd    *exec.Cmd
	stdin  io.Closer
	addr   string
	stderr *mqtttest.SyncBuffer
	exited chan struct{}
}

// startBrokerProc runs the test binary as a broker on the store file path
// and returns once it listens.
func startBrokerProc(t *testing.T, path string, env ...string) *brokerProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(append(os.Environ(), brokerEnv+"="+path), env...)
	p := &brokerProc{cmd: cmd, stderr: &mqtttest.SyncBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("broker process log:\n%s", p.stderr.String())
		}
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "LISTENING "); ok {
				addr <- a
			}
		}
	}()
	select {
	case p.addr = <-addr:
	case <-p.exited:
		t.Fatalf("broker process exited before listening:\n%s", p.stderr.String())
	case <-time.After(waitTimeout):
		t.Fatalf("broker process not listening after %v:\n%s", waitTimeout, p.stderr.String())
	}
	return p
}

// kill is kill -9.
func (p *brokerProc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.exited
}

// stop is a clean stop (SIGTERM); it fails the test unless the process
// exits 0.
func (p *brokerProc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(waitTimeout):
		t.Fatalf("broker process still running %v after SIGTERM", waitTimeout)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("broker process exited %d:\n%s", code, p.stderr.String())
	}
}

// inProcess is a broker with a store in the test's own process.
type inProcess struct {
	b    *broker.Broker
	st   *Store
	addr string
	logs *mqtttest.SyncBuffer
	// close closes the broker, then the store, and returns the store's
	// error (at cleanup, a failure).
	close func() error
}

// startInProcess opens a store on path and serves a broker with it on
// 127.0.0.1:0. Closing it (also at cleanup) closes both.
func startInProcess(t *testing.T, opts Options, limits broker.Limits) *inProcess {
	t.Helper()
	logs := &mqtttest.SyncBuffer{}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	st, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	if limits == (broker.Limits{}) {
		limits = broker.DefaultLimits()
	}
	b, err := broker.New(broker.Options{
		Listeners:      []broker.ListenerConfig{{Kind: broker.TCP, Addr: "127.0.0.1:0"}},
		AllowAnonymous: true,
		Limits:         limits,
		Hooks:          []mqtt.Hook{st},
		Logger:         opts.Logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	b.OpenNetwork()
	p := &inProcess{b: b, st: st, addr: b.Addrs()[0].Addr.String(), logs: logs}
	var once sync.Once
	var closeErr error
	closedByTest := false
	p.close = func() error {
		closedByTest = true
		once.Do(func() {
			if err := b.Close(); err != nil {
				t.Errorf("broker close: %v", err)
			}
			closeErr = st.Close()
		})
		return closeErr
	}
	t.Cleanup(func() {
		if closedByTest {
			return
		}
		if err := p.close(); err != nil {
			t.Errorf("store close: %v", err)
		}
	})
	return p
}

// received records the payloads a client got, in order.
type received struct {
	mu    sync.Mutex
	all   []string
	count map[string]int
	cond  *sync.Cond
}

func newReceived() *received {
	r := &received{count: map[string]int{}}
	r.cond = sync.NewCond(&r.mu)
	return r
}

func (r *received) add(payload string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all = append(r.all, payload)
	r.count[payload]++
	r.cond.Broadcast()
}

func (r *received) handler(_ paho.Client, m paho.Message) { r.add(string(m.Payload())) }

// has says how many times payload arrived.
func (r *received) has(payload string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count[payload]
}

// waitAll waits until every payload of want arrived, and returns those
// missing after waitTimeout.
func (r *received) waitAll(want []string) (missing []string) {
	deadline := time.Now().Add(waitTimeout)
	timer := time.AfterFunc(waitTimeout, func() {
		r.mu.Lock()
		r.cond.Broadcast()
		r.mu.Unlock()
	})
	defer timer.Stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		missing = missing[:0]
		for _, p := range want {
			if r.count[p] == 0 {
				missing = append(missing, p)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			return missing
		}
		r.cond.Wait()
	}
}

// total is how many messages arrived.
func (r *received) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.all)
}

// duplicates lists payloads that arrived more than once.
func (r *received) duplicates() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var d []string
	for p, n := range r.count {
		if n > 1 {
			d = append(d, fmt.Sprintf("%s×%d", p, n))
		}
	}
	return d
}

// connect connects a paho client (MQTT 3.1.1) and returns it with the
// CONNACK's session present flag; onMessage, if set, gets every message.
func connect(t *testing.T, addr, id string, clean bool, onMessage paho.MessageHandler) (paho.Client, bool) {
	t.Helper()
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetCleanSession(clean).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(10 * time.Second).SetKeepAlive(60 * time.Second)
	if onMessage != nil {
		o.SetDefaultPublishHandler(onMessage)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("connect %s to %s: %v", id, addr, tok.Error())
	}
	t.Cleanup(func() {
		if c.IsConnected() {
			c.Disconnect(0)
		}
	})
	return c, tok.(*paho.ConnectToken).SessionPresent()
}

func subscribe(t *testing.T, c paho.Client, filter string, qos byte) {
	t.Helper()
	tok := c.Subscribe(filter, qos, nil)
	if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
}

func publish(t *testing.T, c paho.Client, topic string, qos byte, retain bool, payload string) {
	t.Helper()
	tok := c.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// waitFor polls cond (the store's counters, a file) until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting after %v for %s", waitTimeout, what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}

// storePath is a store file in a fresh directory.
func storePath(t *testing.T) string { return filepath.Join(t.TempDir(), "pimqtt.db") }
