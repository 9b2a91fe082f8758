package web

import (
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pimqtt/pimqtt/mqtttest"
)

// The event stream delivers changes made by a real outside client (mosquitto_pub) as "MQTT":
// a command to the output, an input driven through its simulation topic, and the device going
// offline.
func TestEventsFromMosquittoPub(t *testing.T) {
	r := newRig(t, Options{})
	c := r.client()
	c.login("alice", alicePassword)
	ev := c.events()
	first := ev.wait("the state on connecting", func(Snapshot) bool { return true })
	if output(t, first, "led").State != "off" || first.Status != statusOnline || !first.Connected || first.User != "alice" {
		t.Fatalf("first snapshot %+v", first)
	}
	r.mosquittoPub(ledTopic, "1")
	snap := ev.wait("led on", func(s Snapshot) bool { return output(t, s, "led").State == "on" })
	if len(snap.Events) != 1 || snap.Events[0] != (Event{Time: snap.Events[0].Time, Kind: "output", Name: "led", State: "on", By: byMQTT}) {
		t.Fatalf("events %+v, want led on by MQTT", snap.Events)
	}
	r.mosquittoPub(doorSimTopic, "ON")
	snap = ev.wait("door on", func(s Snapshot) bool { return len(s.Inputs) == 1 && s.Inputs[0].State == "on" })
	if e := snap.Events[0]; e.Kind != "input" || e.Name != "door" || e.State != "on" || e.By != byMQTT {
		t.Fatalf("latest event %+v, want door on by MQTT", e)
	}
	r.stopDevice()
	snap = ev.wait("device offline", func(s Snapshot) bool { return s.Status == statusOffline })
	if e := snap.Events[0]; e.Kind != "status" || e.State != statusOffline || e.By != "" {
		t.Fatalf("latest event %+v, want status offline", e)
	}
}

// After a restart of the web side the stream comes back (EventSource reconnects by itself) and
// its first message is the present state, including changes made while it was down; the
// session survives in the session file, so nobody signs in again.
func TestEventsAcrossRestart(t *testing.T) {
	r := newRig(t, Options{SessionFile: filepath.Join(t.TempDir(), "sessions.json")})
	c := r.client()
	c.login("alice", alicePassword)
	ev := c.events()
	ev.wait("led off", func(s Snapshot) bool { return output(t, s, "led").State == "off" })
	opts := r.opts
	r.stopWeb()
	if err := ev.waitEnd(); err == nil {
		t.Fatal("the stream ended without an error")
	}
	r.mosquittoPub(ledTopic, "1") // while the page's server is down
	r.startWeb(opts)
	snap := c.events().wait("the first message", func(Snapshot) bool { return true })
	if output(t, snap, "led").State != "on" || snap.User != "alice" {
		t.Fatalf("after the restart: %+v, want alice seeing led on", snap)
	}
}

// Device-only mode: the web side connects over TCP with its own credentials to the real
// mosquitto, the device too, and a change by mosquitto_pub (another user) reaches the stream.
func TestEventsAgainstMosquitto(t *testing.T) {
	pwfile, err := filepath.Abs("testdata/passwd")
	if err != nil {
		t.Fatal(err)
	}
	m := mqtttest.StartMosquitto(t, mqtttest.MosquittoConfig{Extra: []string{
		"allow_anonymous false", "password_file " + pwfile,
	}})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(m.Port))
	r := newRigDial(t, addr, Options{Username: "webclient", Password: "web-secret", BrokerLabel: "tcp://" + addr})
	c := r.client()
	c.login("alice", alicePassword)
	ev := c.events()
	ev.wait("led off", func(s Snapshot) bool { return output(t, s, "led").State == "off" })
	mosquittoPub(t, m.Port, ledTopic, "1", "-u", "bob", "-P", bobPassword)
	snap := ev.wait("led on", func(s Snapshot) bool { return output(t, s, "led").State == "on" })
	if snap.Events[0].By != byMQTT {
		t.Fatalf("event %+v", snap.Events[0])
	}
	resp, body := c.do("POST", "/api/outputs/led", `{"state":"off"}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("switch through mosquitto: %s %s", resp.Status, body)
	}
	if v, _ := r.led.Value(); v != 0 {
		t.Fatal("the line did not follow")
	}
}

// Event streams are bounded: one past maxStreams gets 503 until one closes.
func TestStreamLimit(t *testing.T) {
	r := newRig(t, Options{})
	c := r.client()
	c.login("alice", alicePassword)
	c.hc.Transport = &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: maxStreams + 1}
	streams := make([]*stream, maxStreams)
	for i := range streams {
		streams[i] = c.events()
		streams[i].wait("a snapshot", func(Snapshot) bool { return true })
	}
	resp, body := c.do("GET", "/api/events", "")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "too many open event streams") {
		t.Fatalf("stream %d: %s %s, want 503", maxStreams+1, resp.Status, body)
	}
	streams[0].resp.Body.Close()
	r.waitStreams(maxStreams - 1)
	c.events().wait("a snapshot", func(Snapshot) bool { return true })
}
