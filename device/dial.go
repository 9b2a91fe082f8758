package device

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pimqtt/pimqtt/wsnet"
)

// NetDialer returns a DialFunc that reaches an external MQTT broker, for device-only mode.
//
// Accepted URLs:
//   - tcp://host[:port], mqtt://host[:port]: plain TCP, default port 1883
//   - mqtts://host[:port], ssl://host[:port], tls://host[:port]: TLS over TCP, default port 8883,
//     server certificate verified against the system roots, or against WithCAFile's CA
//   - ws://host[:port][/path]: WebSocket, default port 80, default path /mqtt
//   - wss://host[:port][/path]: WebSocket over TLS, default port 443, default path /mqtt
//
// WebSocket connections (wsnet.Conn) offer the "mqtt" subprotocol and carry MQTT in binary
// frames. No HTTP proxy is used. Credentials do not belong in the URL (they would end up in
// logs): pass them in Options. timeout bounds connecting, including the TLS and WebSocket handshakes; 0 means 10 s.
//
// The DialFunc's errors name the broker's address at most once (a *net.OpError names it, the
// handshake errors do not): its caller names the broker in its own logs. A certificate the
// client does not accept is explained (which CA, which names) in the error.
//
// Options: WithCAFile for a broker whose certificate a local CA signed.
func NetDialer(brokerURL string, timeout time.Duration, opts ...DialOption) (DialFunc, error) {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	tg, err := resolveBrokerURL(brokerURL)
	if err != nil {
		return nil, err
	}
	var o dialOptions
	for _, opt := range opts {
		opt(&o)
	}
	netDialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	tlsConfig := &tls.Config{ServerName: tg.serverName, MinVersion: tls.VersionTLS12}
	if o.caFile != "" {
		if tg.kind != kindTLS && tg.kind != kindWSS {
			return nil, fmt.Errorf("CA file %s: only used with TLS, and broker URL %q is not mqtts:// or wss://", o.caFile, brokerURL)
		}
		if tlsConfig.RootCAs, err = loadCAFile(o.caFile); err != nil {
			return nil, err
		}
	}

	// The errors name the address at most once: a failed TCP dial is a *net.OpError, whose
	// text reads "dial tcp 127.0.0.1:1883: connect: connection refused", and the handshake
	// errors leave it to the caller, which knows it (the device logs it as broker=URL).
	switch tg.kind {
	case kindTCP:
		return func(ctx context.Context) (net.Conn, error) {
			return netDialer.DialContext(ctx, "tcp", tg.addr)
		}, nil
	case kindTLS:
		tlsDialer := &tls.Dialer{NetDialer: netDialer, Config: tlsConfig}
		return func(ctx context.Context) (net.Conn, error) {
			c, err := tlsDialer.DialContext(ctx, "tcp", tg.addr)
			if err != nil && !isOpError(err) {
				return nil, fmt.Errorf("TLS handshake: %w%s", err, certificateHint(err, o.caFile))
			}
			return c, err
		}, nil
	}
	wsDialer := &websocket.Dialer{
		NetDialContext:   netDialer.DialContext,
		HandshakeTimeout: timeout,
		Subprotocols:     []string{wsnet.Subprotocol},
	}
	if tg.kind == kindWSS {
		wsDialer.TLSClientConfig = tlsConfig
	}
	return func(ctx context.Context) (net.Conn, error) {
		ws, resp, err := wsDialer.DialContext(ctx, tg.wsURL, nil)
		if resp != nil && resp.Body != nil {
			// Only the status matters; close the body so nothing holds the connection.
			_ = resp.Body.Close()
		}
		switch {
		case err == nil:
		case resp != nil:
			return nil, fmt.Errorf("websocket handshake: HTTP %s: %w", resp.Status, err)
		case isOpError(err):
			return nil, err
		default:
			return nil, fmt.Errorf("websocket handshake: %w%s", err, certificateHint(err, o.caFile))
		}
		return wsnet.New(ws), nil
	}, nil
}

// DialOption changes how NetDialer's connections are made.
type DialOption func(*dialOptions)

type dialOptions struct {
	caFile string
}

// WithCAFile makes mqtts:// and wss:// connections trust the CA certificates in the PEM file
// path, and only those, instead of the system's roots, as mosquitto_pub --cafile does: for a
// broker whose certificate a local CA signed (pimqtt cert, or a mosquitto with its own CA).
// NetDialer reads the file at once and refuses it with a ws:// or tcp:// URL, where it would
// be silently unused.
func WithCAFile(path string) DialOption {
	return func(o *dialOptions) { o.caFile = path }
}

// loadCAFile reads a PEM file of CA certificates.
func loadCAFile(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("CA file %s: no PEM certificate in it (want the broker's CA certificate, e.g. ca.crt from pimqtt cert)", path)
	}
	return pool, nil
}

// certificateHint explains a broker certificate the client refused, or returns "".
func certificateHint(err error, caFile string) string {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	switch {
	case errors.As(err, &unknown) && caFile == "":
		// Without a CA file the error stays as crypto/tls says it: the
		// device's log line quotes it whole, and the caller's own terms
		// (a flag) say best what to give.
		return ""
	case errors.As(err, &unknown):
		return fmt.Sprintf(" (the broker's certificate is not signed by the CA in %s: give the CA file of the broker's own CA)", caFile)
	case errors.As(err, &host):
		names := append([]string(nil), host.Certificate.DNSNames...)
		for _, ip := range host.Certificate.IPAddresses {
			names = append(names, ip.String())
		}
		return fmt.Sprintf(" (connect by a name the certificate lists, %s, or make a certificate that includes %s)",
			strings.Join(names, ", "), host.Host)
	}
	return ""
}

// isOpError reports whether err is a *net.OpError, which names the address it was about.
func isOpError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op)
}

// transport kinds NetDialer knows.
const (
	kindTCP = "tcp"
	kindTLS = "tls"
	kindWS  = "ws"
	kindWSS = "wss"
)

// brokerTarget is a parsed broker URL with the defaults applied.
type brokerTarget struct {
	kind       string // kindTCP, kindTLS, kindWS or kindWSS
	addr       string // host:port, for tcp and tls
	wsURL      string // full URL, for ws and wss
	serverName string // for certificate verification
}

// resolveBrokerURL validates a broker URL and applies the default port and path; it is
// separate from NetDialer so the defaults can be tested without dialling.
func resolveBrokerURL(brokerURL string) (brokerTarget, error) {
	if !strings.Contains(brokerURL, "://") {
		return brokerTarget{}, fmt.Errorf("broker URL %q: no scheme (want e.g. tcp://127.0.0.1:1883 or ws://host:8080/mqtt)", brokerURL)
	}
	u, err := url.Parse(brokerURL)
	if err != nil {
		return brokerTarget{}, fmt.Errorf("broker URL: %w", err)
	}
	if u.User != nil {
		return brokerTarget{}, fmt.Errorf("broker URL %q: credentials in the URL are not supported, set the username and password options instead", u.Redacted())
	}
	if u.Hostname() == "" {
		return brokerTarget{}, fmt.Errorf("broker URL %q: no host", brokerURL)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return brokerTarget{}, fmt.Errorf("broker URL %q: bad port %q", brokerURL, p)
		}
	}
	tg := brokerTarget{serverName: u.Hostname()}
	scheme := strings.ToLower(u.Scheme)
	switch scheme {
	case "tcp", "mqtt", "mqtts", "ssl", "tls":
		if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return brokerTarget{}, fmt.Errorf("broker URL %q: a %s:// URL takes no path, query or fragment", brokerURL, scheme)
		}
		if scheme == "tcp" || scheme == "mqtt" {
			tg.kind, tg.addr = kindTCP, hostPort(u, "1883")
		} else {
			tg.kind, tg.addr = kindTLS, hostPort(u, "8883")
		}
	case "ws", "wss":
		w := *u
		w.Scheme = scheme
		w.Fragment = ""
		if w.Path == "" {
			w.Path = "/mqtt"
		}
		tg.kind, tg.wsURL = scheme, w.String()
	default:
		return brokerTarget{}, fmt.Errorf("broker URL %q: unsupported scheme %q (want tcp, mqtt, mqtts, ssl, tls, ws or wss)", brokerURL, u.Scheme)
	}
	return tg, nil
}

// hostPort adds the scheme's default port when the URL has none.
func hostPort(u *url.URL, defaultPort string) string {
	if p := u.Port(); p != "" {
		return net.JoinHostPort(u.Hostname(), p)
	}
	return net.JoinHostPort(u.Hostname(), defaultPort)
}
