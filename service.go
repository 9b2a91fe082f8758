package main

import (
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
func watchdogTicks(n *systemd.Notifier) (ticks <-chan time.Time, stop func()) {
	d, ok := n.WatchdogInterval()
	if !ok {
		return nil, func() {}
	}
	t := time.NewTicker(d)
	return t.C, t.Stop
}

// notified logs a notification systemd did not get: the service manager
// then shows a wrong state (or the watchdog restarts pimqtt), so say why.
func notified(log *slog.Logger, what string, err error) {
	if err != nil {
		log.Warn("systemd notification failed", "notification", what, "error", err)
	}
}
