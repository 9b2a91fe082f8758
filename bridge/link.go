package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// link is one side's connection, local or remote: it connects, waits for the loss and
// reconnects with capped exponential backoff until Close, a fresh paho client each time.
type link struct {
	b    *Bridge
	side string // "local" or "remote"
	log  *slog.Logger

	lost chan struct{} // the connection was lost; buffer 1

	mu       sync.Mutex
	conn     net.Conn // the latest dialled connection, for dropConn
	dialed   int      // Remotes index of conn (remote side)
	attempts []string // what each address answered in the current attempt
}

// run is the connection loop. Before the first connection attempts are
// min(MaxBackoff, firstRetryInterval) apart; after a loss the first attempt waits
// reconnectGrace and later ones back off exponentially, up to MaxBackoff. A failure is logged
// once per outage (and again when its kind changes), not once per attempt.
func (l *link) run(newClient func(*link) mqtt.Client) {
	defer l.b.workers.Done()
	var (
		wait      time.Duration
		failures  int
		connected bool // a connection has been up
		lastErr   string
		downSince time.Time
	)
	if l.side == "remote" {
		select {
		case <-l.b.localReady:
		case <-l.b.ctx.Done():
			return
		default:
			l.log.Debug("waiting for the local broker before connecting to the remote")
			select {
			case <-l.b.localReady:
			case <-l.b.ctx.Done():
				return
			}
		}
	}
	for {
		if !l.sleep(wait) {
			return
		}
		c := newClient(l)
		err := l.connect(c)
		if l.b.ctx.Err() != nil {
			return
		}
		if err == nil {
			if failures > 0 {
				l.log.Info("connection restored", "failed_attempts", failures, "down_for", time.Since(downSince).Round(time.Millisecond))
			}
			failures, lastErr = 0, ""
			select {
			case <-l.b.ctx.Done():
				return
			case <-l.lost:
			}
			connected = true
			downSince = time.Now()
			wait = min(reconnectGrace, l.b.opts.MaxBackoff)
			continue
		}
		if failures == 0 && !connected {
			downSince = time.Now()
		}
		failures++
		if msg := errKind(err); failures == 1 || msg != lastErr {
			args := []any{"err", err, "next_attempt_in", l.nextWait(wait, connected)}
			if h := l.hint(err); h != "" {
				args = append(args, "hint", h)
			}
			l.log.Warn("cannot connect; retrying with backoff (logged again only when the error changes)", args...)
			lastErr = msg
		} else {
			l.log.Debug("connection attempt failed", "err", err, "attempt", failures)
		}
		wait = l.nextWait(wait, connected)
	}
}

// nextWait is the wait after a failed attempt that followed a wait of w.
func (l *link) nextWait(w time.Duration, connected bool) time.Duration {
	if !connected {
		return min(l.b.opts.MaxBackoff, firstRetryInterval)
	}
	return min(max(w*2, reconnectGrace), l.b.opts.MaxBackoff)
}

// attemptError is a failed attempt with its kind: the CONNACK return code when a broker
// answered, paho's network-error code when none did. The kind, not the text, decides whether
// a failure is news: the text of one outage varies from attempt to attempt (EOF, connection
// reset, ports).
type attemptError struct {
	err  error
	kind byte
}

func (e *attemptError) Error() string { return e.err.Error() }
func (e *attemptError) Unwrap() error { return e.err }

// errKind is the kind of a failed attempt.
func errKind(err error) string {
	var ae *attemptError
	if errors.As(err, &ae) {
		return fmt.Sprint(ae.kind)
	}
	return err.Error()
}

// hint says what a CONNACK refusal usually means for this side, or "".
func (l *link) hint(err error) string {
	var ae *attemptError
	if !errors.As(err, &ae) {
		return ""
	}
	switch {
	case l.side == "local" && ae.kind == packets.ErrRefusedBadProtocolVersion:
		return "the local broker does not accept MQTT bridges (protocol level 0x84, mosquitto's bridge bit)"
	case l.side == "remote" && (ae.kind == packets.ErrRefusedBadUsernameOrPassword || ae.kind == packets.ErrRefusedNotAuthorised):
		return "check the bridge's user name and password at the remote"
	case l.side == "remote" && ae.kind == packets.ErrRefusedIDRejected:
		return "the remote refuses the bridge's client id; set another one"
	}
	return ""
}

// connect makes one attempt (on the remote side: each address in order) and waits for it.
func (l *link) connect(c mqtt.Client) error {
	l.mu.Lock()
	l.attempts = l.attempts[:0]
	l.mu.Unlock()
	tok := c.Connect()
	select {
	case <-tok.Done():
	case <-l.b.ctx.Done():
		// Unblock a handshake in progress, then make sure nothing stays connected. Bounded:
		// a DialFunc that ignores its ctx must not hold Close up.
		l.dropConn()
		select {
		case <-tok.Done():
			c.Disconnect(0)
		case <-time.After(connectTimeout):
		}
		return l.b.ctx.Err()
	}
	err := tok.Error()
	if err == nil {
		return nil
	}
	kind := byte(packets.ErrNetworkError)
	if ct, ok := tok.(*mqtt.ConnectToken); ok {
		kind = ct.ReturnCode()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.side == "local" || len(l.b.opts.Remotes) == 1:
		if len(l.attempts) == 1 {
			// The dial failed: its error names the address.
			err = errors.New(l.attempts[0])
		}
	case len(l.attempts) == len(l.b.opts.Remotes):
		err = errors.New(strings.Join(l.attempts, "; "))
	default:
		// paho reports what the last address it tried answered; the dial failures of
		// the others are known here.
		err = fmt.Errorf("last address tried: %w; %s", err, strings.Join(l.attempts, "; "))
	}
	return &attemptError{err: err, kind: kind}
}

// openConn is paho's custom open-connection function: the URL is a placeholder that names
// the address (local, or remote N), the real transport is the DialFunc.
func (l *link) openConn(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
	if err := l.b.ctx.Err(); err != nil {
		return nil, fmt.Errorf("dial: bridge closing: %w", err)
	}
	dial, label, idx := l.b.opts.Local, "local broker", -1
	if l.side == "remote" {
		i, ok := l.b.remoteHosts[u.Hostname()]
		if !ok {
			return nil, fmt.Errorf("dial: unknown placeholder %s", u)
		}
		dial, label, idx = l.b.opts.Remotes[i].Dial, l.b.opts.Remotes[i].Label, i
	}
	ctx, cancel := context.WithTimeout(l.b.ctx, connectTimeout)
	defer cancel()
	conn, err := dial(ctx)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.attempts = append(l.attempts, fmt.Sprintf("%s: %v", label, err))
		return nil, err
	}
	// Checked under mu so that Close, which cancels ctx before dropping conn, either sees this
	// connection or this function sees the cancellation.
	if err := l.b.ctx.Err(); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("dial: bridge closing: %w", err)
	}
	l.conn, l.dialed = conn, idx
	return conn, nil
}

// lastDialed is the Remotes index of the latest connection.
func (l *link) lastDialed() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return max(l.dialed, 0)
}

// dropConn ends the latest connection abruptly (no DISCONNECT), so that paho sees it as lost.
// A TCP connection is shut down rather than closed: paho takes the read error "use of closed
// network connection" for its own Disconnect and ignores it, so a closed socket would go
// unnoticed until keepalive gives up, while a shutdown reads as EOF.
func (l *link) dropConn() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return
	}
	c := l.conn
	// A TLS connection's socket is underneath.
	if u, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = u.NetConn()
	}
	if tc, ok := c.(interface {
		CloseRead() error
		CloseWrite() error
	}); ok {
		_ = tc.CloseWrite()
		_ = tc.CloseRead()
		return
	}
	_ = l.conn.Close()
}

// closeConn closes the latest connection, after paho is done with it.
func (l *link) closeConn() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		_ = l.conn.Close()
	}
}

// lostConn is called from paho's connection-lost handler; label names the address, if known.
func (l *link) lostConn(err error, label string) {
	log := l.log
	if label != "" {
		log = log.With("remote", label)
	}
	if l.b.ctx.Err() != nil {
		log.Debug("connection closed", "err", err)
		return
	}
	log.Warn("connection lost; reconnecting", "err", err)
	select {
	case l.lost <- struct{}{}:
	default:
	}
}

// sleep waits for d, or returns false as soon as the bridge closes.
func (l *link) sleep(d time.Duration) bool {
	if d <= 0 {
		return l.b.ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.b.ctx.Done():
		return false
	}
}
