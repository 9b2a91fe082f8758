// Command pimqtt turns a Raspberry Pi into both an MQTT broker and the
// device it controls: one process replaces mosquitto, mosquitto_passwd and
// a Python LED script. main.go only parses the command line and hands
// over: the configuration to package config, the running program to Main
// (app.go).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/pimqtt/pimqtt/config"
	"github.com/pimqtt/pimqtt/gpio"
	"github.com/pimqtt/pimqtt/systemd"
)

// version, when set at build time with -ldflags "-X main.version=...",
// overrides the module version Go records in the binary.
var version = ""

const usage = `Usage: pimqtt [--config FILE] [flags]
       pimqtt passwd [-H sha512-pbkdf2|sha512] [-I ITERATIONS] [-c | -D] [-b] FILE USER [PASSWORD] | -U FILE
       pimqtt config check [FILE]     validate a configuration file, print the effective configuration
       pimqtt config example          print a commented example configuration
       pimqtt cert [--dir DIR] [--host NAME]... [--ip ADDR]... [--client NAME]...
                                      make a local CA and a TLS certificate for this Pi
       pimqtt qr [flags]              the control page's address as a QR code
       pimqtt gpio                    list GPIO chips and lines

Flags (each also a key of the configuration file; flags win):
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is main without os.Exit, so tests can call it.
func run(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "passwd":
			return runPasswd(args[1:], stdin, stdout, stderr)
		case "config":
			return runConfig(args[1:], stdout, stderr)
		case "cert":
			return runCert(args[1:], stdout, stderr)
		case "qr":
			return runQR(args[1:], stdout, stderr)
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
	cfg, code := parseCommand(args, stdout, stderr)
	if code >= 0 {
		return code
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.Log.Level.Level()}))
	for _, n := range cfg.Notices() {
		logger.Warn("mosquitto.conf setting not taken over", "notice", n.String())
	}
	return serve(cfg, logger, stderr)
}

// parseCommand resolves the flags and files into the configuration; a
// code of 0 or more means run is done (help, --version, an error).
func parseCommand(args []string, stdout, stderr io.Writer) (config.Config, int) {
	fs := pflag.NewFlagSet("pimqtt", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage, fs.FlagUsages()) }
	cmd := config.Bind(fs, os.Getenv)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return config.Config{}, 0
		}
		fmt.Fprintln(stderr, "pimqtt:", err)
		return config.Config{}, 2
	}
	if cmd.Version() {
		fmt.Fprintln(stdout, versionString())
		return config.Config{}, 0
	}
	cfg, err := cmd.Resolve()
	if err != nil {
		fmt.Fprintln(stderr, "pimqtt:", err)
		return config.Config{}, 2
	}
	return cfg, -1
}

// runQR is `pimqtt qr [flags]`: the control page's address as a QR code,
// for a second phone, with the configuration the service would use.
func runQR(args []string, stdout, stderr io.Writer) int {
	cfg, code := parseCommand(args, stdout, stderr)
	if code >= 0 {
		return code
	}
	qr, err := (&Main{Config: cfg}).pageQR()
	if err != nil {
		fmt.Fprintln(stderr, "pimqtt qr:", err)
		return 1
	}
	fmt.Fprint(stdout, qr)
	return 0
}

// serve runs the program until SIGINT or SIGTERM. Under systemd
// (Type=notify) it says READY=1 only once Run returned, i.e. the device
// has subscribed and the listeners are open; RELOADING=1 and READY=1
// around a SIGHUP reload; STOPPING=1 before shutdown; and it pings the
// watchdog from the loop that handles the signals, so a wedged main loop
// (or a broker that accepts no connection) stops the pings.
func serve(cfg config.Config, logger *slog.Logger, stderr io.Writer) int {
	sd, err := systemd.New(os.Getenv, os.Getpid())
	if err != nil {
		logger.Warn("systemd watchdog", "error", err)
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
		if ctx.Err() != nil {
			// SIGTERM during start-up: Run closed what it had started,
			// the way Close does; that is a clean stop, not a failure.
			logger.Info("stopped during start-up")
			return 0
		}
		logger.Error("startup failed", "error", err)
		return 1
	}
	if join := m.joinLines(); len(join) > 0 {
		logger.Info("phones on this network connect to", "addresses", strings.Join(join, " "))
	}
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		// A person is watching: the page as a QR code for the phone's
		// camera (pimqtt qr prints it again). Not in a service's journal.
		if qr, err := m.pageQR(); err == nil {
			fmt.Fprint(stderr, qr)
		}
	}
	notified(logger, "READY=1", sd.Ready(m.serviceStatus()))
	watchdog, interval, stopWatchdog := watchdogTicks(sd)
	defer stopWatchdog()
	for ctx.Err() == nil {
		select {
		case <-hup:
			notified(logger, "RELOADING=1", sd.Reloading())
			if err := m.Reload(); err != nil {
				logger.Error("reload failed; the previous password, ACL and certificate files stay in force", "error", err)
			}
			notified(logger, "READY=1", sd.Ready(m.serviceStatus()))
		case <-watchdog:
			m.pingWatchdog(ctx, sd, interval)
		case <-ctx.Done():
		}
	}
	notified(logger, "STOPPING=1", sd.Stopping())
	logger.Info("shutting down")
	if err := m.Close(); err != nil {
		logger.Error("shutdown", "error", err)
		return 1
	}
	return 0
}

// runConfig is `pimqtt config check [FILE]` and `pimqtt config example`.
func runConfig(args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) == 1 && args[0] == "example":
		fmt.Fprint(stdout, config.Example())
		return 0
	case len(args) >= 1 && len(args) <= 2 && args[0] == "check":
		path := config.DefaultPath
		if len(args) == 2 {
			path = args[1]
		}
		cfg, err := config.Load(path)
		if err == nil {
			err = checkConfig(cfg, stderr)
		}
		if err != nil {
			fmt.Fprintln(stderr, "pimqtt config check:", err)
			return 1
		}
		fmt.Fprint(stdout, cfg.Redacted())
		return 0
	}
	fmt.Fprint(stderr, "Usage: pimqtt config check [FILE]   (default "+config.DefaultPath+")\n       pimqtt config example\n")
	return 2
}

// moduleVersion is the version alone: set at build time, else the module's.
func moduleVersion() string {
	if version != "" {
		return version
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" {
		return info.Main.Version
	}
	return "(devel)"
}

// versionString says what a bug report needs: the module version (or the
// one set with -ldflags), the commit it was built from and whether the
// tree had uncommitted changes, and the Go toolchain and target.
func versionString() string {
	v, rev, modified, goVersion := moduleVersion(), "", false, runtime.Version()
	if info, ok := debug.ReadBuildInfo(); ok {
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
