// Package device owns pimqtt's MQTT client side: the in-process "device" that subscribes to a
// command topic, drives one output line (the LED) from the commands, and reports the line's
// read-back level and its own online status as retained messages.
//
// It replaces the seed's Python paho script and keeps its wire format: commands on
// "raspberry/led", retained status {"status": "On"} / {"status": "Off"} on "raspberry/status"
// (the Off one doubling as the Last Will).
//
// The package meets the broker only through MQTT: it is handed a DialFunc, which in all-in-one
// mode returns an in-memory connection into the embedded broker and in device-only mode a
// TCP/TLS/WebSocket connection (see NetDialer) to any MQTT 3.1.1/5 broker. It never imports
// pimqtt's broker or gpio packages; the output is the small Line interface.
package device

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// Line is the output the device drives. gpio.Output satisfies it. The device serialises all
// calls, so implementations need not be safe for concurrent use.
type Line interface {
	// SetValue drives the line: 0 low, 1 high.
	SetValue(value int) error
	// Value reads the line's level back; it is what gets published as the state.
	Value() (int, error)
}

// DialFunc opens the byte stream to the broker, before any MQTT is spoken. It is called for the
// first connection and for every reconnection; ctx is cancelled when the attempt times out or
// the device is closed.
type DialFunc func(ctx context.Context) (net.Conn, error)

// Options configure a Device. Zero values get the documented defaults.
type Options struct {
	// Dial opens connections to the broker. Required.
	Dial DialFunc
	// BrokerLabel names the broker in logs only, e.g. "tcp://127.0.0.1:1883" or "in-process".
	BrokerLabel string
	// Username and Password are sent in CONNECT when Username is non-empty.
	Username, Password string
	// ClientID defaults to "pimqtt-<hostname>".
	ClientID string
	// Topic is the command topic, default "raspberry/led". The line's level is published,
	// retained, on Topic+"/state".
	Topic string
	// StatusTopic carries the retained online status and the Last Will, default "raspberry/status".
	StatusTopic string
	// Line is the output to drive. Required.
	Line Line
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// KeepAlive is the MQTT keepalive, default 30 s, at least 1 s.
	KeepAlive time.Duration
	// MaxReconnectInterval caps the exponential backoff between reconnection attempts and the
	// interval between attempts while the first connection has not yet succeeded, default 30 s.
	MaxReconnectInterval time.Duration
}

// ErrClosed is returned by Start after Close.
var ErrClosed = errors.New("device: closed")

const (
	defaultTopic                = "raspberry/led"
	defaultStatusTopic          = "raspberry/status"
	defaultKeepAlive            = 30 * time.Second
	defaultMaxReconnectInterval = 30 * time.Second

	// statusOn and statusOff are byte-for-byte the seed's payloads (note the space): phone
	// apps in the field compare them as strings.
	statusOn  = `{"status": "On"}`
	statusOff = `{"status": "Off"}`

	// connectTimeout bounds one attempt: the dial plus the CONNECT/CONNACK exchange.
	connectTimeout = 10 * time.Second
	// ackTimeout bounds waits for SUBACK/PUBACK in background goroutines, so a stalled
	// connection never pins them; keepalive detects the stall itself.
	ackTimeout = 10 * time.Second
	// firstRetryInterval caps paho's fixed interval between attempts before the first
	// connection succeeds (paho has no backoff there), so a device that boots before its broker
	// connects within seconds of the broker coming up.
	firstRetryInterval = 5 * time.Second
	// reconnectGrace delays the first reconnection attempt (paho makes it at once), capped by
	// MaxReconnectInterval. Reconnecting before the broker has noticed the old connection's
	// death turns the reconnection into a session takeover, and Mochi 2.7.9 races there: the
	// old connection's clean-up can remove the new session's subscriptions (a deaf device) and
	// its will may be published late or not at all. A moment lets the broker see the old
	// connection close first when it can (in-memory pipe, TCP FIN).
	reconnectGrace = time.Second
	// placeholderBroker is what paho is told to connect to. The custom open-connection function
	// ignores it and calls Dial; it must still parse as a URL and carry no user info, because
	// paho would take credentials from it.
	placeholderBroker = "tcp://pimqtt-device.invalid:1883"
	// excerptLen bounds how much of an unknown payload reaches the log.
	excerptLen = 32
)

// Device is the MQTT device: create it with New, then Start, and finally Close.
type Device struct {
	dial        DialFunc
	label       string
	clientID    string
	username    string
	password    string
	topic       string
	stateTopic  string
	statusTopic string
	line        Line
	log         *slog.Logger
	keepAlive   time.Duration
	maxBackoff  time.Duration

	// ctx spans the device's life and is cancelled at the start of Close, so dials in
	// progress, retry loops and background ack waits stop promptly.
	ctx    context.Context
	cancel context.CancelFunc

	// mu serialises every Line call (message handler, state publisher, Close) and guards the
	// lifecycle flags, so that once Close has driven the line to 0 no late command re-drives it.
	mu      sync.Mutex
	started bool
	closed  bool
	client  mqtt.Client

	// connMu guards conn, the latest dialled connection, which Close drops abruptly when it
	// could not confirm its Off publish, so the broker publishes the will instead.
	connMu sync.Mutex
	conn   net.Conn

	// The publisher goroutine is the only publisher outside Close, so nothing it sends can
	// follow Close's final Off (Close waits for it to exit, or else drops the connection).
	kick     chan struct{} // coalesced "publish" requests; buffer 1
	announce atomic.Bool   // publish status On before the next state
	pubDone  chan struct{} // closed when the publisher exits

	failures atomic.Int64 // failed attempts since the last successful connection
	// graceNext makes the next dial wait reconnectGrace first; set for the first attempt
	// after a lost connection (see reconnectGrace).
	graceNext atomic.Bool
}

// New validates opts, fills in defaults and returns a Device that has not connected yet.
func New(opts Options) (*Device, error) {
	if opts.Dial == nil {
		return nil, errors.New("device: Options.Dial is required")
	}
	if opts.Line == nil {
		return nil, errors.New("device: Options.Line is required")
	}
	if opts.Password != "" && opts.Username == "" {
		// MQTT 3.1.1 forbids a password without a username (MQTT-3.1.2-22).
		return nil, errors.New("device: a password needs a username")
	}
	if opts.Topic == "" {
		opts.Topic = defaultTopic
	}
	if opts.StatusTopic == "" {
		opts.StatusTopic = defaultStatusTopic
	}
	for _, t := range []struct{ name, topic string }{
		{"Topic", opts.Topic}, {"StatusTopic", opts.StatusTopic},
	} {
		if err := validatePublishTopic(t.topic); err != nil {
			return nil, fmt.Errorf("device: Options.%s %q: %w", t.name, t.topic, err)
		}
	}
	if opts.StatusTopic == opts.Topic || opts.StatusTopic == opts.Topic+"/state" {
		// The device subscribes to both Topic and StatusTopic; sharing one would feed status
		// messages to the command parser or clobber the state.
		return nil, fmt.Errorf("device: Options.StatusTopic %q collides with the command or state topic", opts.StatusTopic)
	}
	switch {
	case opts.KeepAlive == 0:
		opts.KeepAlive = defaultKeepAlive
	case opts.KeepAlive < time.Second:
		// paho counts keepalive in whole seconds: anything below 1 s would silently become 0,
		// which disables keepalive (and mosquitto ≥ 2.0.12 refuses it by default).
		return nil, fmt.Errorf("device: Options.KeepAlive %v is below 1s", opts.KeepAlive)
	}
	switch {
	case opts.MaxReconnectInterval == 0:
		opts.MaxReconnectInterval = defaultMaxReconnectInterval
	case opts.MaxReconnectInterval < 0:
		return nil, fmt.Errorf("device: Options.MaxReconnectInterval %v is negative", opts.MaxReconnectInterval)
	}
	if opts.ClientID == "" {
		opts.ClientID = defaultClientID()
	}
	if opts.BrokerLabel == "" {
		opts.BrokerLabel = "unnamed broker"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Device{
		dial:        opts.Dial,
		label:       opts.BrokerLabel,
		clientID:    opts.ClientID,
		username:    opts.Username,
		password:    opts.Password,
		topic:       opts.Topic,
		stateTopic:  opts.Topic + "/state",
		statusTopic: opts.StatusTopic,
		line:        opts.Line,
		log:         opts.Logger.With("broker", opts.BrokerLabel, "line", fmt.Sprint(opts.Line)),
		keepAlive:   opts.KeepAlive,
		maxBackoff:  opts.MaxReconnectInterval,
		ctx:         ctx,
		cancel:      cancel,
		kick:        make(chan struct{}, 1),
		pubDone:     make(chan struct{}),
	}, nil
}

// defaultClientID gives each Pi its own id: two devices sharing one would take each other's
// session over in a loop.
func defaultClientID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		return "pimqtt"
	}
	return "pimqtt-" + host
}

// validatePublishTopic rejects topics the device could not publish to. Wildcards are refused
// even for the command topic, because its state topic is derived from it.
func validatePublishTopic(t string) error {
	switch {
	case t == "":
		return errors.New("empty")
	case len(t) > 65535:
		return errors.New("longer than 65535 bytes")
	case !utf8.ValidString(t):
		return errors.New("not valid UTF-8")
	case strings.ContainsAny(t, "+#\x00"):
		return errors.New("contains a wildcard (+ or #) or NUL")
	}
	return nil
}

// Start begins connecting and returns without waiting for the broker: the first connection
// and every later reconnection happen in the background, retrying until Close, and are
// logged. A broker that is down at boot therefore never blocks or fails Start. ctx is only
// checked on entry; it does not bound the device's life (Close does).
//
// Start fails if ctx is already done, if called twice, or after Close.
func (d *Device) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("device: start: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	if d.started {
		return errors.New("device: already started")
	}
	d.started = true

	o := mqtt.NewClientOptions().
		AddBroker(placeholderBroker).
		SetCustomOpenConnectionFn(d.openConn).
		SetClientID(d.clientID).
		SetProtocolVersion(4). // 3.1.1 explicitly: no pointless 3.1 retry after a refused CONNECT
		SetCleanSession(true).
		SetKeepAlive(d.keepAlive).
		SetConnectTimeout(connectTimeout).
		SetWriteTimeout(ackTimeout).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(d.maxBackoff).
		SetConnectRetry(true).
		SetConnectRetryInterval(min(d.maxBackoff, firstRetryInterval)).
		SetBinaryWill(d.statusTopic, []byte(statusOff), 1, true).
		// Outbound QoS 1 messages are not kept for resending after a reconnection: paho's
		// resume() then races with publishes made right after the reconnection (paho issue
		// #703: data race on the packet, double close of the token channel, a panic). Nothing
		// is lost, because every connection starts by publishing status and state afresh.
		SetStore(discardStore{}).
		SetOnConnectHandler(d.onConnect).
		SetConnectionNotificationHandler(d.onConnectionEvent)
	if d.username != "" {
		o.SetUsername(d.username).SetPassword(d.password)
	}
	// paho's own logging stays off: its loggers are package globals (one setting for the
	// whole process) and its ERROR level fires on every routine reconnect. The handlers above
	// log what matters.
	d.client = mqtt.NewClient(o)

	go d.publishLoop(d.client)
	d.log.Info("connecting to broker", "client_id", d.clientID, "topic", d.topic)
	tok := d.client.Connect()
	select {
	case <-tok.Done():
		// With ConnectRetry the token completes only once connected, or on a configuration
		// error, which is worth reporting from Start.
		if err := tok.Error(); err != nil {
			return fmt.Errorf("device: start mqtt client: %w", err)
		}
	default:
	}
	return nil
}

// openConn is paho's custom open-connection function: the URL paho holds is a placeholder,
// the real transport is d.dial.
func (d *Device) openConn(_ *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
	// paho may still try to reconnect after Close (the connection Close dropped looks lost
	// to it); a closing device dials nothing.
	if err := d.ctx.Err(); err != nil {
		return nil, fmt.Errorf("dial %s: device closing: %w", d.label, err)
	}
	if d.graceNext.Swap(false) {
		t := time.NewTimer(min(reconnectGrace, d.maxBackoff))
		select {
		case <-t.C:
		case <-d.ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("dial %s: device closing: %w", d.label, d.ctx.Err())
		}
	}
	ctx, cancel := context.WithTimeout(d.ctx, connectTimeout)
	defer cancel()
	conn, err := d.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", d.label, err)
	}
	d.connMu.Lock()
	defer d.connMu.Unlock()
	// Checked under connMu so that Close, which cancels ctx before dropping d.conn, either
	// sees this connection or this function sees the cancellation.
	if err := d.ctx.Err(); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("dial %s: device closing: %w", d.label, err)
	}
	d.conn = conn
	return conn, nil
}

// onConnect runs in its own goroutine on every (re)connection, so waiting for acks is safe
// here. The session is clean, so the subscriptions must be renewed every time; the status On
// and the state follow from the publisher goroutine, in that order.
func (d *Device) onConnect(c mqtt.Client) {
	d.failures.Store(0)
	d.log.Info("connected to broker", "client_id", d.clientID)
	ctx, cancel := context.WithTimeout(d.ctx, ackTimeout)
	defer cancel()

	cmdTok := c.Subscribe(d.topic, 1, d.onMessage)
	// The device also listens to its own status topic to repair a late will; see onStatus.
	statusTok := c.Subscribe(d.statusTopic, 1, d.onStatus)
	if err := subscribed(ctx, cmdTok, d.topic); err != nil {
		d.log.Error("subscribe failed; commands will not arrive until the next reconnection",
			"topic", d.topic, "err", err)
	}
	if err := subscribed(ctx, statusTok, d.statusTopic); err != nil {
		d.log.Warn("subscribe to own status failed; a late will could leave the status Off",
			"topic", d.statusTopic, "err", err)
	}
	d.announce.Store(true)
	d.requestPublish()
}

// subscribed waits for a SUBACK and checks that the broker granted the subscription.
func subscribed(ctx context.Context, tok mqtt.Token, topic string) error {
	if err := waitToken(ctx, tok); err != nil {
		return err
	}
	if st, ok := tok.(*mqtt.SubscribeToken); ok && st.Result()[topic] == 0x80 {
		return errors.New("refused by the broker (check its ACL)")
	}
	return nil
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
	d.announce.Store(true)
	d.requestPublish()
}

// onConnectionEvent logs connection progress. paho calls it synchronously from its connect
// loop for most events, so it only logs.
func (d *Device) onConnectionEvent(_ mqtt.Client, n mqtt.ConnectionNotification) {
	closing := d.ctx.Err() != nil
	switch n := n.(type) {
	case mqtt.ConnectionNotificationConnecting:
		if n.IsReconnect && n.Attempt == 0 && !closing {
			// paho calls this synchronously just before openConn, in the same goroutine.
			d.graceNext.Store(true)
			d.log.Info("reconnecting to broker", "after", min(reconnectGrace, d.maxBackoff))
		} else {
			d.log.Debug("connection attempt", "reconnect", n.IsReconnect, "attempt", n.Attempt+1)
		}
	case mqtt.ConnectionNotificationFailed:
		// Warn once per outage, not once per attempt: a broker that is down for an hour would
		// otherwise fill the log.
		if d.failures.Add(1) == 1 && !closing {
			d.log.Warn("cannot connect to broker, retrying in the background",
				"err", n.Reason, "max_interval", d.maxBackoff)
		} else {
			d.log.Debug("connection attempt failed", "err", n.Reason)
		}
	case mqtt.ConnectionNotificationLost:
		if closing {
			d.log.Debug("connection closed", "err", n.Reason)
		} else {
			d.log.Warn("connection to broker lost", "err", n.Reason)
		}
	}
}

// onMessage handles a command. paho runs handlers one at a time on its router goroutine
// (OrderMatters), so this must not block on the network: it drives the line and only asks the
// state publisher to report, never waiting on a token.
func (d *Device) onMessage(_ mqtt.Client, m mqtt.Message) {
	payload := m.Payload()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		d.log.Debug("command ignored: device closing", "topic", m.Topic())
		return
	}
	current, err := d.line.Value()
	if err != nil {
		d.mu.Unlock()
		d.log.Error("read line failed; command ignored", "topic", m.Topic(), "err", err)
		return
	}
	next, err := ParseCommand(payload, current)
	if err != nil {
		d.mu.Unlock()
		d.log.Warn("unknown payload", "topic", m.Topic(),
			"payload", fmt.Sprintf("%q", payload[:min(len(payload), excerptLen)]),
			"len", len(payload), "err", err)
		return
	}
	err = d.line.SetValue(next)
	d.mu.Unlock()
	switch {
	case err != nil:
		d.log.Error("set line failed", "topic", m.Topic(), "value", next, "err", err)
	case next != current:
		d.log.Info("line changed", "topic", m.Topic(), "value", next)
	default:
		d.log.Debug("line unchanged", "topic", m.Topic(), "value", next)
	}
	// Publish even when unchanged or failed: the read-back is the truth, and a client that
	// re-sends a command gets the state again.
	d.requestPublish()
}

// requestPublish wakes the publisher without blocking. Requests coalesce: the publisher
// reads the line when it runs, so one publish covers a burst of changes and the last retained
// state always matches the line.
func (d *Device) requestPublish() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// publishLoop publishes status On (when announce is set) and the state, so that message
// handlers never wait on the network and publish errors are logged off the handler path.
func (d *Device) publishLoop(c mqtt.Client) {
	defer close(d.pubDone)
	pending := false
	for {
		if !pending {
			select {
			case <-d.ctx.Done():
				return
			case <-d.kick:
			}
		}
		pending = false
		if !c.IsConnectionOpen() {
			// onConnect asks again after reconnecting; a publish queued now could only
			// be resent stale, or not at all.
			continue
		}
		if d.announce.Swap(false) {
			tok := c.Publish(d.statusTopic, 1, true, statusOn)
			newer, err := d.await(tok)
			if newer {
				pending = true
				continue
			}
			if err != nil {
				d.log.Warn("publish status failed", "topic", d.statusTopic, "err", err)
			} else {
				d.log.Debug("status published", "topic", d.statusTopic, "status", "On")
			}
		}
		d.mu.Lock()
		v, err := d.line.Value()
		d.mu.Unlock()
		if err != nil {
			d.log.Error("read line failed; state not published", "err", err)
			continue
		}
		tok := c.Publish(d.stateTopic, 1, true, statePayload(v))
		newer, err := d.await(tok)
		switch {
		case newer:
			pending = true
		case err != nil:
			d.log.Warn("publish state failed", "topic", d.stateTopic, "err", err)
		default:
			d.log.Debug("state published", "topic", d.stateTopic, "value", statePayload(v))
		}
	}
}

// await waits for a publish's PUBACK, bounded by ackTimeout and the device's life. A newer
// request ends the wait early (newer is true): its publish supersedes this one, and waiting
// out a connection that died with this message in flight would delay the announcement on the
// next connection, since paho never completes such tokens.
func (d *Device) await(tok mqtt.Token) (newer bool, err error) {
	t := time.NewTimer(ackTimeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return false, tok.Error()
	case <-d.ctx.Done():
		return false, d.ctx.Err()
	case <-t.C:
		return false, fmt.Errorf("no PUBACK within %v", ackTimeout)
	case <-d.kick:
		return true, nil
	}
}

// statePayload is "1" for any non-zero level, matching ParseCommand's view of TOGGLE.
func statePayload(v int) string {
	if v != 0 {
		return "1"
	}
	return "0"
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

// Close shuts the device down. In order:
//  1. the line is driven to 0, the defined safe state, and no command is applied afterwards;
//  2. if connected, the state "0" and {"status": "Off"} are published retained, waiting for
//     the broker's acks at most until ctx is done;
//  3. the connection is closed. When the Off publish was not confirmed, the connection is
//     dropped without DISCONNECT, so the broker publishes the Last Will (the same Off) instead
//     of discarding it — either way the retained status ends up Off.
//
// Close is idempotent (later calls return nil) and safe without Start or a connection: then it
// only drives the line. The returned error joins the line and publish failures.
func (d *Device) Close(ctx context.Context) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	c := d.client
	var lineErr error
	if err := d.line.SetValue(0); err != nil {
		lineErr = fmt.Errorf("device: drive line to 0: %w", err)
	}
	level, readErr := d.line.Value()
	d.mu.Unlock()
	if lineErr != nil {
		d.log.Error("could not drive the line to its safe state", "err", lineErr)
	} else {
		d.log.Info("line driven to 0")
	}

	// Stop retries, dials and background waits; the publisher exits.
	d.cancel()
	if c == nil {
		return lineErr
	}

	var pubErr error
	offConfirmed := false
	// Wait for the publisher to exit. It normally does at once; it can be stuck in a Publish
	// call (paho blocks up to its write timeout when the connection stalls), and then Close
	// does not wait past ctx but falls back to the will.
	select {
	case <-d.pubDone:
	default:
		select {
		case <-d.pubDone:
		case <-ctx.Done():
			pubErr = fmt.Errorf("device: wait for publisher: %w", ctx.Err())
		}
	}
	switch {
	case pubErr != nil:
	case !c.IsConnectionOpen():
		// Nothing can be published. Not a failure: if a connection had been up, the broker
		// has sent, or will send when its keepalive expires, the will.
		d.log.Info("not connected at close; status Off is left to the broker's will")
	default:
		var stateTok mqtt.Token
		if readErr == nil {
			stateTok = c.Publish(d.stateTopic, 1, true, statePayload(level))
		}
		offTok := c.Publish(d.statusTopic, 1, true, statusOff)
		if stateTok != nil {
			if err := waitToken(ctx, stateTok); err != nil {
				pubErr = fmt.Errorf("device: publish final state: %w", err)
			}
		}
		if err := waitToken(ctx, offTok); err != nil {
			pubErr = errors.Join(pubErr, fmt.Errorf("device: publish status Off: %w", err))
		} else {
			offConfirmed = true
		}
	}

	if !offConfirmed {
		// A clean DISCONNECT makes the broker discard the will, so without a confirmed Off
		// the retained status could stay On. Drop the connection so the will fires instead.
		d.connMu.Lock()
		if d.conn != nil {
			_ = d.conn.Close()
		}
		d.connMu.Unlock()
	}
	c.Disconnect(quiesceMillis(ctx))
	d.log.Info("disconnected from broker")
	return errors.Join(lineErr, pubErr)
}

// quiesceMillis is how long paho's Disconnect may wait for the DISCONNECT packet to go out:
// what remains of ctx, at most 1 s.
func quiesceMillis(ctx context.Context) uint {
	wait := time.Second
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl))
	}
	if ctx.Err() != nil || wait < 0 {
		wait = 0
	}
	return uint(wait / time.Millisecond)
}

// discardStore is a paho Store that keeps nothing (see SetStore in Start for why).
type discardStore struct{}

func (discardStore) Open()                             {}
func (discardStore) Put(string, packets.ControlPacket) {}
func (discardStore) Get(string) packets.ControlPacket  { return nil }
func (discardStore) All() []string                     { return nil }
func (discardStore) Del(string)                        {}
func (discardStore) Close()                            {}
func (discardStore) Reset()                            {}
