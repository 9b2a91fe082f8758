package web

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"time"
)

const (
	// levelUnknown is a line's level before its first state message.
	levelUnknown = -1
	// maxEvents is how many recent changes the server remembers.
	maxEvents = 50
	// eventsShown is how many of them go to the page.
	eventsShown = 20
	// attributionWindow is how long a command from the page waits for the state change that
	// carries its user's name; a change after that, or to another level, is "MQTT".
	attributionWindow = 10 * time.Second
	// maxTelemetryLen bounds the telemetry document kept and sent to every page.
	maxTelemetryLen = 16 << 10
	// maxStateLen bounds a state or status payload worth parsing.
	maxStateLen = 256
	// byMQTT names the author of a change the page did not make.
	byMQTT = "MQTT"
)

// Status values of the device, as the API and the page name them.
const (
	statusOnline  = "online"
	statusOffline = "offline"
	statusUnknown = "unknown"
)

// Event is one recent change: a line's new level, or the device going online or offline.
type Event struct {
	Time time.Time `json:"time"`
	// Kind is "output", "input" or "status".
	Kind string `json:"kind"`
	// Name is the line's; empty for status.
	Name string `json:"name,omitempty"`
	// State is "on" or "off" for a line, "online" or "offline" for status.
	State string `json:"state"`
	// By is the signed-in user whose command from the page made the change, or "MQTT" for
	// changes the page did not make (another MQTT client, the device itself). Empty for status.
	By string `json:"by,omitempty"`

	topic string // the state or status topic, for read rights
}

// line is one output or input as the server last saw it.
type line struct {
	name, commandTopic, stateTopic string
	output                         bool
	level                          int    // 0, 1 or levelUnknown
	version                        uint64 // counts state messages, to wait for the next one
}

// pendingCommand is a command from the page waiting for its state change.
type pendingCommand struct {
	user  string
	level int
	until time.Time
}

// hub holds what the page shows and wakes the pages' event streams when it changes. It is fed
// by the MQTT link's message handler, which must not block, so nothing here waits.
type hub struct {
	statusTopic, telemetryTopic string
	now                         func() time.Time

	mu          sync.Mutex
	lines       []*line          // outputs then inputs, in the configured order
	outputs     map[string]*line // by name
	byTopic     map[string]*line // by state topic
	connected   bool             // the MQTT link is up
	status      string           // statusOnline, statusOffline or "" before the first message
	telemetry   json.RawMessage
	telemetryAt time.Time
	events      []Event // oldest first, at most maxEvents
	pending     map[string]pendingCommand
	watchers    map[chan struct{}]struct{}
}

func newHub(o Options) *hub {
	h := &hub{
		statusTopic:    o.StatusTopic,
		telemetryTopic: o.TelemetryTopic,
		now:            time.Now,
		outputs:        map[string]*line{},
		byTopic:        map[string]*line{},
		pending:        map[string]pendingCommand{},
		watchers:       map[chan struct{}]struct{}{},
	}
	for _, out := range o.Outputs {
		l := &line{name: out.Name, commandTopic: out.CommandTopic, stateTopic: out.StateTopic, output: true, level: levelUnknown}
		h.lines = append(h.lines, l)
		h.outputs[l.name] = l
		h.byTopic[l.stateTopic] = l
	}
	for _, in := range o.Inputs {
		l := &line{name: in.Name, stateTopic: in.StateTopic, level: levelUnknown}
		h.lines = append(h.lines, l)
		h.byTopic[l.stateTopic] = l
	}
	return h
}

// topics returns every topic the link subscribes to.
func (h *hub) topics() []string {
	t := []string{h.statusTopic}
	for _, l := range h.lines {
		t = append(t, l.stateTopic)
	}
	if h.telemetryTopic != "" {
		t = append(t, h.telemetryTopic)
	}
	return t
}

// watch returns a channel that receives a value (coalesced, buffer 1) after every change, and a
// function that stops the watch.
func (h *hub) watch() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	h.watchers[ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.watchers, ch)
		h.mu.Unlock()
	}
}

// changedLocked wakes every watcher without blocking. h.mu is held.
func (h *hub) changedLocked() {
	for ch := range h.watchers {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// setConnected records whether the MQTT link is up.
func (h *hub) setConnected(up bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.connected != up {
		h.connected = up
		h.changedLocked()
	}
}

// message takes one MQTT message. It reports whether the topic was one of the hub's and the
// payload usable, for the link's debug log.
func (h *hub) message(topic string, payload []byte) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case topic == h.statusTopic:
		return h.statusLocked(payload)
	case h.telemetryTopic != "" && topic == h.telemetryTopic:
		return h.telemetryLocked(payload)
	}
	l := h.byTopic[topic]
	if l == nil {
		return false
	}
	level, ok := parseLevel(payload)
	if !ok {
		return false
	}
	now := h.now()
	old := l.level
	l.level = level
	l.version++
	by := byMQTT
	if p, ok := h.pending[l.name]; ok && p.level == level && now.Before(p.until) {
		by = p.user
		delete(h.pending, l.name)
	}
	if old != levelUnknown && old != level {
		kind := "input"
		if l.output {
			kind = "output"
		}
		h.addEventLocked(Event{Time: now, Kind: kind, Name: l.name, State: levelName(level), By: by, topic: l.stateTopic})
	}
	h.changedLocked()
	return true
}

func (h *hub) statusLocked(payload []byte) bool {
	st, ok := parseStatus(payload)
	if !ok {
		return false
	}
	if h.status != "" && h.status != st {
		h.addEventLocked(Event{Time: h.now(), Kind: "status", State: st, topic: h.statusTopic})
	}
	h.status = st
	h.changedLocked()
	return true
}

func (h *hub) telemetryLocked(payload []byte) bool {
	p := bytes.TrimSpace(payload)
	if len(p) == 0 {
		// An empty retained message deletes the telemetry.
		h.telemetry, h.telemetryAt = nil, time.Time{}
		h.changedLocked()
		return true
	}
	if len(p) > maxTelemetryLen || p[0] != '{' || !json.Valid(p) {
		return false
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, p); err != nil {
		return false
	}
	h.telemetry, h.telemetryAt = compact.Bytes(), h.now()
	h.changedLocked()
	return true
}

func (h *hub) addEventLocked(e Event) {
	e.Time = e.Time.UTC().Truncate(time.Millisecond) // what a page shows, and shorter JSON
	if len(h.events) == maxEvents {
		copy(h.events, h.events[1:])
		h.events = h.events[:maxEvents-1]
	}
	h.events = append(h.events, e)
}

// expect remembers that user commanded output name to level, so the state change it brings is
// shown as the user's.
func (h *hub) expect(name, user string, level int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	for n, p := range h.pending {
		if !now.Before(p.until) {
			delete(h.pending, n)
		}
	}
	h.pending[name] = pendingCommand{user: user, level: level, until: now.Add(attributionWindow)}
}

// output returns an output's present level and state-message count; ok is false when there is
// no output of that name.
func (h *hub) output(name string) (level int, version uint64, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.outputs[name]
	if l == nil {
		return 0, 0, false
	}
	return l.level, l.version, true
}

// outputTopics returns an output's command and state topics.
func (h *hub) outputTopics(name string) (command, state string, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.outputs[name]
	if l == nil {
		return "", "", false
	}
	return l.commandTopic, l.stateTopic, true
}

// OutputView is an output as the API shows it.
type OutputView struct {
	Name string `json:"name"`
	// State is "on", "off" or "unknown" (no state seen yet, or the user may not read it).
	State string `json:"state"`
	// Writable says whether the user may switch it.
	Writable bool `json:"writable"`
}

// InputView is an input as the API shows it.
type InputView struct {
	Name  string `json:"name"`
	State string `json:"state"`
}

// Snapshot is everything the page shows, as one user may see it.
type Snapshot struct {
	Title string `json:"title"`
	// User is the signed-in user; empty when sign-in is off.
	User string `json:"user"`
	// URL is the page's address for other phones (the QR code's).
	URL string `json:"url,omitempty"`
	// Connected says whether pimqtt's web side reaches the broker; when false every state
	// may be stale.
	Connected bool `json:"connected"`
	// Status is the device's: "online", "offline" or "unknown".
	Status  string       `json:"status"`
	Outputs []OutputView `json:"outputs"`
	Inputs  []InputView  `json:"inputs"`
	// Telemetry is the last telemetry document, as published (only in the event stream).
	Telemetry json.RawMessage `json:"telemetry,omitempty"`
	// Events are the recent changes, newest first (only in the event stream).
	Events []Event `json:"events,omitempty"`
}

// snapshot returns what user may see; full adds telemetry and events.
func (h *hub) snapshot(user string, read, write func(user, topic string) bool, full bool) Snapshot {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := Snapshot{User: user, Connected: h.connected, Status: statusUnknown, Outputs: []OutputView{}, Inputs: []InputView{}}
	if h.status != "" && read(user, h.statusTopic) {
		s.Status = h.status
	}
	for _, l := range h.lines {
		readable := read(user, l.stateTopic)
		state := "unknown"
		if readable && l.level != levelUnknown {
			state = levelName(l.level)
		}
		if l.output {
			writable := write(user, l.commandTopic)
			if readable || writable {
				s.Outputs = append(s.Outputs, OutputView{Name: l.name, State: state, Writable: writable})
			}
		} else if readable {
			s.Inputs = append(s.Inputs, InputView{Name: l.name, State: state})
		}
	}
	if !full {
		return s
	}
	if h.telemetry != nil && read(user, h.telemetryTopic) {
		s.Telemetry = h.telemetry
	}
	for i := len(h.events) - 1; i >= 0 && len(s.Events) < eventsShown; i-- {
		if e := h.events[i]; read(user, e.topic) {
			s.Events = append(s.Events, e)
		}
	}
	return s
}

// telemetryDoc returns the last telemetry document and when it arrived.
func (h *hub) telemetryDoc() (json.RawMessage, time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.telemetry, h.telemetryAt
}

// levelName is the API's word for a level.
func levelName(level int) string {
	switch level {
	case 0:
		return "off"
	case levelUnknown:
		return "unknown"
	}
	return "on"
}

// parseLevel reads a state payload: pimqtt's device publishes "1" and "0"; ON/OFF and
// true/false (any case) are taken too, as other devices publish them.
func parseLevel(p []byte) (int, bool) {
	if len(p) > maxStateLen {
		return 0, false
	}
	switch strings.ToLower(string(bytes.TrimSpace(p))) {
	case "1", "on", "true":
		return 1, true
	case "0", "off", "false":
		return 0, true
	}
	return 0, false
}

// parseStatus reads a status payload: pimqtt's {"status": "On"} / {"status": "Off"}, and the
// plain online/offline that Home Assistant style devices publish.
func parseStatus(p []byte) (string, bool) {
	if len(p) > maxStateLen {
		return "", false
	}
	p = bytes.TrimSpace(p)
	word := string(p)
	if len(p) > 0 && p[0] == '{' {
		var doc struct {
			Status string `json:"status"`
		}
		if json.Unmarshal(p, &doc) != nil {
			return "", false
		}
		word = doc.Status
	}
	switch strings.ToLower(strings.TrimSpace(word)) {
	case "on", "online", "1", "true":
		return statusOnline, true
	case "off", "offline", "0", "false":
		return statusOffline, true
	}
	return "", false
}
