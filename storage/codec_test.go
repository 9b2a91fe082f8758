package storage

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// TestRecordsRoundTrip: every record decodes to what was encoded, and
// every truncation of it is an error, never a panic or a wrong value.
func TestRecordsRoundTrip(t *testing.T) {
	msg := message{
		Created: 1_700_000_000, Origin: "sensor-1", Topic: "home/kitchen/temp", QoS: 2, Retain: true,
		Payload: []byte("21.5"), PayloadFormat: 1, FormatFlag: true, Expiry: 3600,
		ContentType: "text/plain", ResponseTopic: "reply/here", Correlation: []byte{1, 2, 3},
		User: []packets.UserProperty{{Key: "unit", Val: "°C"}, {Key: "", Val: ""}},
	}
	for _, tc := range []struct {
		name   string
		encode func() []byte
		decode func([]byte) (any, error)
		want   any
	}{
		{"message", func() []byte { return encodeMessage(msg) }, func(b []byte) (any, error) { return decodeMessage(b) }, msg},
		{"empty message", func() []byte { return encodeMessage(message{}) }, func(b []byte) (any, error) { return decodeMessage(b) }, message{}},
		{"delivery", func() []byte { return encodeDelivery(delivery{QoS: 1, Retain: true, SubIDs: []int{1, 268435455}}) },
			func(b []byte) (any, error) { return decodeDelivery(b) }, delivery{QoS: 1, Retain: true, SubIDs: []int{1, 268435455}}},
		{"inflight ref", func() []byte {
			return encodeInflight(inflight{Kind: kindRef, Msg: 1 << 40, Delivery: delivery{QoS: 2}})
		},
			func(b []byte) (any, error) { return decodeInflight(b) }, inflight{Kind: kindRef, Msg: 1 << 40, Delivery: delivery{QoS: 2}}},
		{"inflight full", func() []byte { return encodeInflight(inflight{Kind: kindFull, Delivery: delivery{QoS: 1}, Full: msg}) },
			func(b []byte) (any, error) { return decodeInflight(b) }, inflight{Kind: kindFull, Delivery: delivery{QoS: 1}, Full: msg}},
		{"inflight pubrec", func() []byte { return encodeInflight(inflight{Kind: kindPubrec, Created: -5}) },
			func(b []byte) (any, error) { return decodeInflight(b) }, inflight{Kind: kindPubrec, Created: -5}},
		{"inflight pubrel", func() []byte { return encodeInflight(inflight{Kind: kindPubrel, Created: 7}) },
			func(b []byte) (any, error) { return decodeInflight(b) }, inflight{Kind: kindPubrel, Created: 7}},
		{"session", func() []byte {
			return encodeSession(session{ProtocolVersion: 5, Username: []byte("pi"), Listener: "tcp0", Expiry: 4294967295, ExpiryFlag: true,
				ReceiveMaximum: 65535, MaxPacketSize: 1 << 20, ProblemInfo: 1, ProblemInfoFlag: true, ResponseInfo: 1, Disconnected: 1_700_000_000})
		}, func(b []byte) (any, error) { return decodeSession(b) }, session{ProtocolVersion: 5, Username: []byte("pi"), Listener: "tcp0", Expiry: 4294967295, ExpiryFlag: true,
			ReceiveMaximum: 65535, MaxPacketSize: 1 << 20, ProblemInfo: 1, ProblemInfoFlag: true, ResponseInfo: 1, Disconnected: 1_700_000_000}},
		{"subscription", func() []byte {
			return encodeSubscription(subscription{QoS: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: 2, Identifier: 42})
		}, func(b []byte) (any, error) { return decodeSubscription(b) }, subscription{QoS: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: 2, Identifier: 42}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.encode()
			got, err := tc.decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("decoded %+v, want %+v", got, tc.want)
			}
			for n := range len(b) {
				if _, err := tc.decode(b[:n]); err == nil {
					t.Fatalf("the first %d of %d bytes decode without an error", n, len(b))
				}
			}
			if _, err := tc.decode(append(bytes.Clone(b), 0)); err == nil {
				t.Fatal("a byte after the record decodes without an error")
			}
			other := bytes.Clone(b)
			other[0] = recordVersion + 1
			if _, err := tc.decode(other); err == nil {
				t.Fatal("another format version decodes without an error")
			}
		})
	}
}

// TestKeys: client keys sort a client's records together and never mix
// up two clients whose ids are prefixes of each other.
func TestKeys(t *testing.T) {
	for _, tc := range []struct{ client, rest string }{
		{"a", "b/c"}, {"ab", "c"}, {"", "x"}, {string(make([]byte, 300)), "\x00\x01"},
	} {
		c, rest, err := splitClientKey([]byte(subscriptionKey(tc.client, tc.rest)))
		if err != nil || c != tc.client || string(rest) != tc.rest {
			t.Errorf("split(key(%q, %q)) = %q, %q, %v", tc.client, tc.rest, c, rest, err)
		}
	}
	if _, _, err := splitClientKey([]byte{5, 'a'}); err == nil {
		t.Error("a key shorter than its client id splits without an error")
	}
}

// FuzzDecode: no input makes a decoder panic or allocate beyond it.
func FuzzDecode(f *testing.F) {
	f.Add(encodeMessage(message{Topic: "t", Payload: []byte("p"), User: []packets.UserProperty{{Key: "k", Val: "v"}}}))
	f.Add(encodeInflight(inflight{Kind: kindFull, Delivery: delivery{QoS: 1, SubIDs: []int{3}}, Full: message{Topic: "t"}}))
	f.Add(encodeSession(session{ProtocolVersion: 4, Username: []byte("u")}))
	f.Add(encodeSubscription(subscription{QoS: 1}))
	f.Add([]byte{recordVersion, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = decodeMessage(b)
		_, _ = decodeDelivery(b)
		_, _ = decodeInflight(b)
		_, _ = decodeSession(b)
		_, _ = decodeSubscription(b)
		_, _, _ = splitClientKey(b)
	})
}
