package config

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Notice is what importing a mosquitto.conf has to say about one of its
// lines: a setting pimqtt ignores, or maps in its own way.
type Notice struct {
	File string
	Line int
	Key  string
	Text string
}

func (n Notice) String() string {
	if n.Line == 0 {
		return fmt.Sprintf("%s: %s: %s", n.File, n.Key, n.Text)
	}
	return fmt.Sprintf("%s:%d: %s: %s", n.File, n.Line, n.Key, n.Text)
}

// ImportMosquitto reads the broker side of a mosquitto 2.0 configuration
// (and the files of its include_dir) into pimqtt's [broker] table, over
// pimqtt's defaults (its connection blocks become [[bridge]]s only through
// [Command.Resolve]). Settings of features pimqtt does not have yet come
// back as notices, one each; settings it could not ignore without serving
// clients less safely than mosquitto would (TLS, plugins) are errors. The
// mapping is the table in the package documentation.
func ImportMosquitto(path string) (Broker, []Notice, error) {
	st := Default().Storage
	var bridges []Bridge
	return importMosquitto(path, Default().Broker, &st, &bridges, &origins{})
}

// mosqLine is one setting of a mosquitto.conf.
type mosqLine struct {
	file string
	line int
	key  string
	args string
}

func (l mosqLine) fail(format string, args ...any) error {
	return &Error{File: l.file, Line: l.line, Key: l.key, Err: fmt.Errorf(format, args...)}
}

// mosqSecurity is what mosquitto calls a listener's security options, the
// ones per_listener_settings makes per listener.
type mosqSecurity struct {
	allowAnonymous *bool
	passwordFile   *string
	aclFile        *string
	at             map[string]mosqLine // setting → where
}

func (s *mosqSecurity) note(l mosqLine) {
	if s.at == nil {
		s.at = map[string]mosqLine{}
	}
	s.at[l.key] = l
}

func (s mosqSecurity) describe() string {
	anon, pw := "allow_anonymous false", "no password_file"
	if s.allowAnonymous != nil && *s.allowAnonymous {
		anon = "allow_anonymous true"
	}
	if s.passwordFile != nil {
		pw = "password_file " + *s.passwordFile
	}
	if s.aclFile != nil {
		return anon + ", " + pw + ", acl_file " + *s.aclFile
	}
	return anon + ", " + pw
}

func (s mosqSecurity) same(o mosqSecurity) bool {
	return s.describe() == o.describe()
}

// mosqListener is a listener of a mosquitto.conf; the default listener
// (port, bind_address) is one too.
type mosqListener struct {
	def                bool
	port               int
	addr               string
	websockets         bool
	at                 mosqLine
	maxConnections     int // -1 = unlimited, mosquitto's default
	maxConnectionsLine mosqLine
	// TLS: certfile and keyfile make it a TLS listener; cafile is the
	// client CA when require_certificate is true.
	certfile, keyfile, cafile string
	requireCert               bool
	tlsAt                     mosqLine // the first TLS setting
	security                  mosqSecurity
}

func (l mosqListener) address() string {
	return net.JoinHostPort(l.addr, strconv.Itoa(l.port))
}

func (l mosqListener) name() string {
	if l.def {
		return "the default listener (port " + strconv.Itoa(l.port) + ")"
	}
	return "listener " + strings.TrimSpace(l.at.args)
}

// Keys of mosquitto 2.0 that pimqtt does not act on, with what it says.
var (
	mosqTLSUnsupported = map[string]string{
		"capath":                   "not supported: pimqtt takes one CA file (cafile); put the CA certificates in one PEM file",
		"crlfile":                  "not supported: revoked client certificates would be accepted",
		"psk_hint":                 "pre-shared-key TLS is not supported: use certificates (pimqtt cert)",
		"psk_file":                 "pre-shared-key TLS is not supported: use certificates (pimqtt cert)",
		"use_identity_as_username": "not supported: clients would need a password instead of their certificate",
		"use_subject_as_username":  "not supported: clients would need a password instead of their certificate",
		"tls_engine":               "not supported: pimqtt reads the key from keyfile",
		"tls_engine_kpass_sha1":    "not supported: pimqtt reads the key from keyfile",
		"tls_keyform":              "not supported: pimqtt reads a PEM key from keyfile",
	}
	mosqTLSIgnored = map[string]string{
		"tls_version":    "ignored: pimqtt accepts TLS 1.2 and 1.3",
		"ciphers":        "ignored: pimqtt uses Go's TLS cipher suites",
		"ciphers_tls1.3": "ignored: pimqtt uses Go's TLS cipher suites",
		"dhparamfile":    "ignored: pimqtt uses elliptic-curve key exchange",
	}
	mosqUnsafe = map[string]string{
		"auth_plugin":                    "authentication plugins are not supported: pimqtt would check only password_file and allow_anonymous",
		"plugin":                         "plugins are not supported: pimqtt would check only password_file and allow_anonymous",
		"auth_plugin_deny_special_chars": "authentication plugins are not supported",
		"bind_interface":                 "not supported: pimqtt would listen on every interface, not only this one; use listener PORT ADDRESS",
		"mount_point":                    "not supported: clients of this listener would see every topic instead of those under the mount point",
		"use_username_as_clientid":       "not supported yet: a client could take over another user's session by its client id",
	}
	mosqIgnored = map[string]string{
		"persistence_file":           "ignored: pimqtt keeps its own store, pimqtt.db in persistence_location (storage.file); mosquitto's file is neither read nor written",
		"autosave_interval":          "ignored: pimqtt writes each change as it happens",
		"autosave_on_changes":        "ignored: pimqtt writes each change as it happens",
		"max_inflight_bytes":         "not supported, ignored (pimqtt bounds messages: max_inflight)",
		"max_queued_bytes":           "not supported, ignored (pimqtt bounds messages: max_queued)",
		"memory_limit":               "not supported, ignored",
		"message_size_limit":         "not supported, ignored (pimqtt bounds whole packets: max_packet_size)",
		"max_qos":                    "not supported, ignored: every QoS is accepted",
		"max_topic_alias":            "ignored: pimqtt allows no topic aliases",
		"retain_available":           "not supported, ignored: retained messages are kept",
		"allow_zero_length_clientid": "not supported, ignored: pimqtt gives such clients an id",
		"auto_id_prefix":             "not supported, ignored",
		"check_retain_source":        "not supported, ignored",
		"clientid_prefixes":          "not supported, ignored: clients may use any id",
		"queue_qos0_messages":        "not supported, ignored",
		"set_tcp_nodelay":            "ignored: pimqtt always sends without delay",
		"upgrade_outgoing_qos":       "not supported, ignored",
		"allow_duplicate_messages":   "ignored",
		"log_dest":                   "ignored: pimqtt logs to standard error ([log] level)",
		"log_facility":               "ignored: pimqtt logs to standard error ([log] level)",
		"log_timestamp":              "ignored: pimqtt logs to standard error ([log] level)",
		"log_timestamp_format":       "ignored: pimqtt logs to standard error ([log] level)",
		"log_type":                   "ignored: pimqtt logs to standard error ([log] level)",
		"connection_messages":        "ignored: pimqtt logs connections at [log] level debug",
		"websockets_log_level":       "ignored",
		"websockets_headers_size":    "ignored",
		"pid_file":                   "ignored: pimqtt writes no pid file",
		"user":                       "ignored: pimqtt runs as the user that starts it (systemd: User=)",
		"sys_interval":               "ignored: pimqtt's $SYS topics are not mosquitto's",
		"http_dir":                   "not supported yet, ignored: the WebSocket listener serves no files",
		"socket_domain":              "ignored: pimqtt listens on IPv4 and IPv6 as the address says",
	}
	mosqBridge = []string{"address", "addresses", "topic", "cleansession", "keepalive_interval", "idle_timeout",
		"notifications", "notifications_local_only", "notification_topic", "restart_timeout", "round_robin",
		"start_type", "threshold", "try_private", "clientid", "local_cleansession", "local_clientid",
		"local_password", "local_username", "remote_clientid", "remote_password", "remote_username"}
	// mosqPerListener are the security settings per_listener_settings
	// makes per listener (mosquitto.conf(5)).
	mosqPerListener = []string{"password_file", "acl_file", "psk_file", "allow_anonymous",
		"allow_zero_length_clientid", "auth_plugin", "auto_id_prefix", "plugin"}
)

// readMosquitto reads the settings of a mosquitto.conf, those of its
// include_dir files in their place, as mosquitto does: lines whose first
// character (after blanks) is # are comments; a key and its value are
// separated by a space.
func readMosquitto(path string, level int, notices *[]Notice) ([]mosqLine, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("mosquitto config: %w", err)
	}
	defer f.Close()
	var out []mosqLine
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == '#' {
			continue
		}
		key, args, _ := strings.Cut(text, " ")
		l := mosqLine{file: path, line: n, key: key, args: strings.TrimSpace(args)}
		if key != "include_dir" {
			out = append(out, l)
			continue
		}
		if level > 0 {
			// mosquitto 2.0 reads include_dir in the main file only.
			*notices = append(*notices, Notice{path, n, key, "in an included file: mosquitto ignores it, so does pimqtt"})
			continue
		}
		files, err := includeFiles(l)
		if err != nil {
			return nil, err
		}
		for _, inc := range files {
			more, err := readMosquitto(inc, level+1, notices)
			if err != nil {
				return nil, err
			}
			out = append(out, more...)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("mosquitto config %s: %w", path, err)
	}
	return out, nil
}

// includeFiles are the *.conf files of an include_dir in mosquitto's
// order: by letter regardless of case, then upper case first (A.conf,
// a.conf, B.conf).
func includeFiles(l mosqLine) ([]string, error) {
	if l.args == "" {
		return nil, l.fail("empty: want a directory")
	}
	entries, err := os.ReadDir(l.args)
	if err != nil {
		return nil, l.fail("%w", err)
	}
	var files []string
	for _, e := range entries {
		if n := e.Name(); len(n) > 5 && strings.HasSuffix(n, ".conf") {
			files = append(files, filepath.Join(l.args, n))
		}
	}
	slices.SortFunc(files, mosquittoOrder)
	return files, nil
}

// mosquittoOrder is mosquitto's include_dir order (conf.c's scmp_p): bytes
// compared as upper case, ties broken by the bytes themselves.
func mosquittoOrder(a, b string) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if d := int(upper(a[i])) - int(upper(b[i])); d != 0 {
			return d
		}
		if d := int(a[i]) - int(b[i]); d != 0 {
			return d
		}
	}
	return len(a) - len(b)
}

func upper(c byte) byte {
	if c >= 'a' && c <= 'z' {
		return c - 'a' + 'A'
	}
	return c
}

// importMosquitto applies a mosquitto.conf to base, and its persistence
// settings to st, recording in o where each value came from.
func importMosquitto(path string, base Broker, st *Storage, bridges *[]Bridge, o *origins) (Broker, []Notice, error) {
	var notices []Notice
	lines, err := readMosquitto(path, 0, &notices)
	if err != nil {
		return Broker{}, nil, err
	}
	notice := func(l mosqLine, text string) { notices = append(notices, Notice{l.file, l.line, l.key, text}) }

	perListener := false
	var securitySeen *mosqLine
	def := &mosqListener{def: true, port: 1883, maxConnections: -1}
	defUsed := false
	var listeners []*mosqListener
	cur := def // the listener that listener-scoped settings apply to
	var global mosqSecurity
	bridge := ""
	var errs []error
	fail := func(err error) { errs = append(errs, err) }
	limits := base.Limits
	setBool := func(l mosqLine) (bool, bool) {
		switch l.args {
		case "true":
			return true, true
		case "false":
			return false, true
		case "":
			fail(l.fail("empty: want true or false"))
		default:
			fail(l.fail("%q: want true or false", l.args))
		}
		return false, false
	}
	setInt := func(l mosqLine) (int, bool) {
		n, err := strconv.Atoi(l.args)
		if err != nil {
			fail(l.fail("%q: want a whole number", l.args))
			return 0, false
		}
		return n, true
	}
	security := func() *mosqSecurity {
		if perListener {
			return &cur.security
		}
		return &global
	}

	for _, l := range lines {
		if slices.Contains(mosqPerListener, l.key) && securitySeen == nil {
			securitySeen = &l
		}
		switch {
		case l.key == "per_listener_settings":
			v, ok := setBool(l)
			if !ok {
				continue
			}
			if securitySeen != nil && securitySeen.key != l.key {
				fail(l.fail("must come before every security setting (mosquitto refuses it after %s at %s:%d)",
					securitySeen.key, securitySeen.file, securitySeen.line))
				continue
			}
			perListener = v
		case l.key == "listener":
			f := strings.Fields(l.args)
			if len(f) == 0 || len(f) > 2 {
				fail(l.fail("%q: want PORT or PORT ADDRESS", l.args))
				continue
			}
			port, err := strconv.Atoi(f[0])
			switch {
			case err != nil || port < 0 || port > 65535:
				fail(l.fail("port %q: want a number from 1 to 65535", f[0]))
				continue
			case port == 0:
				fail(l.fail("unix sockets (listener 0 PATH) are not supported: use a port"))
				continue
			}
			nl := &mosqListener{port: port, at: l, maxConnections: -1}
			if len(f) == 2 {
				nl.addr = f[1]
			}
			listeners = append(listeners, nl)
			cur = nl
		case l.key == "port":
			port, ok := setInt(l)
			if ok && (port < 1 || port > 65535) {
				fail(l.fail("%d: want a number from 1 to 65535", port))
				continue
			}
			def.port, def.at, defUsed = port, l, true
			notice(l, "deprecated in mosquitto: imported as the listener "+def.address())
		case l.key == "bind_address":
			if l.args == "" {
				fail(l.fail("empty: want an address"))
				continue
			}
			def.addr, defUsed = l.args, true
			if def.at.key == "" {
				def.at = l
			}
		case l.key == "protocol":
			switch l.args {
			case "mqtt":
				cur.websockets = false
			case "websockets":
				cur.websockets = true
			default:
				fail(l.fail("%q: want mqtt or websockets", l.args))
			}
		case l.key == "allow_anonymous":
			if v, ok := setBool(l); ok {
				s := security()
				s.allowAnonymous = &v
				s.note(l)
			}
		case l.key == "password_file":
			if l.args == "" {
				fail(l.fail("empty: want a file"))
				continue
			}
			s := security()
			pw := l.args
			s.passwordFile = &pw
			s.note(l)
		case l.key == "acl_file":
			if l.args == "" {
				fail(l.fail("empty: want a file"))
				continue
			}
			s := security()
			acl := l.args
			s.aclFile = &acl
			s.note(l)
		case l.key == "certfile" || l.key == "keyfile" || l.key == "cafile":
			if l.args == "" {
				fail(l.fail("empty: want a file"))
				continue
			}
			if cur.tlsAt.key == "" {
				cur.tlsAt = l
			}
			*map[string]*string{"certfile": &cur.certfile, "keyfile": &cur.keyfile, "cafile": &cur.cafile}[l.key] = l.args
		case l.key == "require_certificate":
			if v, ok := setBool(l); ok {
				cur.requireCert = v
			}
		case mosqTLSUnsupported[l.key] != "":
			fail(l.fail("%s", mosqTLSUnsupported[l.key]))
		case mosqTLSIgnored[l.key] != "":
			notice(l, mosqTLSIgnored[l.key])
		case l.key == "max_keepalive":
			n, ok := setInt(l)
			switch {
			case !ok:
			case n < 10 || n > 65535:
				fail(l.fail("%d: want 10 to 65535 seconds (mosquitto's range)", n))
			default:
				limits.MaxKeepAlive = Duration(time.Duration(n) * time.Second)
				o.set("broker.limits.max_keepalive", origin{file: l.file, line: l.line, name: l.key})
			}
		case l.key == "max_packet_size":
			n, ok := setInt(l)
			switch {
			case !ok:
			case n == 0:
				notice(l, fmt.Sprintf("0 (no limit): pimqtt keeps its limit of %d bytes", limits.MaxPacketSize))
			case n < 20 || n > 1<<28:
				fail(l.fail("%d: want 20 to 268435456 bytes (mosquitto's range)", n))
			case n < 64:
				fail(l.fail("%d: pimqtt needs at least 64 bytes", n))
			default:
				limits.MaxPacketSize = uint32(n)
				// mosquitto applies the limit to CONNECT too.
				limits.MaxConnectSize = min(limits.MaxConnectSize, uint32(n))
				o.set("broker.limits.max_packet_size", origin{file: l.file, line: l.line, name: l.key})
			}
		case l.key == "max_connections":
			if n, ok := setInt(l); ok {
				if n < -1 || n == 0 {
					fail(l.fail("%d: want -1 (unlimited) or a positive number", n))
					continue
				}
				cur.maxConnections, cur.maxConnectionsLine = n, l
			}
		case l.key == "max_inflight_messages":
			n, ok := setInt(l)
			switch {
			case !ok:
			case n == 0:
				notice(l, fmt.Sprintf("0 (no limit): pimqtt keeps its limit of %d", limits.MaxInflight))
			case n < 0 || n > 65535:
				fail(l.fail("%d: want 0 to 65535", n))
			default:
				limits.MaxInflight = uint16(n)
				o.set("broker.limits.max_inflight", origin{file: l.file, line: l.line, name: l.key})
			}
		case l.key == "max_queued_messages":
			n, ok := setInt(l)
			switch {
			case !ok:
			case n == 0:
				notice(l, fmt.Sprintf("0 (no limit): pimqtt keeps its limit of %d", limits.MaxQueued))
			case n < 0 || n > 1<<31-1:
				fail(l.fail("%d: want 0 or more", n))
			default:
				limits.MaxQueued = int32(n)
				o.set("broker.limits.max_queued", origin{file: l.file, line: l.line, name: l.key})
			}
		case l.key == "persistent_client_expiration":
			d, err := mosquittoExpiry(l.args)
			if err != nil {
				fail(l.fail("%w", err))
				continue
			}
			limits.MaxSessionExpiry = Duration(d)
			o.set("broker.limits.max_session_expiry", origin{file: l.file, line: l.line, name: l.key})
		case l.key == "persistence":
			if v, ok := setBool(l); ok {
				st.Persistence = v
				o.set("storage.persistence", origin{file: l.file, line: l.line, name: l.key})
				if v {
					notice(l, "true: pimqtt keeps retained messages and persistent sessions in its own store (storage.file); what mosquitto saved is not imported")
				}
			}
		case l.key == "persistence_location":
			if l.args == "" {
				fail(l.fail("empty: want a directory"))
				continue
			}
			// Never mosquitto's own file: pimqtt's format is not
			// mosquitto's, and a mosquitto started again would read it.
			st.File = filepath.Join(l.args, "pimqtt.db")
			o.set("storage.file", origin{file: l.file, line: l.line, name: l.key})
		case l.key == "connection":
			bridge = l.args
			if bridge == "" {
				fail(l.fail("empty: a connection needs a name"))
			}
			*bridges = append(*bridges, Bridge{Name: bridge})
			o.set(fmt.Sprintf("bridge[%d]", len(*bridges)-1), origin{file: l.file, line: l.line, name: l.key})
		case slices.Contains(mosqBridge, l.key) || strings.HasPrefix(l.key, "bridge_"):
			if bridge == "" {
				fail(l.fail("a bridge setting before any connection"))
				continue
			}
			if err := importBridgeLine(l, &(*bridges)[len(*bridges)-1], len(*bridges)-1, o, notice); err != nil {
				fail(err)
			}
		case mosqUnsafe[l.key] != "" || strings.HasPrefix(l.key, "auth_opt_") || strings.HasPrefix(l.key, "plugin_opt_"):
			why := mosqUnsafe[l.key]
			if why == "" {
				why = "plugins are not supported: pimqtt would check only password_file and allow_anonymous"
			}
			fail(l.fail("%s", why))
		case mosqIgnored[l.key] != "":
			notice(l, mosqIgnored[l.key])
		default:
			fail(l.fail("not a mosquitto 2.0 setting (mosquitto refuses it too)"))
		}
	}

	// The listeners mosquitto would open: the default one if port or
	// bind_address asked for it, then each listener; none at all is
	// mosquitto 2.0's local only mode.
	var active []*mosqListener
	if defUsed {
		active = append(active, def)
	}
	active = append(active, listeners...)
	out := base
	out.Limits = limits
	out.Listeners = []Listener{}
	localOnly := len(active) == 0
	if localOnly {
		out.Listeners = append(out.Listeners,
			Listener{Address: "127.0.0.1:1883", Kind: KindMQTT},
			Listener{Address: "[::1]:1883", Kind: KindMQTT, Optional: true})
		notices = append(notices, Notice{File: path, Key: "listener",
			Text: "none: mosquitto 2.0's local only mode, imported as 127.0.0.1:1883 and [::1]:1883 with anonymous clients allowed"})
		o.set("broker.listener", origin{file: path, name: "listener (none: local only mode)"})
	}
	for _, l := range active {
		nl := Listener{Address: l.address(), Kind: KindMQTT}
		if l.websockets {
			nl.Kind = KindWS
		}
		switch {
		case l.certfile != "" && l.keyfile != "":
			// A TLS listener stays one: it must never become plain text.
			nl.Kind = map[ListenerKind]ListenerKind{KindMQTT: KindMQTTS, KindWS: KindWSS}[nl.Kind]
			nl.CertFile, nl.KeyFile = l.certfile, l.keyfile
			if l.requireCert {
				if l.cafile == "" {
					fail(&Error{File: l.tlsAt.file, Line: l.tlsAt.line, Key: "require_certificate",
						Err: fmt.Errorf("true without cafile on %s: name the CA that signs the client certificates", l.name())})
				}
				nl.ClientCAFile = l.cafile
			} else if l.cafile != "" {
				notices = append(notices, Notice{l.tlsAt.file, l.tlsAt.line, "cafile",
					"without require_certificate true mosquitto asks no client certificate, nor does pimqtt: ignored"})
			}
		case l.certfile != "" || l.keyfile != "" || l.requireCert:
			fail(&Error{File: l.tlsAt.file, Line: l.tlsAt.line, Key: "certfile",
				Err: fmt.Errorf("%s has TLS settings but not both certfile and keyfile: mosquitto refuses it, and pimqtt will not serve it in plain text", l.name())})
		case l.cafile != "":
			notices = append(notices, Notice{l.tlsAt.file, l.tlsAt.line, "cafile", "on a listener without certfile: ignored"})
		}
		o.set(fmt.Sprintf("broker.listener[%d]", len(out.Listeners)), origin{file: l.at.file, line: l.at.line, name: l.at.key})
		out.Listeners = append(out.Listeners, nl)
	}

	// Security: pimqtt has one setting for all listeners.
	sec := global
	if perListener {
		if len(def.security.at) > 0 && !defUsed && !localOnly {
			for _, at := range def.security.at {
				notices = append(notices, Notice{at.file, at.line, at.key,
					"comes before any listener with per_listener_settings true: mosquitto applies it to no listener, ignored"})
			}
		}
		scope := active
		if localOnly {
			scope = []*mosqListener{def}
		}
		sec = scope[0].security
		for _, l := range scope[1:] {
			if !l.security.same(sec) {
				fail(&Error{File: l.at.file, Line: l.at.line, Key: "per_listener_settings",
					Err: fmt.Errorf("%s has %s but %s has %s: pimqtt has one password file, one ACL file and one anonymous setting for every listener; make them the same",
						scope[0].name(), sec.describe(), l.name(), l.security.describe())})
				break
			}
		}
		if len(scope) > 1 {
			notices = append(notices, Notice{File: path, Key: "per_listener_settings",
				Text: "true, and every listener has the same settings: pimqtt applies them to all"})
		}
	}
	// Clients that knew this broker as mosquitto get its answers.
	out.RefusalCodes = RefusalMosquitto
	out.AllowAnonymous = localOnly
	if sec.allowAnonymous != nil {
		out.AllowAnonymous = *sec.allowAnonymous
	}
	if at, ok := sec.at["allow_anonymous"]; ok {
		o.set("broker.allow_anonymous", origin{file: at.file, line: at.line, name: at.key})
	}
	out.ACLFile = ""
	if sec.aclFile != nil {
		out.ACLFile = *sec.aclFile
		at := sec.at["acl_file"]
		o.set("broker.acl_file", origin{file: at.file, line: at.line, name: at.key})
	}
	out.PasswordFile = ""
	if sec.passwordFile != nil {
		out.PasswordFile = *sec.passwordFile
		at := sec.at["password_file"]
		o.set("broker.password_file", origin{file: at.file, line: at.line, name: at.key})
	}
	if !localOnly && !out.AllowAnonymous && out.PasswordFile == "" {
		notices = append(notices, Notice{File: path, Key: "allow_anonymous",
			Text: "false (mosquitto 2.0's default with a listener) and no password_file: mosquitto would let no client in"})
	}

	// max_connections is per listener in mosquitto; pimqtt's max_clients
	// bounds all listeners together.
	sum, unlimited, set := 0, false, false
	for _, l := range append(active, def) {
		if l == def && !defUsed && !localOnly {
			continue
		}
		if l.maxConnectionsLine.key != "" {
			set = true
		}
		if l.maxConnections < 0 {
			unlimited = true
			if l.maxConnectionsLine.key != "" {
				notices = append(notices, Notice{l.maxConnectionsLine.file, l.maxConnectionsLine.line, "max_connections",
					fmt.Sprintf("-1 (unlimited): pimqtt keeps its limit of %d clients", limits.MaxClients)})
			}
			continue
		}
		sum += l.maxConnections
	}
	if set && !unlimited {
		out.Limits.MaxClients = int64(sum)
		// The first listener that set it (the default one in local only
		// mode, where no listener is active).
		var at mosqLine
		for _, l := range append(active, def) {
			if l.maxConnectionsLine.key != "" {
				at = l.maxConnectionsLine
				break
			}
		}
		o.set("broker.limits.max_clients", origin{file: at.file, line: at.line, name: "max_connections"})
		if len(active) > 1 {
			notices = append(notices, Notice{File: path, Key: "max_connections",
				Text: fmt.Sprintf("per listener in mosquitto; pimqtt bounds all listeners together: max_clients = %d, their sum", sum)})
		}
	} else if set {
		for _, l := range active {
			if l.maxConnections > 0 {
				notices = append(notices, Notice{l.maxConnectionsLine.file, l.maxConnectionsLine.line, "max_connections",
					fmt.Sprintf("%d on %s only, while another listener is unlimited: pimqtt keeps its limit of %d clients for all", l.maxConnections, l.name(), limits.MaxClients)})
			}
		}
	}
	if len(errs) > 0 {
		return Broker{}, nil, errors.Join(errs...)
	}
	for i := range *bridges {
		br := &(*bridges)[i]
		if br.CAFile == "" {
			continue
		}
		// mosquitto speaks TLS to a remote as soon as bridge_cafile is set.
		for j, a := range br.Addresses {
			br.Addresses[j] = "mqtts://" + strings.TrimPrefix(a, "tcp://")
		}
	}
	return out, notices, nil
}

// importBridgeLine takes one setting of a connection block into br (the
// bridge[i] of the configuration).
func importBridgeLine(l mosqLine, br *Bridge, i int, o *origins, notice func(mosqLine, string)) error {
	at := func(field string) {
		o.set(fmt.Sprintf("bridge[%d].%s", i, field), origin{file: l.file, line: l.line, name: l.key})
	}
	switch l.key {
	case "address", "addresses":
		// "host[:port] [host[:port]] ...", port 1883 by default.
		for _, a := range strings.Fields(l.args) {
			if _, _, err := net.SplitHostPort(a); err != nil {
				a = net.JoinHostPort(a, "1883")
			}
			br.Addresses = append(br.Addresses, "tcp://"+a)
		}
		if len(br.Addresses) == 0 {
			return l.fail("empty: want host[:port], one per address of the remote")
		}
		at("address")
	case "topic":
		br.Topics = append(br.Topics, l.args)
		at("topic")
	case "remote_username":
		br.Username = l.args
		at("username")
	case "remote_password":
		br.Password = l.args
	case "remote_clientid", "clientid":
		br.ClientID = l.args
		at("client_id")
	case "cleansession":
		switch l.args {
		case "true", "false":
			br.CleanSession = l.args == "true"
			at("clean_session")
		default:
			return l.fail("%q: want true or false", l.args)
		}
	case "bridge_cafile":
		br.CAFile = l.args
		at("ca_file")
	case "try_private":
		// Nothing to import: pimqtt's bridge connects as a plain client
		// (every broker takes that) and drops the remote's echoes itself.
	case "bridge_insecure", "bridge_capath", "bridge_certfile", "bridge_keyfile", "bridge_psk", "bridge_identity", "bridge_tls_version":
		return l.fail("not supported: pimqtt's bridge checks the remote's certificate against bridge_cafile (or the system's roots) and presents none of its own")
	default:
		notice(l, "not supported by pimqtt's bridge, ignored")
	}
	return nil
}

// mosquittoExpiry parses persistent_client_expiration: a number and one
// of h, d, w, m, y (mosquitto's month is 30 days, its year 365).
func mosquittoExpiry(s string) (time.Duration, error) {
	units := map[byte]time.Duration{'h': time.Hour, 'd': 24 * time.Hour, 'w': 7 * 24 * time.Hour,
		'm': 30 * 24 * time.Hour, 'y': 365 * 24 * time.Hour}
	if len(s) < 2 {
		return 0, fmt.Errorf("%q: want a number and h, d, w, m or y, e.g. 14d", s)
	}
	unit, ok := units[s[len(s)-1]]
	n, err := strconv.Atoi(s[:len(s)-1])
	if !ok || err != nil || n < 1 {
		return 0, fmt.Errorf("%q: want a number and h, d, w, m or y, e.g. 14d", s)
	}
	return time.Duration(n) * unit, nil
}
