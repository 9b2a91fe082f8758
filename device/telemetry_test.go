package device

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/pimqtt/pimqtt/mqtttest"
)

const telemetryTopic = "raspberry/telemetry"

// waitTelemetry waits for a telemetry document after position since for which ok holds, and
// returns it with the position after it.
func (b *mochiBroker) waitTelemetry(t *testing.T, since int, what string, ok func(map[string]any) bool) (map[string]any, int) {
	t.Helper()
	var doc map[string]any
	var next int
	b.msgs.waitFor(t, waitTimeout, "telemetry with "+what, func(ms []msg) bool {
		for i := min(since, len(ms)); i < len(ms); i++ {
			if ms[i].Topic != telemetryTopic {
				continue
			}
			var m map[string]any
			if json.Unmarshal([]byte(ms[i].Payload), &m) == nil && ok(m) {
				doc, next = m, i+1
				return true
			}
		}
		return false
	})
	return doc, next
}

// clientsAre is a waitTelemetry condition: "clients" is n.
func clientsAre(n int) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["clients"] == float64(n) }
}

// TestTelemetry: a report on connecting, retained, with Read's values and the broker's client
// count; a new count brings a report at once (the interval is an hour here); so does a new
// connection.
func TestTelemetry(t *testing.T) {
	b := newMochiBroker(t) // publishes $SYS/broker/clients/connected "0" when it starts
	log, logs := newLogger(t)
	k := &killableDialer{inner: b.dial}
	var reads atomic.Int32
	d := newTestDeviceOpts(t, Options{Dial: k.dial, BrokerLabel: "in-process", Logger: log,
		Outputs: []Output{{Name: "led", CommandTopic: "raspberry/led", Line: &fakeLine{}}},
		Telemetry: &Telemetry{Topic: telemetryTopic, Interval: time.Hour, Read: func() any {
			reads.Add(1)
			return map[string]any{"uptime_s": 12, "load_1m": 0.5}
		}}})
	if err := d.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	doc, pos := b.waitTelemetry(t, 0, "clients 0", clientsAre(0))
	if doc["uptime_s"] != float64(12) || doc["load_1m"] != 0.5 || len(doc) != 3 {
		t.Errorf("telemetry %v, want Read's values and clients", doc)
	}
	if got, ok := b.retained(telemetryTopic); !ok || got != `{"load_1m":0.5,"uptime_s":12,"clients":0}` {
		t.Errorf("retained telemetry %q (%v)", got, ok)
	}

	for _, n := range []int{3, 7, 2} {
		if err := b.s.Publish(ClientsTopic, []byte(strconv.Itoa(n)), true, 0); err != nil {
			t.Fatal(err)
		}
		_, pos = b.waitTelemetry(t, pos, fmt.Sprintf("clients %d", n), clientsAre(n))
	}
	// Not a count: ignored, the last one stays.
	if err := b.s.Publish(ClientsTopic, []byte("many"), true, 0); err != nil {
		t.Fatal(err)
	}

	before := reads.Load()
	mark := logs.mark()
	k.killAll()
	logs.waitMsg(t, mark, "connected to broker")
	b.waitTelemetry(t, pos, "a report after reconnecting", clientsAre(2))
	if reads.Load() == before {
		t.Errorf("the report after reconnecting was not read afresh")
	}
}

// Reports follow the interval.
func TestTelemetryInterval(t *testing.T) {
	b := newMochiBroker(t)
	log, _ := newLogger(t)
	var reads atomic.Int32
	d := newTestDeviceOpts(t, Options{Dial: b.dial, Logger: log,
		Outputs: []Output{{Name: "led", CommandTopic: "raspberry/led", Line: &fakeLine{}}},
		Telemetry: &Telemetry{Topic: telemetryTopic, Interval: 20 * time.Millisecond, Read: func() any {
			return map[string]int32{"n": reads.Add(1)}
		}}})
	if err := d.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	pos := 0
	last := 0.0
	for range 4 {
		var doc map[string]any
		doc, pos = b.waitTelemetry(t, pos, "a newer reading", func(m map[string]any) bool {
			n, _ := m["n"].(float64)
			return n > last
		})
		last = doc["n"].(float64)
	}
}

// A Read that hangs (a stalled file system) holds up neither commands, nor their states, nor
// Ready, nor Close; Start waits for it a second at most, and Home Assistant then gets the
// client count as the only telemetry sensor.
func TestTelemetryReadHangs(t *testing.T) {
	b := newMochiBroker(t)
	log, _ := newLogger(t)
	line := &fakeLine{}
	inRead, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	var calls atomic.Int32
	d := newTestDeviceOpts(t, Options{Dial: b.dial, Logger: log, ClientID: "pimqtt-hang",
		Outputs: []Output{{Name: "led", CommandTopic: "raspberry/led", Line: line}},
		Telemetry: &Telemetry{Topic: telemetryTopic, Read: func() any {
			if calls.Add(1) == 1 {
				close(inRead)
			}
			<-release
			return map[string]int{"uptime_s": 1}
		}},
		Discovery: &Discovery{}})
	startErr := make(chan error, 1)
	go func() { startErr <- d.Start(t.Context()) }()
	select {
	case err := <-startErr:
		if err != nil {
			t.Fatalf("Start: %v", err)
		}
	case <-time.After(firstReadTimeout + waitTimeout):
		t.Fatal("Start waits for a hung Read")
	}
	waitClosed(t, inRead, "the first Read")
	waitClosed(t, d.Ready(), "Ready")
	cfg, _ := b.retained("homeassistant/device/pimqtt-hang/config")
	var parsed struct{ Cmps map[string]any }
	if err := json.Unmarshal([]byte(cfg), &parsed); err != nil || len(parsed.Cmps) != 2 || parsed.Cmps["led"] == nil || parsed.Cmps["clients"] == nil {
		t.Errorf("discovery with a hung Read: %s (%v), want the switch and the client count", cfg, err)
	}
	pos := b.mark()
	b.publish(t, "raspberry/led", []byte("1"))
	line.waitValue(t, 1)
	b.waitMsg(t, pos, "raspberry/led/state", "1")
	closed := make(chan error, 1)
	go func() { closed <- d.Close(t.Context()) }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Close waited for a hung Read")
	}
	if _, ok := b.retained(telemetryTopic); ok {
		t.Error("telemetry published although Read never returned")
	}
}

// A reading that is not a JSON object is logged and not published; the device carries on.
func TestTelemetryBadReading(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    any
	}{
		{"array", []int{1}},
		{"number", 42},
		{"null", nil},
		{"unencodable", func() {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newMochiBroker(t)
			log, logs := newLogger(t)
			line := &fakeLine{}
			d := newTestDeviceOpts(t, Options{Dial: b.dial, Logger: log,
				Outputs:   []Output{{Name: "led", CommandTopic: "raspberry/led", Line: line}},
				Telemetry: &Telemetry{Topic: telemetryTopic, Read: func() any { return tc.v }}})
			if err := d.Start(t.Context()); err != nil {
				t.Fatalf("Start: %v", err)
			}
			logs.waitMsg(t, 0, "telemetry not published", "topic", telemetryTopic)
			b.publish(t, "raspberry/led", []byte("1"))
			line.waitValue(t, 1)
			closeDevice(t, d)
			if got, ok := b.retained(telemetryTopic); ok {
				t.Errorf("published %q", got)
			}
		})
	}
}

func TestAddMember(t *testing.T) {
	for _, tc := range []struct{ doc, want, err string }{
		{`{}`, `{"clients":3}`, ""},
		{`{"a":1}`, `{"a":1,"clients":3}`, ""},
		{`{"b":{"c":[1,2]},"a":"}"}`, `{"b":{"c":[1,2]},"a":"}","clients":3}`, ""},
		{`{"clients":9}`, `{"clients":9}`, ""}, // Read's own value wins
		{`null`, "", "not a JSON object"},
		{`[1]`, "", "not a JSON object"},
		{`3`, "", "not a JSON object"},
		{`{"a":}`, "", "not a JSON object"},
	} {
		got, err := addMember([]byte(tc.doc), "clients", "3")
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("addMember(%s): %s, %v; want error %q", tc.doc, got, err, tc.err)
		case tc.err == "" && (err != nil || string(got) != tc.want):
			t.Errorf("addMember(%s) = %s, %v; want %s", tc.doc, got, err, tc.want)
		}
	}
}

// newSysMochiBroker is a Mochi broker that publishes its $SYS topics every second, as
// pimqtt's does every 10 s, reached over in-memory pipes.
func newSysMochiBroker(t *testing.T) *mochiBroker {
	t.Helper()
	s := mochi.New(&mochi.Options{InlineClient: true, Capabilities: mochi.NewDefaultServerCapabilities(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), SysTopicResendInterval: 1})
	if err := s.AddHook(new(allowAll), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	b := &mochiBroker{s: s}
	t.Cleanup(func() {
		b.mu.Lock()
		for _, c := range b.pipes {
			_ = c.Close()
		}
		b.mu.Unlock()
		_ = s.Close()
	})
	return b
}

// "clients" follows Mochi's own count (the device's connection included) as clients come and
// go: the topic the device listens to is the one Mochi 2.7.9 publishes.
func TestTelemetryClientsMochi(t *testing.T) {
	b := newSysMochiBroker(t)
	log, _ := newLogger(t)
	got := &haClient{}
	d := newTestDeviceOpts(t, Options{Dial: b.dial, Logger: log,
		Outputs:   []Output{{Name: "led", CommandTopic: "raspberry/led", Line: &fakeLine{}}},
		Telemetry: &Telemetry{Topic: telemetryTopic, Interval: time.Hour, Read: func() any { return struct{}{} }}})
	if err := d.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	// The broker's inline client watches the telemetry: it is no connection.
	if err := b.s.Subscribe(telemetryTopic, 1, func(_ *mochi.Client, _ packets.Subscription, pk packets.Packet) {
		got.msgs.update(func(ms *[]haMsg) { *ms = append(*ms, haMsg{Topic: pk.TopicName, Payload: string(pk.Payload)}) })
	}); err != nil {
		t.Fatal(err)
	}
	waitClients(t, got, 0, 1)
	var clients []func()
	for i := range 2 {
		c := newPahoClient(t, b.dial, fmt.Sprintf("extra-%d", i))
		clients = append(clients, func() { c.Disconnect(100) })
	}
	pos := waitClients(t, got, 0, 3)
	clients[0]()
	waitClients(t, got, pos, 2)
}

// "clients" follows the real mosquitto's count too: it publishes the same topic (sys_interval
// 1 here, 10 s by default).
func TestTelemetryClientsMosquitto(t *testing.T) {
	t.Parallel()
	port := startMosquitto(t, mqtttest.MosquittoConfig{Extra: []string{"sys_interval 1"}}).Port
	dial, err := NetDialer("tcp://127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	log, _ := newLogger(t)
	d := newTestDeviceOpts(t, Options{Dial: dial, Logger: log,
		Outputs:   []Output{{Name: "led", CommandTopic: "raspberry/led", Line: &fakeLine{}}},
		Telemetry: &Telemetry{Topic: telemetryTopic, Interval: time.Hour, Read: func() any { return struct{}{} }}})
	if err := d.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	watcher := &haClient{c: newPahoClient(t, dial, "watcher")}
	watcher.subscribe(t, telemetryTopic)
	pos := waitClients(t, watcher, 0, 2) // the device and the watcher
	var extra []func()
	for i := range 2 {
		c := newPahoClient(t, dial, fmt.Sprintf("extra-%d", i))
		extra = append(extra, func() { c.Disconnect(100) })
	}
	pos = waitClients(t, watcher, pos, 4)
	extra[1]()
	waitClients(t, watcher, pos, 3)
}

// waitClients waits for a telemetry document with "clients" n on h after since.
func waitClients(t *testing.T, h *haClient, since, n int) int {
	t.Helper()
	var next int
	h.msgs.waitFor(t, waitTimeout, fmt.Sprintf("telemetry with clients %d", n), func(ms []haMsg) bool {
		for i := min(since, len(ms)); i < len(ms); i++ {
			var m map[string]any
			if ms[i].Topic == telemetryTopic && json.Unmarshal([]byte(ms[i].Payload), &m) == nil && m["clients"] == float64(n) {
				next = i + 1
				return true
			}
		}
		return false
	})
	return next
}
