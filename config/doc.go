// Package config owns pimqtt's configuration: the TOML file, the
// mosquitto.conf import, the defaults, and the precedence between them and
// the command line. It imports no other pimqtt package: its types are
// plain, and the layer that assembles the parts maps [Config] onto the
// broker's, the device's and the lines' options.
//
// # Precedence
//
// Lowest first, each layer overriding the one before for the keys it sets:
//
//  1. [Default]: the one-LED quick start, no file needed (the data
//     directory is systemd's STATE_DIRECTORY when set);
//  2. the mosquitto.conf named by --mosquitto-config or by the file's
//     mosquitto_config key: its broker settings, with mosquitto 2.0's
//     defaults where it is silent (see below);
//  3. the TOML file: --config PATH, else /etc/pimqtt/pimqtt.toml when it
//     exists;
//  4. the flags the user gave. A list flag replaces the file's list:
//     --output and --input the [[output]] and [[input]] tables, --listen
//     and --ws-listen the listeners of their kind, --broker the device's
//     broker list.
//
// The device's password is never a key: --password, else the environment
// variable PIMQTT_PASSWORD, else the first line of device.password_file
// (read only in device mode).
//
// # Errors
//
// Decoding is strict: an unknown key, a value of the wrong type and a
// value out of range are errors of type [*Error] that give the file, line
// and column, the full key ("broker.listener[1].kind") and what is
// expected; several are reported at once. Flag values are reported with
// the flag's name. [Config.Wrap] gives a part that finds a value wrong
// later (gpio, a line spec) the same positions.
//
// # mosquitto.conf import
//
// [ImportMosquitto] reads the broker side of a mosquitto 2.0 configuration.
// Lines whose first character is # are comments; include_dir reads the
// *.conf files of a directory in mosquitto's order (by letter regardless
// of case, upper case first: 00.conf, A.conf, a.conf, B.conf), in the main
// file only, as mosquitto does.
//
//	mosquitto.conf                 pimqtt
//	------------------------------ --------------------------------------------------
//	listener PORT [ADDR]           [[broker.listener]] address = "ADDR:PORT" (":PORT"
//	                               without ADDR: every interface); listener 0 PATH
//	                               (unix socket): error
//	port N, bind_address ADDR      the default listener, ADDR:N (port alone: ":N")
//	protocol mqtt|websockets       kind = "mqtt"|"ws" of the listener before it
//	(no listener, no port)         mosquitto 2.0's local only mode: 127.0.0.1:1883
//	                               and [::1]:1883, anonymous clients allowed
//	allow_anonymous true|false     broker.allow_anonymous; default false once a
//	                               listener is configured (mosquitto 2.0)
//	password_file PATH             broker.password_file (read as is)
//	per_listener_settings true     pimqtt has one password file and one anonymous
//	                               setting: fine when every listener has the same,
//	                               else an error naming the two that differ
//	max_keepalive N                broker.limits.max_keepalive = "Ns" (10 to 65535)
//	max_packet_size N              broker.limits.max_packet_size (and max_connect_size
//	                               at most N); 0 (no limit): pimqtt's limit, notice
//	max_connections N              per listener in mosquitto: max_clients = the sum;
//	                               -1 (unlimited) keeps pimqtt's limit, notice
//	max_inflight_messages N        broker.limits.max_inflight; 0: pimqtt's, notice
//	max_queued_messages N          broker.limits.max_queued; 0: pimqtt's, notice
//	persistent_client_expiration   broker.limits.max_session_expiry (14d, 2w, 1y...)
//	include_dir DIR                its *.conf files, read in place
//	certfile, keyfile              the listener becomes mqtts (or wss with protocol
//	                               websockets) with that certificate; one without
//	                               the other: error (never plain text)
//	cafile + require_certificate   the listener's client_ca_file: client
//	true                           certificates required; cafile alone: notice
//	tls_version, ciphers,          notice: ignored (TLS 1.2 and 1.3, Go's suites)
//	dhparamfile
//	capath, crlfile, psk_*,        error: pimqtt would accept what mosquitto
//	use_*_as_username, tls_engine  refuses, or check less
//	auth_plugin, plugin, *_opt_*   error: pimqtt would check less than mosquitto
//	bind_interface, mount_point,   error: ignoring them would expose more than
//	use_username_as_clientid       mosquitto does
//	acl_file                       broker.acl_file
//	persistence true|false         storage.persistence (true: a notice that what
//	                               mosquitto saved is not imported)
//	persistence_location DIR       storage.file = "DIR/pimqtt.db": pimqtt's own
//	                               store, never mosquitto's file
//	persistence_file, autosave_*   notice: ignored (pimqtt writes each change)
//	connection NAME                a [[bridge]] named NAME: address(es),
//	                               topic, remote_username, remote_password,
//	                               remote_clientid, cleansession, bridge_cafile
//	                               (which makes its addresses mqtts://);
//	                               try_private needs nothing; other bridge keys
//	                               are notices, bridge TLS client keys errors
//	log_*, pid_file, user,         notice: ignored (pimqtt logs to standard error
//	sys_interval, other limits     and has no such setting)
//	anything else                  error: not a mosquitto 2.0 setting
package config
