package mqtttest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"runtime"
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

// TestRelay: closed until Forward, then a byte stream both ways.
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

	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			s, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer s.Close(); _, _ = io.Copy(s, s) }()
		}
	}()
	r.Forward(echo.Addr().String())
	c, err = net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(WaitTimeout))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "ping" {
		t.Fatalf("through the relay: %q, %v", got, err)
	}
}
