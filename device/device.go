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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/pimqtt/pimqtt/mqttclient"
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
	// Keep makes Close leave the line at its level instead of driving it to 0, for an output
	// whose level is to survive a restart of the program (initial = restore): the caller
	// releases the line without driving it and requests it again at the remembered level, so
	// an upgrade or a restart never switches what the line drives.
	Keep bool
}

// Input is one line whose changes the device publishes.
type Input struct {
	// Name identifies the input in logs, e.g. "button". Required; unique among all outputs and
	// inputs.
	Name string
	// StateTopic carries the retained level, "1" or "0", published on every change and on
	// every (re)connection. Required.
	StateTopic string
	// SimTopic, when set, lets MQTT clients play the outside world for a simulated line: the
	// device subscribes to it, and each payload on it (parsed like a command: 0/1, ON/OFF,
	// true/false, TOGGLE, JSON {"state":...}) drives the line through its Drive method, so
	// the input changes and its state is published as for a real edge. A retained message
	// there drives the line again on every (re)connection. New refuses a SimTopic when Line
	// is not a Driver: a real line is driven by the world, never by the broker.
	SimTopic string
	// Line is the line to read. Required.
	Line InputLine
}

// Driver is an input line that can be driven from outside, as a simulated line can
// (gpio.SimInput is one). Drive sets the line's logical level (0 or 1), after which the line
// delivers the change on its Events as it would an edge. Drive must not block: the device
// calls it from its MQTT message handler.
type Driver interface {
	Drive(value int) error
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
	// Dial opens connections to the broker: the one-broker form of Brokers. Dial or Brokers
	// is required.
	Dial DialFunc
	// BrokerLabel names Dial's broker in logs only, e.g. "tcp://127.0.0.1:1883" or
	// "in-process".
	BrokerLabel string
	// Brokers are several brokers (a cluster's nodes, or a standby) in order of preference.
	// Every connection attempt tries them in this order and takes the first that accepts the
	// CONNECT, so when the broker in use dies the device fails over to the next one that is up
	// and, at the next loss, comes back to the first that is up again.
	Brokers []Broker
	// Username and Password are sent in CONNECT when Username is non-empty.
	Username, Password string
	// ClientID defaults to "pimqtt-<hostname>".
	ClientID string
	// Hints say, in the caller's terms, where a user fixes what a broker refuses; they end up
	// in the log line that reports the refusal.
	Hints Hints
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
	// Telemetry, when set, publishes health reports; nil: none.
	Telemetry *Telemetry
	// Discovery, when set, publishes Home Assistant MQTT discovery; nil: none.
	Discovery *Discovery
}

// Broker is one broker a device can connect to.
type Broker struct {
	// Label names the broker in logs only, e.g. "tcp://127.0.0.1:1883"; secrets redacted.
	Label string
	// Dial opens connections to it. Required.
	Dial DialFunc
}

// Hints name the settings behind what a broker may refuse at CONNECT, in the words the user
// knows them by (a command line's flags, a configuration file's keys). Empty fields get the
// package's own terms (the Options fields).
type Hints struct {
	// Credentials is where the user name and password are set, e.g. "--username and
	// --password (or env PIMQTT_PASSWORD)". Logged when the broker answers "bad user name or
	// password" or "not authorized".
	Credentials string
	// ClientID is where the client id is set, e.g. "--client-id". Logged when the broker
	// answers "identifier rejected" (some brokers, pimqtt's among them, reserve ids).
	ClientID string
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
	// firstRetryInterval caps the fixed interval between attempts before the first
	// connection succeeds (no backoff there), so a device that boots before its broker
	// connects within seconds of the broker coming up.
	firstRetryInterval = 5 * time.Second
	// reconnectGrace delays the first reconnection attempt after a lost connection, capped by
	// MaxReconnectInterval; later attempts back off exponentially from it. Reconnecting before the broker has noticed the old connection's
	// death turns the reconnection into a session takeover, and Mochi 2.7.9 races there: the
	// old connection's clean-up can remove the new session's subscriptions (a deaf device) and
	// its will may be published late or not at all. A moment lets the broker see the old
	// connection close first when it can (in-memory pipe, TCP FIN).
	reconnectGrace = time.Second
	// placeholderBroker is what paho is told to connect to, one per broker (%d is its index in
	// Options.Brokers): paho walks its server list in order on every attempt, which is the
	// failover, and hands the URL to the custom open-connection function, which calls that
	// broker's Dial. It must parse as a URL and carry no user info, because paho would take
	// credentials from it.
	placeholderBroker = "tcp://broker-%d.pimqtt-device.invalid:1883"
)

// Device is the MQTT device: create it with New, then Start, and finally Close.
type Device struct {
	brokers []Broker
	// dialled is the index in brokers of the latest connection opened: the one paho goes on
	// to CONNECT over, so onConnect can say which broker took it.
	dialled atomic.Int32
	// connGen counts connections (onConnect), so a retry loop of one connection stops when
	// the next begins.
	connGen     atomic.Uint64
	clientID    string
	username    string
	password    string
	statusTopic string
	outputs     []*output
	inputs      []*input
	byCommand   map[string]*output // command topic → output
	bySim       map[string]*input  // simulation topic → input
	hints       Hints
	store       StateStore
	log         *slog.Logger
	keepAlive   time.Duration
	maxBackoff  time.Duration
	tele        *telemetryRun // nil without Options.Telemetry
	disc        *discovery    // nil without Options.Discovery

	// ctx spans the device's life and is cancelled at the start of Close, so dials in
	// progress, retry loops, input readers and background ack waits stop promptly.
	ctx    context.Context
	cancel context.CancelFunc

	// mu serialises every Line call (message handler, state publisher, Close) and guards
	// closed and client, so that once Close has driven the lines to 0 no late command
	// re-drives one and no new connection attempt starts.
	mu     sync.Mutex
	closed bool
	client mqtt.Client // nil until Start

	// connMu guards conn, the latest dialled connection, which Close drops abruptly when it
	// could not confirm its Off publish, so the broker publishes the will instead.
	connMu sync.Mutex
	conn   net.Conn

	// The publisher goroutine is the only publisher outside Close, so nothing it sends can
	// follow Close's final Off (Close waits for it to exit, or else drops the connection).
	kick    chan struct{} // coalesced "publish" requests; buffer 1
	pubDone chan struct{} // closed when the publisher exits
	// flagsMu guards what the next round publishes beyond dirty outputs and input backlogs.
	// One lock for the three, because a connection sets them together and the round that
	// takes the connection's refresh must also take its announce and readiness.
	flagsMu  sync.Mutex
	announce bool // publish status On first in the next round
	refresh  bool // publish every output's and input's state in the next round
	readyArm bool // the refresh is a connection's whose SUBSCRIBE was acknowledged
	discover bool // publish the discovery messages in the next round (a refresh does anyway)

	ready     chan struct{} // closed by markReady; see Ready
	readyOnce sync.Once

	lost    chan struct{}  // the connection was lost; buffer 1 (see connectLoop)
	workers sync.WaitGroup // the input readers and connectLoop
}

// output is an Output with its publishing state.
type output struct {
	name, commandTopic, stateTopic string
	line                           Line
	keep                           bool // Output.Keep
	log                            *slog.Logger
	dirty                          atomic.Bool // its state is to be published
}

// New validates opts, fills in defaults and returns a Device that has not connected yet.
//
// Validation: Dial is required; a password needs a username; at least one output or input;
// every name non-empty, valid UTF-8 and unique across outputs and inputs; every line non-nil;
// every topic non-empty, valid UTF-8, without wildcards or NUL; the status topic, every
// command topic, every state topic and every SimTopic pairwise distinct; a SimTopic only on a
// line that is a Driver; KeepAlive, when set, between 1 s and 65535 s.
func New(opts Options) (*Device, error) {
	opts, err := normalize(opts)
	if err != nil {
		return nil, err
	}
	tele, disc, err := newExtras(opts)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if len(opts.Brokers) == 1 {
		// One broker: every line names it. With several, the lines about connections do.
		log = log.With("broker", opts.Brokers[0].Label)
	}
	d := &Device{
		brokers:     opts.Brokers,
		clientID:    opts.ClientID,
		username:    opts.Username,
		password:    opts.Password,
		statusTopic: opts.StatusTopic,
		byCommand:   map[string]*output{},
		bySim:       map[string]*input{},
		hints:       opts.Hints,
		store:       opts.Store,
		log:         log,
		keepAlive:   opts.KeepAlive,
		maxBackoff:  opts.MaxReconnectInterval,
		tele:        tele,
		disc:        disc,
		kick:        make(chan struct{}, 1),
		pubDone:     make(chan struct{}),
		ready:       make(chan struct{}),
		lost:        make(chan struct{}, 1),
	}
	for _, o := range opts.Outputs {
		out := &output{
			name:         o.Name,
			commandTopic: o.CommandTopic,
			stateTopic:   o.StateTopic,
			line:         o.Line,
			keep:         o.Keep,
			log:          log.With("name", o.Name, "line", fmt.Sprint(o.Line)),
		}
		d.outputs = append(d.outputs, out)
		d.byCommand[out.commandTopic] = out
	}
	for _, in := range opts.Inputs {
		i := &input{
			name:       in.Name,
			stateTopic: in.StateTopic,
			simTopic:   in.SimTopic,
			line:       in.Line,
			log:        log.With("name", in.Name, "line", fmt.Sprint(in.Line)),
		}
		d.inputs = append(d.inputs, i)
		if i.simTopic != "" {
			i.driver = in.Line.(Driver) // checked by normalize
			d.bySim[i.simTopic] = i
		}
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	return d, nil
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
	if d.client != nil {
		return errors.New("device: already started")
	}

	o := mqtt.NewClientOptions()
	for i := range d.brokers {
		o.AddBroker(fmt.Sprintf(placeholderBroker, i))
	}
	o.SetCustomOpenConnectionFn(d.openConn).
		SetClientID(d.clientID).
		SetProtocolVersion(4). // 3.1.1 explicitly: no pointless 3.1 retry after a refused CONNECT
		SetCleanSession(true).
		SetKeepAlive(d.keepAlive).
		SetConnectTimeout(connectTimeout).
		SetWriteTimeout(ackTimeout).
		// connectLoop reconnects, not paho: see there why.
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetBinaryWill(d.statusTopic, []byte(statusOff), 1, true).
		// Outbound QoS 1 messages are not kept: nothing is resent across connections, since
		// every connection starts clean and publishes status and states afresh.
		SetStore(mqttclient.DiscardStore{}).
		SetOnConnectHandler(d.onConnect).
		SetConnectionLostHandler(d.onConnectionLost)
	if d.username != "" {
		o.SetUsername(d.username).SetPassword(d.password)
	}
	// paho's own logging stays off: its loggers are package globals (one setting for the
	// whole process) and its ERROR level fires on every routine reconnect. The handlers above
	// log what matters.
	d.client = mqtt.NewClient(o)

	d.startExtras(d.client)
	go d.publishLoop(d.client)
	for _, in := range d.inputs {
		d.workers.Add(1)
		go d.readInput(in, in.line.Events())
	}
	attrs := []any{"client_id", d.clientID, "outputs", len(d.outputs), "inputs", len(d.inputs), "status_topic", d.statusTopic}
	if len(d.brokers) > 1 {
		labels := make([]string, len(d.brokers))
		for i, b := range d.brokers {
			labels[i] = b.Label
		}
		attrs = append(attrs, "brokers", strings.Join(labels, " "))
	}
	d.log.Info("connecting to broker", attrs...)
	d.workers.Add(1)
	go d.connectLoop(d.client)
	return nil
}

// Ready returns a channel that is closed once the device obeys: the first time a connection
// has had its SUBSCRIBE acknowledged by the broker with every command topic and every input's
// SimTopic granted, and its retained status On, the state of every output and input and, with
// Options.Discovery, Home Assistant's configuration published and acknowledged (PUBACK). From
// then on a command published to the broker reaches
// its line. A connection whose SUBSCRIBE or publishes fail does not close it; a later one
// may. It stays closed for the device's life, across reconnections, and is never closed if
// no connection gets that far: callers wait on it with a bound of their own.
func (d *Device) Ready() <-chan struct{} { return d.ready }

// markReady closes ready, once.
func (d *Device) markReady() {
	d.readyOnce.Do(func() {
		close(d.ready)
		d.log.Info("device ready: subscribed, status and states published")
	})
}

// Close shuts the device down. In order:
//  1. every output is driven to 0, its defined safe state, except those with Output.Keep,
//     which stay at their level; no command is applied afterwards (a caller wanting another
//     safe state sets the line itself after Close); the StateStore is not told, so the levels
//     remembered are the last commanded ones;
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
		if o.keep {
			o.log.Info("line left at its level (kept across a restart)")
		} else if err := o.line.SetValue(0); err != nil {
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
	d.workers.Wait()
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
