package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunCert(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	var out, errOut bytes.Buffer
	code := runCert([]string{"--dir", dir, "--host", "mypi.lan", "--ip", "192.168.5.5,10.9.9.9", "--client", "phone"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d\nstderr: %s", code, errOut.String())
	}
	for _, want := range []string{"(created)", filepath.Join(dir, "ca.crt"), "SHA-256 fingerprint", "mypi.lan", "192.168.5.5", "10.9.9.9",
		"localhost", "127.0.0.1", "::1", filepath.Join(dir, "phone.crt"), "--tls-cert " + filepath.Join(dir, "server.crt"),
		"chown pimqtt: " + filepath.Join(dir, "server.key"), "Android", "iOS", "Certificate Trust Settings", "pimqtt local CA"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	t.Logf("output:\n%s", out.String())
	b, err := os.ReadFile(filepath.Join(dir, "server.crt"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	if host != "" && !strings.Contains(strings.Join(leaf.DNSNames, " "), strings.ToLower(host)+".local") {
		t.Errorf("DNS names %v lack %s.local", leaf.DNSNames, host)
	}
	if !containsIP(leaf.IPAddresses, "192.168.5.5") || !containsIP(leaf.IPAddresses, "127.0.0.1") {
		t.Errorf("IP addresses %v", leaf.IPAddresses)
	}

	out.Reset()
	if code := runCert([]string{"--dir", dir}, &out, &errOut); code != 0 {
		t.Fatalf("second run: exit %d\nstderr: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "(reused)") {
		t.Errorf("second run does not say the CA was reused:\n%s", out.String())
	}
}

func containsIP(ips []net.IP, s string) bool {
	for _, ip := range ips {
		if ip.Equal(net.ParseIP(s)) {
			return true
		}
	}
	return false
}

func TestRunCertRefuses(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		errHas string
	}{
		{"bad address", []string{"--ip", "pi.local"}, 2, "not an IP address"},
		{"bad host", []string{"--host", "pi_1"}, 1, "host name"},
		{"bad client", []string{"--client", "a/b"}, 1, "client name"},
		{"argument", []string{"extra"}, 2, "unexpected argument"},
		{"unknown flag", []string{"--days", "3"}, 2, "unknown flag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			var out, errOut bytes.Buffer
			code := runCert(append([]string{"--dir", dir}, tt.args...), &out, &errOut)
			if code != tt.code || !strings.Contains(errOut.String(), tt.errHas) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, errOut.String(), tt.code, tt.errHas)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("a refused run wrote %d files", len(entries))
			}
		})
	}
}
