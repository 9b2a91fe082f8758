package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pimqtt/pimqtt/bridge"
	"github.com/pimqtt/pimqtt/broker"
	"github.com/pimqtt/pimqtt/config"
	"github.com/pimqtt/pimqtt/device"
	"github.com/pimqtt/pimqtt/gpio"
	"github.com/pimqtt/pimqtt/state"
	"github.com/pimqtt/pimqtt/storage"
	"github.com/pimqtt/pimqtt/telemetry"
	"github.com/pimqtt/pimqtt/web"
)

// Main is the running program: what main() starts and end-to-end tests
// drive. Run starts it, Close stops it the way SIGTERM does.
//
// The program is an ordered list of parts (see assemble), each started in
// turn and closed in reverse: a new part (a web page, storage, a bridge)
// is one more entry, not an edit of the others.
type Main struct {
	Config config.Config
	Logger *slog.Logger
	// Line, when set, is driven instead of the line Config.Device.GPIO
	// names; benchmarks use it to observe each change. Main closes it.
	Line gpio.Output

	parts   []part
	started int // parts[:started] are running

	broker    *broker.Broker
	storage   *storage.Store
	outputs   map[string]gpio.Output
	inputs    []gpio.Input
	store     *state.File
	device    *device.Device
	web       *web.Server
	webAccess *webAccess
	pageAddrs []net.Addr
	profiler  *profiler
	bridges   []*bridge.Bridge
}

// part is one piece of the running program.
type part struct {
	name  string
	start func(ctx context.Context) error
	// close undoes start; nil when there is nothing to undo.
	close func() error
}

// assemble lists the parts the mode runs, in start order: the lines (and
// the state file they restore from), the broker serving only the device,
// the device, and last the network listeners, so that "listening" means
// the LED obeys. Close runs in reverse: the device says Off while the
// broker still runs, the lines go to their safe state last.
//
// The broker's store of retained messages and persistent sessions comes
// first and closes last: the broker writes into it until it is closed.
func (m *Main) assemble() []part {
	mode := m.Config.Mode
	parts := []part{{"profiler", m.startProfiler, m.closeProfiler}}
	if mode != config.ModeDevice {
		parts = append(parts, part{"storage", m.openStorage, m.closeStorage})
	}
	if mode != config.ModeBroker {
		parts = append(parts, part{"lines", m.openLines, m.closeLines})
	}
	if mode != config.ModeDevice {
		parts = append(parts, part{"broker", m.startBroker, m.closeBroker})
	}
	if mode != config.ModeBroker {
		parts = append(parts, part{"device", m.startDevice, m.closeDevice})
	}
	if mode != config.ModeBroker {
		parts = append(parts, part{"control page", m.startWeb, m.closeWeb})
	}
	if mode != config.ModeDevice && len(m.Config.Bridges) > 0 {
		// After the device, so what the bridge first sends out is the
		// device's fresh state; before the listeners, as the device is.
		parts = append(parts, part{"bridges", m.startBridges, m.closeBridges})
	}
	if mode != config.ModeDevice {
		parts = append(parts, part{"network listeners", m.openNetwork, m.closeNetwork})
	}
	return parts
}

// Run starts every part in order. It returns once they are started; the
// device keeps reconnecting in the background. A part that fails to start
// closes the ones started before it.
func (m *Main) Run(ctx context.Context) error {
	if m.Logger == nil {
		m.Logger = slog.Default()
	}
	if m.Config.Device.ClientID == "" {
		m.Config.Device.ClientID = device.DefaultClientID()
	}
	m.parts = m.assemble()
	for _, p := range m.parts {
		if err := p.start(ctx); err != nil {
			m.Logger.Debug("part failed to start; closing the ones before it", "part", p.name)
			_ = m.Close()
			return err
		}
		m.started++
	}
	return nil
}

// Close closes the started parts in reverse order. Errors are joined; a
// failing part does not keep the others open.
func (m *Main) Close() error {
	var errs []error
	for ; m.started > 0; m.started-- {
		if p := m.parts[m.started-1]; p.close != nil {
			errs = append(errs, p.close())
		}
	}
	return errors.Join(errs...)
}

// BrokerAddrs returns the broker's bound listeners (none in device mode).
func (m *Main) BrokerAddrs() []broker.Addr {
	if m.broker == nil {
		return nil
	}
	return m.broker.Addrs()
}

// Reload re-reads the password and ACL files and the certificates
// (SIGHUP); a file that fails to load leaves the previous ones in force.
func (m *Main) Reload() error {
	var errs []error
	if m.broker != nil {
		errs = append(errs, m.broker.Reload())
	}
	if m.webAccess != nil {
		errs = append(errs, m.webAccess.load(m.Config, m.Logger.With("component", "web")))
	}
	return errors.Join(errs...)
}

func (m *Main) startBroker(context.Context) error {
	cfg := m.Config
	listeners, err := brokerListeners(cfg)
	if err != nil {
		return err
	}
	logAccess(m.Logger, cfg, listeners)
	opts := broker.Options{
		Listeners:      listeners,
		PasswordFile:   cfg.Broker.PasswordFile,
		AllowAnonymous: cfg.Broker.AllowAnonymous,
		ACLFile:        cfg.Broker.ACLFile,
		Limits:         brokerLimits(cfg.Broker.Limits),

		MosquittoRefusalCodes: cfg.Broker.RefusalCodes == config.RefusalMosquitto,
		Logger:                m.Logger.With("component", "broker"),
		// With the page's 5 s, the device's 3 s goodbye and the broker's
		// 1 s drain, pimqtt's own shutdown is bounded at about 14 s:
		// dist/pimqtt.service's TimeoutStopSec=30 leaves a margin.
		ShutdownTimeout: 5 * time.Second,
	}
	if cfg.Mode == config.ModeAll {
		// A network client presenting the device's id would take its
		// session over and leave the LED deaf; one publishing to the
		// device's own topics would forge "the LED is on".
		opts.DeviceClientID = cfg.Device.ClientID
		opts.DeviceTopics = m.deviceTopics()
	}
	if m.storage != nil {
		opts.Hooks = append(opts.Hooks, m.storage)
	}
	if m.broker, err = broker.New(opts); err != nil {
		return withPortHint(err)
	}
	for _, a := range m.broker.AnyOriginListeners() {
		m.Logger.Warn("a WebSocket listener reachable from the network accepts pages from any web site",
			"kind", a.Kind, "addr", a.Addr.String(), "hint", "--ws-origin https://YOUR-DASHBOARD (broker.ws_origins)")
	}
	// Start serves the in-memory listener only; network clients are let
	// in by the last part, once the device is listening.
	if err := m.broker.Start(); err != nil {
		_ = m.closeBroker()
		return err
	}
	return nil
}

// deviceTopics are the topics only the in-process device may publish to:
// its status, every line's state, its telemetry and its Home Assistant
// discovery.
func (m *Main) deviceTopics() []string {
	topics := []string{m.Config.Device.StatusTopic}
	outputs, inputs := m.deviceLines()
	for _, o := range outputs {
		st := o.StateTopic
		if st == "" {
			st = o.CommandTopic + "/state"
		}
		topics = append(topics, st)
	}
	for _, in := range inputs {
		topics = append(topics, in.StateTopic)
	}
	cfg := m.Config
	if cfg.Device.TelemetryInterval > 0 {
		topics = append(topics, cfg.Device.Prefix+"/telemetry")
	}
	if cfg.HomeAssistant.Discovery {
		// Home Assistant's own status topic stays writable: it says
		// "online" there.
		d := device.Discovery{Prefix: cfg.HomeAssistant.Prefix}
		topics = append(topics, d.TopicFilter(cfg.Device.ClientID))
	}
	return topics
}

func (m *Main) closeBroker() error {
	err := m.broker.Close()
	m.broker = nil
	return err
}

// openStorage opens the store of retained messages and persistent
// sessions ([storage]). Left at its default, persistence is on only when
// the data directory exists and can be written; asked for, a store that
// cannot be written is logged and the broker serves from memory, writing
// once it can (see package storage).
func (m *Main) openStorage(context.Context) error {
	cfg := m.Config
	log := m.Logger.With("component", "storage")
	if !cfg.Storage.Persistence {
		log.Info("persistence off: retained messages and persistent sessions are kept in memory only")
		return nil
	}
	opts := storage.Options{
		Path:           cfg.StoreFile(),
		QueueExpiry:    cfg.Storage.QueueExpiry.D(),
		OnlyIfWritable: !cfg.IsSet("storage.persistence") && !cfg.IsSet("storage.file"),
		Logger:         log,
	}
	if cfg.Mode == config.ModeAll {
		// The device publishes its retained status, state and telemetry
		// again whenever it starts: storing them would only wear the SD
		// card every telemetry interval.
		opts.VolatileClients = []string{cfg.Device.ClientID}
	}
	st, err := storage.Open(opts)
	switch {
	case errors.Is(err, storage.ErrUnavailable):
		log.Info("persistence off: the data directory does not exist or cannot be written; retained messages and persistent sessions are kept in memory only",
			"reason", err, "hint", "create "+filepath.Dir(opts.Path)+" (systemd: StateDirectory=pimqtt), or set storage.persistence = true (--persistence) to have pimqtt create it")
		return nil
	case err != nil:
		return cfg.Wrap("storage.file", err)
	}
	m.storage = st
	log.Info("persistence on: retained messages and persistent sessions survive restarts", "file", opts.Path)
	return nil
}

// closeStorage writes what is left (the broker's close already did, when
// it returned in time) and closes the file.
func (m *Main) closeStorage() error {
	if m.storage == nil {
		return nil
	}
	err := m.storage.Close()
	m.storage = nil
	return err
}

func (m *Main) openNetwork(context.Context) error {
	m.broker.OpenNetwork()
	return nil
}

// closeNetwork stops accepting first, so nobody connects during shutdown.
func (m *Main) closeNetwork() error {
	m.broker.CloseNetwork()
	return nil
}

func (m *Main) startDevice(ctx context.Context) error {
	cfg := m.Config
	devLog := m.Logger.With("component", "device")
	opts := device.Options{
		Username:    cfg.Device.Username,
		Password:    cfg.Device.Password,
		ClientID:    cfg.Device.ClientID,
		StatusTopic: cfg.Device.StatusTopic,
		Logger:      devLog,
		Hints: device.Hints{
			Credentials: "--username and --password (or env PIMQTT_PASSWORD, or --device-password-file; in the config file device.username and device.password_file)",
			ClientID:    "--client-id (device.client_id)",
		},
	}
	opts.Outputs, opts.Inputs = m.deviceLines()
	if m.store != nil {
		opts.Store = m.store
	}
	if cfg.Device.TelemetryInterval > 0 {
		dataDir := cfg.Device.DataDir
		opts.Telemetry = &device.Telemetry{
			Topic:    cfg.Device.Prefix + "/telemetry",
			Interval: cfg.Device.TelemetryInterval.D(),
			Read:     func() any { return telemetry.Read(dataDir) },
		}
	}
	if cfg.HomeAssistant.Discovery {
		// Published before Ready, so before any network listener opens.
		opts.Discovery = &device.Discovery{
			Prefix:           cfg.HomeAssistant.Prefix,
			Version:          moduleVersion(),
			ConfigurationURL: m.pageURL(nil),
			PerComponent:     cfg.HomeAssistant.PerComponent,
		}
	}
	label := "in-process"
	if m.broker != nil {
		opts.Dial = func(ctx context.Context) (net.Conn, error) { return m.broker.DialInMemory(ctx) }
		opts.BrokerLabel = label
	} else {
		label = strings.Join(cfg.Device.Brokers, " ")
		brokers, err := m.netBrokers()
		if err != nil {
			return err
		}
		opts.Brokers = brokers
	}
	var err error
	if m.device, err = device.New(opts); err != nil {
		return err
	}
	devLog.Info("device starting", "broker", label, "outputs", len(opts.Outputs), "inputs", len(opts.Inputs))
	if err := m.device.Start(ctx); err != nil {
		_ = m.closeDevice()
		return err
	}
	if m.broker != nil {
		m.waitReady(ctx, devLog)
	}
	return nil
}

// netBrokers reaches the brokers of device-only mode, in order.
func (m *Main) netBrokers() ([]device.Broker, error) {
	cfg := m.Config
	var brokers []device.Broker
	for i, u := range cfg.Device.Brokers {
		dial, err := netDial(u, cfg.Device.CAFile, len(cfg.Device.Brokers))
		if err != nil {
			return nil, cfg.Wrap(fmt.Sprintf("device.broker[%d]", i), err)
		}
		brokers = append(brokers, device.Broker{Label: redactURL(u), Dial: dial})
	}
	return brokers, nil
}

// firstReachable dials the brokers in order and returns the first
// connection made: the page's way of following the device's failover.
func firstReachable(brokers []device.Broker) device.DialFunc {
	return func(ctx context.Context) (net.Conn, error) {
		var errs []error
		for _, b := range brokers {
			c, err := b.Dial(ctx)
			if err == nil {
				return c, nil
			}
			errs = append(errs, fmt.Errorf("%s: %w", b.Label, err))
			if ctx.Err() != nil {
				break
			}
		}
		return nil, errors.Join(errs...)
	}
}

// netDial reaches one broker by URL. Among several brokers a CA file is
// for the TLS ones; a single plain broker given a CA file is refused (the
// user meant mqtts://).
func netDial(brokerURL, caFile string, among int) (device.DialFunc, error) {
	var opts []device.DialOption
	if caFile != "" && (among == 1 || isTLSURL(brokerURL)) {
		opts = append(opts, device.WithCAFile(caFile))
	}
	return device.NetDialer(brokerURL, 10*time.Second, opts...)
}

// isTLSURL says whether a broker URL's scheme is one of TLS's.
func isTLSURL(s string) bool {
	u, err := url.Parse(s)
	if err != nil {
		return false
	}
	switch strings.ToLower(u.Scheme) {
	case "mqtts", "ssl", "tls", "wss":
		return true
	}
	return false
}

// redactURL hides a password a URL carries, for logs.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	return s
}

// closeDevice says goodbye first, so the device's "Off" status still
// reaches the broker.
func (m *Main) closeDevice() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := m.device.Close(ctx); err != nil {
		// The broker is gone or slow: it will publish the device's will
		// instead. The line is safe either way, so this is no failure.
		m.Logger.Warn("device could not say goodbye to the broker", "error", err)
	}
	m.device = nil
	return nil
}

// deviceReadyTimeout bounds how long the network listeners wait for the
// in-process device; it only runs out when something is badly wrong.
const deviceReadyTimeout = 5 * time.Second

// waitReady returns once the device has subscribed to its command topics
// and published its retained status and state, so that a command sent the
// moment the port answers is never lost. A device that is not ready in
// time does not keep phones out; that is logged.
func (m *Main) waitReady(ctx context.Context, log *slog.Logger) {
	t := time.NewTimer(deviceReadyTimeout)
	defer t.Stop()
	select {
	case <-m.device.Ready():
	case <-t.C:
		log.Warn("device not subscribed yet; opening the network listeners anyway, commands may be missed until it is",
			"waited", deviceReadyTimeout)
	case <-ctx.Done():
	}
}

// openLines requests every configured line, restoring remembered output
// levels where initial = restore asks for it. On error it releases what
// it had opened.
func (m *Main) openLines(context.Context) (err error) {
	defer func() {
		if err != nil {
			_ = m.closeLines()
		}
	}()
	cfg := m.Config
	log := m.Logger.With("component", "device")
	m.outputs = make(map[string]gpio.Output)
	if cfg.UseShorthand() {
		line := m.Line
		if line == nil {
			var err error
			if line, err = gpio.OpenOutput(cfg.Device.GPIO, gpio.WithLogger(log)); err != nil {
				return cfg.Wrap("device.gpio", err)
			}
		}
		m.outputs["led"] = line
	}
	for i, o := range cfg.Outputs {
		key := fmt.Sprintf("output[%d]", i)
		opts := []gpio.Option{gpio.WithLogger(log.With("output", o.Name))}
		if o.ActiveLow {
			opts = append(opts, gpio.WithActiveLow())
		}
		switch o.Initial {
		case config.InitialOn:
			opts = append(opts, gpio.WithInitialValue(1))
		case config.InitialRestore:
			if m.store == nil {
				store, err := state.Open(filepath.Join(cfg.Device.DataDir, "state.json"), log)
				if err != nil {
					return cfg.Wrap("device.data_dir", fmt.Errorf("initial = restore (output %s) needs a writable directory: %w", o.Name, err))
				}
				m.store = store
			}
			v, _ := m.store.Get(o.Name)
			opts = append(opts, gpio.WithInitialValue(v))
		}
		line, err := gpio.OpenOutput(o.Line, opts...)
		if err != nil {
			return cfg.Wrap(key+".line", err)
		}
		m.outputs[o.Name] = line
	}
	for i, in := range cfg.Inputs {
		opts := []gpio.Option{gpio.WithLogger(log.With("input", in.Name))}
		if in.ActiveLow {
			opts = append(opts, gpio.WithActiveLow())
		}
		switch in.Pull {
		case config.PullUp:
			opts = append(opts, gpio.WithPull(gpio.PullUp))
		case config.PullDown:
			opts = append(opts, gpio.WithPull(gpio.PullDown))
		}
		if in.Debounce != 0 {
			opts = append(opts, gpio.WithDebounce(in.Debounce.D()))
		}
		line, err := gpio.OpenInput(in.Line, opts...)
		if err != nil {
			return cfg.Wrap(fmt.Sprintf("input[%d].line", i), err)
		}
		m.inputs = append(m.inputs, line)
	}
	return nil
}

// deviceLines describes the open lines to the device, with their topics.
func (m *Main) deviceLines() ([]device.Output, []device.Input) {
	cfg := m.Config
	prefix := cfg.Device.Prefix
	var outputs []device.Output
	if cfg.UseShorthand() {
		outputs = append(outputs, device.Output{Name: "led", CommandTopic: cfg.Device.Topic, Line: m.outputs["led"]})
	}
	for _, o := range cfg.Outputs {
		topic := prefix + "/" + o.Name
		outputs = append(outputs, device.Output{Name: o.Name, CommandTopic: topic, StateTopic: topic + "/state", Line: m.outputs[o.Name],
			Keep: o.Initial == config.InitialRestore})
	}
	var inputs []device.Input
	for i, in := range cfg.Inputs {
		line := m.inputs[i]
		di := device.Input{Name: in.Name, StateTopic: prefix + "/" + in.Name + "/state", Line: line}
		if _, simulated := line.(device.Driver); simulated {
			// Nothing outside moves a simulated input: MQTT clients play
			// the button or the door there instead.
			di.SimTopic = prefix + "/" + in.Name + "/sim"
		}
		inputs = append(inputs, di)
	}
	return outputs, inputs
}

// closeLines releases the lines; the state file keeps the last commanded
// levels. Outputs with initial = restore are released without being driven,
// so a restart does not switch what they drive (openLines requests them again
// at the remembered level); every other output is left at 0, its defined
// state, first.
func (m *Main) closeLines() error {
	keep := make(map[string]bool)
	for _, o := range m.Config.Outputs {
		keep[o.Name] = o.Initial == config.InitialRestore
	}
	var errs []error
	kept := 0
	for name, line := range m.outputs {
		if keep[name] {
			kept++
		} else if err := line.SetValue(0); err != nil {
			errs = append(errs, fmt.Errorf("output %s: %w", name, err))
		}
		errs = append(errs, line.Close())
	}
	outputs, inputs := len(m.outputs), len(m.inputs)
	m.outputs = nil
	for _, in := range m.inputs {
		errs = append(errs, in.Close())
	}
	m.inputs = nil
	m.Logger.Info("lines released; outputs left at 0 except those with initial = restore, released at their level",
		"outputs", outputs, "kept", kept, "inputs", inputs)
	if m.store != nil {
		errs = append(errs, m.store.Close())
		m.store = nil
	}
	return errors.Join(errs...)
}

// checkConfig finds what Load cannot: line specs and listener rules, which
// belong to gpio and to the assembly, and files that are not there yet
// (warnings: a fresh machine has no password file before pimqtt passwd).
func checkConfig(cfg config.Config, stderr io.Writer) error {
	for _, n := range cfg.Notices() {
		fmt.Fprintln(stderr, "notice:", n)
	}
	warnings, err := config.Check(cfg)
	for _, w := range warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	errs := []error{err}
	if cfg.Mode != config.ModeBroker {
		if cfg.UseShorthand() {
			_, err := gpio.ParseSpec(cfg.Device.GPIO)
			errs = append(errs, cfg.Wrap("device.gpio", err))
		}
		for i, o := range cfg.Outputs {
			_, err := gpio.ParseSpec(o.Line)
			errs = append(errs, cfg.Wrap(fmt.Sprintf("output[%d].line", i), err))
		}
		for i, in := range cfg.Inputs {
			_, err := gpio.ParseSpec(in.Line)
			errs = append(errs, cfg.Wrap(fmt.Sprintf("input[%d].line", i), err))
		}
	}
	if cfg.Mode != config.ModeDevice {
		_, err := brokerListeners(cfg)
		errs = append(errs, err, checkBridges(cfg))
	}
	return errors.Join(errs...)
}

// brokerListeners applies mosquitto 2.0's safe default: with no password
// file the default listeners bind loopback only (127.0.0.1, and ::1 where
// the machine has it), and an explicit non-loopback address needs
// allow_anonymous.
func brokerListeners(cfg config.Config) ([]broker.ListenerConfig, error) {
	var out []broker.ListenerConfig
	open := cfg.Broker.PasswordFile != "" || cfg.Broker.AllowAnonymous
	for i, l := range cfg.Broker.Listeners {
		kind := map[config.ListenerKind]string{
			config.KindMQTT: broker.TCP, config.KindWS: broker.WebSocket, config.KindMQTTS: broker.MQTTS, config.KindWSS: broker.WSS,
		}[l.Kind]
		listener := func(addr string, optional bool) broker.ListenerConfig {
			lc := broker.ListenerConfig{Kind: kind, Addr: addr, Optional: optional}
			if l.Kind.TLS() {
				lc.CertFile, lc.KeyFile = cfg.ListenerCert(l)
				lc.ClientCAFile = cfg.ListenerClientCA(l)
			}
			if kind == broker.WebSocket || kind == broker.WSS {
				lc.AllowedOrigins = cfg.Broker.WSOrigins
			}
			return lc
		}
		host, port, err := net.SplitHostPort(l.Address)
		if err != nil {
			return nil, cfg.Wrap(fmt.Sprintf("broker.listener[%d].address", i), fmt.Errorf("%q: %w", l.Address, err))
		}
		switch {
		case open:
			out = append(out, listener(l.Address, l.Optional))
		case l.Default && host == "":
			out = append(out,
				listener(net.JoinHostPort("127.0.0.1", port), false),
				listener(net.JoinHostPort("::1", port), true))
		case !isLoopback(host):
			return nil, cfg.Wrap(fmt.Sprintf("broker.listener[%d].address", i), fmt.Errorf(
				"%s listener %q is reachable from the network but there is no password file: "+
					"make one with `pimqtt passwd -c /etc/pimqtt/passwd USER` (or mosquitto_passwd) and pass --password-file /etc/pimqtt/passwd "+
					"(broker.password_file), or pass --allow-anonymous (broker.allow_anonymous) to let anyone on the network connect", l.Kind, l.Address))
		default:
			out = append(out, listener(l.Address, l.Optional))
		}
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

// logAccess says once, in the terms of the flags, who may connect; the
// broker then logs each address it actually bound.
func logAccess(log *slog.Logger, cfg config.Config, listeners []broker.ListenerConfig) {
	addrs := make([]string, 0, len(listeners))
	loopbackOnly := true
	for _, l := range listeners {
		addrs = append(addrs, l.Kind+" "+l.Addr)
		host, _, _ := net.SplitHostPort(l.Addr)
		loopbackOnly = loopbackOnly && isLoopback(host)
	}
	list := strings.Join(addrs, ", ")
	switch {
	case len(listeners) == 0:
		log.Warn("no listeners: only the in-process device can reach the broker")
	case cfg.Broker.PasswordFile == "" && loopbackOnly:
		log.Warn("no --password-file: listening on loopback only, where anyone on this machine may connect without a password",
			"listeners", list,
			"hint", "for phones on the LAN make a password file with: pimqtt passwd -c /etc/pimqtt/passwd USER, then run with --password-file /etc/pimqtt/passwd")
	case cfg.Broker.PasswordFile == "":
		log.Warn("--allow-anonymous without --password-file: anyone who can reach these listeners over the network may connect, publish and subscribe without a password",
			"listeners", list)
	case cfg.Broker.AllowAnonymous:
		log.Warn("--allow-anonymous: clients without a user name may connect; a client that gives one must match the password file",
			"listeners", list, "password_file", cfg.Broker.PasswordFile)
	default:
		log.Info("only users in the password file may connect", "listeners", list, "password_file", cfg.Broker.PasswordFile)
	}
}

// brokerLimits carries the configured limits over to the broker.
func brokerLimits(l config.Limits) broker.Limits {
	return broker.Limits{
		MaxPacketSize:         l.MaxPacketSize,
		MaxConnectSize:        l.MaxConnectSize,
		ConnectTimeout:        l.ConnectTimeout.D(),
		MaxClients:            l.MaxClients,
		MaxPendingConnections: l.MaxPending,
		MaxSessionExpiry:      l.MaxSessionExpiry.D(),
		MaxInflight:           l.MaxInflight,
		MaxQueued:             l.MaxQueued,
		MaxKeepAlive:          l.MaxKeepAlive.D(),
		MaxTopicLength:        l.MaxTopicLength,
		MaxTopicLevels:        l.MaxTopicLevels,
		MaxUserProperties:     l.MaxUserProperties,
	}
}

// withPortHint adds what a newcomer needs when a port is taken: on a
// Debian or Raspberry Pi OS machine it is usually the mosquitto service,
// which Debian starts as soon as the mosquitto package is installed.
func withPortHint(err error) error {
	if !errors.Is(err, syscall.EADDRINUSE) {
		return err
	}
	return fmt.Errorf("%w (another program listens there; if it is Debian's mosquitto service: "+
		"sudo systemctl disable --now mosquitto, or choose other ports with --listen and --ws-listen)", err)
}
