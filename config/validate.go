package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Validate reports every value that is wrong on its own or with the
// others, each as an *Error that says where the value came from (see
// [Config.Wrap]). Load and Resolve call it; a part that knows more (gpio,
// about line specs) adds its findings with Wrap.
func (c Config) Validate() error { return c.validate() }

func (c Config) validate() error {
	var errs []error
	bad := func(key string, format string, args ...any) {
		errs = append(errs, c.Wrap(key, fmt.Errorf(format, args...)))
	}

	seen := map[string]string{}
	for i, l := range c.Broker.Listeners {
		key := fmt.Sprintf("broker.listener[%d]", i)
		_, port, err := net.SplitHostPort(l.Address)
		if err != nil {
			bad(key+".address", "%q is not HOST:PORT (e.g. \":1883\", \"127.0.0.1:1883\", \"[::1]:8083\")", l.Address)
			continue
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
			bad(key+".address", "%q: the port %q is not a number from 0 to 65535", l.Address, port)
			continue
		}
		id := l.Kind.String() + " " + l.Address
		if port == "0" {
			continue // the kernel picks a free port for each
		}
		if prev, dup := seen[l.Address]; dup {
			bad(key+".address", "%q is also the address of %s", l.Address, prev)
			continue
		}
		seen[l.Address] = key + " (" + id + ")"
	}
	for i, l := range c.Broker.Listeners {
		key := fmt.Sprintf("broker.listener[%d]", i)
		cert, keyFile := c.ListenerCert(l)
		switch {
		case l.Kind.TLS() && (cert == "" || keyFile == ""):
			bad(key+".kind", "%s needs a certificate and its key: set cert_file and key_file here or in [broker.tls] (--tls-cert, --tls-key; make them with pimqtt cert)", l.Kind)
		case !l.Kind.TLS() && (l.CertFile != "" || l.KeyFile != "" || l.ClientCAFile != ""):
			bad(key+".cert_file", "a certificate on a %s listener, which is not TLS: use kind = \"mqtts\" or \"wss\"", l.Kind)
		}
	}
	for key, addrs := range map[string][]string{"http.listen": c.HTTP.Listen, "http.https_listen": c.HTTP.HTTPSListen} {
		for i, a := range addrs {
			if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
				bad(fmt.Sprintf("%s[%d]", key, i), "%q is not HOST:PORT (e.g. \":8080\", \"127.0.0.1:8080\")", a)
			}
		}
	}
	if c.HTTP.URL != "" {
		if u, err := url.Parse(c.HTTP.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("http.url", "%q: want the page's address as a phone reaches it, e.g. \"http://raspberrypi.local:8080/\"", c.HTTP.URL)
		}
	}
	if a := c.Debug.PprofListen; a != "" {
		if err := loopbackAddress(a); err != nil {
			bad("debug.pprof_listen", "%q: %v", a, err)
		}
	}
	if c.HomeAssistant.Prefix == "" || strings.ContainsAny(c.HomeAssistant.Prefix, "+#") {
		bad("homeassistant.prefix", "%q: want a topic prefix without wildcards, e.g. \"homeassistant\"", c.HomeAssistant.Prefix)
	}
	if c.Device.TelemetryInterval < 0 || (c.Device.TelemetryInterval > 0 && c.Device.TelemetryInterval.D() < time.Second) {
		bad("device.telemetry_interval", "%v: want 0 (off) or at least 1s", c.Device.TelemetryInterval)
	}
	if c.Storage.QueueExpiry < 0 {
		bad("storage.queue_expiry", "%v: want 0 (messages kept as long as their session) or more", c.Storage.QueueExpiry)
	}
	if (c.Broker.TLS.CertFile == "") != (c.Broker.TLS.KeyFile == "") {
		bad("broker.tls.cert_file", "the certificate and its key go together: set both cert_file and key_file (--tls-cert, --tls-key)")
	}
	for i, o := range c.Broker.WSOrigins {
		if u, err := url.Parse(o); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			bad(fmt.Sprintf("broker.ws_origins[%d]", i), "%q: want an origin such as \"https://pi.local:8080\" (scheme and host, no path)", o)
		}
	}

	lim, lk := c.Broker.Limits, "broker.limits."
	if lim.MaxPacketSize < 64 {
		bad(lk+"max_packet_size", "%d is below the minimum of 64 bytes", lim.MaxPacketSize)
	}
	if lim.MaxConnectSize < 64 || lim.MaxConnectSize > lim.MaxPacketSize {
		bad(lk+"max_connect_size", "%d: want 64 bytes up to max_packet_size (%d)", lim.MaxConnectSize, lim.MaxPacketSize)
	}
	if lim.ConnectTimeout <= 0 {
		bad(lk+"connect_timeout", "%v: want a positive duration, e.g. \"10s\"", lim.ConnectTimeout)
	}
	if lim.MaxClients < 1 {
		bad(lk+"max_clients", "%d: want at least 1", lim.MaxClients)
	}
	if lim.MaxPending < 1 {
		bad(lk+"max_pending", "%d: want at least 1", lim.MaxPending)
	}
	if d := lim.MaxSessionExpiry.D(); d < 0 || d/time.Second > 1<<32-1 {
		bad(lk+"max_session_expiry", "%v: want 0 up to 136 years (MQTT counts it in 32 bits of seconds)", d)
	}
	if lim.MaxInflight < 1 {
		bad(lk+"max_inflight", "%d: want at least 1", lim.MaxInflight)
	}
	if lim.MaxQueued < 1 {
		bad(lk+"max_queued", "%d: want at least 1", lim.MaxQueued)
	}
	if d := lim.MaxKeepAlive.D(); d < time.Second || d > 65535*time.Second {
		bad(lk+"max_keepalive", "%v: want 1s up to 65535s (65535s accepts every keepalive)", d)
	}
	if lim.MaxTopicLength < 1 {
		bad(lk+"max_topic_length", "%d: want at least 1", lim.MaxTopicLength)
	}
	if lim.MaxTopicLevels < 1 {
		bad(lk+"max_topic_levels", "%d: want at least 1", lim.MaxTopicLevels)
	}
	if lim.MaxUserProperties < 0 {
		bad(lk+"max_user_properties", "%d: want 0 or more", lim.MaxUserProperties)
	}

	if c.Mode == ModeDevice && len(c.Device.Brokers) == 0 {
		bad("device.broker", "empty: device mode needs the URL of a broker, e.g. [\"tcp://192.168.1.20:1883\"]")
	}
	for i, b := range c.Device.Brokers {
		if u, err := url.Parse(b); err != nil || u.Scheme == "" || u.Host == "" {
			bad(fmt.Sprintf("device.broker[%d]", i), "%q is not a broker URL such as tcp://127.0.0.1:1883 or ws://host:8083/mqtt", b)
		}
	}

	bridgeNames := map[string]bool{}
	for i, br := range c.Bridges {
		key := fmt.Sprintf("bridge[%d]", i)
		switch {
		case br.Name == "":
			bad(key+".name", "empty: a bridge needs a name (its state is on $SYS/broker/connection/NAME/state)")
		case strings.ContainsAny(br.Name, "/+#\x00") || !utf8.ValidString(br.Name):
			bad(key+".name", "%q: a name is one topic level, without / + # or NUL", br.Name)
		case bridgeNames[br.Name]:
			bad(key+".name", "%q is the name of another bridge", br.Name)
		}
		bridgeNames[br.Name] = true
		if c.Mode == ModeDevice {
			bad(key, "bridges run in the embedded broker: mode all or broker, not device")
		}
		if len(br.Addresses) == 0 {
			bad(key+".address", "empty: a bridge needs the URL of its remote broker, e.g. [\"tcp://nats1.lan:1883\"]")
		}
		for j, a := range br.Addresses {
			if u, err := url.Parse(a); err != nil || u.Scheme == "" || u.Host == "" {
				bad(fmt.Sprintf("%s.address[%d]", key, j), "%q is not a broker URL such as tcp://192.168.1.30:1883 or mqtts://broker.example:8883", a)
			}
		}
		if len(br.Topics) == 0 {
			bad(key+".topic", "empty: a bridge needs at least one topic line, e.g. [\"raspberry/# both 1\"]")
		}
		if br.Password != "" && br.Username == "" {
			bad(key+".username", "empty, but a password is set: MQTT sends a password only with a user name")
		}
		if br.QueueLimit < 0 {
			bad(key+".queue_limit", "%d: want 0 (the default, 1000) or more", br.QueueLimit)
		}
	}

	// Named lines publish on PREFIX/NAME/state: a name may be used once,
	// across outputs and inputs, and not as "led" beside the shorthand.
	names := map[string]string{}
	if c.UseShorthand() {
		names["led"] = "the one-LED shorthand ([device] topic and gpio)"
	}
	claim := func(key, name string) {
		switch {
		case name == "":
			bad(key+".name", "missing: every line needs a name (letters, digits, _ and -)")
		case !validName(name):
			bad(key+".name", "%q: use letters, digits, _ and - (it becomes part of MQTT topics)", name)
		default:
			if prev, dup := names[name]; dup {
				bad(key+".name", "%q is also the name of %s", name, prev)
				return
			}
			names[name] = key
		}
	}
	restore := false
	for i, o := range c.Outputs {
		key := fmt.Sprintf("output[%d]", i)
		claim(key, o.Name)
		if o.Line == "" {
			bad(key+".line", "missing: want a line such as \"GPIO21\", \"J8p40\", \"gpiochip0:21\" or \"sim\"")
		}
		restore = restore || o.Initial == InitialRestore
	}
	for i, in := range c.Inputs {
		key := fmt.Sprintf("input[%d]", i)
		claim(key, in.Name)
		switch in.Line {
		case "":
			bad(key+".line", "missing: want a line such as \"GPIO17\", \"pin11\", \"gpiochip0:17\" or \"sim\"")
		case "auto":
			bad(key+".line", "\"auto\" is for outputs: name the input's line, e.g. \"GPIO17\"")
		}
		if in.Debounce < 0 {
			bad(key+".debounce", "%v: want 0 (none) or more", in.Debounce)
		}
	}
	if restore && c.Device.DataDir == "" {
		bad("device.data_dir", "empty, but an output has initial = \"restore\", which keeps its state there")
	}
	sortErrors(errs)
	return errors.Join(errs...)
}

// validName accepts [A-Za-z0-9_-]+, as the --output and --input flags do.
func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-':
		default:
			return false
		}
	}
	return true
}

// loopbackAddress checks that addr is HOST:PORT on the loopback
// interface: the profiler shows memory contents (passwords included), so
// it is never served to the network.
func loopbackAddress(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("not HOST:PORT (e.g. \"127.0.0.1:6060\")")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
		return fmt.Errorf("the port %q is not a number from 0 to 65535", port)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("loopback only (127.0.0.1, ::1 or localhost): the profiler shows memory contents; from another machine use ssh -L 6060:127.0.0.1:6060")
	}
	return nil
}
