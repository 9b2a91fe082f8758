package web

import (
	"crypto/tls"
	"encoding/xml"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestQRText(t *testing.T) {
	text, err := QRText("http://192.168.1.20:8080/")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	// Version 2 at level M: 25 modules plus the 4-module quiet zone on each side, two rows a line.
	width := utf8.RuneCountInString(lines[0])
	if width != 33 || len(lines) != 17 {
		t.Fatalf("%d lines of %d, want 17 of 33:\n%s", len(lines), width, text)
	}
	// The quiet zone is light: full blocks in the first line.
	if lines[0] != strings.Repeat("█", 33) {
		t.Errorf("first line %q", lines[0])
	}
}

func TestQRSVG(t *testing.T) {
	svg, err := qrSVG("http://192.168.1.20:8080/")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		XMLName xml.Name
		ViewBox string `xml:"viewBox,attr"`
		Path    struct {
			D string `xml:"d,attr"`
		} `xml:"path"`
	}
	if err := xml.Unmarshal(svg, &doc); err != nil {
		t.Fatalf("%v in %s", err, svg)
	}
	if doc.XMLName.Local != "svg" || doc.ViewBox != "0 0 33 33" || !strings.HasPrefix(doc.Path.D, "M4 4h7v1h-7z") {
		t.Fatalf("svg %s", svg)
	}
}

// The QR code shows the address the browser used, unless that is loopback.
func TestPageURL(t *testing.T) {
	s := &Server{opts: Options{PageURL: "http://192.168.1.20:8080/"}}
	tests := []struct {
		host string
		tls  bool
		want string
	}{
		{"raspberrypi.local:8080", false, "http://raspberrypi.local:8080/"},
		{"192.168.1.20:8080", true, "https://192.168.1.20:8080/"},
		{"[fe80::1]:8080", false, "http://[fe80::1]:8080/"},
		{"127.0.0.1:8080", false, "http://192.168.1.20:8080/"},
		{"localhost:8080", false, "http://192.168.1.20:8080/"},
		{"[::1]:8080", false, "http://192.168.1.20:8080/"},
		{"localhost", false, "http://192.168.1.20:8080/"},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/api/qr.svg", nil)
		r.Host = tt.host
		r.TLS = nil
		if tt.tls {
			r.TLS = &tls.ConnectionState{}
		}
		if got := s.pageURL(r); got != tt.want {
			t.Errorf("Host %s: %s, want %s", tt.host, got, tt.want)
		}
	}
	s.opts.PageURL = ""
	r := httptest.NewRequest("GET", "/", nil)
	r.Host, r.TLS = "127.0.0.1:8080", nil
	if got := s.pageURL(r); got != "http://127.0.0.1:8080/" {
		t.Errorf("loopback without PageURL: %s", got)
	}
}

// The endpoint serves the SVG to a signed-in user.
func TestQREndpoint(t *testing.T) {
	r := newRig(t, Options{})
	c := r.client()
	c.login("alice", alicePassword)
	resp, body := c.do("GET", "/api/qr.svg", "")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "image/svg+xml" || !strings.HasPrefix(body, "<svg") {
		t.Fatalf("%s %v %.40s", resp.Status, resp.Header, body)
	}
}
