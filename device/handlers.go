package device

import (
	"context"
	"fmt"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// excerptLen bounds how much of an unknown payload reaches the log.
const excerptLen = 32

// onMessage routes a message to its output's command handler, or to onStatus. Topics hold no
// wildcards, so a message's topic is exactly the filter it matched.
func (d *Device) onMessage(c mqtt.Client, m mqtt.Message) {
	if m.Topic() == d.statusTopic {
		d.onStatus(c, m)
		return
	}
	if o := d.byCommand[m.Topic()]; o != nil {
		d.onCommand(o, m)
		return
	}
	if in := d.bySim[m.Topic()]; in != nil {
		d.onSim(in, m)
		return
	}
	d.log.Debug("message on an unknown topic ignored", "topic", m.Topic())
}

// onSim drives a simulated input from a message on its SimTopic. The line then reports the
// change on its Events, and the state is published from there as for a real edge. Like
// onCommand it must not block.
func (d *Device) onSim(in *input, m mqtt.Message) {
	if d.ctx.Err() != nil {
		in.log.Debug("simulation ignored: device closing", "topic", m.Topic())
		return
	}
	payload := m.Payload()
	current, err := in.line.Value()
	if err != nil {
		in.log.Error("read input failed; simulation ignored", "topic", m.Topic(), "err", err)
		return
	}
	next, err := ParseCommand(payload, current)
	if err != nil {
		in.log.Warn("unknown payload", "topic", m.Topic(),
			"payload", fmt.Sprintf("%q", payload[:min(len(payload), excerptLen)]),
			"len", len(payload), "err", err)
		return
	}
	if err := in.driver.Drive(next); err != nil {
		in.log.Error("drive simulated input failed", "topic", m.Topic(), "value", next, "err", err)
		return
	}
	in.log.Info("simulated input driven", "topic", m.Topic(), "value", next)
}

// onCommand handles a command for output o. paho runs handlers one at a time on its router
// goroutine (OrderMatters), so this must not block on the network: it drives the line, tells
// the store, and only asks the state publisher to report, never waiting on a token.
func (d *Device) onCommand(o *output, m mqtt.Message) {
	payload := m.Payload()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		o.log.Debug("command ignored: device closing", "topic", m.Topic())
		return
	}
	current, err := o.line.Value()
	if err != nil {
		d.mu.Unlock()
		o.log.Error("read line failed; command ignored", "topic", m.Topic(), "err", err)
		return
	}
	next, err := ParseCommand(payload, current)
	if err != nil {
		d.mu.Unlock()
		o.log.Warn("unknown payload", "topic", m.Topic(),
			"payload", fmt.Sprintf("%q", payload[:min(len(payload), excerptLen)]),
			"len", len(payload), "err", err)
		return
	}
	err = o.line.SetValue(next)
	d.mu.Unlock()
	switch {
	case err != nil:
		o.log.Error("set line failed", "topic", m.Topic(), "value", next, "err", err)
	case next != current:
		o.log.Info("line changed", "topic", m.Topic(), "value", next)
	default:
		o.log.Debug("line unchanged", "topic", m.Topic(), "value", next)
	}
	if err == nil && d.store != nil {
		d.store.Set(o.name, next)
	}
	// Publish even when unchanged or failed: the read-back is the truth, and a client that
	// re-sends a command gets the state again.
	o.dirty.Store(true)
	d.requestPublish()
}

// onStatus repairs a late will. When a connection dies and the device reconnects before the
// broker has noticed, the broker publishes the old connection's will ({"status": "Off"}) after
// the new connection's On — at session takeover, or when it finally sees the old socket close
// (observed with Mochi over net.Pipe) — and the retained status would say Off while the device
// is online. A live (not retained) Off while running therefore triggers a fresh On. Retained
// messages are ignored: they arrive on subscribing, and the connection's own On follows anyway.
func (d *Device) onStatus(_ mqtt.Client, m mqtt.Message) {
	if m.Retained() || d.ctx.Err() != nil || string(m.Payload()) != statusOff {
		return
	}
	d.log.Info("status Off seen while online (late will?); announcing On again", "topic", m.Topic())
	d.flagsMu.Lock()
	d.announce = true
	d.flagsMu.Unlock()
	d.requestPublish()
}

// waitToken waits for a paho token without the risk of waiting forever.
func waitToken(ctx context.Context, tok mqtt.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}
