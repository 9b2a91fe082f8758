package device

import (
	"bytes"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// lineLog is an io.Writer for slog.TextHandler that keeps each record's line (the handler
// writes one record per Write) and lets a test wait for one.
type lineLog struct{ w watched[[]string] }

func (l *lineLog) Write(p []byte) (int, error) {
	line := string(bytes.TrimSuffix(p, []byte("\n")))
	l.w.update(func(ls *[]string) { *ls = append(*ls, line) })
	return len(p), nil
}

// waitContains returns the first line containing s.
func (l *lineLog) waitContains(t *testing.T, s string) string {
	t.Helper()
	var found string
	l.w.waitFor(t, waitTimeout, "a log line containing "+s, func(ls []string) bool {
		for _, line := range ls {
			if strings.Contains(line, s) {
				found = line
				return true
			}
		}
		return false
	})
	return found
}

// closedPort returns a 127.0.0.1 address where nothing listens: the kernel's pick for a
// listener closed at once. Nothing binds it again; a dial there is refused.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// TestDialErrorNamesAddressOnce: the line that reports a failed connection in device-only mode
// names the broker's address once (broker=URL) and gives the cause without paho's "network
// Error" prefix or the address again. It used to read
// err="network Error : dial tcp://127.0.0.1:P: dial tcp 127.0.0.1:P: dial tcp 127.0.0.1:P: connect: connection refused".
func TestDialErrorNamesAddressOnce(t *testing.T) {
	closed := closedPort(t)
	// An HTTP server that is no WebSocket endpoint, and a TLS server with an untrusted
	// certificate: handshake failures rather than refused dials.
	web := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(web.Close)
	webAddr := strings.TrimPrefix(web.URL, "http://")
	tlsSrv := httptest.NewUnstartedServer(http.NotFoundHandler())
	tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0)
	tlsSrv.StartTLS()
	t.Cleanup(tlsSrv.Close)
	tlsAddr := strings.TrimPrefix(tlsSrv.URL, "https://")

	tests := []struct {
		url, addr, err string
	}{
		{"tcp://" + closed, closed, "connect: connection refused"},
		{"mqtt://" + closed, closed, "connect: connection refused"},
		{"mqtts://" + closed, closed, "connect: connection refused"},
		{"ws://" + closed + "/mqtt", closed, "connect: connection refused"},
		{"wss://" + closed + "/mqtt", closed, "connect: connection refused"},
		{"ws://" + webAddr + "/mqtt", webAddr, "websocket handshake: HTTP 404 Not Found: websocket: bad handshake"},
		{"mqtts://" + tlsAddr, tlsAddr, "TLS handshake: tls: failed to verify certificate: x509: certificate signed by unknown authority"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			t.Parallel()
			dial, err := NetDialer(tt.url, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			lines := &lineLog{}
			d := newTestDeviceOpts(t, Options{Dial: dial, BrokerLabel: tt.url,
				Logger:  slog.New(slog.NewTextHandler(lines, nil)),
				Outputs: []Output{{Name: "led", CommandTopic: "raspberry/led", Line: &fakeLine{}}}})
			if err := d.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			line := lines.waitContains(t, msgCannotConnect)
			closeDevice(t, d)
			if n := strings.Count(line, tt.addr); n != 1 {
				t.Errorf("the line names %s %d times, want once:\n%s", tt.addr, n, line)
			}
			if !strings.Contains(line, " broker="+tt.url+" ") {
				t.Errorf("the line does not say broker=%s:\n%s", tt.url, line)
			}
			if want := ` err="` + tt.err + `" `; !strings.Contains(line, want) {
				t.Errorf("the line does not say %s:\n%s", want, line)
			}
		})
	}
}
