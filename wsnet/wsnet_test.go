package wsnet

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// pair returns a server-side Conn and the raw client WebSocket talking to it.
func pair(t *testing.T) (*Conn, *websocket.Conn) {
	t.Helper()
	conns := make(chan *Conn, 1)
	up := websocket.Upgrader{Subprotocols: []string{Subprotocol}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			t.Errorf("upgrade: %v", err)
			return
		}
		conns <- New(ws)
	}))
	t.Cleanup(srv.Close)
	d := websocket.Dialer{Subprotocols: []string{Subprotocol}}
	client, _, err := d.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/mqtt", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	select {
	case c := <-conns:
		t.Cleanup(func() { c.Close() })
		return c, client
	case <-time.After(10 * time.Second):
		t.Fatal("no server connection")
	}
	return nil, nil
}

func TestReadJoinsAndSplitsMessages(t *testing.T) {
	c, client := pair(t)
	// One MQTT packet split over two messages, then an empty message, then
	// two packets in one message: the reader sees one byte stream.
	for _, m := range []string{"\x30\x05", "ab", "", "cde\xc0\x00"} {
		if err := client.WriteMessage(websocket.BinaryMessage, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	want := "\x30\x05abcde\xc0\x00"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("read %q, want %q", got, want)
	}
}

func TestWriteIsOneBinaryMessage(t *testing.T) {
	c, client := pair(t)
	if err := c.SetWriteDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("\x20\x02\x00\x00")); err != nil {
		t.Fatal(err)
	}
	kind, p, err := client.ReadMessage()
	if err != nil || kind != websocket.BinaryMessage || string(p) != "\x20\x02\x00\x00" {
		t.Fatalf("got kind %d %q %v", kind, p, err)
	}
}

func TestTextFrameRefused(t *testing.T) {
	c, client := pair(t)
	if err := client.WriteMessage(websocket.TextMessage, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 8)); !errors.Is(err, ErrTextFrame) {
		t.Fatalf("err = %v, want ErrTextFrame", err)
	}
}

func TestNormalCloseIsEOF(t *testing.T) {
	c, client := pair(t)
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	if err := client.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 8)); !errors.Is(err, io.EOF) {
		t.Fatalf("err = %v, want io.EOF", err)
	}
}

// TestReadErrorIsSticky reads many times from a failed connection, as a
// net.Conn user may (after a timeout, say): gorilla panics on the 1000th
// NextReader call after a failure, which would take the whole process down.
func TestReadErrorIsSticky(t *testing.T) {
	tests := []struct {
		name    string
		provoke func(t *testing.T, c *Conn, client *websocket.Conn)
		want    func(error) bool
	}{
		{"read deadline passed", func(t *testing.T, c *Conn, _ *websocket.Conn) {
			if err := c.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
				t.Fatal(err)
			}
		}, func(err error) bool {
			var ne net.Error
			return errors.As(err, &ne) && ne.Timeout()
		}},
		{"peer closed normally", func(t *testing.T, _ *Conn, client *websocket.Conn) {
			msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
			if err := client.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second)); err != nil {
				t.Fatal(err)
			}
		}, func(err error) bool { return errors.Is(err, io.EOF) }},
		{"peer vanished", func(t *testing.T, _ *Conn, client *websocket.Conn) {
			client.NetConn().Close()
		}, func(err error) bool { return err != nil && !errors.Is(err, io.EOF) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, client := pair(t)
			tt.provoke(t, c, client)
			for i := range 1500 {
				_, err := c.Read(make([]byte, 8))
				if !tt.want(err) {
					t.Fatalf("read %d: err = %v", i, err)
				}
			}
		})
	}
}
