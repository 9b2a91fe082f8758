package web

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/pimqtt/pimqtt/mqttclient"
)

const (
	// connectTimeout bounds one attempt: the dial plus CONNECT/CONNACK.
	connectTimeout = 10 * time.Second
	// ackTimeout bounds waits for SUBACK in the background.
	ackTimeout = 10 * time.Second
	// retryMin and retryMax bound the wait between connection attempts (exponential backoff).
	retryMin = time.Second
	retryMax = 30 * time.Second
	// placeholderBroker is what paho is told to connect to; the open-connection function
	// ignores it and calls Dial. It carries no user info, which paho would take credentials from.
	placeholderBroker = "tcp://pimqtt-web.invalid:1883"
)

// errNotConnected is returned by publish while the link is down.
var errNotConnected = errors.New("no connection to the broker")

// link is the server's MQTT connection: it keeps the hub fed and publishes commands.
//
// It reconnects by itself, not with paho's AutoReconnect, for the reason the device does: with a
// clean session paho keeps the message id of every QoS 1 publish in flight when a connection
// dies, and enough outages use them all up. Without AutoReconnect a lost connection completes
// those tokens and frees their ids.
type link struct {
	ctx    context.Context
	dial   DialFunc
	label  string
	hub    *hub
	log    *slog.Logger
	client mqtt.Client
	lost   chan struct{} // buffer 1
	done   chan struct{} // closed when the connect loop exits
	// mu orders Connect calls against close, so no attempt starts after close.
	mu      sync.Mutex
	started bool
	closed  bool
}

func newLink(ctx context.Context, o Options, h *hub, log *slog.Logger) *link {
	l := &link{ctx: ctx, dial: o.Dial, label: o.BrokerLabel, hub: h, log: log.With("broker", o.BrokerLabel),
		lost: make(chan struct{}, 1), done: make(chan struct{})}
	opts := mqtt.NewClientOptions().
		AddBroker(placeholderBroker).
		SetCustomOpenConnectionFn(l.openConn).
		SetClientID(o.ClientID).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetKeepAlive(o.KeepAlive).
		SetConnectTimeout(connectTimeout).
		SetWriteTimeout(ackTimeout).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetStore(mqttclient.DiscardStore{}).
		SetOnConnectHandler(l.onConnect).
		SetConnectionLostHandler(l.onLost).
		SetDefaultPublishHandler(l.onMessage)
	if o.Username != "" {
		opts.SetUsername(o.Username).SetPassword(o.Password)
	}
	l.client = mqtt.NewClient(opts)
	return l
}

// start runs the connect loop in the background.
func (l *link) start() {
	l.mu.Lock()
	l.started = true
	l.mu.Unlock()
	go l.loop()
}

// loop connects, waits for the connection to be lost and reconnects, until the server closes.
func (l *link) loop() {
	defer close(l.done)
	wait, failures := time.Duration(0), 0
	for {
		if !sleepCtx(l.ctx, wait) {
			return
		}
		err := l.connect()
		if l.ctx.Err() != nil {
			return
		}
		if err == nil {
			failures, wait = 0, retryMin
			select {
			case <-l.ctx.Done():
				return
			case <-l.lost:
			}
			continue
		}
		// Once per outage at warn: a broker down for an hour must not fill the log.
		if failures++; failures == 1 {
			l.log.Warn("web: cannot connect to the broker; retrying", "err", err)
		} else {
			l.log.Debug("web: connection attempt failed", "err", err, "attempt", failures)
		}
		wait = min(max(wait*2, retryMin), retryMax)
	}
}

// connect makes one attempt.
func (l *link) connect() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	tok := l.client.Connect()
	l.mu.Unlock()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-l.ctx.Done():
		return l.ctx.Err()
	}
}

func (l *link) openConn(*url.URL, mqtt.ClientOptions) (net.Conn, error) {
	if err := l.ctx.Err(); err != nil {
		return nil, fmt.Errorf("dial: closing: %w", err)
	}
	ctx, cancel := context.WithTimeout(l.ctx, connectTimeout)
	defer cancel()
	return l.dial(ctx)
}

// onConnect runs in its own goroutine on every connection: the session is clean, so subscribe
// again each time. The retained messages that follow bring every state up to date.
func (l *link) onConnect(c mqtt.Client) {
	filters := map[string]byte{}
	for _, t := range l.hub.topics() {
		filters[t] = 1
	}
	tok := c.SubscribeMultiple(filters, nil)
	ctx, cancel := context.WithTimeout(l.ctx, ackTimeout)
	defer cancel()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return
	}
	if err := tok.Error(); err != nil {
		l.log.Error("web: subscribe failed; the page shows no changes until the next reconnection", "err", err)
		return
	}
	if st, ok := tok.(*mqtt.SubscribeToken); ok {
		for topic, code := range st.Result() {
			if code == 0x80 {
				l.log.Error("web: the broker refused a subscription (check its ACL for pimqtt's web client)", "topic", topic)
			}
		}
	}
	l.hub.setConnected(true)
	l.log.Info("web: connected to the broker")
}

func (l *link) onLost(_ mqtt.Client, err error) {
	l.hub.setConnected(false)
	if l.ctx.Err() != nil {
		return
	}
	l.log.Warn("web: connection to the broker lost; reconnecting", "err", err)
	select {
	case l.lost <- struct{}{}:
	default:
	}
}

// onMessage feeds the hub. paho calls it on its router goroutine: it must not block.
func (l *link) onMessage(_ mqtt.Client, m mqtt.Message) {
	if !l.hub.message(m.Topic(), m.Payload()) {
		l.log.Debug("web: message ignored", "topic", m.Topic(), "len", len(m.Payload()))
	}
}

// publish sends payload to topic at QoS 1 and waits for the broker's acknowledgement.
func (l *link) publish(ctx context.Context, topic, payload string) error {
	if !l.client.IsConnectionOpen() {
		return errNotConnected
	}
	tok := l.client.Publish(topic, 1, false, payload)
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close disconnects; the server's context is already cancelled.
func (l *link) close(ctx context.Context) {
	l.mu.Lock()
	l.closed = true
	started := l.started
	l.mu.Unlock()
	if !started {
		return
	}
	select {
	case <-l.done:
	case <-ctx.Done():
	}
	quiesce := uint(250)
	if ctx.Err() != nil {
		quiesce = 0
	}
	l.client.Disconnect(quiesce)
	l.hub.setConnected(false)
}

// sleepCtx waits for d, or returns false as soon as ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
