package web

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pimqtt/pimqtt/auth"
	"github.com/pimqtt/pimqtt/broker"
	"github.com/pimqtt/pimqtt/device"
	"github.com/pimqtt/pimqtt/gpio"
	"github.com/pimqtt/pimqtt/mqtttest"
)

// waitTimeout bounds every wait on something the system under test does; generous, because
// -race and a loaded two-core machine slow everything down.
const waitTimeout = 15 * time.Second

// Topics of the test rig: pimqtt's defaults.
const (
	ledTopic       = "raspberry/led"
	ledStateTopic  = "raspberry/led/state"
	doorStateTopic = "raspberry/door/state"
	doorSimTopic   = "raspberry/door/sim"
	statusTopic    = "raspberry/status"
	telemetryTopic = "raspberry/telemetry"
)

// Users in testdata/passwd (made with mosquitto_passwd -b).
const (
	alicePassword = "alice-secret"
	bobPassword   = "bob-secret"
)

// readOnly is a Rights under which the named users may read everything and write nothing; the
// others may do everything.
type readOnly map[string]bool

func (readOnly) CanRead(string, string) bool    { return true }
func (r readOnly) CanWrite(user, _ string) bool { return !r[user] }

// testLog collects a test's log and prints it if the test fails.
func testLog(t testing.TB) (*slog.Logger, *mqtttest.SyncBuffer) {
	t.Helper()
	buf := &mqtttest.SyncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// loadPasswords reads testdata/passwd with pimqtt's own reader, as the lead wires it.
func loadPasswords(t testing.TB) *auth.Passwords {
	t.Helper()
	pw, err := auth.Load("testdata/passwd", nil)
	if err != nil {
		t.Fatal(err)
	}
	return pw
}

// rig is all-in-one pimqtt in miniature: pimqtt's broker (in memory for the device and the web
// side, TCP on 127.0.0.1 for outside clients such as mosquitto_pub), the real device driving a
// simulated LED and a simulated door contact, and the web server on a listener of its own.
// newRigDial makes the same around an external broker (device-only mode).
type rig struct {
	t        *testing.T
	dial     DialFunc // to the broker, for the device and the web side
	devUser  string   // the device's MQTT credentials, if the broker wants them
	devPass  string
	mqttPort int // the broker's TCP port on 127.0.0.1
	dev      *device.Device
	led      *gpio.Sim
	door     *gpio.SimInput
	log      *slog.Logger
	logBuf   *mqtttest.SyncBuffer
	opts     Options    // the web server's, as last started
	web      *Server    // the running web server
	served   chan error // Serve's result
	front    *handoff   // the web side's TCP listener, kept across restarts
	url      string     // http://127.0.0.1:PORT
}

// newRig starts pimqtt's broker, the device, then the web server with opts filled in (Dial,
// lines, topics, Auth, Logger) where the test left them empty.
func newRig(t *testing.T, opts Options) *rig {
	t.Helper()
	log, logBuf := testLog(t)
	b, err := broker.New(broker.Options{
		Listeners:      []broker.ListenerConfig{{Kind: broker.TCP, Addr: "127.0.0.1:0"}},
		AllowAnonymous: true,
		Logger:         log.With("component", "broker"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	b.OpenNetwork()
	r := &rig{t: t, log: log, logBuf: logBuf, dial: b.DialInMemory, mqttPort: b.Addrs()[0].Addr.(*net.TCPAddr).Port}
	r.setup(opts)
	return r
}

// newRigDial is newRig with the broker at addr (host:port on 127.0.0.1), where the device signs
// in as alice.
func newRigDial(t *testing.T, addr string, opts Options) *rig {
	t.Helper()
	log, logBuf := testLog(t)
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	d := &net.Dialer{}
	r := &rig{t: t, log: log, logBuf: logBuf, mqttPort: p, devUser: "alice", devPass: alicePassword,
		dial: func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }}
	r.setup(opts)
	return r
}

func (r *rig) setup(opts Options) {
	r.t.Helper()
	r.led = gpio.NewSim("led", gpio.WithLogger(r.log))
	r.door = gpio.NewSimInput("door", gpio.WithLogger(r.log))
	r.startDevice()
	r.front = newHandoff(r.t)
	r.url = "http://" + r.front.Addr().String()
	r.startWeb(opts)
}

// startDevice starts the real device against the broker and waits until it obeys. Besides the
// LED it drives simulated outputs called extra, on raspberry/NAME.
func (r *rig) startDevice(extra ...string) {
	r.t.Helper()
	outputs := []device.Output{{Name: "led", CommandTopic: ledTopic, Line: r.led}}
	for _, name := range extra {
		outputs = append(outputs, device.Output{Name: name, CommandTopic: "raspberry/" + name, Line: gpio.NewSim(name, gpio.WithLogger(r.log))})
	}
	dev, err := device.New(device.Options{
		Dial:        device.DialFunc(r.dial),
		BrokerLabel: "test broker",
		Username:    r.devUser,
		Password:    r.devPass,
		ClientID:    "pimqtt-test-device",
		StatusTopic: statusTopic,
		Outputs:     outputs,
		Inputs:      []device.Input{{Name: "door", StateTopic: doorStateTopic, SimTopic: doorSimTopic, Line: r.door}},
		Logger:      r.log.With("component", "device"),
	})
	if err != nil {
		r.t.Fatal(err)
	}
	if err := dev.Start(context.Background()); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { r.stopDevice() })
	select {
	case <-dev.Ready():
	case <-time.After(waitTimeout):
		r.t.Fatal("device not ready")
	}
	r.dev = dev
}

// stopDevice closes the device (its status goes Off); idempotent.
func (r *rig) stopDevice() {
	if r.dev == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = r.dev.Close(ctx)
	r.dev = nil
}

// startWeb starts a web server on the rig's listener, waits until it has the device's state,
// and stops it at the end of the test.
func (r *rig) startWeb(opts Options) {
	r.t.Helper()
	if opts.Dial == nil {
		opts.Dial = r.dial
	}
	if opts.Outputs == nil && opts.Inputs == nil {
		opts.Outputs = []Output{{Name: "led", CommandTopic: ledTopic}}
		opts.Inputs = []Input{{Name: "door", StateTopic: doorStateTopic}}
	}
	if opts.StatusTopic == "" {
		opts.StatusTopic = statusTopic
	}
	if opts.TelemetryTopic == "" {
		opts.TelemetryTopic = telemetryTopic
	}
	if opts.Auth == nil && !opts.Anonymous {
		opts.Auth = loadPasswords(r.t)
	}
	if opts.Logger == nil {
		opts.Logger = r.log.With("component", "web")
	}
	if opts.ClientID == "" {
		opts.ClientID = "pimqtt-test-web"
	}
	s, err := New(opts)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		r.t.Fatal(err)
	}
	r.opts, r.web = opts, s
	r.served = make(chan error, 1)
	go func() { r.served <- s.Serve(r.front.next()) }()
	r.t.Cleanup(func() { r.stopWeb() })
	r.waitHub("the web side to have the device's state", func(h *hub) bool {
		return h.connected && h.status == statusOnline && h.outputs["led"].level != levelUnknown
	})
}

// stopWeb closes the web server, as at a pimqtt shutdown; idempotent.
func (r *rig) stopWeb() {
	r.t.Helper()
	if r.web == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.web.Close(ctx); err != nil {
		r.t.Errorf("web close: %v", err)
	}
	select {
	case err := <-r.served:
		if err != nil {
			r.t.Errorf("Serve: %v", err)
		}
	case <-time.After(waitTimeout):
		r.t.Error("Serve did not return after Close")
	}
	r.web = nil
}

// waitHub waits until cond holds for the web server's hub, woken by its changes.
func (r *rig) waitHub(what string, cond func(*hub) bool) {
	r.t.Helper()
	h := r.web.hub
	ch, stop := h.watch()
	defer stop()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		h.mu.Lock()
		ok := cond(h)
		h.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			r.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// waitStreams waits until the server counts n open event streams (the count drops when a
// handler returns, a moment after the client closed).
func (r *rig) waitStreams(n int) {
	r.t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		r.web.mu.Lock()
		got := r.web.streams
		r.web.mu.Unlock()
		if got == n {
			return
		}
		select {
		case <-r.web.streamEnded:
		case <-deadline.C:
			r.t.Fatalf("%d event streams open, want %d", got, n)
		}
	}
}

// mosquittoPub publishes one message with mosquitto_pub, the real outside client; extra are
// more arguments ("-r" to retain).
func (r *rig) mosquittoPub(topic, payload string, extra ...string) {
	r.t.Helper()
	mosquittoPub(r.t, r.mqttPort, topic, payload, extra...)
}

func mosquittoPub(t testing.TB, port int, topic, payload string, extra ...string) {
	t.Helper()
	bin := mqtttest.RequireTool(t, "mosquitto_pub", "mosquitto-clients")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	args := append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-q", "1", "-t", topic, "-m", payload}, extra...)
	if out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub %s %q: %v\n%s", topic, payload, err, out)
	}
}

// client is an HTTP client of the web server with a cookie jar, like a browser without script.
type client struct {
	t    testing.TB
	base string
	hc   *http.Client
}

func (r *rig) client() *client { return newClient(r.t, r.url) }

func newClient(t testing.TB, base string) *client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &client{t: t, base: base, hc: &http.Client{Jar: jar, Timeout: waitTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// do sends a request; header holds extra headers as "Name: value". It returns the response
// (body read and closed) and its body.
func (c *client) do(method, path, body string, header ...string) (*http.Response, string) {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, h := range header {
		name, value, _ := strings.Cut(h, ":")
		req.Header.Set(name, strings.TrimSpace(value))
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, string(b)
}

// login signs in and fails the test if that does not work.
func (c *client) login(user, password string) {
	c.t.Helper()
	body, _ := json.Marshal(map[string]string{"user": user, "password": password})
	resp, b := c.do("POST", "/api/login", string(body))
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("sign in as %s: %s %s", user, resp.Status, b)
	}
}

// lines returns GET /api/lines.
func (c *client) lines() Snapshot {
	c.t.Helper()
	resp, b := c.do("GET", "/api/lines", "")
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("GET /api/lines: %s %s", resp.Status, b)
	}
	var s Snapshot
	if err := json.Unmarshal([]byte(b), &s); err != nil {
		c.t.Fatalf("GET /api/lines: %v in %s", err, b)
	}
	return s
}

// output returns the named output of s.
func output(t testing.TB, s Snapshot, name string) OutputView {
	t.Helper()
	for _, o := range s.Outputs {
		if o.Name == name {
			return o
		}
	}
	t.Fatalf("no output %s in %+v", name, s)
	return OutputView{}
}

// stream is an open GET /api/events, read in the background.
type stream struct {
	t      testing.TB
	resp   *http.Response
	mu     sync.Mutex
	snaps  []Snapshot
	ids    []string
	err    error // why reading stopped
	wake   chan struct{}
	closed chan struct{}
}

// events opens the event stream; it is closed at the end of the test.
func (c *client) events() *stream {
	c.t.Helper()
	req, err := http.NewRequest("GET", c.base+"/api/events", nil)
	if err != nil {
		c.t.Fatal(err)
	}
	hc := *c.hc
	hc.Timeout = 0 // the stream lives as long as the test
	resp, err := hc.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		c.t.Fatalf("GET /api/events: %s %s", resp.Status, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		c.t.Fatalf("GET /api/events: Content-Type %q", ct)
	}
	s := &stream{t: c.t, resp: resp, wake: make(chan struct{}, 1), closed: make(chan struct{})}
	c.t.Cleanup(func() { resp.Body.Close(); <-s.closed })
	go s.read()
	return s
}

// read parses the stream: "id:" and "data:" lines, a blank line ends an event.
func (s *stream) read() {
	defer close(s.closed)
	sc := bufio.NewScanner(s.resp.Body)
	sc.Buffer(nil, 1<<20)
	var id string
	var data bytes.Buffer
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			data.WriteString(strings.TrimPrefix(line, "data: "))
		case line == "" && data.Len() > 0:
			var snap Snapshot
			err := json.Unmarshal(data.Bytes(), &snap)
			data.Reset()
			s.mu.Lock()
			if err != nil {
				s.err = err
				s.mu.Unlock()
				return
			}
			s.snaps = append(s.snaps, snap)
			s.ids = append(s.ids, id)
			s.mu.Unlock()
			s.poke()
		}
	}
	s.mu.Lock()
	s.err = sc.Err()
	if s.err == nil {
		s.err = io.EOF
	}
	s.mu.Unlock()
	s.poke()
}

func (s *stream) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// wait returns the first snapshot (in arrival order, from the start of the stream) for which
// cond holds, or fails the test.
func (s *stream) wait(what string, cond func(Snapshot) bool) Snapshot {
	s.t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	seen := 0
	for {
		s.mu.Lock()
		snaps, err := s.snaps[seen:], s.err
		seen = len(s.snaps)
		s.mu.Unlock()
		for _, snap := range snaps {
			if cond(snap) {
				return snap
			}
		}
		if err != nil {
			s.t.Fatalf("event stream ended (%v) before %s", err, what)
		}
		select {
		case <-s.wake:
		case <-deadline.C:
			s.t.Fatalf("timed out waiting on the event stream for %s", what)
		}
	}
}

// waitEnd waits for the server to end the stream.
func (s *stream) waitEnd() error {
	s.t.Helper()
	select {
	case <-s.closed:
		return s.err
	case <-time.After(waitTimeout):
		s.t.Fatal("the event stream did not end")
		return nil
	}
}

// handoff is a TCP listener on 127.0.0.1 that outlives the servers using it, as a socket
// handed over by systemd outlives pimqtt restarts: connections made while no server runs wait
// for the next one. Each server gets its own view from next; closing a view stops only it.
type handoff struct {
	ln    net.Listener
	conns chan net.Conn
}

func newHandoff(t testing.TB) *handoff {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &handoff{ln: ln, conns: make(chan net.Conn)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.conns <- c
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		// Release a connection the acceptor may hold, then wait for it.
		for {
			select {
			case c := <-h.conns:
				_ = c.Close()
			case <-done:
				return
			}
		}
	})
	return h
}

func (h *handoff) Addr() net.Addr { return h.ln.Addr() }

// next returns a listener view for one server.
func (h *handoff) next() net.Listener {
	return &handoffView{h: h, done: make(chan struct{})}
}

type handoffView struct {
	h    *handoff
	done chan struct{}
	once sync.Once
}

func (v *handoffView) Accept() (net.Conn, error) {
	select {
	case c := <-v.h.conns:
		select {
		case <-v.done:
			// Closed meanwhile: the connection is the next server's.
			go func() { v.h.conns <- c }()
			return nil, net.ErrClosed
		default:
			return c, nil
		}
	case <-v.done:
		return nil, net.ErrClosed
	}
}

func (v *handoffView) Close() error {
	v.once.Do(func() { close(v.done) })
	return nil
}

func (v *handoffView) Addr() net.Addr { return v.h.ln.Addr() }
