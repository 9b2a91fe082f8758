package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"
)

// TestPageThroughMain: the control page of the whole program. Without a
// session every call is 401; signed in with a user of the password file,
// switching the LED through the API drives the line, and a command from an
// MQTT client shows in the page's state.
func TestPageThroughMain(t *testing.T) {
	pw := passwordFile(t, "phone", "s3cret")
	m, _ := startMain(t, testConfig(pw))
	addrs := m.PageAddrs()
	if len(addrs) != 1 {
		t.Fatalf("page addresses %v, want one", addrs)
	}
	base := "http://" + addrs[0].String()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: testTimeout}
	do := func(method, path, body string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		req.Header.Set("Origin", base)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(b)
	}
	if resp, body := do("GET", "/api/lines", ""); resp.StatusCode != http.StatusUnauthorized || strings.Contains(body, "led") {
		t.Fatalf("without a session: %d %s", resp.StatusCode, body)
	}
	if resp, body := do("POST", "/api/login", `{"user":"phone","password":"wrong"}`); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d %s", resp.StatusCode, body)
	}
	if resp, body := do("POST", "/api/login", `{"user":"phone","password":"s3cret"}`); resp.StatusCode != http.StatusOK {
		t.Fatalf("sign in: %d %s", resp.StatusCode, body)
	}
	if resp, body := do("POST", "/api/outputs/led", `{"state":"on"}`); resp.StatusCode != http.StatusOK {
		t.Fatalf("switch on: %d %s", resp.StatusCode, body)
	}
	if got := lineValue(t, m); got != 1 {
		t.Fatalf("line = %d after the page switched it on", got)
	}
	host, port := addr(t, m, "tcp")
	publish(t, "tcp://"+host+":"+port, "phone", "s3cret", "raspberry/led", []byte("0"))
	state := func() string {
		_, body := do("GET", "/api/lines", "")
		var lines struct {
			Outputs []struct{ Name, State string }
		}
		if err := json.Unmarshal([]byte(body), &lines); err != nil || len(lines.Outputs) == 0 {
			t.Fatalf("lines: %v %s", err, body)
		}
		return lines.Outputs[0].State
	}
	// The page learns the change over MQTT; poll its API until then.
	deadline := time.Now().Add(testTimeout)
	for state() != "off" {
		if time.Now().After(deadline) {
			t.Fatalf("the page never showed the LED off after an MQTT client switched it")
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
}
