package mqtttest

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
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

func TestFreePortAndWaitListening(t *testing.T) {
	port := FreePort(t)
	if port <= 0 || port > 65535 {
		t.Fatalf("FreePort = %d", port)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on the free port: %v", err)
	}
	defer l.Close()
	WaitListening(t, addr)
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

	// A given port is used as is, and a bad configuration fails at once
	// with the broker's log rather than after WaitTimeout.
	port := FreePort(t)
	msg := fatalMessage(t, func(tb testing.TB) {
		StartMosquitto(tb, MosquittoConfig{Port: port, Extra: []string{"no_such_option 1"}})
	})
	if !strings.Contains(msg, "mosquitto exited") || !strings.Contains(msg, "no_such_option") {
		t.Fatalf("bad configuration: Fatalf %q", msg)
	}
}
