package wsnet

import (
	"errors"
	"io"
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
