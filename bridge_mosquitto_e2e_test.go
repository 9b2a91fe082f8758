package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pimqtt/pimqtt/broker"
	"github.com/pimqtt/pimqtt/mqtttest"
)

// TestMosquittoBridgeIntoPimqtt: a stock Debian mosquitto with a
// "connection" block pointing at pimqtt (try_private left at its default,
// so it connects with protocol level 0x84) bridges raspberry/# both ways.
// A client on mosquitto toggles pimqtt's LED and sees its state; the
// command is seen exactly once on mosquitto (pimqtt does not echo it back
// through the bridge); the state crosses the bridge retained; pimqtt logs
// the bridge, and keeps mosquitto's retained notification "1" on
// $SYS/broker/connection/<client id>/state, and its will "0" there once
// mosquitto is killed.
func TestMosquittoBridgeIntoPimqtt(t *testing.T) {
	pw := passwordFile(t, "bridge", "br1dge", "phone", "s3cret")
	m, logs := startMain(t, testConfig(pw))
	host, port := addr(t, m, broker.TCP)
	pimqttURL := "tcp://" + host + ":" + port

	// Subscribed before mosquitto starts: its notification is seen live or
	// retained, either way.
	notes := newSubscriber(t, pimqttURL, "phone", "s3cret", "$SYS/broker/connection/#")

	mosq := mqtttest.StartMosquitto(t, mqtttest.MosquittoConfig{Extra: []string{
		"allow_anonymous true",
		"connection pimqtt",
		"address " + host + ":" + port,
		"topic raspberry/# both 1",
		"remote_username bridge",
		"remote_password br1dge",
	}})
	mosqURL := fmt.Sprintf("tcp://127.0.0.1:%d", mosq.Port)

	waitLog(t, logs, "bridge connected", "listener=tcp0")
	note := waitNotification(t, notes)
	t.Logf("mosquitto's notification on pimqtt: %s = %q", note.topic, note.payload)
	// pimqtt keeps it retained: a subscriber arriving now gets it.
	if late := waitNotification(t, newSubscriber(t, pimqttURL, "phone", "s3cret", note.topic)); !late.retained {
		t.Errorf("notification %s not retained on pimqtt", note.topic)
	}

	// The device's retained state crosses the bridge when mosquitto
	// subscribes: once it is on mosquitto, the bridge carries both ways.
	local := newSubscriber(t, mosqURL, "", "", "raspberry/#")
	local.waitFor(t, "raspberry/led/state", "0")

	for i, v := range []string{"1", "0"} {
		publish(t, mosqURL, "", "", "raspberry/led", []byte(v))
		// A copy of the command echoed by pimqtt would travel back ahead
		// of the state, and of this marker, published on pimqtt after the
		// state came back.
		seenCommands, sawState := countUntilMarker(t, local, v, func() {
			publish(t, pimqttURL, "phone", "s3cret", "raspberry/marker", []byte(fmt.Sprint(i)))
		}, fmt.Sprint(i))
		if !sawState {
			t.Fatalf("state %s did not come back through the bridge", v)
		}
		if seenCommands != 1 {
			t.Fatalf("command %s seen %d times on mosquitto, want exactly 1 (echo through the bridge)", v, seenCommands)
		}
		if got := lineValue(t, m); got != int(v[0]-'0') {
			t.Fatalf("line = %d after command %s", got, v)
		}
		// Retain as published: a subscriber arriving on mosquitto now
		// gets the current state, retained there.
		late := newSubscriber(t, mosqURL, "", "", "raspberry/led/state")
		if msg := late.waitFor(t, "raspberry/led/state", v); !msg.retained {
			t.Fatalf("state %s on mosquitto not retained", v)
		}
	}

	// mosquitto's will: its bridge dies without DISCONNECT, pimqtt
	// publishes and keeps "0" on the notification topic.
	mosq.Kill(t)
	notes.waitFor(t, note.topic, "0")
	if late := newSubscriber(t, pimqttURL, "phone", "s3cret", note.topic).waitFor(t, note.topic, "0"); !late.retained {
		t.Errorf("will %s = 0 not retained on pimqtt", note.topic)
	}
}

// waitNotification waits for mosquitto's bridge notification "1".
func waitNotification(t *testing.T, s *subscriber) message {
	t.Helper()
	deadline := time.After(testTimeout)
	for {
		select {
		case msg := <-s.msgs:
			if strings.HasSuffix(msg.topic, "/state") && msg.payload == "1" {
				return msg
			}
		case <-deadline:
			t.Fatalf("no bridge notification on $SYS/broker/connection/# within %v", testTimeout)
		}
	}
}

// countUntilMarker reads s until the marker (raspberry/marker with
// payload mark) arrives: it counts the commands with payload v on
// raspberry/led and notes whether the state v came back; once the state
// is there it calls sendMarker. Bounded by testTimeout.
func countUntilMarker(t *testing.T, s *subscriber, v string, sendMarker func(), mark string) (commands int, sawState bool) {
	t.Helper()
	deadline := time.After(testTimeout)
	for {
		select {
		case msg := <-s.msgs:
			switch {
			case msg.topic == "raspberry/led" && msg.payload == v:
				commands++
			case msg.topic == "raspberry/led/state" && msg.payload == v && !sawState:
				sawState = true
				sendMarker()
			case msg.topic == "raspberry/marker" && msg.payload == mark:
				return commands, sawState
			}
		case <-deadline:
			t.Fatalf("marker %s not seen within %v (commands %d, state %v)", mark, testTimeout, commands, sawState)
		}
	}
}
