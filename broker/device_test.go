package broker

import (
	"context"
	"errors"
	"net"
	"net/url"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	pahopackets "github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/pimqtt/pimqtt/mqtttest"
)

const testDeviceID = "pimqtt-testhost"

// inMemoryClient is a paho client connected through the broker's
// in-memory listener, as the in-process device is. lost counts the times
// its connection was lost.
type inMemoryClient struct {
	paho.Client
	lost atomic.Int64
}

// connectInMemory connects a paho client with clientID over the in-memory
// listener, and disconnects it when the test ends.
func connectInMemory(t testing.TB, b *Broker, clientID string) *inMemoryClient {
	t.Helper()
	c := &inMemoryClient{}
	opts := paho.NewClientOptions().AddBroker("tcp://in-process:0").SetClientID(clientID).
		SetAutoReconnect(false).SetConnectTimeout(10 * time.Second).
		SetConnectionLostHandler(func(paho.Client, error) { c.lost.Add(1) }).
		SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return b.DialInMemory(ctx)
		})
	c.Client = paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("in-memory client %s could not connect: %v", clientID, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

// connectTCP connects a paho client (MQTT 3.1.1) over TCP and returns the
// CONNECT's outcome; a connected client is disconnected when the test ends.
func connectTCP(t testing.TB, addr, clientID string) (paho.Client, error) {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).
		SetAutoReconnect(false).SetConnectTimeout(10 * time.Second).SetProtocolVersion(4))
	tok := c.Connect()
	if !tok.WaitTimeout(20 * time.Second) {
		t.Fatalf("client %s: no CONNACK", clientID)
	}
	if tok.Error() == nil {
		t.Cleanup(func() { c.Disconnect(50) })
	}
	return c, tok.Error()
}

// TestDeviceClientIDReserved: a network client presenting the device's
// client id is refused (3.1.1: identifier rejected; MQTT 5: 0x85) with a
// log line, and the device keeps its session: before, the network client
// took the session over and the device was disconnected.
func TestDeviceClientIDReserved(t *testing.T) {
	b, logs := startTestBroker(t, Options{
		Listeners:      []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}},
		AllowAnonymous: true,
		DeviceClientID: testDeviceID,
	})
	addr := listenerAddr(t, b, TCP)
	device := connectInMemory(t, b, testDeviceID)
	got := make(chan string, 10)
	if tok := device.Subscribe("raspberry/led", 1, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("device subscribe: %v", tok.Error())
	}

	// paho Go, MQTT 3.1.1.
	if _, err := connectTCP(t, addr, testDeviceID); !errors.Is(err, pahopackets.ErrorRefusedIDRejected) {
		t.Fatalf("paho with the device's client id: %v, want %v", err, pahopackets.ErrorRefusedIDRejected)
	}
	// Raw MQTT 5 and 3.1.1.
	for _, version := range []byte{5, 4} {
		cl := dialRaw(t, addr, version)
		if err := cl.write(connectFor(version, testDeviceID)); err != nil {
			t.Fatal(err)
		}
		if version == 5 {
			cl.expect("CONNACK 0x85")
		} else {
			cl.expect("CONNACK 0x02")
		}
		cl.expectClosed()
		cl.close()
	}
	// mosquitto_pub, both versions.
	pub := mqtttest.RequireTool(t, "mosquitto_pub", "mosquitto-clients")
	host, port, _ := net.SplitHostPort(addr)
	for _, version := range []string{"mqttv311", "mqttv5"} {
		out, err := exec.Command(pub, "-h", host, "-p", port, "-V", version, "-i", testDeviceID,
			"-t", "raspberry/led", "-m", "1").CombinedOutput()
		if err == nil || !strings.Contains(strings.ToLower(string(out)), "identifier") {
			t.Fatalf("mosquitto_pub -V %s -i %s: %v, %q: want a refusal naming the identifier", version, testDeviceID, err, out)
		}
	}

	// The device was never disturbed: still connected, still subscribed.
	if n := device.lost.Load(); n != 0 || !device.IsConnectionOpen() {
		t.Fatalf("device lost its connection %d time(s)", n)
	}
	phone, err := connectTCP(t, addr, "phone")
	if err != nil {
		t.Fatal(err)
	}
	phone.Publish("raspberry/led", 1, false, "1").WaitTimeout(10 * time.Second)
	select {
	case p := <-got:
		if p != "1" {
			t.Fatalf("device got %q", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the device no longer gets commands")
	}
	if n := device.lost.Load(); n != 0 {
		t.Fatalf("device lost its connection %d time(s)", n)
	}
	if !strings.Contains(logs.since(0), "client refused: client id reserved for the in-process device") {
		t.Fatalf("no log line for the refusal:\n%s", logs.since(0))
	}
}

// TestDeviceNotCountedAgainstMaxClients: with MaxClients 1, the device
// gets in beside a network client, and a network client gets in beside
// the device; a second network client is refused (server unavailable).
func TestDeviceNotCountedAgainstMaxClients(t *testing.T) {
	limits := DefaultLimits()
	limits.MaxClients = 1
	b, logs := startTestBroker(t, Options{
		Listeners:      []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}},
		AllowAnonymous: true,
		DeviceClientID: testDeviceID,
		Limits:         limits,
	})
	addr := listenerAddr(t, b, TCP)

	// Network client first, then the device.
	first, err := connectTCP(t, addr, "phone-1")
	if err != nil {
		t.Fatalf("first network client: %v", err)
	}
	device := connectInMemory(t, b, testDeviceID)
	if _, err := connectTCP(t, addr, "phone-2"); !errors.Is(err, pahopackets.ErrorRefusedServerUnavailable) {
		t.Fatalf("second network client: %v, want %v", err, pahopackets.ErrorRefusedServerUnavailable)
	}
	v5 := dialRaw(t, addr, 5)
	if err := v5.write(connectFor(5, "phone-3")); err != nil {
		t.Fatal(err)
	}
	v5.expect("CONNACK 0x89")
	v5.close()
	if !strings.Contains(logs.since(0), "max_clients=1") {
		t.Fatalf("no log line naming the limit:\n%s", logs.since(0))
	}

	// Device first, then a network client.
	first.Disconnect(50)
	device.Disconnect(50)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := waitBrokerConns(ctx, b, 0); err != nil {
		t.Fatal(err)
	}
	connectInMemory(t, b, testDeviceID)
	if _, err := connectTCP(t, addr, "phone-4"); err != nil {
		t.Fatalf("network client beside the device: %v", err)
	}
	// A client taking its own session over gets in at the limit.
	if _, err := connectTCP(t, addr, "phone-4"); err != nil {
		t.Fatalf("session takeover at the limit: %v", err)
	}
	if n := b.guard.clients.Load(); n > 2 {
		t.Fatalf("%d client slots held", n)
	}
	waitFor(t, 10*time.Second, "one slot held once the taken-over session ended", func() bool { return b.guard.clients.Load() == 1 })
}
