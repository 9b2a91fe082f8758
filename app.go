package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/pimqtt/pimqtt/broker"
	"github.com/pimqtt/pimqtt/device"
	"github.com/pimqtt/pimqtt/gpio"
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
	Topic       string
	StatusTopic string
	GPIO        string
}

// Main is the running program: what main() starts and end-to-end tests
// drive. Run starts it, Close stops it the way SIGTERM does.
type Main struct {
	Config Config
	Logger *slog.Logger
	// Line, when set, is driven instead of the line Config.GPIO names;
	// benchmarks use it to observe each change. Main closes it.
	Line gpio.Output

	broker *broker.Broker
	line   gpio.Output
	device *device.Device
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
	if cfg.Mode != ModeDevice {
		m.broker, err = broker.New(broker.Options{
			Listeners:      cfg.Listeners,
			PasswordFile:   cfg.PasswordFile,
			AllowAnonymous: cfg.AllowAnonymous,
			Limits:         cfg.Limits,
			Logger:         m.Logger.With("component", "broker"),
		})
		if err != nil {
			return err
		}
		if err = m.broker.Start(); err != nil {
			return err
		}
	}
	if cfg.Mode == ModeBroker {
		return nil
	}

	devLog := m.Logger.With("component", "device")
	m.line = m.Line
	if m.line == nil {
		if m.line, err = gpio.OpenOutput(cfg.GPIO, gpio.WithLogger(devLog)); err != nil {
			return fmt.Errorf("gpio: %w", err)
		}
	}
	dial, label := m.dialer()
	if dial == nil {
		dial, err = device.NetDialer(cfg.BrokerURL, 10*time.Second)
		if err != nil {
			return err
		}
	}
	m.device, err = device.New(device.Options{
		Dial:        dial,
		BrokerLabel: label,
		Username:    cfg.Username,
		Password:    cfg.Password,
		ClientID:    cfg.ClientID,
		Topic:       cfg.Topic,
		StatusTopic: cfg.StatusTopic,
		Line:        m.line,
		Logger:      devLog,
	})
	if err != nil {
		return err
	}
	devLog.Info("device starting", "broker", label, "line", m.line.String(), "topic", cfg.Topic)
	return m.device.Start(ctx)
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
	if m.line != nil {
		errs = append(errs, m.line.SetValue(0), m.line.Close())
		m.line = nil
	}
	return errors.Join(errs...)
}
