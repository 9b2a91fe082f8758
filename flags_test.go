package main

import (
	"io"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/pimqtt/pimqtt/broker"
	"github.com/pimqtt/pimqtt/config"
)

// resolve is the command line as main reads it, without a default file
// and with an empty environment.
func resolve(t *testing.T, args ...string) (config.Config, error) {
	t.Helper()
	fs := pflag.NewFlagSet("pimqtt", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cmd := config.Bind(fs, func(string) string { return "" })
	cmd.DefaultPath = filepath.Join(t.TempDir(), "absent.toml")
	if err := fs.Parse(args); err != nil {
		return config.Config{}, err
	}
	return cmd.Resolve()
}

func TestBrokerListeners(t *testing.T) {
	lc := func(kind, addr string, optional bool) broker.ListenerConfig {
		return broker.ListenerConfig{Kind: kind, Addr: addr, Optional: optional}
	}
	cases := []struct {
		name    string
		args    []string
		want    []broker.ListenerConfig
		wantErr string
	}{
		{name: "defaults without password file bind loopback", args: nil,
			want: []broker.ListenerConfig{lc("tcp", "127.0.0.1:1883", false), lc("tcp", "[::1]:1883", true), lc("ws", "127.0.0.1:8083", false), lc("ws", "[::1]:8083", true)}},
		{name: "defaults with password file bind everywhere", args: []string{"--password-file", "p"},
			want: []broker.ListenerConfig{lc("tcp", ":1883", false), lc("ws", ":8083", false)}},
		{name: "explicit all-interfaces without password file", args: []string{"--listen", ":1883"}, wantErr: "--listen"},
		{name: "explicit LAN address without password file", args: []string{"--listen", "192.0.2.10:1883"}, wantErr: "pimqtt passwd -c"},
		{name: "explicit LAN address with allow-anonymous", args: []string{"--listen", "0.0.0.0:1883", "--ws-listen", "", "--allow-anonymous"},
			want: []broker.ListenerConfig{lc("tcp", "0.0.0.0:1883", false)}},
		{name: "explicit loopback", args: []string{"--listen", "127.0.0.1:1884", "--listen", "[::1]:1884", "--listen", "localhost:1885", "--ws-listen", ""},
			want: []broker.ListenerConfig{lc("tcp", "127.0.0.1:1884", false), lc("tcp", "[::1]:1884", false), lc("tcp", "localhost:1885", false)}},
		{name: "websocket disabled", args: []string{"--listen", "127.0.0.1:1", "--ws-listen", ""},
			want: []broker.ListenerConfig{lc("tcp", "127.0.0.1:1", false)}},
		{name: "garbage", args: []string{"--listen", "no-port"}, wantErr: "no-port"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := resolve(t, tc.args...)
			if err == nil {
				var got []broker.ListenerConfig
				got, err = brokerListeners(cfg)
				if err == nil && tc.wantErr == "" && !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("got %+v\nwant %+v", got, tc.want)
				}
			}
			if tc.wantErr == "" && err != nil {
				t.Fatal(err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErr)
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
			cfg, err := resolve(t, tc.args...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.UseShorthand() != tc.wantShorthand || len(cfg.Outputs) != tc.wantOutputs || len(cfg.Inputs) != tc.wantInputs {
				t.Fatalf("shorthand %v outputs %d inputs %d", cfg.UseShorthand(), len(cfg.Outputs), len(cfg.Inputs))
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
			_, err := resolve(t, tc.flag, tc.value)
			if err == nil {
				t.Fatalf("%s %s accepted", tc.flag, tc.value)
			}
			if got := firstFlag.FindString(err.Error()); got != tc.flag {
				t.Fatalf("%s %s: error %q names %q first, want %s", tc.flag, tc.value, err, got, tc.flag)
			}
		})
	}
}
