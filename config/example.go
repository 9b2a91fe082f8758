package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// Example is a commented configuration file with every key, each set to
// its default except where a comment says otherwise. [Load] accepts it;
// on a fresh machine [Check] warns that its password file does not exist
// yet.
func Example() string { return example }

const example = `# pimqtt configuration (pimqtt config example > /etc/pimqtt/pimqtt.toml).
# Every key is optional: a missing key keeps its default, shown here.
# Command-line flags override the keys; pimqtt config check shows the result.

# What runs: "all" (broker and device in one process), "broker", or "device"
# (only the device, connecting to [device] broker).
mode = "all"

# Import the broker settings of a mosquitto.conf (listeners, password_file,
# allow_anonymous, limits); the [broker] keys of this file win over it.
# mosquitto_config = "/etc/mosquitto/mosquitto.conf"

[log]
# debug, info, warn or error.
level = "info"

[broker]
# A mosquitto password file (make one with: pimqtt passwd -c FILE USER).
# Without one, the default listeners bind loopback only.
password_file = "/etc/pimqtt/passwd"
# Let clients without a user name connect on every listener.
allow_anonymous = false
# How a refused login is answered: "spec" (a wrong user name or password gets
# "bad user name or password", MQTT 3.1.1 code 4 / MQTT 5 0x86) or "mosquitto"
# (every refusal is "not authorized", 5 / 0x87, as mosquitto 2.0 answers; an
# imported mosquitto.conf sets this).
refusal_codes = "spec"
# A mosquitto ACL file (user/topic/pattern lines): who may read and write
# which topics. Without one every user may use every topic, but $SYS is
# read-only and the device's own state and status topics are the device's.
acl_file = ""
# Web pages from these origins only may open the WebSocket listeners; apps
# and scripts (no Origin header) are not affected. Unset: any origin.
# ws_origins = ["https://pi.local:8080"]

# Listeners: kind "mqtt" (MQTT over TCP), "ws" (MQTT over WebSocket, any
# path incl. /mqtt), "mqtts" (MQTT over TLS) or "wss" (WebSocket over TLS).
# Without any [[broker.listener]], pimqtt listens on :1883 (mqtt) and :8083
# (ws), and with a certificate in [broker.tls] also on :8883 (mqtts) and
# :8084 (wss); listener = [] means none. A TLS listener may have its own
# cert_file, key_file and client_ca_file; else [broker.tls]'s apply.
[[broker.listener]]
address = ":1883"
kind = "mqtt"

[[broker.listener]]
address = ":8083"
kind = "ws"

# [[broker.listener]]
# address = ":8883"
# kind = "mqtts"
# cert_file = "/etc/pimqtt/tls/server.crt"
# key_file = "/etc/pimqtt/tls/server.key"
# client_ca_file = ""

# The certificate of the TLS listeners (make one with: pimqtt cert). With
# client_ca_file set, clients need a certificate signed by that CA.
[broker.tls]
cert_file = ""
key_file = ""
client_ca_file = ""

[broker.limits]
# Largest packet a connected client may send, in bytes.
max_packet_size = 2097152
# Largest CONNECT packet (sent before authentication), in bytes.
max_connect_size = 65536
# Time a new connection has to send CONNECT.
connect_timeout = "10s"
# Most connected clients.
max_clients = 500
# Most connections that have not sent CONNECT yet.
max_pending = 1000
# Longest a disconnected client's session (subscriptions, queued messages) is
# kept; the default, 4294967295s (136 years), is never, as with mosquitto.
max_session_expiry = "4294967295s"
# Most unacknowledged QoS 1/2 messages per client.
max_inflight = 256
# Most messages waiting to be written to one client.
max_queued = 1024
# Longest keepalive granted; the default accepts every keepalive, 0 included;
# below it, MQTT 3.1.1 clients asking for more (or for 0) get CONNACK 2 and
# MQTT 5 clients are told the maximum.
max_keepalive = "65535s"
# Longest topic name or filter, in bytes.
max_topic_length = 1024
# Most '/'-separated levels in a topic.
max_topic_levels = 32
# Most MQTT 5 user properties in one packet.
max_user_properties = 32

[device]
# Device mode: the broker to connect to (tcp://, mqtt://, ws://host:port/mqtt,
# mqtts://, wss://). The first is used.
broker = ["tcp://127.0.0.1:1883"]
# Device mode: user name at the broker, and a file whose first line is the
# password (or set the environment variable PIMQTT_PASSWORD).
username = ""
password_file = ""
# Publish the machine's health (CPU temperature, uptime, load, memory, disk
# free, clients) retained on PREFIX/telemetry this often; "0s" turns it off.
telemetry_interval = "30s"
# Device mode: the CA of a broker whose certificate is its own (mqtts://,
# wss://, e.g. made by pimqtt cert); "" trusts the system's CAs.
ca_file = ""
# The device's MQTT client id; "" is pimqtt-HOSTNAME.
client_id = ""
# Retained {"status": "On"|"Off"} and the Last Will.
status_topic = "raspberry/status"
# The one-LED shorthand: commands on topic, state retained on topic/state,
# driving line gpio (GPIO21, J8p40, pin40, gpiochip0:21, sim, or auto: GPIO21
# if present, else simulated). Used when there are no [[output]] or
# [[input]] tables, or when topic or gpio is set beside them.
topic = "raspberry/led"
gpio = "auto"
# Topic prefix of named outputs and inputs.
prefix = "raspberry"
# Where the state file that initial = "restore" reads lives.
data_dir = "/var/lib/pimqtt"

[http]
# The control page (sign in with a user of the password file). Without a
# password file ":8080" binds loopback only; listen = [] turns the page off.
listen = [":8080"]
# The page over TLS with [broker.tls]'s certificate, when there is one.
https_listen = [":8443"]
# The page's address as phones reach it (logs, QR code, Home Assistant);
# "" = http://FIRST-LAN-ADDRESS:PORT/.
url = ""
# The page's title; "" = the host name.
title = ""

[homeassistant]
# Publish MQTT discovery: Home Assistant's MQTT integration then shows a
# switch per output, a binary sensor per input and the telemetry sensors.
discovery = false
# Home Assistant's discovery prefix.
prefix = "homeassistant"
# One config per entity, for Home Assistant before 2024.11.
per_component = false

[storage]
# Keep retained messages and persistent sessions (MQTT 3.1.1 clean session
# false, MQTT 5 session expiry > 0) with their subscriptions and queued QoS 1/2
# messages across restarts, kill -9 and power cuts. Not given: on when the data
# directory exists and can be written; true: also creates it; false: memory only.
persistence = true
# The store; "" is pimqtt.db in [device] data_dir.
file = ""
# Drop a message queued for a disconnected persistent session once it is older
# than this; "0s" keeps it as long as the session (max_session_expiry).
queue_expiry = "0s"

[debug]
# Serve Go's profiler on a loopback address (e.g. "127.0.0.1:6060") to report
# slowness: go tool pprof http://127.0.0.1:6060/debug/pprof/profile?seconds=30
# From another machine: ssh -L 6060:127.0.0.1:6060 pi@raspberrypi.local
pprof_listen = ""

# Named outputs: commands on PREFIX/NAME, level retained on PREFIX/NAME/state.
# The same as --output NAME=LINE[,active-low][,initial=off|on|restore].
# initial: "off", "on", or "restore" (the last commanded level).
# [[output]]
# name = "relay1"
# line = "GPIO20"
# active_low = true
# initial = "restore"

# Named inputs: level retained on PREFIX/NAME/state on every change.
# The same as --input NAME=LINE[,pull-up|pull-down][,debounce=DUR][,active-low].
# pull: "none", "up" or "down"; debounce: a duration, "0s" for none.
# [[input]]
# name = "door"
# line = "GPIO5"
# pull = "up"
# debounce = "20ms"
# active_low = true

# Bridges: the broker's connections to remote brokers (a bigger broker, a
# cluster), as mosquitto's connection blocks. The same as --bridge URL
# --bridge-topic ... --bridge-username ... (a mosquitto.conf's connection
# blocks are imported into these too). The password comes from
# --bridge-password, env PIMQTT_BRIDGE_PASSWORD, or password_file.
# Its state is retained on $SYS/broker/connection/NAME/state: 1 or 0.
# [[bridge]]
# name = "cluster"
# address = ["tcp://nats1.lan:1883", "tcp://nats2.lan:1883"] # tried in order
# topic = ["raspberry/# both 1"] # PATTERN [out|in|both] [QOS] [LOCAL_PREFIX REMOTE_PREFIX]
# username = "pi-garage"
# password_file = "/etc/pimqtt/bridge.password"
# client_id = ""          # default HOSTNAME.NAME
# clean_session = false   # false: the remote keeps QoS 1 messages while away
# ca_file = ""            # CA of an mqtts:// or wss:// remote
# queue_limit = 1000      # QoS 1 messages held while the remote is down
`

// Check reports what can only be known on this machine: files the
// configuration names that do not exist yet are warnings (a fresh
// machine, before pimqtt passwd); files that cannot be what they should
// (a directory as password file) are errors.
func Check(c Config) (warnings []string, err error) {
	var errs []error
	file := func(key, path, hint string) {
		if path == "" {
			return
		}
		fi, err := os.Stat(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			warnings = append(warnings, c.Wrap(key, fmt.Errorf("%s does not exist yet%s", path, hint)).Error())
		case err != nil:
			errs = append(errs, c.Wrap(key, err))
		case fi.IsDir():
			errs = append(errs, c.Wrap(key, fmt.Errorf("%s is a directory, not a file", path)))
		}
	}
	if c.Mode != ModeDevice {
		file("broker.password_file", c.Broker.PasswordFile, ": make it with pimqtt passwd -c "+c.Broker.PasswordFile+" USER")
	}
	if c.Mode == ModeDevice {
		file("device.password_file", c.Device.PasswordFile, ": put the device's password on its first line")
	}
	for _, o := range c.Outputs {
		if o.Initial != InitialRestore || c.Mode == ModeBroker {
			continue
		}
		if fi, err := os.Stat(c.Device.DataDir); err != nil || !fi.IsDir() {
			warnings = append(warnings, c.Wrap("device.data_dir",
				fmt.Errorf("%s is not a directory yet: initial = \"restore\" keeps its state there (systemd: StateDirectory=pimqtt)", c.Device.DataDir)).Error())
		}
		break
	}
	return warnings, errors.Join(errs...)
}

// Redacted is the configuration as a TOML file that Load reads back the
// same: for pimqtt config check. The device's password is never written;
// a password inside a broker URL is replaced by xxxxx.
func (c Config) Redacted() string {
	out := c.clone()
	for i, b := range out.Device.Brokers {
		if u, err := url.Parse(b); err == nil && u.User != nil {
			if _, has := u.User.Password(); has {
				out.Device.Brokers[i] = u.Redacted()
			}
		}
	}
	for i := range out.Bridges {
		for j, a := range out.Bridges[i].Addresses {
			if u, err := url.Parse(a); err == nil && u.User != nil {
				out.Bridges[i].Addresses[j] = u.Redacted()
			}
		}
	}
	var buf bytes.Buffer
	buf.WriteString("# The effective configuration: defaults, files and flags together.\n")
	for _, br := range c.Bridges {
		if br.Password != "" {
			fmt.Fprintf(&buf, "# The password of bridge %q is set (not shown).\n", br.Name)
		}
	}
	if c.Device.Password != "" {
		buf.WriteString("# The device's password is set (not shown).\n")
	}
	if listenersDefault(out.Broker.Listeners) {
		buf.WriteString("# The listeners are the defaults: without a password file they bind loopback only.\n")
	}
	enc := toml.NewEncoder(&buf)
	enc.SetIndentTables(false)
	if err := enc.Encode(out); err != nil {
		// Every field of Config encodes; this is a programming error.
		return fmt.Sprintf("# cannot encode the configuration: %v\n", err)
	}
	return strings.ReplaceAll(buf.String(), "\n\n\n", "\n\n")
}

func listenersDefault(ls []Listener) bool {
	for _, l := range ls {
		if !l.Default {
			return false
		}
	}
	return len(ls) > 0
}
