package device

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// connectLoop connects, waits for the connection to be lost and reconnects, until Close.
//
// paho's own reconnection (AutoReconnect, ConnectRetry) is off because it leaks: it keeps the
// message id of every QoS 1 publish still in flight when a connection dies, for a resend that
// never comes with a clean session and discardStore, so each outage took a few more ids until
// all 65535 were gone and every publish and subscribe failed. A lost connection without
// AutoReconnect makes paho complete those tokens and free their ids.
//
// Before the first connection, attempts are min(MaxReconnectInterval, firstRetryInterval)
// apart. After a loss, the first attempt waits reconnectGrace and later ones back off
// exponentially from it, up to MaxReconnectInterval.
func (d *Device) connectLoop(c mqtt.Client) {
	defer d.workers.Done()
	var (
		wait        time.Duration // before the next attempt
		failures    int           // failed attempts since the last connection
		reconnected bool          // a connection has been up, so back off after failures
		lastKind    refusal       // of the last failed attempt
	)
	for {
		if !d.sleep(wait) {
			return
		}
		err := d.connect(c)
		if d.ctx.Err() != nil {
			return
		}
		if err == nil {
			failures = 0
			select {
			case <-d.ctx.Done():
				return
			case <-d.lost:
			}
			reconnected = true
			wait = min(reconnectGrace, d.maxBackoff)
			d.log.Info("reconnecting to broker", "after", wait)
			continue
		}
		// Log once per outage, not once per attempt: a broker that is down for an hour would
		// otherwise fill the log. A different kind of failure is news, though: a broker that
		// comes up and then refuses the credentials must say so.
		kind := classifyRefusal(err)
		if failures++; failures == 1 || kind != lastKind {
			d.logConnectFailure(kind, err)
		} else {
			d.log.Debug("connection attempt failed", "err", err, "attempt", failures)
		}
		lastKind = kind
		if reconnected {
			wait = min(max(wait*2, time.Second), d.maxBackoff)
		} else {
			wait = min(d.maxBackoff, firstRetryInterval)
		}
	}
}

// connect makes one connection attempt. It calls Connect under mu, so that no attempt starts
// after Close has set closed and disconnects the client.
func (d *Device) connect(c mqtt.Client) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return ErrClosed
	}
	tok := c.Connect()
	d.mu.Unlock()
	select {
	case <-tok.Done():
		// Only a done token may be looked into: paho sets its return code before Done.
		if err := tok.Error(); err != nil {
			return connectError(tok, err)
		}
		return nil
	case <-d.ctx.Done():
		return d.ctx.Err()
	}
}

// sleep waits for wait, or returns false as soon as the device closes.
func (d *Device) sleep(wait time.Duration) bool {
	if wait <= 0 {
		return d.ctx.Err() == nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-d.ctx.Done():
		return false
	}
}

// onConnectionLost is paho's connection-lost handler; paho runs it in its own goroutine once
// the connection's clean-up (including freeing in-flight message ids) is done.
func (d *Device) onConnectionLost(_ mqtt.Client, err error) {
	if d.ctx.Err() != nil {
		d.log.Debug("connection closed", "err", err)
		return
	}
	d.log.Warn("connection to broker lost", "err", err)
	select {
	case d.lost <- struct{}{}:
	default:
	}
}

// openConn is paho's custom open-connection function: the URL paho holds is a placeholder
// naming one of d.brokers (see placeholderBroker), whose Dial is the real transport.
func (d *Device) openConn(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
	var i int
	if _, err := fmt.Sscanf(u.Hostname(), "broker-%d.", &i); err != nil || i < 0 || i >= len(d.brokers) {
		return nil, fmt.Errorf("dial: %s is not one of the device's brokers", u.Redacted())
	}
	b := d.brokers[i]
	// An attempt may still be under way when Close begins; a closing device dials nothing.
	if err := d.ctx.Err(); err != nil {
		return nil, fmt.Errorf("dial: device closing: %w", err)
	}
	ctx, cancel := context.WithTimeout(d.ctx, connectTimeout)
	defer cancel()
	// Not wrapped with the broker's label: every device log line carries it already, and a
	// dial error names its address itself.
	conn, err := b.Dial(ctx)
	if err != nil {
		if len(d.brokers) > 1 {
			// paho keeps only the last broker's error; the others are said here.
			d.log.Debug("broker unreachable, trying the next", "broker", b.Label, "err", err)
			return nil, fmt.Errorf("%s: %w", b.Label, err)
		}
		return nil, err
	}
	d.connMu.Lock()
	defer d.connMu.Unlock()
	// Checked under connMu so that Close, which cancels ctx before dropping d.conn, either
	// sees this connection or this function sees the cancellation.
	if err := d.ctx.Err(); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("dial: device closing: %w", err)
	}
	d.conn = conn
	d.dialled.Store(int32(i))
	return conn, nil
}

// onConnect runs in its own goroutine on every (re)connection, so waiting for acks is safe
// here. The session is clean, so the subscriptions must be renewed every time, all in one
// SUBSCRIBE; the status On and then every state follow from the publisher goroutine.
func (d *Device) onConnect(c mqtt.Client) {
	if len(d.brokers) > 1 {
		d.log.Info("connected to broker", "client_id", d.clientID, "broker", d.brokers[d.dialled.Load()].Label)
	} else {
		d.log.Info("connected to broker", "client_id", d.clientID)
	}
	// A round still pending from a connection that died before it ran must not close Ready
	// before this connection's SUBACK.
	d.flagsMu.Lock()
	d.readyArm = false
	d.flagsMu.Unlock()
	ctx, cancel := context.WithTimeout(d.ctx, ackTimeout)
	defer cancel()

	gen := d.connGen.Add(1)

	// The device also listens to its own status topic to repair a late will; see onStatus.
	filters := map[string]byte{d.statusTopic: 1}
	for _, o := range d.outputs {
		filters[o.commandTopic] = 1
	}
	for topic := range d.bySim {
		filters[topic] = 1
	}
	failed := d.subscribe(ctx, c, filters, true)
	d.flagsMu.Lock()
	d.announce, d.refresh, d.readyArm = true, true, obeysWithout(failed, d.statusTopic)
	d.flagsMu.Unlock()
	d.requestPublish()
	d.onConnectExtras(c)
	if len(failed) > 0 {
		d.retrySubscribe(c, gen, failed)
	}
}

// obeysWithout says whether the device obeys although the filters in failed are not
// subscribed: only its own status topic may be missing.
func obeysWithout(failed map[string]byte, statusTopic string) bool {
	for topic := range failed {
		if topic != statusTopic {
			return false
		}
	}
	return true
}

// subscribe sends one SUBSCRIBE for filters and returns those the broker refused (SUBACK
// 0x80) or did not answer, logging each at the first attempt (first) and at debug after.
func (d *Device) subscribe(ctx context.Context, c mqtt.Client, filters map[string]byte, first bool) map[string]byte {
	tok := c.SubscribeMultiple(filters, d.onMessage)
	err := waitToken(ctx, tok)
	var granted map[string]byte
	if st, ok := tok.(*mqtt.SubscribeToken); ok && err == nil {
		granted = st.Result()
	}
	failed := map[string]byte{}
	for topic, qos := range filters {
		var why error
		switch {
		case err != nil:
			why = err
		case granted[topic] == 0x80:
			// Not always the ACL: a clustered broker (nats-server) refuses while it cannot
			// create the subscription's consumer yet, e.g. during a leader election.
			why = errors.New("refused by the broker (its ACL, or a cluster that is not ready)")
		default:
			continue
		}
		failed[topic] = qos
		if !first {
			d.log.Debug("subscribe retry failed", "topic", topic, "err", why)
			continue
		}
		switch {
		case topic == d.statusTopic:
			d.log.Warn("subscribe to own status failed; retrying with backoff (a late will could leave the status Off meanwhile)",
				"topic", topic, "err", why)
		case d.bySim[topic] != nil:
			d.bySim[topic].log.Error("subscribe to the simulation topic failed; retrying with backoff, the line cannot be driven meanwhile",
				"topic", topic, "err", why)
		default:
			log := d.log
			if o := d.byCommand[topic]; o != nil {
				log = o.log
			}
			log.Error("subscribe failed; retrying with backoff, commands do not arrive meanwhile", "topic", topic, "err", why)
		}
	}
	return failed
}

// retrySubscribe subscribes again to what the broker refused, on the same connection, with
// capped backoff, until it is granted or the connection (generation gen) ends. A refusal is
// not final: a broker's ACL can be reloaded, and a cluster refuses while it elects a leader.
func (d *Device) retrySubscribe(c mqtt.Client, gen uint64, failed map[string]byte) {
	wait := time.Second
	for attempt := 2; len(failed) > 0; attempt++ {
		if !d.sleep(min(wait, d.maxBackoff)) || d.connGen.Load() != gen || !c.IsConnectionOpen() {
			return
		}
		wait *= 2
		ctx, cancel := context.WithTimeout(d.ctx, ackTimeout)
		still := d.subscribe(ctx, c, failed, false)
		cancel()
		if d.connGen.Load() != gen {
			return
		}
		if len(still) < len(failed) {
			d.log.Info("subscribed after a refusal", "attempt", attempt, "still_refused", len(still))
		}
		failed = still
		if obeysWithout(failed, d.statusTopic) {
			// Obeys now: the states go out again, and Ready may close.
			d.flagsMu.Lock()
			d.refresh, d.readyArm = true, true
			d.flagsMu.Unlock()
			d.requestPublish()
		}
	}
}
