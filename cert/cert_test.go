package cert

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pimqtt/pimqtt/mqtttest"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := parseCertPEM(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

func pool(t *testing.T, caFile string) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	p.AddCert(readCert(t, caFile))
	return p
}

func TestMakeNewCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls") // Make creates it
	res, err := Make(Options{
		Dir:      dir,
		DNSNames: DefaultDNSNames("RaspberryPi"),
		IPs:      []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP("192.168.1.20")},
		Clients:  []string{"phone"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.CAReused {
		t.Error("CAReused in an empty directory")
	}
	modes := map[string]os.FileMode{
		res.CA.Cert: 0o644, res.CA.Key: 0o600, res.Server.Cert: 0o644, res.Server.Key: 0o600,
		filepath.Join(dir, "phone.crt"): 0o644, filepath.Join(dir, "phone.key"): 0o600,
	}
	for path, want := range modes {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != want {
			t.Errorf("%s: mode %v, want %v", path, got, want)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != len(modes) {
		t.Errorf("%d files in %s, want %d (temporary files left?)", len(entries), dir, len(modes))
	}

	ca := readCert(t, res.CA.Cert)
	if !ca.IsCA || !ca.MaxPathLenZero {
		t.Errorf("CA: IsCA %v, MaxPathLenZero %v", ca.IsCA, ca.MaxPathLenZero)
	}
	if pub, ok := ca.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("CA key is %T, want ECDSA P-256", ca.PublicKey)
	}
	if life := ca.NotAfter.Sub(ca.NotBefore); life < 10*365*24*time.Hour {
		t.Errorf("CA valid for %v, want 10 years", life)
	}

	server := readCert(t, res.Server.Cert)
	// iOS refuses server certificates valid for more than 825 days.
	if life := server.NotAfter.Sub(server.NotBefore); life > 825*24*time.Hour {
		t.Errorf("server certificate valid for %v, more than 825 days", life)
	}
	if !res.Server.NotAfter.Equal(server.NotAfter) {
		t.Errorf("Result says %v, the file %v", res.Server.NotAfter, server.NotAfter)
	}
	roots := pool(t, res.CA.Cert)
	for _, name := range []string{"raspberrypi", "raspberrypi.local", "localhost", "127.0.0.1", "::1", "192.168.1.20"} {
		_, err := server.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		if err != nil {
			t.Errorf("server certificate for %s: %v", name, err)
		}
	}
	if _, err := server.Verify(x509.VerifyOptions{DNSName: "otherpi.local", Roots: roots}); err == nil {
		t.Error("server certificate verifies for a name it was not made for")
	}
	if _, err := tls.LoadX509KeyPair(res.Server.Cert, res.Server.Key); err != nil {
		t.Errorf("server pair: %v", err)
	}

	client := readCert(t, res.Clients[0].Cert)
	if client.Subject.CommonName != "phone" {
		t.Errorf("client CN %q", client.Subject.CommonName)
	}
	if _, err := client.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	if _, err := tls.LoadX509KeyPair(res.Clients[0].Cert, res.Clients[0].Key); err != nil {
		t.Errorf("client pair: %v", err)
	}
}

// TestCAReused: a second run keeps the CA (the phones trust it) and issues
// a new server certificate that it signed.
func TestCAReused(t *testing.T) {
	dir := t.TempDir()
	first, err := Make(Options{Dir: dir, DNSNames: []string{"pi.local"}})
	if err != nil {
		t.Fatal(err)
	}
	caBefore, _ := os.ReadFile(first.CA.Cert)
	keyBefore, _ := os.ReadFile(first.CA.Key)
	serverBefore := readCert(t, first.Server.Cert)

	second, err := Make(Options{Dir: dir, DNSNames: []string{"pi.local", "pi.lan"}, IPs: []net.IP{net.ParseIP("10.0.0.7")}})
	if err != nil {
		t.Fatal(err)
	}
	if !second.CAReused {
		t.Error("CAReused false on the second run")
	}
	caAfter, _ := os.ReadFile(second.CA.Cert)
	keyAfter, _ := os.ReadFile(second.CA.Key)
	if !bytes.Equal(caBefore, caAfter) || !bytes.Equal(keyBefore, keyAfter) {
		t.Fatal("the CA was overwritten")
	}
	server := readCert(t, second.Server.Cert)
	if server.SerialNumber.Cmp(serverBefore.SerialNumber) == 0 {
		t.Error("the server certificate was not reissued")
	}
	for _, name := range []string{"pi.lan", "pi.local", "10.0.0.7"} {
		if _, err := server.Verify(x509.VerifyOptions{DNSName: name, Roots: pool(t, second.CA.Cert)}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestCAConstrained: the CA phones are asked to trust cannot vouch for
// other sites, even with its key in hand.
func TestCAConstrained(t *testing.T) {
	dir := t.TempDir()
	res, err := Make(Options{Dir: dir, DNSNames: []string{"pi.local", "mypi.example.net"}})
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(res.Server.Cert)
	ca, key, err := loadCA(res.CA, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	roots := pool(t, res.CA.Cert)
	allowed := []string{"pi.local", "other.local", "localhost", "mypi.example.net", "pi.fritz.box", "pi.home.arpa", "192.168.7.7", "10.1.2.3", "fd00::1"}
	forbidden := []string{"www.example.com", "example.net", "bank.com", "pi", "8.8.8.8", "2001:db8::1"}
	for _, name := range append(append([]string(nil), allowed...), forbidden...) {
		tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: name}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		if ip := net.ParseIP(name); ip != nil {
			tmpl.IPAddresses = []net.IP{ip}
		} else {
			tmpl.DNSNames = []string{name}
		}
		der, _, err := issue(tmpl, ca, key, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := x509.ParseCertificate(der)
		_, err = leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots})
		if wantOK := !slices.Contains(forbidden, name); wantOK != (err == nil) {
			t.Errorf("certificate for %s: verify error %v", name, err)
		}
	}

	// Make refuses to issue for a name outside the CA, and writes nothing.
	_, err = Make(Options{Dir: dir, DNSNames: []string{"pi.local", "www.example.com"}})
	if err == nil || !strings.Contains(err.Error(), "move its ca.crt and ca.key away") {
		t.Fatalf("Make for a name outside the CA: %v", err)
	}
	if after, _ := os.ReadFile(res.Server.Cert); !bytes.Equal(before, after) {
		t.Error("the server certificate was replaced by a failed run")
	}
}

// TestOpenSSLAgrees: OpenSSL, which mosquitto and its clients use, accepts
// the chain and enforces the CA's name constraints as Go does.
func TestOpenSSLAgrees(t *testing.T) {
	openssl := mqtttest.RequireTool(t, "openssl", "openssl")
	dir := t.TempDir()
	res, err := Make(Options{Dir: dir, DNSNames: []string{"pi.local", "localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}, Clients: []string{"phone"}})
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		out, err := exec.Command(openssl, args...).CombinedOutput()
		return string(out), err
	}
	if out, err := run("verify", "-CAfile", res.CA.Cert, "-purpose", "sslserver", "-verify_hostname", "pi.local", res.Server.Cert); err != nil {
		t.Errorf("openssl verify server: %v\n%s", err, out)
	}
	if out, err := run("verify", "-CAfile", res.CA.Cert, "-purpose", "sslserver", "-verify_ip", "127.0.0.1", res.Server.Cert); err != nil {
		t.Errorf("openssl verify server by address: %v\n%s", err, out)
	}
	if out, err := run("verify", "-CAfile", res.CA.Cert, "-purpose", "sslclient", res.Clients[0].Cert); err != nil {
		t.Errorf("openssl verify client: %v\n%s", err, out)
	}
	// A certificate for another site, signed with the CA's key.
	ca, key, err := loadCA(res.CA, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	der, evilKey, err := issue(&x509.Certificate{Subject: pkix.Name{CommonName: "bank.com"}, DNSNames: []string{"bank.com"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ca, key, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	evil := Files{Cert: filepath.Join(dir, "evil.crt"), Key: filepath.Join(dir, "evil.key")}
	if err := writeKeyPair(evil, der, evilKey); err != nil {
		t.Fatal(err)
	}
	out, err := run("verify", "-CAfile", res.CA.Cert, "-purpose", "sslserver", evil.Cert)
	if err == nil || !strings.Contains(out, "permitted subtree violation") {
		t.Errorf("openssl accepted a certificate for bank.com from the local CA: %v\n%s", err, out)
	}
}

func TestMakeRefuses(t *testing.T) {
	withCA := func(t *testing.T) string {
		dir := t.TempDir()
		if _, err := Make(Options{Dir: dir, DNSNames: []string{"pi.local"}}); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	tests := []struct {
		name    string
		dir     func(t *testing.T) string
		opts    Options
		errHas  string
		written bool // whether files may exist afterwards (the CA case only)
	}{
		{"no names", func(t *testing.T) string { return t.TempDir() }, Options{}, "no host name or address", false},
		{"bad host", func(t *testing.T) string { return t.TempDir() }, Options{DNSNames: []string{"pi_1.local"}}, "host name", false},
		{"bad client", func(t *testing.T) string { return t.TempDir() }, Options{DNSNames: []string{"pi"}, Clients: []string{"../x"}}, "client name", false},
		{"client named server", func(t *testing.T) string { return t.TempDir() }, Options{DNSNames: []string{"pi"}, Clients: []string{"server"}}, "client name", false},
		{"CA certificate without key", func(t *testing.T) string {
			dir := withCA(t)
			if err := os.Remove(filepath.Join(dir, CAKeyFile)); err != nil {
				t.Fatal(err)
			}
			return dir
		}, Options{DNSNames: []string{"pi.local"}}, "exists but its key cannot be read", true},
		{"CA key without certificate", func(t *testing.T) string {
			dir := withCA(t)
			if err := os.Remove(filepath.Join(dir, CACertFile)); err != nil {
				t.Fatal(err)
			}
			return dir
		}, Options{DNSNames: []string{"pi.local"}}, "exists but its certificate cannot be read", true},
		{"CA key of another CA", func(t *testing.T) string {
			dir, other := withCA(t), withCA(t)
			b, _ := os.ReadFile(filepath.Join(other, CAKeyFile))
			if err := os.WriteFile(filepath.Join(dir, CAKeyFile), b, 0o600); err != nil {
				t.Fatal(err)
			}
			return dir
		}, Options{DNSNames: []string{"pi.local"}}, "does not belong", true},
		{"server certificate as CA", func(t *testing.T) string {
			dir := withCA(t)
			for _, p := range [][2]string{{ServerCertFile, CACertFile}, {ServerKeyFile, CAKeyFile}} {
				b, _ := os.ReadFile(filepath.Join(dir, p[0]))
				if err := os.WriteFile(filepath.Join(dir, p[1]), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			return dir
		}, Options{DNSNames: []string{"pi.local"}}, "not a CA", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := tt.dir(t)
			before := snapshot(t, dir)
			tt.opts.Dir = dir
			_, err := Make(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("err = %v, want one containing %q", err, tt.errHas)
			}
			if after := snapshot(t, dir); after != before {
				t.Errorf("files changed by a refused run:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// snapshot describes a directory's files and contents.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range entries {
		data, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		b.WriteString(e.Name() + ":" + string(data) + ";")
	}
	return b.String()
}

func TestDefaultDNSNames(t *testing.T) {
	tests := []struct {
		host string
		want []string
	}{
		{"raspberrypi", []string{"raspberrypi", "raspberrypi.local", "localhost"}},
		{"RaspberryPi.", []string{"raspberrypi", "raspberrypi.local", "localhost"}},
		{"pi.local", []string{"pi", "pi.local", "localhost"}},
		{"localhost", []string{"localhost"}},
		{"", []string{"localhost"}},
	}
	for _, tt := range tests {
		if got := DefaultDNSNames(tt.host); strings.Join(got, ",") != strings.Join(tt.want, ",") {
			t.Errorf("DefaultDNSNames(%q) = %v, want %v", tt.host, got, tt.want)
		}
	}
}

// TestFingerprintAsOpenSSL: the fingerprint printed for checking the CA on
// a phone is the one openssl (and the phones) show.
func TestFingerprintAsOpenSSL(t *testing.T) {
	openssl := mqtttest.RequireTool(t, "openssl", "openssl")
	res, err := Make(Options{Dir: t.TempDir(), DNSNames: []string{"pi.local"}})
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(openssl, "x509", "-noout", "-fingerprint", "-sha256", "-in", res.CA.Cert).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	// "sha256 Fingerprint=AB:CD:..." (the prefix's case varies by version)
	_, want, _ := strings.Cut(strings.TrimSpace(string(out)), "=")
	if res.CAFingerprint != want {
		t.Errorf("fingerprint %s, openssl says %s", res.CAFingerprint, want)
	}
}
