package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pimqtt/pimqtt/bench/proc"
	"github.com/pimqtt/pimqtt/mqtttest"
)

// brokerName is a column of the table.
type brokerName string

const (
	mosquitto brokerName = "mosquitto"
	pimqtt    brokerName = "pimqtt"
)

// brokers in the order each repetition runs them (A B A B …).
var brokers = []brokerName{mosquitto, pimqtt}

// target is a running broker: its addresses on 127.0.0.1 and its process.
type target struct {
	tcp, ws string // host:port
	pid     int
	// stop ends the broker; failed says the scenario failed, which
	// prints the broker's log (mosquitto) or warnings (pimqtt).
	stop func(failed bool)
}

// env is what every scenario shares: the binaries and the password file.
type env struct {
	cfg    config
	dir    string // temporary directory of the run
	passwd string // mosquitto-format password file with user/password
	user   string
	pass   string
}

// benchUser and benchPassword are the one account of the password file.
const (
	benchUser     = "bench"
	benchPassword = "bench-password"
)

// startBroker starts a fresh broker of that name for one scenario.
func (e *env) startBroker(ctx context.Context, name brokerName) (*target, error) {
	switch name {
	case mosquitto:
		return e.startMosquitto(true)
	case pimqtt:
		return e.startPimqtt(ctx, "--mode", "broker", "--ws-listen", "127.0.0.1:0")
	}
	return nil, fmt.Errorf("unknown broker %q", name)
}

// startPimqtt runs the pimqtt binary on 127.0.0.1:0 with the password
// file, a fresh data directory (so persistence is on, as on a Pi whose
// /var/lib/pimqtt exists), room for the connection scenario's clients,
// then args and the user's -pimqtt-args.
func (e *env) startPimqtt(ctx context.Context, args ...string) (*target, error) {
	dir, err := os.MkdirTemp(e.dir, "pimqtt-data")
	if err != nil {
		return nil, fmt.Errorf("pimqtt data directory: %w", err)
	}
	maxClients := strconv.Itoa(max(5000, 2*e.cfg.clients))
	all := append([]string{"--listen", "127.0.0.1:0", "--http-listen", "", "--password-file", e.passwd,
		"--data-dir", dir, "--max-clients", maxClients, "--log-level", "info"}, args...)
	all = append(all, e.cfg.pimqttArgs...)
	kinds := []string{"tcp"}
	for i, a := range all {
		if a == "--ws-listen" && i+1 < len(all) && all[i+1] != "" {
			kinds = append(kinds, "ws")
		}
	}
	p, err := proc.StartPimqtt(ctx, e.cfg.pimqtt, all, kinds...)
	if err != nil {
		return nil, err
	}
	return &target{tcp: p.Addr("tcp"), ws: p.Addr("ws"), pid: p.PID(), stop: func(failed bool) {
		p.Close()
		if w := p.Warnings(); failed && len(w) > 0 {
			fmt.Fprintf(os.Stderr, "pimqtt's first warnings:\n  %s\n", strings.Join(w, "\n  "))
		}
	}}, nil
}

// startMosquitto runs Debian's mosquitto with a TCP listener, a WebSocket
// one if ws, and the password file, through mqtttest's starter (it picks
// the ports mosquitto must be told, and picks again when one was taken).
// It returns once mosquitto logs "running", which with a WebSocket
// listener comes some 30 ms after the TCP listener accepts (libwebsockets
// starts meanwhile).
func (e *env) startMosquitto(ws bool) (t *target, err error) {
	tb := &standaloneTB{dir: e.dir}
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(fatal)
			if !ok {
				panic(r)
			}
			tb.failed = true
			tb.cleanup()
			t, err = nil, fmt.Errorf("mosquitto: %s", f)
		}
	}()
	m := mqtttest.StartMosquitto(tb, mqtttest.MosquittoConfig{WebSocket: ws,
		Extra: []string{"allow_anonymous false", "password_file " + e.passwd}})
	t = &target{tcp: "127.0.0.1:" + strconv.Itoa(m.Port), pid: m.PID(), stop: func(failed bool) {
		tb.failed = failed
		tb.cleanup()
	}}
	if ws {
		t.ws = "127.0.0.1:" + strconv.Itoa(m.WebSocketPort)
	}
	return t, nil
}

// standaloneTB lets this command use mqtttest's mosquitto starter, which
// reports through a testing.TB: Fatalf panics with a fatal that
// startMosquitto recovers, Cleanup functions run at cleanup, and Logf (the
// broker's log after a failure) goes to stderr. The embedded nil
// interface supplies the methods mqtttest never calls.
type standaloneTB struct {
	testing.TB
	dir      string
	cleanups []func()
	failed   bool
}

// fatal is what standaloneTB.Fatalf panics with.
type fatal string

func (t *standaloneTB) Helper()                   {}
func (t *standaloneTB) Failed() bool              { return t.failed }
func (t *standaloneTB) Cleanup(f func())          { t.cleanups = append(t.cleanups, f) }
func (t *standaloneTB) Fatalf(f string, a ...any) { panic(fatal(fmt.Sprintf(f, a...))) }
func (t *standaloneTB) Fatal(a ...any)            { panic(fatal(fmt.Sprint(a...))) }
func (t *standaloneTB) Logf(f string, a ...any) {
	fmt.Fprintf(os.Stderr, f+"\n", a...)
}

func (t *standaloneTB) TempDir() string {
	d, err := os.MkdirTemp(t.dir, "mosquitto")
	if err != nil {
		t.Fatalf("temporary directory: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

// cleanup runs the cleanup functions, last registered first, once.
func (t *standaloneTB) cleanup() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
	t.cleanups = nil
}

// newEnv makes the run's temporary directory and password file, with
// pimqtt's own passwd subcommand (mosquitto reads the same file).
func newEnv(cfg config) (*env, error) {
	dir, err := os.MkdirTemp("", "pimqtt-bench")
	if err != nil {
		return nil, fmt.Errorf("temporary directory: %w", err)
	}
	e := &env{cfg: cfg, dir: dir, passwd: filepath.Join(dir, "passwd"), user: benchUser, pass: benchPassword}
	if out, err := runCommand(cfg.pimqtt, "passwd", "-c", "-b", e.passwd, e.user, e.pass); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("%s passwd: %w: %s (build it first: go build -o %s .)", cfg.pimqtt, err, out, cfg.pimqtt)
	}
	return e, nil
}

func (e *env) close() { _ = os.RemoveAll(e.dir) }

// waitExit bounds how long a helper process may take to exit.
const waitExit = 10 * time.Second
