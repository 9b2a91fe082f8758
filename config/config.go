package config

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Config is pimqtt's whole configuration: what a TOML file, an imported
// mosquitto.conf and the command line decide, in the shape of the file.
// The zero value is not useful: start from [Default], [Load] or
// [Command.Resolve].
type Config struct {
	// Mode is what runs: the broker, the device, or both.
	Mode Mode `toml:"mode"`
	// MosquittoConfig, when set, is a mosquitto.conf whose broker settings
	// are imported under the file's own [broker] keys (see
	// [ImportMosquitto]).
	MosquittoConfig string `toml:"mosquitto_config,omitempty"`

	Log    Log    `toml:"log"`
	Broker Broker `toml:"broker"`
	Device Device `toml:"device"`
	HTTP   HTTP   `toml:"http"`
	// HomeAssistant is MQTT discovery for Home Assistant.
	HomeAssistant HomeAssistant `toml:"homeassistant"`
	// Storage is what survives a restart: [storage].
	Storage Storage `toml:"storage"`
	// Debug is what a user reporting slowness turns on: [debug].
	Debug Debug `toml:"debug"`
	// Outputs and Inputs are the named lines ([[output]], [[input]]; the
	// --output and --input flags), with topics under Device.Prefix.
	Outputs []Output `toml:"output,omitempty"`
	Inputs  []Input  `toml:"input,omitempty"`
	// Bridges connect the embedded broker to remote brokers ([[bridge]];
	// the --bridge flags; a mosquitto.conf's connection blocks).
	Bridges []Bridge `toml:"bridge,omitempty"`

	// origins says where each value that is not a default came from, so
	// that errors found later (by Validate, or by the layer that opens a
	// line) can point at the file position or the flag: see [Config.Wrap].
	origins *origins
}

// Bridge is one [[bridge]]: the embedded broker's connection to a remote
// broker (mosquitto's connection block), over which topics flow out, in or
// both ways.
type Bridge struct {
	// Name names the connection in logs and in its retained state topic
	// $SYS/broker/connection/NAME/state ("1" connected, "0" not).
	Name string `toml:"name"`
	// Addresses are the URLs of one remote broker (tcp://, mqtts://, ws://,
	// wss://), e.g. a cluster's nodes, tried in order: the bridge fails over
	// to the next when the one in use dies.
	Addresses []string `toml:"address"`
	// Topics are mosquitto's topic lines: "PATTERN [[[out|in|both] QOS]
	// LOCAL_PREFIX REMOTE_PREFIX]"; direction out and QoS 0 by default.
	Topics []string `toml:"topic"`
	// Username is the bridge's user name at the remote.
	Username string `toml:"username"`
	// PasswordFile is a file whose first line is the bridge's password at
	// the remote. The password itself is never a TOML key: see Password.
	PasswordFile string `toml:"password_file"`
	// Password is the bridge's password at the remote: from
	// --bridge-password, else env PIMQTT_BRIDGE_PASSWORD, else
	// PasswordFile, else an imported mosquitto.conf's remote_password.
	// Never written out.
	Password string `toml:"-"`
	// ClientID is the bridge's client id at the remote; "" =
	// HOSTNAME.NAME, as mosquitto's.
	ClientID string `toml:"client_id"`
	// CleanSession false (mosquitto's default) keeps the bridge's session
	// at the remote while it is away, so QoS 1 messages for it wait there.
	CleanSession bool `toml:"clean_session"`
	// CAFile is the CA of the remote's certificate (mqtts://, wss://); "" =
	// the system's roots.
	CAFile string `toml:"ca_file"`
	// QueueLimit bounds the QoS 1 messages held for the remote while it
	// is unreachable; 0 = the default, 1000.
	QueueLimit int `toml:"queue_limit"`
}

// Log is the [log] table.
type Log struct {
	Level LogLevel `toml:"level"`
}

// Broker is the [broker] table: what the embedded broker serves and to whom.
type Broker struct {
	// PasswordFile is a mosquitto password file; "" = none.
	PasswordFile string `toml:"password_file"`
	// AllowAnonymous lets clients without a user name connect on every
	// listener.
	AllowAnonymous bool `toml:"allow_anonymous"`
	// RefusalCodes is how a refused login is answered: spec (a wrong
	// user name or password gets "bad user name or password", 3.1.1 code
	// 4 / MQTT 5 0x86) or mosquitto (every refusal is "not authorized",
	// 5 / 0x87, as mosquitto 2.0 answers). An imported mosquitto.conf
	// sets mosquitto, so clients see exactly what they saw before.
	RefusalCodes RefusalCodes `toml:"refusal_codes"`
	// Listeners are the network listeners. [Default] gives :1883 (mqtt)
	// and :8083 (ws), marked Default; an explicit empty list (listener =
	// []) means none: only the in-process device reaches the broker.
	Listeners []Listener `toml:"listener"`
	// ACLFile is a mosquitto ACL file: who may read and write which
	// topics. "" = every user may use every topic but $SYS (read-only)
	// and the device's own state and status topics (the device's only).
	ACLFile string `toml:"acl_file"`
	// WSOrigins, when not empty, are the only web page origins
	// ("https://host[:port]") whose pages may open a WebSocket listener;
	// clients that send no Origin (apps, scripts) are not affected.
	WSOrigins []string `toml:"ws_origins,omitempty"`
	// TLS is the certificate of the TLS listeners that give none of
	// their own. With a certificate and no listener configured, pimqtt
	// also listens on :8883 (mqtts) and :8084 (wss).
	TLS    TLS    `toml:"tls"`
	Limits Limits `toml:"limits"`
}

// TLS is [broker.tls]: the server certificate of the TLS listeners.
type TLS struct {
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// ClientCAFile, when set, makes the TLS listeners require client
	// certificates signed by this CA.
	ClientCAFile string `toml:"client_ca_file"`
}

// Listener is one [[broker.listener]].
type Listener struct {
	// Address is host:port; an empty host means every interface.
	Address string `toml:"address"`
	// Kind is the protocol served: mqtt (MQTT over TCP), ws (MQTT over
	// WebSocket, any path), mqtts (MQTT over TLS) or wss (WebSocket over
	// TLS). Omitted, it is mqtt, as in mosquitto.
	Kind ListenerKind `toml:"kind"`
	// CertFile, KeyFile and ClientCAFile are a TLS listener's server
	// certificate, its key and, when client certificates are required,
	// the CA they must be signed by; empty takes [broker.tls]'s.
	CertFile     string `toml:"cert_file,omitempty"`
	KeyFile      string `toml:"key_file,omitempty"`
	ClientCAFile string `toml:"client_ca_file,omitempty"`

	// Default marks the listeners [Default] gives, which nobody asked for:
	// without a password file pimqtt binds them to loopback only (the
	// mosquitto 2.0 rule), while an explicit address is taken as given.
	Default bool `toml:"-"`
	// Optional marks a listener that may fail to bind without stopping
	// pimqtt: the IPv6 loopback of mosquitto's local only mode, on a
	// machine without IPv6.
	Optional bool `toml:"-"`
}

// Limits is [broker.limits]: what clients can make the broker hold. The
// meaning of each is that of the flag of the same name (see the
// broker package's Limits).
type Limits struct {
	MaxPacketSize     uint32   `toml:"max_packet_size"`
	MaxConnectSize    uint32   `toml:"max_connect_size"`
	ConnectTimeout    Duration `toml:"connect_timeout"`
	MaxClients        int64    `toml:"max_clients"`
	MaxPending        int64    `toml:"max_pending"`
	MaxSessionExpiry  Duration `toml:"max_session_expiry"`
	MaxInflight       uint16   `toml:"max_inflight"`
	MaxQueued         int32    `toml:"max_queued"`
	MaxKeepAlive      Duration `toml:"max_keepalive"`
	MaxTopicLength    int      `toml:"max_topic_length"`
	MaxTopicLevels    int      `toml:"max_topic_levels"`
	MaxUserProperties int      `toml:"max_user_properties"`
}

// Device is the [device] table: the MQTT client that drives the lines.
type Device struct {
	// Brokers are the URLs of the broker the device connects to in device
	// mode (tcp://, mqtt://, ws://host:port/mqtt, mqtts://, wss://), in
	// order of preference: every connection attempt takes the first that
	// accepts, so the device fails over when the one in use dies.
	Brokers []string `toml:"broker"`
	// Username is the device's user name at the broker.
	Username string `toml:"username"`
	// PasswordFile is a file whose first line is the device's password.
	// The password itself is never a TOML key: see Password.
	PasswordFile string `toml:"password_file"`
	// Password is the device's password: from --password, else from the
	// environment variable PIMQTT_PASSWORD, else from PasswordFile, read
	// by [Command.Resolve] in device mode. Never written out.
	Password string `toml:"-"`
	// CAFile is the CA that signed the broker's certificate, for mqtts://
	// and wss:// brokers with a certificate of their own (pimqtt cert);
	// "" = the system's roots.
	CAFile string `toml:"ca_file"`
	// ClientID is the device's MQTT client id; "" = pimqtt-HOSTNAME.
	ClientID string `toml:"client_id"`
	// StatusTopic carries the retained {"status": "On"|"Off"} and the
	// Last Will.
	StatusTopic string `toml:"status_topic"`
	// Topic and GPIO are the one-LED shorthand: an output named "led"
	// taking commands on Topic (state on Topic/state), driving line GPIO.
	// It is used when there are no named lines or when either key (or
	// flag) is given: see [Config.UseShorthand].
	Topic string `toml:"topic"`
	GPIO  string `toml:"gpio"`
	// Prefix is the topic prefix of named outputs and inputs.
	Prefix string `toml:"prefix"`
	// TelemetryInterval is how often the machine's health (temperature,
	// load, memory, disk, clients) is published retained on
	// PREFIX/telemetry; 0 = never.
	TelemetryInterval Duration `toml:"telemetry_interval"`
	// DataDir holds the state file that initial = "restore" reads.
	DataDir string `toml:"data_dir"`

	// shorthandSet records that topic or gpio was given explicitly.
	shorthandSet bool
}

// HTTP is the [http] table: the control page and its API.
type HTTP struct {
	// Listen are the page's addresses; listen = [] means no page. Without
	// a password file an address without a host binds loopback only, and
	// a network address is an error, as for the MQTT listeners.
	Listen []string `toml:"listen"`
	// HTTPSListen are served over TLS with [broker.tls]'s certificate,
	// when there is one (then the page installs as a full app).
	HTTPSListen []string `toml:"https_listen"`
	// URL is the page's address for phones (logs, QR code, Home
	// Assistant's link); "" = http://FIRST-LAN-ADDRESS:PORT/.
	URL string `toml:"url"`
	// Title is the page's title; "" = the host name.
	Title string `toml:"title"`
}

// HomeAssistant is [homeassistant]: MQTT discovery.
type HomeAssistant struct {
	// Discovery publishes a retained device config that Home Assistant's
	// MQTT integration turns into entities: a switch per output, a
	// binary sensor per input, sensors for telemetry.
	Discovery bool `toml:"discovery"`
	// Prefix is Home Assistant's discovery prefix.
	Prefix string `toml:"prefix"`
	// PerComponent publishes one config per entity, the form of Home
	// Assistant before 2024.11, instead of one device config.
	PerComponent bool `toml:"per_component"`
}

// Debug is the [debug] table: diagnostics, all off by default.
type Debug struct {
	// PprofListen serves Go's profiler (net/http/pprof) on this loopback
	// address; "" = off. It shows memory contents, so only 127.0.0.0/8,
	// ::1 or localhost are accepted: reach it from elsewhere through
	// ssh -L.
	PprofListen string `toml:"pprof_listen"`
}

// Storage is the [storage] table: what survives a restart, kill -9 and a
// power cut.
type Storage struct {
	// Persistence keeps retained messages and persistent sessions (MQTT
	// 3.1.1 clean session false, MQTT 5 session expiry > 0) with their
	// subscriptions and queued QoS 1/2 messages in File. Left at its
	// default (true, not given), it is on when the data directory exists
	// and can be written; given as true, pimqtt creates the directory;
	// false keeps everything in memory.
	Persistence bool `toml:"persistence"`
	// File is the store; "" = DATA_DIR/pimqtt.db (device.data_dir).
	File string `toml:"file"`
	// QueueExpiry drops a message queued for a disconnected persistent
	// session once it is older than this; 0 keeps it as long as the
	// session (broker.limits.max_session_expiry).
	QueueExpiry Duration `toml:"queue_expiry"`
}

// StoreFile is the store's path: storage.file, else pimqtt.db in the data
// directory.
func (c Config) StoreFile() string {
	if c.Storage.File != "" {
		return c.Storage.File
	}
	return filepath.Join(c.Device.DataDir, "pimqtt.db")
}

// Output is one [[output]]: a line the device drives, with the meaning of
// an --output NAME=LINE[,active-low][,initial=off|on|restore] flag.
type Output struct {
	// Name is letters, digits, _ and -: commands arrive on PREFIX/NAME,
	// the level is published retained on PREFIX/NAME/state.
	Name string `toml:"name"`
	// Line is a line spec: GPIO21, J8p40, pin40, gpiochip0:21, sim, auto.
	Line      string  `toml:"line"`
	ActiveLow bool    `toml:"active_low"`
	Initial   Initial `toml:"initial"`
}

// Input is one [[input]]: a line the device reads, with the meaning of an
// --input NAME=LINE[,pull-up|pull-down][,debounce=DUR][,active-low] flag.
type Input struct {
	Name      string   `toml:"name"`
	Line      string   `toml:"line"`
	Pull      Pull     `toml:"pull"`
	Debounce  Duration `toml:"debounce"`
	ActiveLow bool     `toml:"active_low"`
}

// ListenerCert is the certificate and key a listener serves: its own, else
// [broker.tls]'s.
func (c Config) ListenerCert(l Listener) (cert, key string) {
	if l.CertFile != "" || l.KeyFile != "" {
		return l.CertFile, l.KeyFile
	}
	return c.Broker.TLS.CertFile, c.Broker.TLS.KeyFile
}

// ListenerClientCA is the CA a TLS listener requires client certificates
// from: its own, else [broker.tls]'s; "" = none required.
func (c Config) ListenerClientCA(l Listener) string {
	if l.ClientCAFile != "" {
		return l.ClientCAFile
	}
	return c.Broker.TLS.ClientCAFile
}

// addTLSListeners opens the default TLS listeners (mqtts :8883 and wss
// :8084) when a certificate is given and nobody configured listeners: the
// simple case is --tls-cert and --tls-key alone.
func (c *Config) addTLSListeners() {
	if c.Broker.TLS.CertFile == "" || !listenersDefault(c.Broker.Listeners) {
		return
	}
	c.Broker.Listeners = append(c.Broker.Listeners,
		Listener{Address: ":8883", Kind: KindMQTTS, Default: true},
		Listener{Address: ":8084", Kind: KindWSS, Default: true})
}

// Default is pimqtt with no file and no flags: the one-LED quick start.
// It equals the command line's defaults, except that [Command.Resolve]
// takes the data directory from systemd's STATE_DIRECTORY when set.
func Default() Config {
	return Config{
		Mode: ModeAll,
		Log:  Log{Level: LogLevel(slog.LevelInfo)},
		Broker: Broker{
			Listeners: DefaultListeners(),
			Limits: Limits{
				MaxPacketSize:     2 << 20,
				MaxConnectSize:    64 << 10,
				ConnectTimeout:    Duration(10 * time.Second),
				MaxClients:        500,
				MaxPending:        1000,
				MaxSessionExpiry:  Duration((1<<32 - 1) * time.Second),
				MaxInflight:       256,
				MaxQueued:         1024,
				MaxKeepAlive:      Duration(65535 * time.Second),
				MaxTopicLength:    1024,
				MaxTopicLevels:    32,
				MaxUserProperties: 32,
			},
		},
		Device: Device{
			Brokers:     []string{"tcp://127.0.0.1:1883"},
			StatusTopic: "raspberry/status",
			Topic:       "raspberry/led",
			GPIO:        "auto",
			Prefix:      "raspberry",
			DataDir:     "/var/lib/pimqtt",

			TelemetryInterval: Duration(30 * time.Second),
		},
		HTTP:          HTTP{Listen: []string{":8080"}, HTTPSListen: []string{":8443"}},
		HomeAssistant: HomeAssistant{Prefix: "homeassistant"},
		Storage:       Storage{Persistence: true},
	}
}

// IsSet says whether a key was given by a file or a flag, not left at its
// default.
func (c Config) IsSet(key string) bool {
	_, ok := c.origins.find(key)
	return ok
}

// DefaultListeners are the listeners nobody asked for: MQTT on :1883 and
// MQTT over WebSocket on :8083, marked Default.
func DefaultListeners() []Listener {
	return []Listener{
		{Address: ":1883", Kind: KindMQTT, Default: true},
		{Address: ":8083", Kind: KindWS, Default: true},
	}
}

// clone is a deep copy: decoding into it leaves c's slices alone.
func (c Config) clone() Config {
	c.Broker.Listeners = slices.Clone(c.Broker.Listeners)
	c.Device.Brokers = slices.Clone(c.Device.Brokers)
	c.Outputs = slices.Clone(c.Outputs)
	c.Inputs = slices.Clone(c.Inputs)
	c.Bridges = slices.Clone(c.Bridges)
	for i := range c.Bridges {
		c.Bridges[i].Addresses = slices.Clone(c.Bridges[i].Addresses)
		c.Bridges[i].Topics = slices.Clone(c.Bridges[i].Topics)
	}
	c.origins = c.origins.clone()
	return c
}

// UseShorthand says whether the one-LED shorthand ([device] topic and
// gpio) makes an output named "led": when there are no named lines, or
// when topic or gpio was set explicitly beside them.
func (c Config) UseShorthand() bool {
	return (len(c.Outputs) == 0 && len(c.Inputs) == 0) || c.Device.shorthandSet
}

// BrokerURL is the URL device mode prefers: the first of Device.Brokers
// ("" when there is none).
func (c Config) BrokerURL() string {
	if len(c.Device.Brokers) == 0 {
		return ""
	}
	return c.Device.Brokers[0]
}

// Mode is what pimqtt runs: all, broker or device.
type Mode int

// The modes.
const (
	ModeAll Mode = iota
	ModeBroker
	ModeDevice
)

var modeNames = []string{"all", "broker", "device"}

// String returns all, broker or device.
func (m Mode) String() string { return enumName(modeNames, int(m)) }

// MarshalText writes the mode as UnmarshalText reads it.
func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText accepts all, broker or device.
func (m *Mode) UnmarshalText(b []byte) error { return parseEnum(m, string(b), modeNames) }

// Set is [pflag.Value]'s Set.
func (m *Mode) Set(s string) error { return m.UnmarshalText([]byte(s)) }

// Type is [pflag.Value]'s Type: "string", as the flag always showed.
func (m *Mode) Type() string { return "string" }

func (Mode) choices() []string { return modeNames }

// ListenerKind is what a listener serves: mqtt (MQTT over TCP), ws (MQTT
// over WebSocket), mqtts (MQTT over TLS) or wss (WebSocket over TLS).
type ListenerKind int

// The listener kinds; the zero value is mqtt.
const (
	KindMQTT ListenerKind = iota
	KindWS
	KindMQTTS
	KindWSS
)

// TLS says whether the kind is served over TLS.
func (k ListenerKind) TLS() bool { return k == KindMQTTS || k == KindWSS }

var kindNames = []string{"mqtt", "ws", "mqtts", "wss"}

// String returns mqtt, ws, mqtts or wss.
func (k ListenerKind) String() string { return enumName(kindNames, int(k)) }

// MarshalText writes the kind as UnmarshalText reads it.
func (k ListenerKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText accepts mqtt, ws, mqtts or wss.
func (k *ListenerKind) UnmarshalText(b []byte) error { return parseEnum(k, string(b), kindNames) }

func (ListenerKind) choices() []string { return kindNames }

// Initial is what an output starts at: off, on, or restore (the last
// commanded level, from the state file in Device.DataDir).
type Initial int

// The initial levels of an output; the zero value is off.
const (
	InitialOff Initial = iota
	InitialOn
	InitialRestore
)

var initialNames = []string{"off", "on", "restore"}

// String returns off, on or restore.
func (i Initial) String() string { return enumName(initialNames, int(i)) }

// MarshalText writes the level as UnmarshalText reads it.
func (i Initial) MarshalText() ([]byte, error) { return []byte(i.String()), nil }

// UnmarshalText accepts off, on or restore.
func (i *Initial) UnmarshalText(b []byte) error { return parseEnum(i, string(b), initialNames) }

func (Initial) choices() []string { return initialNames }

// Pull is an input's bias: none, up or down.
type Pull int

// The biases of an input; the zero value is none.
const (
	PullNone Pull = iota
	PullUp
	PullDown
)

var pullNames = []string{"none", "up", "down"}

// String returns none, up or down.
func (p Pull) String() string { return enumName(pullNames, int(p)) }

// MarshalText writes the bias as UnmarshalText reads it.
func (p Pull) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText accepts none, up or down.
func (p *Pull) UnmarshalText(b []byte) error { return parseEnum(p, string(b), pullNames) }

func (Pull) choices() []string { return pullNames }

// RefusalCodes is how refused logins are answered: spec or mosquitto.
type RefusalCodes int

// The ways to answer a refused login; the zero value is spec.
const (
	RefusalSpec RefusalCodes = iota
	RefusalMosquitto
)

var refusalNames = []string{"spec", "mosquitto"}

// String returns spec or mosquitto.
func (r RefusalCodes) String() string { return enumName(refusalNames, int(r)) }

// MarshalText writes the choice as UnmarshalText reads it.
func (r RefusalCodes) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText accepts spec or mosquitto.
func (r *RefusalCodes) UnmarshalText(b []byte) error { return parseEnum(r, string(b), refusalNames) }

func (RefusalCodes) choices() []string { return refusalNames }

// chooser is an enumeration: errors list its choices.
type chooser interface{ choices() []string }

func enumName(names []string, i int) string {
	if i < 0 || i >= len(names) {
		return fmt.Sprintf("invalid(%d)", i)
	}
	return names[i]
}

// parseEnum sets *dst to the index of s in names, or says what names
// there are.
func parseEnum[T ~int](dst *T, s string, names []string) error {
	for i, n := range names {
		if s == n {
			*dst = T(i)
			return nil
		}
	}
	return fmt.Errorf("%q is not one of %s", s, strings.Join(names, ", "))
}

// LogLevel is a log/slog level written as debug, info, warn or error.
type LogLevel slog.Level

// UnmarshalText accepts what slog.Level does (debug, info, warn, error,
// also info+2 and the like).
func (l *LogLevel) UnmarshalText(b []byte) error {
	var v slog.Level
	if err := v.UnmarshalText(b); err != nil {
		return fmt.Errorf("%q is not one of debug, info, warn, error", b)
	}
	*l = LogLevel(v)
	return nil
}

// MarshalText writes the level as UnmarshalText reads it.
func (l LogLevel) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// String returns debug, info, warn or error (lower case, as the flag
// takes it).
func (l LogLevel) String() string { return strings.ToLower(slog.Level(l).String()) }

// Set is [pflag.Value]'s Set.
func (l *LogLevel) Set(s string) error { return l.UnmarshalText([]byte(s)) }

// Type is [pflag.Value]'s Type: "string", as the flag always showed.
func (l *LogLevel) Type() string { return "string" }

// Level is the slog level.
func (l LogLevel) Level() slog.Level { return slog.Level(l) }

// Duration is a time.Duration written as Go writes one: "10s", "1h30m".
type Duration time.Duration

// UnmarshalText parses a Go duration.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration: want a number and a unit, e.g. \"10s\", \"500ms\", \"24h\"", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration as UnmarshalText reads it.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// String is time.Duration's.
func (d Duration) String() string { return time.Duration(d).String() }

// Set is [pflag.Value]'s Set.
func (d *Duration) Set(s string) error { return d.UnmarshalText([]byte(s)) }

// Type is [pflag.Value]'s Type: "duration", as pflag's own.
func (d *Duration) Type() string { return "duration" }

// D is the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (LogLevel) choices() []string { return []string{"debug", "info", "warn", "error"} }
