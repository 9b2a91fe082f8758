package device

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// This file is a test client that behaves like Home Assistant's MQTT integration where
// discovery is concerned: it subscribes to the discovery topics as Home Assistant does, expands
// the abbreviated keys, validates each message with Home Assistant's rules for the keys pimqtt
// uses, and then subscribes to the state and availability topics the configuration names.

// haAbbreviations are Home Assistant's abbreviations for the keys of a discovery message and of
// its components (from homeassistant/components/mqtt/abbreviations.py), for the keys pimqtt
// uses and a few neighbours. A key that is neither an abbreviation nor a full name below makes
// the validation fail: Home Assistant would drop it (a typo) or refuse the message.
var haAbbreviations = map[string]string{
	"avty":         "availability",
	"avty_mode":    "availability_mode",
	"avty_t":       "availability_topic",
	"avty_tpl":     "availability_template",
	"cmd_t":        "command_topic",
	"cmps":         "components",
	"dev":          "device",
	"dev_cla":      "device_class",
	"e":            "encoding",
	"en":           "enabled_by_default",
	"ent_cat":      "entity_category",
	"exp_aft":      "expire_after",
	"frc_upd":      "force_update",
	"ic":           "icon",
	"name":         "name",
	"o":            "origin",
	"off_dly":      "off_delay",
	"opt":          "optimistic",
	"p":            "platform",
	"pl_avail":     "payload_available",
	"pl_not_avail": "payload_not_available",
	"pl_off":       "payload_off",
	"pl_on":        "payload_on",
	"qos":          "qos",
	"ret":          "retain",
	"stat_cla":     "state_class",
	"stat_off":     "state_off",
	"stat_on":      "state_on",
	"stat_t":       "state_topic",
	"sug_dsp_prc":  "suggested_display_precision",
	"uniq_id":      "unique_id",
	"unit_of_meas": "unit_of_measurement",
	"val_tpl":      "value_template",
}

// haDeviceAbbreviations and haOriginAbbreviations are those of the dev and o blocks.
var (
	haDeviceAbbreviations = map[string]string{
		"cns": "connections", "cu": "configuration_url", "ids": "identifiers", "name": "name",
		"mf": "manufacturer", "mdl": "model", "mdl_id": "model_id", "hw": "hw_version",
		"sw": "sw_version", "sa": "suggested_area", "sn": "serial_number",
	}
	haOriginAbbreviations = map[string]string{"name": "name", "sw": "sw_version", "url": "support_url"}
)

// expandKeys renames m's abbreviated keys as Home Assistant does, and reports keys that are
// neither an abbreviation nor a full name of abbr.
func expandKeys(m map[string]any, abbr map[string]string) (map[string]any, []string) {
	full := map[string]bool{}
	for _, f := range abbr {
		full[f] = true
	}
	out := map[string]any{}
	var unknown []string
	for k, v := range m {
		switch {
		case abbr[k] != "":
			out[abbr[k]] = v
		case full[k]:
			out[k] = v
		default:
			unknown = append(unknown, k)
		}
	}
	slices.Sort(unknown)
	return out, unknown
}

// haEntityConf is one entity's expanded configuration, as Home Assistant sets it up.
type haEntityConf struct {
	Platform, ObjectID string
	Conf               map[string]any
}

func (e haEntityConf) str(key string) string {
	s, _ := e.Conf[key].(string)
	return s
}

// The top-level keys Home Assistant's DEVICE_DISCOVERY_SCHEMA accepts: it refuses a device
// message with any other.
var haDeviceLevelKeys = []string{"device", "origin", "components", "availability", "availability_mode",
	"availability_template", "availability_topic", "payload_available", "payload_not_available",
	"state_topic", "command_topic", "qos", "encoding", "message_expiry_interval"}

// haSharedKeys are the device-level options a component inherits unless it sets them itself.
var haSharedKeys = []string{"availability", "availability_mode", "availability_template", "availability_topic",
	"command_topic", "encoding", "message_expiry_interval", "payload_available", "payload_not_available",
	"state_topic", "qos"}

// haPlatformKeys are the keys each platform pimqtt uses understands (Home Assistant drops the
// others silently, so one here is a mistake on pimqtt's side), and haRequired those it needs.
var (
	haCommonKeys   = []string{"platform", "name", "unique_id", "qos", "availability_topic", "payload_available", "payload_not_available", "device", "origin", "entity_category", "icon", "enabled_by_default", "value_template"}
	haPlatformKeys = map[string][]string{
		"switch":        {"command_topic", "state_topic", "payload_on", "payload_off", "state_on", "state_off", "retain", "optimistic", "device_class"},
		"binary_sensor": {"state_topic", "payload_on", "payload_off", "device_class", "expire_after", "off_delay", "force_update"},
		"sensor":        {"state_topic", "unit_of_measurement", "device_class", "state_class", "suggested_display_precision", "expire_after", "force_update"},
	}
	haRequired = map[string][]string{
		"switch":        {"unique_id", "command_topic"},
		"binary_sensor": {"unique_id", "state_topic"},
		"sensor":        {"unique_id", "state_topic"},
	}
	// haUnits are the units Home Assistant accepts with the sensor device classes pimqtt uses;
	// any other makes it refuse the sensor.
	haUnits = map[string][]string{
		"temperature": {"°C", "°F", "K"},
		"duration":    {"d", "h", "min", "s", "ms", "µs"},
		"data_size": {"bit", "kbit", "Mbit", "Gbit", "B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB",
			"KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"},
	}
	haStateClasses = map[string][]string{
		"temperature": {"measurement"},
		"duration":    {"measurement", "total", "total_increasing"},
		"data_size":   {"measurement", "total", "total_increasing"},
		"":            {"measurement", "total", "total_increasing"},
	}
	haValueTemplate = regexp.MustCompile(`^\{\{ value_json\.get\('([a-z0-9_]+)'\) \}\}$`)
	haTopicID       = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)
)

// parseHADevice reads a device-based message (HA 2024.11+) as Home Assistant does: expands
// it, validates the device level, and returns each component with the shared options merged in.
func parseHADevice(t *testing.T, payload string) (device, origin map[string]any, ents []haEntityConf) {
	t.Helper()
	var raw map[string]any
	if err := json.Unmarshal([]byte(payload), &raw); err != nil {
		t.Fatalf("discovery payload is not a JSON object: %v\n%s", err, payload)
	}
	top, unknown := expandKeys(raw, haAbbreviations)
	if len(unknown) > 0 {
		t.Errorf("unknown keys at the device level: %v", unknown)
	}
	for k := range top {
		if !slices.Contains(haDeviceLevelKeys, k) {
			t.Errorf("Home Assistant refuses a device discovery message with the key %q at its top level", k)
		}
	}
	device, origin = checkHABlocks(t, top, true)
	cmps, ok := top["components"].(map[string]any)
	if !ok || len(cmps) == 0 {
		t.Fatalf("no components (cmps) in %s", payload)
	}
	for id, c := range cmps {
		cm, ok := c.(map[string]any)
		if !ok {
			t.Fatalf("component %s is not an object", id)
		}
		conf, unknown := expandKeys(cm, haAbbreviations)
		if len(unknown) > 0 {
			t.Errorf("component %s: unknown keys %v", id, unknown)
		}
		if !haTopicID.MatchString(id) {
			t.Errorf("component id %q: Home Assistant allows only [a-zA-Z0-9_-]", id)
		}
		for _, k := range haSharedKeys {
			if _, set := conf[k]; !set && top[k] != nil {
				conf[k] = top[k]
			}
		}
		platform, _ := conf["platform"].(string)
		ents = append(ents, haEntityConf{Platform: platform, ObjectID: id, Conf: conf})
	}
	checkHAEntities(t, ents)
	return device, origin, ents
}

// parseHAComponent reads one per-component message (HA before 2024.11) from its topic
// PREFIX/COMPONENT/NODE/OBJECT/config.
func parseHAComponent(t *testing.T, prefix, topic, payload string) haEntityConf {
	t.Helper()
	parts := strings.Split(strings.TrimPrefix(topic, prefix+"/"), "/")
	if len(parts) != 4 || parts[3] != "config" || !haTopicID.MatchString(parts[1]) || !haTopicID.MatchString(parts[2]) {
		t.Fatalf("discovery topic %q is not %s/COMPONENT/NODE_ID/OBJECT_ID/config with ids of [a-zA-Z0-9_-]", topic, prefix)
	}
	var raw map[string]any
	if err := json.Unmarshal([]byte(payload), &raw); err != nil {
		t.Fatalf("discovery payload is not a JSON object: %v\n%s", err, payload)
	}
	conf, unknown := expandKeys(raw, haAbbreviations)
	if len(unknown) > 0 {
		t.Errorf("%s: unknown keys %v", topic, unknown)
	}
	if _, set := conf["platform"]; set {
		t.Errorf("%s: platform belongs in the topic in the per-component form", topic)
	}
	checkHABlocks(t, conf, false)
	conf["platform"] = parts[0]
	e := haEntityConf{Platform: parts[0], ObjectID: parts[2], Conf: conf}
	checkHAEntities(t, []haEntityConf{e})
	return e
}

// checkHABlocks expands and checks the device and origin blocks of conf in place; the
// device-based form requires both.
func checkHABlocks(t *testing.T, conf map[string]any, required bool) (device, origin map[string]any) {
	t.Helper()
	if d, ok := conf["device"].(map[string]any); ok {
		var unknown []string
		device, unknown = expandKeys(d, haDeviceAbbreviations)
		if len(unknown) > 0 {
			t.Errorf("device block: unknown keys %v", unknown)
		}
		ids, _ := device["identifiers"].([]any)
		if len(ids) == 0 {
			t.Errorf("device block without identifiers: %v", d)
		}
		if cu, ok := device["configuration_url"].(string); ok {
			if u, err := url.Parse(cu); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
				t.Errorf("configuration_url %q is not an http(s) URL", cu)
			}
		}
		conf["device"] = device
	} else if required {
		t.Errorf("no device block (dev)")
	}
	if o, ok := conf["origin"].(map[string]any); ok {
		var unknown []string
		origin, unknown = expandKeys(o, haOriginAbbreviations)
		if len(unknown) > 0 {
			t.Errorf("origin block: unknown keys %v", unknown)
		}
		if name, _ := origin["name"].(string); name == "" {
			t.Errorf("origin block without a name: %v", o)
		}
		conf["origin"] = origin
	} else if required {
		t.Errorf("no origin block (o)")
	}
	return device, origin
}

// checkHAEntities applies Home Assistant's rules for each platform.
func checkHAEntities(t *testing.T, ents []haEntityConf) {
	t.Helper()
	seen := map[string]string{}
	for _, e := range ents {
		what := e.Platform + " " + e.ObjectID
		allowed, ok := haPlatformKeys[e.Platform]
		if !ok {
			t.Errorf("%s: platform %q is not one pimqtt should use", what, e.Platform)
			continue
		}
		for k := range e.Conf {
			if !slices.Contains(allowed, k) && !slices.Contains(haCommonKeys, k) {
				t.Errorf("%s: %s is no option of %s", what, k, e.Platform)
			}
		}
		for _, k := range haRequired[e.Platform] {
			if e.str(k) == "" {
				t.Errorf("%s: %s is required", what, k)
			}
		}
		if uid := e.str("unique_id"); seen[uid] != "" {
			t.Errorf("%s and %s share the unique id %q", seen[uid], what, uid)
		} else {
			seen[uid] = what
		}
		if e.str("availability_topic") == "" {
			t.Errorf("%s: no availability", what)
		}
		if e.Platform != "sensor" {
			continue
		}
		class, unit := e.str("device_class"), e.str("unit_of_measurement")
		if units, ok := haUnits[class]; ok && !slices.Contains(units, unit) {
			t.Errorf("%s: unit %q is not valid with device class %s", what, unit, class)
		}
		if sc := e.str("state_class"); sc != "" && !slices.Contains(haStateClasses[class], sc) {
			t.Errorf("%s: state class %s is not valid with device class %q", what, sc, class)
		}
		if exp, ok := e.Conf["expire_after"].(float64); !ok || exp <= 0 || exp != float64(int(exp)) {
			t.Errorf("%s: expire_after %v, want a positive whole number of seconds", what, e.Conf["expire_after"])
		}
		if cat := e.str("entity_category"); cat != "" && cat != "diagnostic" {
			t.Errorf("%s: entity_category %q (a sensor may only be diagnostic)", what, cat)
		}
		if !haValueTemplate.MatchString(e.str("value_template")) {
			t.Errorf("%s: value_template %q, want {{ value_json.get('KEY') }}", what, e.str("value_template"))
		}
	}
}

// haClient is the test's Home Assistant: an MQTT client that records every message it gets.
type haClient struct {
	c    mqtt.Client
	msgs watched[[]haMsg]
}

type haMsg struct {
	Topic, Payload string
	Retained       bool
}

// newHAClient connects a paho client through dial and subscribes to the discovery topics as
// Home Assistant does.
func newHAClient(t *testing.T, dial DialFunc, prefix string) *haClient {
	t.Helper()
	h := &haClient{c: newPahoClient(t, dial, "ha-"+strings.ReplaceAll(t.Name(), "/", "-"))}
	h.subscribe(t, prefix+"/+/+/config", prefix+"/+/+/+/config")
	return h
}

// newMochiBrokerTCP is newMochiBroker with a TCP listener on 127.0.0.1 besides, and a
// DialFunc to it. Test clients that receive bursts of QoS 1 messages (Home Assistant reading
// retained configurations) connect over TCP, as they would for real: over net.Pipe, Mochi 2.7.9
// can deadlock delivering several retained QoS 1 messages on SUBSCRIBE (its reader goroutine
// waits in NextPacketID for the client lock, which its writer holds while blocked writing to
// the pipe, which the client does not read while its own PUBACK waits to be written).
func newMochiBrokerTCP(t *testing.T) (*mochiBroker, DialFunc) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	b := newMochiBroker(t, listeners.NewNet("tcp", ln))
	dial, err := NetDialer("tcp://"+ln.Addr().String(), waitTimeout)
	if err != nil {
		t.Fatalf("NetDialer: %v", err)
	}
	return b, dial
}

// newPahoClient connects a paho client through dial and disconnects it at cleanup.
func newPahoClient(t *testing.T, dial DialFunc, id string) mqtt.Client {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker(fmt.Sprintf(placeholderBroker, 0)).SetClientID(id).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(waitTimeout).
		SetCustomOpenConnectionFn(func(*url.URL, mqtt.ClientOptions) (net.Conn, error) {
			return dial(context.Background())
		})
	c := mqtt.NewClient(o)
	if err := waitTokenT(c.Connect()); err != nil {
		t.Fatalf("%s: connect: %v", id, err)
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

func waitTokenT(tok mqtt.Token) error {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	return waitToken(ctx, tok)
}

func (h *haClient) subscribe(t *testing.T, topics ...string) {
	t.Helper()
	filters := map[string]byte{}
	for _, tp := range topics {
		filters[tp] = 1
	}
	err := waitTokenT(h.c.SubscribeMultiple(filters, func(_ mqtt.Client, m mqtt.Message) {
		h.msgs.update(func(ms *[]haMsg) {
			*ms = append(*ms, haMsg{m.Topic(), string(m.Payload()), m.Retained()})
		})
	}))
	if err != nil {
		t.Fatalf("subscribe %v: %v", topics, err)
	}
}

func (h *haClient) publish(t *testing.T, topic, payload string, retain bool) {
	t.Helper()
	if err := waitTokenT(h.c.Publish(topic, 1, retain, payload)); err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
}

func (h *haClient) mark() int { return len(h.msgs.get()) }

// wait returns the first message after since on topic for which ok holds.
func (h *haClient) wait(t *testing.T, since int, topic string, ok func(haMsg) bool) haMsg {
	t.Helper()
	var found haMsg
	h.msgs.waitFor(t, waitTimeout, "a message on "+topic, func(ms []haMsg) bool {
		for _, m := range ms[min(since, len(ms)):] {
			if m.Topic == topic && (ok == nil || ok(m)) {
				found = m
				return true
			}
		}
		return false
	})
	return found
}

// waitPayload waits for payload on topic after since.
func (h *haClient) waitPayload(t *testing.T, since int, topic, payload string) haMsg {
	t.Helper()
	return h.wait(t, since, topic, func(m haMsg) bool { return m.Payload == payload })
}

// latest is the last payload seen on topic.
func (h *haClient) latest(topic string) (string, bool) {
	ms := h.msgs.get()
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].Topic == topic {
			return ms[i].Payload, true
		}
	}
	return "", false
}

// setUp does what Home Assistant does after reading the configuration: subscribe to every
// entity's state and availability topics.
func (h *haClient) setUp(t *testing.T, ents []haEntityConf) {
	t.Helper()
	var topics []string
	for _, e := range ents {
		for _, k := range []string{"state_topic", "availability_topic"} {
			if tp := e.str(k); tp != "" && !slices.Contains(topics, tp) {
				topics = append(topics, tp)
			}
		}
	}
	h.subscribe(t, topics...)
}

func entityByID(t *testing.T, ents []haEntityConf, objectID string) haEntityConf {
	t.Helper()
	for _, e := range ents {
		if e.ObjectID == objectID {
			return e
		}
	}
	var ids []string
	for _, e := range ents {
		ids = append(ids, e.Platform+":"+e.ObjectID)
	}
	t.Fatalf("no entity %q among %v", objectID, ids)
	return haEntityConf{}
}

func (e haEntityConf) String() string { return fmt.Sprintf("%s %s %v", e.Platform, e.ObjectID, e.Conf) }
