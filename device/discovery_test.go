package device

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/pimqtt/pimqtt/telemetry"
)

// fullSnapshot is a telemetry reading with every value telemetry.Snapshot can hold.
func fullSnapshot() telemetry.Snapshot {
	f, i, u := 1.5, int64(3600), uint64(1<<30)
	return telemetry.Snapshot{CPUTempC: &f, UptimeS: &i, Load1m: &f, Load5m: &f, Load15m: &f,
		MemUsedPercent: &f, MemAvailableBytes: &u, DiskFreeBytes: &u, Time: "2025-03-01T11:30:05Z"}
}

// TestHADiscovery plays Home Assistant against the device-based message: it reads the retained
// configuration, checks it with Home Assistant's rules, switches the output through the switch's
// command topic and sees the state topic follow, sees the binary sensor and the telemetry
// sensors fed, brings the configuration again by publishing "online" on homeassistant/status,
// and sees the device become unavailable when it stops.
func TestHADiscovery(t *testing.T) {
	b, tcp := newMochiBrokerTCP(t)
	log, _ := newLogger(t)
	led := &fakeLine{}
	door := newFakeInput(0)
	var delays atomic.Int32
	// No memory or disk figures in this machine's reading: no sensors for them.
	reading := map[string]any{"cpu_temp_c": 48.7, "uptime_s": 3600, "load_1m": 0.5, "time": "2025-03-01T11:30:05Z"}
	d := newTestDeviceOpts(t, Options{
		Dial: b.dial, BrokerLabel: "in-process", Logger: log, ClientID: "pimqtt-testpi",
		Outputs: []Output{
			{Name: "led", CommandTopic: "raspberry/led", Line: led},
			{Name: "relay 1", CommandTopic: "raspberry/relay1", Line: &fakeLine{}},
		},
		Inputs:    []Input{{Name: "door", StateTopic: "raspberry/door/state", Line: door}},
		Telemetry: &Telemetry{Topic: "raspberry/telemetry", Interval: time.Hour, Read: func() any { return reading }},
		Discovery: &Discovery{Version: "v1.2.3", ConfigurationURL: "http://192.168.1.20:8080/",
			Delay: func() time.Duration { delays.Add(1); return 0 }},
	})
	if err := d.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	const configTopic = "homeassistant/device/pimqtt-testpi/config"
	waitClosed(t, d.Ready(), "Ready")
	if _, ok := b.retained(configTopic); !ok {
		t.Fatalf("Ready closed before the discovery message was retained on %s", configTopic)
	}

	ha := newHAClient(t, tcp, "homeassistant")
	first := ha.wait(t, 0, configTopic, nil)
	if !first.Retained {
		t.Errorf("discovery message not retained")
	}
	dev, origin, ents := parseHADevice(t, first.Payload)
	if t.Failed() {
		t.Fatalf("discovery message refused:\n%s", first.Payload)
	}
	wantDev := map[string]any{"identifiers": []any{"pimqtt-testpi"}, "name": "pimqtt-testpi", "model": "pimqtt",
		"sw_version": "v1.2.3", "configuration_url": "http://192.168.1.20:8080/"}
	if !jsonEqual(dev, wantDev) {
		t.Errorf("device block %v, want %v", dev, wantDev)
	}
	wantOrigin := map[string]any{"name": "pimqtt", "sw_version": "v1.2.3", "support_url": "https://github.com/pimqtt/pimqtt"}
	if !jsonEqual(origin, wantOrigin) {
		t.Errorf("origin block %v, want %v", origin, wantOrigin)
	}

	// One entity per line, one sensor per value this machine has, and the client count.
	var got []string
	for _, e := range ents {
		got = append(got, e.Platform+":"+e.ObjectID+":"+e.str("unique_id"))
	}
	slices.Sort(got)
	relayID := haObjectID("relay 1")
	if !regexp.MustCompile(`^relay_1_[0-9a-f]{8}$`).MatchString(relayID) {
		t.Errorf("id of line %q = %q, want relay_1_ and a hash", "relay 1", relayID)
	}
	want := []string{"binary_sensor:door:pimqtt-testpi_door", "sensor:clients:pimqtt-testpi_clients",
		"sensor:cpu_temp_c:pimqtt-testpi_cpu_temp_c", "sensor:load_1m:pimqtt-testpi_load_1m",
		"sensor:uptime_s:pimqtt-testpi_uptime_s", "switch:led:pimqtt-testpi_led",
		"switch:" + relayID + ":pimqtt-testpi_" + relayID}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("entities\n got %v\nwant %v", got, want)
	}

	sw := entityByID(t, ents, "led")
	// The switch's payloads are what the device accepts and publishes.
	if v, err := ParseCommand([]byte(sw.str("payload_on")), 0); err != nil || v != 1 {
		t.Errorf("payload_on %q drives the line to %d (%v), want 1", sw.str("payload_on"), v, err)
	}
	if v, err := ParseCommand([]byte(sw.str("payload_off")), 1); err != nil || v != 0 {
		t.Errorf("payload_off %q drives the line to %d (%v), want 0", sw.str("payload_off"), v, err)
	}
	if sw.str("command_topic") != "raspberry/led" || sw.str("state_topic") != "raspberry/led/state" {
		t.Errorf("switch topics: %v", sw)
	}
	temp := entityByID(t, ents, "cpu_temp_c")
	if temp.str("device_class") != "temperature" || temp.str("unit_of_measurement") != "°C" || temp.str("state_class") != "measurement" {
		t.Errorf("temperature sensor: %v", temp)
	}
	if up := entityByID(t, ents, "uptime_s"); up.str("device_class") != "duration" || up.str("unit_of_measurement") != "s" {
		t.Errorf("uptime sensor: %v", up)
	}
	if exp := temp.Conf["expire_after"]; exp != float64(3*3600) {
		t.Errorf("expire_after = %v, want three telemetry intervals, %d", exp, 3*3600)
	}
	if a, pa, pn := sw.str("availability_topic"), sw.str("payload_available"), sw.str("payload_not_available"); a != "raspberry/status" || pa != statusOn || pn != statusOff {
		t.Errorf("availability %q %q %q, want the status topic and its payloads", a, pa, pn)
	}

	// Home Assistant subscribes to what the configuration names: the device is available.
	mark := ha.mark()
	ha.setUp(t, ents)
	ha.waitPayload(t, mark, sw.str("availability_topic"), sw.str("payload_available"))

	// The switch: a command on its command topic, the state on its state topic follows.
	for _, c := range []struct{ cmd, state string }{{"payload_on", "state_on"}, {"payload_off", "state_off"}, {"payload_on", "state_on"}} {
		mark = ha.mark()
		ha.publish(t, sw.str("command_topic"), sw.str(c.cmd), false)
		ha.waitPayload(t, mark, sw.str("state_topic"), sw.str(c.state))
	}
	led.waitValue(t, 1)

	// The binary sensor follows the input.
	bs := entityByID(t, ents, "door")
	mark = ha.mark()
	door.send(t, 1)
	ha.waitPayload(t, mark, bs.str("state_topic"), bs.str("payload_on"))

	// Every sensor's template finds its value in the telemetry document (clients included,
	// once the broker's count is known).
	doc := ha.wait(t, 0, "raspberry/telemetry", func(m haMsg) bool { return strings.Contains(m.Payload, `"clients"`) })
	var values map[string]any
	if err := json.Unmarshal([]byte(doc.Payload), &values); err != nil {
		t.Fatalf("telemetry %q: %v", doc.Payload, err)
	}
	for _, e := range ents {
		if e.Platform != "sensor" {
			continue
		}
		if e.str("state_topic") != "raspberry/telemetry" {
			t.Errorf("%s reads %s", e.ObjectID, e.str("state_topic"))
		}
		key := haValueTemplate.FindStringSubmatch(e.str("value_template"))[1]
		if _, ok := values[key]; !ok {
			t.Errorf("sensor %s reads %q, which the telemetry %s lacks", e.ObjectID, key, doc.Payload)
		}
	}

	// Home Assistant restarts: "online" brings the configuration again, unchanged.
	mark = ha.mark()
	ha.publish(t, "homeassistant/status", "online", false)
	again := ha.wait(t, mark, configTopic, nil)
	if again.Payload != first.Payload {
		t.Errorf("configuration changed:\n%s\n%s", first.Payload, again.Payload)
	}
	if n := delays.Load(); n != 1 {
		t.Errorf("Delay called %d times, want 1", n)
	}

	// The device stops: Home Assistant sees it unavailable.
	mark = ha.mark()
	closeDevice(t, d)
	ha.waitPayload(t, mark, sw.str("availability_topic"), sw.str("payload_not_available"))
}

// jsonEqual compares JSON-decoded values.
func jsonEqual(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// TestHADiscoveryPerComponent: the form for Home Assistant before 2024.11, under a prefix of
// the user's choice: one retained message per entity, each complete with device, origin and
// availability; a sensor for every value of a full telemetry.Snapshot; published again on
// "online" and on every reconnection; nothing on the device-based topic.
func TestHADiscoveryPerComponent(t *testing.T) {
	b, tcp := newMochiBrokerTCP(t)
	log, logs := newLogger(t)
	k := &killableDialer{inner: b.dial}
	d := newTestDeviceOpts(t, Options{
		Dial: k.dial, BrokerLabel: "in-process", Logger: log, ClientID: "pimqtt-old.ha",
		Outputs:   []Output{{Name: "led", CommandTopic: "raspberry/led", Line: &fakeLine{}}},
		Inputs:    []Input{{Name: "door", StateTopic: "raspberry/door/state", Line: newFakeInput(0)}},
		Telemetry: &Telemetry{Topic: "raspberry/telemetry", Read: func() any { return fullSnapshot() }},
		Discovery: &Discovery{Prefix: "ha", PerComponent: true, Delay: func() time.Duration { return 0 }},
	})
	if err := d.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	waitClosed(t, d.Ready(), "Ready")

	id := haObjectID("pimqtt-old.ha")
	if !regexp.MustCompile(`^pimqtt-old_ha_[0-9a-f]{8}$`).MatchString(id) {
		t.Fatalf("discovery id of client id pimqtt-old.ha = %q", id)
	}
	topics := []string{"ha/switch/" + id + "/led/config", "ha/binary_sensor/" + id + "/door/config"}
	// Every value a telemetry.Snapshot can carry has its sensor, and so has the client count.
	var full map[string]any
	raw, _ := json.Marshal(fullSnapshot())
	_ = json.Unmarshal(raw, &full)
	full["clients"] = 0
	for key := range full {
		if key != "time" {
			topics = append(topics, "ha/sensor/"+id+"/"+key+"/config")
		}
	}
	slices.Sort(topics)

	ha := newHAClient(t, tcp, "ha")
	var devices []any
	for _, tp := range topics {
		m := ha.wait(t, 0, tp, nil)
		e := parseHAComponent(t, "ha", tp, m.Payload)
		if !m.Retained || e.str("unique_id") != id+"_"+e.ObjectID {
			t.Errorf("%s: retained %v, unique id %q", tp, m.Retained, e.str("unique_id"))
		}
		devices = append(devices, e.Conf["device"])
	}
	for _, dv := range devices[1:] {
		if !jsonEqual(dv, devices[0]) {
			t.Errorf("device blocks differ: %v, %v", dv, devices[0])
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	if _, ok := b.retained("ha/device/" + id + "/config"); ok {
		t.Errorf("the device-based message was published too")
	}
	var seen []string
	for _, m := range ha.msgs.get() {
		if !slices.Contains(seen, m.Topic) {
			seen = append(seen, m.Topic)
		}
	}
	slices.Sort(seen)
	if !slices.Equal(seen, topics) {
		t.Errorf("discovery topics\n got %v\nwant %v", seen, topics)
	}

	mark := ha.mark()
	ha.publish(t, "ha/status", "online", false)
	for _, tp := range topics {
		ha.wait(t, mark, tp, nil)
	}

	// A new connection publishes them again.
	mark = ha.mark()
	lmark := logs.mark()
	k.killAll()
	logs.waitMsg(t, lmark, "connected to broker")
	for _, tp := range topics {
		ha.wait(t, mark, tp, nil)
	}
}

// Ready waits for the discovery message, which goes first in a connection's round: while the
// broker holds its acknowledgement, Ready stays open and the status is not yet published. So
// Home Assistant has the configuration before any network listener opens (all-in-one mode
// opens them on Ready).
func TestDiscoveryBeforeReady(t *testing.T) {
	const clientID, configTopic = "pimqtt-ready", "homeassistant/device/pimqtt-ready/config"
	gate := newAckGate(clientID, configTopic)
	close(gate.subGo)
	b := newMochiBroker(t)
	if err := b.s.AddHook(gate, nil); err != nil {
		t.Fatal(err)
	}
	// Released before the broker closes even when the test fails: Mochi's Close would wait
	// for the held connection for ever.
	release := sync.OnceFunc(func() { close(gate.pubGo) })
	t.Cleanup(release)
	log, _ := newLogger(t)
	d := newTestDeviceOpts(t, Options{
		Dial: b.dial, BrokerLabel: "in-process", Logger: log, ClientID: clientID,
		Outputs:   []Output{{Name: "led", CommandTopic: "raspberry/led", Line: &fakeLine{}}},
		Discovery: &Discovery{},
	})
	if err := d.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	waitClosed(t, gate.pubHeld, "the discovery message at the broker")
	if isClosed(d.Ready()) {
		t.Fatal("Ready closed while the discovery message was not acknowledged")
	}
	if st, ok := b.retained("raspberry/status"); ok {
		t.Fatalf("status %q published before the discovery message", st)
	}
	release()
	waitClosed(t, d.Ready(), "Ready")
	if _, ok := b.retained(configTopic); !ok {
		t.Fatal("no retained discovery message after Ready")
	}
}

// haMessage is an mqtt.Message for calling handlers directly.
type haMessage struct {
	topic, payload string
	retained       bool
}

func (m haMessage) Duplicate() bool   { return false }
func (m haMessage) Qos() byte         { return 1 }
func (m haMessage) Retained() bool    { return m.retained }
func (m haMessage) Topic() string     { return m.topic }
func (m haMessage) MessageID() uint16 { return 1 }
func (m haMessage) Payload() []byte   { return []byte(m.payload) }
func (m haMessage) Ack()              {}

var _ mqtt.Message = haMessage{}

// Only a live "online" schedules a republication, one at a time, and none once closing.
func TestOnHAStatus(t *testing.T) {
	log, _ := newLogger(t)
	var delays atomic.Int32
	d, err := New(Options{Dial: func(context.Context) (net.Conn, error) { return nil, errors.New("no broker") },
		ClientID: "pimqtt-x", Logger: log, Outputs: []Output{{Name: "led", CommandTopic: "raspberry/led", Line: &fakeLine{}}},
		Discovery: &Discovery{Delay: func() time.Duration { delays.Add(1); return time.Hour }}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		msg  haMessage
		want int32
	}{
		{haMessage{"homeassistant/status", "online", true}, 0}, // retained: on subscribing
		{haMessage{"homeassistant/status", "offline", false}, 0},
		{haMessage{"homeassistant/status", "Online", false}, 0},
		{haMessage{"homeassistant/status", "online", false}, 1},
		{haMessage{"homeassistant/status", "online", false}, 1}, // one is pending already
	} {
		d.onExtraMessage(nil, tc.msg)
		if got := delays.Load(); got != tc.want {
			t.Errorf("after %+v: %d republications scheduled, want %d", tc.msg, got, tc.want)
		}
	}
	d.disc.pending.Store(false)
	closeDevice(t, d)
	d.onExtraMessage(nil, haMessage{"homeassistant/status", "online", false})
	if got := delays.Load(); got != 1 {
		t.Errorf("a closed device scheduled a republication")
	}
}

// The default delay before answering "online" is random within [0, 5 s), as Home Assistant
// recommends.
func TestRandomDiscoveryDelay(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 200 {
		v := randomDiscoveryDelay()
		if v < 0 || v >= 5*time.Second {
			t.Fatalf("delay %v outside [0, 5s)", v)
		}
		seen[v] = true
	}
	if len(seen) < 100 {
		t.Errorf("only %d distinct delays in 200: not random", len(seen))
	}
}

// TopicFilter matches every discovery topic of both forms, and not Home Assistant's status.
func TestDiscoveryTopicFilter(t *testing.T) {
	for _, tc := range []struct {
		o      Discovery
		client string
		want   string
	}{
		{Discovery{}, "pimqtt-pi", "homeassistant/+/pimqtt-pi/#"},
		{Discovery{Prefix: "ha", ID: "garage"}, "pimqtt-pi", "ha/+/garage/#"},
		{Discovery{}, "pimqtt-pi.lan", "homeassistant/+/" + haObjectID("pimqtt-pi.lan") + "/#"},
	} {
		if got := tc.o.TopicFilter(tc.client); got != tc.want {
			t.Errorf("%+v.TopicFilter(%q) = %q, want %q", tc.o, tc.client, got, tc.want)
		}
	}
	// The topics New claims for both forms match the filter; the status topic does not.
	for _, per := range []bool{false, true} {
		o := Discovery{PerComponent: per}
		opts := Options{ClientID: "pimqtt-pi", StatusTopic: "raspberry/status",
			Outputs:   []Output{{Name: "led", CommandTopic: "raspberry/led", StateTopic: "raspberry/led/state"}},
			Telemetry: &Telemetry{Topic: "raspberry/telemetry"}, Discovery: &o}
		used := usedTopics(opts)
		if _, err := checkDiscovery(opts, used); err != nil {
			t.Fatal(err)
		}
		filter := o.TopicFilter("pimqtt-pi")
		for topic, what := range used {
			discoveryTopic := strings.Contains(what, "discovery topic")
			if match := topicMatches(filter, topic); match != discoveryTopic {
				t.Errorf("filter %s matches %s (%s): %v", filter, topic, what, match)
			}
		}
	}
}

// topicMatches is MQTT's matching of a topic against a filter with + and #.
func topicMatches(filter, topic string) bool {
	f, tp := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, level := range f {
		switch {
		case level == "#":
			return true
		case i >= len(tp):
			return false
		case level != "+" && level != tp[i]:
			return false
		}
	}
	return len(f) == len(tp)
}

// Discovery ids are the name when Home Assistant accepts it, else a stable, distinct form.
func TestHAObjectID(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"led", "led"},
		{"Relay-2_b", "Relay-2_b"},
		{"pimqtt-raspberrypi", "pimqtt-raspberrypi"},
		{"a.b", "a_b_"},
		{"a b", "a_b_"},
		{"Tür", "T_r_"},
		{"", "_"},
	} {
		got := haObjectID(tc.name)
		if !strings.HasPrefix(got, tc.want) || !haTopicID.MatchString(got) {
			t.Errorf("haObjectID(%q) = %q, want %q… of [a-zA-Z0-9_-]", tc.name, got, tc.want)
		}
		if again := haObjectID(tc.name); again != got {
			t.Errorf("haObjectID(%q) not stable: %q, %q", tc.name, got, again)
		}
	}
	if haObjectID("a.b") == haObjectID("a b") {
		t.Errorf("a.b and a b share the id %q", haObjectID("a b"))
	}
}

// New refuses discovery and telemetry settings Home Assistant or the broker could not use.
func TestExtrasValidation(t *testing.T) {
	read := func() any { return map[string]any{} }
	base := func() Options {
		return Options{Dial: func(context.Context) (net.Conn, error) { return nil, errors.New("unused") }, ClientID: "pimqtt-v",
			Outputs: []Output{{Name: "led", CommandTopic: "raspberry/led", Line: &fakeLine{}}},
			Inputs:  []Input{{Name: "door", StateTopic: "raspberry/door/state", Line: newFakeInput(0)}}}
	}
	for _, tc := range []struct {
		name string
		edit func(*Options)
		err  string // "" = accepted
	}{
		{"telemetry", func(o *Options) { o.Telemetry = &Telemetry{Topic: "raspberry/telemetry", Read: read} }, ""},
		{"telemetry without Read", func(o *Options) { o.Telemetry = &Telemetry{Topic: "raspberry/telemetry"} }, "Read is required"},
		{"telemetry without topic", func(o *Options) { o.Telemetry = &Telemetry{Read: read} }, "Telemetry.Topic"},
		{"telemetry on a state topic", func(o *Options) { o.Telemetry = &Telemetry{Topic: "raspberry/led/state", Read: read} }, "collides with the state topic of output led"},
		{"telemetry wildcard", func(o *Options) { o.Telemetry = &Telemetry{Topic: "raspberry/#", Read: read} }, "wildcard"},
		{"telemetry negative", func(o *Options) {
			o.Telemetry = &Telemetry{Topic: "raspberry/telemetry", Read: read, Interval: -time.Second}
		}, "negative"},
		{"discovery", func(o *Options) { o.Discovery = &Discovery{ConfigurationURL: "https://pi.local:8443/"} }, ""},
		{"discovery per component", func(o *Options) { o.Discovery = &Discovery{PerComponent: true, Prefix: "ha/x"} }, ""},
		{"configuration URL relative", func(o *Options) { o.Discovery = &Discovery{ConfigurationURL: "/page"} }, "ConfigurationURL"},
		{"configuration URL scheme", func(o *Options) { o.Discovery = &Discovery{ConfigurationURL: "ftp://pi/"} }, "ConfigurationURL"},
		{"bad id", func(o *Options) { o.Discovery = &Discovery{ID: "pi 4"} }, "Discovery.ID"},
		{"prefix with slash", func(o *Options) { o.Discovery = &Discovery{Prefix: "homeassistant/"} }, "ends in /"},
		{"prefix wildcard", func(o *Options) { o.Discovery = &Discovery{Prefix: "home+"} }, "wildcard"},
		{"status topic is Home Assistant's", func(o *Options) {
			o.StatusTopic = "homeassistant/status"
			o.Discovery = &Discovery{}
		}, "collides with Options.StatusTopic"},
		{"line named like a telemetry value", func(o *Options) {
			o.Inputs[0].Name = "clients"
			o.Telemetry = &Telemetry{Topic: "raspberry/telemetry", Read: read}
			o.Discovery = &Discovery{}
		}, `would both be "clients"`},
		{"line named like a telemetry value, no telemetry", func(o *Options) {
			o.Inputs[0].Name = "clients"
			o.Discovery = &Discovery{}
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base()
			tc.edit(&o)
			_, err := New(o)
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("error %v, want one containing %q", err, tc.err)
			}
		})
	}
}
