package device

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Discovery configures Home Assistant MQTT discovery: retained configuration messages from
// which Home Assistant sets up the device on its own, with a switch per output, a binary
// sensor per input and, when Options.Telemetry is set, a diagnostic sensor per telemetry
// value. Availability follows the status topic, so every entity shows "unavailable" when the
// device says {"status": "Off"} or its will does.
//
// The configuration is published before Ready closes, again on every (re)connection, and again
// when Home Assistant announces that it (re)started by publishing "online" on
// Prefix+"/status" (after Delay, so that a restart of Home Assistant is not answered by every
// device at the same moment).
//
// Unique ids are ID+"_"+the line's name (or telemetry key), so Home Assistant keeps entities,
// their history and a user's changes across restarts as long as ID and the names stay.
type Discovery struct {
	// Prefix is Home Assistant's discovery prefix, default "homeassistant" (Home Assistant's
	// own default).
	Prefix string
	// ID names the device in the discovery topics and begins every unique id. Only ASCII
	// letters, digits, "_" and "-". Default: the client id, with every other character
	// replaced by "_" and a short hash of the client id added when that happened.
	ID string
	// Name is the device's name in Home Assistant, default the client id.
	Name string
	// Version is the software version shown for the device and the origin (sw_version);
	// empty leaves it out.
	Version string
	// ConfigurationURL, when set, is the device's link in Home Assistant ("Visit"), e.g. the
	// control page "http://192.168.1.20:8080/". It must be an absolute http or https URL:
	// Home Assistant drops a whole discovery message with an invalid one.
	ConfigurationURL string
	// PerComponent publishes the configuration the way Home Assistant before 2024.11 reads it:
	// one retained message per entity on Prefix/COMPONENT/ID/OBJECT/config (COMPONENT is
	// switch, binary_sensor or sensor; OBJECT the line's name or telemetry key), each with the
	// device and origin blocks. Off, one retained message on Prefix/device/ID/config holds
	// them all (Home Assistant 2024.11 and newer). Switching between the two leaves the other
	// form's retained messages behind: clear them (publish an empty retained message on each)
	// or Home Assistant reports duplicate unique ids.
	PerComponent bool
	// Delay returns how long to wait after Home Assistant's "online" before publishing again;
	// default a random duration in [0, 5 s), as Home Assistant recommends. Tests return 0.
	Delay func() time.Duration
}

// DefaultDiscoveryPrefix is Home Assistant's default discovery prefix.
const DefaultDiscoveryPrefix = "homeassistant"

const (
	// haOnline is what Home Assistant publishes on PREFIX/status when it starts (its birth
	// message).
	haOnline = "online"
	// maxDiscoveryDelay bounds the default random delay before answering haOnline.
	maxDiscoveryDelay = 5 * time.Second
	// originURL is the origin block's support URL.
	originURL = "https://github.com/pimqtt/pimqtt"
)

// discovery is Options.Discovery at work.
type discovery struct {
	prefix, id, name, version, configURL string
	perComponent                         bool
	delay                                func() time.Duration
	statusTopic                          string // Home Assistant's, PREFIX/status

	pending atomic.Bool   // a republication after "online" is scheduled
	pubs    []publication // the configuration messages; set in Start, read-only after
}

// haSensor is a telemetry value as Home Assistant shows it.
type haSensor struct {
	key, name, unit, deviceClass, stateClass, icon string
	precision                                      int // suggested display precision; -1: none
}

// telemetrySensors are the telemetry values Home Assistant gets a sensor for, by JSON key (the
// keys of telemetry.Snapshot, and the device's own "clients"), in the order shown.
var telemetrySensors = []haSensor{
	{"cpu_temp_c", "CPU temperature", "°C", "temperature", "measurement", "", 1},
	{"uptime_s", "Uptime", "s", "duration", "", "", -1},
	{"load_1m", "Load (1 min)", "", "", "measurement", "mdi:gauge", 2},
	{"load_5m", "Load (5 min)", "", "", "measurement", "mdi:gauge", 2},
	{"load_15m", "Load (15 min)", "", "", "measurement", "mdi:gauge", 2},
	{"mem_used_percent", "Memory used", "%", "", "measurement", "mdi:memory", 1},
	{"mem_available_bytes", "Memory available", "B", "data_size", "measurement", "", -1},
	{"disk_free_bytes", "Disk free", "B", "data_size", "measurement", "", -1},
	{"clients", "MQTT clients", "", "", "measurement", "mdi:account-multiple", 0},
}

// checkDiscovery validates o (nil: off) and fills in its defaults; used gets the topics
// discovery publishes and subscribes to.
func checkDiscovery(opts Options, used map[string]string) (*discovery, error) {
	o := opts.Discovery
	if o == nil {
		return nil, nil
	}
	ds := &discovery{prefix: o.Prefix, id: o.ID, name: o.Name, version: o.Version,
		configURL: o.ConfigurationURL, perComponent: o.PerComponent, delay: o.Delay}
	if ds.prefix == "" {
		ds.prefix = DefaultDiscoveryPrefix
	}
	if strings.HasSuffix(ds.prefix, "/") {
		return nil, fmt.Errorf("device: Options.Discovery.Prefix %q ends in /: give it without (Home Assistant's default is %q)", ds.prefix, DefaultDiscoveryPrefix)
	}
	switch {
	case ds.id == "":
		ds.id = haObjectID(opts.ClientID)
	case !isHAID(ds.id):
		return nil, fmt.Errorf("device: Options.Discovery.ID %q: only ASCII letters, digits, _ and - are allowed (Home Assistant refuses others in discovery topics)", ds.id)
	}
	if ds.name == "" {
		ds.name = opts.ClientID
	}
	if ds.configURL != "" {
		u, err := url.Parse(ds.configURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("device: Options.Discovery.ConfigurationURL %q: want an absolute http:// or https:// URL (Home Assistant ignores the whole discovery message otherwise)", ds.configURL)
		}
	}
	if ds.delay == nil {
		ds.delay = randomDiscoveryDelay
	}
	ds.statusTopic = ds.prefix + "/status"
	if err := claimTopic(used, ds.statusTopic, "Home Assistant's status topic (Options.Discovery.Prefix+\"/status\")"); err != nil {
		return nil, err
	}

	// Component ids must differ: two lines whose names differ only in characters Home
	// Assistant refuses get different hashes, but a line could be called like a telemetry key.
	if !ds.perComponent {
		if err := claimTopic(used, ds.deviceTopic(), "the Home Assistant discovery topic"); err != nil {
			return nil, err
		}
	}
	ids := map[string]string{}
	claimID := func(objectID, platform, what string) error {
		if prev, ok := ids[objectID]; ok {
			return fmt.Errorf("device: Home Assistant discovery: %s and %s would both be %q; rename the line", prev, what, objectID)
		}
		ids[objectID] = what
		if !ds.perComponent {
			return nil
		}
		return claimTopic(used, ds.configTopic(platform, objectID), "the Home Assistant discovery topic of "+what)
	}
	for _, o := range opts.Outputs {
		if err := claimID(haObjectID(o.Name), "switch", "output "+o.Name); err != nil {
			return nil, err
		}
	}
	for _, in := range opts.Inputs {
		if err := claimID(haObjectID(in.Name), "binary_sensor", "input "+in.Name); err != nil {
			return nil, err
		}
	}
	if opts.Telemetry != nil {
		for _, s := range telemetrySensors {
			if err := claimID(s.key, "sensor", "telemetry value "+s.key); err != nil {
				return nil, err
			}
		}
	}
	return ds, nil
}

// TopicFilter is a topic filter matching every discovery message a device with o and client id
// clientID publishes, in either form: PREFIX/+/ID/#. A broker that reserves the device's topics
// for the device (so that no other client can forge its configuration) reserves this one too.
// Home Assistant's own PREFIX/status does not match it.
func (o *Discovery) TopicFilter(clientID string) string {
	prefix, id := o.Prefix, o.ID
	if prefix == "" {
		prefix = DefaultDiscoveryPrefix
	}
	if id == "" {
		id = haObjectID(clientID)
	}
	return prefix + "/+/" + id + "/#"
}

// randomDiscoveryDelay is Discovery.Delay's default.
func randomDiscoveryDelay() time.Duration {
	return rand.N(maxDiscoveryDelay)
}

// isHAID reports whether s may stand in a discovery topic as a node or object id.
func isHAID(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isHAIDByte(s[i]) {
			return false
		}
	}
	return true
}

func isHAIDByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// haObjectID is name as a discovery id: itself when Home Assistant accepts it, else with every
// other character replaced by "_" and a hash of name added, so that "a.b" and "a b" stay
// apart. It is a pure function of name: unique ids survive restarts.
func haObjectID(name string) string {
	if isHAID(name) {
		return name
	}
	var b strings.Builder
	for _, r := range name {
		if r < 0x80 && isHAIDByte(byte(r)) {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(name))
	return fmt.Sprintf("%s_%08x", b.String(), h.Sum32())
}

// deviceTopic is the device-based form's topic.
func (ds *discovery) deviceTopic() string {
	return ds.prefix + "/device/" + ds.id + "/config"
}

// configTopic is the per-component form's topic of one entity.
func (ds *discovery) configTopic(platform, objectID string) string {
	return ds.prefix + "/" + platform + "/" + ds.id + "/" + objectID + "/config"
}

// The discovery messages, with Home Assistant's abbreviated keys
// (https://www.home-assistant.io/integrations/mqtt/#supported-abbreviations-in-mqtt-discovery-messages).
type (
	haDevice struct {
		IDs  []string `json:"ids"`
		Name string   `json:"name"`
		Mdl  string   `json:"mdl"`
		SW   string   `json:"sw,omitempty"`
		CU   string   `json:"cu,omitempty"`
	}
	haOrigin struct {
		Name string `json:"name"`
		SW   string `json:"sw,omitempty"`
		URL  string `json:"url"`
	}
	haAvailability struct {
		Topic        string `json:"avty_t"`
		Available    string `json:"pl_avail"`
		NotAvailable string `json:"pl_not_avail"`
	}
	// haEntity is one component of the device-based message, or, with the availability,
	// device and origin blocks, one per-component message.
	haEntity struct {
		Platform       string `json:"p,omitempty"` // device-based form only
		Name           string `json:"name"`
		UniqueID       string `json:"uniq_id"`
		CommandTopic   string `json:"cmd_t,omitempty"`
		StateTopic     string `json:"stat_t"`
		PayloadOn      string `json:"pl_on,omitempty"`
		PayloadOff     string `json:"pl_off,omitempty"`
		StateOn        string `json:"stat_on,omitempty"`
		StateOff       string `json:"stat_off,omitempty"`
		ValueTemplate  string `json:"val_tpl,omitempty"`
		Unit           string `json:"unit_of_meas,omitempty"`
		DeviceClass    string `json:"dev_cla,omitempty"`
		StateClass     string `json:"stat_cla,omitempty"`
		Precision      *int   `json:"sug_dsp_prc,omitempty"`
		ExpireAfter    int    `json:"exp_aft,omitempty"`
		EntityCategory string `json:"ent_cat,omitempty"`
		Icon           string `json:"ic,omitempty"`
		QoS            int    `json:"qos"`

		*haAvailability           // per-component form only
		Device          *haDevice `json:"dev,omitempty"`
		Origin          *haOrigin `json:"o,omitempty"`
	}
	haDeviceConfig struct {
		Device haDevice `json:"dev"`
		Origin haOrigin `json:"o"`
		haAvailability
		Components map[string]haEntity `json:"cmps"`
	}
)

// entity is a component with the topic of its per-component message.
type entity struct {
	objectID string
	haEntity
}

// entities lists the components: a switch per output, a binary sensor per input, a sensor per
// telemetry value in present (the keys of a first reading; "clients" always).
func (d *Device) entities(present map[string]bool) []entity {
	ds := d.disc
	var es []entity
	add := func(objectID string, e haEntity) {
		e.UniqueID = ds.id + "_" + objectID
		// Commands and states travel at QoS 1 like the device's own.
		e.QoS = 1
		es = append(es, entity{objectID, e})
	}
	// The payloads are those the device publishes ("1"/"0") and accepts first.
	for _, o := range d.outputs {
		add(haObjectID(o.name), haEntity{Platform: "switch", Name: o.name,
			CommandTopic: o.commandTopic, StateTopic: o.stateTopic,
			PayloadOn: "1", PayloadOff: "0", StateOn: "1", StateOff: "0"})
	}
	for _, in := range d.inputs {
		add(haObjectID(in.name), haEntity{Platform: "binary_sensor", Name: in.name,
			StateTopic: in.stateTopic, PayloadOn: "1", PayloadOff: "0"})
	}
	if d.tele == nil {
		return es
	}
	// A report older than three intervals means the device stopped reporting: Home Assistant
	// then shows the value as unavailable instead of a stale one.
	expire := int((3*d.tele.interval + time.Second - 1) / time.Second)
	for _, s := range telemetrySensors {
		if s.key != "clients" && !present[s.key] {
			continue
		}
		e := haEntity{Platform: "sensor", Name: s.name, StateTopic: d.tele.topic,
			// .get gives None for a key a report lacks, which Home Assistant shows as
			// unknown rather than logging a template error.
			ValueTemplate: "{{ value_json.get('" + s.key + "') }}",
			Unit:          s.unit, DeviceClass: s.deviceClass, StateClass: s.stateClass,
			ExpireAfter: expire, EntityCategory: "diagnostic", Icon: s.icon}
		if s.precision >= 0 {
			p := s.precision
			e.Precision = &p
		}
		add(s.key, e)
	}
	return es
}

// buildDiscovery prepares the configuration messages. It uses the telemetry loop's first
// reading, from first, to learn which values this machine has (a sensor Home Assistant could
// never fill would only clutter the device page), waiting for it at most firstReadTimeout.
func (d *Device) buildDiscovery(first <-chan []byte) {
	ds := d.disc
	present := map[string]bool{}
	if first != nil {
		t := time.NewTimer(firstReadTimeout)
		defer t.Stop()
		select {
		case doc := <-first:
			var m map[string]json.RawMessage
			if json.Unmarshal(doc, &m) != nil {
				d.log.Warn("no telemetry reading; Home Assistant gets no telemetry sensors but the client count")
			}
			for k := range m {
				present[k] = true
			}
		case <-t.C:
			d.log.Warn("telemetry reading still not done; Home Assistant gets no telemetry sensors but the client count",
				"waited", firstReadTimeout)
		}
	}
	dev := haDevice{IDs: []string{ds.id}, Name: ds.name, Mdl: "pimqtt", SW: ds.version, CU: ds.configURL}
	origin := haOrigin{Name: "pimqtt", SW: ds.version, URL: originURL}
	avail := haAvailability{Topic: d.statusTopic, Available: statusOn, NotAvailable: statusOff}
	es := d.entities(present)
	pub := func(topic string, v any) {
		b, err := json.Marshal(v)
		if err != nil {
			panic(fmt.Sprintf("device: encode discovery: %v", err)) // plain structs: cannot happen
		}
		ds.pubs = append(ds.pubs, publication{topic: topic, payload: string(b), what: "discovery"})
	}
	if ds.perComponent {
		for _, e := range es {
			msg := e.haEntity
			msg.Platform = ""
			msg.haAvailability, msg.Device, msg.Origin = &avail, &dev, &origin
			pub(ds.configTopic(e.Platform, e.objectID), msg)
		}
	} else {
		cfg := haDeviceConfig{Device: dev, Origin: origin, haAvailability: avail, Components: map[string]haEntity{}}
		for _, e := range es {
			cfg.Components[e.objectID] = e.haEntity
		}
		pub(ds.deviceTopic(), cfg)
	}
	d.log.Info("Home Assistant discovery on", "prefix", ds.prefix, "id", ds.id,
		"entities", len(es), "per_component", ds.perComponent)
}

// onHAStatus answers Home Assistant's birth message with the configuration, after the delay.
// Retained births are ignored: they arrive on subscribing, and every connection publishes the
// configuration anyway. It must not block: it runs in paho's message handler.
func (d *Device) onHAStatus(m mqtt.Message) {
	if m.Retained() || string(m.Payload()) != haOnline || d.ctx.Err() != nil {
		return
	}
	if !d.disc.pending.CompareAndSwap(false, true) {
		return // one answer is already on its way
	}
	wait := d.disc.delay()
	d.log.Info("Home Assistant is online; publishing discovery again", "after", wait)
	time.AfterFunc(wait, func() {
		d.disc.pending.Store(false)
		if d.ctx.Err() != nil {
			return
		}
		d.flagsMu.Lock()
		d.discover = true
		d.flagsMu.Unlock()
		d.requestPublish()
	})
}

// onConnectExtras subscribes, on every connection, to what telemetry and discovery listen to
// (the broker's client count, Home Assistant's status), in a SUBSCRIBE of their own after the
// command topics', so that neither a refusal nor the wait delays Ready. Then it asks for a
// telemetry report.
func (d *Device) onConnectExtras(c mqtt.Client) {
	// QoS 0 for both: brokers publish $SYS at QoS 0 and Home Assistant its birth message too,
	// and a QoS 0 delivery needs no packet id. Over the in-memory pipe of all-in-one mode,
	// Mochi 2.7.9 can deadlock delivering QoS 1 retained messages on SUBSCRIBE (its reader
	// waits for the client lock its writer holds while blocked on the pipe); nothing here
	// should add to that.
	filters := map[string]byte{}
	if d.tele != nil {
		filters[ClientsTopic] = 0
	}
	if d.disc != nil {
		filters[d.disc.statusTopic] = 0
	}
	if len(filters) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(d.ctx, ackTimeout)
	defer cancel()
	tok := c.SubscribeMultiple(filters, d.onExtraMessage)
	err := waitToken(ctx, tok)
	var granted map[string]byte
	if st, ok := tok.(*mqtt.SubscribeToken); ok && err == nil {
		granted = st.Result()
	}
	for topic := range filters {
		if err == nil && granted[topic] == 0x80 {
			err = errors.New("refused by the broker (check its ACL)")
		}
		if err == nil {
			continue
		}
		if topic == ClientsTopic {
			d.log.Warn("subscribe to the broker's client count failed; telemetry goes without \"clients\"", "topic", topic, "err", err)
		} else {
			d.log.Warn("subscribe to Home Assistant's status failed; its restarts are answered at the next reconnection only", "topic", topic, "err", err)
		}
		err = nil
	}
	d.askTelemetry()
}

// onExtraMessage routes the messages onConnectExtras subscribed to.
func (d *Device) onExtraMessage(_ mqtt.Client, m mqtt.Message) {
	switch {
	case d.tele != nil && m.Topic() == ClientsTopic:
		d.onClients(m)
	case d.disc != nil && m.Topic() == d.disc.statusTopic:
		d.onHAStatus(m)
	}
}

// newExtras checks Options.Telemetry and Options.Discovery against normalized opts.
func newExtras(opts Options) (*telemetryRun, *discovery, error) {
	used := usedTopics(opts)
	tele, err := checkTelemetry(opts.Telemetry, used)
	if err != nil {
		return nil, nil, err
	}
	if tele != nil {
		if err := claimTopic(used, ClientsTopic, "the broker's client count"); err != nil {
			return nil, nil, err
		}
	}
	disc, err := checkDiscovery(opts, used)
	return tele, disc, err
}

// firstReadTimeout bounds how long Start waits for the first telemetry reading when
// discovery needs it. Reading takes well under a millisecond; a Read stuck on a dead file
// system must not hold up the start.
const firstReadTimeout = time.Second

// startExtras runs in Start, before the publisher and the connection: it starts the
// telemetry loop and prepares the discovery messages.
func (d *Device) startExtras(c mqtt.Client) {
	var first chan []byte
	if d.tele != nil {
		if d.disc != nil {
			first = make(chan []byte, 1)
		}
		// Not one of d.workers: Close must not wait for a Read stuck on a dead file system.
		go d.telemetryLoop(c, first)
	}
	if d.disc != nil {
		d.buildDiscovery(first)
	}
}
