// Package bridge owns pimqtt's MQTT bridge: one connection from the local broker to a remote
// broker (one broker, or the nodes of one cluster tried in order), forwarding the configured
// topic trees out, in or both ways, as mosquitto's `connection` blocks do.
//
// The bridge is an MQTT client of both brokers and nothing more: it is handed a DialFunc into
// the local broker (in memory in pimqtt) and one per remote address, and never imports
// pimqtt's broker or device packages. It owns what a bridge must add to two plain clients:
//   - no loops and no echo: the local connection announces itself as a bridge (protocol level
//     0x84, mosquitto's bridge bit: the local broker does not send the bridge's own messages
//     back to it and keeps the retain flag as published), and the remote connection, a plain
//     MQTT 3.1.1 one because remotes such as nats-server know nothing else, recognises the
//     remote's echoes of its own messages by fingerprint (see echoFilter);
//   - reconnection with capped backoff and failover across the remote's addresses,
//     resubscribing on every connection;
//   - a bounded queue of QoS 1 messages while the remote is down, acknowledged to the local
//     broker only once queued and dropped from the queue only once the remote acknowledged
//     them (see outQueue);
//   - the latest retained local state under the outgoing trees, sent to the remote on every
//     connection before subscribing there, so that a remote's stale retained value does not
//     overwrite the Pi's fresh one;
//   - the connection's state, retained "1"/"0" on $SYS/broker/connection/NAME/state locally
//     and, as mosquitto's notifications, at the remote (with a will "0").
package bridge

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

	"github.com/pimqtt/pimqtt/mqttclient"
)

// DialFunc opens the byte stream to a broker, before any MQTT is spoken. It is called for
// every connection attempt; ctx is cancelled when the attempt times out or the bridge closes.
type DialFunc func(ctx context.Context) (net.Conn, error)

// Remote is one address of the remote broker.
type Remote struct {
	// Label names the address in logs, e.g. "mqtts://broker.example:8883", with any secret
	// already redacted by the caller.
	Label string
	// Dial opens a connection to it. Required.
	Dial DialFunc
}

// Options configure a Bridge. Zero values get the documented defaults.
type Options struct {
	// Name names the connection in logs and in the state topic
	// $SYS/broker/connection/NAME/state. Required; no "/", "+", "#" or NUL.
	Name string
	// Remotes are the addresses of ONE remote broker (a cluster's nodes), tried in order on
	// every (re)connection: the bridge uses the first that accepts it. At least one.
	Remotes []Remote
	// Topics are the bridged trees. At least one; each must pass ParseTopic's checks.
	Topics []Topic
	// ClientID is the bridge's client id at the remote, default "HOSTNAME.NAME" (mosquitto's
	// default). The local connection uses "local." + ClientID (mosquitto's too).
	ClientID string
	// Username and Password are sent to the remote when Username is non-empty. The password
	// is never logged.
	Username, Password string
	// CleanSession asks the remote for a clean session on every connection. false keeps the
	// bridge's subscriptions (and, on brokers that queue for offline clients, its QoS 1
	// messages) at the remote across reconnections.
	CleanSession bool
	// Local opens connections into the local broker. Required.
	Local DialFunc
	// QueueLimit bounds how many messages wait for the remote (QoS 1 ones while it is down),
	// default 1000. Beyond it new messages are dropped, with one warning.
	QueueLimit int
	// QueueLimitSetting names, in the user's terms, the setting that raises QueueLimit (e.g.
	// "--bridge-queue-limit"), for the warning; default "QueueLimit".
	QueueLimitSetting string
	// MaxBackoff caps the exponential backoff between reconnection attempts, default 30 s.
	MaxBackoff time.Duration
	// KeepAlive is the MQTT keepalive on both connections, default 60 s (mosquitto's), at
	// least 1 s.
	KeepAlive time.Duration
	// NoRemoteState turns off the state messages at the remote (mosquitto's
	// `notifications false`): no retained "1"/"0" on $SYS/broker/connection/CLIENTID/state
	// there and no will. The local state topic is always published.
	NoRemoteState bool
	// Logger defaults to slog.Default(). Lines carry component=bridge and name=NAME.
	Logger *slog.Logger
}

const (
	defaultQueueLimit = 1000
	defaultMaxBackoff = 30 * time.Second
	defaultKeepAlive  = 60 * time.Second

	// connectTimeout bounds one attempt on one address: the dial plus CONNECT/CONNACK.
	connectTimeout = 10 * time.Second
	// ackTimeout bounds waits for SUBACK/PUBACK; keepalive detects a stalled connection.
	ackTimeout = 10 * time.Second
	// reconnectGrace is the wait before the first attempt after a lost connection; later
	// attempts double it up to MaxBackoff. Short: failover to another address is what a lost
	// node needs, and a refused dial costs nothing.
	reconnectGrace = 250 * time.Millisecond
	// firstRetryInterval caps the interval between attempts before the first connection.
	firstRetryInterval = 5 * time.Second
	// window is how many messages may await the remote's PUBACK at once.
	window = 32
	// echoWindow is how long a fingerprint waits for its echo; echoLimit bounds them.
	echoWindow = 10 * time.Second
	echoLimit  = 10000
	// retainedLimit bounds the retained local state kept for the remote.
	retainedLimit = 10000
	// closeDrain is how long Close lets queued messages go out to a connected remote, and
	// closePublish how long it waits for each side's final state message.
	closeDrain   = 2 * time.Second
	closePublish = 2 * time.Second
	// localQuiet is how long the local side must have been quiet after subscribing before
	// its retained messages count as all delivered, localQuietMax the most that waits.
	localQuiet    = 50 * time.Millisecond
	localQuietMax = time.Second
	// ackerBuffer is how many remote messages may wait for the local broker's PUBACK.
	ackerBuffer = 256

	// placeholderLocal and placeholderRemote are what paho is told to connect to; the custom
	// open-connection function maps them to Options.Local and Options.Remotes[i].Dial. They
	// carry no user info, since paho would take credentials from it.
	placeholderLocal  = "tcp://local.pimqtt-bridge.invalid:1883"
	placeholderRemote = "tcp://remote-%d.pimqtt-bridge.invalid:1883"
)

// ErrClosed is returned by Start after Close.
var ErrClosed = errors.New("bridge: closed")

// Bridge is one bridge connection: create it with New, then Start, and finally Close.
type Bridge struct {
	opts                        Options
	log                         *slog.Logger
	stateTopic                  string // local
	remoteState                 string // at the remote; "" with NoRemoteState
	remoteHosts                 map[string]int
	localFilters, remoteFilters map[string]byte

	echo     *echoFilter
	queue    *outQueue
	retained *retainedMap
	acks     chan pendingAck

	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	started   bool
	closed    bool
	local     mqtt.Client   // nil unless connected and subscribed
	remote    mqtt.Client   // nil unless connected, retained state sent and subscribed
	remoteIdx int           // Remotes index of remote
	remoteGen uint64        // counts remote connections
	up        chan struct{} // closed while remote != nil
	gone      chan struct{} // closed when the current remote connection is lost
	// lostLocal and lostRemote are the latest clients whose connection was lost, so that a
	// connect handler still setting up a dead connection does not install it.
	lostLocal, lostRemote mqtt.Client
	downQoS0              int // QoS 0 messages dropped in the current outage
	localNoLink           int // remote messages dropped because the local side was down

	localLink, remoteLink link

	// localReady is closed once the local side has first subscribed and taken in the
	// retained messages that brought: the remote side connects only then, so its first
	// connection sends the Pi's retained state before subscribing there.
	localReady     chan struct{}
	localReadyOnce sync.Once
	// handlerMu is held by onLocalMessage, for onLocalConnect's barrier; lastLocal is when
	// onLocalMessage last ran (Unix nanoseconds), for waitLocalQuiet.
	handlerMu sync.Mutex
	lastLocal atomic.Int64

	stateKick chan struct{}
	workers   sync.WaitGroup
}

// New validates opts, fills in defaults and returns a Bridge that has not connected yet.
func New(opts Options) (*Bridge, error) {
	if err := normalize(&opts); err != nil {
		return nil, err
	}
	b := &Bridge{
		opts:          opts,
		log:           opts.Logger.With("component", "bridge", "name", opts.Name),
		stateTopic:    "$SYS/broker/connection/" + opts.Name + "/state",
		remoteHosts:   map[string]int{},
		localFilters:  map[string]byte{},
		remoteFilters: map[string]byte{},
		echo:          newEchoFilter(echoWindow, echoLimit),
		queue:         newOutQueue(opts.QueueLimit, window),
		retained:      newRetainedMap(retainedLimit),
		acks:          make(chan pendingAck, ackerBuffer),
		up:            make(chan struct{}),
		stateKick:     make(chan struct{}, 1),
		localReady:    make(chan struct{}),
	}
	if !opts.NoRemoteState {
		b.remoteState = "$SYS/broker/connection/" + opts.ClientID + "/state"
	}
	for i := range opts.Remotes {
		u, _ := url.Parse(fmt.Sprintf(placeholderRemote, i))
		b.remoteHosts[u.Hostname()] = i
	}
	for _, t := range opts.Topics {
		if t.Direction.outward() {
			b.localFilters[t.localFilter()] = max(b.localFilters[t.localFilter()], t.QoS)
		}
		if t.Direction.inward() {
			b.remoteFilters[t.remoteFilter()] = max(b.remoteFilters[t.remoteFilter()], t.QoS)
		}
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.localLink = link{b: b, side: "local", log: b.log.With("side", "local"), lost: make(chan struct{}, 1)}
	b.remoteLink = link{b: b, side: "remote", log: b.log.With("side", "remote"), lost: make(chan struct{}, 1)}
	return b, nil
}

// normalize checks opts and fills in the defaults.
func normalize(o *Options) error {
	switch {
	case o.Name == "":
		return errors.New("bridge: a name is required (it names the state topic $SYS/broker/connection/NAME/state)")
	case strings.ContainsAny(o.Name, "/+#\x00") || !utf8.ValidString(o.Name):
		return fmt.Errorf("bridge %q: the name may not hold /, +, # or NUL (it is a level of the state topic)", o.Name)
	case o.Local == nil:
		return fmt.Errorf("bridge %s: no dial function into the local broker", o.Name)
	case len(o.Remotes) == 0:
		return fmt.Errorf("bridge %s: no remote address", o.Name)
	case len(o.Topics) == 0:
		return fmt.Errorf("bridge %s: no topic to bridge", o.Name)
	case o.Password != "" && o.Username == "":
		return fmt.Errorf("bridge %s: a password needs a user name", o.Name)
	case o.QueueLimit < 0:
		return fmt.Errorf("bridge %s: queue limit %d is negative", o.Name, o.QueueLimit)
	case o.MaxBackoff < 0:
		return fmt.Errorf("bridge %s: maximum backoff %v is negative", o.Name, o.MaxBackoff)
	case o.KeepAlive != 0 && (o.KeepAlive < time.Second || o.KeepAlive > 65535*time.Second):
		return fmt.Errorf("bridge %s: keepalive %v: want 1 s to 65535 s", o.Name, o.KeepAlive)
	}
	for i, r := range o.Remotes {
		if r.Dial == nil {
			return fmt.Errorf("bridge %s: remote %d (%s) has no dial function", o.Name, i, r.Label)
		}
	}
	for _, t := range o.Topics {
		if err := t.validate(); err != nil {
			return fmt.Errorf("bridge %s: topic %q: %w", o.Name, t.String(), err)
		}
	}
	if o.ClientID == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "pimqtt"
		}
		o.ClientID = host + "." + o.Name
	}
	if o.QueueLimit == 0 {
		o.QueueLimit = defaultQueueLimit
	}
	if o.QueueLimitSetting == "" {
		o.QueueLimitSetting = "QueueLimit"
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = defaultMaxBackoff
	}
	if o.KeepAlive == 0 {
		o.KeepAlive = defaultKeepAlive
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// Start begins connecting to both brokers and returns without waiting for either: the
// connections are made, and remade after a loss, in the background until Close. ctx is only
// checked on entry. Start fails if ctx is done, when called twice, or after Close.
func (b *Bridge) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bridge %s: start: %w", b.opts.Name, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	if b.started {
		return fmt.Errorf("bridge %s: already started", b.opts.Name)
	}
	b.started = true
	labels := make([]string, len(b.opts.Remotes))
	for i, r := range b.opts.Remotes {
		labels[i] = r.Label
	}
	topics := make([]string, len(b.opts.Topics))
	for i, t := range b.opts.Topics {
		topics[i] = t.String()
	}
	b.log.Info("bridge starting", "remotes", labels, "topics", topics, "client_id", b.opts.ClientID,
		"clean_session", b.opts.CleanSession, "queue_limit", b.opts.QueueLimit)
	b.workers.Add(5)
	go b.localLink.run(b.newLocalClient)
	go b.remoteLink.run(b.newRemoteClient)
	go b.sendLoop()
	go b.stateLoop()
	go b.ackLoop()
	return nil
}

// Connected returns a channel that is closed while the bridge is connected to the remote:
// its retained state sent there and its subscriptions there acknowledged, so that from then
// on a message published on either side crosses. While connected it returns an already
// closed channel; after a loss, a new open one that the next connection closes. Tests wait
// on it with a deadline of their own.
func (b *Bridge) Connected() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.up
}

// Remote returns the Label of the remote address the bridge is connected to, or "" while it
// is not connected.
func (b *Bridge) Remote() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.remote == nil {
		return ""
	}
	return b.opts.Remotes[b.remoteIdx].Label
}

// Close stops the bridge in bounded time (about 6 s at most, 10 s more if a DialFunc ignores
// its context): it lets queued messages go out to a connected remote for up to 2 s, publishes
// the state "0" at the remote (when enabled) and on the local broker, waiting up to 2 s for
// each, and disconnects both. Messages still queued then are
// lost: the queue lives in memory. Close is idempotent and safe without Start.
func (b *Bridge) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	started := b.started
	b.mu.Unlock()
	if !started {
		b.cancel()
		return nil
	}

	// Let what the local broker already handed over reach a connected remote.
	if n := b.queue.length(); n > 0 && b.Remote() != "" {
		deadline := time.NewTimer(closeDrain)
		tick := time.NewTicker(20 * time.Millisecond)
	drain:
		for b.queue.length() > 0 {
			select {
			case <-deadline.C:
				break drain
			case <-tick.C:
			}
		}
		deadline.Stop()
		tick.Stop()
		if left := b.queue.length(); left > 0 {
			b.log.Warn("closing with messages not yet acknowledged by the remote; they are lost", "messages", left)
		}
	}

	b.cancel()
	b.workers.Wait()

	var errs []error
	b.mu.Lock()
	remote, local := b.remote, b.local
	b.mu.Unlock()
	if remote != nil {
		said := true
		if b.remoteState != "" {
			if err := waitToken(context.Background(), remote.Publish(b.remoteState, 1, true, "0"), closePublish); err != nil {
				// Not an error of ours: a remote that is slow or just lost. Without a
				// DISCONNECT (the link is cut below) the remote publishes the will, the same 0.
				b.log.Warn("remote did not acknowledge state 0 at close; leaving it to the will", "err", err)
				said = false
			}
		}
		if said {
			remote.Disconnect(100)
		}
	}
	b.remoteLink.closeConn()
	if local != nil {
		if err := waitToken(context.Background(), local.Publish(b.stateTopic, 1, true, "0"), closePublish); err != nil {
			errs = append(errs, fmt.Errorf("bridge %s: publish state 0 locally: %w", b.opts.Name, err))
		}
		local.Disconnect(100)
	}
	b.localLink.closeConn()
	b.log.Info("bridge closed")
	return errors.Join(errs...)
}

// clientOptions are the options both sides share.
func (b *Bridge) clientOptions(l *link, brokers ...string) *mqtt.ClientOptions {
	o := mqtt.NewClientOptions()
	for _, u := range brokers {
		o.AddBroker(u)
	}
	return o.
		SetCustomOpenConnectionFn(l.openConn).
		SetKeepAlive(b.opts.KeepAlive).
		SetConnectTimeout(connectTimeout).
		SetWriteTimeout(ackTimeout).
		// The link reconnects, with a fresh client each time: paho's own reconnection keeps
		// the ids of QoS 1 publishes in flight at a loss, and with CleanSession false paho
		// never completes their tokens; a new client starts with none of that.
		SetAutoReconnect(false).
		SetConnectRetry(false).
		// Nothing is resent by paho: the outgoing queue resends what the remote has not
		// acknowledged, on the next connection.
		SetStore(mqttclient.DiscardStore{}).
		// Handlers run one at a time, in order; they never wait on the network.
		SetOrderMatters(true)
	// paho's own logging stays off: its loggers are package globals (one setting for the
	// whole process) and its ERROR level fires on every routine reconnect.
}

// newLocalClient is the client into the local broker, as a bridge (protocol level 0x84).
func (b *Bridge) newLocalClient(l *link) mqtt.Client {
	o := b.clientOptions(l, placeholderLocal).
		SetClientID("local." + b.opts.ClientID).
		// mosquitto's bridge bit on 3.1.1: the local broker sends none of the bridge's own
		// publishes back to it and keeps the retain flag of what it forwards as published.
		SetProtocolVersion(0x84).
		SetCleanSession(true).
		SetDefaultPublishHandler(b.onLocalMessage)
	var c mqtt.Client
	o.SetOnConnectHandler(func(mqtt.Client) { b.onLocalConnect(c) })
	o.SetConnectionLostHandler(func(_ mqtt.Client, err error) { b.onLocalLost(c, err) })
	c = mqtt.NewClient(o)
	return c
}

// newRemoteClient is the client of the remote broker, a plain MQTT 3.1.1 one: remotes such
// as nats-server refuse anything else. One placeholder address per remote, in order: paho's
// Connect walks them in order and takes the first that accepts.
func (b *Bridge) newRemoteClient(l *link) mqtt.Client {
	brokers := make([]string, len(b.opts.Remotes))
	for i := range brokers {
		brokers[i] = fmt.Sprintf(placeholderRemote, i)
	}
	base := b.clientOptions(l, brokers...)
	base.SetClientID(b.opts.ClientID).
		SetProtocolVersion(4).
		SetCleanSession(b.opts.CleanSession).
		// A message from the remote is acknowledged there only once the local broker has
		// acknowledged it (see ackLoop).
		SetAutoAckDisabled(true).
		SetDefaultPublishHandler(b.onRemoteMessage)
	if b.opts.Username != "" {
		base.SetUsername(b.opts.Username).SetPassword(b.opts.Password)
	}
	if b.remoteState != "" {
		base.SetWill(b.remoteState, "0", 1, true)
	}
	var c mqtt.Client
	base.SetOnConnectHandler(func(mqtt.Client) { b.onRemoteConnect(c) })
	base.SetConnectionLostHandler(func(_ mqtt.Client, err error) { b.onRemoteLost(c, err) })
	c = mqtt.NewClient(base)
	return c
}

// onLocalConnect subscribes to the outgoing trees. It runs in its own goroutine (paho's), so
// waiting for the SUBACK is fine.
func (b *Bridge) onLocalConnect(c mqtt.Client) {
	if len(b.localFilters) > 0 {
		tok := c.SubscribeMultiple(b.localFilters, nil) // nil: the default handler
		if err := b.waitSub(tok, b.localFilters, b.localLink.log); err != nil {
			b.localLink.log.Error("subscribe failed; reconnecting", "err", err)
			b.localLink.dropConn()
			return
		}
		// A barrier, so that the retained messages the SUBSCRIBE brought are in the
		// retained state before the remote is told it (see localReady). mosquitto writes
		// them right after the SUBACK, before it reads the next packet, so they precede a
		// second SUBSCRIBE's SUBACK on the wire; paho hands each PUBLISH to its router (an
		// unbuffered channel) before it reads the next packet, and the router runs the
		// handler, which holds handlerMu, one message at a time. The filter is the state
		// topic, whose only retained message is the bridge's own, which route ignores; a
		// refusal (an ACL) is an answer too.
		if err := waitToken(b.ctx, c.Subscribe(b.stateTopic, 0, nil), ackTimeout); err != nil {
			b.localLink.log.Error("subscribe failed; reconnecting", "err", err)
			b.localLink.dropConn()
			return
		}
		b.handlerMu.Lock()
		//lint:ignore SA2001 an empty critical section: waits for the handler in progress
		b.handlerMu.Unlock()
		// Mochi (pimqtt's broker) writes a SUBACK at once but queues the retained messages
		// for its writer goroutine, so there the SUBACK can overtake the tail of them (seen
		// once in six runs of TestBridgeRetainedFreshWins), and no packet the bridge can
		// send comes back through that queue (no-local filters the bridge's own retained
		// messages too). So, also: wait until the local side has been quiet a moment.
		b.waitLocalQuiet()
	}
	b.mu.Lock()
	if b.lostLocal == c {
		// Lost while subscribing; the link connects again.
		b.mu.Unlock()
		return
	}
	b.local = c
	b.mu.Unlock()
	b.localReadyOnce.Do(func() { close(b.localReady) })
	b.localLink.log.Info("connected to the local broker", "subscriptions", len(b.localFilters))
	b.kickState()
}

// waitLocalQuiet waits until no local message has arrived for localQuiet (counted from the
// call at the earliest), at most localQuietMax.
func (b *Bridge) waitLocalQuiet() {
	start := time.Now()
	deadline := start.Add(localQuietMax)
	for {
		last := time.Unix(0, b.lastLocal.Load())
		if last.Before(start) {
			last = start
		}
		idle := time.Since(last)
		if idle >= localQuiet || !time.Now().Before(deadline) {
			return
		}
		t := time.NewTimer(min(localQuiet-idle, time.Until(deadline)))
		select {
		case <-t.C:
		case <-b.ctx.Done():
			t.Stop()
			return
		}
	}
}

// onLocalLost notes the loss of the local connection; the link reconnects.
func (b *Bridge) onLocalLost(c mqtt.Client, err error) {
	b.mu.Lock()
	if b.local == c {
		b.local = nil
	}
	b.lostLocal = c
	b.mu.Unlock()
	b.localLink.lostConn(err, "")
}

// onRemoteConnect makes a new remote connection ready: the retained local state goes out
// first, then the state "1", then the subscriptions; only then does the queue flow. It runs in
// its own goroutine (paho's).
func (b *Bridge) onRemoteConnect(c mqtt.Client) {
	l := &b.remoteLink
	idx := l.lastDialed()
	// Each wait below is bounded by ackTimeout on its own: a large retained state over a slow
	// link may take longer than that in all.
	ctx := b.ctx
	fail := func(what string, err error) {
		l.log.Error(what+"; reconnecting", "remote", b.opts.Remotes[idx].Label, "err", err)
		l.dropConn()
	}

	// The retained state first, before any subscription there: the remote's retained copy,
	// possibly stale (a node that missed the Pi's last update), then reaches the bridge, if
	// at all, after the fresh one has replaced it.
	entries := b.retained.snapshot()
	toks := make([]mqtt.Token, 0, len(entries))
	for _, e := range entries {
		if b.subscribedRemote(e.remoteTopic) {
			b.echo.remember(e.remoteTopic, e.payload)
		}
		toks = append(toks, c.Publish(e.remoteTopic, 1, true, e.payload))
	}
	for _, t := range toks {
		if err := waitToken(ctx, t, ackTimeout); err != nil {
			fail("sending the retained state failed", err)
			return
		}
	}
	if b.remoteState != "" {
		if err := waitToken(ctx, c.Publish(b.remoteState, 1, true, "1"), ackTimeout); err != nil {
			fail("publishing the state at the remote failed", err)
			return
		}
	}
	if len(b.remoteFilters) > 0 {
		if err := b.waitSub(c.SubscribeMultiple(b.remoteFilters, nil), b.remoteFilters, l.log); err != nil {
			fail("subscribe at the remote failed", err)
			return
		}
	}

	b.mu.Lock()
	if b.ctx.Err() != nil || b.lostRemote == c {
		// Closing, or the connection died during the setup: its loss was handled then.
		b.mu.Unlock()
		return
	}
	b.remoteGen++
	gen := b.remoteGen
	b.remote, b.remoteIdx = c, idx
	b.gone = make(chan struct{})
	close(b.up)
	dropped := b.downQoS0
	b.downQoS0 = 0
	b.mu.Unlock()
	b.queue.connected(gen)
	l.log.Info("connected to the remote", "remote", b.opts.Remotes[idx].Label, "client_id", b.opts.ClientID,
		"retained_sent", len(entries), "queued", b.queue.length(), "subscriptions", len(b.remoteFilters))
	if dropped > 0 {
		l.log.Debug("QoS 0 messages dropped while the remote was down", "messages", dropped)
	}
	b.kickState()
}

// onRemoteLost notes the loss of the remote connection: state 0, the queue holds.
func (b *Bridge) onRemoteLost(c mqtt.Client, err error) {
	b.mu.Lock()
	wasUp := b.remote == c
	if wasUp {
		b.remote = nil
		b.up = make(chan struct{})
		close(b.gone)
	}
	b.lostRemote = c
	gen := b.remoteGen
	label := b.opts.Remotes[b.remoteLink.lastDialed()].Label
	b.mu.Unlock()
	if wasUp {
		b.queue.disconnected(gen)
		b.kickState()
	}
	b.remoteLink.lostConn(err, label)
}

// subscribedRemote reports whether one of the bridge's remote subscriptions matches topic:
// then the remote echoes what the bridge sends there.
func (b *Bridge) subscribedRemote(topic string) bool {
	for f := range b.remoteFilters {
		if matches(f, topic) {
			return true
		}
	}
	return false
}

// waitSub waits for a SUBACK and reports filters the broker refused (granted 0x80); those are
// logged, not fatal: the others work.
func (b *Bridge) waitSub(tok mqtt.Token, filters map[string]byte, log *slog.Logger) error {
	if err := waitToken(b.ctx, tok, ackTimeout); err != nil {
		return err
	}
	if st, ok := tok.(*mqtt.SubscribeToken); ok {
		for f, q := range st.Result() {
			if q == 0x80 {
				log.Error("subscription refused by the broker (check its ACL for the bridge's user)", "filter", f)
			} else if q < filters[f] {
				log.Warn("subscription granted at a lower QoS", "filter", f, "asked", filters[f], "granted", q)
			}
		}
	}
	return nil
}

// onLocalMessage forwards a message from the local broker: into the retained state when it is
// retained, then into the queue. paho acknowledges it to the local broker after this returns,
// so a QoS 1 message is queued before the local broker sees it acknowledged.
func (b *Bridge) onLocalMessage(_ mqtt.Client, m mqtt.Message) {
	b.handlerMu.Lock()
	defer b.handlerMu.Unlock()
	b.lastLocal.Store(time.Now().UnixNano())
	t, ok := b.route(m.Topic(), Direction.outward, Topic.localFilter)
	if !ok {
		b.log.Debug("local message on no bridged topic ignored", "topic", m.Topic())
		return
	}
	remoteTopic := t.toRemote(m.Topic())
	qos := min(t.QoS, m.Qos())
	if m.Retained() {
		if !b.retained.set(m.Topic(), remoteTopic, m.Payload()) {
			b.log.Warn("retained state full: this topic's retained value is not re-sent on reconnection",
				"topic", m.Topic(), "limit", retainedLimit)
		}
	}
	msg := &outMsg{topic: remoteTopic, payload: m.Payload(), qos: qos, retain: m.Retained(),
		echo: b.subscribedRemote(remoteTopic)}
	switch b.queue.push(msg) {
	case droppedDown:
		b.mu.Lock()
		b.downQoS0++
		b.mu.Unlock()
	case droppedFirst:
		b.log.Warn("queue for the remote full: dropping new messages until it drains; raise "+b.opts.QueueLimitSetting+" to hold more",
			"limit", b.opts.QueueLimit, "setting", b.opts.QueueLimitSetting)
	}
}

// route returns the first topic of the given direction whose filter matches topic.
func (b *Bridge) route(topic string, dir func(Direction) bool, filter func(Topic) string) (Topic, bool) {
	for _, t := range b.opts.Topics {
		if dir(t.Direction) && matches(filter(t), topic) {
			return t, true
		}
	}
	return Topic{}, false
}

// pendingAck is a remote message waiting for the local broker to acknowledge its copy.
type pendingAck struct {
	tok mqtt.Token
	msg mqtt.Message
}

// onRemoteMessage forwards a message from the remote to the local broker, unless it is the
// echo of one the bridge sent. It is acknowledged to the remote by ackLoop, in order, once the
// local broker acknowledged it.
func (b *Bridge) onRemoteMessage(_ mqtt.Client, m mqtt.Message) {
	if b.echo.isEcho(m.Topic(), m.Payload()) {
		b.log.Debug("echo from the remote dropped", "topic", m.Topic())
		m.Ack()
		return
	}
	t, ok := b.route(m.Topic(), Direction.inward, Topic.remoteFilter)
	if !ok {
		b.log.Debug("remote message on no bridged topic ignored", "topic", m.Topic())
		m.Ack()
		return
	}
	b.mu.Lock()
	local := b.local
	if local == nil {
		b.localNoLink++
		n := b.localNoLink
		b.mu.Unlock()
		if n == 1 {
			b.log.Warn("message from the remote dropped: not connected to the local broker", "topic", m.Topic())
		}
		m.Ack()
		return
	}
	b.localNoLink = 0
	b.mu.Unlock()
	localTopic := t.toLocal(m.Topic())
	if m.Retained() {
		// The local broker does not send the bridge its own publishes, so the retained
		// state learns this one here: otherwise the next connection would send the remote
		// the value this one replaced. Only retained deliveries at subscription time come
		// here: a 3.1.1 broker clears the retain flag of live messages, so a retained
		// message published live at the remote is forwarded as a plain one.
		if o, ok := b.route(localTopic, Direction.outward, Topic.localFilter); ok {
			b.retained.set(localTopic, o.toRemote(localTopic), m.Payload())
		}
	}
	tok := local.Publish(localTopic, min(t.QoS, m.Qos()), m.Retained(), m.Payload())
	select {
	case b.acks <- pendingAck{tok: tok, msg: m}:
	case <-b.ctx.Done():
	}
}

// ackLoop acknowledges remote messages in the order they came, each once the local broker
// acknowledged its copy (MQTT wants PUBACKs in order).
func (b *Bridge) ackLoop() {
	defer b.workers.Done()
	for {
		select {
		case <-b.ctx.Done():
			return
		case a := <-b.acks:
			if err := waitToken(b.ctx, a.tok, ackTimeout); err != nil {
				if b.ctx.Err() == nil {
					b.log.Warn("local broker did not take a message from the remote", "topic", a.msg.Topic(), "err", err)
				}
				continue
			}
			a.msg.Ack()
		}
	}
}

// sendLoop sends queued messages to the remote, up to window at once, and removes each from
// the queue once the remote acknowledged it.
func (b *Bridge) sendLoop() {
	defer b.workers.Done()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-b.queue.changed:
		}
		for {
			m, gen := b.queue.next()
			if m == nil {
				break
			}
			b.mu.Lock()
			c, gone := b.remote, b.gone
			current := b.remoteGen == gen
			b.mu.Unlock()
			if c == nil || !current || !c.IsConnectionOpen() {
				// Lost, and the handler has not said so yet: it will, and the next
				// connection sends m again.
				b.queue.requeue(m, gen)
				break
			}
			if m.echo {
				// Before the PUBLISH leaves: the echo may come back before the PUBACK.
				b.echo.remember(m.topic, m.payload)
			}
			tok := c.Publish(m.topic, m.qos, m.retain, m.payload)
			go func() {
				// Not only the token: with CleanSession false paho never completes the
				// tokens of publishes in flight when a connection dies.
				ok := false
				select {
				case <-tok.Done():
					ok = tok.Error() == nil
				case <-gone:
					select {
					case <-tok.Done():
						ok = tok.Error() == nil
					default:
					}
				case <-b.ctx.Done():
				}
				if n := b.queue.finished(m, gen, ok); n > 0 {
					b.log.Warn("queue for the remote drained; messages were dropped while it was full",
						"dropped", n, "limit", b.opts.QueueLimit, "setting", b.opts.QueueLimitSetting)
				}
			}()
		}
	}
}

// kickState asks stateLoop to publish the state.
func (b *Bridge) kickState() {
	select {
	case b.stateKick <- struct{}{}:
	default:
	}
}

// stateLoop keeps the retained local state topic equal to whether the remote is connected.
// It is the only publisher of it before Close, so "1" and "0" never overtake each other.
func (b *Bridge) stateLoop() {
	defer b.workers.Done()
	var (
		lastClient mqtt.Client
		lastValue  string
	)
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-b.stateKick:
		}
		b.mu.Lock()
		local := b.local
		value := "0"
		if b.remote != nil {
			value = "1"
		}
		b.mu.Unlock()
		if local == nil || (local == lastClient && value == lastValue) {
			continue
		}
		if err := waitToken(b.ctx, local.Publish(b.stateTopic, 1, true, value), ackTimeout); err != nil {
			if b.ctx.Err() == nil {
				b.log.Warn("publishing the state on the local broker failed", "topic", b.stateTopic, "err", err)
			}
			continue
		}
		lastClient, lastValue = local, value
		b.log.Debug("state published", "topic", b.stateTopic, "value", value)
	}
}

// waitToken waits for tok until ctx is done or, with limit > 0, for at most limit.
func waitToken(ctx context.Context, tok mqtt.Token, limit time.Duration) error {
	var timeout <-chan time.Time
	if limit > 0 {
		t := time.NewTimer(limit)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-timeout:
		return fmt.Errorf("no answer within %v", limit)
	}
}
