package bridge

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Direction says which way a Topic's messages flow.
type Direction int

const (
	// Out forwards messages published on the local broker to the remote one (mosquitto's
	// default direction).
	Out Direction = iota
	// In forwards messages published on the remote broker to the local one.
	In
	// Both forwards either way; the bridge keeps its own messages from coming back.
	Both
)

// String returns the direction as mosquitto.conf writes it: "out", "in" or "both".
func (d Direction) String() string {
	switch d {
	case Out:
		return "out"
	case In:
		return "in"
	case Both:
		return "both"
	}
	return "Direction(" + strconv.Itoa(int(d)) + ")"
}

// outward reports whether local messages go to the remote.
func (d Direction) outward() bool { return d == Out || d == Both }

// inward reports whether remote messages come to the local broker.
func (d Direction) inward() bool { return d == In || d == Both }

// Topic is one bridged topic tree, mosquitto's `topic` line: the local broker's
// LocalPrefix+Pattern is the remote's RemotePrefix+Pattern.
type Topic struct {
	// Pattern is a topic filter relative to the prefixes, e.g. "raspberry/#". It may be empty
	// when a prefix gives the whole topic (mosquitto's `""`).
	Pattern string
	// Direction is which way messages flow; Out by default.
	Direction Direction
	// QoS is the highest QoS used on the way (subscription and forwarding), 0 to 2.
	QoS byte
	// LocalPrefix and RemotePrefix are prepended to Pattern on each side, so that a tree can
	// live under another name at the remote, e.g. "" and "pi/garage/".
	LocalPrefix, RemotePrefix string
}

// String returns the topic in mosquitto's syntax, which ParseTopic reads back.
func (t Topic) String() string {
	q := func(s string) string {
		if s == "" {
			return `""`
		}
		return s
	}
	s := fmt.Sprintf("%s %s %d", q(t.Pattern), t.Direction, t.QoS)
	if t.LocalPrefix != "" || t.RemotePrefix != "" {
		s += " " + q(t.LocalPrefix) + " " + q(t.RemotePrefix)
	}
	return s
}

// localFilter is the filter the bridge subscribes to on the local broker.
func (t Topic) localFilter() string { return t.LocalPrefix + t.Pattern }

// remoteFilter is the filter the bridge subscribes to on the remote broker.
func (t Topic) remoteFilter() string { return t.RemotePrefix + t.Pattern }

// toRemote maps a local topic that matched localFilter to its remote name. A topic that
// matches localFilter starts with LocalPrefix, which holds no wildcard.
func (t Topic) toRemote(local string) string {
	return t.RemotePrefix + strings.TrimPrefix(local, t.LocalPrefix)
}

// toLocal maps a remote topic that matched remoteFilter to its local name.
func (t Topic) toLocal(remote string) string {
	return t.LocalPrefix + strings.TrimPrefix(remote, t.RemotePrefix)
}

// ParseTopic parses mosquitto's bridge `topic` syntax (mosquitto.conf(5)), without the
// keyword:
//
//	PATTERN [[[out|in|both] QOS] LOCAL_PREFIX REMOTE_PREFIX]
//
// Words are separated by spaces or tabs. `""` (two double quotes) stands for an empty pattern
// or prefix; an empty pattern needs a prefix, which then names the whole topic, e.g.
// `"" in 1 home/led office/led`. As in mosquitto, a local prefix without a remote prefix is
// allowed (the remote one is then empty). The direction defaults to out and the QoS to 0.
// Errors say which word is wrong and what is allowed.
func ParseTopic(s string) (Topic, error) {
	words := strings.Fields(s)
	if len(words) == 0 {
		return Topic{}, errors.New(`bridge topic: empty; want "PATTERN [[[out|in|both] QOS] LOCAL_PREFIX REMOTE_PREFIX]"`)
	}
	if len(words) > 5 {
		return Topic{}, fmt.Errorf("bridge topic %q: %d words, at most 5: PATTERN [[[out|in|both] QOS] LOCAL_PREFIX REMOTE_PREFIX]", s, len(words))
	}
	unquote := func(w string) string {
		if w == `""` {
			return ""
		}
		return w
	}
	var t Topic
	t.Pattern = unquote(words[0])
	if len(words) > 1 {
		switch strings.ToLower(words[1]) {
		case "out":
			t.Direction = Out
		case "in":
			t.Direction = In
		case "both":
			t.Direction = Both
		default:
			return Topic{}, fmt.Errorf("bridge topic %q: direction %q: want out, in or both", s, words[1])
		}
	}
	if len(words) > 2 {
		q, err := strconv.Atoi(words[2])
		if err != nil || q < 0 || q > 2 {
			return Topic{}, fmt.Errorf("bridge topic %q: QoS %q: want 0, 1 or 2", s, words[2])
		}
		t.QoS = byte(q)
	}
	if len(words) > 3 {
		t.LocalPrefix = unquote(words[3])
	}
	if len(words) > 4 {
		t.RemotePrefix = unquote(words[4])
	}
	if err := t.validate(); err != nil {
		return Topic{}, fmt.Errorf("bridge topic %q: %w", s, err)
	}
	return t, nil
}

// validate checks what ParseTopic checks, for a Topic built in code.
func (t Topic) validate() error {
	if t.Direction < Out || t.Direction > Both {
		return fmt.Errorf("direction %d: want Out, In or Both", int(t.Direction))
	}
	if t.QoS > 2 {
		return fmt.Errorf("QoS %d: want 0, 1 or 2", t.QoS)
	}
	if t.Pattern == "" && t.LocalPrefix == "" && t.RemotePrefix == "" {
		return errors.New(`empty pattern ("") needs a local or remote prefix that names the topic`)
	}
	for _, p := range []struct{ what, v string }{{"local prefix", t.LocalPrefix}, {"remote prefix", t.RemotePrefix}} {
		if strings.ContainsAny(p.v, "+#") {
			return fmt.Errorf("%s %q: a prefix may not hold the wildcards + or #", p.what, p.v)
		}
		if !utf8.ValidString(p.v) || strings.ContainsRune(p.v, 0) {
			return fmt.Errorf("%s %q: not valid UTF-8 or holds NUL", p.what, p.v)
		}
	}
	for _, f := range []struct{ side, filter string }{{"local", t.localFilter()}, {"remote", t.remoteFilter()}} {
		if err := validFilter(f.filter); err != nil {
			return fmt.Errorf("%s topic filter %q: %w", f.side, f.filter, err)
		}
	}
	return nil
}

// validFilter checks an MQTT topic filter: non-empty, valid UTF-8 without NUL, at most 65535
// bytes, "+" only as a whole level, "#" only as the whole last level.
func validFilter(f string) error {
	if f == "" {
		return errors.New("empty")
	}
	if len(f) > 65535 {
		return errors.New("longer than 65535 bytes")
	}
	if !utf8.ValidString(f) || strings.ContainsRune(f, 0) {
		return errors.New("not valid UTF-8 or holds NUL")
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return errors.New(`"#" must be the whole last level (a prefix ending in "/" before it)`)
		}
		if strings.Contains(l, "+") && l != "+" {
			return errors.New(`"+" must be a whole level`)
		}
	}
	return nil
}

// matches reports whether topic (a concrete topic name) matches filter, per MQTT 3.1.1:
// wildcards at the first level do not match topics starting with "$".
func matches(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" {
			return true
		}
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore || !tmore {
			// "a/#" matches "a" too: the rest of the filter is exactly "#".
			return fmore == tmore || (fmore && frest == "#")
		}
		filter, topic = frest, trest
	}
}
