package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/mochi-mqtt/server/v2/packets"
)

// recordVersion starts every stored value, so that a later format can be
// told from this one.
const recordVersion = 1

// The buckets of the store file, one per kind of record. Keys that belong
// to a client start with clientPrefix(id), so one client's records sort
// together.
var (
	bucketMeta          = []byte("meta")          // "version" → recordVersion
	bucketRetained      = []byte("retained")      // topic → message
	bucketSessions      = []byte("sessions")      // client id → session
	bucketSubscriptions = []byte("subscriptions") // client, filter → subscription
	bucketMessages      = []byte("messages")      // message number → message
	bucketDeliveries    = []byte("deliveries")    // client, message number → delivery
	bucketInflight      = []byte("inflight")      // client, packet id → inflight
)

// buckets lists every bucket, in the order of the bucket ids used in ops.
var buckets = [...][]byte{bucketMeta, bucketRetained, bucketSessions, bucketSubscriptions, bucketMessages, bucketDeliveries, bucketInflight}

// Bucket ids: indexes into buckets.
const (
	bMeta byte = iota
	bRetained
	bSessions
	bSubscriptions
	bMessages
	bDeliveries
	bInflight
)

// clientPrefix is the start of every key that belongs to client id: its
// length first, so that "a" and "ab" never share a prefix.
func clientPrefix(id string) string {
	b := binary.AppendUvarint(nil, uint64(len(id)))
	return string(append(b, id...))
}

func subscriptionKey(client, filter string) string { return clientPrefix(client) + filter }

func messageKey(n uint64) string { return string(binary.BigEndian.AppendUint64(nil, n)) }

func deliveryKey(client string, n uint64) string { return clientPrefix(client) + messageKey(n) }

func inflightKey(client string, pid uint16) string {
	return clientPrefix(client) + string(binary.BigEndian.AppendUint16(nil, pid))
}

// splitClientKey returns the client id and the rest of a key made with
// clientPrefix.
func splitClientKey(key []byte) (client string, rest []byte, err error) {
	n, w := binary.Uvarint(key)
	if w <= 0 || uint64(len(key)-w) < n {
		return "", nil, errors.New("bad client key")
	}
	return string(key[w : w+int(n)]), key[w+int(n):], nil
}

// message is a stored PUBLISH: a retained message, a message waiting for
// persistent sessions, or a full copy in an inflight record.
type message struct {
	Created       int64
	Origin        string
	Topic         string
	QoS           byte
	Retain        bool
	Payload       []byte
	PayloadFormat byte
	FormatFlag    bool
	Expiry        uint32 // MQTT 5 message expiry interval, seconds; 0 = none
	ContentType   string
	ResponseTopic string
	Correlation   []byte
	User          []packets.UserProperty
}

// messageFrom takes what a stored message keeps of a packet.
func messageFrom(pk packets.Packet) message {
	return message{
		Created:       pk.Created,
		Origin:        pk.Origin,
		Topic:         pk.TopicName,
		QoS:           pk.FixedHeader.Qos,
		Retain:        pk.FixedHeader.Retain,
		Payload:       pk.Payload,
		PayloadFormat: pk.Properties.PayloadFormat,
		FormatFlag:    pk.Properties.PayloadFormatFlag,
		Expiry:        pk.Properties.MessageExpiryInterval,
		ContentType:   pk.Properties.ContentType,
		ResponseTopic: pk.Properties.ResponseTopic,
		Correlation:   pk.Properties.CorrelationData,
		User:          pk.Properties.User,
	}
}

// expired says whether an MQTT 5 message expiry has passed at now (unix
// seconds).
func (m message) expired(now int64) bool {
	return m.Expiry > 0 && m.Created+int64(m.Expiry) < now
}

// delivery is what one session's copy of a message adds to the message:
// the QoS granted by its subscription, the retain flag as forwarded, and
// the subscription identifiers. A delivery waits for a packet id; an
// inflight publish has one.
type delivery struct {
	QoS    byte
	Retain bool
	SubIDs []int
}

// Kinds of inflight records.
const (
	// kindRef is a PUBLISH to the client whose message is in the
	// messages bucket.
	kindRef byte = 1 + iota
	// kindFull is a PUBLISH to the client that carries its own message.
	kindFull
	// kindPubrec is a QoS 2 PUBLISH received from the client and
	// acknowledged with PUBREC: the client's PUBREL is awaited, and a
	// resent PUBLISH with the same packet id must not be delivered again.
	kindPubrec
	// kindPubrel is a QoS 2 PUBLISH to the client that it acknowledged
	// with PUBREC: PUBREL was sent, PUBCOMP is awaited.
	kindPubrel
)

// inflight is a packet id in use between the broker and a persistent
// session.
type inflight struct {
	Kind     byte
	Msg      uint64   // kindRef
	Delivery delivery // kindRef, kindFull
	Full     message  // kindFull
	Created  int64    // kindPubrec, kindPubrel
}

// session is a persistent session's connection properties, as Mochi needs
// them to restore the client, and when it disconnected.
type session struct {
	ProtocolVersion byte
	Clean           bool
	Username        []byte
	Listener        string
	Expiry          uint32 // session expiry interval, seconds
	ExpiryFlag      bool
	ReceiveMaximum  uint16
	MaxPacketSize   uint32
	ProblemInfo     byte
	ProblemInfoFlag bool
	ResponseInfo    byte
	// Disconnected is when the client disconnected (unix seconds); 0
	// while it is connected.
	Disconnected int64
}

// subscription is one of a persistent session's subscriptions.
type subscription struct {
	QoS               byte
	NoLocal           bool
	RetainAsPublished bool
	RetainHandling    byte
	Identifier        int
}

// encoder appends a record's fields.
type encoder struct{ b []byte }

func newEncoder() *encoder { return &encoder{b: []byte{recordVersion}} }

func (e *encoder) byte(v byte) { e.b = append(e.b, v) }
func (e *encoder) bool(v bool) {
	if v {
		e.b = append(e.b, 1)
	} else {
		e.b = append(e.b, 0)
	}
}
func (e *encoder) uint(v uint64)   { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) int(v int64)     { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) bytes(v []byte)  { e.uint(uint64(len(v))); e.b = append(e.b, v...) }
func (e *encoder) string(v string) { e.uint(uint64(len(v))); e.b = append(e.b, v...) }

// decoder reads a record's fields; the first error sticks and later reads
// return zero values.
type decoder struct {
	b   []byte
	err error
}

func newDecoder(b []byte) *decoder {
	d := &decoder{b: b}
	if v := d.byte(); d.err == nil && v != recordVersion {
		d.err = fmt.Errorf("record version %d, want %d", v, recordVersion)
	}
	return d
}

var errShort = errors.New("record too short")

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.err = errShort
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) bool() bool {
	switch v := d.byte(); v {
	case 0:
		return false
	case 1:
		return true
	default:
		if d.err == nil {
			d.err = fmt.Errorf("bad boolean %d", v)
		}
		return false
	}
}

func (d *decoder) uint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errShort
		return 0
	}
	d.b = d.b[n:]
	return v
}

// uintMax reads an unsigned number of at most max.
func (d *decoder) uintMax(max uint64) uint64 {
	v := d.uint()
	if v > max && d.err == nil {
		d.err = fmt.Errorf("number %d over %d", v, max)
	}
	return v
}

func (d *decoder) int() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errShort
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errShort
		return nil
	}
	if n == 0 {
		return nil
	}
	// A copy: bbolt's values live in its memory map only as long as the
	// transaction.
	v := append([]byte(nil), d.b[:n]...)
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string { return string(d.bytes()) }

// count reads a number of elements, each of which takes at least one
// byte, so that a corrupt count cannot make a huge allocation.
func (d *decoder) count() int {
	n := d.uint()
	if d.err == nil && n > uint64(len(d.b)) {
		d.err = fmt.Errorf("count %d over the %d bytes left", n, len(d.b))
	}
	if d.err != nil {
		// Never a count from a damaged record: callers allocate by it.
		return 0
	}
	return int(n)
}

// end reports the first error, or bytes left over.
func (d *decoder) end() error {
	if d.err == nil && len(d.b) > 0 {
		d.err = fmt.Errorf("%d bytes after the record", len(d.b))
	}
	return d.err
}

func (e *encoder) message(m message) {
	e.int(m.Created)
	e.string(m.Origin)
	e.string(m.Topic)
	e.byte(m.QoS)
	e.bool(m.Retain)
	e.bytes(m.Payload)
	e.byte(m.PayloadFormat)
	e.bool(m.FormatFlag)
	e.uint(uint64(m.Expiry))
	e.string(m.ContentType)
	e.string(m.ResponseTopic)
	e.bytes(m.Correlation)
	e.uint(uint64(len(m.User)))
	for _, u := range m.User {
		e.string(u.Key)
		e.string(u.Val)
	}
}

func (d *decoder) message() message {
	m := message{
		Created: d.int(),
		Origin:  d.string(),
		Topic:   d.string(),
		QoS:     d.byte(),
		Retain:  d.bool(),
		Payload: d.bytes(),
	}
	m.PayloadFormat = d.byte()
	m.FormatFlag = d.bool()
	m.Expiry = uint32(d.uintMax(math.MaxUint32))
	m.ContentType = d.string()
	m.ResponseTopic = d.string()
	m.Correlation = d.bytes()
	if n := d.count(); n > 0 {
		m.User = make([]packets.UserProperty, 0, n)
		for range n {
			m.User = append(m.User, packets.UserProperty{Key: d.string(), Val: d.string()})
		}
	}
	if m.QoS > 2 && d.err == nil {
		d.err = fmt.Errorf("QoS %d", m.QoS)
	}
	return m
}

func (e *encoder) delivery(v delivery) {
	e.byte(v.QoS)
	e.bool(v.Retain)
	e.uint(uint64(len(v.SubIDs)))
	for _, id := range v.SubIDs {
		e.uint(uint64(id))
	}
}

func (d *decoder) delivery() delivery {
	v := delivery{QoS: d.byte(), Retain: d.bool()}
	if n := d.count(); n > 0 {
		v.SubIDs = make([]int, 0, n)
		for range n {
			v.SubIDs = append(v.SubIDs, int(d.uintMax(268435455))) // the largest MQTT variable byte integer
		}
	}
	if (v.QoS < 1 || v.QoS > 2) && d.err == nil {
		d.err = fmt.Errorf("delivery QoS %d", v.QoS)
	}
	return v
}

func encodeMessage(m message) []byte {
	e := newEncoder()
	e.message(m)
	return e.b
}

func decodeMessage(b []byte) (message, error) {
	d := newDecoder(b)
	m := d.message()
	return m, d.end()
}

func encodeDelivery(v delivery) []byte {
	e := newEncoder()
	e.delivery(v)
	return e.b
}

func decodeDelivery(b []byte) (delivery, error) {
	d := newDecoder(b)
	v := d.delivery()
	return v, d.end()
}

func encodeInflight(v inflight) []byte {
	e := newEncoder()
	e.byte(v.Kind)
	switch v.Kind {
	case kindRef:
		e.uint(v.Msg)
		e.delivery(v.Delivery)
	case kindFull:
		e.delivery(v.Delivery)
		e.message(v.Full)
	case kindPubrec, kindPubrel:
		e.int(v.Created)
	}
	return e.b
}

func decodeInflight(b []byte) (inflight, error) {
	d := newDecoder(b)
	v := inflight{Kind: d.byte()}
	switch v.Kind {
	case kindRef:
		v.Msg = d.uint()
		v.Delivery = d.delivery()
	case kindFull:
		v.Delivery = d.delivery()
		v.Full = d.message()
	case kindPubrec, kindPubrel:
		v.Created = d.int()
	default:
		if d.err == nil {
			d.err = fmt.Errorf("inflight kind %d", v.Kind)
		}
	}
	return v, d.end()
}

func encodeSession(s session) []byte {
	e := newEncoder()
	e.byte(s.ProtocolVersion)
	e.bool(s.Clean)
	e.bytes(s.Username)
	e.string(s.Listener)
	e.uint(uint64(s.Expiry))
	e.bool(s.ExpiryFlag)
	e.uint(uint64(s.ReceiveMaximum))
	e.uint(uint64(s.MaxPacketSize))
	e.byte(s.ProblemInfo)
	e.bool(s.ProblemInfoFlag)
	e.byte(s.ResponseInfo)
	e.int(s.Disconnected)
	return e.b
}

func decodeSession(b []byte) (session, error) {
	d := newDecoder(b)
	s := session{
		ProtocolVersion: d.byte(),
		Clean:           d.bool(),
		Username:        d.bytes(),
		Listener:        d.string(),
		Expiry:          uint32(d.uintMax(math.MaxUint32)),
		ExpiryFlag:      d.bool(),
		ReceiveMaximum:  uint16(d.uintMax(math.MaxUint16)),
		MaxPacketSize:   uint32(d.uintMax(math.MaxUint32)),
		ProblemInfo:     d.byte(),
		ProblemInfoFlag: d.bool(),
		ResponseInfo:    d.byte(),
		Disconnected:    d.int(),
	}
	return s, d.end()
}

func encodeSubscription(s subscription) []byte {
	e := newEncoder()
	e.byte(s.QoS)
	e.bool(s.NoLocal)
	e.bool(s.RetainAsPublished)
	e.byte(s.RetainHandling)
	e.uint(uint64(s.Identifier))
	return e.b
}

func decodeSubscription(b []byte) (subscription, error) {
	d := newDecoder(b)
	s := subscription{
		QoS:               d.byte(),
		NoLocal:           d.bool(),
		RetainAsPublished: d.bool(),
		RetainHandling:    d.byte(),
		Identifier:        int(d.uintMax(268435455)),
	}
	if s.QoS > 2 && d.err == nil {
		d.err = fmt.Errorf("subscription QoS %d", s.QoS)
	}
	return s, d.end()
}
