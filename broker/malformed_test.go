package broker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

// malformedCase is one hostile input, after the categories of mosquitto's
// test/broker/data/*.json. Every case ends with the broker alive, no
// contained panic (unless panics is set) and a second client working.
type malformedCase struct {
	name    string
	version byte // 4 (MQTT 3.1.1) or 5
	// first: data is the connection's first bytes; otherwise a valid
	// CONNECT and CONNACK come first.
	first bool
	data  string // pk notation (see testhelpers_test.go)
	// halfClose shuts the client's write side after data: for packets that
	// claim more bytes than follow, which the broker must wait for.
	halfClose bool
	// want lists, separated by "; ", what the broker sends (as
	// mqttPacket.describe renders it), then "close" (the broker closes the
	// connection) or "open" (it stays usable: PINGREQ gets PINGRESP).
	want string
	// panics marks inputs that make Mochi panic (upstream issue #501): the
	// listener must contain exactly one panic per such connection.
	panics bool
	// mochi notes where Mochi v2.7.9 departs from the specification (or
	// from mosquitto); the case pins the current, harmless behaviour.
	mochi string
}

// Reused pieces of notation.
const (
	connect4 = "10 r? s'MQTT' 04 " // + flags keepalive payload
	connect5 = "10 r? s'MQTT' 05 " // + flags keepalive properties payload
)

var malformedV4 = []malformedCase{
	// CONNECT and the first packet.
	{name: "CONNECT remaining length 0", first: true, data: "10 00", want: "close"},
	{name: "CONNECT protocol name truncated", first: true, data: "10 02 00 04", want: "close"},
	{name: "CONNECT protocol name length beyond packet", first: true, data: "10 r? s20 'MQTT' 04 02 H60 s'c1'", want: "close"},
	{name: "CONNECT flags missing", first: true, data: connect4, want: "close"},
	{name: "CONNECT keepalive truncated", first: true, data: connect4 + "02 00", want: "close"},
	{name: "CONNECT client id missing", first: true, data: connect4 + "02 H60", want: "close"},
	{name: "CONNECT bad protocol name MQTS", first: true, data: "10 r? s'MQTS' 04 02 H60 s'c1'", want: "CONNACK 0x82; close",
		mochi: "answers 0x82, not a 3.1.1 return code (spec: MAY close without CONNACK)"},
	{name: "CONNECT protocol level 3 with name MQTT", first: true, data: "10 r? s'MQTT' 03 02 H60 s'c1'", want: "CONNACK 0x82; close",
		mochi: "answers 0x82, spec: 0x01 unacceptable protocol version"},
	{name: "CONNECT protocol level 6", first: true, data: "10 r? s'MQTT' 06 02 H60 s'c1'", want: "CONNACK 0x82; close",
		mochi: "answers 0x82, spec: 0x01"},
	// Accepted as a bridge by pimqtt (bridgeclient.go), as mosquitto does;
	// Mochi alone answers 0x82.
	{name: "CONNECT protocol level 0x84 (bridge)", first: true, data: "10 r? s'MQTT' 84 02 H60 s'c1'", want: "CONNACK 0x00; open"},
	{name: "CONNECT MQIsdp with level 4", first: true, data: "10 r? s'MQIsdp' 04 02 H60 s'c1'", want: "CONNACK 0x82; close",
		mochi: "answers 0x82, spec: 0x01"},
	{name: "CONNECT reserved flag set", first: true, data: connect4 + "03 H60 s'c1'", want: "CONNACK 0x82; close",
		mochi: "answers 0x82 before closing; spec [MQTT-3.1.2-3]: disconnect"},
	{name: "CONNECT reserved header flags 0x11", first: true, data: "11 r? s'MQTT' 04 02 H60 s'c1'", want: "close"},
	{name: "CONNECT reserved header flags 0x1F", first: true, data: "1F r? s'MQTT' 04 02 H60 s'c1'", want: "close"},
	{name: "CONNECT will QoS 3", first: true, data: connect4 + "1E H60 s'c1' s'w/t' s'bye'", want: "CONNACK 0x82; close"},
	{name: "CONNECT will retain without will flag", first: true, data: connect4 + "22 H60 s'c1'", want: "CONNACK 0x82; close"},
	{name: "CONNECT will QoS 1 without will flag", first: true, data: connect4 + "0A H60 s'c1'", want: "CONNACK 0x00; open",
		mochi: "accepted; spec [MQTT-3.1.2-11]: will QoS must be 0 without a will"},
	{name: "CONNECT will flag, will topic missing", first: true, data: connect4 + "06 H60 s'c1'", want: "close"},
	{name: "CONNECT will flag, will payload missing", first: true, data: connect4 + "06 H60 s'c1' s'w/t'", want: "close"},
	{name: "CONNECT will flag, will payload length beyond packet", first: true, data: connect4 + "06 H60 s'c1' s'w/t' s9 'b'", want: "close"},
	{name: "CONNECT will flag, empty will topic", first: true, data: connect4 + "06 H60 s'c1' s'' s'bye'", want: "CONNACK 0x82; close"},
	{name: "CONNECT will flag, empty will payload", first: true, data: connect4 + "06 H60 s'c1' s'w/t' s''", want: "CONNACK 0x82; close",
		mochi: "refused; an empty will payload is legal (mosquitto accepts it)"},
	{name: "CONNECT will topic with wildcard", first: true, data: connect4 + "06 H60 s'c1' s'w/#' s'bye'", want: "CONNACK 0x00; open",
		mochi: "accepted; a will topic is a topic name and may not hold wildcards"},
	{name: "CONNECT will topic invalid UTF-8", first: true, data: connect4 + "06 H60 s'c1' s{77 2F C0 80} s'bye'", want: "close"},
	{name: "CONNECT client id invalid UTF-8", first: true, data: connect4 + "02 H60 s{C0 AF}", want: "close"},
	{name: "CONNECT client id with U+0000", first: true, data: connect4 + "02 H60 s{61 00 62}", want: "close"},
	{name: "CONNECT client id with U+D800", first: true, data: connect4 + "02 H60 s{ED A0 80}", want: "close"},
	{name: "CONNECT client id length beyond packet", first: true, data: connect4 + "02 H60 s9 'c1'", want: "close"},
	{name: "CONNECT empty client id without clean session", first: true, data: connect4 + "00 H60 s''", want: "CONNACK 0x80; close",
		mochi: "answers 0x80, spec: 0x02 identifier rejected"},
	{name: "CONNECT username flag without username", first: true, data: connect4 + "82 H60 s'c1'", want: "close"},
	{name: "CONNECT username invalid UTF-8", first: true, data: connect4 + "82 H60 s'c1' s{C0 AF}", want: "CONNACK 0x00; open",
		mochi: "accepted; user names must be valid UTF-8"},
	{name: "CONNECT username length beyond packet", first: true, data: connect4 + "82 H60 s'c1' s9 'u'", want: "close"},
	{name: "CONNECT password flag without username flag", first: true, data: connect4 + "42 H60 s'c1' s'pw'", want: "CONNACK 0x00; open",
		mochi: "accepted; 3.1.1 [MQTT-3.1.2-22] forbids a password without a user name"},
	{name: "CONNECT password flag, password missing", first: true, data: connect4 + "C2 H60 s'c1' s'u'", want: "close"},
	{name: "CONNECT trailing bytes after the payload", first: true, data: connect4 + "02 H60 s'c1' 'junk'", want: "CONNACK 0x00; open",
		mochi: "extra bytes ignored"},
	{name: "CONNECT remaining length 10 FF FF FF 7F", first: true, data: "10 FF FF FF 7F", want: "close"},
	{name: "CONNECT remaining length 5 bytes", first: true, data: "10 FF FF FF FF 7F", want: "close"},
	{name: "CONNECT larger than MaxConnectSize", first: true, data: "10 81 80 04 00 04 'MQTT' 04 02", want: "close"},
	{name: "CONNECT shorter than its remaining length", first: true, data: "10 r20 00 04 'MQTT' 04 02", halfClose: true, want: "close"},
	{name: "PUBLISH before CONNECT", first: true, data: "30 r? s'a/b' 'x'", want: "close"},
	{name: "SUBSCRIBE before CONNECT", first: true, data: "82 r? m1 s'a' 00", want: "close"},
	{name: "PINGREQ before CONNECT", first: true, data: "C0 00", want: "close"},
	{name: "DISCONNECT before CONNECT", first: true, data: "E0 00", want: "close"},
	{name: "CONNACK before CONNECT", first: true, data: "20 02 00 00", want: "close"},
	{name: "reserved type 0 before CONNECT", first: true, data: "00 00", want: "close"},
	{name: "reserved type 15 before CONNECT", first: true, data: "F0 00", want: "close"},
	{name: "second CONNECT", data: connect4 + "02 H60 s'again'", want: "close"},
	{name: "second CONNECT, malformed", data: "10 02 00 04", want: "close"},

	// Fixed header, any type.
	{name: "reserved type 0", data: "00 00", want: "close"},
	{name: "reserved type 0 with a body", data: "00 02 00 01", want: "close"},
	{name: "reserved type 15 (AUTH in 3.1.1), empty", data: "F0 00", want: "close"},
	{name: "reserved type 15 (AUTH in 3.1.1) with a body", data: "F0 02 00 00", want: "open",
		mochi: "AUTH decoded and ignored for a 3.1.1 client; type 15 is reserved in 3.1.1"},
	{name: "CONNACK from a client", data: "20 02 00 00", want: "close"},
	{name: "SUBACK from a client", data: "90 03 00 01 00", want: "close"},
	{name: "UNSUBACK from a client", data: "B0 02 00 01", want: "close"},
	{name: "PINGRESP from a client", data: "D0 00", want: "close"},
	{name: "remaining length 5 bytes", data: "30 FF FF FF FF 7F", want: "close"},
	{name: "remaining length 5 bytes, value 0", data: "C0 80 80 80 80 00", want: "PINGRESP; open",
		mochi: "a 5-byte remaining length whose top bits are 0 is accepted; spec: malformed"},
	{name: "remaining length 268435455", data: "30 FF FF FF 7F", want: "close"},
	{name: "remaining length MaxPacketSize", data: "30 80 80 80 01", want: "close"},

	// PUBLISH.
	{name: "PUBLISH QoS 3", data: "36 r? s'topic' m1 'p'", want: "close"},
	{name: "PUBLISH QoS 3 without packet id", data: "36 r? s'topic' 'p'", want: "close"},
	{name: "PUBLISH QoS 0 with DUP", data: "38 r? s'topic' 'p'", want: "close"},
	{name: "PUBLISH QoS 1 without packet id", data: "32 r? s'topic'", want: "close"},
	{name: "PUBLISH QoS 1 packet id 0", data: "32 r? s'topic' m0 'p'", want: "close"},
	{name: "PUBLISH QoS 2 packet id 0", data: "34 r? s'topic' m0 'p'", want: "close"},
	{name: "PUBLISH zero-length topic", data: "30 r? s0 'payload'", want: "close"},
	{name: "PUBLISH topic with +", data: "30 r? s'a/+' 'p'", want: "close"},
	{name: "PUBLISH topic with #", data: "30 r? s'a/#' 'p'", want: "close"},
	{name: "PUBLISH topic with U+0000", data: "30 r? s{74 6F 70 00 00} 'p'", want: "close"},
	{name: "PUBLISH topic with U+D800", data: "30 r? s{74 6F ED A0 80} 'p'", want: "close"},
	{name: "PUBLISH topic overlong UTF-8", data: "30 r? s{74 C0 AF} 'p'", want: "close"},
	{name: "PUBLISH topic with U+0001", data: "32 r? s{74 6F 70 01 70} m1 'p'", want: "PUBACK; open"},
	{name: "PUBLISH topic with U+2A6D4", data: "32 r? s{41 F0 AA 9B 94} m1 'p'", want: "PUBACK; open"},
	{name: "PUBLISH topic length beyond packet", data: "30 r? s20 'topic'", want: "close"},
	{name: "PUBLISH remaining length 0", data: "30 00", want: "close"},
	{name: "PUBLISH remaining length 1", data: "30 01 00", want: "close"},
	{name: "PUBLISH shorter than its remaining length", data: "30 r20 s'topic' 'p'", halfClose: true, want: "close"},
	{name: "PUBLISH topic longer than MaxTopicLength", data: "30 r? s{*1025{'a'}} 'p'", want: "close"},
	{name: "PUBLISH topic of MaxTopicLength", data: "32 r? s{*1024{'a'}} m1 'p'", want: "PUBACK; open"},
	{name: "PUBLISH topic with too many levels", data: "30 r? s{'a' *32{'/a'}} 'p'", want: "close"},
	{name: "PUBLISH topic with MaxTopicLevels levels", data: "32 r? s{'a' *31{'/a'}} m1 'p'", want: "PUBACK; open"},
	// Mochi drops it without PUBACK, so the client's message would stay in
	// flight forever; pimqtt acknowledges and drops it, as mosquitto does
	// (authHook.OnPacketRead).
	{name: "PUBLISH QoS 1 to $SYS", data: "32 r? s'$SYS/x' m1 'p'", want: "PUBACK; open"},

	// PUBACK, PUBREC, PUBREL, PUBCOMP.
	{name: "PUBACK reserved flags", data: "42 02 00 01", want: "close"},
	{name: "PUBACK remaining length 0", data: "40 00", want: "close"},
	{name: "PUBACK remaining length 1", data: "40 01 00", want: "close"},
	{name: "PUBACK remaining length 3", data: "40 03 00 01 00", want: "open", mochi: "3.1.1 PUBACK must be 2 bytes; extra ignored"},
	{name: "PUBACK unknown packet id", data: "40 02 00 01", want: "open"},
	{name: "PUBREC reserved flags", data: "52 02 00 01", want: "close"},
	{name: "PUBREC remaining length 1", data: "50 01 00", want: "close"},
	{name: "PUBREC unknown packet id", data: "50 02 00 01", want: "PUBREL; open"},
	{name: "PUBREL flags 0", data: "60 02 00 01", want: "close"},
	{name: "PUBREL flags 3", data: "63 02 00 01", want: "close"},
	{name: "PUBREL flags 6", data: "66 02 00 01", want: "close"},
	{name: "PUBREL remaining length 0", data: "62 00", want: "close"},
	{name: "PUBREL unknown packet id", data: "62 02 00 01", want: "PUBCOMP; open"},
	{name: "PUBCOMP reserved flags", data: "72 02 00 01", want: "close"},
	{name: "PUBCOMP remaining length 1", data: "70 01 00", want: "close"},
	{name: "PUBCOMP unknown packet id", data: "70 02 00 01", want: "open"},

	// SUBSCRIBE.
	{name: "SUBSCRIBE flags 0", data: "80 r? m1 s'a' 00", want: "close"},
	{name: "SUBSCRIBE flags 3", data: "83 r? m1 s'a' 00", want: "close"},
	{name: "SUBSCRIBE no filters", data: "82 02 00 01", want: "close"},
	{name: "SUBSCRIBE packet id 0", data: "82 r? m0 s'a' 00", want: "close"},
	{name: "SUBSCRIBE packet id truncated", data: "82 01 00", want: "close"},
	{name: "SUBSCRIBE QoS 3", data: "82 r? m1 s'a' 03", want: "close"},
	{name: "SUBSCRIBE reserved option bits", data: "82 r? m1 s'a' 04", want: "close"},
	{name: "SUBSCRIBE options missing", data: "82 r? m1 s'a'", want: "close"},
	{name: "SUBSCRIBE second filter's options missing", data: "82 r? m1 s'a' 00 s'b'", want: "close"},
	{name: "SUBSCRIBE empty filter", data: "82 r? m1 s0 00", want: "SUBACK 0x80; open"},
	{name: "SUBSCRIBE filter a/#/b", data: "82 r? m1 s'a/#/b' 00", want: "SUBACK 0x80; open"},
	{name: "SUBSCRIBE filter a+", data: "82 r? m1 s'a+' 00", want: "SUBACK 0x00; open",
		mochi: "accepted; + must occupy a whole level [MQTT-4.7.1-3]"},
	{name: "SUBSCRIBE filter invalid UTF-8", data: "82 r? m1 s{61 C0 AF} 00", want: "close"},
	{name: "SUBSCRIBE filter with U+0000", data: "82 r? m1 s{61 00} 00", want: "close"},
	{name: "SUBSCRIBE filter length beyond packet", data: "82 r? m1 s9 'a' 00", want: "close"},
	{name: "SUBSCRIBE filter longer than MaxTopicLength", data: "82 r? m1 s{*1025{'a'}} 00", want: "close"},
	{name: "SUBSCRIBE filter with too many levels", data: "82 r? m1 s{'a' *32{'/+'}} 00", want: "close"},
	{name: "SUBSCRIBE $share without group", data: "82 r? m1 s'$share/' 00", want: "SUBACK 0x80; open"},
	{name: "SUBSCRIBE $share group with wildcard", data: "82 r? m1 s'$share/g+/a' 00", want: "SUBACK 0x80; open"},

	// UNSUBSCRIBE.
	{name: "UNSUBSCRIBE flags 0", data: "A0 r? m1 s'a'", want: "close"},
	{name: "UNSUBSCRIBE flags 3", data: "A3 r? m1 s'a'", want: "close"},
	{name: "UNSUBSCRIBE no filters", data: "A2 02 00 01", want: "close"},
	{name: "UNSUBSCRIBE packet id 0", data: "A2 r? m0 s'a'", want: "close"},
	{name: "UNSUBSCRIBE filter invalid UTF-8", data: "A2 r? m1 s{61 C0 AF}", want: "close"},
	{name: "UNSUBSCRIBE filter length beyond packet", data: "A2 r? m1 s9 'a'", want: "close"},
	{name: "UNSUBSCRIBE filter longer than MaxTopicLength", data: "A2 r? m1 s{*1025{'a'}}", want: "close"},
	{name: "UNSUBSCRIBE empty filter", data: "A2 r? m1 s0", want: "UNSUBACK; open", mochi: "accepted; filters must be at least 1 byte"},

	// PINGREQ, DISCONNECT.
	{name: "PINGREQ reserved flags", data: "C1 00", want: "close"},
	{name: "PINGREQ flags 0xF", data: "CF 00", want: "close"},
	{name: "PINGREQ remaining length 1", data: "C0 01 00", want: "PINGRESP; open", mochi: "body ignored; spec: malformed"},
	{name: "DISCONNECT reserved flags", data: "E1 00", want: "close"},
	{name: "DISCONNECT remaining length 1", data: "E0 01 00", want: "close"},
}

var malformedV5 = []malformedCase{
	// CONNECT and the first packet.
	{name: "CONNECT remaining length 0", first: true, data: "10 00", want: "close"},
	{name: "CONNECT protocol name truncated", first: true, data: "10 02 00 04", want: "close"},
	{name: "CONNECT bad protocol name MQTS", first: true, data: "10 r? s'MQTS' 05 02 H60 00 s'c1'", want: "CONNACK 0x82; close",
		mochi: "spec: MAY answer 0x84"},
	{name: "CONNECT reserved flag set", first: true, data: connect5 + "03 H60 00 s'c1'", want: "CONNACK 0x82; close"},
	{name: "CONNECT properties missing", first: true, data: connect5 + "02 H60", want: "close"},
	{name: "CONNECT properties length beyond packet", first: true, data: connect5 + "02 H60 v9 s'c1'", want: "close"},
	{name: "CONNECT property value truncated", first: true, data: connect5 + "02 H60 v{11 00}", want: "close"},
	{name: "CONNECT property value read past the property length", first: true, data: connect5 + "02 H60 v{11 00} s'c1'", want: "CONNACK 0x00; open",
		mochi: "reads a property's value past the declared property length; spec: malformed"},
	{name: "CONNECT properties length 5 bytes", first: true, data: connect5 + "02 H60 80 80 80 80 01 s'c1'", want: "close"},
	{name: "CONNECT unknown property 0x04", first: true, data: connect5 + "02 H60 v{04 00} s'c1'", want: "close"},
	{name: "CONNECT unknown property 0x7F", first: true, data: connect5 + "02 H60 v{7F 00} s'c1'", want: "close"},
	{name: "CONNECT property not for CONNECT (topic alias)", first: true, data: connect5 + "02 H60 v{23 H1} s'c1'", want: "close"},
	{name: "CONNECT duplicate session expiry", first: true, data: connect5 + "02 H60 v{11 L10 11 L20} s'c1'", want: "CONNACK 0x00; open",
		mochi: "accepted; a duplicate property is a protocol error"},
	{name: "CONNECT receive maximum 0", first: true, data: connect5 + "02 H60 v{21 H0} s'c1'", want: "CONNACK 0x00; open",
		mochi: "accepted; receive maximum 0 is a protocol error"},
	{name: "CONNECT maximum packet size 0", first: true, data: connect5 + "02 H60 v{27 L0} s'c1'", want: "CONNACK 0x00; open",
		mochi: "accepted (as no limit); 0 is a protocol error"},
	{name: "CONNECT maximum packet size 1", first: true, data: connect5 + "02 H60 v{27 L1} s'c1'", want: "close"},
	{name: "CONNECT request problem information 2", first: true, data: connect5 + "02 H60 v{17 02} s'c1'", want: "CONNACK 0x00; open",
		mochi: "accepted; values other than 0 and 1 are a protocol error"},
	{name: "CONNECT authentication method", first: true, data: connect5 + "02 H60 v{15 s'SCRAM-SHA-1'} s'c1'", want: "CONNACK 0x00; open",
		mochi: "enhanced authentication silently ignored; spec: 0x8C bad authentication method"},
	{name: "CONNECT authentication data without method", first: true, data: connect5 + "02 H60 v{16 s'x'} s'c1'", want: "CONNACK 0x00; open",
		mochi: "accepted; a protocol error"},
	{name: "CONNECT too many user properties", first: true, data: connect5 + "02 H60 v{*33{26 s'k' s'v'}} s'c1'", want: "CONNACK 0x83; close"},
	{name: "CONNECT MaxUserProperties user properties", first: true, data: connect5 + "02 H60 v{*32{26 s'k' s'v'}} s'c1'", want: "CONNACK 0x00; open"},
	{name: "CONNECT user property value missing", first: true, data: connect5 + "02 H60 v{26 s'k'}", want: "close"},
	{name: "CONNECT will properties missing", first: true, data: connect5 + "06 H60 00 s'c1'", want: "close"},
	{name: "CONNECT will property value truncated", first: true, data: connect5 + "06 H60 00 s'c1' v{01}", want: "close"},
	{name: "CONNECT will property not for wills (topic alias)", first: true, data: connect5 + "06 H60 00 s'c1' v{23 H1} s'w/t' s'bye'", want: "close"},
	{name: "CONNECT will QoS 3", first: true, data: connect5 + "1E H60 00 s'c1' 00 s'w/t' s'bye'", want: "CONNACK 0x82; close"},
	{name: "CONNECT will retain without will flag", first: true, data: connect5 + "22 H60 00 s'c1'", want: "CONNACK 0x82; close"},
	{name: "CONNECT will topic invalid UTF-8", first: true, data: connect5 + "06 H60 00 s'c1' 00 s{C0 AF} s'bye'", want: "close"},
	{name: "CONNECT client id invalid UTF-8", first: true, data: connect5 + "02 H60 00 s{C0 AF}", want: "close"},
	{name: "CONNECT client id with U+0000", first: true, data: connect5 + "02 H60 00 s{61 00}", want: "close"},
	{name: "CONNECT username flag without username", first: true, data: connect5 + "82 H60 00 s'c1'", want: "close"},
	{name: "CONNECT username invalid UTF-8", first: true, data: connect5 + "82 H60 00 s'c1' s{C0 AF}", want: "CONNACK 0x00; open",
		mochi: "accepted; user names must be valid UTF-8"},
	{name: "CONNECT password flag, password missing", first: true, data: connect5 + "C2 H60 00 s'c1' s'u'", want: "close"},
	{name: "CONNECT remaining length 10 FF FF FF 7F", first: true, data: "10 FF FF FF 7F", want: "close"},
	{name: "CONNECT larger than MaxConnectSize", first: true, data: "10 81 80 04 00 04 'MQTT' 05 02", want: "close"},
	{name: "CONNECT shorter than its remaining length", first: true, data: "10 r30 00 04 'MQTT' 05 02", halfClose: true, want: "close"},
	{name: "PUBLISH before CONNECT", first: true, data: "30 r? s'a/b' 00 'x'", want: "close"},
	{name: "SUBSCRIBE before CONNECT", first: true, data: "82 r? m1 00 s'a' 00", want: "close"},
	{name: "AUTH before CONNECT", first: true, data: "F0 r? 18 v{15 s'SCRAM-SHA-1'}", want: "close"},
	{name: "reserved type 0 before CONNECT", first: true, data: "00 00", want: "close"},
	{name: "second CONNECT", data: connect5 + "02 H60 00 s'again'", want: "DISCONNECT 0x82; close"},

	// Fixed header, any type.
	{name: "reserved type 0", data: "00 00", want: "close"},
	{name: "CONNACK from a client", data: "20 03 00 00 00", want: "close"},
	{name: "SUBACK from a client", data: "90 04 00 01 00 00", want: "close"},
	{name: "UNSUBACK from a client", data: "B0 04 00 01 00 00", want: "close"},
	{name: "PINGRESP from a client", data: "D0 00", want: "close"},
	{name: "remaining length 5 bytes", data: "30 FF FF FF FF 7F", want: "close"},
	{name: "remaining length 5 bytes, value 0", data: "C0 80 80 80 80 00", want: "PINGRESP; open",
		mochi: "a 5-byte remaining length whose top bits are 0 is accepted; spec: malformed"},
	{name: "remaining length 268435455", data: "30 FF FF FF 7F", want: "close",
		mochi: "closes without DISCONNECT 0x95 packet too large"},

	// PUBLISH.
	{name: "PUBLISH QoS 3", data: "36 r? s'topic' m1 00 'p'", want: "close", mochi: "closes without DISCONNECT 0x81 (spec: SHOULD send it)"},
	{name: "PUBLISH QoS 0 with DUP", data: "38 r? s'topic' 00 'p'", want: "close"},
	{name: "PUBLISH QoS 1 packet id 0", data: "32 r? s'topic' m0 00 'p'", want: "DISCONNECT 0x82; close"},
	{name: "PUBLISH QoS 2 packet id 0", data: "34 r? s'topic' m0 00 'p'", want: "DISCONNECT 0x82; close"},
	{name: "PUBLISH zero-length topic without alias", data: "30 r? s0 00 'payload'", want: "DISCONNECT 0x82; close"},
	{name: "PUBLISH topic with +", data: "30 r? s'a/+' 00 'p'", want: "DISCONNECT 0x82; close"},
	{name: "PUBLISH topic with #", data: "30 r? s'a/#' 00 'p'", want: "DISCONNECT 0x82; close"},
	{name: "PUBLISH topic with U+0000", data: "30 r? s{74 6F 70 00 00} 00 'p'", want: "close"},
	{name: "PUBLISH topic with U+D800", data: "30 r? s{74 6F ED A0 80} 00 'p'", want: "close"},
	{name: "PUBLISH topic length beyond packet", data: "30 r? s20 'topic'", want: "close"},
	{name: "PUBLISH properties missing", data: "32 r? s'topic' m1", want: "close"},
	{name: "PUBLISH properties length beyond packet", data: "32 r? s'topic' m1 v9 'p'", want: "close"},
	{name: "PUBLISH property value truncated", data: "32 r? s'topic' m1 v{02}", want: "close"},
	{name: "PUBLISH properties length 5 bytes, value 0", data: "32 r? s'topic' m1 80 80 80 80 00 'p'", want: "PUBACK; open",
		mochi: "a 5-byte property length is accepted; spec: malformed"},
	{name: "PUBLISH unknown property 0x04", data: "32 r? s'topic' m1 v{04 00} 'p'", want: "close"},
	{name: "PUBLISH unknown property 0x00", data: "32 r? s'topic' m1 v{00 01} 'p'", want: "close"},
	{name: "PUBLISH property not for PUBLISH (session expiry)", data: "32 r? s'topic' m1 v{11 L1} 'p'", want: "close",
		mochi: "closes without DISCONNECT 0x82"},
	{name: "PUBLISH duplicate response topic", data: "32 r? s'topic' m1 v{08 s'p' 08 s'p'} 'p'", want: "PUBACK; open",
		mochi: "accepted; a duplicate property is a protocol error."},
	{name: "PUBLISH response topic with wildcard", data: "32 r? s'topic' m1 v{08 s'a/#'} 'p'", want: "PUBACK; open",
		mochi: "accepted; a response topic may not hold wildcards"},
	{name: "PUBLISH subscription identifier", data: "32 r? s'topic' m1 v{0B 01} 'p'", want: "DISCONNECT 0x82; close"},
	{name: "PUBLISH topic alias 0", data: "30 r? s'topic' v{23 H0} 'p'", want: "DISCONNECT 0x94; close"},
	// CONNACK announces no Topic Alias Maximum, so any alias is invalid
	// (0x94). These fail until pimqtt sets Capabilities.TopicAliasMaximum
	// to 0; see TestTopicAliasesDoNotPinPackets.
	{name: "PUBLISH topic alias, none announced", data: "32 r? s'topic' m1 v{23 H1} 'p'", want: "DISCONNECT 0x94; close"},
	{name: "PUBLISH unknown topic alias without topic", data: "32 r? s0 m1 v{23 H5} 'p'", want: "DISCONNECT 0x94; close"},
	{name: "PUBLISH payload format indicator 2", data: "32 r? s'topic' m1 v{01 02} 'p'", want: "PUBACK; open",
		mochi: "accepted; a protocol error"},
	{name: "PUBLISH topic longer than MaxTopicLength", data: "30 r? s{*1025{'a'}} 00 'p'", want: "DISCONNECT 0x90; close"},
	{name: "PUBLISH topic with too many levels", data: "30 r? s{'a' *32{'/a'}} 00 'p'", want: "DISCONNECT 0x90; close"},
	{name: "PUBLISH too many user properties", data: "30 r? s'topic' v{*33{26 s'k' s'v'}} 'p'", want: "DISCONNECT 0x83; close"},
	{name: "PUBLISH MaxUserProperties user properties", data: "30 r? s'topic' v{*32{26 s'k' s'v'}} 'p'", want: "open"},
	{name: "PUBLISH user property value missing", data: "30 r? s'topic' v{26 s'k'}", want: "close"},
	// Mochi echoes the PUBLISH's properties in the PUBACK with reason
	// code 0x01, which is not a PUBACK code (upstream 474); pimqtt sends
	// a plain PUBACK (TestAckWithUserProperties).
	{name: "PUBLISH QoS 1 with a user property", data: "32 r? s'topic' m1 v{26 s'k' s'v'} 'p'", want: "PUBACK; open"},
	// Mochi drops it without PUBACK; pimqtt answers 0x87 as mosquitto does.
	{name: "PUBLISH QoS 1 to $SYS", data: "32 r? s'$SYS/x' m1 00 'p'", want: "PUBACK 0x87; open"},

	// PUBACK, PUBREC, PUBREL, PUBCOMP.
	{name: "PUBACK reserved flags", data: "42 02 00 01", want: "close"},
	{name: "PUBACK remaining length 1", data: "40 01 00", want: "close"},
	{name: "PUBACK properties length beyond packet", data: "40 r? m1 00 v9", want: "close"},
	{name: "PUBACK unknown property", data: "40 r? m1 00 v{04 00}", want: "close"},
	{name: "PUBACK property not for PUBACK (payload format)", data: "40 r? m1 00 v{01 00}", want: "close"},
	{name: "PUBACK unknown packet id with reason string", data: "40 r? m1 80 v{1F s'why'}", want: "open"},
	{name: "PUBREC reserved flags", data: "52 02 00 01", want: "close"},
	{name: "PUBREC unknown packet id", data: "50 02 00 01", want: "PUBREL 0x92; open"},
	{name: "PUBREC property value truncated", data: "50 r? m1 00 v{1F 00}", want: "close"},
	{name: "PUBREL flags 0", data: "60 02 00 01", want: "close"},
	{name: "PUBREL remaining length 0", data: "62 00", want: "close"},
	{name: "PUBREL unknown packet id", data: "62 02 00 01", want: "PUBCOMP 0x92; open"},
	{name: "PUBREL unknown property", data: "62 r? m1 00 v{04 00}", want: "close"},
	{name: "PUBCOMP reserved flags", data: "72 02 00 01", want: "close"},
	{name: "PUBCOMP remaining length 1", data: "70 01 00", want: "close"},
	{name: "PUBCOMP unknown packet id", data: "70 02 00 01", want: "open"},

	// SUBSCRIBE.
	{name: "SUBSCRIBE flags 0", data: "80 r? m1 00 s'a' 00", want: "close"},
	{name: "SUBSCRIBE no filters", data: "82 03 00 01 00", want: "DISCONNECT 0x82; close"},
	{name: "SUBSCRIBE packet id 0", data: "82 r? m0 00 s'a' 00", want: "DISCONNECT 0x82; close"},
	{name: "SUBSCRIBE properties missing", data: "82 02 00 01", want: "close"},
	{name: "SUBSCRIBE QoS 3", data: "82 r? m1 00 s'a' 03", want: "close"},
	{name: "SUBSCRIBE reserved option bits", data: "82 r? m1 00 s'a' C0", want: "SUBACK 0x00; open",
		mochi: "accepted; reserved subscription option bits must be 0"},
	{name: "SUBSCRIBE retain handling 3", data: "82 r? m1 00 s'a' 30", want: "SUBACK 0x00; open",
		mochi: "accepted; retain handling 3 is a protocol error"},
	{name: "SUBSCRIBE options missing (issue 501)", data: "82 06 00 01 00 00 01 61", want: "close", panics: true,
		mochi: "panics: index out of range in packets.SubscribeDecode"},
	{name: "SUBSCRIBE second filter's options missing (issue 501)", data: "82 r? m1 00 s'a' 00 s'b'", want: "close", panics: true,
		mochi: "panics: index out of range in packets.SubscribeDecode"},
	{name: "SUBSCRIBE options missing, fuzz-found (issue 501)", data: "82 06 30 30 00 00 01 30", want: "close", panics: true,
		mochi: "panics: index out of range in packets.SubscribeDecode"},
	{name: "SUBSCRIBE properties length beyond packet", data: "82 r? m1 v9 s'a' 00", want: "close"},
	{name: "SUBSCRIBE unknown property", data: "82 r? m1 v{04 00} s'a' 00", want: "close"},
	{name: "SUBSCRIBE property not for SUBSCRIBE (topic alias)", data: "82 r? m1 v{23 H1} s'a' 00", want: "close"},
	{name: "SUBSCRIBE subscription identifier 0", data: "82 r? m1 v{0B 00} s'a' 00", want: "SUBACK 0x00; open",
		mochi: "accepted; identifier 0 is a protocol error"},
	{name: "SUBSCRIBE subscription identifier 5 bytes", data: "82 r? m1 v{0B 80 80 80 80 01} s'a' 00", want: "close"},
	{name: "SUBSCRIBE duplicate subscription identifier", data: "82 r? m1 v{0B 01 0B 02} s'a' 00", want: "SUBACK 0x00; open",
		mochi: "accepted; a duplicate identifier is a protocol error"},
	{name: "SUBSCRIBE no local on a shared subscription", data: "82 r? m1 00 s'$share/g/a' 04", want: "SUBACK 0x82; open",
		mochi: "SUBACK 0x82 instead of DISCONNECT 0x82 [MQTT-3.8.3-4]"},
	{name: "SUBSCRIBE empty filter", data: "82 r? m1 00 s0 00", want: "SUBACK 0x8f; open"},
	{name: "SUBSCRIBE filter a/#/b", data: "82 r? m1 00 s'a/#/b' 00", want: "SUBACK 0x8f; open"},
	{name: "SUBSCRIBE filter invalid UTF-8", data: "82 r? m1 00 s{61 C0 AF} 00", want: "close"},
	{name: "SUBSCRIBE filter longer than MaxTopicLength", data: "82 r? m1 00 s{*1025{'a'}} 00", want: "DISCONNECT 0x8f; close"},
	{name: "SUBSCRIBE filter with too many levels", data: "82 r? m1 00 s{'a' *32{'/+'}} 00", want: "DISCONNECT 0x8f; close"},
	{name: "SUBSCRIBE too many user properties", data: "82 r? m1 v{*33{26 s'k' s'v'}} s'a' 00", want: "DISCONNECT 0x83; close"},

	// UNSUBSCRIBE.
	{name: "UNSUBSCRIBE flags 0", data: "A0 r? m1 00 s'a'", want: "close"},
	{name: "UNSUBSCRIBE no filters", data: "A2 03 00 01 00", want: "DISCONNECT 0x82; close"},
	{name: "UNSUBSCRIBE packet id 0", data: "A2 r? m0 00 s'a'", want: "DISCONNECT 0x82; close"},
	{name: "UNSUBSCRIBE properties missing", data: "A2 02 00 01", want: "close"},
	{name: "UNSUBSCRIBE unknown property", data: "A2 r? m1 v{04 00} s'a'", want: "close"},
	{name: "UNSUBSCRIBE property value truncated", data: "A2 r? m1 v{26 s'k'}", want: "close"},
	{name: "UNSUBSCRIBE filter invalid UTF-8", data: "A2 r? m1 00 s{61 C0 AF}", want: "close"},
	{name: "UNSUBSCRIBE filter longer than MaxTopicLength", data: "A2 r? m1 00 s{*1025{'a'}}", want: "DISCONNECT 0x8f; close"},
	{name: "UNSUBSCRIBE empty filter", data: "A2 r? m1 00 s0", want: "UNSUBACK 0x11; open", mochi: "accepted; filters must be at least 1 byte"},

	// PINGREQ, DISCONNECT, AUTH.
	{name: "PINGREQ reserved flags", data: "C1 00", want: "close"},
	{name: "PINGREQ remaining length 1", data: "C0 01 00", want: "PINGRESP; open", mochi: "body ignored; spec: malformed"},
	{name: "DISCONNECT reserved flags", data: "E1 00", want: "close"},
	{name: "DISCONNECT properties length beyond packet", data: "E0 02 00 05", want: "close"},
	{name: "DISCONNECT unknown property", data: "E0 r? 00 v{04 00}", want: "close"},
	{name: "DISCONNECT property not for DISCONNECT (topic alias)", data: "E0 r? 00 v{23 H1}", want: "close"},
	{name: "DISCONNECT session expiry after 0", data: "E0 r? 00 v{11 L10}", want: "DISCONNECT 0x82; close"},
	{name: "DISCONNECT invalid reason code", data: "E0 01 03", want: "close"},
	{name: "AUTH reserved flags", data: "F1 00", want: "close"},
	{name: "AUTH remaining length 0", data: "F0 00", want: "close", mochi: "closes; remaining length 0 is a valid AUTH (success)"},
	{name: "AUTH without authentication method", data: "F0 r? 18 00", want: "open",
		mochi: "ignored; AUTH without an authentication method in CONNECT is a protocol error"},
	{name: "AUTH invalid reason code", data: "F0 r? 01 00", want: "DISCONNECT 0x82; close"},
	{name: "AUTH properties length beyond packet", data: "F0 r? 18 v9", want: "close"},
	{name: "AUTH unknown property", data: "F0 r? 18 v{04 00}", want: "close"},
}

// TestMalformedPackets sends every malformed case to a broker over TCP
// and checks the answer, that no panic had to be contained (except in the
// cases that name upstream issue #501), and that another client still
// works afterwards.
func TestMalformedPackets(t *testing.T) {
	for _, tc := range []struct {
		version byte
		cases   []malformedCase
	}{{4, malformedV4}, {5, malformedV5}} {
		t.Run(fmt.Sprintf("v%d", tc.version), func(t *testing.T) {
			t.Parallel()
			hb := startHostileBroker(t, DefaultLimits(), true)
			for i, c := range tc.cases {
				c.version = tc.version
				t.Run(c.name, func(t *testing.T) {
					runMalformedCase(t, hb, c, fmt.Sprintf("mal%d-%d", c.version, i))
				})
			}
		})
	}
}

func runMalformedCase(t *testing.T, hb *hostileBroker, c malformedCase, id string) {
	logFrom := hb.log.len()
	defer func() {
		if t.Failed() {
			t.Logf("input: %s\nbroker log:\n%s", shortHex(pk(c.data)), hb.log.since(logFrom))
		}
	}()
	if c.mochi != "" {
		t.Logf("Mochi v2.7.9 departs from the spec here: %s", c.mochi)
	}
	hb.mustIdle(t)
	before := hb.RecoveredPanics()

	cl := dialRaw(t, hb.addr, c.version)
	defer cl.close()
	if !c.first {
		cl.connect(id)
	}
	if err := cl.write(pk(c.data)); err != nil {
		t.Logf("write: %v (the broker closed early)", err)
	}
	if c.halfClose {
		if err := cl.conn.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatalf("half close: %v", err)
		}
	}
	steps := strings.Split(c.want, "; ")
	for _, s := range steps[:len(steps)-1] {
		cl.expect(s)
	}
	switch last := steps[len(steps)-1]; last {
	case "close":
		cl.expectClosed()
	case "open":
		cl.ping()
	default:
		t.Fatalf("bad expectation %q", last)
	}
	cl.close()
	hb.mustIdle(t)

	want := int64(0)
	if c.panics {
		want = 1
	}
	if got := hb.RecoveredPanics() - before; got != want {
		t.Fatalf("contained panics: %d, want %d (input %s)", got, want, shortHex(pk(c.data)))
	}
	checkSecondClient(t, hb, c.version, id)
}

// checkSecondClient proves the broker still serves: a fresh client
// connects and completes a QoS 1 publish/subscribe round trip.
func checkSecondClient(t *testing.T, hb *hostileBroker, version byte, id string) {
	t.Helper()
	cl := dialRaw(t, hb.addr, version)
	defer cl.close()
	cl.connect(id + "-check")
	cl.roundTrip("check/" + id)
}

// TestMalformedNotation checks the table's notation itself on known
// encodings, so that a wrong case cannot come from the notation.
func TestMalformedNotation(t *testing.T) {
	for _, tc := range []struct{ spec, hex string }{
		{"82 06 00 01 00 00 01 61", "8206000100000161"},
		{"82 r? m1 00 s'a'", "8206000100000161"},
		{"30 r? s'a/b' 'x'", "3006" + "0003612f62" + "78"},
		{"v{26 s'k' s'v'}", "072600016b000176"},
		{"s{*3{'a'}}", "0003616161"},
		{"10 r? *200{00}", "10c801" + strings.Repeat("00", 200)},
		{"C0 00 | 30 r? s'a' | E0 00", "c0003003000161e000"},
		{"L1 H2 v128", "000000010002" + "8001"},
	} {
		if got := fmt.Sprintf("%x", pk(tc.spec)); got != tc.hex {
			t.Errorf("pk(%q) = %s, want %s", tc.spec, got, tc.hex)
		}
	}
	for _, cs := range [][]malformedCase{malformedV4, malformedV5} {
		seen := map[string]bool{}
		for _, c := range cs {
			if seen[c.name] {
				t.Errorf("duplicate case name %q", c.name)
			}
			seen[c.name] = true
			_ = pk(c.data) // panics on a notation error
		}
	}
}

// TestLimitRejectsPacket: a packet refused by limitsHook (topic too long
// or too deep, too many user properties) must not be processed. Mochi's
// Hooks.OnPacketRead ignores every hook error except packets.ErrRejectPacket
// ("continue"), so the error limitsHook returns is dropped and the PUBLISH
// is delivered anyway; an MQTT 5 client is at least disconnected first by
// DisconnectClient, a 3.1.1 client not even that.
func TestLimitRejectsPacket(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version byte
		publish string
	}{
		{"v4 too many levels", 4, "30 r? s{'deep' *32{'/a'}} 'p'"},
		{"v5 too many levels", 5, "30 r? s{'deep' *32{'/a'}} 00 'p'"},
		{"v4 topic too long", 4, "30 r? s{'long/' *1020{'a'}} 'p'"},
		{"v5 too many user properties", 5, "30 r? s'props' v{*33{26 s'k' s'v'}} 'p'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hb := startHostileBroker(t, DefaultLimits(), true)
			watcher := dialRaw(t, hb.addr, 4)
			defer watcher.close()
			watcher.connect("watcher")
			if err := watcher.write(pk("82 r? m1 s'#' 00")); err != nil {
				t.Fatal(err)
			}
			watcher.expect("SUBACK 0x00")

			attacker := dialRaw(t, hb.addr, tc.version)
			attacker.connect("attacker")
			if err := attacker.write(pk(tc.publish)); err != nil {
				t.Logf("write: %v", err)
			}
			attacker.close()
			hb.mustConns(t, 1) // the attacker's packets are processed

			sentinel := dialRaw(t, hb.addr, 4)
			sentinel.connect("sentinel")
			if err := sentinel.write(pk("30 r? s'sentinel' 'x'")); err != nil {
				t.Fatal(err)
			}
			sentinel.close()
			hb.mustConns(t, 1)

			for {
				p, err := watcher.next()
				if err != nil {
					t.Fatalf("watcher: %v", err)
				}
				d := p.describe(4)
				if d == "PUBLISH sentinel" {
					return
				}
				if strings.HasPrefix(d, "PUBLISH $") {
					continue
				}
				t.Fatalf("a packet over the limits was delivered: %.80s…", d)
			}
		})
	}
}

// TestFirstPacketFiveByteLength: guardedConn.scan stops watching the first
// packet when its remaining length has a fifth byte, assuming Mochi refuses
// it; but Mochi's packets.DecodeLength accepts any number of continuation
// bytes as long as the value stays below 2^28. "10 80 80 C0 80 00" thus
// claims a 1 MiB CONNECT (over MaxConnectSize, under MaxPacketSize) that
// Mochi allocates before authentication, and the connection no longer
// counts as pending. Both must be closed at once.
func TestFirstPacketFiveByteLength(t *testing.T) {
	limits := DefaultLimits()
	limits.ConnectTimeout = 5 * time.Minute // only the guard may close it
	hb := startHostileBroker(t, limits, true)
	for _, tc := range []struct{ name, data string }{
		{"4-byte length over MaxConnectSize", "10 80 80 C0 00"}, // control: works
		{"5-byte length of 1 MiB", "10 80 80 C0 80 00"},
		{"unterminated length", "10 80 80 80 80 80 80"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := dialRaw(t, hb.addr, 4)
			defer cl.close()
			if err := cl.write(pk(tc.data)); err != nil {
				t.Logf("write: %v", err)
			}
			cl.expectClosed()
		})
	}
}

// TestWillLimits: the will topic and the will's user properties are held
// to the limits of PUBLISH (Mochi would publish a will of any depth or
// length), and a CONNECT over them is refused with a CONNACK that says
// why: MQTT 5 has a reason code for each (0x90 topic name invalid, 0x83
// implementation specific error for the property count); MQTT 3.1.1 has
// none, and gets 5 (not authorized), as from mosquitto for a will it does
// not accept.
func TestWillLimits(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version byte
		data    string
		want    string
	}{
		{"v4 will topic with too many levels", 4, connect4 + "06 H60 s'w1' s{'w' *32{'/a'}} s'bye'", "CONNACK 0x05"},
		{"v5 will topic with too many levels", 5, connect5 + "06 H60 00 s'w2' 00 s{'w' *32{'/a'}} s'bye'", "CONNACK 0x90"},
		{"v4 will topic too long", 4, connect4 + "06 H60 s'w3' s{*1025{'w'}} s'bye'", "CONNACK 0x05"},
		{"v5 will topic too long", 5, connect5 + "06 H60 00 s'w4' 00 s{*1025{'w'}} s'bye'", "CONNACK 0x90"},
		{"v5 will with too many user properties", 5, connect5 + "06 H60 00 s'w5' v{*33{26 s'k' s'v'}} s'w/t' s'bye'", "CONNACK 0x83"},
		{"v5 will at the limits", 5, connect5 + "06 H60 00 s'w6' v{*32{26 s'k' s'v'}} s{'w' *31{'/a'}} s'bye'", "CONNACK 0x00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A broker each: refusals are logged once per interval and
			// address.
			hb := startHostileBroker(t, DefaultLimits(), true)
			cl := dialRaw(t, hb.addr, tc.version)
			defer cl.close()
			if err := cl.write(pk(tc.data)); err != nil {
				t.Fatalf("write: %v", err)
			}
			cl.expect(tc.want)
			if tc.want == "CONNACK 0x00" {
				cl.ping()
				return
			}
			cl.expectClosed()
			if log := hb.log.since(0); !strings.Contains(log, "client refused: limit exceeded") || !strings.Contains(log, "max_") {
				t.Fatalf("no log line naming the limit:\n%s", log)
			}
		})
	}
}

// TestContainedPanicPublishesWill: after a contained Mochi panic (#501)
// the client's will is still published, its clean session is forgotten
// (its client id can connect again), and other clients are unaffected.
func TestContainedPanicPublishesWill(t *testing.T) {
	hb := startHostileBroker(t, DefaultLimits(), true)
	watcher := dialRaw(t, hb.addr, 4)
	defer watcher.close()
	watcher.connect("watcher")
	if err := watcher.write(pk("82 r? m1 s'will/#' 00")); err != nil {
		t.Fatal(err)
	}
	watcher.expect("SUBACK 0x00")

	before := hb.RecoveredPanics()
	attacker := dialRaw(t, hb.addr, 5)
	if err := attacker.write(pk(connect5 + "06 H60 00 s'crasher' 00 s'will/crasher' s'bye'")); err != nil {
		t.Fatal(err)
	}
	attacker.expect("CONNACK 0x00")
	if err := attacker.write(pk("82 06 00 01 00 00 01 61")); err != nil {
		t.Logf("write: %v", err)
	}
	attacker.expectClosed()
	attacker.close()
	hb.mustConns(t, 1)
	if got := hb.RecoveredPanics() - before; got != 1 {
		t.Fatalf("contained panics: %d, want 1", got)
	}
	watcher.expect("PUBLISH will/crasher")

	again := dialRaw(t, hb.addr, 5)
	defer again.close()
	again.connect("crasher")
	again.roundTrip("check/crasher")
	watcher.ping()
}

// TestContainedPanicInMemory: the trusted in-memory listener (the device's)
// contains the #501 panic too, and the next in-memory client works.
func TestContainedPanicInMemory(t *testing.T) {
	hb := startHostileBroker(t, DefaultLimits(), true)
	ctx, cancel := context.WithTimeout(context.Background(), replyTimeout)
	defer cancel()
	before := hb.RecoveredPanics()
	conn, err := hb.DialInMemory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cl := newRawClient(t, conn, 5)
	cl.connect("inmem-crasher")
	if err := cl.write(pk("82 06 00 01 00 00 01 61")); err != nil {
		t.Logf("write: %v", err)
	}
	cl.expectClosed()
	cl.close()
	hb.mustIdle(t)
	if got := hb.RecoveredPanics() - before; got != 1 {
		t.Fatalf("contained panics: %d, want 1", got)
	}
	conn, err = hb.DialInMemory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	next := newRawClient(t, conn, 5)
	defer next.close()
	next.connect("inmem-next")
	next.roundTrip("check/inmem")
}

// TestTopicAliasesDoNotPinPackets: Mochi accepts inbound topic aliases up
// to Capabilities.TopicAliasMaximum (65535 unless set; it never announces
// the maximum in CONNACK, so a conforming client uses none) and keeps each
// alias's topic string, which points into the whole decoded packet, payload
// included. One client sending 40 aliased 512 KiB PUBLISHes makes the
// broker hold 20 MiB for as long as it stays connected; with 2 MiB packets
// a few hundred PUBLISHes exhaust a Pi.
func TestTopicAliasesDoNotPinPackets(t *testing.T) {
	hb := startHostileBroker(t, DefaultLimits(), true)
	cl := dialRaw(t, hb.addr, 5)
	defer cl.close()
	cl.connect("aliaser")

	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	const n, size = 40, 512 << 10
	payload := bytes.Repeat([]byte{'x'}, size)
	before := heap()
	for i := 1; i <= n; i++ {
		head := pk(fmt.Sprintf("s'alias/%d' v{23 H%d}", i, i))
		body := append(head, payload...)
		packet := append(append([]byte{0x30}, pkVarint(len(body))...), body...)
		if err := cl.write(packet); err != nil {
			break // refused and closed: fine
		}
	}
	_ = cl.write([]byte{0xC0, 0x00})
	for { // wait until the broker has processed everything (or closed)
		p, err := cl.next()
		if err == io.EOF || (err == nil && p.describe(5) == "PINGRESP") {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if grown := int64(heap()) - int64(before); grown > 8<<20 {
		t.Fatalf("the broker holds %d MiB more after %d aliased %d KiB PUBLISHes from one client",
			grown>>20, n, size>>10)
	}
}
