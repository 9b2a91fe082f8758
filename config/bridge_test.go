package config

import (
	"reflect"
	"strings"
	"testing"
)

// TestResolveBridges: the --bridge flags make a bridge or complete the
// file's, the password comes from flag, env or file, and the brokers of
// device mode are repeatable.
func TestResolveBridges(t *testing.T) {
	one := writeFile(t, "one.toml", `
[[bridge]]
name = "cluster"
address = ["tcp://192.0.2.1:1883"]
topic = ["raspberry/# both 1"]
username = "pi"
password_file = "`+writeFile(t, "bridge-password", "from-file\n")+`"
`)
	two := writeFile(t, "two.toml", `
[[bridge]]
name = "a"
address = ["tcp://192.0.2.1:1883"]
topic = ["x/#"]
[[bridge]]
name = "b"
address = ["tcp://192.0.2.2:1883"]
topic = ["y/#"]
`)
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		want    []Bridge
		wantErr string
	}{
		{name: "none", want: nil},
		{name: "flags alone", args: []string{"--bridge", "tcp://127.0.0.1:1", "--bridge", "tcp://127.0.0.1:2",
			"--bridge-topic", "raspberry/# both 1", "--bridge-topic", "a/# in", "--bridge-username", "u", "--bridge-password", "p",
			"--bridge-client-id", "pi1", "--bridge-ca-file", "/ca.pem"},
			want: []Bridge{{Name: "bridge", Addresses: []string{"tcp://127.0.0.1:1", "tcp://127.0.0.1:2"},
				Topics: []string{"raspberry/# both 1", "a/# in"}, Username: "u", Password: "p", ClientID: "pi1", CAFile: "/ca.pem"}}},
		{name: "password from env", env: map[string]string{"PIMQTT_BRIDGE_PASSWORD": "secret"},
			args: []string{"--bridge", "tcp://127.0.0.1:1", "--bridge-topic", "#", "--bridge-username", "u"},
			want: []Bridge{{Name: "bridge", Addresses: []string{"tcp://127.0.0.1:1"}, Topics: []string{"#"}, Username: "u", Password: "secret"}}},
		{name: "file's password_file", args: []string{"--config", one},
			want: []Bridge{{Name: "cluster", Addresses: []string{"tcp://192.0.2.1:1883"}, Topics: []string{"raspberry/# both 1"},
				Username: "pi", PasswordFile: "*", Password: "from-file"}}},
		{name: "flags complete the file's only bridge", args: []string{"--config", one, "--bridge", "tcp://127.0.0.1:9", "--bridge-password", "flag"},
			want: []Bridge{{Name: "cluster", Addresses: []string{"tcp://127.0.0.1:9"}, Topics: []string{"raspberry/# both 1"},
				Username: "pi", PasswordFile: "*", Password: "flag"}}},
		{name: "env beats password_file", env: map[string]string{"PIMQTT_BRIDGE_PASSWORD": "env"}, args: []string{"--config", one},
			want: []Bridge{{Name: "cluster", Addresses: []string{"tcp://192.0.2.1:1883"}, Topics: []string{"raspberry/# both 1"},
				Username: "pi", PasswordFile: "*", Password: "env"}}},
		{name: "two bridges need a name", args: []string{"--config", two, "--bridge-username", "u"}, wantErr: "say which one with --bridge-name"},
		{name: "named", args: []string{"--config", two, "--bridge-name", "b", "--bridge-topic", "z/# in"},
			want: []Bridge{{Name: "a", Addresses: []string{"tcp://192.0.2.1:1883"}, Topics: []string{"x/#"}},
				{Name: "b", Addresses: []string{"tcp://192.0.2.2:1883"}, Topics: []string{"z/# in"}}}},
		{name: "no address", args: []string{"--bridge-topic", "#"}, wantErr: "--bridge: empty: a bridge needs the URL of its remote broker"},
		{name: "no topic", args: []string{"--bridge", "tcp://127.0.0.1:1"}, wantErr: "--bridge: empty: a bridge needs at least one topic line"},
		{name: "bad URL", args: []string{"--bridge", "127.0.0.1:1883", "--bridge-topic", "#"}, wantErr: "is not a broker URL"},
		{name: "device mode", args: []string{"--mode", "device", "--bridge", "tcp://127.0.0.1:1", "--bridge-topic", "#"}, wantErr: "mode all or broker, not device"},
		{name: "bad name", args: []string{"--bridge-name", "a/b", "--bridge", "tcp://127.0.0.1:1", "--bridge-topic", "#"}, wantErr: "one topic level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := resolve(t, tt.env, tt.args...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i := range c.Bridges {
				if c.Bridges[i].PasswordFile != "" {
					c.Bridges[i].PasswordFile = "*"
				}
			}
			if !reflect.DeepEqual(c.Bridges, tt.want) {
				t.Errorf("bridges\n%+v\nwant\n%+v", c.Bridges, tt.want)
			}
		})
	}
}

func TestResolveBrokersRepeatable(t *testing.T) {
	c, err := resolve(t, nil, "--mode", "device", "--broker", "tcp://127.0.0.1:1", "--broker", "ws://127.0.0.1:2/mqtt")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"tcp://127.0.0.1:1", "ws://127.0.0.1:2/mqtt"}; !reflect.DeepEqual(c.Device.Brokers, want) {
		t.Errorf("brokers %v, want %v", c.Device.Brokers, want)
	}
}

// TestImportConnection: a mosquitto.conf connection block becomes a
// [[bridge]] with mosquitto's meaning of each key.
func TestImportConnection(t *testing.T) {
	conf := writeFile(t, "mosquitto.conf", `listener 1883
allow_anonymous true
connection cluster
address 192.0.2.1:1884 192.0.2.2
topic raspberry/# both 1
topic "" out 0 local/a remote/b
remote_username pi
remote_password s3cret
remote_clientid pi-garage
cleansession true
try_private false
notifications true

connection tls
addresses broker.example:8883
topic # in
bridge_cafile /etc/ca.pem
`)
	c, err := resolve(t, nil, "--mosquitto-config", conf)
	if err != nil {
		t.Fatal(err)
	}
	want := []Bridge{
		{Name: "cluster", Addresses: []string{"tcp://192.0.2.1:1884", "tcp://192.0.2.2:1883"},
			Topics: []string{"raspberry/# both 1", `"" out 0 local/a remote/b`}, Username: "pi", Password: "s3cret",
			ClientID: "pi-garage", CleanSession: true},
		{Name: "tls", Addresses: []string{"mqtts://broker.example:8883"}, Topics: []string{"# in"}, CAFile: "/etc/ca.pem"},
	}
	if !reflect.DeepEqual(c.Bridges, want) {
		t.Errorf("bridges\n%+v\nwant\n%+v", c.Bridges, want)
	}
	found := false
	for _, n := range c.Notices() {
		found = found || strings.Contains(n.String(), "notifications: not supported by pimqtt's bridge, ignored")
	}
	if !found {
		t.Errorf("no notice for notifications: %v", c.Notices())
	}

	bad := writeFile(t, "bad.conf", "listener 1883\nallow_anonymous true\nconnection x\naddress 192.0.2.1\nbridge_insecure true\n")
	if _, err := resolve(t, nil, "--mosquitto-config", bad); err == nil || !strings.Contains(err.Error(), "bridge_insecure") {
		t.Errorf("bridge_insecure: %v, want an error", err)
	}
}
