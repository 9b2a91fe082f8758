package broker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pimqtt/pimqtt/wsnet"
)

// Helpers for the hostile-client tests (malformed_test.go, fuzz_test.go):
// a notation for raw MQTT bytes, a raw client that reads packets with
// deadlines, and checks that the broker is still healthy.

// replyTimeout bounds every read that waits for the broker. Generous,
// because -race and a loaded CI machine slow everything down; a healthy
// run never waits for it.
const replyTimeout = 5 * time.Second

// pk builds raw bytes from a compact notation, close to the one of
// mosquitto's test/broker/data/*.json:
//
//	30 746F70     hex bytes (any even number of hex digits per token)
//	'topic'       the bytes of a string literal (no escapes; may hold spaces)
//	r?            the remaining length (variable byte integer) of the packet:
//	              every byte after it up to the next '|' or the end
//	rN vN         a variable byte integer N (decimal), e.g. a wrong length
//	mN HN         a two-byte integer N (a packet identifier, a length)
//	LN            a four-byte integer N
//	sN            a two-byte string length N, followed by nothing
//	s'text'       a two-byte length and the string
//	s{...}        a two-byte length and the bytes of the group
//	v{...}        a variable byte integer length and the bytes of the group
//	*N{...}       the group repeated N times
//	|             separates packets (ends the reach of r?)
//
// Malformed notation is a bug in the test and panics.
func pk(spec string) []byte {
	p := &pkParser{s: spec}
	out := p.packets()
	if p.i < len(p.s) {
		panic(fmt.Sprintf("pk(%q): unexpected %q at %d", spec, p.s[p.i:], p.i))
	}
	return out
}

type pkParser struct {
	s string
	i int
}

func (p *pkParser) fail(msg string) {
	panic(fmt.Sprintf("pk(%q): %s at offset %d", p.s, msg, p.i))
}

func (p *pkParser) skipSpace() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == '\n') {
		p.i++
	}
}

// packets parses '|'-separated packets.
func (p *pkParser) packets() []byte {
	var out []byte
	for {
		out = append(out, p.packet()...)
		p.skipSpace()
		if p.i < len(p.s) && p.s[p.i] == '|' {
			p.i++
			continue
		}
		return out
	}
}

// packet parses tokens up to '|' or the end, resolving r?.
func (p *pkParser) packet() []byte {
	var head, tail []byte
	sawLen := false
	for {
		p.skipSpace()
		if p.i >= len(p.s) || p.s[p.i] == '|' || p.s[p.i] == '}' {
			break
		}
		if strings.HasPrefix(p.s[p.i:], "r?") {
			if sawLen {
				p.fail("second r? in one packet")
			}
			p.i += 2
			sawLen = true
			continue
		}
		b := p.token()
		if sawLen {
			tail = append(tail, b...)
		} else {
			head = append(head, b...)
		}
	}
	if sawLen {
		head = append(head, pkVarint(len(tail))...)
	}
	return append(head, tail...)
}

// group parses "{...}" and returns its bytes.
func (p *pkParser) group() []byte {
	if p.i >= len(p.s) || p.s[p.i] != '{' {
		p.fail("want '{'")
	}
	p.i++
	var out []byte
	for {
		p.skipSpace()
		if p.i >= len(p.s) {
			p.fail("unterminated group")
		}
		if p.s[p.i] == '}' {
			p.i++
			return out
		}
		out = append(out, p.token()...)
	}
}

func (p *pkParser) quoted() []byte {
	if p.i >= len(p.s) || p.s[p.i] != '\'' {
		p.fail("want a quote")
	}
	end := strings.IndexByte(p.s[p.i+1:], '\'')
	if end < 0 {
		p.fail("unterminated string")
	}
	b := []byte(p.s[p.i+1 : p.i+1+end])
	p.i += end + 2
	return b
}

func (p *pkParser) number() int {
	j := p.i
	for j < len(p.s) && p.s[j] >= '0' && p.s[j] <= '9' {
		j++
	}
	if j == p.i {
		p.fail("want a decimal number")
	}
	n, err := strconv.Atoi(p.s[p.i:j])
	if err != nil {
		p.fail(err.Error())
	}
	p.i = j
	return n
}

func (p *pkParser) token() []byte {
	c := p.s[p.i]
	switch {
	case c == '\'':
		return p.quoted()
	case c == '*':
		p.i++
		n := p.number()
		return bytes.Repeat(p.group(), n)
	case c == 's':
		p.i++
		switch {
		case p.i < len(p.s) && p.s[p.i] == '\'':
			b := p.quoted()
			return append(pkU16(len(b)), b...)
		case p.i < len(p.s) && p.s[p.i] == '{':
			b := p.group()
			return append(pkU16(len(b)), b...)
		}
		return pkU16(p.number())
	case c == 'v' || c == 'r':
		p.i++
		if c == 'v' && p.i < len(p.s) && p.s[p.i] == '{' {
			b := p.group()
			return append(pkVarint(len(b)), b...)
		}
		return pkVarint(p.number())
	case c == 'm' || c == 'H':
		p.i++
		return pkU16(p.number())
	case c == 'L':
		p.i++
		b := make([]byte, 4)
		binary.BigEndian.PutUint32(b, uint32(p.number()))
		return b
	}
	j := p.i
	for j < len(p.s) && isHexDigit(p.s[j]) {
		j++
	}
	if j == p.i || (j-p.i)%2 != 0 {
		p.fail("want an even number of hex digits")
	}
	b, err := hex.DecodeString(p.s[p.i:j])
	if err != nil {
		p.fail(err.Error())
	}
	p.i = j
	return b
}

func isHexDigit(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// shortHex renders bytes for a failure message, eliding the middle of
// long inputs.
func shortHex(b []byte) string {
	if len(b) <= 96 {
		return fmt.Sprintf("% x", b)
	}
	return fmt.Sprintf("% x … (%d bytes) … % x", b[:64], len(b)-80, b[len(b)-16:])
}

func pkU16(n int) []byte {
	if n < 0 || n > 0xFFFF {
		panic(fmt.Sprintf("pkU16(%d) out of range", n))
	}
	return []byte{byte(n >> 8), byte(n)}
}

func pkVarint(n int) []byte {
	var out []byte
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		out = append(out, d)
		if n == 0 {
			return out
		}
	}
}

// connectFor is a valid CONNECT for the protocol version (4 = 3.1.1, 5)
// with a clean session and a 60 s keepalive.
func connectFor(version byte, clientID string) []byte {
	if version == 5 {
		return pk("10 r? s'MQTT' 05 02 H60 00 s'" + clientID + "'")
	}
	return pk("10 r? s'MQTT' 04 02 H60 s'" + clientID + "'")
}

// mqttPacket is one packet read from the broker.
type mqttPacket struct {
	header byte
	body   []byte
}

// describe renders a packet the way the malformed table writes its
// expectations: the type and the codes that matter, e.g. "CONNACK 0x00",
// "DISCONNECT 0x81", "SUBACK 0x00 0x80", "PUBACK", "PUBCOMP 0x92".
func (p mqttPacket) describe(version byte) string {
	b := p.body
	props := func(off int) int { // skips a v5 property block at off
		if version != 5 || off >= len(b) {
			return off
		}
		n, used, ok := readVarint(b[off:])
		if !ok {
			return len(b)
		}
		return min(off+used+n, len(b))
	}
	codes := func(name string, from []byte) string {
		s := name
		for _, c := range from {
			s += fmt.Sprintf(" 0x%02x", c)
		}
		return s
	}
	switch p.header >> 4 {
	case 2:
		if len(b) < 2 {
			return fmt.Sprintf("CONNACK (short: % x)", b)
		}
		return fmt.Sprintf("CONNACK 0x%02x", b[1])
	case 3:
		if len(b) < 2 {
			return "PUBLISH (short)"
		}
		n := int(binary.BigEndian.Uint16(b))
		if 2+n > len(b) {
			return "PUBLISH (bad topic length)"
		}
		return "PUBLISH " + string(b[2:2+n])
	case 4, 5, 6, 7:
		name := [...]string{"PUBACK", "PUBREC", "PUBREL", "PUBCOMP"}[p.header>>4-4]
		if len(b) > 2 && b[2] != 0 {
			return fmt.Sprintf("%s 0x%02x", name, b[2])
		}
		return name
	case 9:
		if len(b) < 2 {
			return "SUBACK (short)"
		}
		return codes("SUBACK", b[props(2):])
	case 11:
		if len(b) < 2 {
			return "UNSUBACK (short)"
		}
		return codes("UNSUBACK", b[props(2):])
	case 13:
		return "PINGRESP"
	case 14:
		if len(b) == 0 {
			return "DISCONNECT 0x00"
		}
		return fmt.Sprintf("DISCONNECT 0x%02x", b[0])
	case 15:
		if len(b) == 0 {
			return "AUTH 0x00"
		}
		return fmt.Sprintf("AUTH 0x%02x", b[0])
	}
	return fmt.Sprintf("packet %02x %s", p.header, shortHex(b))
}

func readVarint(b []byte) (n, used int, ok bool) {
	mult := 1
	for i := 0; i < 4 && i < len(b); i++ {
		n += int(b[i]&0x7f) * mult
		if b[i]&0x80 == 0 {
			return n, i + 1, true
		}
		mult *= 128
	}
	return 0, 0, false
}

// rawClient speaks MQTT byte by byte over one connection.
type rawClient struct {
	t       testing.TB
	conn    net.Conn
	r       *bufio.Reader
	version byte
}

func newRawClient(t testing.TB, conn net.Conn, version byte) *rawClient {
	return &rawClient{t: t, conn: conn, r: bufio.NewReader(conn), version: version}
}

func dialRaw(t testing.TB, addr string, version byte) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, replyTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	return newRawClient(t, conn, version)
}

// write sends bytes; the broker may already have closed the connection
// (a rejected first byte), so a write error is returned, not fatal.
func (c *rawClient) write(b []byte) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(replyTimeout))
	_, err := c.conn.Write(b)
	return err
}

// next reads one packet. A closed connection (EOF, reset) is io.EOF.
func (c *rawClient) next() (mqttPacket, error) {
	p, err := c.nextRaw()
	if err != nil {
		return p, closedOr(err)
	}
	return p, nil
}

// nextRaw is next without mapping the ways a connection ends to io.EOF:
// a reset stays ECONNRESET.
func (c *rawClient) nextRaw() (mqttPacket, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(replyTimeout))
	h, err := c.r.ReadByte()
	if err != nil {
		return mqttPacket{}, err
	}
	n, mult := 0, 1
	for i := 0; ; i++ {
		d, err := c.r.ReadByte()
		if err != nil {
			return mqttPacket{}, err
		}
		n += int(d&0x7f) * mult
		if d&0x80 == 0 {
			break
		}
		if i == 3 {
			return mqttPacket{}, fmt.Errorf("broker sent a remaining length longer than 4 bytes")
		}
		mult *= 128
	}
	if n > 1<<20 {
		return mqttPacket{}, fmt.Errorf("broker sent a %d-byte packet", n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return mqttPacket{}, err
	}
	return mqttPacket{header: h, body: body}, nil
}

// closedOr maps the ways a peer's close shows up to io.EOF.
func closedOr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.ErrClosedPipe) || errors.Is(err, net.ErrClosed) {
		return io.EOF
	}
	return err
}

// expect reads one packet and fails unless it is described as want.
func (c *rawClient) expect(want string) mqttPacket {
	c.t.Helper()
	p, err := c.next()
	if err != nil {
		c.t.Fatalf("want %s, got %v", want, err)
	}
	if got := p.describe(c.version); got != want {
		c.t.Fatalf("want %s, got %s (%s)", want, got, shortHex(p.body))
	}
	return p
}

// expectClosed fails unless the broker closes the connection without
// sending anything more.
func (c *rawClient) expectClosed() {
	c.t.Helper()
	p, err := c.next()
	switch {
	case err == io.EOF:
	case err != nil:
		c.t.Fatalf("want the connection closed, got %v", err)
	default:
		c.t.Fatalf("want the connection closed, got %s (%s)", p.describe(c.version), shortHex(p.body))
	}
}

// connect sends a valid CONNECT and checks the CONNACK.
func (c *rawClient) connect(clientID string) {
	c.t.Helper()
	if err := c.write(connectFor(c.version, clientID)); err != nil {
		c.t.Fatalf("write CONNECT: %v", err)
	}
	c.expect("CONNACK 0x00")
}

func (c *rawClient) close() { _ = c.conn.Close() }

// roundTrip proves a client works end to end: it subscribes to a topic of
// its own at QoS 1, publishes to it at QoS 1 and gets both the PUBACK and
// its own message back.
func (c *rawClient) roundTrip(topic string) {
	c.t.Helper()
	var subscribe, publish string
	if c.version == 5 {
		subscribe = "82 r? m7 00 s'" + topic + "' 01"
		publish = "32 r? s'" + topic + "' m8 00 'ok'"
	} else {
		subscribe = "82 r? m7 s'" + topic + "' 01"
		publish = "32 r? s'" + topic + "' m8 'ok'"
	}
	if err := c.write(pk(subscribe)); err != nil {
		c.t.Fatalf("write SUBSCRIBE: %v", err)
	}
	c.expect("SUBACK 0x01")
	if err := c.write(pk(publish)); err != nil {
		c.t.Fatalf("write PUBLISH: %v", err)
	}
	var gotAck, gotMsg bool
	for !gotAck || !gotMsg {
		p, err := c.next()
		if err != nil {
			c.t.Fatalf("round trip on %s: %v", topic, err)
		}
		switch d := p.describe(c.version); {
		case d == "PUBACK" || d == "PUBACK 0x00" || d == "PUBACK 0x10":
			gotAck = true
		case d == "PUBLISH "+topic:
			gotMsg = true
			if p.header&0x06 == 0x02 { // QoS 1: acknowledge it
				if err := c.write(append([]byte{0x40, 0x02}, p.body[2+len(topic):4+len(topic)]...)); err != nil {
					c.t.Fatalf("write PUBACK: %v", err)
				}
			}
		default:
			c.t.Fatalf("round trip on %s: unexpected %s", topic, d)
		}
	}
}

// ping sends PINGREQ and expects PINGRESP next.
func (c *rawClient) ping() {
	c.t.Helper()
	if err := c.write([]byte{0xC0, 0x00}); err != nil {
		c.t.Fatalf("write PINGREQ: %v", err)
	}
	c.expect("PINGRESP")
}

// logSink keeps the broker's log for failure messages.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

// since returns what was logged after offset.
func (s *logSink) since(offset int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if offset > s.buf.Len() {
		return ""
	}
	return s.buf.String()[offset:]
}

// reset forgets what was logged so far.
func (s *logSink) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Reset()
}

func (s *logSink) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Len()
}

// hostileBroker is a started broker with its log, for hostile-client tests.
type hostileBroker struct {
	*Broker
	log  *logSink
	addr string // the TCP listener, if any
}

// startHostileBroker starts a broker on a TCP port of 127.0.0.1 with the
// given limits (zero: DefaultLimits) and closes it when the test ends.
func startHostileBroker(t testing.TB, limits Limits, allowAnonymous bool) *hostileBroker {
	t.Helper()
	hb, err := newHostileBroker(limits, allowAnonymous)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := hb.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return hb
}

func newHostileBroker(limits Limits, allowAnonymous bool) (*hostileBroker, error) {
	sink := &logSink{}
	b, err := New(Options{
		Listeners:      []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}},
		AllowAnonymous: allowAnonymous,
		Limits:         limits,
		Logger:         slog.New(slog.NewTextHandler(sink, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		return nil, err
	}
	if err := b.Start(); err != nil {
		_ = b.Close()
		return nil, err
	}
	b.OpenNetwork()
	hb := &hostileBroker{Broker: b, log: sink}
	for _, a := range b.Addrs() {
		if a.Kind == TCP {
			hb.addr = a.Addr.String()
		}
	}
	return hb, nil
}

// brokerOpenConns counts the connections the broker's listeners are still
// serving. A connection leaves the count only after its goroutine has
// finished, panic recovery included, so once it is zero RecoveredPanics
// is final for every connection closed before.
func brokerOpenConns(b *Broker) (int, error) {
	ids := []string{inMemory}
	for i, lc := range b.opts.Listeners {
		ids = append(ids, fmt.Sprintf("%s%d", lc.Kind, i))
	}
	n := 0
	for _, id := range ids {
		l, ok := b.server.Listeners.Get(id)
		if !ok {
			continue
		}
		cl, ok := l.(*connListener)
		if !ok {
			return 0, fmt.Errorf("listener %s is a %T, not a *connListener", id, l)
		}
		cl.mu.Lock()
		n += len(cl.conns)
		cl.mu.Unlock()
	}
	return n, nil
}

// waitBrokerConns waits until the broker serves exactly n connections;
// n = 0 is the idle state every hostile-client check starts from. It polls
// a condition that turns true as soon as the broker has finished with a
// closed connection, so it is not a sleep standing in for synchronisation.
func waitBrokerConns(ctx context.Context, b *Broker, n int) error {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for spin := 0; ; spin++ {
		got, err := brokerOpenConns(b)
		if err != nil {
			return err
		}
		if got == n {
			return nil
		}
		if spin < 50 {
			runtime.Gosched() // usually enough, and much faster than a tick
			continue
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("broker serves %d connection(s), want %d: %w", got, n, ctx.Err())
		case <-tick.C:
		}
	}
}

func (hb *hostileBroker) mustConns(t testing.TB, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), replyTimeout)
	defer cancel()
	if err := waitBrokerConns(ctx, hb.Broker, n); err != nil {
		t.Fatal(err)
	}
}

func (hb *hostileBroker) mustIdle(t testing.TB) {
	t.Helper()
	hb.mustConns(t, 0)
}

// startTestBroker starts a broker with opts, logging at debug level to the
// returned sink (opts.Logger is replaced), opens its network listeners
// and closes it when the test ends.
func startTestBroker(t testing.TB, opts Options) (*Broker, *logSink) {
	t.Helper()
	b, sink := newTestBroker(t, opts)
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	b.OpenNetwork()
	return b, sink
}

// newTestBroker makes a broker as startTestBroker does, without starting
// it; it is closed when the test ends.
func newTestBroker(t testing.TB, opts Options) (*Broker, *logSink) {
	t.Helper()
	sink := &logSink{}
	opts.Logger = slog.New(slog.NewTextHandler(sink, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return b, sink
}

// listenerAddr returns the address of the broker's first listener of kind.
func listenerAddr(t testing.TB, b *Broker, kind string) string {
	t.Helper()
	for _, a := range b.Addrs() {
		if a.Kind == kind {
			return a.Addr.String()
		}
	}
	t.Fatalf("no %s listener", kind)
	return ""
}

// waitFor polls cond until it holds, failing the test after limit. It
// watches a condition the broker changes as soon as it has done its
// work, so it is not a sleep standing in for synchronisation.
func waitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, limit)
		}
		time.Sleep(time.Millisecond) // polling interval, not synchronisation
	}
}

// countLines counts the log lines holding s.
func (s *logSink) countLines(sub string) int {
	n := 0
	for _, line := range strings.Split(s.since(0), "\n") {
		if strings.Contains(line, sub) {
			n++
		}
	}
	return n
}

// connackProps returns the properties of an MQTT 5 CONNACK by identifier,
// each with its raw value bytes.
func connackProps(t testing.TB, ack mqttPacket) map[byte][]byte {
	t.Helper()
	b := ack.body
	if len(b) < 3 {
		t.Fatalf("CONNACK % x has no properties", b)
	}
	n, used, ok := readVarint(b[2:])
	if !ok || 2+used+n > len(b) {
		t.Fatalf("CONNACK % x: bad property length", b)
	}
	p := b[2+used : 2+used+n]
	props := map[byte][]byte{}
	for len(p) > 0 {
		id := p[0]
		p = p[1:]
		var size int
		switch id {
		case 0x24, 0x25, 0x28, 0x29, 0x2A: // byte
			size = 1
		case 0x13, 0x21, 0x22: // two-byte integer
			size = 2
		case 0x11, 0x27: // four-byte integer
			size = 4
		case 0x12, 0x15, 0x16, 0x1A, 0x1C, 0x1F: // string or binary
			if len(p) < 2 {
				t.Fatalf("CONNACK % x: truncated property 0x%02x", b, id)
			}
			size = 2 + int(binary.BigEndian.Uint16(p))
		case 0x26: // string pair
			if len(p) < 2 {
				t.Fatalf("CONNACK % x: truncated user property", b)
			}
			k := 2 + int(binary.BigEndian.Uint16(p))
			if len(p) < k+2 {
				t.Fatalf("CONNACK % x: truncated user property", b)
			}
			size = k + 2 + int(binary.BigEndian.Uint16(p[k:]))
		default:
			t.Fatalf("CONNACK % x: unknown property 0x%02x", b, id)
		}
		if len(p) < size {
			t.Fatalf("CONNACK % x: truncated property 0x%02x", b, id)
		}
		props[id] = p[:size]
		p = p[size:]
	}
	return props
}

// discardLogger logs nothing.
func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// dialWebSocket opens an MQTT-over-WebSocket connection to addr.
func dialWebSocket(ctx context.Context, addr string) (net.Conn, error) {
	d := websocket.Dialer{Subprotocols: []string{wsnet.Subprotocol}, HandshakeTimeout: time.Second}
	ws, _, err := d.DialContext(ctx, "ws://"+addr+"/mqtt", nil)
	if err != nil {
		return nil, err
	}
	return wsnet.New(ws), nil
}

// dialKind opens a raw connection to a TCP or WebSocket listener.
func dialKind(t testing.TB, kind, addr string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), replyTimeout)
	defer cancel()
	var c net.Conn
	var err error
	if kind == WebSocket {
		c, err = dialWebSocket(ctx, addr)
	} else {
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		t.Fatalf("dial %s %s: %v", kind, addr, err)
	}
	return c
}
