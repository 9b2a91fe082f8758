package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/pimqtt/pimqtt/config"
)

// TestConfigCheckBridges: pimqtt config check finds what only the bridge package knows (a
// topic line mosquitto would refuse, an address that cannot be dialled as given) and names
// the key.
func TestConfigCheckBridges(t *testing.T) {
	for _, tt := range []struct {
		name string
		br   config.Bridge
		want string // "" = no error
	}{
		{"good", config.Bridge{Name: "c", Addresses: []string{"tcp://127.0.0.1:1883"}, Topics: []string{"raspberry/# both 1", `"" out 0 a/ b/`}}, ""},
		{"bad direction", config.Bridge{Name: "c", Addresses: []string{"tcp://127.0.0.1:1883"}, Topics: []string{"a/# sideways"}},
			`bridge[0].topic[0]`},
		{"bad qos", config.Bridge{Name: "c", Addresses: []string{"tcp://127.0.0.1:1883"}, Topics: []string{"ok/#", "a/# in 3"}},
			`bridge[0].topic[1]`},
		{"CA file on a plain remote", config.Bridge{Name: "c", Addresses: []string{"tcp://127.0.0.1:1883"}, Topics: []string{"#"}, CAFile: "/etc/ca.pem"},
			`bridge[0].address[0]`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig("")
			cfg.Broker.AllowAnonymous = true
			cfg.Bridges = []config.Bridge{tt.br}
			var stderr bytes.Buffer
			err := checkConfig(cfg, &stderr)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("check: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("check: %v, want an error about %s", err, tt.want)
			}
		})
	}
}
