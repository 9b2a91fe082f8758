package device

import (
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pimqtt/pimqtt/cert"
	"github.com/pimqtt/pimqtt/mqtttest"
	"github.com/pimqtt/pimqtt/wsnet"
)

// These tests reach brokers whose certificate a local CA signed, as a household's pimqtt or
// mosquitto made with `pimqtt cert`: the device needs that CA's certificate (WithCAFile).

// localCerts makes a CA and a server certificate for names and ips with the cert package.
func localCerts(t *testing.T, names []string, ips ...net.IP) *cert.Result {
	t.Helper()
	res, err := cert.Make(cert.Options{Dir: t.TempDir(), DNSNames: names, IPs: ips})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// startTLSMosquitto runs mosquitto with TLS on its listener, serving c's server certificate.
func startTLSMosquitto(t *testing.T, c *cert.Result) int {
	t.Helper()
	return startMosquitto(t, mqtttest.MosquittoConfig{Extra: []string{
		"cafile " + c.CA.Cert, "certfile " + c.Server.Cert, "keyfile " + c.Server.Key,
	}}).Port
}

// TestMosquittoTLS: device-only over mqtts:// to mosquitto with a certificate from a local CA,
// given as the CA file; commands from mosquitto_pub --cafile reach the line.
func TestMosquittoTLS(t *testing.T) {
	t.Parallel()
	certs := localCerts(t, []string{"localhost"}, net.IPv4(127, 0, 0, 1))
	port := startTLSMosquitto(t, certs)
	for _, host := range []string{"127.0.0.1", "localhost"} {
		t.Run(host, func(t *testing.T) {
			dial, err := NetDialer("mqtts://"+net.JoinHostPort(host, strconv.Itoa(port)), 5*time.Second, WithCAFile(certs.CA.Cert))
			if err != nil {
				t.Fatalf("NetDialer: %v", err)
			}
			logger, logs := newLogger(t)
			line := &fakeLine{}
			d := newTestDevice(t, dial, line, logger, "mqtts mosquitto")
			if err := d.Start(t.Context()); err != nil {
				t.Fatalf("Start: %v", err)
			}
			logs.waitMsg(t, 0, "status published")
			mosquittoPub(t, port, "raspberry/led", "1", "--cafile", certs.CA.Cert)
			line.waitValue(t, 1)
			mosquittoPub(t, port, "raspberry/led", "0", "--cafile", certs.CA.Cert)
			line.waitValue(t, 0)
			closeDevice(t, d)
		})
	}
}

// TestTLSRefusalsExplained: a broker certificate the device refuses is a dial error that says
// what to do: give the CA file, give the right one, or connect by a name the certificate lists.
func TestTLSRefusalsExplained(t *testing.T) {
	t.Parallel()
	certs := localCerts(t, []string{"localhost"}, net.IPv4(127, 0, 0, 1))
	port := startTLSMosquitto(t, certs)
	// A second broker whose certificate lists only a name the test does not dial.
	named := localCerts(t, []string{"pi.local"})
	namedPort := startTLSMosquitto(t, named)
	other := localCerts(t, []string{"localhost"})
	tests := []struct {
		name   string
		url    string
		opts   []DialOption
		errHas []string
	}{
		{"no CA file", "mqtts://127.0.0.1:" + strconv.Itoa(port), nil, []string{"TLS handshake", "certificate signed by unknown authority"}},
		{"wrong CA file", "mqtts://127.0.0.1:" + strconv.Itoa(port), []DialOption{WithCAFile(other.CA.Cert)}, []string{"unknown authority", "not signed by the CA in " + other.CA.Cert}},
		{"name not in the certificate", "mqtts://127.0.0.1:" + strconv.Itoa(namedPort), []DialOption{WithCAFile(named.CA.Cert)}, []string{"connect by a name the certificate lists, pi.local", "includes 127.0.0.1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dial, err := NetDialer(tt.url, 5*time.Second, tt.opts...)
			if err != nil {
				t.Fatalf("NetDialer: %v", err)
			}
			c, err := dial(t.Context())
			if err == nil {
				_ = c.Close()
				t.Fatal("connected")
			}
			t.Logf("dial error: %v", err)
			for _, want := range tt.errHas {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error lacks %q: %v", want, err)
				}
			}
		})
	}
}

// TestWSSWithCAFile: device-only over wss:// through a WebSocket front with a local CA's
// certificate, relaying to mosquitto (whose own WebSocket listener mqtttest serves without
// TLS).
func TestWSSWithCAFile(t *testing.T) {
	t.Parallel()
	port := startMosquitto(t, mqtttest.MosquittoConfig{}).Port
	certs := localCerts(t, []string{"localhost"}, net.IPv4(127, 0, 0, 1))
	pair, err := tls.LoadX509KeyPair(certs.Server.Cert, certs.Server.Key)
	if err != nil {
		t.Fatal(err)
	}
	var relays sync.WaitGroup
	upgrader := websocket.Upgrader{Subprotocols: []string{wsnet.Subprotocol}}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		front := wsnet.New(ws)
		defer front.Close()
		back, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			return
		}
		defer back.Close()
		relays.Add(1)
		go func() {
			defer relays.Done()
			_, _ = io.Copy(back, front)
			_ = back.Close()
		}()
		_, _ = io.Copy(front, back)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(func() { srv.Close(); relays.Wait() })

	url := "wss://" + strings.TrimPrefix(srv.URL, "https://") + "/mqtt"
	if _, err := NetDialer(url, 5*time.Second); err != nil {
		t.Fatalf("NetDialer without CA file: %v", err)
	}
	dial, err := NetDialer(url, 5*time.Second, WithCAFile(certs.CA.Cert))
	if err != nil {
		t.Fatalf("NetDialer: %v", err)
	}
	logger, logs := newLogger(t)
	line := &fakeLine{}
	d := newTestDevice(t, dial, line, logger, "wss front")
	if err := d.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	logs.waitMsg(t, 0, "status published")
	mosquittoPub(t, port, "raspberry/led", "1")
	line.waitValue(t, 1)
	closeDevice(t, d)

	// Without the CA file the same front is refused.
	plain, err := NetDialer(url, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := plain(t.Context()); err == nil {
		_ = c.Close()
		t.Fatal("connected without the CA file")
	} else if !strings.Contains(err.Error(), "websocket handshake") || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Errorf("error without the CA file: %v", err)
	}
}

func TestWithCAFileRefused(t *testing.T) {
	certs := localCerts(t, []string{"localhost"})
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.txt")
	if err := os.WriteFile(notPEM, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, url, file string
		errHas          []string
	}{
		{"tcp URL", "tcp://127.0.0.1:1883", certs.CA.Cert, []string{"only used with TLS", "tcp://127.0.0.1:1883"}},
		{"ws URL", "ws://127.0.0.1:8083/mqtt", certs.CA.Cert, []string{"only used with TLS"}},
		{"missing file", "mqtts://127.0.0.1", filepath.Join(dir, "none.crt"), []string{filepath.Join(dir, "none.crt"), "no such file"}},
		{"not PEM", "wss://127.0.0.1/mqtt", notPEM, []string{notPEM, "no PEM certificate"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NetDialer(tt.url, time.Second, WithCAFile(tt.file))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, want := range tt.errHas {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error lacks %q: %v", want, err)
				}
			}
		})
	}
}
