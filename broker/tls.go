package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// expiryWarning is how long before its certificate expires a TLS listener
// starts warning at each load.
const expiryWarning = 30 * 24 * time.Hour

// tlsSource is one TLS listener's certificate, key and optional client
// CA, read from disk by New and again by every Reload. Handshakes use the
// set loaded last; a set that fails to load replaces nothing.
type tlsSource struct {
	kind, addr                      string // for messages
	certFile, keyFile, clientCAFile string
	log                             *slog.Logger
	current                         atomic.Pointer[tls.Config]
}

// newTLSSource loads lc's files. The error names the listener and the
// file at fault.
func newTLSSource(lc ListenerConfig, log *slog.Logger) (*tlsSource, error) {
	s := &tlsSource{kind: lc.Kind, addr: lc.Addr, certFile: lc.CertFile, keyFile: lc.KeyFile, clientCAFile: lc.ClientCAFile, log: log}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

// serverConfig is the listener's tls.Config. It hands each handshake the
// set loaded last, so a reload changes what new connections get without
// rebinding, while established connections keep theirs.
//
// It offers no ALPN protocols: MQTT clients rarely ask for one, and a
// WebSocket client that asks for h2 then falls back to HTTP/1.1, which is
// what the upgrade needs.
func (s *tlsSource) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.current.Load(), nil
		},
	}
}

// load reads the files and, if they are good, makes them the set new
// handshakes use.
func (s *tlsSource) load() error {
	cfg, leaf, err := s.read()
	if err != nil {
		return fmt.Errorf("broker: %s listener on %s: %w", s.kind, s.addr, err)
	}
	s.current.Store(cfg)
	attrs := []any{"kind", s.kind, "addr", s.addr, "cert", s.certFile, "subject", leaf.Subject.CommonName,
		"names", strings.Join(certNames(leaf), ","), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339)}
	if s.clientCAFile != "" {
		attrs = append(attrs, "client_ca", s.clientCAFile)
	}
	switch left := time.Until(leaf.NotAfter); {
	case left <= 0:
		s.log.Warn("TLS certificate has expired: clients will refuse it; make a new one (pimqtt cert) and reload", attrs...)
	case left < expiryWarning:
		s.log.Warn("TLS certificate expires soon; make a new one (pimqtt cert) and reload", append(attrs, "days_left", int(left.Hours()/24))...)
	default:
		s.log.Info("TLS certificate loaded", attrs...)
	}
	return nil
}

// read builds a complete server configuration from the files.
func (s *tlsSource) read() (*tls.Config, *x509.Certificate, error) {
	certPEM, err := os.ReadFile(s.certFile)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(s.keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate %s with key %s: %w", s.certFile, s.keyFile, err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}
	if s.clientCAFile != "" {
		caPEM, err := os.ReadFile(s.clientCAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, nil, fmt.Errorf("client CA %s: no PEM certificate in it", s.clientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		// A resumed session skips the certificate check, and its ticket
		// may predate a reload that replaced the client CA.
		cfg.SessionTicketsDisabled = true
	}
	return cfg, pair.Leaf, nil
}

// certNames lists what a certificate is valid for.
func certNames(c *x509.Certificate) []string {
	names := append([]string(nil), c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	return names
}

// reloadCertificates reads every TLS listener's files again. A listener
// whose files fail to load keeps serving the set it had; the error says
// which listener and file, and why.
func (b *Broker) reloadCertificates() error {
	var errs []error
	for _, s := range b.tls {
		if err := s.load(); err != nil {
			errs = append(errs, fmt.Errorf("%w (still serving the previous certificate)", err))
		}
	}
	return errors.Join(errs...)
}

// checkTLSFields refuses TLS files on a listener that would ignore them,
// and a TLS listener without a certificate.
func (lc ListenerConfig) checkTLSFields(k listenerKind) error {
	switch {
	case k.tls && (lc.CertFile == "" || lc.KeyFile == ""):
		return fmt.Errorf("broker: %s listener on %s needs a certificate file and a key file (CertFile, KeyFile; pimqtt cert makes them)", lc.Kind, lc.Addr)
	case !k.tls && (lc.CertFile != "" || lc.KeyFile != "" || lc.ClientCAFile != ""):
		return fmt.Errorf("broker: %s listener on %s: a certificate, key or client CA is only for %s and %s listeners", lc.Kind, lc.Addr, MQTTS, WSS)
	}
	return nil
}

// handshake runs the TLS handshake of a connection accepted by an mqtts
// listener, in the connection's own goroutine, within the CONNECT
// deadline that began at accept (zero: none).
func (l *connListener) handshake(c *tls.Conn, deadline time.Time) error {
	ctx := context.Background()
	if !deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	err := c.HandshakeContext(ctx)
	if err == nil {
		return nil
	}
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) && rh.RecordHeader[0]&0xf0 == 0x10 {
		// The first byte of an MQTT CONNECT: the client has TLS off.
		err = fmt.Errorf("the client sent MQTT without TLS (TLS turned off in the client, or the wrong port): %w", err)
	}
	l.guard.handshakeFailed(c.RemoteAddr().String(), err.Error(), l.log)
	return err
}

// handshakeFailed reports a failed TLS handshake, on an mqtts listener or
// under a wss listener's HTTP server. A client that hung up or timed out
// is logged at debug level only: port scanners and health checks do
// that. The others (a phone that does not trust the certificate, a client
// without its certificate) are warnings, rate-limited per remote host.
func (g *connGuard) handshakeFailed(remote, reason string, log *slog.Logger) {
	if handshakeNoise(reason) {
		log.Debug("TLS handshake ended", "remote", remote, "reason", reason)
		return
	}
	attrs := []any{"remote", remote, "reason", reason}
	if hint := handshakeHint(reason); hint != "" {
		attrs = append(attrs, "hint", hint)
	}
	g.tlsFailed.add(remoteHost(remote), attrs...)
}

// handshakeHint says what a handshake error usually means for a
// household's clients.
func handshakeHint(reason string) string {
	switch {
	case strings.Contains(reason, "unknown certificate authority"), strings.Contains(reason, "bad certificate"),
		strings.HasSuffix(reason, "bad record MAC"):
		// An OpenSSL client that refuses the certificate in TLS 1.3 sends
		// its alert unencrypted, which reads here as a bad record MAC.
		return "usually a client that does not trust this certificate: give it the CA certificate (ca.crt), or check that it connects by a name or address the certificate lists"
	case strings.Contains(reason, "didn't provide a certificate"):
		return "this listener requires a client certificate signed by its client CA"
	case strings.Contains(reason, "certificate signed by unknown authority"):
		return "the client's certificate is not signed by this listener's client CA"
	}
	return ""
}

// handshakeNoise reports whether a handshake error only says that the
// peer went away or was too slow.
func handshakeNoise(reason string) bool {
	for _, s := range []string{io.EOF.Error(), "i/o timeout", context.DeadlineExceeded.Error(), syscall.ECONNRESET.Error(), net.ErrClosed.Error(), "broken pipe"} {
		if strings.HasSuffix(reason, s) {
			return true
		}
	}
	return false
}

// httpErrorLog routes the log lines of a wss listener's HTTP server:
// failed TLS handshakes to handshakeFailed, the rest to the debug log.
type httpErrorLog struct {
	guard *connGuard
	log   *slog.Logger
}

// tlsErrorPrefix is how net/http reports a failed handshake:
// "http: TLS handshake error from ADDR: REASON".
const tlsErrorPrefix = "http: TLS handshake error from "

func (w httpErrorLog) Write(p []byte) (int, error) {
	line := strings.TrimSuffix(string(p), "\n")
	if rest, ok := strings.CutPrefix(line, tlsErrorPrefix); ok {
		// The address holds colons; the reason begins after the first ": ".
		if remote, reason, ok := strings.Cut(rest, ": "); ok {
			w.guard.handshakeFailed(remote, reason, w.log)
			return len(p), nil
		}
	}
	w.log.Debug(line)
	return len(p), nil
}
