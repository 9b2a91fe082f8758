package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/pimqtt/pimqtt/cert"
	"github.com/pimqtt/pimqtt/mqtttest"
	"github.com/pimqtt/pimqtt/wsnet"
)

// logEveryRefusal makes the broker log every refusal, not one per remote
// host and interval, so that a test can watch each one. Call it before
// any client connects.
func logEveryRefusal(b *Broker) {
	for _, c := range b.counters {
		c.mu.Lock()
		c.interval = 0
		c.mu.Unlock()
	}
}

// testCerts makes a CA and a server certificate for 127.0.0.1, ::1 and
// localhost in a new directory, plus the client certificates named, with
// the cert package that `pimqtt cert` uses, so they never expire under
// the tests.
func testCerts(t testing.TB, clients ...string) *cert.Result {
	t.Helper()
	res, err := cert.Make(cert.Options{
		Dir:      t.TempDir(),
		DNSNames: []string{"localhost"},
		IPs:      []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		Clients:  clients,
	})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// tlsListener is a listener of kind on a port of 127.0.0.1 that serves c.
func tlsListener(kind string, c *cert.Result) ListenerConfig {
	return ListenerConfig{Kind: kind, Addr: "127.0.0.1:0", CertFile: c.Server.Cert, KeyFile: c.Server.Key}
}

// caPool reads a CA certificate file into a pool.
func caPool(t testing.TB, file string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		t.Fatalf("%s: no certificate", file)
	}
	return p
}

// inlineSubIDs keeps inline subscription ids unique across tests.
var inlineSubIDs atomic.Int64

// subscribeInline subscribes to filter inside the broker (Mochi's inline
// client) and returns the payloads that arrive.
func subscribeInline(t testing.TB, b *Broker, filter string) <-chan string {
	t.Helper()
	got := make(chan string, 64)
	err := b.server.Subscribe(filter, int(inlineSubIDs.Add(1)), func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		select { // inline handlers run in the publisher's goroutine: never block
		case got <- string(pk.Payload):
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// expectMessage waits for want on got.
func expectMessage(t testing.TB, got <-chan string, want string) {
	t.Helper()
	select {
	case p := <-got:
		if p != want {
			t.Fatalf("got %q, want %q", p, want)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("%q never arrived", want)
	}
}

// expectNoMessage checks that nothing arrived on got. The caller has
// already seen its publisher fail, so a message would be there by now.
func expectNoMessage(t testing.TB, got <-chan string) {
	t.Helper()
	select {
	case p := <-got:
		t.Fatalf("a refused client's message %q was delivered", p)
	default:
	}
}

// mosquittoPub runs mosquitto_pub against 127.0.0.1:port with QoS 1 and
// returns its combined output and error.
func mosquittoPub(t testing.TB, addr string, args ...string) (string, error) {
	t.Helper()
	bin := mqtttest.RequireTool(t, "mosquitto_pub", "mosquitto-clients")
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append([]string{"-h", host, "-p", port, "-q", "1"}, args...)...).CombinedOutput()
	return string(out), err
}

// roundTripTLS connects a paho Go client to url with tlsConfig, and
// checks that it gets its own message back.
func roundTripTLS(t testing.TB, url string, tlsConfig *tls.Config) {
	t.Helper()
	got := make(chan string, 1)
	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetTLSConfig(tlsConfig).
		SetClientID(fmt.Sprintf("tls-%d", time.Now().UnixNano())).
		SetAutoReconnect(false).SetConnectTimeout(10 * time.Second))
	if tok := c.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("paho %s: connect: %v", url, tok.Error())
	}
	defer c.Disconnect(50)
	if tok := c.Subscribe("tls/echo", 1, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("paho %s: subscribe: %v", url, tok.Error())
	}
	c.Publish("tls/echo", 1, false, "ping")
	expectMessage(t, got, "ping")
}

// servedSerial shakes hands with a TLS listener and returns the serial
// number of the certificate it served.
func servedSerial(t testing.TB, addr string, roots *x509.CertPool) *big.Int {
	t.Helper()
	d := &tls.Dialer{Config: &tls.Config{RootCAs: roots}, NetDialer: &net.Dialer{Timeout: 10 * time.Second}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", addr, err)
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber
}

func fileSerial(t testing.TB, file string) *big.Int {
	t.Helper()
	c, err := tls.LoadX509KeyPair(file, strings.TrimSuffix(file, ".crt")+".key")
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf.SerialNumber
}

// TestMQTTSMosquittoPub: mosquitto_pub with --cafile publishes over mqtts;
// clients with the wrong CA, without TLS, or limited to TLS 1.1 are
// refused, and the broker says why.
func TestMQTTSMosquittoPub(t *testing.T) {
	certs := testCerts(t)
	b, sink := startTestBroker(t, Options{
		Listeners:      []ListenerConfig{tlsListener(MQTTS, certs)},
		AllowAnonymous: true,
	})
	logEveryRefusal(b)
	addr := listenerAddr(t, b, MQTTS)
	got := subscribeInline(t, b, "tls/#")

	if out, err := mosquittoPub(t, addr, "--cafile", certs.CA.Cert, "-t", "tls/pub", "-m", "over tls"); err != nil {
		t.Fatalf("mosquitto_pub --cafile: %v\n%s", err, out)
	}
	expectMessage(t, got, "over tls")
	// By name too: the certificate lists localhost.
	if out, err := mosquittoPub(t, addr, "-h", "localhost", "--cafile", certs.CA.Cert, "-t", "tls/pub", "-m", "by name"); err != nil {
		t.Fatalf("mosquitto_pub -h localhost: %v\n%s", err, out)
	}
	expectMessage(t, got, "by name")

	other := testCerts(t)
	refusals := []struct {
		name   string
		args   []string
		logHas string
	}{
		// OpenSSL sends its alert unencrypted in TLS 1.3: a bad record MAC here.
		{"wrong CA", []string{"--cafile", other.CA.Cert}, "does not trust this certificate"},
		{"no TLS", nil, "without TLS"},
	}
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			mark := sink.len()
			out, err := mosquittoPub(t, addr, append(r.args, "-t", "tls/pub", "-m", "refused")...)
			if err == nil {
				t.Fatalf("mosquitto_pub %v succeeded:\n%s", r.args, out)
			}
			t.Logf("mosquitto_pub %v: %v: %s", r.args, err, strings.TrimSpace(out))
			waitFor(t, 10*time.Second, "the broker to log the failed handshake", func() bool {
				l := sink.since(mark)
				return strings.Contains(l, "TLS handshake failed") && strings.Contains(l, r.logHas)
			})
			expectNoMessage(t, got)
		})
	}

	t.Run("TLS 1.1", func(t *testing.T) {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: caPool(t, certs.CA.Cert), MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
		if err == nil {
			c.Close()
			t.Fatal("a TLS 1.1 handshake succeeded")
		}
		t.Logf("TLS 1.1: %v", err)
	})
	waitFor(t, 10*time.Second, "pending count back to 0", func() bool { return b.guard.pending.Load() == 0 })
}

// TestMQTTSClientCertificate: with a client CA, a client without a
// certificate (or with one from another CA) is refused, and
// mosquitto_pub with --cert/--key gets in.
func TestMQTTSClientCertificate(t *testing.T) {
	certs := testCerts(t, "phone")
	other := testCerts(t, "intruder")
	lc := tlsListener(MQTTS, certs)
	lc.ClientCAFile = certs.CA.Cert
	b, sink := startTestBroker(t, Options{Listeners: []ListenerConfig{lc}, AllowAnonymous: true})
	logEveryRefusal(b)
	addr := listenerAddr(t, b, MQTTS)
	got := subscribeInline(t, b, "tls/#")

	refused := []struct {
		name   string
		args   []string
		logHas string
	}{
		{"no client certificate", nil, "requires a client certificate"},
		{"certificate from another CA", []string{"--cert", other.Clients[0].Cert, "--key", other.Clients[0].Key}, "not signed by this listener's client CA"},
	}
	for _, r := range refused {
		t.Run(r.name, func(t *testing.T) {
			mark := sink.len()
			out, err := mosquittoPub(t, addr, append([]string{"--cafile", certs.CA.Cert, "-t", "tls/client", "-m", "refused"}, r.args...)...)
			if err == nil {
				t.Fatalf("mosquitto_pub %v got in:\n%s", r.args, out)
			}
			waitFor(t, 10*time.Second, "the broker to log the refused handshake", func() bool {
				l := sink.since(mark)
				return strings.Contains(l, "TLS handshake failed") && strings.Contains(l, r.logHas)
			})
			t.Logf("%s: %s", r.name, strings.TrimSpace(out))
			expectNoMessage(t, got)
		})
	}

	out, err := mosquittoPub(t, addr, "--cafile", certs.CA.Cert, "--cert", certs.Clients[0].Cert, "--key", certs.Clients[0].Key,
		"-t", "tls/client", "-m", "with certificate")
	if err != nil {
		t.Fatalf("mosquitto_pub --cert --key: %v\n%s", err, out)
	}
	expectMessage(t, got, "with certificate")
}

// pahoWSS is a python paho 1.6 client over WebSocket and TLS that
// subscribes, publishes and waits for its own message.
const pahoWSS = `
import sys, threading
import paho.mqtt.client as mqtt

host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
got = threading.Event()
def on_connect(c, userdata, flags, rc):
    if rc != 0:
        print("CONNACK", rc, flush=True)
        return
    c.subscribe("tls/py", 1)
def on_subscribe(c, userdata, mid, granted):
    c.publish("tls/py", "hello from python", 1)
def on_message(c, userdata, m):
    if m.payload == b"hello from python":
        got.set()
c = mqtt.Client(client_id="py-wss", transport="websockets")
c.ws_set_options(path="/mqtt")
c.tls_set(ca_certs=ca)
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.connect(host, port, keepalive=30)
c.loop_start()
ok = got.wait(20)
c.disconnect()
c.loop_stop()
print("ok" if ok else "no echo", flush=True)
`

// TestWSS: MQTT over WebSocket over TLS from paho Go and python paho 1.6,
// and a client that does not trust the certificate is refused.
func TestWSS(t *testing.T) {
	certs := testCerts(t)
	lc := tlsListener(WSS, certs)
	// An allow-list does not lock out python paho, which sends its own
	// "Origin: https://HOST:PORT".
	lc.AllowedOrigins = []string{"https://dash.example"}
	b, sink := startTestBroker(t, Options{Listeners: []ListenerConfig{lc}, AllowAnonymous: true})
	logEveryRefusal(b)
	addr := listenerAddr(t, b, WSS)

	t.Run("paho Go", func(t *testing.T) {
		roundTripTLS(t, "wss://"+addr+"/mqtt", &tls.Config{RootCAs: caPool(t, certs.CA.Cert)})
	})

	t.Run("python paho 1.6", func(t *testing.T) {
		python := mqtttest.RequireTool(t, "python3", "python3-paho-mqtt")
		host, port, _ := net.SplitHostPort(addr)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, python, "-c", pahoWSS, host, port, certs.CA.Cert).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "ok" {
			t.Fatalf("python paho: %v\n%s", err, out)
		}
	})

	t.Run("wrong CA", func(t *testing.T) {
		other := testCerts(t)
		mark := sink.len()
		c := paho.NewClient(paho.NewClientOptions().AddBroker("wss://" + addr + "/mqtt").
			SetTLSConfig(&tls.Config{RootCAs: caPool(t, other.CA.Cert)}).
			SetClientID("tls-wrong-ca").SetAutoReconnect(false).SetConnectTimeout(10 * time.Second))
		tok := c.Connect()
		if !tok.WaitTimeout(20 * time.Second) {
			t.Fatal("connect never returned")
		}
		if tok.Error() == nil {
			c.Disconnect(50)
			t.Fatal("connected with the wrong CA")
		}
		// net/http reports the handshake; the broker logs it as for mqtts.
		waitFor(t, 10*time.Second, "the broker to log the failed handshake", func() bool {
			l := sink.since(mark)
			return strings.Contains(l, "TLS handshake failed") && strings.Contains(l, "does not trust this certificate")
		})
	})
	waitFor(t, 10*time.Second, "pending count back to 0", func() bool { return b.guard.pending.Load() == 0 })
}

// TestCertificateReload: a certificate swapped on disk is served after
// Reload, on every TLS listener; a bad one at reload is refused with an
// error naming the file, and the one before it stays in service.
func TestCertificateReload(t *testing.T) {
	certs := testCerts(t)
	b, sink := startTestBroker(t, Options{
		Listeners:      []ListenerConfig{tlsListener(MQTTS, certs), tlsListener(WSS, certs)},
		AllowAnonymous: true,
	})
	logEveryRefusal(b)
	roots := caPool(t, certs.CA.Cert)
	addrs := []string{listenerAddr(t, b, MQTTS), listenerAddr(t, b, WSS)}
	serve := func(want *big.Int) {
		t.Helper()
		for _, a := range addrs {
			if got := servedSerial(t, a, roots); got.Cmp(want) != 0 {
				t.Fatalf("%s serves certificate %x, want %x", a, got, want)
			}
		}
	}
	first := fileSerial(t, certs.Server.Cert)
	serve(first)

	// pimqtt cert run again: the same CA, a new server certificate.
	renewed, err := cert.Make(cert.Options{Dir: certs.CA.Cert[:len(certs.CA.Cert)-len(cert.CACertFile)], DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	second := fileSerial(t, renewed.Server.Cert)
	if second.Cmp(first) == 0 {
		t.Fatal("the renewed certificate has the old serial")
	}
	serve(first) // nothing changes before the reload
	if err := b.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	serve(second)
	// A client on the reloaded listeners still gets through.
	roundTripTLS(t, "ssl://"+addrs[0], &tls.Config{RootCAs: roots})

	good := map[string][]byte{}
	for _, f := range []string{certs.Server.Cert, certs.Server.Key} {
		if good[f], err = os.ReadFile(f); err != nil {
			t.Fatal(err)
		}
	}
	other := testCerts(t)
	otherKey, _ := os.ReadFile(other.Server.Key)
	bad := []struct {
		name   string
		file   string
		data   []byte // nil removes the file
		errHas string
	}{
		{"garbage certificate", certs.Server.Cert, []byte("not a certificate\n"), certs.Server.Cert},
		{"truncated certificate", certs.Server.Cert, good[certs.Server.Cert][:len(good[certs.Server.Cert])/2], certs.Server.Cert},
		{"key of another certificate", certs.Server.Key, otherKey, "private key does not match"},
		{"key removed", certs.Server.Key, nil, certs.Server.Key},
		{"certificate removed", certs.Server.Cert, nil, certs.Server.Cert},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if tt.data == nil {
				if err := os.Remove(tt.file); err != nil {
					t.Fatal(err)
				}
			} else if err := os.WriteFile(tt.file, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := os.WriteFile(tt.file, good[tt.file], 0o600); err != nil {
					t.Fatal(err)
				}
			})
			err := b.Reload()
			if err == nil {
				t.Fatal("Reload accepted it")
			}
			for _, want := range []string{tt.errHas, "still serving the previous certificate", MQTTS + " listener", WSS + " listener"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Reload error lacks %q: %v", want, err)
				}
			}
			serve(second)
		})
	}
	if err := b.Reload(); err != nil {
		t.Fatalf("Reload with the good files back: %v", err)
	}
	serve(second)
	if !strings.Contains(sink.since(0), "TLS certificate loaded") {
		t.Error("no log line for the loaded certificate")
	}
}

// TestTLSHandshakeBounded: TLS connections that never finish their
// handshake (silent, or stopping inside a ClientHello) count as pending,
// do not hold up other clients (the handshake runs in the connection's
// goroutine, not in Accept), and are closed at the CONNECT deadline; the
// pending count returns to 0.
func TestTLSHandshakeBounded(t *testing.T) {
	certs := testCerts(t)
	roots := caPool(t, certs.CA.Cert)
	for _, tt := range []struct {
		kind, scheme, path string
	}{
		{MQTTS, "ssl", ""},
		{WSS, "wss", "/mqtt"},
	} {
		t.Run(tt.kind, func(t *testing.T) {
			const stalled = 20
			limits := DefaultLimits()
			limits.ConnectTimeout = 3 * time.Second
			b, _ := startTestBroker(t, Options{Listeners: []ListenerConfig{tlsListener(tt.kind, certs)}, AllowAnonymous: true, Limits: limits})
			addr := listenerAddr(t, b, tt.kind)
			start := time.Now()
			conns := dialSilent(t, addr, stalled)
			for i, c := range conns {
				if i%2 == 1 {
					// A TLS record header announcing a 512-byte handshake
					// message, and two bytes of it.
					if _, err := c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00}); err != nil {
						t.Fatal(err)
					}
				}
			}
			waitFor(t, 10*time.Second, "stalled handshakes counted as pending", func() bool { return b.guard.pending.Load() >= stalled })
			roundTripTLS(t, tt.scheme+"://"+addr+tt.path, &tls.Config{RootCAs: roots})
			if p := b.guard.pending.Load(); p < stalled {
				t.Fatalf("only %d of %d stalled handshakes still pending after the round trip: it did not run during the stall", p, stalled)
			}
			for _, c := range conns {
				waitClosed(t, c, 15*time.Second)
			}
			if d := time.Since(start); d < limits.ConnectTimeout {
				t.Fatalf("stalled handshakes closed after %v, before the %v deadline", d, limits.ConnectTimeout)
			}
			waitFor(t, 10*time.Second, "pending count back to 0", func() bool { return b.guard.pending.Load() == 0 })
		})
	}
}

// TestListenerConfigRefused: listener settings that cannot work are
// startup errors that name the listener and the file at fault.
func TestListenerConfigRefused(t *testing.T) {
	certs := testCerts(t)
	dir := t.TempDir()
	garbage := dir + "/garbage.pem"
	if err := os.WriteFile(garbage, []byte("-----BEGIN NOTHING-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	other := testCerts(t)
	tests := []struct {
		name   string
		lc     ListenerConfig
		errHas []string
	}{
		{"mqtts without certificate", ListenerConfig{Kind: MQTTS, Addr: "127.0.0.1:0"}, []string{"mqtts listener", "needs a certificate file and a key file"}},
		{"wss without key", ListenerConfig{Kind: WSS, Addr: "127.0.0.1:0", CertFile: certs.Server.Cert}, []string{"wss listener", "key file"}},
		{"certificate on tcp", ListenerConfig{Kind: TCP, Addr: "127.0.0.1:0", CertFile: certs.Server.Cert, KeyFile: certs.Server.Key}, []string{"only for mqtts and wss"}},
		{"client CA on ws", ListenerConfig{Kind: WebSocket, Addr: "127.0.0.1:0", ClientCAFile: certs.CA.Cert}, []string{"only for mqtts and wss"}},
		{"origins on tcp", ListenerConfig{Kind: TCP, Addr: "127.0.0.1:0", AllowedOrigins: []string{"https://a.example"}}, []string{"origins are only for"}},
		{"origin with a path", ListenerConfig{Kind: WebSocket, Addr: "127.0.0.1:0", AllowedOrigins: []string{"https://a.example/app"}}, []string{`"https://a.example/app"`, "without a path"}},
		{"origin without scheme", ListenerConfig{Kind: WebSocket, Addr: "127.0.0.1:0", AllowedOrigins: []string{"a.example"}}, []string{`"a.example"`}},
		{"missing certificate", ListenerConfig{Kind: MQTTS, Addr: "127.0.0.1:0", CertFile: dir + "/none.crt", KeyFile: certs.Server.Key}, []string{dir + "/none.crt", "no such file"}},
		{"garbage certificate", ListenerConfig{Kind: MQTTS, Addr: "127.0.0.1:0", CertFile: garbage, KeyFile: certs.Server.Key}, []string{garbage}},
		{"key of another certificate", ListenerConfig{Kind: WSS, Addr: "127.0.0.1:0", CertFile: certs.Server.Cert, KeyFile: other.Server.Key}, []string{other.Server.Key, "does not match"}},
		{"client CA without certificates", ListenerConfig{Kind: MQTTS, Addr: "127.0.0.1:0", CertFile: certs.Server.Cert, KeyFile: certs.Server.Key, ClientCAFile: garbage}, []string{"client CA " + garbage, "no PEM certificate"}},
		{"unknown kind", ListenerConfig{Kind: "quic", Addr: "127.0.0.1:0"}, []string{`unknown kind "quic"`, `"mqtts"`, `"wss"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A TCP listener before it must be released again.
			b, err := New(Options{Listeners: []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}, tt.lc}, AllowAnonymous: true, Logger: discardLogger()})
			if err == nil {
				_ = b.Close()
				t.Fatal("New accepted it")
			}
			for _, want := range tt.errHas {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error lacks %q: %v", want, err)
				}
			}
		})
	}
}

// TestWebSocketOrigin: with an allow-list, a browser handshake from
// another origin gets 403 and is logged; allowed origins, requests without
// an Origin and python-paho-style requests naming the broker's own
// address get in. Without a list every origin gets in.
func TestWebSocketOrigin(t *testing.T) {
	certs := testCerts(t)
	allowed := []string{"https://Dash.example:8443", "http://192.168.1.20:8080/"}
	ws := ListenerConfig{Kind: WebSocket, Addr: "127.0.0.1:0", AllowedOrigins: allowed}
	wss := tlsListener(WSS, certs)
	wss.AllowedOrigins = allowed
	b, sink := startTestBroker(t, Options{
		Listeners:      []ListenerConfig{ws, wss, {Kind: WebSocket, Addr: "127.0.0.1:0"}},
		AllowAnonymous: true,
	})
	logEveryRefusal(b)
	open := b.Addrs()[2].Addr.String()
	roots := caPool(t, certs.CA.Cert)
	type tcase struct {
		origin string
		want   int
	}
	own := func(addr, scheme string) string { return scheme + "://" + addr }
	for _, l := range []struct{ kind, scheme, addr string }{
		{WebSocket, "ws", listenerAddr(t, b, WebSocket)},
		{WSS, "wss", listenerAddr(t, b, WSS)},
	} {
		cases := []tcase{
			{"", 101},
			{"https://dash.example:8443", 101},
			{"HTTPS://DASH.EXAMPLE:8443", 101},
			{"http://192.168.1.20:8080", 101},
			{own(l.addr, "https"), 101}, // python paho 1.6
			{own(l.addr, "http"), 101},
			{"https://dash.example", 403},
			{"http://dash.example:8443", 403},
			{"https://evil.example", 403},
			{"null", 403},
			{"http://localhost:" + l.addr[strings.LastIndex(l.addr, ":")+1:], 403}, // a name: DNS rebinding
			{"https://127.0.0.1:1", 403},
		}
		for _, c := range cases {
			t.Run(fmt.Sprintf("%s %q", l.kind, c.origin), func(t *testing.T) {
				mark := sink.len()
				status := wsHandshake(t, l.scheme+"://"+l.addr+"/mqtt", c.origin, roots)
				if status != c.want {
					t.Fatalf("HTTP %d, want %d", status, c.want)
				}
				if c.want == 403 {
					waitFor(t, 5*time.Second, "the refusal logged", func() bool {
						return strings.Contains(sink.since(mark), "origin not allowed")
					})
				}
			})
		}
	}
	t.Run("no list", func(t *testing.T) {
		if status := wsHandshake(t, "ws://"+open+"/mqtt", "https://evil.example", nil); status != 101 {
			t.Fatalf("HTTP %d, want 101", status)
		}
	})
	// All three are on loopback: nothing to warn about.
	if got := b.AnyOriginListeners(); len(got) != 0 {
		t.Errorf("AnyOriginListeners on loopback = %v, want none", got)
	}
}

// wsHandshake opens a WebSocket with the given Origin ("" sends none) and
// returns the HTTP status of the answer.
func wsHandshake(t testing.TB, url, origin string, roots *x509.CertPool) int {
	t.Helper()
	d := websocketDialer(roots)
	h := map[string][]string{}
	if origin != "" {
		h["Origin"] = []string{origin}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, resp, err := d.DialContext(ctx, url, h)
	if c != nil {
		_ = c.Close()
	}
	if resp == nil {
		t.Fatalf("no HTTP answer: %v", err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

func TestNormalizeOrigin(t *testing.T) {
	ok := map[string]string{
		"https://Dash.Example":       "https://dash.example",
		"https://dash.example:443":   "https://dash.example",
		"http://dash.example:80/":    "http://dash.example",
		"http://dash.example:8080":   "http://dash.example:8080",
		"http://[::1]:8080":          "http://[::1]:8080",
		"http://[FE80::1]":           "http://[fe80::1]",
		"https://192.168.1.20:8443 ": "https://192.168.1.20:8443",
	}
	for in, want := range ok {
		if got, err := normalizeOrigin(in); err != nil || got != want {
			t.Errorf("normalizeOrigin(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "null", "dash.example", "ftp://dash.example", "https://dash.example/app", "https://u:p@dash.example", "https://dash.example?x=1", "https://"} {
		if got, err := normalizeOrigin(in); err == nil {
			t.Errorf("normalizeOrigin(%q) = %q, want an error", in, got)
		}
	}
}

func TestIsLoopbackAddr(t *testing.T) {
	tests := []struct {
		addr net.Addr
		want bool
	}{
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8083}, true},
		{&net.TCPAddr{IP: net.IPv6loopback, Port: 8083}, true},
		{&net.TCPAddr{IP: net.IPv4zero, Port: 8083}, false},
		{&net.TCPAddr{IP: net.IPv6unspecified, Port: 8083}, false},
		{&net.TCPAddr{IP: net.IPv4(192, 168, 1, 20), Port: 8083}, false},
		{memAddr{}, false},
	}
	for _, tt := range tests {
		if got := isLoopbackAddr(tt.addr); got != tt.want {
			t.Errorf("isLoopbackAddr(%v) = %v, want %v", tt.addr, got, tt.want)
		}
	}
}

func TestHandshakeNoise(t *testing.T) {
	tests := []struct {
		reason string
		noise  bool
	}{
		{"EOF", true},
		{"read tcp 127.0.0.1:8883->127.0.0.1:5555: i/o timeout", true},
		{"context deadline exceeded", true},
		{"read tcp 127.0.0.1:8883->127.0.0.1:5555: read: connection reset by peer", true},
		{"remote error: tls: unknown certificate authority", false},
		{"tls: client didn't provide a certificate", false},
		{"the client sent MQTT without TLS (TLS turned off in the client, or the wrong port): tls: first record does not look like a TLS handshake", false},
	}
	for _, tt := range tests {
		if got := handshakeNoise(tt.reason); got != tt.noise {
			t.Errorf("handshakeNoise(%q) = %v, want %v", tt.reason, got, tt.noise)
		}
	}
}

// websocketDialer dials MQTT over WebSocket, trusting roots for wss.
func websocketDialer(roots *x509.CertPool) *websocket.Dialer {
	return &websocket.Dialer{
		Subprotocols:     []string{wsnet.Subprotocol},
		TLSClientConfig:  &tls.Config{RootCAs: roots},
		HandshakeTimeout: 10 * time.Second,
	}
}

func TestOpenToAnyPage(t *testing.T) {
	anyOrigin, _ := newOriginPolicy(nil)
	listed, _ := newOriginPolicy([]string{"https://dash.example"})
	lan := &net.TCPAddr{IP: net.IPv4(192, 168, 1, 20), Port: 8083}
	all := &net.TCPAddr{IP: net.IPv6unspecified, Port: 8083}
	loop := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8083}
	tests := []struct {
		name string
		kind string
		p    *originPolicy
		addr net.Addr
		want bool
	}{
		{"ws on all addresses, any origin", WebSocket, anyOrigin, all, true},
		{"wss on the LAN, any origin", WSS, anyOrigin, lan, true},
		{"ws on the LAN, origins listed", WebSocket, listed, lan, false},
		{"ws on loopback, any origin", WebSocket, anyOrigin, loop, false},
		{"tcp on all addresses", TCP, nil, all, false},
		{"mqtts on all addresses", MQTTS, nil, all, false},
	}
	for _, tt := range tests {
		if got := openToAnyPage(listenerKinds[tt.kind], tt.p, tt.addr); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}
