package main

import (
	"context"
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

// TestDiscoveryAndTelemetryThroughMain: with Home Assistant discovery on,
// the retained device config is there the moment the program is started
// (before any network listener opened), with the page as its link, and the
// telemetry is retained on PREFIX/telemetry.
func TestDiscoveryAndTelemetryThroughMain(t *testing.T) {
	cfg := testConfig("")
	cfg.HomeAssistant.Discovery = true
	cfg.Device.ClientID = "pimqtt-test"
	m := &Main{Config: cfg, Logger: discardLogger()}
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	const topic = "homeassistant/device/pimqtt-test/config"
	got := retainedNow(t, m, topic, "raspberry/telemetry")
	var config struct {
		Dev  map[string]any            `json:"dev"`
		O    map[string]any            `json:"o"`
		Cmps map[string]map[string]any `json:"cmps"`
	}
	if err := json.Unmarshal([]byte(got[topic]), &config); err != nil {
		t.Fatalf("no device config on %s right after Run: %v (%q)", topic, err, got[topic])
	}
	if config.O["name"] != "pimqtt" || config.Dev["cu"] == nil && config.Dev["configuration_url"] == nil {
		t.Errorf("origin or configuration_url missing: dev %v, o %v", config.Dev, config.O)
	}
	found := false
	for _, c := range config.Cmps {
		found = found || c["p"] == "switch"
	}
	if !found {
		t.Errorf("no switch among the components %v", config.Cmps)
	}
	var tele map[string]any
	if err := json.Unmarshal([]byte(got["raspberry/telemetry"]), &tele); err != nil || tele["uptime_s"] == nil {
		t.Errorf("telemetry %q (%v), want a JSON document with uptime_s", got["raspberry/telemetry"], err)
	}
}
