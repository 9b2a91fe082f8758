package broker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// TestInMemoryRetainedBurst: a client of the in-memory listener that
// subscribes to several retained QoS 1 messages at once gets them all.
// Over net.Pipe (no buffer) Mochi's writer, holding the client's lock while
// it wrote, and paho, writing its PUBACK while nobody read, deadlocked:
// 14 of 100 such subscriptions got stuck.
func TestInMemoryRetainedBurst(t *testing.T) {
	b, err := New(Options{AllowAnonymous: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	connect := func(id string) paho.Client {
		t.Helper()
		c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://in-process.invalid:1").SetClientID(id).
			SetProtocolVersion(4).SetAutoReconnect(false).
			SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) {
				return b.DialInMemory(context.Background())
			}))
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("connect %s: %v", id, tok.Error())
		}
		return c
	}
	const retained = 11
	pub := connect("pub")
	defer pub.Disconnect(0)
	for i := range retained {
		if tok := pub.Publish(fmt.Sprintf("raspberry/l%d/state", i), 1, true, "1"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	for round := range 40 {
		got := make(chan struct{}, retained)
		sub := connect(fmt.Sprintf("sub%d", round))
		sub.Subscribe("raspberry/+/state", 1, func(paho.Client, paho.Message) { got <- struct{}{} })
		deadline := time.After(10 * time.Second)
		for n := 0; n < retained; n++ {
			select {
			case <-got:
			case <-deadline:
				t.Fatalf("round %d: %d of %d retained QoS 1 messages arrived over the in-memory connection", round, n, retained)
			}
		}
		sub.Disconnect(0)
	}
}
