package broker

import (
	"bytes"
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pimqtt/pimqtt/mqtttest"
)

// pahoPublishV5 is a python paho 1.6 client in MQTT 5 mode that publishes
// QoS 1 messages with user properties and waits for each PUBACK. paho 1.6
// checks a PUBACK's reason code and its network loop dies on 0x01, which
// Mochi sent: the second wait then times out.
const pahoPublishV5 = `
import sys, threading
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

host, port = sys.argv[1], int(sys.argv[2])
connected = threading.Event()
def on_connect(client, userdata, flags, rc, properties=None):
    if rc == 0:
        connected.set()
    else:
        print("CONNACK", rc, flush=True)
c = mqtt.Client(client_id="py-acks", protocol=mqtt.MQTTv5)
c.on_connect = on_connect
c.connect(host, port, keepalive=30)
c.loop_start()
if not connected.wait(10):
    print("no CONNACK", flush=True)
    sys.exit(1)
for i in range(3):
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("origin", "test"), ("n", str(i))]
    info = c.publish("acks/test", "m%d" % i, qos=1, properties=props)
    info.wait_for_publish(timeout=10)
    if not info.is_published():
        print("PUBACK %d not handled" % i, flush=True)
        sys.exit(1)
c.disconnect()
c.loop_stop()
print("ok", flush=True)
`

// TestAckWithUserProperties: a QoS 1 PUBLISH carrying user properties is
// acknowledged with a plain PUBACK (reason 0x00, no properties): Mochi
// copied the properties into the PUBACK with reason code 0x01, which is
// not a PUBACK code (upstream 474), and python paho 1.6 in MQTT 5 mode
// crashed its network loop on it.
func TestAckWithUserProperties(t *testing.T) {
	b, _ := startTestBroker(t, Options{
		Listeners:      []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}},
		AllowAnonymous: true,
	})
	addr := listenerAddr(t, b, TCP)

	t.Run("python paho 1.6 MQTT 5", func(t *testing.T) {
		python := mqtttest.RequireTool(t, "python3", "python3-paho-mqtt")
		host, port, _ := net.SplitHostPort(addr)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, python, "-c", pahoPublishV5, host, port).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "ok" {
			t.Fatalf("python paho: %v\n%s", err, out)
		}
	})

	t.Run("raw PUBACK bytes", func(t *testing.T) {
		for _, tc := range []struct{ name, publish string }{
			{"user properties", "32 r? s'acks/raw' m7 v{26 s'k' s'v' 26 s'origin' s'test'} 'p'"},
			{"content type and user property", "32 r? s'acks/raw' m7 v{03 s'text/plain' 26 s'k' s'v'} 'p'"},
			{"no properties", "32 r? s'acks/raw' m7 00 'p'"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				cl := dialRaw(t, addr, 5)
				defer cl.close()
				cl.connect("raw-acks")
				if err := cl.write(pk(tc.publish)); err != nil {
					t.Fatal(err)
				}
				p, err := cl.next()
				if err != nil {
					t.Fatal(err)
				}
				// PUBACK, packet id 7, reason 0x00 and no properties, which
				// MQTT 5 lets the sender leave out.
				got := append([]byte{p.header}, pkVarint(len(p.body))...)
				got = append(got, p.body...)
				if want := []byte{0x40, 0x02, 0x00, 0x07}; !bytes.Equal(got, want) {
					t.Fatalf("PUBACK % x, want % x", got, want)
				}
			})
		}
	})
}
