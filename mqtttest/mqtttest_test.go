package mqtttest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the calling goroutine, as the real one does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// fatalMessage runs fn with a fatalRecorder in its own goroutine and
// returns what it passed to Fatalf, or "" if it did not call it.
func fatalMessage(t *testing.T, fn func(testing.TB)) string {
	f := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f.msg
}

func TestRequireTool(t *testing.T) {
	if got := RequireTool(t, "python3", "python3-paho-mqtt"); got != "/usr/bin/python3" {
		t.Errorf(`RequireTool("python3") = %q, want /usr/bin/python3`, got)
	}
	// A normal user's PATH on Debian has no /usr/sbin, where mosquitto is.
	t.Setenv("PATH", "/usr/bin:/bin")
	if got := RequireTool(t, "mosquitto", "mosquitto"); got != "/usr/sbin/mosquitto" {
		t.Errorf(`RequireTool("mosquitto") without /usr/sbin in PATH = %q, want /usr/sbin/mosquitto`, got)
	}
	msg := fatalMessage(t, func(tb testing.TB) { RequireTool(tb, "no-such-tool-pimqtt", "some-package") })
	if !strings.Contains(msg, "no-such-tool-pimqtt") || !strings.Contains(msg, "apt-get install some-package") {
		t.Errorf("missing tool: Fatalf %q, want the tool and the Debian package named", msg)
	}
}

func TestSyncBuffer(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				_, _ = b.Write([]byte("x"))
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	if got := len(b.String()); got != 400 {
		t.Fatalf("len = %d, want 400", got)
	}
}

func TestWaitListening(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	WaitListening(t, l.Addr().String())

	// A server that reports failure ends the wait at once with its error.
	addr := l.Addr().String()
	l.Close()
	failed := errors.New("server says it failed")
	if err := WaitServing(addr, func() error { return failed }); !errors.Is(err, failed) {
		t.Fatalf("WaitServing with a failed server = %v, want %v", err, failed)
	}
}

func TestWithPickedPorts(t *testing.T) {
	ports := pickPorts(t, 3)
	if ports[0] == ports[1] || ports[1] == ports[2] || ports[0] == ports[2] {
		t.Fatalf("pickPorts(3) = %v, want distinct ports", ports)
	}
	calls := 0
	WithPickedPorts(t, 1, func([]int) error {
		if calls++; calls < 3 {
			return fmt.Errorf("bind: %w", ErrPortTaken)
		}
		return nil
	})
	if calls != 3 {
		t.Fatalf("start called %d times, want 3 (two taken ports, then success)", calls)
	}
	msg := fatalMessage(t, func(tb testing.TB) {
		WithPickedPorts(tb, 1, func([]int) error { return fmt.Errorf("bind: %w", ErrPortTaken) })
	})
	if !strings.Contains(msg, "attempts") {
		t.Fatalf("always taken: Fatalf %q, want the attempts reported", msg)
	}
	msg = fatalMessage(t, func(tb testing.TB) {
		WithPickedPorts(tb, 1, func([]int) error { return errors.New("bad configuration") })
	})
	if !strings.Contains(msg, "bad configuration") {
		t.Fatalf("other error: Fatalf %q", msg)
	}
}

func TestStartMosquitto(t *testing.T) {
	m := StartMosquitto(t, MosquittoConfig{WebSocket: true, Extra: []string{"allow_anonymous true"}})
	if m.Port == 0 || m.WebSocketPort == 0 || m.Port == m.WebSocketPort {
		t.Fatalf("ports %+v", m)
	}
	// A retained message published over TCP comes back to a late subscriber.
	pub := RequireTool(t, "mosquitto_pub", "mosquitto-clients")
	sub := RequireTool(t, "mosquitto_sub", "mosquitto-clients")
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	p := strconv.Itoa(m.Port)
	if out, err := exec.CommandContext(ctx, pub, "-h", "127.0.0.1", "-p", p, "-q", "1", "-r", "-t", "t", "-m", "hello").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, sub, "-h", "127.0.0.1", "-p", p, "-t", "t", "-C", "1", "-W", "5").Output()
	if err != nil || strings.TrimSpace(string(out)) != "hello" {
		t.Fatalf("mosquitto_sub: %q, %v", out, err)
	}

	// A bad configuration fails at once with the broker's log rather than
	// after WaitTimeout or a retry.
	msg := fatalMessage(t, func(tb testing.TB) {
		StartMosquitto(tb, MosquittoConfig{Extra: []string{"no_such_option 1"}})
	})
	if !strings.Contains(msg, "mosquitto exited") || !strings.Contains(msg, "no_such_option") {
		t.Fatalf("bad configuration: Fatalf %q", msg)
	}
}

// TestStartMosquittoPortTaken: when another process binds a picked port
// before mosquitto does, mosquitto is started again on new ports.
func TestStartMosquittoPortTaken(t *testing.T) {
	for _, ws := range []bool{false, true} {
		t.Run(fmt.Sprintf("websocket=%v", ws), func(t *testing.T) {
			held, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer held.Close()
			heldPort := held.Addr().(*net.TCPAddr).Port
			picks := 0
			pick := func(tb testing.TB, n int) []int {
				ports := pickPorts(tb, n)
				if picks++; picks == 1 {
					ports[n-1] = heldPort // the WebSocket port when there is one
				}
				return ports
			}
			m := startMosquitto(t, MosquittoConfig{WebSocket: ws, Extra: []string{"allow_anonymous true"}}, pick)
			if picks != 2 || m.Port == heldPort || m.WebSocketPort == heldPort {
				t.Fatalf("picks %d, ports %+v, held port %d: want a second attempt on other ports", picks, m, heldPort)
			}
			WaitListening(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(m.Port)))
		})
	}
}

// TestRelay: closed until Forward, then a byte stream both ways; Forward
// again sends new connections to the new target; every attempt counted.
func TestRelay(t *testing.T) {
	r := NewRelay(t)
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(WaitTimeout))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("relay without a target did not close the connection")
	}
	c.Close()

	first, second := newEchoServer(t, "first:"), newEchoServer(t, "second:")
	r.Forward(first.addr())
	c1 := dialRelay(t, r)
	roundTrip(t, c1, "ping", "first:ping")
	r.Forward(second.addr())
	c2 := dialRelay(t, r)
	roundTrip(t, c2, "ping", "second:ping")
	roundTrip(t, c1, "again", "first:again") // keeps its target
	if got := r.Accepted(); got != 3 {
		t.Fatalf("Accepted() = %d, want 3", got)
	}
}

// TestRelayCut: during a cut nothing passes, neither bytes nor a close nor
// a new connection, and none of it is lost: all of it arrives, in order,
// after Heal.
func TestRelayCut(t *testing.T) {
	r := NewRelay(t)
	srv := newEchoServer(t, "")
	r.Forward(srv.addr())
	kept := dialRelay(t, r)    // both sides keep it across the cut
	closing := dialRelay(t, r) // the client gives up during the cut
	roundTrip(t, kept, "a", "a")
	roundTrip(t, closing, "a", "a")

	r.Cut()
	if _, err := kept.Write([]byte("b")); err != nil {
		t.Fatal(err)
	}
	// Nothing comes back while the network is cut: a bounded look, not a
	// wait for an event.
	_ = kept.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := kept.Read(make([]byte, 8)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read during the cut: %d bytes, %v; want a timeout", n, err)
	}
	_ = kept.SetReadDeadline(time.Now().Add(WaitTimeout))
	if err := closing.Close(); err != nil {
		t.Fatal(err)
	}
	late := dialRelay(t, r) // the kernel accepts it; the server must not see it yet
	if _, err := late.Write([]byte("c")); err != nil {
		t.Fatal(err)
	}

	healed := time.Now()
	r.Heal()
	got := make([]byte, 1)
	if _, err := io.ReadFull(kept, got); err != nil || string(got) != "b" {
		t.Fatalf("after Heal: %q, %v; want the byte sent during the cut", got, err)
	}
	roundTrip(t, late, "", "c")
	ev := srv.waitEvents(t, func(evs []echoEvent) bool { return len(evs) >= 8 })
	// accept, data for each of the two first connections; then, after
	// Heal, b, the close, and the late connection with its c.
	for _, e := range ev[4:] {
		if e.at.Before(healed) {
			t.Errorf("%s reached the server at %v, before Heal at %v", e.what, e.at.Format("15:04:05.000"), healed.Format("15:04:05.000"))
		}
	}
	var whats []string
	for _, e := range ev[4:] {
		whats = append(whats, e.what)
	}
	slices.Sort(whats)
	if want := []string{"accept", "close", "data b", "data c"}; !slices.Equal(whats, want) {
		t.Errorf("after Heal the server saw %v, want %v", whats, want)
	}
}

// TestRelayDelay: each direction holds every byte for the delay set.
func TestRelayDelay(t *testing.T) {
	r := NewRelay(t)
	r.Forward(newEchoServer(t, "").addr())
	c := dialRelay(t, r)
	const delay = 150 * time.Millisecond
	r.SetDelay(delay)
	start := time.Now()
	roundTrip(t, c, "slow", "slow")
	if rtt := time.Since(start); rtt < 2*delay || rtt > 2*delay+5*time.Second {
		t.Fatalf("round trip %v with a delay of %v each way, want about %v", rtt, delay, 2*delay)
	}
	r.SetDelay(0)
	start = time.Now()
	roundTrip(t, c, "fast", "fast")
	if rtt := time.Since(start); rtt >= 2*delay {
		t.Fatalf("round trip %v after SetDelay(0)", rtt)
	}
}

// TestMosquittoStopAndKill: Stop and Kill end the broker; its port then
// refuses connections.
func TestMosquittoStopAndKill(t *testing.T) {
	for _, stop := range []struct {
		name string
		end  func(*Mosquitto, testing.TB)
	}{{"stop", (*Mosquitto).Stop}, {"kill", (*Mosquitto).Kill}} {
		t.Run(stop.name, func(t *testing.T) {
			m := StartMosquitto(t, MosquittoConfig{Extra: []string{"allow_anonymous true"}})
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(m.Port))
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			stop.end(m, t)
			_ = c.SetDeadline(time.Now().Add(WaitTimeout))
			if _, err := c.Read(make([]byte, 1)); err == nil {
				t.Fatal("a connection to the stopped broker is still open")
			}
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				t.Fatalf("%s still accepts connections", addr)
			}
		})
	}
}

// echoServer accepts connections and writes back what it reads with a
// prefix, recording when each connection, each read and each close
// happened.
type echoServer struct {
	ln     net.Listener
	prefix string

	mu      sync.Mutex
	events  []echoEvent
	changed chan struct{}
}

type echoEvent struct {
	what string
	at   time.Time
}

func newEchoServer(t *testing.T, prefix string) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{ln: ln, prefix: prefix, changed: make(chan struct{})}
	var wg sync.WaitGroup
	var conns sync.Map
	t.Cleanup(func() {
		ln.Close()
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.record("accept")
			conns.Store(c, nil)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				buf := make([]byte, 64)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						s.record("data " + string(buf[:n]))
						if _, err := c.Write(append([]byte(s.prefix), buf[:n]...)); err != nil {
							return
						}
					}
					if err != nil {
						s.record("close")
						return
					}
				}
			}()
		}
	}()
	return s
}

func (s *echoServer) addr() string { return s.ln.Addr().String() }

func (s *echoServer) record(what string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, echoEvent{what, time.Now()})
	close(s.changed)
	s.changed = make(chan struct{})
}

// waitEvents returns the events once done says they are complete.
func (s *echoServer) waitEvents(t *testing.T, done func([]echoEvent) bool) []echoEvent {
	t.Helper()
	deadline := time.After(WaitTimeout)
	for {
		s.mu.Lock()
		ev, changed := slices.Clone(s.events), s.changed
		s.mu.Unlock()
		if done(ev) {
			return ev
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("echo server events after %v: %v", WaitTimeout, ev)
		}
	}
}

func dialRelay(t *testing.T, r *Relay) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(WaitTimeout))
	return c
}

// roundTrip writes send (if any) and reads exactly want back.
func roundTrip(t *testing.T, c net.Conn, send, want string) {
	t.Helper()
	if send != "" {
		if _, err := c.Write([]byte(send)); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != want {
		t.Fatalf("through the relay: %q, %v; want %q", got, err, want)
	}
}
