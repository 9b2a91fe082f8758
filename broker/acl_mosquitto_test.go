package broker

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/pimqtt/pimqtt/auth"
	"github.com/pimqtt/pimqtt/mqtttest"
)

// aclFixture is the ACL file given to both brokers. Every section can
// use sync/#, which the script needs to know that everything a
// publisher sent has been delivered (see runACLScript).
const aclFixture = `# anonymous clients
topic read public/#
topic deny public/secret
topic readwrite sync/#

user alice
topic readwrite alice/#
topic deny alice/private/#
topic read shared/#
topic readwrite $app/#
topic readwrite sync/#

user bob
topic write shared/#
topic readwrite sync/#

user carol
topic readwrite carol/#
topic readwrite sync/#

user x/y
topic readwrite sync/#

pattern readwrite dev/%c/#
pattern readwrite users/%u/#
pattern write any/%u/#
pattern deny dev/%c/locked
`

// aclUsers are the password file's users (the password is the name
// backwards, plus "-pw").
var aclUsers = []string{"alice", "bob", "carol", "x/y"}

func passwordOf(user string) string {
	r := []rune(user)
	for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
		r[i], r[j] = r[j], r[i]
	}
	return string(r) + "-pw"
}

// scriptClient is one paho (MQTT 3.1.1) client of the script.
type scriptClient struct {
	name    string
	c       paho.Client
	mu      sync.Mutex
	conn    net.Conn
	got     []string        // "topic payload", sync/ topics excluded
	syncs   map[string]bool // sync/NAME barriers received
	subacks map[string]byte
	changed chan struct{}
}

type scriptWill struct{ topic, payload string }

func (s *scriptClient) record(m paho.Message) {
	s.mu.Lock()
	if rest, ok := strings.CutPrefix(m.Topic(), "sync/"); ok {
		s.syncs[rest] = true
	} else {
		s.got = append(s.got, m.Topic()+" "+string(m.Payload()))
	}
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// waitUntil waits for cond, which reads the client's state under its
// lock, until the deadline; messages arriving wake it.
func (s *scriptClient) waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		ok := cond()
		s.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-s.changed:
		case <-deadline.C:
			s.mu.Lock()
			defer s.mu.Unlock()
			t.Fatalf("%s: %s: not within 20s; got %q, syncs %v", s.name, what, s.got, s.syncs)
		}
	}
}

func connectScriptClient(t *testing.T, addr, name, clientID, user string, will *scriptWill) *scriptClient {
	t.Helper()
	s := &scriptClient{name: name, syncs: map[string]bool{}, subacks: map[string]byte{}, changed: make(chan struct{}, 1)}
	opts := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).
		SetAutoReconnect(false).SetConnectTimeout(10 * time.Second).SetProtocolVersion(4).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { s.record(m) }).
		SetCustomOpenConnectionFn(func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
			c, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
			s.mu.Lock()
			s.conn = c
			s.mu.Unlock()
			return c, err
		})
	if user != "" {
		opts.SetUsername(user).SetPassword(passwordOf(user))
	}
	if will != nil {
		opts.SetWill(will.topic, will.payload, 1, false)
	}
	s.c = paho.NewClient(opts)
	if tok := s.c.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: connect: %v", name, tok.Error())
	}
	t.Cleanup(func() { s.c.Disconnect(0) })
	return s
}

// subscribe subscribes at QoS 1 and records the granted codes.
func (s *scriptClient) subscribe(t *testing.T, filters ...string) {
	t.Helper()
	m := map[string]byte{}
	for _, f := range filters {
		m[f] = 1
	}
	tok := s.c.SubscribeMultiple(m, nil)
	if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: subscribe %v: %v", s.name, filters, tok.Error())
	}
	for f, code := range tok.(*paho.SubscribeToken).Result() {
		s.subacks[f] = code
	}
}

// publish publishes and waits for the acknowledgement (QoS 1 and 2) or
// for the write (QoS 0).
func (s *scriptClient) publish(t *testing.T, topic string, qos byte, retained bool) {
	t.Helper()
	tok := s.c.Publish(topic, qos, retained, s.name+":"+topic)
	if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: publish to %s (QoS %d) not acknowledged: %v", s.name, topic, qos, tok.Error())
	}
}

// kill closes the connection without DISCONNECT, so the broker sends the
// will.
func (s *scriptClient) kill() {
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	_ = c.Close()
}

// aclTranscript is what one run of the script observed.
type aclTranscript struct {
	delivered map[string][]string // subscriber: sorted "topic payload"
	subacks   map[string]byte     // "client filter": SUBACK code
}

// aclProbes are the subscriptions on which mosquitto, with aclFixture,
// never delivers anything: it grants them, pimqtt refuses them (0x80).
var aclProbes = map[string]string{
	"probe-anon":   "public/secret",
	"probe-alice":  "alice/private/#",
	"probe-bob":    "shared/#",
	"probe+carol":  "dev/#",
	"probe-alice2": "$SYS/#",
}

// runACLScript drives a broker at addr with the same clients, doing the
// same things, and returns what each subscriber received. A publisher's
// messages reach a subscriber in the order it sent them, so once a
// subscriber has the sync/NAME barrier that publisher NAME sends last,
// it has every message of NAME's it will ever get. afterWills runs once
// the wills' connections are closed, for what only one broker can show.
func runACLScript(t *testing.T, addr string, afterWills func()) aclTranscript {
	type sub struct {
		name, id, user string
		filters        []string
	}
	subs := []sub{
		{"sub-anon", "sub-anon", "", []string{"public/#", "dev/sub-anon/#"}},
		{"sub-alice", "sub-alice", "alice", []string{"alice/#", "shared/#", "$app/#", "dev/#", "+/x"}},
		{"sub-bob", "sub-bob", "bob", []string{"users/bob/#"}},
		{"sub+carol", "sub+carol", "carol", []string{"carol/#", "any/#"}},
		{"sub-carol", "sub-carol", "carol", []string{"dev/#"}},
		{"sub/xy", "sub/xy", "x/y", []string{"users/x/y/#", "dev/sub/xy/#"}},
	}
	for id, filter := range aclProbes {
		u := ""
		switch {
		case strings.Contains(id, "alice"):
			u = "alice"
		case strings.Contains(id, "bob"):
			u = "bob"
		case strings.Contains(id, "carol"):
			u = "carol"
		}
		subs = append(subs, sub{id, id, u, []string{filter}})
	}
	sort.Slice(subs, func(i, j int) bool { return subs[i].name < subs[j].name })
	clients := map[string]*scriptClient{}
	for _, s := range subs {
		c := connectScriptClient(t, addr, s.name, s.id, s.user, nil)
		c.subscribe(t, append(s.filters, "sync/#")...)
		clients[s.name] = c
	}

	// Wills: two the client may not write, one it may.
	willBad := connectScriptClient(t, addr, "will-bad", "will-bad", "bob", &scriptWill{"alice/will", "bob may not write here"})
	willAnon := connectScriptClient(t, addr, "will-anon", "will-anon", "", &scriptWill{"public/will", "anonymous is read-only here"})
	willOK := connectScriptClient(t, addr, "will-ok", "will-ok", "bob", &scriptWill{"shared/will", "bob may write here"})
	willBad.kill()
	willAnon.kill()
	willOK.kill()
	clients["sub-alice"].waitUntil(t, "the allowed will", func() bool {
		for _, g := range clients["sub-alice"].got {
			if strings.HasPrefix(g, "shared/will ") {
				return true
			}
		}
		return false
	})
	if afterWills != nil {
		afterWills()
	}

	type pub struct {
		name, id, user string
		do             func(c *scriptClient)
	}
	pubs := []pub{
		{"pub-alice", "pub-alice", "alice", func(c *scriptClient) {
			for _, tp := range []string{"alice/notes", "alice/private/x", "shared/a", "public/news", "$SYS/x", "$app/x", "dev/pub-alice/x", "dev/sub-alice/x"} {
				c.publish(t, tp, 1, false)
			}
			c.publish(t, "alice/retained", 1, true)
			c.publish(t, "shared/retained", 1, true)
			c.publish(t, "alice/q0", 0, false)
			c.publish(t, "alice/q2", 2, false)
			c.publish(t, "shared/q2", 2, false)
		}},
		{"pub-bob", "pub-bob", "bob", func(c *scriptClient) {
			for _, tp := range []string{"shared/a", "shared/b", "alice/notes", "users/bob/x", "public/secret", "public/x"} {
				c.publish(t, tp, 1, false)
			}
			c.publish(t, "shared/r2", 1, true)
			c.publish(t, "shared/q0", 0, false)
		}},
		{"pub-anon", "pub-anon", "", func(c *scriptClient) {
			for _, tp := range []string{"public/news", "dev/pub-anon/x", "dev/sub-anon/x", "public/x"} {
				c.publish(t, tp, 1, false)
			}
		}},
		{"pub-carol", "pub-carol", "carol", func(c *scriptClient) {
			for _, tp := range []string{"any/carol/x", "carol/x", "dev/pub-carol/locked", "dev/pub-carol/open"} {
				c.publish(t, tp, 1, false)
			}
		}},
		{"pub+carol", "pub+carol", "carol", func(c *scriptClient) {
			for _, tp := range []string{"any/carol/y", "carol/y"} {
				c.publish(t, tp, 1, false)
			}
		}},
		{"pub/xy", "pub/xy", "x/y", func(c *scriptClient) {
			for _, tp := range []string{"users/x/y/z", "dev/pub/xy/x", "dev/sub/xy/x"} {
				c.publish(t, tp, 1, false)
			}
		}},
	}
	var names []string
	for _, p := range pubs {
		c := connectScriptClient(t, addr, p.name, p.id, p.user, nil)
		p.do(c)
		c.publish(t, "sync/"+syncName(p.name), 1, false)
		names = append(names, syncName(p.name))
	}
	// Clients writing into their own trees, read by themselves.
	for _, name := range []string{"sub-alice", "sub-anon", "sub/xy"} {
		c := clients[name]
		c.publish(t, "dev/"+name+"/self", 1, false)
		c.publish(t, "dev/"+name+"/locked", 1, false)
		c.publish(t, "sync/"+syncName(name), 1, false)
		names = append(names, syncName(name))
	}
	for _, s := range subs {
		c := clients[s.name]
		c.waitUntil(t, "every barrier", func() bool {
			for _, n := range names {
				if !c.syncs[n] {
					return false
				}
			}
			return true
		})
	}

	// A late subscriber gets the retained messages it may read.
	late := connectScriptClient(t, addr, "late-alice", "late-alice", "alice", nil)
	late.subscribe(t, "alice/#", "shared/#", "sync/#")
	late.publish(t, "sync/late-alice", 1, false)
	late.waitUntil(t, "its own barrier", func() bool { return late.syncs["late-alice"] })
	clients["late-alice"] = late

	tr := aclTranscript{delivered: map[string][]string{}, subacks: map[string]byte{}}
	for name, c := range clients {
		c.mu.Lock()
		got := append([]string(nil), c.got...)
		sort.Strings(got)
		tr.delivered[name] = got
		for f, code := range c.subacks {
			tr.subacks[name+" "+f] = code
		}
		c.mu.Unlock()
	}
	return tr
}

// syncName is a client's name made fit for a topic level.
func syncName(name string) string {
	return strings.NewReplacer("+", "_", "/", "_", "#", "_").Replace(name)
}

// writeACLFixture writes the password and ACL files both brokers use.
func writeACLFixture(t *testing.T) (passwd, acl string) {
	t.Helper()
	dir := t.TempDir()
	passwd = filepath.Join(dir, "passwd")
	for i, u := range aclUsers {
		if err := auth.SetPassword(passwd, u, passwordOf(u), i == 0); err != nil {
			t.Fatal(err)
		}
	}
	acl = filepath.Join(dir, "acl")
	if err := os.WriteFile(acl, []byte(aclFixture), 0o600); err != nil {
		t.Fatal(err)
	}
	return passwd, acl
}

// TestACLSameAsMosquitto gives the same password and ACL files to the real
// mosquitto and to pimqtt and drives both with the same clients: the same
// messages are delivered to each subscriber (retained and wills
// included), and the same publishes are dropped, every one acknowledged
// as MQTT 3.1.1 requires. The one difference is deliberate: where
// mosquitto grants a subscription on which it will never deliver
// anything, pimqtt refuses it (0x80).
func TestACLSameAsMosquitto(t *testing.T) {
	passwd, acl := writeACLFixture(t)

	m := mqtttest.StartMosquitto(t, mqtttest.MosquittoConfig{Extra: []string{
		"allow_anonymous true", "password_file " + passwd, "acl_file " + acl,
	}})
	var want aclTranscript
	t.Run("mosquitto", func(t *testing.T) {
		want = runACLScript(t, fmt.Sprintf("127.0.0.1:%d", m.Port), nil)
	})

	b, logs := startTestBroker(t, Options{
		Listeners:      []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}},
		PasswordFile:   passwd,
		ACLFile:        acl,
		AllowAnonymous: true,
	})
	var got aclTranscript
	t.Run("pimqtt", func(t *testing.T) {
		got = runACLScript(t, listenerAddr(t, b, TCP), func() {
			// Mochi sends a will from its connection's goroutine, before
			// it forgets the client: once both are forgotten, their wills
			// have been dealt with.
			waitFor(t, 20*time.Second, "the refused wills' clients gone", func() bool {
				_, bad := b.server.Clients.Get("will-bad")
				_, anon := b.server.Clients.Get("will-anon")
				return !bad && !anon
			})
		})
		if !strings.Contains(logs.since(0), "will dropped: the client may not write its topic") {
			t.Errorf("no log line for the dropped wills:\n%s", logs.since(0))
		}
	})
	if t.Failed() {
		return
	}

	for name, w := range want.delivered {
		if g := got.delivered[name]; strings.Join(g, "\n") != strings.Join(w, "\n") {
			t.Errorf("%s received\n  pimqtt:    %q\n  mosquitto: %q", name, g, w)
		}
	}
	// SUBACKs are the same, except where pimqtt refuses a filter that
	// mosquitto granted but delivered nothing on: every probe, and
	// sub+carol's any/#, which the patterns would serve but for the '+'
	// in its client id.
	refused := 0
	for key, w := range want.subacks {
		g := got.subacks[key]
		client, filter, _ := strings.Cut(key, " ")
		if g == w {
			if aclProbes[client] == filter {
				t.Errorf("probe %s: pimqtt granted %#x like mosquitto; it should refuse it", key, g)
			}
			continue
		}
		if w != 1 || g != 0x80 {
			t.Errorf("SUBACK for %s: pimqtt %#x, mosquitto %#x", key, g, w)
			continue
		}
		refused++
		for _, d := range want.delivered[client] {
			if topic, _, _ := strings.Cut(d, " "); auth.TopicMatches(filter, topic) {
				t.Errorf("pimqtt refused %s, but mosquitto delivered %q on it", key, d)
			}
		}
	}
	if want := len(aclProbes) + 1; refused != want {
		t.Errorf("pimqtt refused %d subscriptions, want %d", refused, want)
	}

	// The transcript is not vacuous: what must and must not arrive.
	has := func(name, msg string) bool {
		for _, g := range want.delivered[name] {
			if g == msg {
				return true
			}
		}
		return false
	}
	for _, c := range []struct {
		name, msg string
		want      bool
	}{
		{"sub-alice", "alice/notes pub-alice:alice/notes", true},
		{"sub-alice", "alice/private/x pub-alice:alice/private/x", false},
		{"sub-alice", "shared/a pub-bob:shared/a", true},
		{"sub-alice", "shared/a pub-alice:shared/a", false},
		{"sub-alice", "shared/will bob may write here", true},
		{"sub-alice", "alice/will bob may not write here", false},
		{"sub-alice", "alice/notes pub-bob:alice/notes", false},
		{"sub-alice", "$app/x pub-alice:$app/x", true},
		{"sub-alice", "dev/sub-alice/self sub-alice:dev/sub-alice/self", true},
		{"sub-alice", "dev/sub-alice/locked sub-alice:dev/sub-alice/locked", false},
		{"sub-alice", "dev/pub-alice/x pub-alice:dev/pub-alice/x", false},
		{"sub-anon", "public/will anonymous is read-only here", false},
		{"sub-anon", "public/news pub-anon:public/news", false},
		{"sub-anon", "public/x pub-bob:public/x", false},
		{"sub-bob", "users/bob/x pub-bob:users/bob/x", true},
		{"sub+carol", "carol/y pub+carol:carol/y", true},
		{"sub+carol", "any/carol/x pub-carol:any/carol/x", false},
		{"sub/xy", "users/x/y/z pub/xy:users/x/y/z", true},
		{"sub/xy", "dev/sub/xy/self sub/xy:dev/sub/xy/self", true},
		{"late-alice", "alice/retained pub-alice:alice/retained", true},
		{"late-alice", "shared/r2 pub-bob:shared/r2", true},
		{"late-alice", "shared/retained pub-alice:shared/retained", false},
	} {
		if has(c.name, c.msg) != c.want {
			t.Errorf("mosquitto: %s received %q: %v, the script expects %v", c.name, c.msg, !c.want, c.want)
		}
	}
}
