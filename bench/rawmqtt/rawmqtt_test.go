package rawmqtt

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// fakeBroker reads one packet from conn and answers a CONNECT with a
// CONNACK carrying code; it returns what it read.
func fakeBroker(t *testing.T, conn net.Conn, code byte) <-chan []byte {
	got := make(chan []byte, 1)
	go func() {
		defer close(got)
		r := bufio.NewReader(conn)
		first, err := r.ReadByte()
		if err != nil {
			return
		}
		n, _ := r.ReadByte() // CONNECTs here are shorter than 128 bytes
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return
		}
		got <- append([]byte{first, n}, body...)
		_, _ = conn.Write([]byte{0x20, 2, 0, code})
	}()
	return got
}

func TestConnect(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		code byte
		want []byte // the CONNECT sent
		err  string
	}{
		{"anonymous clean", Options{ClientID: "c"}, 0,
			[]byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 0, 0, 1, 'c'}, ""},
		{"user and password, persistent, keepalive", Options{ClientID: "c", Username: "u", Password: "pw", KeepAlive: 300, Persistent: true}, 0,
			[]byte{0x10, 20, 0, 4, 'M', 'Q', 'T', 'T', 4, 0xc0, 1, 44, 0, 1, 'c', 0, 1, 'u', 0, 2, 'p', 'w'}, ""},
		{"refused", Options{ClientID: "c", Username: "u", Password: "bad"}, 4, nil, "return code 4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer b.Close()
			got := fakeBroker(t, b, tc.code)
			c, err := Connect(a, tc.opts, 5*time.Second)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Connect error %v, want one with %q", err, tc.err)
				}
				var ce ConnectError
				if !errors.As(err, &ce) || ce.Code != tc.code {
					t.Errorf("error %v is not ConnectError{%d}", err, tc.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if sent := <-got; !bytes.Equal(sent, tc.want) {
				t.Errorf("CONNECT % x, want % x", sent, tc.want)
			}
		})
	}
}

// TestPublishRoundTrip encodes PUBLISH and PUBACK packets on one end of a
// pipe and decodes them on the other.
func TestPublishRoundTrip(t *testing.T) {
	long := bytes.Repeat([]byte("x"), 300) // a two-byte remaining length
	for _, tc := range []struct {
		name    string
		topic   string
		qos     byte
		retain  bool
		pid     uint16
		payload []byte
	}{
		{"QoS 0", "a/b", 0, false, 0, []byte("hi")},
		{"QoS 1 retained", "raspberry/led", 1, true, 65535, []byte("1")},
		{"empty payload", "t", 1, false, 7, nil},
		{"long payload", "t/long", 0, false, 0, long},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			w := &Client{conn: a, w: bufio.NewWriter(a)}
			r := &Client{conn: b, r: bufio.NewReader(b)}
			go func() {
				w.Publish(tc.topic, tc.qos, tc.retain, tc.pid, tc.payload)
				w.Puback(tc.pid)
				_ = w.Flush()
			}()
			typ, flags, body, err := r.ReadPacket()
			if err != nil || typ != PUBLISH {
				t.Fatalf("ReadPacket = %d, %v; want PUBLISH", typ, err)
			}
			if want := tc.qos<<1 | map[bool]byte{true: 1}[tc.retain]; flags != want {
				t.Errorf("flags %#x, want %#x", flags, want)
			}
			topic, pid, payload, err := ParsePublish(flags, body)
			if err != nil || string(topic) != tc.topic || !bytes.Equal(payload, tc.payload) || (tc.qos > 0 && pid != tc.pid) {
				t.Errorf("ParsePublish = %q, %d, %q, %v", topic, pid, payload, err)
			}
			typ, _, body, err = r.ReadPacket()
			if err != nil || typ != PUBACK || len(body) != 2 || uint16(body[0])<<8|uint16(body[1]) != tc.pid {
				t.Errorf("PUBACK: %d % x %v", typ, body, err)
			}
		})
	}
}

func TestParsePublishMalformed(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags byte
		body  []byte
	}{
		{"empty", 0, nil},
		{"topic too long", 0, []byte{0, 5, 'a'}},
		{"QoS 1 without id", 2, []byte{0, 1, 'a', 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, _, err := ParsePublish(tc.flags, tc.body); err == nil {
				t.Error("no error")
			}
		})
	}
}

func TestDialLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"192.0.2.1:1883", "localhost:1883", "nonsense"} {
		if c, err := Dial(TCP, addr, time.Second); err == nil {
			c.Close()
			t.Errorf("Dial(%s) succeeded", addr)
		}
	}
}
