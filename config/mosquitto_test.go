package config

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestImportSeed(t *testing.T) {
	b, notices, err := ImportMosquitto("testdata/seed-mosquitto.conf")
	if err != nil {
		t.Fatal(err)
	}
	want := Default().Broker
	want.PasswordFile = "/etc/mosquitto/passwd"
	want.AllowAnonymous = false
	want.RefusalCodes = RefusalMosquitto
	want.Listeners = []Listener{{Address: ":1883", Kind: KindMQTT}, {Address: ":8083", Kind: KindWS}}
	if !reflect.DeepEqual(b, want) {
		t.Errorf("got %+v\nwant %+v", b, want)
	}
	if len(notices) != 0 {
		t.Errorf("notices %v, want none", notices)
	}
}

func TestImportDebianDefault(t *testing.T) {
	b, notices, err := ImportMosquitto("testdata/debian-mosquitto.conf")
	if err != nil {
		t.Fatal(err)
	}
	want := []Listener{{Address: "127.0.0.1:1883"}, {Address: "[::1]:1883", Optional: true}}
	if !reflect.DeepEqual(b.Listeners, want) || !b.AllowAnonymous || b.PasswordFile != "" {
		t.Errorf("got %+v, want local only mode: %+v with anonymous clients", b, want)
	}
	var got []string
	for _, n := range notices {
		got = append(got, n.String())
	}
	f := "testdata/debian-mosquitto.conf"
	wantNotices := []string{
		f + ":6: pid_file: ignored: pimqtt writes no pid file",
		f + ":8: persistence: true: pimqtt keeps retained messages and persistent sessions in its own store (storage.file); what mosquitto saved is not imported",
		f + ":11: log_dest: ignored: pimqtt logs to standard error ([log] level)",
		f + ": listener: none: mosquitto 2.0's local only mode, imported as 127.0.0.1:1883 and [::1]:1883 with anonymous clients allowed",
	}
	if !reflect.DeepEqual(got, wantNotices) {
		t.Errorf("notices:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantNotices, "\n"))
	}
}

func TestImportKeys(t *testing.T) {
	l := func(addr string, kind ListenerKind) Listener { return Listener{Address: addr, Kind: kind} }
	tests := []struct {
		name, conf string
		check      func(Broker) bool
		notice     string // a notice that must be there
		err        string // the error, after "FILE:"
	}{
		{"listener port", "listener 1884\nallow_anonymous true", func(b Broker) bool {
			return reflect.DeepEqual(b.Listeners, []Listener{l(":1884", KindMQTT)}) && b.AllowAnonymous
		}, "", ""},
		{"listener port address", "listener 1884 127.0.0.1\nlistener 1885 ::1\nlistener 1886 pi.local", func(b Broker) bool {
			return reflect.DeepEqual(b.Listeners, []Listener{l("127.0.0.1:1884", KindMQTT), l("[::1]:1885", KindMQTT), l("pi.local:1886", KindMQTT)})
		}, "", ""},
		{"allow_anonymous defaults to false with a listener", "listener 1884", func(b Broker) bool { return !b.AllowAnonymous }, "mosquitto would let no client in", ""},
		{"protocol websockets applies to the listener before it", "listener 1884\nlistener 9001\nprotocol websockets\nlistener 1885", func(b Broker) bool {
			return reflect.DeepEqual(b.Listeners, []Listener{l(":1884", KindMQTT), l(":9001", KindWS), l(":1885", KindMQTT)})
		}, "", ""},
		{"protocol mqtt", "listener 1884\nprotocol mqtt", func(b Broker) bool { return b.Listeners[0].Kind == KindMQTT }, "", ""},
		{"port", "port 1884", func(b Broker) bool { return reflect.DeepEqual(b.Listeners, []Listener{l(":1884", KindMQTT)}) }, "deprecated in mosquitto", ""},
		{"bind_address", "bind_address 127.0.0.1", func(b Broker) bool {
			return reflect.DeepEqual(b.Listeners, []Listener{l("127.0.0.1:1883", KindMQTT)})
		}, "", ""},
		{"port and bind_address and a listener", "port 1884\nbind_address 127.0.0.1\nlistener 9001\nprotocol websockets", func(b Broker) bool {
			return reflect.DeepEqual(b.Listeners, []Listener{l("127.0.0.1:1884", KindMQTT), l(":9001", KindWS)})
		}, "", ""},
		{"local only mode keeps an explicit allow_anonymous false", "allow_anonymous false\npassword_file /p", func(b Broker) bool {
			return len(b.Listeners) == 2 && !b.AllowAnonymous && b.PasswordFile == "/p"
		}, "local only mode", ""},
		{"password_file with spaces", "password_file /etc/my passwd\nlistener 1", func(b Broker) bool { return b.PasswordFile == "/etc/my passwd" }, "", ""},
		{"max_keepalive", "max_keepalive 60", func(b Broker) bool { return b.Limits.MaxKeepAlive.D() == time.Minute }, "", ""},
		{"max_packet_size", "max_packet_size 1000", func(b Broker) bool {
			return b.Limits.MaxPacketSize == 1000 && b.Limits.MaxConnectSize == 1000
		}, "", ""},
		{"max_packet_size 0", "max_packet_size 0", func(b Broker) bool { return b.Limits.MaxPacketSize == 2<<20 }, "0 (no limit): pimqtt keeps its limit of 2097152 bytes", ""},
		{"max_connections", "listener 1\nmax_connections 10", func(b Broker) bool { return b.Limits.MaxClients == 10 }, "", ""},
		// Found by FuzzImportMosquitto: with no listener (local only mode) it indexed an empty list.
		{"max_connections in local only mode", "max_connections 1", func(b Broker) bool { return b.Limits.MaxClients == 1 }, "", ""},
		{"max_connections summed", "listener 1\nmax_connections 10\nlistener 2\nmax_connections 5", func(b Broker) bool { return b.Limits.MaxClients == 15 }, "max_clients = 15, their sum", ""},
		{"max_connections -1", "listener 1\nmax_connections -1", func(b Broker) bool { return b.Limits.MaxClients == 500 }, "-1 (unlimited): pimqtt keeps its limit of 500 clients", ""},
		{"max_connections on one listener only", "listener 1\nmax_connections 10\nlistener 2", func(b Broker) bool { return b.Limits.MaxClients == 500 }, "10 on listener 1 only", ""},
		{"max_inflight_messages", "max_inflight_messages 20", func(b Broker) bool { return b.Limits.MaxInflight == 20 }, "", ""},
		{"max_queued_messages", "max_queued_messages 1000", func(b Broker) bool { return b.Limits.MaxQueued == 1000 }, "", ""},
		{"persistent_client_expiration", "persistent_client_expiration 2w", func(b Broker) bool { return b.Limits.MaxSessionExpiry.D() == 14*24*time.Hour }, "", ""},
		{"comments and blanks", "# a comment\n\n   # indented comment\nlistener 1884\n", func(b Broker) bool { return len(b.Listeners) == 1 }, "", ""},
		{"acl_file", "acl_file /etc/mosquitto/acl", func(b Broker) bool { return b.ACLFile == "/etc/mosquitto/acl" }, "", ""},
		{"acl_file per listener", "per_listener_settings true\nlistener 1\nacl_file /a\nlistener 2\nacl_file /b", nil, "", `4: key "per_listener_settings": listener 1 has allow_anonymous false, no password_file, acl_file /a but listener 2 has`},
		{"TLS listener", "listener 8883\ncertfile /c.pem\nkeyfile /k.pem", func(b Broker) bool {
			return reflect.DeepEqual(b.Listeners, []Listener{{Address: ":8883", Kind: KindMQTTS, CertFile: "/c.pem", KeyFile: "/k.pem"}})
		}, "", ""},
		{"WSS listener requiring client certificates", "listener 8084\nprotocol websockets\ncertfile /c.pem\nkeyfile /k.pem\ncafile /ca.pem\nrequire_certificate true", func(b Broker) bool {
			return reflect.DeepEqual(b.Listeners, []Listener{{Address: ":8084", Kind: KindWSS, CertFile: "/c.pem", KeyFile: "/k.pem", ClientCAFile: "/ca.pem"}})
		}, "", ""},
		{"cafile without require_certificate", "listener 8883\ncertfile /c\nkeyfile /k\ncafile /ca", func(b Broker) bool { return b.Listeners[0].ClientCAFile == "" }, "without require_certificate true", ""},
		{"TLS on the default listener", "port 8883\ncertfile /c\nkeyfile /k", func(b Broker) bool { return b.Listeners[0].Kind == KindMQTTS }, "", ""},
		{"TLS listeners beside a plain one", "listener 1883\nlistener 8883\ncertfile /c\nkeyfile /k", func(b Broker) bool {
			return b.Listeners[0].Kind == KindMQTT && b.Listeners[1].Kind == KindMQTTS
		}, "", ""},
		{"certfile without keyfile", "listener 8883\ncertfile /etc/ssl/x.pem", nil, "", `2: key "certfile": listener 8883 has TLS settings but not both certfile and keyfile`},
		{"require_certificate without cafile", "listener 8883\ncertfile /c\nkeyfile /k\nrequire_certificate true", nil, "", `2: key "require_certificate": true without cafile`},
		{"tls_version", "listener 8883\ncertfile /c\nkeyfile /k\ntls_version tlsv1.2", nil, "tls_version: ignored: pimqtt accepts TLS 1.2 and 1.3", ""},
		{"capath", "listener 8883\ncapath /etc/ssl/certs", nil, "", `2: key "capath": not supported`},
		{"crlfile", "listener 8883\ncrlfile /crl", nil, "", `2: key "crlfile": not supported: revoked client certificates would be accepted`},
		{"psk_file", "psk_file /p", nil, "", `1: key "psk_file": pre-shared-key TLS is not supported`},
		{"bridge", "connection hub\naddress 192.0.2.1:1883\ntopic # both 0\nbridge_protocol_version mqttv311", nil, "bridge_protocol_version: not supported by pimqtt's bridge, ignored", ""},
		{"log_type", "log_type all", nil, "log_type: ignored", ""},
		{"user", "user mosquitto", nil, "user: ignored: pimqtt runs as the user that starts it", ""},

		{"unknown key", "listener 1883\nfrobnicate 1", nil, "", `2: key "frobnicate": not a mosquitto 2.0 setting (mosquitto refuses it too)`},
		{"plugin", "plugin /usr/lib/dynamic-security.so", nil, "", `1: key "plugin": plugins are not supported`},
		{"plugin_opt", "plugin_opt_config_file /x", nil, "", `1: key "plugin_opt_config_file": plugins are not supported`},
		{"mount_point", "listener 1\nmount_point x/", nil, "", `2: key "mount_point": not supported`},
		{"unix socket", "listener 0 /run/mosquitto.sock", nil, "", `1: key "listener": unix sockets (listener 0 PATH) are not supported: use a port`},
		{"bad port", "listener http", nil, "", `1: key "listener": port "http": want a number from 1 to 65535`},
		{"listener without port", "listener", nil, "", `1: key "listener": "": want PORT or PORT ADDRESS`},
		{"bad bool", "allow_anonymous yes", nil, "", `1: key "allow_anonymous": "yes": want true or false`},
		{"empty bool", "allow_anonymous", nil, "", `1: key "allow_anonymous": empty: want true or false`},
		{"bad protocol", "listener 1\nprotocol http", nil, "", `2: key "protocol": "http": want mqtt or websockets`},
		{"max_keepalive below 10", "max_keepalive 5", nil, "", `1: key "max_keepalive": 5: want 10 to 65535 seconds (mosquitto's range)`},
		{"max_packet_size below 20", "max_packet_size 10", nil, "", `1: key "max_packet_size": 10: want 20 to 268435456 bytes (mosquitto's range)`},
		{"max_packet_size below pimqtt's", "max_packet_size 30", nil, "", `1: key "max_packet_size": 30: pimqtt needs at least 64 bytes`},
		{"max_connections 0", "max_connections 0", nil, "", `1: key "max_connections": 0: want -1 (unlimited) or a positive number`},
		{"not a number", "max_keepalive ten", nil, "", `1: key "max_keepalive": "ten": want a whole number`},
		{"bridge key without connection", "address 192.0.2.1", nil, "", `1: key "address": a bridge setting before any connection`},
		{"bad expiration", "persistent_client_expiration 3x", nil, "", `1: key "persistent_client_expiration": "3x": want a number and h, d, w, m or y, e.g. 14d`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, "mosquitto.conf", tt.conf)
			b, notices, err := ImportMosquitto(path)
			if tt.err != "" {
				if err == nil || !strings.HasPrefix(err.Error(), path+":"+tt.err) {
					t.Fatalf("err = %v\nwant %s:%s", err, path, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.check != nil && !tt.check(b) {
				t.Errorf("got %+v", b)
			}
			if tt.notice != "" {
				found := false
				for _, n := range notices {
					found = found || strings.Contains(n.String(), tt.notice)
				}
				if !found {
					t.Errorf("notices %v lack %q", notices, tt.notice)
				}
			}
		})
	}
}

// TestImportEveryIgnoredKeyIsOneNotice checks the "one clear line each"
// rule for the keys pimqtt ignores.
func TestImportEveryIgnoredKeyIsOneNotice(t *testing.T) {
	for key, text := range mosqIgnored {
		path := writeFile(t, "m.conf", "listener 1\nallow_anonymous true\n"+key+" x\n")
		_, notices, err := ImportMosquitto(path)
		if err != nil {
			t.Errorf("%s: %v", key, err)
			continue
		}
		if len(notices) != 1 || notices[0].String() != path+":3: "+key+": "+text {
			t.Errorf("%s: notices %v", key, notices)
		}
	}
}

func TestImportIncludeDirOrder(t *testing.T) {
	dir := t.TempDir()
	inc := filepath.Join(dir, "conf.d")
	if err := os.Mkdir(inc, 0o755); err != nil {
		t.Fatal(err)
	}
	// mosquitto.conf(5)'s example: loaded as 00, 01, A, a, B, b.
	files := map[string]string{"b.conf": "6", "A.conf": "3", "01.conf": "2", "a.conf": "4", "B.conf": "5", "00.conf": "1",
		"notes.txt": "7", ".conf": "8", "x.conf.bak": "9"}
	for name, port := range files {
		writeFileAt(t, filepath.Join(inc, name), "listener 100"+port+"\n")
	}
	writeFileAt(t, filepath.Join(inc, "A.conf"), "listener 1003\ninclude_dir "+dir+"\n")
	main := filepath.Join(dir, "mosquitto.conf")
	writeFileAt(t, main, "listener 1000\ninclude_dir "+inc+"\nallow_anonymous true\n")
	b, notices, err := ImportMosquitto(main)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range b.Listeners {
		got = append(got, l.Address)
	}
	want := []string{":1000", ":1001", ":1002", ":1003", ":1004", ":1005", ":1006"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("listeners %v, want %v", got, want)
	}
	if len(notices) != 1 || notices[0].String() != filepath.Join(inc, "A.conf")+":2: include_dir: in an included file: mosquitto ignores it, so does pimqtt" {
		t.Errorf("notices %v", notices)
	}
	writeFileAt(t, main, "include_dir "+filepath.Join(dir, "none")+"\n")
	if _, _, err := ImportMosquitto(main); err == nil || !strings.HasPrefix(err.Error(), main+`:1: key "include_dir": open `) {
		t.Errorf("missing include_dir: %v", err)
	}
}

func TestMosquittoOrder(t *testing.T) {
	names := []string{"b.conf", "_.conf", "A.conf", "01.conf", "a.conf", "B.conf", "00.conf", "Z.conf", "ab.conf", "a.conf.conf"}
	slicesSort(names)
	want := []string{"00.conf", "01.conf", "A.conf", "a.conf", "a.conf.conf", "ab.conf", "B.conf", "b.conf", "Z.conf", "_.conf"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("order %v, want %v", names, want)
	}
}

func TestImportPerListenerSettings(t *testing.T) {
	tests := []struct {
		name, conf string
		anon       bool
		pw         string
		notice     string
		err        string
	}{
		{"same on every listener", "per_listener_settings true\nlistener 1\nallow_anonymous false\npassword_file /p\nlistener 2\nprotocol websockets\nallow_anonymous false\npassword_file /p",
			false, "/p", "every listener has the same settings: pimqtt applies them to all", ""},
		{"both unset: anonymous refused", "per_listener_settings true\nlistener 1\nlistener 2", false, "", "", ""},
		{"different", "per_listener_settings true\nlistener 1\nallow_anonymous true\nlistener 2\npassword_file /p", false, "", "",
			`4: key "per_listener_settings": listener 1 has allow_anonymous true, no password_file but listener 2 has allow_anonymous false, password_file /p: pimqtt has one password file, one ACL file and one anonymous setting for every listener; make them the same`},
		{"before any listener: ignored", "per_listener_settings true\nallow_anonymous true\nlistener 1", false, "",
			"comes before any listener with per_listener_settings true: mosquitto applies it to no listener, ignored", ""},
		{"false: settings are global wherever they are", "per_listener_settings false\nlistener 1\nlistener 2\nallow_anonymous true", true, "", "", ""},
		{"after a security setting", "allow_anonymous true\nper_listener_settings true\nlistener 1", false, "", "",
			`2: key "per_listener_settings": must come before every security setting (mosquitto refuses it after allow_anonymous at `},
		{"local only mode", "per_listener_settings true\nallow_anonymous false", false, "", "local only mode", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, "m.conf", tt.conf)
			b, notices, err := ImportMosquitto(path)
			if tt.err != "" {
				if err == nil || !strings.HasPrefix(err.Error(), path+":"+tt.err) {
					t.Fatalf("err = %v\nwant %s:%s", err, path, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b.AllowAnonymous != tt.anon || b.PasswordFile != tt.pw {
				t.Errorf("allow_anonymous %v, password_file %q; want %v, %q", b.AllowAnonymous, b.PasswordFile, tt.anon, tt.pw)
			}
			if tt.notice != "" {
				found := false
				for _, n := range notices {
					found = found || strings.Contains(n.String(), tt.notice)
				}
				if !found {
					t.Errorf("notices %v lack %q", notices, tt.notice)
				}
			}
		})
	}
}

// TestMosquittoLayer checks mosquitto.conf < TOML file < flags, and that
// errors about imported values point at the mosquitto.conf.
func TestMosquittoLayer(t *testing.T) {
	mosq := writeFile(t, "mosquitto.conf", "listener 1884\nallow_anonymous false\npassword_file /etc/mosquitto/passwd\nmax_connections 7\nacl_file /x\n")
	file := writeFile(t, "p.toml", "mosquitto_config = \""+mosq+"\"\n[broker]\nallow_anonymous = true\n")
	c, err := Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Broker.AllowAnonymous || c.Broker.PasswordFile != "/etc/mosquitto/passwd" || c.Broker.Limits.MaxClients != 7 ||
		!reflect.DeepEqual(c.Broker.Listeners, []Listener{{Address: ":1884"}}) {
		t.Errorf("file over mosquitto.conf: %+v", c.Broker)
	}
	if len(c.Notices()) != 0 || c.Broker.ACLFile != "/x" {
		t.Errorf("acl_file: %q, notices %v", c.Broker.ACLFile, c.Notices())
	}
	if got, want := c.Wrap("broker.limits.max_clients", errBusy).Error(), mosq+`:4: key "max_connections": busy`; got != want {
		t.Errorf("Wrap = %s, want %s", got, want)
	}
	if got, want := c.Wrap("broker.allow_anonymous", errBusy).Error(), file+`:3:19: key "broker.allow_anonymous": busy`; got != want {
		t.Errorf("Wrap = %s, want %s", got, want)
	}

	// The file's listeners replace the imported ones.
	file2 := writeFile(t, "q.toml", "mosquitto_config = \""+mosq+"\"\n[[broker.listener]]\naddress = \"127.0.0.1:2\"\n")
	if c, err := Load(file2); err != nil || !reflect.DeepEqual(c.Broker.Listeners, []Listener{{Address: "127.0.0.1:2"}}) {
		t.Errorf("listeners %+v, %v", c.Broker.Listeners, err)
	}

	// --mosquitto-config over the file's key, flags over both.
	other := writeFile(t, "other.conf", "listener 1999\nallow_anonymous true\n")
	c, err = resolve(t, nil, "--config", file, "--mosquitto-config", other, "--max-clients", "3")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.Broker.Listeners, []Listener{{Address: ":1999"}}) || c.Broker.PasswordFile != "" || c.Broker.Limits.MaxClients != 3 || c.MosquittoConfig != other {
		t.Errorf("--mosquitto-config: %+v", c)
	}
	if c, err := resolve(t, nil, "--config", file, "--mosquitto-config", ""); err != nil || c.Broker.PasswordFile != "" {
		t.Errorf(`--mosquitto-config "" does not turn the import off: %+v, %v`, c.Broker, err)
	}

	// A broken mosquitto.conf fails the load with its own position.
	bad := writeFile(t, "bad.conf", "capath /x\n")
	if _, err := resolve(t, nil, "--mosquitto-config", bad); err == nil || !strings.HasPrefix(err.Error(), bad+`:1: key "capath": not supported`) {
		t.Errorf("err = %v", err)
	}
}

func slicesSort(names []string) { slices.SortFunc(names, mosquittoOrder) }

// TestImportPersistence: persistence and persistence_location become
// [storage] keys (pimqtt's own file in that directory, never mosquitto's);
// a mosquitto.conf silent about them keeps pimqtt's default; the TOML
// file's [storage] keys win over the import.
func TestImportPersistence(t *testing.T) {
	for _, tt := range []struct {
		name, conf, toml string
		want             Storage
		set              bool // storage.persistence given (not the default)
		notice, err      string
	}{
		{name: "on, with a location", conf: "persistence true\npersistence_location /var/lib/mosquitto/\n",
			want: Storage{Persistence: true, File: "/var/lib/mosquitto/pimqtt.db"}, set: true, notice: "what mosquitto saved is not imported"},
		{name: "off", conf: "persistence false\n", want: Storage{Persistence: false}, set: true},
		{name: "silent", conf: "listener 1883\n", want: Default().Storage},
		{name: "file and autosave ignored", conf: "persistence_file m.db\nautosave_interval 60\n", want: Default().Storage,
			notice: "persistence_file: ignored: pimqtt keeps its own store"},
		{name: "the TOML file wins", conf: "persistence false\npersistence_location /m\n", toml: "[storage]\npersistence = true\n",
			want: Storage{Persistence: true, File: "/m/pimqtt.db"}, set: true},
		{name: "empty location", conf: "persistence_location\n", err: `2: key "persistence_location": empty: want a directory`},
		{name: "bad bool", conf: "persistence yes\n", err: `2: key "persistence": "yes": want true or false`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mosq := writeFile(t, "mosquitto.conf", "allow_anonymous true\n"+tt.conf)
			cfg, err := Load(writeFile(t, "pimqtt.toml", "mosquitto_config = \""+mosq+"\"\n"+tt.toml))
			if tt.err != "" {
				if err == nil || !strings.HasPrefix(err.Error(), mosq+":"+tt.err) {
					t.Fatalf("err = %v, want %s:%s", err, mosq, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Storage != tt.want || cfg.IsSet("storage.persistence") != tt.set {
				t.Errorf("storage %+v (given: %v), want %+v (given: %v)", cfg.Storage, cfg.IsSet("storage.persistence"), tt.want, tt.set)
			}
			if tt.notice != "" && !slices.ContainsFunc(cfg.Notices(), func(n Notice) bool { return strings.Contains(n.String(), tt.notice) }) {
				t.Errorf("notices %v lack %q", cfg.Notices(), tt.notice)
			}
		})
	}
}

// TestStoreFile: storage.file, else pimqtt.db in the data directory.
func TestStoreFile(t *testing.T) {
	c := Default()
	if got, want := c.StoreFile(), filepath.Join("/var/lib/pimqtt", "pimqtt.db"); got != want {
		t.Errorf("default %q, want %q", got, want)
	}
	c.Storage.File = "/srv/x.db"
	if got := c.StoreFile(); got != "/srv/x.db" {
		t.Errorf("with storage.file: %q", got)
	}
}
