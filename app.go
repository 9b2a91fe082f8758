package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"syscall"
	"time"

	"github.com/pimqtt/pimqtt/broker"
	"github.com/pimqtt/pimqtt/device"
	"github.com/pimqtt/pimqtt/gpio"
	"github.com/pimqtt/pimqtt/state"
)

// Modes of operation.
const (
	ModeAll    = "all"
	ModeBroker = "broker"
	ModeDevice = "device"
)

// Config is everything the command line decides.
type Config struct {
	Mode string

	// Broker side.
	Listeners      []broker.ListenerConfig
	PasswordFile   string
	AllowAnonymous bool
	Limits         broker.Limits

	// Device side.
	BrokerURL   string
	Username    string
	Password    string
	ClientID    string
	StatusTopic string
	// Topic and GPIO are the one-LED shorthand: an output named "led"
	// taking commands on Topic, used when UseShorthand is set.
	Topic        string
	GPIO         string
	UseShorthand bool
	// Outputs and Inputs are the named lines (--output, --input), with
	// topics under Prefix.
	Outputs []gpio.LineFlag
	Inputs  []gpio.LineFlag
	Prefix  string
	// DataDir holds the state file that initial=restore reads.
	DataDir string
}

// Main is the running program: what main() starts and end-to-end tests
// drive. Run starts it, Close stops it the way SIGTERM does.
type Main struct {
	Config Config
	Logger *slog.Logger
	// Line, when set, is driven instead of the line Config.GPIO names;
	// benchmarks use it to observe each change. Main closes it.
	Line gpio.Output

	broker  *broker.Broker
	outputs map[string]gpio.Output
	inputs  []gpio.Input
	store   *state.File
	device  *device.Device
}

// Run starts the broker and the device as the mode asks. It returns once
// they are started; the device keeps reconnecting in the background.
func (m *Main) Run(ctx context.Context) (err error) {
	if m.Logger == nil {
		m.Logger = slog.Default()
	}
	defer func() {
		if err != nil {
			_ = m.Close()
		}
	}()
	cfg := m.Config
	if cfg.ClientID == "" {
		cfg.ClientID = device.DefaultClientID()
	}
	if cfg.Mode != ModeDevice {
		bopts := broker.Options{
			Listeners:      cfg.Listeners,
			PasswordFile:   cfg.PasswordFile,
			AllowAnonymous: cfg.AllowAnonymous,
			Limits:         cfg.Limits,
			Logger:         m.Logger.With("component", "broker"),
		}
		if cfg.Mode == ModeAll {
			// A network client presenting the device's id would take its
			// session over and leave the LED deaf.
			bopts.DeviceClientID = cfg.ClientID
		}
		m.broker, err = broker.New(bopts)
		if err != nil {
			return withPortHint(err)
		}
		// Start serves the in-memory listener only; network clients are
		// let in by OpenNetwork, once the device is listening.
		if err = m.broker.Start(); err != nil {
			return err
		}
	}
	if cfg.Mode == ModeBroker {
		m.broker.OpenNetwork()
		return nil
	}

	devLog := m.Logger.With("component", "device")
	opts := device.Options{
		Username:    cfg.Username,
		Password:    cfg.Password,
		ClientID:    cfg.ClientID,
		StatusTopic: cfg.StatusTopic,
		Logger:      devLog,
		Hints: device.Hints{
			Credentials: "--username and --password (or env PIMQTT_PASSWORD)",
			ClientID:    "--client-id",
		},
	}
	if opts.Outputs, opts.Inputs, err = m.openLines(devLog); err != nil {
		return err
	}
	if m.store != nil {
		opts.Store = m.store
	}
	dial, label := m.dialer()
	if dial == nil {
		if dial, err = device.NetDialer(cfg.BrokerURL, 10*time.Second); err != nil {
			return err
		}
	}
	opts.Dial, opts.BrokerLabel = dial, label
	if m.device, err = device.New(opts); err != nil {
		return err
	}
	devLog.Info("device starting", "broker", label, "outputs", len(opts.Outputs), "inputs", len(opts.Inputs))
	if err = m.device.Start(ctx); err != nil {
		return err
	}
	if m.broker != nil {
		m.openWhenReady(ctx, devLog)
	}
	return nil
}

// deviceReadyTimeout bounds how long the network listeners wait for the
// in-process device; it only runs out when something is badly wrong.
const deviceReadyTimeout = 5 * time.Second

// openWhenReady opens the network listeners once the device has
// subscribed to its command topics and published its retained status and
// state, so that "listening" means "the LED obeys": a command sent the
// moment the port answers is never lost. A device that is not ready in
// time does not keep phones out; that is logged.
func (m *Main) openWhenReady(ctx context.Context, log *slog.Logger) {
	t := time.NewTimer(deviceReadyTimeout)
	defer t.Stop()
	select {
	case <-m.device.Ready():
	case <-t.C:
		log.Warn("device not subscribed yet; opening the network listeners anyway, commands may be missed until it is",
			"waited", deviceReadyTimeout)
	case <-ctx.Done():
	}
	m.broker.OpenNetwork()
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

// openLines requests every configured line, restoring remembered output
// levels where initial=restore asks for it.
func (m *Main) openLines(log *slog.Logger) ([]device.Output, []device.Input, error) {
	cfg := m.Config
	m.outputs = make(map[string]gpio.Output)
	var outputs []device.Output
	if cfg.UseShorthand {
		line := m.Line
		if line == nil {
			var err error
			if line, err = gpio.OpenOutput(cfg.GPIO, gpio.WithLogger(log)); err != nil {
				return nil, nil, fmt.Errorf("--gpio %s: %w", cfg.GPIO, err)
			}
		}
		m.outputs["led"] = line
		outputs = append(outputs, device.Output{Name: "led", CommandTopic: cfg.Topic, Line: line})
	}
	for _, f := range cfg.Outputs {
		opts := append(f.Options(), gpio.WithLogger(log.With("output", f.Name)))
		if f.Initial == gpio.InitialRestore {
			if m.store == nil {
				store, err := state.Open(filepath.Join(cfg.DataDir, "state.json"), log)
				if err != nil {
					return nil, nil, fmt.Errorf("--output %s: initial=restore needs a writable --data-dir: %w", f.Name, err)
				}
				m.store = store
			}
			v, _ := m.store.Get(f.Name)
			opts = append(opts, gpio.WithInitialValue(v))
		}
		if _, dup := m.outputs[f.Name]; dup {
			return nil, nil, fmt.Errorf("--output %s: the name is used twice", f.Name)
		}
		line, err := gpio.OpenOutput(f.Line, opts...)
		if err != nil {
			return nil, nil, fmt.Errorf("--output %s: %w", f.Name, err)
		}
		m.outputs[f.Name] = line
		topic := cfg.Prefix + "/" + f.Name
		outputs = append(outputs, device.Output{Name: f.Name, CommandTopic: topic, StateTopic: topic + "/state", Line: line})
	}
	var inputs []device.Input
	for _, f := range cfg.Inputs {
		line, err := gpio.OpenInput(f.Line, append(f.Options(), gpio.WithLogger(log.With("input", f.Name)))...)
		if err != nil {
			return nil, nil, fmt.Errorf("--input %s: %w", f.Name, err)
		}
		m.inputs = append(m.inputs, line)
		in := device.Input{Name: f.Name, StateTopic: cfg.Prefix + "/" + f.Name + "/state", Line: line}
		if _, simulated := line.(device.Driver); simulated {
			// Nothing outside moves a simulated input: MQTT clients play
			// the button or the door there instead.
			in.SimTopic = cfg.Prefix + "/" + f.Name + "/sim"
		}
		inputs = append(inputs, in)
	}
	return outputs, inputs, nil
}

// dialer picks how the device reaches its broker: through memory when the
// broker is in this process, else over the network to --broker.
func (m *Main) dialer() (device.DialFunc, string) {
	if m.broker != nil {
		return func(ctx context.Context) (net.Conn, error) { return m.broker.DialInMemory(ctx) }, "in-process"
	}
	return nil, m.Config.BrokerURL
}

// Reload re-reads the password file (SIGHUP).
func (m *Main) Reload() error {
	if m.broker == nil {
		return nil
	}
	return m.broker.Reload()
}

// BrokerAddrs returns the broker's bound listeners (none in device mode).
func (m *Main) BrokerAddrs() []broker.Addr {
	if m.broker == nil {
		return nil
	}
	return m.broker.Addrs()
}

// Close stops the device first, so its "Off" status still reaches the
// broker, then the broker, then releases the line in its safe state.
func (m *Main) Close() error {
	var errs []error
	if m.device != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := m.device.Close(ctx); err != nil {
			// The broker is gone or slow: it will publish the device's will
			// instead. The line is safe either way, so this is no failure.
			m.Logger.Warn("device could not say goodbye to the broker", "error", err)
		}
		cancel()
		m.device = nil
	}
	if m.broker != nil {
		errs = append(errs, m.broker.Close())
		m.broker = nil
	}
	// Lines are held until the end; outputs are left at 0, their defined
	// state, and the state file keeps the last commanded levels.
	for name, line := range m.outputs {
		if err := line.SetValue(0); err != nil {
			errs = append(errs, fmt.Errorf("output %s: %w", name, err))
		}
		errs = append(errs, line.Close())
	}
	m.outputs = nil
	for _, in := range m.inputs {
		errs = append(errs, in.Close())
	}
	m.inputs = nil
	if m.store != nil {
		errs = append(errs, m.store.Close())
		m.store = nil
	}
	return errors.Join(errs...)
}
