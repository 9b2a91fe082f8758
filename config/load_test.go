package config

import (
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// writeFile writes content to a file in a fresh directory and returns its
// path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// plain drops what tests do not compare: where values came from.
func plain(c Config) Config {
	c.origins = nil
	return c
}

func TestLoadEveryKey(t *testing.T) {
	c, err := Load("testdata/full.toml")
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Mode: ModeBroker,
		Log:  Log{Level: LogLevel(slog.LevelDebug)},
		Broker: Broker{
			PasswordFile:   "/etc/pimqtt/passwd",
			AllowAnonymous: true,
			RefusalCodes:   RefusalMosquitto,
			Listeners: []Listener{
				{Address: "127.0.0.1:1884", Kind: KindMQTT},
				{Address: ":9001", Kind: KindWS},
				{Address: ":8885", Kind: KindMQTTS, CertFile: "/etc/pimqtt/tls/other.crt", KeyFile: "/etc/pimqtt/tls/other.key", ClientCAFile: "/etc/pimqtt/tls/other-ca.crt"},
			},
			ACLFile:   "/etc/pimqtt/acl",
			WSOrigins: []string{"https://pi.local:8080"},
			TLS:       TLS{CertFile: "/etc/pimqtt/tls/server.crt", KeyFile: "/etc/pimqtt/tls/server.key", ClientCAFile: "/etc/pimqtt/tls/ca.crt"},
			Limits: Limits{
				MaxPacketSize:     1 << 20,
				MaxConnectSize:    4096,
				ConnectTimeout:    Duration(5 * time.Second),
				MaxClients:        50,
				MaxPending:        100,
				MaxSessionExpiry:  Duration(time.Hour),
				MaxInflight:       16,
				MaxQueued:         128,
				MaxKeepAlive:      Duration(600 * time.Second),
				MaxTopicLength:    256,
				MaxTopicLevels:    8,
				MaxUserProperties: 4,
			},
		},
		Device: Device{
			Brokers:      []string{"tcp://192.0.2.1:1883", "ws://192.0.2.2:8083/mqtt"},
			Username:     "pi",
			PasswordFile: "/etc/pimqtt/device-password",
			CAFile:       "/etc/pimqtt/tls/ca.crt",
			ClientID:     "kitchen",

			TelemetryInterval: Duration(time.Minute),
			StatusTopic:       "kitchen/status",
			Topic:             "kitchen/led",
			GPIO:              "GPIO20",
			Prefix:            "kitchen",
			DataDir:           "/srv/pimqtt",
			shorthandSet:      true,
		},
		HTTP:          HTTP{Listen: []string{"127.0.0.1:8081"}, HTTPSListen: []string{"[::1]:8444"}, URL: "http://kitchen.local:8081/", Title: "Kitchen"},
		HomeAssistant: HomeAssistant{Discovery: true, Prefix: "ha", PerComponent: true},
		Storage:       Storage{Persistence: false, File: "/srv/pimqtt/store.db", QueueExpiry: Duration(48 * time.Hour)},
		Debug:         Debug{PprofListen: "localhost:6060"},
		Outputs: []Output{
			{Name: "relay1", Line: "GPIO20", ActiveLow: true, Initial: InitialRestore},
			{Name: "lamp", Line: "J8p40", Initial: InitialOn},
		},
		Inputs: []Input{{Name: "door", Line: "GPIO5", Pull: PullUp, Debounce: Duration(20 * time.Millisecond), ActiveLow: true}},
		Bridges: []Bridge{{
			Name: "cluster", Addresses: []string{"tcp://192.0.2.10:1883", "mqtts://192.0.2.11:8883"},
			Topics:   []string{"raspberry/# both 1", "kitchen/# out 0 local/ remote/"},
			Username: "pi-kitchen", PasswordFile: "/etc/pimqtt/bridge-password", ClientID: "kitchen-bridge",
			CleanSession: true, CAFile: "/etc/pimqtt/tls/cluster-ca.crt", QueueLimit: 50,
		}},
	}
	if got := plain(c); !reflect.DeepEqual(got, want) {
		t.Errorf("Load(full.toml) =\n%+v\nwant\n%+v", got, want)
	}
	// The file sets every key to something else than its default: a key
	// Config gained without a line in full.toml shows here.
	assertAllDiffer(t, reflect.ValueOf(plain(c)), reflect.ValueOf(Default()), "")
}

// assertAllDiffer fails for every leaf field equal in a and b.
func assertAllDiffer(t *testing.T, a, b reflect.Value, path string) {
	t.Helper()
	switch a.Kind() {
	case reflect.Struct:
		for i := range a.NumField() {
			f := a.Type().Field(i)
			if tomlName(f) == "" || f.Name == "MosquittoConfig" {
				continue
			}
			assertAllDiffer(t, a.Field(i), b.Field(i), path+"."+tomlName(f))
		}
	case reflect.Slice:
		if a.Len() == 0 || reflect.DeepEqual(a.Interface(), b.Interface()) {
			t.Errorf("%s: full.toml leaves it at its default", path)
		}
	default:
		if a.Interface() == b.Interface() {
			t.Errorf("%s: full.toml leaves it at its default %v", path, a.Interface())
		}
	}
}

func TestLoadKeys(t *testing.T) {
	tests := []struct {
		name, doc string
		check     func(Config) bool
	}{
		{"empty file is the defaults", "", func(c Config) bool { return reflect.DeepEqual(plain(c), plain(Default())) }},
		{"mode", `mode = "broker"`, func(c Config) bool { return c.Mode == ModeBroker }},
		{"log level with offset", "[log]\nlevel = \"warn\"", func(c Config) bool { return c.Log.Level.Level() == slog.LevelWarn }},
		{"listener kind defaults to mqtt", "[[broker.listener]]\naddress = \":1\"", func(c Config) bool {
			return len(c.Broker.Listeners) == 1 && c.Broker.Listeners[0].Kind == KindMQTT && !c.Broker.Listeners[0].Default
		}},
		{"no listeners", "[broker]\nlistener = []", func(c Config) bool { return c.Broker.Listeners != nil && len(c.Broker.Listeners) == 0 }},
		{"inline listeners", "[broker]\nlistener = [{address = \":1\", kind = \"ws\"}]", func(c Config) bool {
			return len(c.Broker.Listeners) == 1 && c.Broker.Listeners[0].Kind == KindWS
		}},
		{"default listeners stay default", "[broker]\nallow_anonymous = true", func(c Config) bool {
			return reflect.DeepEqual(c.Broker.Listeners, DefaultListeners())
		}},
		{"dotted keys", "broker.limits.max_clients = 7", func(c Config) bool { return c.Broker.Limits.MaxClients == 7 }},
		{"underscores in integers", "[broker.limits]\nmax_packet_size = 1_000_000", func(c Config) bool { return c.Broker.Limits.MaxPacketSize == 1000000 }},
		{"named lines turn the shorthand off", "[[output]]\nname = \"a\"\nline = \"sim\"", func(c Config) bool { return !c.UseShorthand() }},
		{"topic beside named lines keeps it", "[device]\ntopic = \"x/led\"\n[[output]]\nname = \"a\"\nline = \"sim\"", func(c Config) bool { return c.UseShorthand() }},
		{"input pull none and debounce 0", "[[input]]\nname = \"b\"\nline = \"sim\"\npull = \"none\"\ndebounce = \"0s\"", func(c Config) bool {
			return c.Inputs[0].Pull == PullNone && c.Inputs[0].Debounce == 0
		}},
		{"output initial off", "[[output]]\nname = \"a\"\nline = \"sim\"\ninitial = \"off\"", func(c Config) bool { return c.Outputs[0].Initial == InitialOff }},
		{"second broker URL", "[device]\nbroker = [\"tcp://a:1\", \"tcp://b:1\"]", func(c Config) bool { return c.BrokerURL() == "tcp://a:1" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(writeFile(t, "p.toml", tt.doc))
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Errorf("got %+v", plain(c))
			}
		})
	}
}

// TestLoadErrors checks every kind of mistake: each error names the file,
// line and column, the full key, and what is expected.
func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name, doc string
		want      []string // each a line of the error, after "FILE:"
	}{
		{"unknown top-level key", "mod = \"all\"",
			[]string{`1:1: key "mod": unknown key "mod" at the top level (did you mean "mode"?); the keys there are mode, mosquitto_config, log, broker, device, http, homeassistant, storage, debug, output, input, bridge`}},
		{"unknown key in a table", "[broker.limits]\nmax_cleints = 3",
			[]string{`2:1: key "broker.limits.max_cleints": unknown key "max_cleints" in [broker.limits] (did you mean "max_clients"?); the keys there are max_packet_size, max_connect_size, connect_timeout, max_clients, max_pending, max_session_expiry, max_inflight, max_queued, max_keepalive, max_topic_length, max_topic_levels, max_user_properties`}},
		{"unknown key in an array table", "[[broker.listener]]\naddress = \":1\"\n[[broker.listener]]\nadress = \":2\"",
			[]string{`4:1: key "broker.listener[1].adress": unknown key "adress" in [broker.listener] (did you mean "address"?); the keys there are address, kind, cert_file, key_file, client_ca_file`}},
		{"unknown table once", "[brokr]\nx = 1\ny = 2",
			[]string{`1:2: key "brokr": unknown key "brokr" at the top level (did you mean "broker"?); the keys there are mode, mosquitto_config, log, broker, device, http, homeassistant, storage, debug, output, input, bridge`}},
		{"password is not a key", "[device]\npassword = \"secret\"",
			[]string{`2:1: key "device.password": unknown key "password" in [device]; the keys there are broker, username, password_file, ca_file, client_id, status_topic, topic, gpio, prefix, telemetry_interval, data_dir`}},
		{"bad enum", "[[broker.listener]]\naddress = \":1\"\n[[broker.listener]]\naddress = \":2\"\nkind = \"foo\"",
			[]string{`5:8: key "broker.listener[1].kind": "foo" is not one of mqtt, ws, mqtts, wss`}},
		{"bad mode", `mode = "both"`, []string{`1:8: key "mode": "both" is not one of all, broker, device`}},
		{"bad log level", "[log]\nlevel = \"loud\"", []string{`2:9: key "log.level": "loud" is not one of debug, info, warn, error`}},
		{"bad initial", "[[output]]\nname = \"a\"\nline = \"sim\"\ninitial = \"1\"", []string{`4:11: key "output[0].initial": "1" is not one of off, on, restore`}},
		{"bad pull", "[[input]]\nname = \"a\"\nline = \"sim\"\npull = \"pull-up\"", []string{`4:8: key "input[0].pull": "pull-up" is not one of none, up, down`}},
		{"bad duration", "[broker.limits]\nconnect_timeout = \"10 seconds\"",
			[]string{`2:19: key "broker.limits.connect_timeout": "10 seconds" is not a duration: want a number and a unit, e.g. "10s", "500ms", "24h"`}},
		{"duration without quotes", "[broker.limits]\nconnect_timeout = 10",
			[]string{`2:19: key "broker.limits.connect_timeout": 10 is a whole number; want a duration in quotes, e.g. "10s", "500ms" or "24h"`}},
		{"enum without quotes", "mode = 1", []string{`1:8: key "mode": 1 is a whole number; want one of all, broker, device (in quotes)`}},
		{"string for a number", "[broker.limits]\nmax_clients = \"500\"",
			[]string{`2:15: key "broker.limits.max_clients": "500" is a string; want a whole number from -9223372036854775808 to 9223372036854775807`}},
		{"string for a bool", "[broker]\nallow_anonymous = \"yes\"", []string{`2:19: key "broker.allow_anonymous": "yes" is a string; want true or false`}},
		{"float for a number", "[broker.limits]\nmax_queued = 1.5", []string{`2:14: key "broker.limits.max_queued": 1.5 is a number with a fraction; want a whole number from -2147483648 to 2147483647`}},
		{"string for a list", "[device]\nbroker = \"tcp://a:1\"", []string{`2:10: key "device.broker": "tcp://a:1" is a string; want a list of strings in quotes, e.g. ["a", "b"]`}},
		{"number in a list", "[device]\nbroker = [\"tcp://a:1\", 3]", []string{`2:24: key "device.broker[1]": 3 is a whole number; want a string in quotes`}},
		{"table for a value", "[device.topic]\nx = 1", []string{`1:2: key "device.topic": device.topic is a table; want a string in quotes`}},
		{"value for a table", "log = \"debug\"", []string{`1:7: key "log": "debug" is a string; want a table ([log] or log = { ... })`}},
		{"table for an array table", "[output]\nname = \"a\"", []string{`1:2: key "output": output is a table; want [[output]] tables`}},
		{"out of range", "[broker.limits]\nmax_inflight = 70000", []string{`2:16: key "broker.limits.max_inflight": out of range; want a whole number from 0 to 65535`}},
		{"negative size", "[broker.limits]\nmax_packet_size = -1", []string{`2:19: key "broker.limits.max_packet_size": out of range; want a whole number from 0 to 4294967295`}},
		{"several at once", "mode = \"x\"\n[broker.limits]\nmax_clients = \"1\"\nmax_queued = true",
			[]string{
				`3:15: key "broker.limits.max_clients": "1" is a string; want a whole number from -9223372036854775808 to 9223372036854775807`,
				`4:14: key "broker.limits.max_queued": true is a boolean; want a whole number from -2147483648 to 2147483647`,
			}},
		{"syntax", "[device\nx = 1", []string{`1:8: not valid TOML: expected ']' to close table name`}},
		{"key twice", "mode = \"all\"\nmode = \"broker\"", []string{`2:1: key "mode": key mode is already defined`}},

		// Validation after decoding, at the value's position.
		{"limit below minimum", "[broker.limits]\nmax_packet_size = 10", []string{
			`2:19: key "broker.limits.max_packet_size": 10 is below the minimum of 64 bytes`,
			`key "broker.limits.max_connect_size": 65536: want 64 bytes up to max_packet_size (10)`,
		}},
		{"zero clients", "[broker.limits]\nmax_clients = 0", []string{`2:15: key "broker.limits.max_clients": 0: want at least 1`}},
		{"keepalive too long", "[broker.limits]\nmax_keepalive = \"24h\"", []string{`2:17: key "broker.limits.max_keepalive": 24h0m0s: want 1s up to 65535s (65535s accepts every keepalive)`}},
		{"zero timeout", "[broker.limits]\nconnect_timeout = \"0s\"", []string{`2:19: key "broker.limits.connect_timeout": 0s: want a positive duration, e.g. "10s"`}},
		{"bad address", "[[broker.listener]]\naddress = \"1883\"", []string{`2:11: key "broker.listener[0].address": "1883" is not HOST:PORT (e.g. ":1883", "127.0.0.1:1883", "[::1]:8083")`}},
		{"bad port", "[[broker.listener]]\naddress = \":mqtt\"", []string{`2:11: key "broker.listener[0].address": ":mqtt": the port "mqtt" is not a number from 0 to 65535`}},
		{"address twice", "[[broker.listener]]\naddress = \":1\"\n[[broker.listener]]\naddress = \":1\"\nkind = \"ws\"",
			[]string{`4:11: key "broker.listener[1].address": ":1" is also the address of broker.listener[0] (mqtt :1)`}},
		{"bad broker URL", "[device]\nbroker = [\"192.168.1.2:1883\"]", []string{`2:11: key "device.broker[0]": "192.168.1.2:1883" is not a broker URL such as tcp://127.0.0.1:1883 or ws://host:8083/mqtt`}},
		{"no broker in device mode", "mode = \"device\"\n[device]\nbroker = []", []string{`3:10: key "device.broker": empty: device mode needs the URL of a broker, e.g. ["tcp://192.168.1.20:1883"]`}},
		{"duplicate output names", "[[output]]\nname = \"a\"\nline = \"sim\"\n[[output]]\nname = \"a\"\nline = \"sim:2\"",
			[]string{`5:8: key "output[1].name": "a" is also the name of output[0]`}},
		{"input named as an output", "[[output]]\nname = \"a\"\nline = \"sim\"\n[[input]]\nname = \"a\"\nline = \"sim:2\"",
			[]string{`5:8: key "input[0].name": "a" is also the name of output[0]`}},
		{"led beside the shorthand", "[device]\ngpio = \"sim\"\n[[output]]\nname = \"led\"\nline = \"sim:2\"",
			[]string{`4:8: key "output[0].name": "led" is also the name of the one-LED shorthand ([device] topic and gpio)`}},
		{"bad name", "[[output]]\nname = \"a/b\"\nline = \"sim\"", []string{`2:8: key "output[0].name": "a/b": use letters, digits, _ and - (it becomes part of MQTT topics)`}},
		{"missing name and line", "[[output]]\nactive_low = true", []string{
			`1:3: key "output[0].name": missing: every line needs a name (letters, digits, _ and -)`,
			`1:3: key "output[0].line": missing: want a line such as "GPIO21", "J8p40", "gpiochip0:21" or "sim"`,
		}},
		{"input on auto", "[[input]]\nname = \"b\"\nline = \"auto\"", []string{`3:8: key "input[0].line": "auto" is for outputs: name the input's line, e.g. "GPIO17"`}},
		{"negative debounce", "[[input]]\nname = \"b\"\nline = \"sim\"\ndebounce = \"-1ms\"", []string{`4:12: key "input[0].debounce": -1ms: want 0 (none) or more`}},
		{"profiler on the network", "[debug]\npprof_listen = \"0.0.0.0:6060\"", []string{`2:16: key "debug.pprof_listen": "0.0.0.0:6060": loopback only (127.0.0.1, ::1 or localhost): the profiler shows memory contents; from another machine use ssh -L 6060:127.0.0.1:6060`}},
		{"profiler on a LAN name", "[debug]\npprof_listen = \"raspberrypi.local:6060\"", []string{`2:16: key "debug.pprof_listen": "raspberrypi.local:6060": loopback only (127.0.0.1, ::1 or localhost): the profiler shows memory contents; from another machine use ssh -L 6060:127.0.0.1:6060`}},
		{"profiler without a port", "[debug]\npprof_listen = \"127.0.0.1\"", []string{`2:16: key "debug.pprof_listen": "127.0.0.1": not HOST:PORT (e.g. "127.0.0.1:6060")`}},
		{"negative queue expiry", "[storage]\nqueue_expiry = \"-1s\"", []string{`2:16: key "storage.queue_expiry": -1s: want 0 (messages kept as long as their session) or more`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, "bad.toml", tt.doc)
			_, err := Load(path)
			if err == nil {
				t.Fatal("Load accepted it")
			}
			var want []string
			for _, w := range tt.want {
				if strings.HasPrefix(w, "key ") {
					want = append(want, w) // a default: no position
				} else {
					want = append(want, path+":"+w)
				}
			}
			if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, want) {
				t.Errorf("error:\n%s\nwant:\n%s", err, strings.Join(want, "\n"))
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "none.toml"))
	if err == nil || !strings.Contains(err.Error(), "none.toml") {
		t.Errorf("err = %v, want one naming the file", err)
	}
}

func TestExampleLoads(t *testing.T) {
	c, err := Load(writeFile(t, "example.toml", Example()))
	if err != nil {
		t.Fatalf("Example does not load: %v", err)
	}
	// Every key of Config appears in the example, set or commented out.
	for _, key := range allKeys(reflect.TypeFor[Config](), "") {
		if !strings.Contains(Example(), key+" =") && !strings.Contains(Example(), "."+key+"]") && !strings.Contains(Example(), "["+key+"]") {
			t.Errorf("Example lacks %s", key)
		}
	}
	// Its values are the defaults, but for the password file it names.
	d := Default()
	d.Broker.PasswordFile = "/etc/pimqtt/passwd"
	d.Broker.Listeners = []Listener{{Address: ":1883"}, {Address: ":8083", Kind: KindWS}}
	d.Device.shorthandSet = true
	if !reflect.DeepEqual(plain(c), plain(d)) {
		t.Errorf("Example is\n%+v\nwant the defaults\n%+v", plain(c), plain(d))
	}
	warnings, err := Check(c)
	if err != nil {
		t.Fatal(err)
	}
	if _, statErr := os.Stat("/etc/pimqtt/passwd"); statErr != nil && (len(warnings) != 1 || !strings.Contains(warnings[0], "/etc/pimqtt/passwd does not exist yet")) {
		t.Errorf("warnings = %q, want one for the missing password file", warnings)
	}
}

// allKeys lists the last part of every key under t.
func allKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		name := tomlName(f)
		if name == "" {
			continue
		}
		keys = append(keys, name)
		ft := f.Type
		if ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct {
			keys = append(keys, allKeys(ft, prefix+name+".")...)
		}
	}
	return keys
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwd")
	tests := []struct {
		name     string
		cfg      func(*Config)
		warnings int
		err      string
	}{
		{"no files", func(*Config) {}, 0, ""},
		{"password file missing", func(c *Config) { c.Broker.PasswordFile = pw }, 1, ""},
		{"password file is a directory", func(c *Config) { c.Broker.PasswordFile = dir }, 0, "is a directory"},
		{"device password missing in device mode", func(c *Config) { c.Mode = ModeDevice; c.Device.PasswordFile = pw }, 1, ""},
		{"device password ignored elsewhere", func(c *Config) { c.Device.PasswordFile = pw }, 0, ""},
		{"restore without data dir", func(c *Config) {
			c.Device.DataDir = filepath.Join(dir, "state")
			c.Outputs = []Output{{Name: "a", Line: "sim", Initial: InitialRestore}}
		}, 1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.cfg(&c)
			w, err := Check(c)
			if len(w) != tt.warnings {
				t.Errorf("warnings = %q, want %d", w, tt.warnings)
			}
			if (err == nil) != (tt.err == "") || err != nil && !strings.Contains(err.Error(), tt.err) {
				t.Errorf("err = %v, want %q", err, tt.err)
			}
		})
	}
}

func TestRedactedLoadsBack(t *testing.T) {
	for _, src := range []string{"testdata/full.toml", ""} {
		c := Default()
		if src != "" {
			var err error
			if c, err = Load(src); err != nil {
				t.Fatal(err)
			}
		}
		c.Device.Password = "hunter2"
		c.Device.Brokers = append(c.Device.Brokers, "tcp://pi:s3cret@192.0.2.9:1883")
		out := c.Redacted()
		if strings.Contains(out, "hunter2") || strings.Contains(out, "s3cret") {
			t.Errorf("Redacted shows a secret:\n%s", out)
		}
		back, err := Load(writeFile(t, "back.toml", out))
		if err != nil {
			t.Fatalf("Redacted does not load back: %v\n%s", err, out)
		}
		want := plain(c)
		want.Device.Password = ""
		want.Device.Brokers[len(want.Device.Brokers)-1] = "tcp://pi:xxxxx@192.0.2.9:1883"
		got := plain(back)
		got.Device.shorthandSet = want.Device.shorthandSet
		if src == "" {
			// Written out, the default listeners become explicit ones.
			want.Broker.Listeners = []Listener{{Address: ":1883"}, {Address: ":8083", Kind: KindWS}}
			if !strings.Contains(out, "# The listeners are the defaults") {
				t.Errorf("Redacted does not say the listeners are the defaults:\n%s", out)
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: loaded back\n%+v\nwant\n%+v", src, got, want)
		}
	}
}

func TestWrap(t *testing.T) {
	c, err := Load("testdata/full.toml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ key, want string }{
		{"output[1].line", `testdata/full.toml:57:8: key "output[1].line": busy`},
		{"output[1]", `testdata/full.toml:55:3: key "output[1]": busy`},
		{"broker.listener[0].address", `testdata/full.toml:15:11: key "broker.listener[0].address": busy`},
		{"device.client_id", `testdata/full.toml:40:13: key "device.client_id": busy`},
	}
	for _, tt := range tests {
		if got := c.Wrap(tt.key, errBusy).Error(); got != tt.want {
			t.Errorf("Wrap(%s) = %s, want %s", tt.key, got, tt.want)
		}
	}
	if got := Default().Wrap("device.gpio", errBusy).Error(); got != `key "device.gpio": busy` {
		t.Errorf("Wrap of a default = %s", got)
	}
	if Default().Wrap("x", nil) != nil {
		t.Error("Wrap(nil) is not nil")
	}
}

type busyError struct{}

func (busyError) Error() string { return "busy" }

var errBusy = busyError{}

func writeFileAt(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
