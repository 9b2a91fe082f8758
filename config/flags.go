package config

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// DefaultPath is the configuration file read when --config is not given
// and the file exists.
const DefaultPath = "/etc/pimqtt/pimqtt.toml"

// Command is pimqtt's command line: a flag for every key (the names and
// help of pimqtt before the file existed), plus --config and
// --mosquitto-config. Bind it to a FlagSet, parse, then [Command.Resolve].
type Command struct {
	// DefaultPath is read when --config is not given and it exists;
	// Bind sets it to [DefaultPath].
	DefaultPath string

	fs     *pflag.FlagSet
	getenv func(string) string
	// flags holds the values the flags were bound to: Resolve copies the
	// ones the user set over the file.
	flags Config

	configPath, mosquittoPath string
	brokers                   []string
	bridge                    bridgeFlags
	password                  string
	listen, wsListen          []string
	tlsListen, wssListen      []string
	wsOrigins                 []string
	httpListen, httpsListen   []string
	outputs, inputs           []string
	version                   bool
}

// binding ties a flag to a key: ptr gives the field in a Config.
type binding struct {
	flag, key, usage string
	ptr              func(*Config) any
}

// bindings are the flags that map one to one onto a key.
var bindings = []binding{
	{"mode", "mode", "what to run: all (broker and device), broker, or device", func(c *Config) any { return &c.Mode }},
	{"password-file", "broker.password_file", "mosquitto password file (make one with: pimqtt passwd -c FILE USER)", func(c *Config) any { return &c.Broker.PasswordFile }},
	{"allow-anonymous", "broker.allow_anonymous", "allow clients without a user name on every listener", func(c *Config) any { return &c.Broker.AllowAnonymous }},
	{"acl-file", "broker.acl_file", "mosquitto ACL file: who may read and write which topics (default: all users everything, but $SYS read-only and the device's own topics the device's)", func(c *Config) any { return &c.Broker.ACLFile }},
	{"tls-cert", "broker.tls.cert_file", "TLS certificate (PEM) of the TLS listeners; with it pimqtt also listens on :8883 (mqtts) and :8084 (wss) unless listeners are configured (make one with: pimqtt cert)", func(c *Config) any { return &c.Broker.TLS.CertFile }},
	{"tls-key", "broker.tls.key_file", "the TLS certificate's private key (PEM)", func(c *Config) any { return &c.Broker.TLS.KeyFile }},
	{"tls-client-ca", "broker.tls.client_ca_file", "require TLS clients to present a certificate signed by this CA (PEM)", func(c *Config) any { return &c.Broker.TLS.ClientCAFile }},
	{"ca-file", "device.ca_file", "device mode: CA (PEM) of an mqtts:// or wss:// broker whose certificate is its own", func(c *Config) any { return &c.Device.CAFile }},
	{"ha-discovery", "homeassistant.discovery", "publish Home Assistant MQTT discovery: a switch per output, a binary sensor per input, telemetry sensors", func(c *Config) any { return &c.HomeAssistant.Discovery }},
	{"ha-prefix", "homeassistant.prefix", "Home Assistant's discovery prefix", func(c *Config) any { return &c.HomeAssistant.Prefix }},
	{"telemetry-interval", "device.telemetry_interval", "how often to publish temperature, load, memory, disk and clients on PREFIX/telemetry (0 disables)", func(c *Config) any { return &c.Device.TelemetryInterval }},
	{"http-url", "http.url", "the control page's address for phones (default http://FIRST-LAN-ADDRESS:PORT/)", func(c *Config) any { return &c.HTTP.URL }},
	{"username", "device.username", "device mode: user name for --broker", func(c *Config) any { return &c.Device.Username }},
	{"device-password-file", "device.password_file", "device mode: file holding the password for --broker (or --password, or env PIMQTT_PASSWORD)", func(c *Config) any { return &c.Device.PasswordFile }},
	{"client-id", "device.client_id", "device's MQTT client id (default pimqtt-HOSTNAME)", func(c *Config) any { return &c.Device.ClientID }},
	{"topic", "device.topic", "command topic; state is published retained on TOPIC/state", func(c *Config) any { return &c.Device.Topic }},
	{"status-topic", "device.status_topic", `topic for the retained {"status": "On"|"Off"} and the Last Will`, func(c *Config) any { return &c.Device.StatusTopic }},
	{"gpio", "device.gpio", "output line: GPIO21, J8p40, pin40, gpiochip0:21, sim, or auto (GPIO21 if present, else simulated)", func(c *Config) any { return &c.Device.GPIO }},
	{"prefix", "device.prefix", "topic prefix of named outputs and inputs", func(c *Config) any { return &c.Device.Prefix }},
	{"data-dir", "device.data_dir", "directory of the state file that initial=restore reads", func(c *Config) any { return &c.Device.DataDir }},
	{"persistence", "storage.persistence", "keep retained messages and persistent sessions in DATA_DIR/pimqtt.db across restarts, kill -9 and power cuts (default: when the data directory exists and is writable); --persistence=false keeps them in memory only", func(c *Config) any { return &c.Storage.Persistence }},
	{"pprof-listen", "debug.pprof_listen", "serve Go's profiler (/debug/pprof/) on this loopback address, e.g. 127.0.0.1:6060, to report slowness (off by default)", func(c *Config) any { return &c.Debug.PprofListen }},
	{"log-level", "log.level", "debug, info, warn or error", func(c *Config) any { return &c.Log.Level }},
	{"max-packet-size", "broker.limits.max_packet_size", "largest packet a connected client may send, in bytes", func(c *Config) any { return &c.Broker.Limits.MaxPacketSize }},
	{"max-connect-size", "broker.limits.max_connect_size", "largest CONNECT packet (sent before authentication), in bytes", func(c *Config) any { return &c.Broker.Limits.MaxConnectSize }},
	{"connect-timeout", "broker.limits.connect_timeout", "time a new connection has to send CONNECT", func(c *Config) any { return &c.Broker.Limits.ConnectTimeout }},
	{"max-clients", "broker.limits.max_clients", "most connected clients", func(c *Config) any { return &c.Broker.Limits.MaxClients }},
	{"max-pending", "broker.limits.max_pending", "most connections that have not sent CONNECT yet", func(c *Config) any { return &c.Broker.Limits.MaxPending }},
	{"max-session-expiry", "broker.limits.max_session_expiry", "longest a disconnected client's session is kept", func(c *Config) any { return &c.Broker.Limits.MaxSessionExpiry }},
	{"max-inflight", "broker.limits.max_inflight", "most unacknowledged QoS 1/2 messages per client", func(c *Config) any { return &c.Broker.Limits.MaxInflight }},
	{"max-queued", "broker.limits.max_queued", "most messages waiting to be written to one client", func(c *Config) any { return &c.Broker.Limits.MaxQueued }},
	{"max-keepalive", "broker.limits.max_keepalive", "longest keepalive granted; the default accepts every keepalive, 0 included; below it, MQTT 3.1.1 clients asking for more (or for 0) get CONNACK 2 and MQTT 5 clients are told the maximum", func(c *Config) any { return &c.Broker.Limits.MaxKeepAlive }},
	{"max-topic-length", "broker.limits.max_topic_length", "longest topic name or filter, in bytes", func(c *Config) any { return &c.Broker.Limits.MaxTopicLength }},
	{"max-topic-levels", "broker.limits.max_topic_levels", "most '/'-separated levels in a topic", func(c *Config) any { return &c.Broker.Limits.MaxTopicLevels }},
	{"max-user-properties", "broker.limits.max_user_properties", "most MQTT 5 user properties in one packet", func(c *Config) any { return &c.Broker.Limits.MaxUserProperties }},
}

// Bind defines every flag on fs. getenv (os.Getenv; a map's lookup in
// tests) supplies PIMQTT_PASSWORD and systemd's STATE_DIRECTORY, which is
// the default data directory when set.
func Bind(fs *pflag.FlagSet, getenv func(string) string) *Command {
	c := &Command{DefaultPath: DefaultPath, fs: fs, getenv: getenv, flags: defaults(getenv)}
	fs.StringVar(&c.configPath, "config", "", "TOML configuration file (default "+DefaultPath+" when it exists); flags override its keys")
	fs.StringVar(&c.mosquittoPath, "mosquitto-config", "", "import the broker settings of a mosquitto.conf (listeners, password_file, allow_anonymous, limits)")
	for _, b := range bindings {
		switch p := b.ptr(&c.flags).(type) {
		case *string:
			fs.StringVar(p, b.flag, *p, b.usage)
		case *bool:
			fs.BoolVar(p, b.flag, *p, b.usage)
		case *uint16:
			fs.Uint16Var(p, b.flag, *p, b.usage)
		case *uint32:
			fs.Uint32Var(p, b.flag, *p, b.usage)
		case *int:
			fs.IntVar(p, b.flag, *p, b.usage)
		case *int32:
			fs.Int32Var(p, b.flag, *p, b.usage)
		case *int64:
			fs.Int64Var(p, b.flag, *p, b.usage)
		case pflag.Value:
			fs.Var(p, b.flag, b.usage)
		default:
			panic(fmt.Sprintf("config: flag --%s: no binding for %T", b.flag, p))
		}
	}
	fs.StringArrayVar(&c.listen, "listen", []string{":1883"}, "MQTT over TCP address (repeatable)")
	fs.StringArrayVar(&c.wsListen, "ws-listen", []string{":8083"}, `MQTT over WebSocket address, any path incl. /mqtt (repeatable; "" disables)`)
	fs.StringArrayVar(&c.tlsListen, "tls-listen", nil, "MQTT over TLS address (repeatable; default :8883 when --tls-cert is given)")
	fs.StringArrayVar(&c.wssListen, "wss-listen", nil, "MQTT over WebSocket over TLS address (repeatable; default :8084 when --tls-cert is given)")
	fs.StringArrayVar(&c.wsOrigins, "ws-origin", nil, "only web pages from this origin (https://host[:port]) may use the WebSocket listeners (repeatable; default any)")
	fs.StringArrayVar(&c.httpListen, "http-listen", []string{":8080"}, `control page address (repeatable; "" disables; loopback only without a password file)`)
	fs.StringArrayVar(&c.httpsListen, "https-listen", []string{":8443"}, `control page over TLS, when --tls-cert is given (repeatable; "" disables)`)
	fs.StringArrayVar(&c.brokers, "broker", c.flags.Device.Brokers, "broker the device connects to in device mode: tcp://, mqtt://, ws://host:port/mqtt (repeatable: tried in order, the device fails over to the next)")
	c.bridge.bind(fs)
	fs.StringVar(&c.password, "password", "", "device mode: password for --broker (or env PIMQTT_PASSWORD, which stays out of ps)")
	fs.StringArrayVar(&c.outputs, "output", nil, "named output NAME=LINE[,active-low][,initial=off|on|restore]; commands on PREFIX/NAME (repeatable)")
	fs.StringArrayVar(&c.inputs, "input", nil, "named input NAME=LINE[,pull-up|pull-down][,debounce=DUR][,active-low]; state on PREFIX/NAME/state (repeatable)")
	fs.BoolVar(&c.version, "version", false, "print the version and exit")
	return c
}

// defaults is Default with the environment's say: systemd's
// StateDirectory= is where the state file belongs.
func defaults(getenv func(string) string) Config {
	cfg := Default()
	if d := getenv("STATE_DIRECTORY"); d != "" {
		cfg.Device.DataDir = d
	}
	return cfg
}

// Version says whether --version was given.
func (c *Command) Version() bool { return c.version }

// ConfigPath is the file Resolve reads: --config, else DefaultPath when it
// exists, else "".
func (c *Command) ConfigPath() string {
	if c.fs.Changed("config") {
		return c.configPath
	}
	if _, err := os.Stat(c.DefaultPath); err == nil {
		return c.DefaultPath
	}
	return ""
}

// Resolve builds the configuration once the FlagSet is parsed: defaults,
// then the mosquitto.conf (--mosquitto-config, else the file's
// mosquitto_config), then the TOML file (ConfigPath), then every flag the
// user set. A list flag replaces the file's list (--output the file's
// [[output]]s; --listen and --ws-listen its listeners of that kind). The
// device's password comes from --password, else env PIMQTT_PASSWORD, else
// device.password_file (read here, in device mode only).
func (c *Command) Resolve() (Config, error) {
	if c.fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q", c.fs.Arg(0))
	}
	cfg, err := load(defaults(c.getenv), c.ConfigPath(), c.mosquittoPath, c.fs.Changed("mosquitto-config"))
	if err != nil {
		return Config{}, err
	}
	changed := c.fs.Changed
	for _, b := range bindings {
		if !changed(b.flag) {
			continue
		}
		dst, src := b.ptr(&cfg), b.ptr(&c.flags)
		if err := copyValue(dst, src); err != nil {
			return Config{}, err
		}
		cfg.origins.set(b.key, origin{flag: "--" + b.flag})
	}
	if changed("broker") {
		cfg.Device.Brokers = slices.Clone(c.brokers)
		cfg.origins.drop("device.broker")
		cfg.origins.set("device.broker", origin{flag: "--broker"})
	}
	if err := c.bridge.apply(&cfg, changed); err != nil {
		return Config{}, err
	}
	c.applyListeners(&cfg)
	for flag, dst := range map[string]*[]string{"http-listen": &cfg.HTTP.Listen, "https-listen": &cfg.HTTP.HTTPSListen} {
		if changed(flag) {
			*dst = nil
			for _, a := range map[string][]string{"http-listen": c.httpListen, "https-listen": c.httpsListen}[flag] {
				if a != "" {
					*dst = append(*dst, a)
				}
			}
			cfg.origins.set("http."+strings.ReplaceAll(strings.TrimPrefix(flag, "http-"), "-", "_"), origin{flag: "--" + flag})
		}
	}
	if changed("ws-origin") {
		cfg.Broker.WSOrigins = c.wsOrigins
		cfg.origins.set("broker.ws_origins", origin{flag: "--ws-origin"})
	}
	if changed("output") {
		cfg.Outputs = nil
		cfg.origins.drop("output")
		for _, s := range c.outputs {
			o, err := ParseOutputFlag(s)
			if err != nil {
				return Config{}, fmt.Errorf("--output: %w", err)
			}
			cfg.origins.set(fmt.Sprintf("output[%d]", len(cfg.Outputs)), origin{flag: "--output " + s})
			cfg.Outputs = append(cfg.Outputs, o)
		}
	}
	if changed("input") {
		cfg.Inputs = nil
		cfg.origins.drop("input")
		for _, s := range c.inputs {
			in, err := ParseInputFlag(s)
			if err != nil {
				return Config{}, fmt.Errorf("--input: %w", err)
			}
			cfg.origins.set(fmt.Sprintf("input[%d]", len(cfg.Inputs)), origin{flag: "--input " + s})
			cfg.Inputs = append(cfg.Inputs, in)
		}
	}
	if changed("topic") || changed("gpio") {
		cfg.Device.shorthandSet = true
	}
	if err := c.setPassword(&cfg); err != nil {
		return Config{}, err
	}
	if err := c.setBridgePasswords(&cfg); err != nil {
		return Config{}, err
	}
	cfg.addTLSListeners()
	return cfg, cfg.validate()
}

// copyValue sets *dst to *src for two pointers of one type.
func copyValue(dst, src any) error {
	switch d := dst.(type) {
	case *string:
		*d = *src.(*string)
	case *bool:
		*d = *src.(*bool)
	case *uint16:
		*d = *src.(*uint16)
	case *uint32:
		*d = *src.(*uint32)
	case *int:
		*d = *src.(*int)
	case *int32:
		*d = *src.(*int32)
	case *int64:
		*d = *src.(*int64)
	case *Mode:
		*d = *src.(*Mode)
	case *LogLevel:
		*d = *src.(*LogLevel)
	case *Duration:
		*d = *src.(*Duration)
	default:
		return fmt.Errorf("config: no copy for %T", dst)
	}
	return nil
}

// applyListeners puts --listen and --ws-listen in place of the listeners
// of their kind; "" stands for none.
func (c *Command) applyListeners(cfg *Config) {
	byKind := map[ListenerKind][]string{}
	if c.fs.Changed("listen") {
		byKind[KindMQTT] = c.listen
	}
	if c.fs.Changed("ws-listen") {
		byKind[KindWS] = c.wsListen
	}
	if c.fs.Changed("tls-listen") {
		byKind[KindMQTTS] = c.tlsListen
	}
	if c.fs.Changed("wss-listen") {
		byKind[KindWSS] = c.wssListen
	}
	if len(byKind) == 0 {
		return
	}
	var out []Listener
	moves := map[string]string{}
	for i, l := range cfg.Broker.Listeners {
		from := fmt.Sprintf("broker.listener[%d]", i)
		if _, replaced := byKind[l.Kind]; replaced {
			cfg.origins.drop(from)
			continue
		}
		moves[from] = fmt.Sprintf("broker.listener[%d]", len(out))
		out = append(out, l)
	}
	cfg.origins.rename(moves)
	for _, kind := range []ListenerKind{KindMQTT, KindWS, KindMQTTS, KindWSS} {
		flag := map[ListenerKind]string{KindMQTT: "--listen", KindWS: "--ws-listen", KindMQTTS: "--tls-listen", KindWSS: "--wss-listen"}[kind]
		for _, addr := range byKind[kind] {
			if addr == "" {
				continue
			}
			cfg.origins.set(fmt.Sprintf("broker.listener[%d]", len(out)), origin{flag: flag + " " + addr})
			out = append(out, Listener{Address: addr, Kind: kind})
		}
	}
	if out == nil {
		out = []Listener{}
	}
	cfg.Broker.Listeners = out
}

// setPassword sets the device's password: --password, else
// PIMQTT_PASSWORD, else the first line of device.password_file.
func (c *Command) setPassword(cfg *Config) error {
	switch {
	case c.fs.Changed("password"):
		cfg.Device.Password = c.password
		return nil
	case c.getenv("PIMQTT_PASSWORD") != "":
		cfg.Device.Password = c.getenv("PIMQTT_PASSWORD")
		return nil
	case cfg.Device.PasswordFile == "" || cfg.Mode != ModeDevice:
		return nil
	}
	p, err := ReadPasswordFile(cfg.Device.PasswordFile)
	if err != nil {
		return cfg.Wrap("device.password_file", err)
	}
	cfg.Device.Password = p
	return nil
}

// ReadPasswordFile returns the first line of a file holding a password,
// without its line ending.
func ReadPasswordFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("%w: put the device's password on the first line of %s (chmod 600)", err, path)
		}
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return "", fmt.Errorf("%s: %w", path, err)
		}
		return "", fmt.Errorf("%s is empty: put the device's password on its first line", path)
	}
	return strings.TrimRight(sc.Text(), "\r"), nil
}

// ParseOutputFlag parses an --output flag,
// "NAME=LINE[,active-low][,initial=off|on|restore]", e.g. "led=GPIO21",
// "relay=pin11,active-low,initial=restore": the [[output]] table on one
// line. Options are case-insensitive, in any order, each at most once.
// LINE is checked by the gpio layer when the line is opened.
func ParseOutputFlag(s string) (Output, error) {
	const syntax = "want NAME=LINE[,active-low][,initial=off|on|restore]"
	name, line, opts, err := splitLineFlag(s, syntax)
	if err != nil {
		return Output{}, err
	}
	o := Output{Name: name, Line: line}
	fail := func(why string) (Output, error) { return Output{}, fmt.Errorf("%q: %s; %s", s, why, syntax) }
	seen := map[string]bool{}
	for _, opt := range opts {
		key, val, hasVal := strings.Cut(opt, "=")
		key, val = strings.ToLower(strings.TrimSpace(key)), strings.ToLower(strings.TrimSpace(val))
		if seen[key] {
			return fail("option " + key + " given twice")
		}
		seen[key] = true
		switch key {
		case "active-low":
			if hasVal {
				return fail(fmt.Sprintf("option %q takes no value", opt))
			}
			o.ActiveLow = true
		case "initial":
			if err := o.Initial.UnmarshalText([]byte(val)); err != nil {
				return fail("initial=" + val + ": want initial=off, initial=on or initial=restore")
			}
		case "pull-up", "pull-down", "debounce":
			return fail("option " + key + " is for inputs; an output drives its line")
		case "":
			return fail("empty option (two commas, or a trailing comma)")
		default:
			return fail(fmt.Sprintf("unknown option %q", opt))
		}
	}
	return o, nil
}

// ParseInputFlag parses an --input flag,
// "NAME=LINE[,pull-up|pull-down][,debounce=DURATION][,active-low]", e.g.
// "button=GPIO17,pull-up,debounce=10ms,active-low": the [[input]] table on
// one line.
func ParseInputFlag(s string) (Input, error) {
	const syntax = "want NAME=LINE[,pull-up|pull-down][,debounce=DURATION][,active-low]"
	name, line, opts, err := splitLineFlag(s, syntax)
	if err != nil {
		return Input{}, err
	}
	in := Input{Name: name, Line: line}
	fail := func(why string) (Input, error) { return Input{}, fmt.Errorf("%q: %s; %s", s, why, syntax) }
	seen := map[string]bool{}
	for _, opt := range opts {
		key, val, hasVal := strings.Cut(opt, "=")
		key, val = strings.ToLower(strings.TrimSpace(key)), strings.TrimSpace(val)
		if seen[key] {
			return fail("option " + key + " given twice")
		}
		seen[key] = true
		switch key {
		case "active-low", "pull-up", "pull-down":
			if hasVal {
				return fail(fmt.Sprintf("option %q takes no value", opt))
			}
			switch {
			case key == "active-low":
				in.ActiveLow = true
			case in.Pull != PullNone:
				return fail("pull-up and pull-down exclude each other: give one")
			case key == "pull-up":
				in.Pull = PullUp
			default:
				in.Pull = PullDown
			}
		case "debounce":
			d, err := time.ParseDuration(val)
			if err != nil || d < 0 {
				return fail("debounce=" + val + ": want a duration such as 10ms or 500us")
			}
			in.Debounce = Duration(d)
		case "initial":
			return fail("option initial is for outputs; an input's value comes from outside")
		case "":
			return fail("empty option (two commas, or a trailing comma)")
		default:
			return fail(fmt.Sprintf("unknown option %q", opt))
		}
	}
	return in, nil
}

// splitLineFlag splits "NAME=LINE,OPT,..." and checks NAME.
func splitLineFlag(s, syntax string) (name, line string, opts []string, err error) {
	name, rest, ok := strings.Cut(s, "=")
	name = strings.TrimSpace(name)
	parts := strings.Split(rest, ",")
	line = strings.TrimSpace(parts[0])
	switch {
	case !ok:
		err = errors.New(`no "=" between NAME and LINE`)
	case !validName(name):
		err = fmt.Errorf("NAME %q: use letters, digits, _ and - (it becomes part of MQTT topics)", name)
	case line == "":
		err = errors.New("empty LINE, e.g. GPIO17, pin11, gpiochip0:17 or sim")
	}
	if err != nil {
		return "", "", nil, fmt.Errorf("%q: %w; %s", s, err, syntax)
	}
	return name, line, parts[1:], nil
}
