package bridge

import (
	"strings"
	"testing"
	"time"
)

func TestParseTopic(t *testing.T) {
	tests := []struct {
		in      string
		want    Topic
		wantErr string // substring of the error; "" for success
	}{
		{in: "raspberry/#", want: Topic{Pattern: "raspberry/#", Direction: Out}},
		{in: "raspberry/# in", want: Topic{Pattern: "raspberry/#", Direction: In}},
		{in: "raspberry/# both 1", want: Topic{Pattern: "raspberry/#", Direction: Both, QoS: 1}},
		{in: "raspberry/# BOTH 2", want: Topic{Pattern: "raspberry/#", Direction: Both, QoS: 2}},
		{in: "  sensors/+/temp\tout 0  ", want: Topic{Pattern: "sensors/+/temp"}},
		{in: "# both 1 raspberry/ garage/raspberry/",
			want: Topic{Pattern: "#", Direction: Both, QoS: 1, LocalPrefix: "raspberry/", RemotePrefix: "garage/raspberry/"}},
		{in: `# in 0 "" pi/`, want: Topic{Pattern: "#", Direction: In, RemotePrefix: "pi/"}},
		{in: `"" in 1 home/led office/led`,
			want: Topic{Pattern: "", Direction: In, QoS: 1, LocalPrefix: "home/led", RemotePrefix: "office/led"}},
		{in: "led out 1 raspberry/", want: Topic{Pattern: "led", QoS: 1, LocalPrefix: "raspberry/"}},
		{in: "", wantErr: "empty"},
		{in: "a/# sideways", wantErr: `direction "sideways": want out, in or both`},
		{in: "a/# in 3", wantErr: `QoS "3": want 0, 1 or 2`},
		{in: "a/# in -1", wantErr: `QoS "-1"`},
		{in: "a/# in one", wantErr: `QoS "one"`},
		{in: "a b c d e f", wantErr: "6 words"},
		{in: `"" out 0`, wantErr: "needs a local or remote prefix"},
		{in: `"" out 0 "" ""`, wantErr: "needs a local or remote prefix"},
		{in: "# out 0 a/+/ b/", wantErr: "may not hold the wildcards"},
		{in: "# out 0 a/ b/#", wantErr: "may not hold the wildcards"},
		{in: "a#", wantErr: `"#" must be the whole last level`},
		{in: "a/#/b", wantErr: `"#" must be the whole last level`},
		{in: "a/b+", wantErr: `"+" must be a whole level`},
		{in: "# out 0 ab", wantErr: `local topic filter "ab#"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseTopic(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseTopic(%q) = %+v, %v; want error with %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseTopic(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
			// String writes what ParseTopic reads back.
			again, err := ParseTopic(got.String())
			if err != nil || again != got {
				t.Fatalf("ParseTopic(%q) (String of %q) = %+v, %v; want %+v", got.String(), tt.in, again, err, got)
			}
		})
	}
}

func TestTopicMapping(t *testing.T) {
	tests := []struct {
		topic         string
		local, remote string // a topic on each side
	}{
		{"# both 1 raspberry/ garage/raspberry/", "raspberry/led", "garage/raspberry/led"},
		{"raspberry/# both 1", "raspberry/led/state", "raspberry/led/state"},
		{`"" in 1 home/led office/led`, "home/led", "office/led"},
		{`# in 0 "" pi/`, "a/b", "pi/a/b"},
	}
	for _, tt := range tests {
		tp, err := ParseTopic(tt.topic)
		if err != nil {
			t.Fatal(err)
		}
		if !matches(tp.localFilter(), tt.local) || !matches(tp.remoteFilter(), tt.remote) {
			t.Errorf("%q: filters %q/%q do not match %q/%q", tt.topic, tp.localFilter(), tp.remoteFilter(), tt.local, tt.remote)
		}
		if got := tp.toRemote(tt.local); got != tt.remote {
			t.Errorf("%q: toRemote(%q) = %q, want %q", tt.topic, tt.local, got, tt.remote)
		}
		if got := tp.toLocal(tt.remote); got != tt.local {
			t.Errorf("%q: toLocal(%q) = %q, want %q", tt.topic, tt.remote, got, tt.local)
		}
	}
}

func TestMatches(t *testing.T) {
	tests := []struct {
		filter, topic string
		want          bool
	}{
		{"#", "a", true},
		{"#", "a/b/c", true},
		{"#", "$SYS/x", false},
		{"+/x", "$SYS/x", false},
		{"$SYS/#", "$SYS/x", true},
		{"a/#", "a", true},
		{"a/#", "a/b", true},
		{"a/#", "ab", false},
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false},
		{"a/+", "a", false},
		{"a/+/c", "a//c", true},
		{"a/b", "a/b", true},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
		{"+", "", true},
		{"a", "b", false},
	}
	for _, tt := range tests {
		if got := matches(tt.filter, tt.topic); got != tt.want {
			t.Errorf("matches(%q, %q) = %v, want %v", tt.filter, tt.topic, got, tt.want)
		}
	}
}

func TestEchoFilter(t *testing.T) {
	now := time.Unix(1000, 0)
	e := newEchoFilter(10*time.Second, 3)
	e.clock = func() time.Time { return now }

	// Each fingerprint is consumed by one message.
	e.remember("a", []byte("1"))
	e.remember("a", []byte("1"))
	if !e.isEcho("a", []byte("1")) || !e.isEcho("a", []byte("1")) || e.isEcho("a", []byte("1")) {
		t.Fatal("two sends of a=1 should swallow exactly two messages")
	}
	// Topic and payload both count.
	e.remember("a", []byte("1"))
	if e.isEcho("b", []byte("1")) || e.isEcho("a", []byte("2")) || !e.isEcho("a", []byte("1")) {
		t.Fatal("only the same topic and payload is an echo")
	}
	// Expired after the window.
	e.remember("a", []byte("1"))
	now = now.Add(10 * time.Second)
	if e.isEcho("a", []byte("1")) || e.pending() != 0 {
		t.Fatal("an entry older than the window is no echo")
	}
	// Bounded: the oldest goes first.
	for _, p := range []string{"1", "2", "3", "4"} {
		e.remember("a", []byte(p))
	}
	if e.pending() != 3 || e.isEcho("a", []byte("1")) || !e.isEcho("a", []byte("4")) {
		t.Fatalf("bound 3: want the oldest evicted; pending %d", e.pending())
	}
	// An entry consumed out of order does not make eviction drop a younger one.
	e = newEchoFilter(10*time.Second, 2)
	e.clock = func() time.Time { return now }
	e.remember("x", []byte("1"))     // seq 1
	e.remember("x", []byte("1"))     // seq 2
	if !e.isEcho("x", []byte("1")) { // consumes seq 1
		t.Fatal("want echo")
	}
	e.remember("y", []byte("1")) // evicts seq 1 from the fifo: already consumed, seq 2 stays
	if !e.isEcho("x", []byte("1")) {
		t.Fatal("the second fingerprint of x was lost when the consumed first one was evicted")
	}
}

func TestQueue(t *testing.T) {
	q := newOutQueue(3, 2)
	if r := q.push(&outMsg{topic: "a", qos: 0}); r != droppedDown {
		t.Fatalf("QoS 0 while down: %v, want droppedDown", r)
	}
	for i, want := range []pushResult{queued, queued, queued, droppedFirst, droppedFull} {
		if r := q.push(&outMsg{topic: string(rune('a' + i)), qos: 1}); r != want {
			t.Fatalf("push %d: %v, want %v", i, r, want)
		}
	}
	if m, _ := q.next(); m != nil {
		t.Fatal("nothing is sent while down")
	}
	q.connected(1)
	m1, g := q.next()
	m2, _ := q.next()
	if m3, _ := q.next(); m1.topic != "a" || m2.topic != "b" || m3 != nil {
		t.Fatalf("window 2: got %v %v %v", m1, m2, m3)
	}
	// b acknowledged before a: a stays at the head; the window has room for c.
	q.finished(m2, g, true)
	if q.length() != 3 {
		t.Fatalf("length %d, want 3 (a still unacknowledged)", q.length())
	}
	m3, _ := q.next()
	// The connection dies: a and c are sent again on the next one, a first.
	q.disconnected(1)
	q.finished(m1, g, false)
	q.finished(m3, g, false)
	q.connected(2)
	if r1, _ := q.next(); r1.topic != "a" {
		t.Fatalf("resend starts with %q, want a", r1.topic)
	} else if r2, g2 := q.next(); r2.topic != "c" {
		t.Fatalf("then %q, want c", r2.topic)
	} else {
		q.finished(r1, g2, true)
		if n := q.finished(r2, g2, true); n != 2 || q.length() != 0 {
			t.Fatalf("drained: dropped %d (want 2), length %d", n, q.length())
		}
	}
}
