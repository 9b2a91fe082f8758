package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/pimqtt/pimqtt/config"
	"github.com/pimqtt/pimqtt/systemd"
)

// serviceStatus is the line `systemctl status pimqtt` shows once pimqtt is
// ready: the addresses it listens on, as bound (a port 0 resolved).
func (m *Main) serviceStatus() string {
	var parts []string
	for _, a := range m.BrokerAddrs() {
		parts = append(parts, a.Kind+" "+a.Addr.String())
	}
	for _, a := range m.PageAddrs() {
		parts = append(parts, "page "+a.String())
	}
	s := "listening on " + strings.Join(parts, ", ")
	if len(parts) == 0 {
		s = "running, no listeners"
	}
	if m.Config.Mode == config.ModeDevice {
		s += "; device of " + m.Config.BrokerURL()
	}
	return s
}

// watchdogTicks ticks at the interval the service manager wants pings
// (half of WatchdogSec), or never when there is no watchdog; stop frees it.
func watchdogTicks(n *systemd.Notifier) (ticks <-chan time.Time, interval time.Duration, stop func()) {
	d, ok := n.WatchdogInterval()
	if !ok {
		return nil, 0, func() {}
	}
	t := time.NewTicker(d)
	return t.C, d, t.Stop
}

// pingWatchdog sends WATCHDOG=1 only while the program works: the loop
// that handles the signals runs (it calls this), and the broker, when
// there is one, still accepts a connection within timeout (an in-memory
// one, which its accept loop takes like any other and which costs a
// debug line). Withheld pings let systemd restart a wedged pimqtt.
func (m *Main) pingWatchdog(ctx context.Context, sd *systemd.Notifier, timeout time.Duration) {
	if err := m.healthy(ctx, timeout); err != nil {
		if ctx.Err() == nil {
			m.Logger.Warn("withholding the systemd watchdog ping: systemd restarts pimqtt if this lasts", "error", err)
		}
		return
	}
	notified(m.Logger, "WATCHDOG=1", sd.Watchdog())
}

// healthy checks that the broker accepts connections within timeout.
func (m *Main) healthy(ctx context.Context, timeout time.Duration) error {
	if m.broker == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := m.broker.DialInMemory(ctx)
	if err != nil {
		return fmt.Errorf("the broker accepts no connection: %w", err)
	}
	return c.Close()
}

// notified logs a notification systemd did not get: the service manager
// then shows a wrong state (or the watchdog restarts pimqtt), so say why.
func notified(log *slog.Logger, what string, err error) {
	if err != nil {
		log.Warn("systemd notification failed", "notification", what, "error", err)
	}
}
