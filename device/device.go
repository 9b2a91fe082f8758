// Package device owns pimqtt's MQTT client side: the in-process "device" that subscribes to
// command topics, drives output lines (the LED, relays) from the commands, publishes the levels
// of input lines (buttons, sensors) as they change, and reports every line's level and its own
// online status as retained messages.
//
// It replaces the seed's Python paho script and keeps its wire format: commands on
// "raspberry/led", retained status {"status": "On"} / {"status": "Off"} on "raspberry/status"
// (the Off one doubling as the Last Will).
//
// The package meets the broker only through MQTT: it is handed a DialFunc, which in all-in-one
// mode returns an in-memory connection into the embedded broker and in device-only mode a
// TCP/TLS/WebSocket connection (see NetDialer) to any MQTT 3.1.1/5 broker. It never imports
// pimqtt's broker or gpio packages; the lines are the small Line and InputLine interfaces.
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

// Line is an output the device drives. gpio.Output satisfies it. The device serialises all
// calls to all its output lines, so implementations need not be safe for concurrent use.
type Line interface {
	// SetValue drives the line: 0 low, 1 high.
	SetValue(value int) error
	// Value reads the line's level back; it is what gets published as the state.
	Value() (int, error)
}

// InputLine is a line the device reads. gpio.Input satisfies it. The device calls Events once,
// in Start, and Value only from its publisher goroutine; it never closes the line.
type InputLine interface {
	// Value reads the line's present logical level.
	Value() (int, error)
	// Events delivers the new logical value after each edge, in order; it is closed when the
	// line is closed.
	Events() <-chan int
}

// Output is one line the device drives from commands.
type Output struct {
	// Name identifies the output in logs and to the StateStore, e.g. "led" or "relay1".
	// Required; unique among all outputs and inputs.
	Name string
	// CommandTopic is where commands for this output arrive, e.g. "raspberry/led". Required.
	CommandTopic string
	// StateTopic carries the retained read-back level, "1" or "0". Empty means
	// CommandTopic+"/state".
	StateTopic string
	// Line is the line to drive. Required.
	Line Line
}

// Input is one line whose changes the device publishes.
type Input struct {
	// Name identifies the input in logs, e.g. "button". Required; unique among all outputs and
	// inputs.
	Name string
	// StateTopic carries the retained level, "1" or "0", published on every change and on
	// every (re)connection. Required.
	StateTopic string
	// Line is the line to read. Required.
	Line InputLine
}

// StateStore remembers each output's last commanded level across restarts; state.File
// satisfies it. The device calls Set from its MQTT message handler after every command it
// applied successfully, one call at a time, with the commanded level (0 or 1). Set must not
// block. The safe-state drive in Close is not a command and is not reported.
type StateStore interface {
	Set(name string, value int)
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
	// StatusTopic carries the retained online status and the Last Will, default "raspberry/status".
	StatusTopic string
	// Outputs are the lines driven from commands. At least one output or input is required.
	Outputs []Output
	// Inputs are the lines whose levels are published.
	Inputs []Input
	// Store, if not nil, is told every commanded output level.
	Store StateStore
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
	// maxInputBacklog bounds the events of one input waiting to be published. When an input
	// changes faster than its states can be published, the oldest waiting values are dropped;
	// the newest is always kept, so the last published state is always the last event's.
	maxInputBacklog = 64
)

// Device is the MQTT device: create it with New, then Start, and finally Close.
type Device struct {
	dial        DialFunc
	label       string
	clientID    string
	username    string
	password    string
	statusTopic string
	outputs     []*output
	inputs      []*input
	byCommand   map[string]*output // command topic → output
	store       StateStore
	log         *slog.Logger
	keepAlive   time.Duration
	maxBackoff  time.Duration

	// ctx spans the device's life and is cancelled at the start of Close, so dials in
	// progress, retry loops, input readers and background ack waits stop promptly.
	ctx    context.Context
	cancel context.CancelFunc

	// mu serialises every Line call (message handler, state publisher, Close) and guards the
	// lifecycle flags, so that once Close has driven the lines to 0 no late command re-drives
	// one.
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
	announce atomic.Bool   // publish status On first in the next round
	refresh  atomic.Bool   // publish every output's and input's state in the next round
	pubDone  chan struct{} // closed when the publisher exits
	readers  sync.WaitGroup

	failures atomic.Int64 // failed attempts since the last successful connection
	// graceNext makes the next dial wait reconnectGrace first; set for the first attempt
	// after a lost connection (see reconnectGrace).
	graceNext atomic.Bool
}

// output is an Output with its publishing state.
type output struct {
	name, commandTopic, stateTopic string
	line                           Line
	log                            *slog.Logger
	dirty                          atomic.Bool // its state is to be published
}

// input is an Input with its backlog of values to publish.
type input struct {
	name, stateTopic string
	line             InputLine
	log              *slog.Logger

	mu      sync.Mutex
	backlog []int // values from events not yet published, oldest first
	dropped int   // values dropped from a full backlog since the last round
	last    int   // the newest value from an event
	hasLast bool
}

// New validates opts, fills in defaults and returns a Device that has not connected yet.
//
// Validation: Dial is required; a password needs a username; at least one output or input;
// every name non-empty, valid UTF-8 and unique across outputs and inputs; every line non-nil;
// every topic non-empty, valid UTF-8, without wildcards or NUL; and the status topic, every
// command topic and every state topic pairwise distinct.
func New(opts Options) (*Device, error) {
	if opts.Dial == nil {
		return nil, errors.New("device: Options.Dial is required")
	}
	if opts.Password != "" && opts.Username == "" {
		// MQTT 3.1.1 forbids a password without a username (MQTT-3.1.2-22).
		return nil, errors.New("device: a password needs a username")
	}
	if len(opts.Outputs) == 0 && len(opts.Inputs) == 0 {
		return nil, errors.New("device: at least one output or input (Options.Outputs, Options.Inputs) is required")
	}
	if opts.StatusTopic == "" {
		opts.StatusTopic = defaultStatusTopic
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
	log := opts.Logger.With("broker", opts.BrokerLabel)

	// Every topic the device subscribes or publishes to must be distinct: the device
	// subscribes to its command topics and its status topic, so a state topic equal to one of
	// them would feed states to the command parser (or the will repair), and two lines sharing
	// a state topic would clobber each other's retained level.
	topics := map[string]string{} // topic → what uses it
	claim := func(topic, what string) error {
		if err := validatePublishTopic(topic); err != nil {
			return fmt.Errorf("device: %s %q: %w", what, topic, err)
		}
		if prev, ok := topics[topic]; ok {
			return fmt.Errorf("device: %s %q collides with %s", what, topic, prev)
		}
		topics[topic] = what
		return nil
	}
	names := map[string]string{}
	claimName := func(name, what string) error {
		switch {
		case name == "":
			return fmt.Errorf("device: %s has no Name", what)
		case !utf8.ValidString(name):
			return fmt.Errorf("device: %s Name %q is not valid UTF-8", what, name)
		}
		if prev, ok := names[name]; ok {
			return fmt.Errorf("device: %s Name %q is already used by %s", what, name, prev)
		}
		names[name] = what
		return nil
	}
	if err := claim(opts.StatusTopic, "Options.StatusTopic"); err != nil {
		return nil, err
	}
	d := &Device{
		dial:        opts.Dial,
		label:       opts.BrokerLabel,
		clientID:    opts.ClientID,
		username:    opts.Username,
		password:    opts.Password,
		statusTopic: opts.StatusTopic,
		byCommand:   map[string]*output{},
		store:       opts.Store,
		log:         log,
		keepAlive:   opts.KeepAlive,
		maxBackoff:  opts.MaxReconnectInterval,
		kick:        make(chan struct{}, 1),
		pubDone:     make(chan struct{}),
	}
	for i, o := range opts.Outputs {
		what := fmt.Sprintf("Options.Outputs[%d]", i)
		if err := claimName(o.Name, what); err != nil {
			return nil, err
		}
		what = fmt.Sprintf("Options.Outputs[%d] (%s)", i, o.Name)
		if o.Line == nil {
			return nil, fmt.Errorf("device: %s Line is required", what)
		}
		if o.StateTopic == "" {
			o.StateTopic = o.CommandTopic + "/state"
		}
		if err := claim(o.CommandTopic, what+" CommandTopic"); err != nil {
			return nil, err
		}
		if err := claim(o.StateTopic, what+" StateTopic"); err != nil {
			return nil, err
		}
		out := &output{
			name:         o.Name,
			commandTopic: o.CommandTopic,
			stateTopic:   o.StateTopic,
			line:         o.Line,
			log:          log.With("name", o.Name, "line", fmt.Sprint(o.Line)),
		}
		d.outputs = append(d.outputs, out)
		d.byCommand[out.commandTopic] = out
	}
	for i, in := range opts.Inputs {
		what := fmt.Sprintf("Options.Inputs[%d]", i)
		if err := claimName(in.Name, what); err != nil {
			return nil, err
		}
		what = fmt.Sprintf("Options.Inputs[%d] (%s)", i, in.Name)
		if in.Line == nil {
			return nil, fmt.Errorf("device: %s Line is required", what)
		}
		if err := claim(in.StateTopic, what+" StateTopic"); err != nil {
			return nil, err
		}
		d.inputs = append(d.inputs, &input{
			name:       in.Name,
			stateTopic: in.StateTopic,
			line:       in.Line,
			log:        log.With("name", in.Name, "line", fmt.Sprint(in.Line)),
		})
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	return d, nil
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
// even for command topics, because their state topics are derived from them and a message
// must be routed to exactly one output.
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
// checked on entry; it does not bound the device's life (Close does). Start also begins
// reading every input's Events.
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
		// is lost, because every connection starts by publishing status and states afresh.
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
	for _, in := range d.inputs {
		d.readers.Add(1)
		go d.readInput(in, in.line.Events())
	}
	d.log.Info("connecting to broker", "client_id", d.clientID,
		"outputs", len(d.outputs), "inputs", len(d.inputs), "status_topic", d.statusTopic)
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
// here. The session is clean, so the subscriptions must be renewed every time, all in one
// SUBSCRIBE; the status On and then every state follow from the publisher goroutine.
func (d *Device) onConnect(c mqtt.Client) {
	d.failures.Store(0)
	d.log.Info("connected to broker", "client_id", d.clientID)
	ctx, cancel := context.WithTimeout(d.ctx, ackTimeout)
	defer cancel()

	// The device also listens to its own status topic to repair a late will; see onStatus.
	filters := map[string]byte{d.statusTopic: 1}
	for _, o := range d.outputs {
		filters[o.commandTopic] = 1
	}
	tok := c.SubscribeMultiple(filters, d.onMessage)
	err := waitToken(ctx, tok)
	var granted map[string]byte
	if st, ok := tok.(*mqtt.SubscribeToken); ok && err == nil {
		granted = st.Result()
	}
	refused := func(topic string) error {
		switch {
		case err != nil:
			return err
		case granted[topic] == 0x80:
			return errors.New("refused by the broker (check its ACL)")
		}
		return nil
	}
	for _, o := range d.outputs {
		if err := refused(o.commandTopic); err != nil {
			o.log.Error("subscribe failed; commands will not arrive until the next reconnection",
				"topic", o.commandTopic, "err", err)
		}
	}
	if err := refused(d.statusTopic); err != nil {
		d.log.Warn("subscribe to own status failed; a late will could leave the status Off",
			"topic", d.statusTopic, "err", err)
	}
	d.refresh.Store(true)
	d.announce.Store(true)
	d.requestPublish()
}

// onMessage routes a message to its output's command handler, or to onStatus. Topics hold no
// wildcards, so a message's topic is exactly the filter it matched.
func (d *Device) onMessage(c mqtt.Client, m mqtt.Message) {
	if m.Topic() == d.statusTopic {
		d.onStatus(c, m)
		return
	}
	o := d.byCommand[m.Topic()]
	if o == nil {
		d.log.Debug("message on an unknown topic ignored", "topic", m.Topic())
		return
	}
	d.onCommand(o, m)
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

// readInput forwards one input's events to the publisher until the device closes or the
// events channel is closed. It never closes the line: the caller owns it.
func (d *Device) readInput(in *input, events <-chan int) {
	defer d.readers.Done()
	for {
		select {
		case <-d.ctx.Done():
			return
		case v, ok := <-events:
			if !ok {
				if d.ctx.Err() == nil {
					in.log.Warn("input events closed; its changes are no longer published")
				}
				return
			}
			v = level(v)
			in.log.Debug("input changed", "topic", in.stateTopic, "value", v)
			in.push(v)
			d.requestPublish()
		}
	}
}

// push appends v to the backlog, dropping the oldest value when it is full.
func (in *input) push(v int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if len(in.backlog) >= maxInputBacklog {
		n := copy(in.backlog, in.backlog[1:])
		in.backlog = in.backlog[:n]
		in.dropped++
	}
	in.backlog = append(in.backlog, v)
	in.last, in.hasLast = v, true
}

// take empties the backlog and returns it, oldest first, with the count of values dropped.
func (in *input) take() (values []int, dropped int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	values, dropped = in.backlog, in.dropped
	in.backlog, in.dropped = nil, 0
	return values, dropped
}

// lastValue is the newest value seen in an event.
func (in *input) lastValue() (int, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.last, in.hasLast
}

// requestPublish wakes the publisher without blocking. Requests coalesce: what to publish is
// recorded beside (dirty outputs, input backlogs, announce, refresh), so one round covers a
// burst of requests.
func (d *Device) requestPublish() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// publication is one message of a publishing round.
type publication struct {
	topic, payload string
	log            *slog.Logger // the line's logger, or nil for the status
}

// publishLoop is the only publisher until Close. Each round publishes, in this order: status
// On (when announce is set), the state of every output marked dirty (read from the line when
// the round runs, so bursts of commands coalesce into one publish of the final level), and
// every value waiting in each input's backlog, in event order. After a (re)connection
// (refresh), every output's and input's state is published; an input's backlog is then
// replaced by a fresh read of the line. Message handlers thus never wait on the network, and
// publish errors are logged off the handler path.
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
			// onConnect asks again after reconnecting, with refresh set; a publish queued
			// now could only be resent stale, or not at all.
			continue
		}
		pending = d.publishRound(c, d.collect())
	}
}

// collect gathers one round's publications.
func (d *Device) collect() []publication {
	var pubs []publication
	if d.announce.Swap(false) {
		pubs = append(pubs, publication{topic: d.statusTopic, payload: statusOn})
	}
	refresh := d.refresh.Swap(false)
	for _, o := range d.outputs {
		if !o.dirty.Swap(false) && !refresh {
			continue
		}
		d.mu.Lock()
		v, err := o.line.Value()
		d.mu.Unlock()
		if err != nil {
			o.log.Error("read line failed; state not published", "err", err)
			continue
		}
		pubs = append(pubs, publication{o.stateTopic, statePayload(v), o.log})
	}
	for _, in := range d.inputs {
		// The backlog is taken before the line is read: every event taken predates the read,
		// and every later event is published in a later round, so the newest value is always
		// the last one published.
		values, dropped := in.take()
		if refresh {
			v, err := in.line.Value()
			switch {
			case err == nil:
				values = []int{level(v)}
			case len(values) > 0:
				in.log.Warn("read input failed; publishing its last event", "err", err)
			default:
				last, ok := in.lastValue()
				if !ok {
					in.log.Error("read input failed; state not published", "err", err)
					continue
				}
				in.log.Warn("read input failed; publishing its last event", "err", err)
				values = []int{last}
			}
		} else if dropped > 0 {
			in.log.Warn("input changed faster than its state could be published; intermediate values skipped",
				"skipped", dropped)
		}
		for _, v := range values {
			pubs = append(pubs, publication{in.stateTopic, statePayload(v), in.log})
		}
	}
	return pubs
}

// publishRound hands every publication to paho in order, then waits for their PUBACKs and
// logs the outcome. It returns true when a newer request cut the wait short (see await).
func (d *Device) publishRound(c mqtt.Client, pubs []publication) (newer bool) {
	toks := make([]mqtt.Token, len(pubs))
	for i, p := range pubs {
		toks[i] = c.Publish(p.topic, 1, true, p.payload)
	}
	for i, p := range pubs {
		newer, err := d.await(toks[i])
		if newer {
			return true
		}
		switch {
		case p.log == nil && err != nil:
			d.log.Warn("publish status failed", "topic", p.topic, "err", err)
		case p.log == nil:
			d.log.Debug("status published", "topic", p.topic, "status", "On")
		case err != nil:
			p.log.Warn("publish state failed", "topic", p.topic, "err", err)
		default:
			p.log.Debug("state published", "topic", p.topic, "value", p.payload)
		}
	}
	return false
}

// await waits for a publish's PUBACK, bounded by ackTimeout and the device's life. A newer
// request ends the wait early (newer is true): the message is already on its way, and waiting
// out a connection that died with it in flight would delay the announcement on the next
// connection, since paho never completes such tokens.
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

// level is 1 for any non-zero value, matching ParseCommand's view of TOGGLE.
func level(v int) int {
	if v != 0 {
		return 1
	}
	return 0
}

// statePayload is "1" for any non-zero level, "0" otherwise.
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
//  1. every output is driven to 0, its defined safe state, and no command is applied
//     afterwards (a caller wanting another safe state sets the line itself after Close); the
//     StateStore is not told, so the levels remembered are the last commanded ones;
//  2. input events stop being read (the input lines are not closed: the caller owns them);
//  3. if connected, every output's state and {"status": "Off"} are published retained,
//     waiting for the broker's acks at most until ctx is done;
//  4. the connection is closed. When the Off publish was not confirmed, the connection is
//     dropped without DISCONNECT, so the broker publishes the Last Will (the same Off) instead
//     of discarding it — either way the retained status ends up Off.
//
// Close is idempotent (later calls return nil) and safe without Start or a connection: then it
// only drives the outputs. The returned error joins the line and publish failures.
func (d *Device) Close(ctx context.Context) error {
	type final struct {
		o       *output
		level   int
		readErr error
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	c := d.client
	var lineErr error
	finals := make([]final, len(d.outputs))
	for i, o := range d.outputs {
		if err := o.line.SetValue(0); err != nil {
			err = fmt.Errorf("device: drive output %s to 0: %w", o.name, err)
			lineErr = errors.Join(lineErr, err)
			o.log.Error("could not drive the line to its safe state", "err", err)
		} else {
			o.log.Info("line driven to 0")
		}
		finals[i].o = o
		finals[i].level, finals[i].readErr = o.line.Value()
	}
	d.mu.Unlock()

	// Stop retries, dials, input readers and background waits; the publisher exits.
	d.cancel()
	d.readers.Wait()
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
		stateToks := make([]mqtt.Token, len(finals))
		for i, f := range finals {
			if f.readErr == nil {
				stateToks[i] = c.Publish(f.o.stateTopic, 1, true, statePayload(f.level))
			}
		}
		offTok := c.Publish(d.statusTopic, 1, true, statusOff)
		for i, tok := range stateToks {
			if tok == nil {
				continue
			}
			if err := waitToken(ctx, tok); err != nil {
				pubErr = errors.Join(pubErr, fmt.Errorf("device: publish final state of %s: %w", finals[i].o.name, err))
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
