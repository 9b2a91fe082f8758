package config

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// resolve parses args as pimqtt's command line with env as the
// environment and no default file.
func resolve(t *testing.T, env map[string]string, args ...string) (Config, error) {
	t.Helper()
	fs := pflag.NewFlagSet("pimqtt", pflag.ContinueOnError)
	cmd := Bind(fs, func(k string) string { return env[k] })
	cmd.DefaultPath = filepath.Join(t.TempDir(), "absent.toml")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	return cmd.Resolve()
}

func TestResolveNoFileIsDefault(t *testing.T) {
	c, err := resolve(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(plain(c), plain(Default())) {
		t.Errorf("Resolve() = %+v, want Default()", plain(c))
	}
}

// TestPrecedence checks flag > file > default for every flag that maps
// onto one key.
func TestPrecedence(t *testing.T) {
	file := writeFile(t, "p.toml", `
mode = "broker"
[log]
level = "warn"
[broker]
password_file = "/file/passwd"
allow_anonymous = true
acl_file = "/file/acl"
[broker.tls]
cert_file = "/file/cert"
key_file = "/file/key"
client_ca_file = "/file/ca"
[broker.limits]
max_packet_size = 100000
max_connect_size = 1000
connect_timeout = "3s"
max_clients = 3
max_pending = 3
max_session_expiry = "3h"
max_inflight = 3
max_queued = 3
max_keepalive = "3s"
max_topic_length = 3
max_topic_levels = 3
max_user_properties = 3
[device]
broker = ["tcp://file:1"]
username = "file"
password_file = "/file/pw"
client_id = "file"
status_topic = "file/status"
topic = "file/led"
gpio = "sim:file"
prefix = "file"
data_dir = "/file"
ca_file = "/file/device-ca"
telemetry_interval = "1m"
[http]
url = "http://file:1/"
[homeassistant]
discovery = true
prefix = "fileha"
[storage]
persistence = false
[debug]
pprof_listen = "127.0.0.1:1"
`)
	tests := []struct {
		flag, value string
		get         func(Config) any
		file, flagV any
	}{
		{"mode", "device", func(c Config) any { return c.Mode }, ModeBroker, ModeDevice},
		{"log-level", "error", func(c Config) any { return c.Log.Level.String() }, "warn", "error"},
		{"password-file", "/flag/passwd", func(c Config) any { return c.Broker.PasswordFile }, "/file/passwd", "/flag/passwd"},
		{"allow-anonymous", "false", func(c Config) any { return c.Broker.AllowAnonymous }, true, false},
		{"max-packet-size", "200000", func(c Config) any { return c.Broker.Limits.MaxPacketSize }, uint32(100000), uint32(200000)},
		{"max-connect-size", "2000", func(c Config) any { return c.Broker.Limits.MaxConnectSize }, uint32(1000), uint32(2000)},
		{"connect-timeout", "4s", func(c Config) any { return c.Broker.Limits.ConnectTimeout.D() }, 3 * time.Second, 4 * time.Second},
		{"max-clients", "4", func(c Config) any { return c.Broker.Limits.MaxClients }, int64(3), int64(4)},
		{"max-pending", "4", func(c Config) any { return c.Broker.Limits.MaxPending }, int64(3), int64(4)},
		{"max-session-expiry", "4h", func(c Config) any { return c.Broker.Limits.MaxSessionExpiry.D() }, 3 * time.Hour, 4 * time.Hour},
		{"max-inflight", "4", func(c Config) any { return c.Broker.Limits.MaxInflight }, uint16(3), uint16(4)},
		{"max-queued", "4", func(c Config) any { return c.Broker.Limits.MaxQueued }, int32(3), int32(4)},
		{"max-keepalive", "4s", func(c Config) any { return c.Broker.Limits.MaxKeepAlive.D() }, 3 * time.Second, 4 * time.Second},
		{"max-topic-length", "4", func(c Config) any { return c.Broker.Limits.MaxTopicLength }, 3, 4},
		{"max-topic-levels", "4", func(c Config) any { return c.Broker.Limits.MaxTopicLevels }, 3, 4},
		{"max-user-properties", "4", func(c Config) any { return c.Broker.Limits.MaxUserProperties }, 3, 4},
		{"acl-file", "/flag/acl", func(c Config) any { return c.Broker.ACLFile }, "/file/acl", "/flag/acl"},
		{"tls-cert", "/flag/cert", func(c Config) any { return c.Broker.TLS.CertFile }, "/file/cert", "/flag/cert"},
		{"tls-key", "/flag/key", func(c Config) any { return c.Broker.TLS.KeyFile }, "/file/key", "/flag/key"},
		{"tls-client-ca", "/flag/ca", func(c Config) any { return c.Broker.TLS.ClientCAFile }, "/file/ca", "/flag/ca"},
		{"ha-discovery", "false", func(c Config) any { return c.HomeAssistant.Discovery }, true, false},
		{"ha-prefix", "flagha", func(c Config) any { return c.HomeAssistant.Prefix }, "fileha", "flagha"},
		{"telemetry-interval", "2m", func(c Config) any { return c.Device.TelemetryInterval.D() }, time.Minute, 2 * time.Minute},
		{"http-url", "http://flag:1/", func(c Config) any { return c.HTTP.URL }, "http://file:1/", "http://flag:1/"},
		{"ca-file", "/flag/device-ca", func(c Config) any { return c.Device.CAFile }, "/file/device-ca", "/flag/device-ca"},
		{"username", "flag", func(c Config) any { return c.Device.Username }, "file", "flag"},
		{"device-password-file", "/flag/pw", func(c Config) any { return c.Device.PasswordFile }, "/file/pw", "/flag/pw"},
		{"client-id", "flag", func(c Config) any { return c.Device.ClientID }, "file", "flag"},
		{"status-topic", "flag/status", func(c Config) any { return c.Device.StatusTopic }, "file/status", "flag/status"},
		{"topic", "flag/led", func(c Config) any { return c.Device.Topic }, "file/led", "flag/led"},
		{"gpio", "sim:flag", func(c Config) any { return c.Device.GPIO }, "sim:file", "sim:flag"},
		{"prefix", "flag", func(c Config) any { return c.Device.Prefix }, "file", "flag"},
		{"data-dir", "/flag", func(c Config) any { return c.Device.DataDir }, "/file", "/flag"},
		{"persistence", "true", func(c Config) any { return c.Storage.Persistence }, false, true},
		{"pprof-listen", "[::1]:2", func(c Config) any { return c.Debug.PprofListen }, "127.0.0.1:1", "[::1]:2"},
		{"broker", "tcp://flag:1", func(c Config) any { return c.BrokerURL() }, "tcp://file:1", "tcp://flag:1"},
	}
	// The device's password comes from the environment, so that device
	// mode does not read the file's password_file.
	env := map[string]string{"PIMQTT_PASSWORD": "x"}
	covered := map[string]bool{"broker": true}
	for _, tt := range tests {
		covered[tt.flag] = true
		t.Run(tt.flag, func(t *testing.T) {
			def, err := resolve(t, env)
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.get(def); reflect.DeepEqual(got, tt.file) || tt.flag != "allow-anonymous" && tt.flag != "ha-discovery" && tt.flag != "persistence" && reflect.DeepEqual(got, tt.flagV) {
				t.Fatalf("the default %v equals a test value: pick others", got)
			}
			fromFile, err := resolve(t, env, "--config", file)
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.get(fromFile); !reflect.DeepEqual(got, tt.file) {
				t.Errorf("file: %v, want %v", got, tt.file)
			}
			fromFlag, err := resolve(t, env, "--config", file, "--"+tt.flag+"="+tt.value)
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.get(fromFlag); !reflect.DeepEqual(got, tt.flagV) {
				t.Errorf("flag: %v, want %v", got, tt.flagV)
			}
			// Only that one key changed.
			if got, want := tt.get(fromFile), tt.file; !reflect.DeepEqual(got, want) {
				t.Errorf("file value changed to %v", got)
			}
		})
	}
	for _, b := range bindings {
		if !covered[b.flag] {
			t.Errorf("--%s has no precedence test", b.flag)
		}
	}
}

// TestFlagDefaultsAndHelp checks that the flags keep pimqtt's names,
// defaults and help from before the config file.
func TestFlagDefaultsAndHelp(t *testing.T) {
	fs := pflag.NewFlagSet("pimqtt", pflag.ContinueOnError)
	Bind(fs, func(string) string { return "" })
	want := map[string]string{
		"mode": "all", "listen": "[:1883]", "ws-listen": "[:8083]", "password-file": "", "allow-anonymous": "false",
		"broker": "[tcp://127.0.0.1:1883]",
		"bridge": "[]", "bridge-topic": "[]", "bridge-name": "", "bridge-username": "", "bridge-password": "", "bridge-client-id": "", "bridge-ca-file": "", "username": "", "password": "", "client-id": "", "topic": "raspberry/led",
		"status-topic": "raspberry/status", "gpio": "auto", "output": "[]", "input": "[]", "prefix": "raspberry",
		"data-dir": "/var/lib/pimqtt", "log-level": "info", "version": "false",
		"max-packet-size": "2097152", "max-connect-size": "65536", "connect-timeout": "10s", "max-clients": "500",
		"max-pending": "1000", "max-session-expiry": "1193046h28m15s", "max-inflight": "256", "max-queued": "1024",
		"max-keepalive": "18h12m15s", "max-topic-length": "1024", "max-topic-levels": "32", "max-user-properties": "32",
		"config": "", "mosquitto-config": "", "device-password-file": "",
		"acl-file": "", "tls-cert": "", "tls-key": "", "tls-client-ca": "", "ca-file": "",
		"tls-listen": "[]", "wss-listen": "[]", "ws-origin": "[]",
		"ha-discovery": "false", "ha-prefix": "homeassistant", "telemetry-interval": "30s", "http-url": "",
		"http-listen": "[:8080]", "https-listen": "[:8443]", "persistence": "true", "pprof-listen": "",
	}
	fs.VisitAll(func(f *pflag.Flag) {
		w, ok := want[f.Name]
		if !ok {
			t.Errorf("unexpected flag --%s", f.Name)
			return
		}
		delete(want, f.Name)
		if f.DefValue != w {
			t.Errorf("--%s default %q, want %q", f.Name, f.DefValue, w)
		}
	})
	for name := range want {
		t.Errorf("missing flag --%s", name)
	}
	usage := strings.Join(strings.Fields(fs.FlagUsages()), " ")
	for _, line := range []string{
		`--mode string what to run: all (broker and device), broker, or device (default "all")`,
		`--log-level string debug, info, warn or error (default "info")`,
		`--connect-timeout duration time a new connection has to send CONNECT (default 10s)`,
		`--max-keepalive duration longest keepalive granted; the default accepts every keepalive, 0 included; below it, MQTT 3.1.1 clients asking for more (or for 0) get CONNACK 2 and MQTT 5 clients are told the maximum (default 18h12m15s)`,
	} {
		if !strings.Contains(usage, line) {
			t.Errorf("help lacks %q:\n%s", line, usage)
		}
	}
	fs = pflag.NewFlagSet("pimqtt", pflag.ContinueOnError)
	Bind(fs, func(k string) string { return map[string]string{"STATE_DIRECTORY": "/run/state"}[k] })
	if got := fs.Lookup("data-dir").DefValue; got != "/run/state" {
		t.Errorf("--data-dir default with STATE_DIRECTORY = %q", got)
	}
}

func TestResolveListeners(t *testing.T) {
	file := writeFile(t, "l.toml", `
[[broker.listener]]
address = "127.0.0.1:1884"
[[broker.listener]]
address = "127.0.0.1:9001"
kind = "ws"
`)
	l := func(addr string, kind ListenerKind, def bool) Listener {
		return Listener{Address: addr, Kind: kind, Default: def}
	}
	tests := []struct {
		name string
		args []string
		want []Listener
	}{
		{"default", nil, DefaultListeners()},
		{"--listen replaces the default mqtt only", []string{"--listen", "127.0.0.1:1"},
			[]Listener{l(":8083", KindWS, true), l("127.0.0.1:1", KindMQTT, false)}},
		{"--ws-listen '' disables ws", []string{"--ws-listen", ""}, []Listener{l(":1883", KindMQTT, true)}},
		{"both empty: none", []string{"--listen", "", "--ws-listen", ""}, []Listener{}},
		{"file", []string{"--config", file}, []Listener{l("127.0.0.1:1884", KindMQTT, false), l("127.0.0.1:9001", KindWS, false)}},
		{"--listen twice over the file", []string{"--config", file, "--listen", ":1", "--listen", ":2"},
			[]Listener{l("127.0.0.1:9001", KindWS, false), l(":1", KindMQTT, false), l(":2", KindMQTT, false)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := resolve(t, nil, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c.Broker.Listeners, tt.want) {
				t.Errorf("listeners %+v, want %+v", c.Broker.Listeners, tt.want)
			}
		})
	}
	// After --listen, the file's ws listener moved from [1] to [0]: its
	// errors still point at the file.
	c, err := resolve(t, nil, "--config", file, "--listen", ":1")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Wrap("broker.listener[0].address", errBusy).Error(), file+`:5:11: key "broker.listener[0].address": busy`; got != want {
		t.Errorf("Wrap = %s, want %s", got, want)
	}
	if got, want := c.Wrap("broker.listener[1].address", errBusy).Error(), `--listen :1: busy`; got != want {
		t.Errorf("Wrap = %s, want %s", got, want)
	}
}

func TestResolveLines(t *testing.T) {
	file := writeFile(t, "lines.toml", "[[output]]\nname = \"file\"\nline = \"sim\"\n[[input]]\nname = \"in\"\nline = \"sim:2\"\n")
	c, err := resolve(t, nil, "--config", file, "--output", "a=GPIO20,active-low,initial=restore", "--output", "b=sim:b")
	if err != nil {
		t.Fatal(err)
	}
	want := []Output{{Name: "a", Line: "GPIO20", ActiveLow: true, Initial: InitialRestore}, {Name: "b", Line: "sim:b"}}
	if !reflect.DeepEqual(c.Outputs, want) {
		t.Errorf("outputs %+v, want %+v (--output replaces the file's)", c.Outputs, want)
	}
	if len(c.Inputs) != 1 || c.Inputs[0].Name != "in" {
		t.Errorf("inputs %+v, want the file's", c.Inputs)
	}
	if c.UseShorthand() {
		t.Error("named lines without --topic/--gpio use the shorthand")
	}
	if got := c.Wrap("output[1].line", errBusy).Error(); got != "--output b=sim:b: busy" {
		t.Errorf("Wrap = %s", got)
	}
	if c, _ := resolve(t, nil, "--output", "a=sim", "--gpio", "sim:led"); !c.UseShorthand() {
		t.Error("--gpio beside --output does not use the shorthand")
	}
	_, err = resolve(t, nil, "--output", "a=sim", "--input", "a=sim:2")
	if err == nil || err.Error() != `--input a=sim:2: "a" is also the name of output[0]` {
		t.Errorf("duplicate name: %v", err)
	}
}

func TestParseLineFlags(t *testing.T) {
	outputs := []struct {
		in   string
		want Output
		err  string
	}{
		{"led=GPIO21", Output{Name: "led", Line: "GPIO21"}, ""},
		{" relay = pin11 , Active-Low , initial=RESTORE ", Output{Name: "relay", Line: "pin11", ActiveLow: true, Initial: InitialRestore}, ""},
		{"a=sim,initial=on", Output{Name: "a", Line: "sim", Initial: InitialOn}, ""},
		{"a", Output{}, `no "=" between NAME and LINE`},
		{"a/b=sim", Output{}, `NAME "a/b"`},
		{"a=", Output{}, "empty LINE"},
		{"a=sim,initial=2", Output{}, "initial=2: want initial=off, initial=on or initial=restore"},
		{"a=sim,pull-up", Output{}, "option pull-up is for inputs"},
		{"a=sim,active-low,active-low", Output{}, "option active-low given twice"},
		{"a=sim,", Output{}, "empty option"},
		{"a=sim,fast", Output{}, `unknown option "fast"`},
	}
	for _, tt := range outputs {
		got, err := ParseOutputFlag(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), "want NAME=LINE") {
				t.Errorf("ParseOutputFlag(%q) err = %v, want %q and the syntax", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseOutputFlag(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
	inputs := []struct {
		in   string
		want Input
		err  string
	}{
		{"door=GPIO5,pull-up,debounce=20ms,active-low", Input{Name: "door", Line: "GPIO5", Pull: PullUp, Debounce: Duration(20 * time.Millisecond), ActiveLow: true}, ""},
		{"b=sim,pull-down", Input{Name: "b", Line: "sim", Pull: PullDown}, ""},
		{"b=sim,pull-up,pull-down", Input{}, "exclude each other"},
		{"b=sim,debounce=10", Input{}, "debounce=10: want a duration"},
		{"b=sim,initial=on", Input{}, "option initial is for outputs"},
		{"b=sim,pull-up=1", Input{}, `option "pull-up=1" takes no value`},
	}
	for _, tt := range inputs {
		got, err := ParseInputFlag(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseInputFlag(%q) err = %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseInputFlag(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestResolvePassword(t *testing.T) {
	pwFile := writeFile(t, "pw", "from-file\nsecond line\n")
	file := writeFile(t, "d.toml", "mode = \"device\"\n[device]\nusername = \"pi\"\npassword_file = \""+pwFile+"\"\n")
	env := map[string]string{"PIMQTT_PASSWORD": "from-env"}
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"file", nil, []string{"--config", file}, "from-file"},
		{"env over file", env, []string{"--config", file}, "from-env"},
		{"flag over env", env, []string{"--config", file, "--password", "from-flag"}, "from-flag"},
		{"file only in device mode", nil, []string{"--config", file, "--mode", "all"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := resolve(t, tt.env, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			if c.Device.Password != tt.want {
				t.Errorf("password %q, want %q", c.Device.Password, tt.want)
			}
		})
	}
	missing := writeFile(t, "m.toml", "mode = \"device\"\n[device]\npassword_file = \"/nonexistent/pw\"\n")
	_, err := resolve(t, nil, "--config", missing)
	if err == nil || !strings.HasPrefix(err.Error(), missing+`:3:17: key "device.password_file": open /nonexistent/pw`) {
		t.Errorf("missing password file: %v", err)
	}
}

func TestResolveErrors(t *testing.T) {
	bad := writeFile(t, "bad.toml", "[broker.limits]\nmax_clients = 0\n")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--max-clients", "0"}, "--max-clients: 0: want at least 1"},
		{[]string{"--config", bad}, bad + `:2:15: key "broker.limits.max_clients": 0: want at least 1`},
		{[]string{"--config", bad, "--max-clients", "9"}, ""},
		{[]string{"--mode", "both"}, `invalid argument "both" for "--mode" flag: "both" is not one of all, broker, device`},
		{[]string{"--max-keepalive", "24h"}, "--max-keepalive: 24h0m0s: want 1s up to 65535s (65535s accepts every keepalive)"},
		{[]string{"--listen", "1883"}, `--listen 1883: "1883" is not HOST:PORT (e.g. ":1883", "127.0.0.1:1883", "[::1]:8083")`},
		{[]string{"--output", "x"}, `--output: "x": no "=" between NAME and LINE; want NAME=LINE[,active-low][,initial=off|on|restore]`},
		{[]string{"--config", "/nonexistent/p.toml"}, "config file: open /nonexistent/p.toml: no such file or directory"},
		{[]string{"extra"}, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		_, err := resolve(t, nil, tt.args...)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%q: %v", tt.args, err)
		case tt.want != "" && (err == nil || err.Error() != tt.want):
			t.Errorf("%q: err = %v\nwant %s", tt.args, err, tt.want)
		}
	}
}

func TestResolveDefaultPath(t *testing.T) {
	dir := t.TempDir()
	def := filepath.Join(dir, "pimqtt.toml")
	run := func(args ...string) Config {
		t.Helper()
		fs := pflag.NewFlagSet("pimqtt", pflag.ContinueOnError)
		cmd := Bind(fs, func(string) string { return "" })
		cmd.DefaultPath = def
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		c, err := cmd.Resolve()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if c := run(); c.Mode != ModeAll {
		t.Errorf("without the default file: mode %v", c.Mode)
	}
	writeFileAt(t, def, `mode = "broker"`)
	if c := run(); c.Mode != ModeBroker {
		t.Errorf("the default file is not read: mode %v", c.Mode)
	}
	if c := run("--config", ""); c.Mode != ModeAll {
		t.Errorf(`--config "" still reads the default file: mode %v`, c.Mode)
	}
}

// TestTLSListeners: a certificate alone opens the default TLS listeners
// beside the default plain ones; --tls-listen and --wss-listen choose
// their addresses; a TLS listener without a certificate, a certificate
// without its key and an origin that is not one are errors naming the flag.
func TestTLSListeners(t *testing.T) {
	type l struct {
		addr string
		kind ListenerKind
	}
	cases := []struct {
		name    string
		args    []string
		want    []l
		wantErr string
	}{
		{name: "no certificate: no TLS listener", args: nil,
			want: []l{{":1883", KindMQTT}, {":8083", KindWS}}},
		{name: "a certificate opens :8883 and :8084", args: []string{"--tls-cert", "c", "--tls-key", "k"},
			want: []l{{":1883", KindMQTT}, {":8083", KindWS}, {":8883", KindMQTTS}, {":8084", KindWSS}}},
		{name: "explicit TLS addresses", args: []string{"--tls-cert", "c", "--tls-key", "k", "--tls-listen", "127.0.0.1:8993", "--wss-listen", ""},
			want: []l{{":1883", KindMQTT}, {":8083", KindWS}, {"127.0.0.1:8993", KindMQTTS}}},
		{name: "only TLS", args: []string{"--tls-cert", "c", "--tls-key", "k", "--listen", "", "--ws-listen", "", "--tls-listen", ":8883"},
			want: []l{{":8883", KindMQTTS}}},
		{name: "TLS listener without a certificate", args: []string{"--tls-listen", ":8883"}, wantErr: "--tls-listen :8883: mqtts needs a certificate and its key"},
		{name: "certificate without key", args: []string{"--tls-cert", "c"}, wantErr: "--tls-cert: the certificate and its key go together"},
		{name: "bad origin", args: []string{"--ws-origin", "pi.local"}, wantErr: "--ws-origin"},
		{name: "good origin", args: []string{"--ws-origin", "https://pi.local:8080"},
			want: []l{{":1883", KindMQTT}, {":8083", KindWS}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := resolve(t, nil, tc.args...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []l
			for _, x := range c.Broker.Listeners {
				got = append(got, l{x.Address, x.Kind})
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("listeners %v, want %v", got, tc.want)
			}
		})
	}
}
