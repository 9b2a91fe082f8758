// Command pimqtt turns a Raspberry Pi into both an MQTT broker and the
// device it controls: one process replaces mosquitto, mosquitto_passwd and
// a Python LED script. main.go only parses the command line and wires the
// packages together; Main (app.go) is the running program.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/pimqtt/pimqtt/auth"
	"github.com/pimqtt/pimqtt/broker"
	"github.com/pimqtt/pimqtt/gpio"
)

// version, when set at build time with -ldflags "-X main.version=...",
// overrides the module version Go records in the binary.
var version = ""

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is main without os.Exit, so tests can call it.
func run(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "passwd":
			return runPasswd(args[1:], stdin, stdout, stderr)
		case "gpio":
			if err := gpio.ListLines(stdout); err != nil {
				fmt.Fprintln(stderr, "pimqtt:", err)
				if errors.Is(err, gpio.ErrNoChip) {
					fmt.Fprintln(stderr, "pimqtt: to run without GPIO hardware use --gpio sim (or NAME=sim in --output/--input)")
				}
				return 1
			}
			return 0
		}
	}
	cfg, logger, err := parseFlags(args, stdout, stderr)
	if errors.Is(err, pflag.ErrHelp) || errors.Is(err, errVersionShown) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "pimqtt:", err)
		return 2
	}

	// Every signal pimqtt handles is caught before start-up begins: a
	// SIGHUP from `systemctl reload` while the password file is still being
	// read would otherwise end the process (Go's default for SIGHUP). A
	// reload asked for during start-up is carried out once it is running.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	notifyReload(hup)
	defer signal.Stop(hup)
	m := &Main{Config: cfg, Logger: logger}
	if err := m.Run(ctx); err != nil {
		logger.Error("startup failed", "error", err)
		return 1
	}
	for ctx.Err() == nil {
		select {
		case <-hup:
			if err := m.Reload(); err != nil {
				logger.Error("reload failed; keeping the previous password file", "error", err)
			}
		case <-ctx.Done():
		}
	}
	logger.Info("shutting down")
	if err := m.Close(); err != nil {
		logger.Error("shutdown", "error", err)
		return 1
	}
	return 0
}

var errVersionShown = errors.New("version shown")

// versionString says what a bug report needs: the module version (or the
// one set with -ldflags), the commit it was built from and whether the
// tree had uncommitted changes, and the Go toolchain and target.
func versionString() string {
	v, rev, modified, goVersion := version, "", false, runtime.Version()
	if info, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = info.Main.Version
		}
		goVersion = info.GoVersion
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if v == "" {
		v = "(devel)"
	}
	out := "pimqtt " + v
	switch {
	case rev != "" && modified:
		out += " commit " + rev + " (modified)"
	case rev != "":
		out += " commit " + rev
	default:
		out += " commit unknown (built without version control information)"
	}
	return out + " " + goVersion + " " + runtime.GOOS + "/" + runtime.GOARCH
}

// defaultDataDir follows systemd's StateDirectory= when it is set.
func defaultDataDir() string {
	if d := os.Getenv("STATE_DIRECTORY"); d != "" {
		return d
	}
	return "/var/lib/pimqtt"
}

func parseFlags(args []string, stdout, stderr io.Writer) (Config, *slog.Logger, error) {
	var cfg Config
	fs := pflag.NewFlagSet("pimqtt", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Mode, "mode", ModeAll, "what to run: all (broker and device), broker, or device")
	tcp := fs.StringArray("listen", []string{":1883"}, "MQTT over TCP address (repeatable)")
	ws := fs.StringArray("ws-listen", []string{":8083"}, `MQTT over WebSocket address, any path incl. /mqtt (repeatable; "" disables)`)
	fs.StringVar(&cfg.PasswordFile, "password-file", "", "mosquitto password file (make one with: pimqtt passwd -c FILE USER)")
	fs.BoolVar(&cfg.AllowAnonymous, "allow-anonymous", false, "allow clients without a user name on every listener")
	fs.StringVar(&cfg.BrokerURL, "broker", "tcp://127.0.0.1:1883", "broker the device connects to in device mode: tcp://, mqtt://, ws://host:port/mqtt")
	fs.StringVar(&cfg.Username, "username", "", "device mode: user name for --broker")
	fs.StringVar(&cfg.Password, "password", "", "device mode: password for --broker (or env PIMQTT_PASSWORD, which stays out of ps)")
	fs.StringVar(&cfg.ClientID, "client-id", "", "device's MQTT client id (default pimqtt-HOSTNAME)")
	fs.StringVar(&cfg.Topic, "topic", "raspberry/led", "command topic; state is published retained on TOPIC/state")
	fs.StringVar(&cfg.StatusTopic, "status-topic", "raspberry/status", `topic for the retained {"status": "On"|"Off"} and the Last Will`)
	fs.StringVar(&cfg.GPIO, "gpio", "auto", "output line: GPIO21, J8p40, pin40, gpiochip0:21, sim, or auto (GPIO21 if present, else simulated)")
	outputs := fs.StringArray("output", nil, "named output NAME=LINE[,active-low][,initial=off|on|restore]; commands on PREFIX/NAME (repeatable)")
	inputs := fs.StringArray("input", nil, "named input NAME=LINE[,pull-up|pull-down][,debounce=DUR][,active-low]; state on PREFIX/NAME/state (repeatable)")
	fs.StringVar(&cfg.Prefix, "prefix", "raspberry", "topic prefix of named outputs and inputs")
	fs.StringVar(&cfg.DataDir, "data-dir", defaultDataDir(), "directory of the state file that initial=restore reads")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	showVersion := fs.Bool("version", false, "print the version and exit")
	cfg.Limits = broker.DefaultLimits()
	lim := &cfg.Limits
	fs.Uint32Var(&lim.MaxPacketSize, "max-packet-size", lim.MaxPacketSize, "largest packet a connected client may send, in bytes")
	fs.Uint32Var(&lim.MaxConnectSize, "max-connect-size", lim.MaxConnectSize, "largest CONNECT packet (sent before authentication), in bytes")
	fs.DurationVar(&lim.ConnectTimeout, "connect-timeout", lim.ConnectTimeout, "time a new connection has to send CONNECT")
	fs.Int64Var(&lim.MaxClients, "max-clients", lim.MaxClients, "most connected clients")
	fs.Int64Var(&lim.MaxPendingConnections, "max-pending", lim.MaxPendingConnections, "most connections that have not sent CONNECT yet")
	fs.DurationVar(&lim.MaxSessionExpiry, "max-session-expiry", lim.MaxSessionExpiry, "longest a disconnected client's session is kept")
	fs.Uint16Var(&lim.MaxInflight, "max-inflight", lim.MaxInflight, "most unacknowledged QoS 1/2 messages per client")
	fs.Int32Var(&lim.MaxQueued, "max-queued", lim.MaxQueued, "most messages waiting to be written to one client")
	fs.DurationVar(&lim.MaxKeepAlive, "max-keepalive", lim.MaxKeepAlive, "longest keepalive granted; the default accepts every keepalive, 0 included; below it, MQTT 3.1.1 clients asking for more (or for 0) get CONNACK 2 and MQTT 5 clients are told the maximum")
	fs.IntVar(&lim.MaxTopicLength, "max-topic-length", lim.MaxTopicLength, "longest topic name or filter, in bytes")
	fs.IntVar(&lim.MaxTopicLevels, "max-topic-levels", lim.MaxTopicLevels, "most '/'-separated levels in a topic")
	fs.IntVar(&lim.MaxUserProperties, "max-user-properties", lim.MaxUserProperties, "most MQTT 5 user properties in one packet")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: pimqtt [flags]\n       pimqtt passwd [-c] [-b] [-D] FILE USER [PASSWORD]\n       pimqtt gpio\n\nFlags:\n%s", fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		return cfg, nil, err
	}
	if *showVersion {
		fmt.Fprintln(stdout, versionString())
		return cfg, nil, errVersionShown
	}
	if err := cfg.Limits.Validate(); err != nil {
		return cfg, nil, err
	}
	if fs.NArg() > 0 {
		return cfg, nil, fmt.Errorf("unexpected argument %q (subcommands: passwd, gpio)", fs.Arg(0))
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return cfg, nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	switch cfg.Mode {
	case ModeAll, ModeBroker, ModeDevice:
	default:
		return cfg, nil, fmt.Errorf("--mode %q: want all, broker or device", cfg.Mode)
	}
	if cfg.Password == "" {
		cfg.Password = os.Getenv("PIMQTT_PASSWORD")
	}
	for _, o := range *outputs {
		f, err := gpio.ParseOutputFlag(o)
		if err != nil {
			return cfg, nil, err
		}
		cfg.Outputs = append(cfg.Outputs, f)
	}
	for _, in := range *inputs {
		f, err := gpio.ParseInputFlag(in)
		if err != nil {
			return cfg, nil, err
		}
		cfg.Inputs = append(cfg.Inputs, f)
	}
	// --topic/--gpio is the one-LED shorthand: on by default, and beside
	// named lines only when asked for explicitly.
	cfg.UseShorthand = (len(cfg.Outputs) == 0 && len(cfg.Inputs) == 0) || fs.Changed("gpio") || fs.Changed("topic")
	if cfg.Mode == ModeDevice {
		return cfg, logger, nil
	}
	listeners, err := listenerConfigs(*tcp, *ws, fs.Changed("listen"), fs.Changed("ws-listen"), cfg.PasswordFile, cfg.AllowAnonymous)
	if err != nil {
		return cfg, nil, err
	}
	cfg.Listeners = listeners
	logAccess(logger, cfg)
	return cfg, logger, nil
}

// logAccess says once, in the terms of the flags, who may connect; the
// broker then logs each address it actually bound.
func logAccess(log *slog.Logger, cfg Config) {
	addrs := make([]string, 0, len(cfg.Listeners))
	loopbackOnly := true
	for _, l := range cfg.Listeners {
		addrs = append(addrs, l.Kind+" "+l.Addr)
		host, _, _ := net.SplitHostPort(l.Addr)
		loopbackOnly = loopbackOnly && isLoopback(host)
	}
	listeners := strings.Join(addrs, ", ")
	switch {
	case len(cfg.Listeners) == 0:
		log.Warn("no listeners: only the in-process device can reach the broker")
	case cfg.PasswordFile == "" && loopbackOnly:
		log.Warn("no --password-file: listening on loopback only, where anyone on this machine may connect without a password",
			"listeners", listeners,
			"hint", "for phones on the LAN make a password file with: pimqtt passwd -c /etc/pimqtt/passwd USER, then run with --password-file /etc/pimqtt/passwd")
	case cfg.PasswordFile == "":
		log.Warn("--allow-anonymous without --password-file: anyone who can reach these listeners over the network may connect, publish and subscribe without a password",
			"listeners", listeners)
	case cfg.AllowAnonymous:
		log.Warn("--allow-anonymous: clients without a user name may connect; a client that gives one must match the password file",
			"listeners", listeners, "password_file", cfg.PasswordFile)
	default:
		log.Info("only users in the password file may connect", "listeners", listeners, "password_file", cfg.PasswordFile)
	}
}

// listenerConfigs applies mosquitto 2.0's safe default: with no password
// file the default listeners bind loopback only, and an explicit
// non-loopback address needs --allow-anonymous.
func listenerConfigs(tcp, ws []string, tcpChanged, wsChanged bool, passwordFile string, allowAnonymous bool) ([]broker.ListenerConfig, error) {
	var out []broker.ListenerConfig
	add := func(kind string, addrs []string, explicit bool) error {
		for _, addr := range addrs {
			if addr == "" {
				continue
			}
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return fmt.Errorf("listen address %q: %w", addr, err)
			}
			if passwordFile != "" || allowAnonymous {
				out = append(out, broker.ListenerConfig{Kind: kind, Addr: addr})
				continue
			}
			if !explicit && host == "" {
				out = append(out,
					broker.ListenerConfig{Kind: kind, Addr: net.JoinHostPort("127.0.0.1", port)},
					broker.ListenerConfig{Kind: kind, Addr: net.JoinHostPort("::1", port), Optional: true})
				continue
			}
			if !isLoopback(host) {
				return fmt.Errorf("%s listener %q is reachable from the network but there is no --password-file: "+
					"make one with `pimqtt passwd -c /etc/pimqtt/passwd USER` (or mosquitto_passwd) and pass --password-file /etc/pimqtt/passwd, "+
					"or pass --allow-anonymous to let anyone on the network connect", kind, addr)
			}
			out = append(out, broker.ListenerConfig{Kind: kind, Addr: addr})
		}
		return nil
	}
	if err := add(broker.TCP, tcp, tcpChanged); err != nil {
		return nil, err
	}
	if err := add(broker.WebSocket, ws, wsChanged); err != nil {
		return nil, err
	}
	return out, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// runPasswd is `pimqtt passwd`, which writes the lines mosquitto_passwd 2.0
// writes.
func runPasswd(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("pimqtt passwd", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	create := fs.BoolP("create", "c", false, "create a new password file, overwriting an existing one")
	batch := fs.BoolP("batch", "b", false, "take the password from the command line")
	del := fs.BoolP("delete", "D", false, "delete the user from the file")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: pimqtt passwd [-c] [-b] [-D] FILE USER [PASSWORD]\n%s", fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 2
	}
	rest := fs.Args()
	want := 2
	if *batch {
		want = 3
	}
	if len(rest) != want || (*del && (*batch || *create)) {
		fs.Usage()
		return 2
	}
	path, user := rest[0], rest[1]
	if err := auth.ValidateUsername(user); err != nil && !*del {
		fmt.Fprintln(stderr, "pimqtt passwd:", err)
		return 1
	}
	if !*del {
		// Before the prompts: a wrong path should not cost two passwords.
		if err := auth.CheckPasswordFile(path, *create); err != nil {
			fmt.Fprintln(stderr, "pimqtt passwd:", err)
			return 1
		}
	}
	var err error
	switch {
	case *del:
		err = auth.DeleteUser(path, user)
	default:
		var password string
		if *batch {
			password = rest[2]
		} else if password, err = auth.ReadPasswordTwice(stdin, stdout); err != nil {
			break
		}
		err = auth.SetPassword(path, user, password, *create)
	}
	if err != nil {
		fmt.Fprintln(stderr, "pimqtt passwd:", err)
		return 1
	}
	return 0
}
