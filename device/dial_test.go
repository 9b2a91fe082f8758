package device

import (
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pimqtt/pimqtt/wsnet"
)

func TestResolveBrokerURL(t *testing.T) {
	ok := []struct {
		in   string
		want brokerTarget
	}{
		{"tcp://127.0.0.1:1883", brokerTarget{kind: kindTCP, addr: "127.0.0.1:1883", serverName: "127.0.0.1"}},
		{"tcp://broker.lan", brokerTarget{kind: kindTCP, addr: "broker.lan:1883", serverName: "broker.lan"}},
		{"mqtt://broker.lan:11883", brokerTarget{kind: kindTCP, addr: "broker.lan:11883", serverName: "broker.lan"}},
		{"MQTT://broker.lan/", brokerTarget{kind: kindTCP, addr: "broker.lan:1883", serverName: "broker.lan"}},
		{"tcp://[::1]", brokerTarget{kind: kindTCP, addr: "[::1]:1883", serverName: "::1"}},
		{"mqtts://broker.example.com", brokerTarget{kind: kindTLS, addr: "broker.example.com:8883", serverName: "broker.example.com"}},
		{"ssl://broker.example.com:8884", brokerTarget{kind: kindTLS, addr: "broker.example.com:8884", serverName: "broker.example.com"}},
		{"ws://127.0.0.1:8080", brokerTarget{kind: kindWS, wsURL: "ws://127.0.0.1:8080/mqtt", serverName: "127.0.0.1"}},
		{"ws://127.0.0.1:8080/mqtt", brokerTarget{kind: kindWS, wsURL: "ws://127.0.0.1:8080/mqtt", serverName: "127.0.0.1"}},
		{"ws://broker.lan/ws", brokerTarget{kind: kindWS, wsURL: "ws://broker.lan/ws", serverName: "broker.lan"}},
		{"wss://broker.example.com", brokerTarget{kind: kindWSS, wsURL: "wss://broker.example.com/mqtt", serverName: "broker.example.com"}},
	}
	for _, tc := range ok {
		got, err := resolveBrokerURL(tc.in)
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.in, got, tc.want)
		}
	}

	bad := []struct{ in, errHas string }{
		{"", "no scheme"},
		{"127.0.0.1:1883", "no scheme"},
		{"http://broker.lan", "unsupported scheme"},
		{"unix:///run/mqtt.sock", "no host"},
		{"tcp://", "no host"},
		{"tcp://:1883", "no host"},
		{"tcp://broker.lan:0", "bad port"},
		{"tcp://broker.lan:99999", "bad port"},
		{"tcp://broker.lan/path", "no path"},
		{"tcp://broker.lan?x=1", "no path"},
		{"tcp://user:secret@broker.lan", "credentials"},
		{"ws://user:secret@broker.lan", "credentials"},
	}
	for _, tc := range bad {
		_, err := resolveBrokerURL(tc.in)
		if err == nil {
			t.Errorf("%q accepted", tc.in)
			continue
		}
		if !strings.Contains(err.Error(), tc.errHas) {
			t.Errorf("%q: error %q does not mention %q", tc.in, err, tc.errHas)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("%q: error leaks the password: %v", tc.in, err)
		}
		if _, err := NetDialer(tc.in, time.Second); err == nil {
			t.Errorf("NetDialer(%q) accepted it", tc.in)
		}
	}
}

// TestTLSVerifiesCertificates: mqtts:// and wss:// really do TLS and refuse a certificate the
// system does not trust (httptest's self-signed one).
func TestTLSVerifiesCertificates(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	hostport := strings.TrimPrefix(srv.URL, "https://")
	for _, u := range []string{"mqtts://" + hostport, "wss://" + hostport + "/mqtt"} {
		dial, err := NetDialer(u, 5*time.Second)
		if err != nil {
			t.Fatalf("NetDialer(%s): %v", u, err)
		}
		c, err := dial(t.Context())
		if err == nil {
			_ = c.Close()
			t.Fatalf("%s: connected despite an untrusted certificate", u)
		}
		if !strings.Contains(err.Error(), "certificate") {
			t.Errorf("%s: error %v, want a certificate verification failure", u, err)
		}
	}
}

// TestWebSocketConn checks NetDialer's ws:// connections (wsnet.Conn) against a gorilla server: the subprotocol is
// offered, MQTT bytes may span messages in both directions, and a text frame is an error.
func TestWebSocketConn(t *testing.T) {
	upgrader := websocket.Upgrader{Subprotocols: []string{"mqtt"}}
	type seen struct {
		subprotocol string
		got         []byte
	}
	results := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		// Two binary messages the client must read as one stream, then a text frame.
		_ = ws.WriteMessage(websocket.BinaryMessage, []byte("hel"))
		_ = ws.WriteMessage(websocket.BinaryMessage, []byte{})
		_ = ws.WriteMessage(websocket.BinaryMessage, []byte("lo"))
		var got []byte
		for len(got) < 6 {
			typ, p, err := ws.ReadMessage()
			if err != nil || typ != websocket.BinaryMessage {
				break
			}
			got = append(got, p...)
		}
		results <- seen{ws.Subprotocol(), got}
		_ = ws.WriteMessage(websocket.TextMessage, []byte("nope"))
		_, _, _ = ws.ReadMessage() // until the client closes
	}))
	t.Cleanup(srv.Close)

	dial, err := NetDialer("ws://"+strings.TrimPrefix(srv.URL, "http://")+"/mqtt", 5*time.Second)
	if err != nil {
		t.Fatalf("NetDialer: %v", err)
	}
	c, err := dial(t.Context())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("read %q, %v; want \"hello\"", buf, err)
	}
	for _, p := range []string{"abc", "def"} {
		if n, err := c.Write([]byte(p)); err != nil || n != len(p) {
			t.Fatalf("write %q: %d, %v", p, n, err)
		}
	}
	select {
	case s := <-results:
		if s.subprotocol != "mqtt" {
			t.Errorf("negotiated subprotocol %q, want mqtt", s.subprotocol)
		}
		if string(s.got) != "abcdef" {
			t.Errorf("server read %q, want abcdef", s.got)
		}
	case <-time.After(waitTimeout):
		t.Fatal("server never reported")
	}
	if _, err := c.Read(buf); !errors.Is(err, wsnet.ErrTextFrame) {
		t.Fatalf("read after a text frame: %v, want wsnet.ErrTextFrame", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
}
