package main

import (
	"io"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/pimqtt/pimqtt/broker"
)

func TestListenerConfigs(t *testing.T) {
	lc := func(kind, addr string, optional bool) broker.ListenerConfig {
		return broker.ListenerConfig{Kind: kind, Addr: addr, Optional: optional}
	}
	cases := []struct {
		name           string
		tcp, ws        []string
		changed        bool
		passwordFile   string
		allowAnonymous bool
		want           []broker.ListenerConfig
		wantErr        bool
	}{
		{name: "defaults without password file bind loopback", tcp: []string{":1883"}, ws: []string{":8083"},
			want: []broker.ListenerConfig{lc("tcp", "127.0.0.1:1883", false), lc("tcp", "[::1]:1883", true), lc("ws", "127.0.0.1:8083", false), lc("ws", "[::1]:8083", true)}},
		{name: "defaults with password file bind everywhere", tcp: []string{":1883"}, ws: []string{":8083"}, passwordFile: "p",
			want: []broker.ListenerConfig{lc("tcp", ":1883", false), lc("ws", ":8083", false)}},
		{name: "explicit all-interfaces without password file", tcp: []string{":1883"}, changed: true, wantErr: true},
		{name: "explicit LAN address without password file", tcp: []string{"192.0.2.10:1883"}, changed: true, wantErr: true},
		{name: "explicit LAN address with allow-anonymous", tcp: []string{"0.0.0.0:1883"}, changed: true, allowAnonymous: true,
			want: []broker.ListenerConfig{lc("tcp", "0.0.0.0:1883", false)}},
		{name: "explicit loopback", tcp: []string{"127.0.0.1:1884", "[::1]:1884", "localhost:1885"}, changed: true,
			want: []broker.ListenerConfig{lc("tcp", "127.0.0.1:1884", false), lc("tcp", "[::1]:1884", false), lc("tcp", "localhost:1885", false)}},
		{name: "websocket disabled", tcp: []string{"127.0.0.1:1"}, ws: []string{""}, changed: true,
			want: []broker.ListenerConfig{lc("tcp", "127.0.0.1:1", false)}},
		{name: "garbage", tcp: []string{"no-port"}, changed: true, wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := listenerConfigs(tc.tcp, tc.ws, tc.changed, tc.changed, tc.passwordFile, tc.allowAnonymous)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if !tc.wantErr && !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseFlagsLines(t *testing.T) {
	cases := []struct {
		name          string
		args          []string
		wantShorthand bool
		wantOutputs   int
		wantInputs    int
		wantErr       string
	}{
		{name: "default is the one-LED shorthand", args: nil, wantShorthand: true},
		{name: "named lines replace the shorthand", args: []string{"--output", "relay=GPIO20,active-low", "--input", "door=GPIO5,pull-up"}, wantOutputs: 1, wantInputs: 1},
		{name: "explicit --gpio keeps the shorthand beside named lines", args: []string{"--gpio", "sim", "--output", "relay=sim:R"}, wantShorthand: true, wantOutputs: 1},
		{name: "bad output option", args: []string{"--output", "relay=GPIO20,blink"}, wantErr: "blink"},
		{name: "bad input pull", args: []string{"--input", "door=GPIO5,pull-up,pull-down"}, wantErr: "door"},
		{name: "input cannot be auto", args: []string{"--input", "door=auto"}, wantErr: "auto"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _, err := parseFlags(append(tc.args, "--log-level", "error"), io.Discard, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.UseShorthand != tc.wantShorthand || len(cfg.Outputs) != tc.wantOutputs || len(cfg.Inputs) != tc.wantInputs {
				t.Fatalf("shorthand %v outputs %d inputs %d", cfg.UseShorthand, len(cfg.Outputs), len(cfg.Inputs))
			}
		})
	}
}

// TestParseFlagsBadLimits: a limit out of range is refused with a message
// that names the flag that was given, first, so the user knows which one
// to fix.
func TestParseFlagsBadLimits(t *testing.T) {
	cases := []struct {
		flag, value string
	}{
		{"--max-packet-size", "10"},
		{"--max-connect-size", "10"},
		{"--connect-timeout", "0s"},
		{"--max-clients", "0"},
		{"--max-pending", "0"},
		{"--max-session-expiry", "-1s"},
		{"--max-inflight", "0"},
		{"--max-queued", "0"},
		{"--max-keepalive", "70000s"},
		{"--max-topic-length", "0"},
		{"--max-topic-levels", "0"},
		{"--max-user-properties", "-1"},
	}
	firstFlag := regexp.MustCompile(`--[a-z][a-z-]*`)
	for _, tc := range cases {
		t.Run(tc.flag, func(t *testing.T) {
			_, _, err := parseFlags([]string{tc.flag, tc.value, "--log-level", "error"}, io.Discard, io.Discard)
			if err == nil {
				t.Fatalf("%s %s accepted", tc.flag, tc.value)
			}
			if got := firstFlag.FindString(err.Error()); got != tc.flag {
				t.Fatalf("%s %s: error %q names %q first, want %s", tc.flag, tc.value, err, got, tc.flag)
			}
		})
	}
}
