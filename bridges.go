package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/pimqtt/pimqtt/bridge"
	"github.com/pimqtt/pimqtt/config"
)

// bridgeOptions maps the configured bridges onto the bridge package's
// options, with errors that name the key or flag; without a broker (config
// check) Local stays nil.
func (m *Main) bridgeOptions() ([]bridge.Options, error) {
	cfg := m.Config
	var out []bridge.Options
	var errs []error
	for i, br := range cfg.Bridges {
		key := fmt.Sprintf("bridge[%d]", i)
		opts := bridge.Options{
			Name:              br.Name,
			ClientID:          br.ClientID,
			Username:          br.Username,
			Password:          br.Password,
			CleanSession:      br.CleanSession,
			QueueLimit:        br.QueueLimit,
			QueueLimitSetting: key + ".queue_limit",
			Logger:            m.Logger,
		}
		for j, a := range br.Addresses {
			dial, err := netDial(a, br.CAFile, len(br.Addresses))
			if err != nil {
				errs = append(errs, cfg.Wrap(fmt.Sprintf("%s.address[%d]", key, j), err))
				continue
			}
			opts.Remotes = append(opts.Remotes, bridge.Remote{Label: redactURL(a), Dial: bridge.DialFunc(dial)})
		}
		for j, line := range br.Topics {
			t, err := bridge.ParseTopic(line)
			if err != nil {
				errs = append(errs, cfg.Wrap(fmt.Sprintf("%s.topic[%d]", key, j), err))
				continue
			}
			opts.Topics = append(opts.Topics, t)
		}
		if m.broker != nil {
			opts.Local = m.broker.DialInMemory
		}
		out = append(out, opts)
	}
	return out, errors.Join(errs...)
}

// startBridges starts every bridge; each connects to its remote in the
// background, so a remote that is down never holds up the Pi.
func (m *Main) startBridges(ctx context.Context) error {
	all, err := m.bridgeOptions()
	if err != nil {
		return err
	}
	for _, opts := range all {
		b, err := bridge.New(opts)
		if err != nil {
			return m.Config.Wrap("bridge", err)
		}
		if err := b.Start(ctx); err != nil {
			_ = b.Close()
			return fmt.Errorf("bridge %s: %w", opts.Name, err)
		}
		m.bridges = append(m.bridges, b)
	}
	return nil
}

// closeBridges closes the bridges, newest first; each says "0" on its
// state topic and lets what it queued go out for a moment if connected.
func (m *Main) closeBridges() error {
	var errs []error
	for i := len(m.bridges) - 1; i >= 0; i-- {
		errs = append(errs, m.bridges[i].Close())
	}
	m.bridges = nil
	return errors.Join(errs...)
}

// checkBridges is config check's look at the bridges: topics that parse,
// addresses that can be dialled.
func checkBridges(cfg config.Config) error {
	m := &Main{Config: cfg, Logger: slog.New(slog.DiscardHandler)}
	_, err := m.bridgeOptions()
	return err
}
