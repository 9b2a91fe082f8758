package web

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"image/png"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pimqtt/pimqtt/mqtttest"
)

// Every API endpoint answers 401 without a session, and the answer holds no state.
func TestUnauthenticated(t *testing.T) {
	// No throttle: every wrong basic password must meet the 401, not the backoff's 429.
	r := newRig(t, Options{Throttle: fixedWait(0)})
	r.mosquittoPub(telemetryTopic, `{"cpu_temp_c": 41.5}`, "-r")
	r.waitHub("telemetry", func(h *hub) bool { return h.telemetry != nil })
	endpoints := []struct{ method, path, body string }{
		{"GET", "/api/lines", ""},
		{"POST", "/api/outputs/led", `{"state":"on"}`},
		{"POST", "/api/outputs/nosuch", `{"state":"on"}`},
		{"GET", "/api/events", ""},
		{"GET", "/api/telemetry", ""},
		{"GET", "/api/qr.svg", ""},
		{"POST", "/api/logout", ""},
		{"GET", "/api/nosuch", ""},
	}
	creds := []struct {
		name   string
		header []string
	}{
		{"nothing", nil},
		{"unknown session", []string{"Cookie: " + cookieName + "=Zm9vYmFy"}},
		{"empty session", []string{"Cookie: " + cookieName + "="}},
		{"wrong basic password", []string{"Authorization: Basic " + basic("alice", "wrong")}},
		{"unknown basic user", []string{"Authorization: Basic " + basic("mallory", alicePassword)}},
	}
	c := r.client()
	for _, e := range endpoints {
		for _, cr := range creds {
			t.Run(e.method+" "+e.path+" "+cr.name, func(t *testing.T) {
				resp, body := c.do(e.method, e.path, e.body, cr.header...)
				if resp.StatusCode != http.StatusUnauthorized {
					t.Fatalf("status %s, want 401; body %s", resp.Status, body)
				}
				for _, leak := range []string{"led", "door", "41.5", "online", "svg"} {
					if strings.Contains(body, leak) {
						t.Errorf("401 body %q mentions %q", body, leak)
					}
				}
			})
		}
	}
	if got := r.led.String(); got == "" {
		t.Fatal("no led")
	}
	if v, _ := r.led.Value(); v != 0 {
		t.Fatalf("led is %d after unauthenticated commands", v)
	}
}

func basic(user, password string) string {
	req, _ := http.NewRequest("GET", "/", nil)
	req.SetBasicAuth(user, password)
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}

// A forged cross-site POST is refused and publishes nothing: a subscriber on the command topic
// sees the legitimate command that follows it as the first message.
func TestCrossSiteRefused(t *testing.T) {
	r := newRig(t, Options{})
	alice := r.client()
	alice.login("alice", alicePassword)
	sub := mosquittoSubFirst(t, r.mqttPort, ledTopic)
	host := strings.TrimPrefix(r.url, "http://")
	forged := []struct {
		name   string
		header []string
	}{
		{"other origin", []string{"Origin: http://evil.example", "Sec-Fetch-Site: cross-site"}},
		{"other origin without fetch metadata", []string{"Origin: http://evil.example"}},
		{"same host other port", []string{"Origin: http://127.0.0.1:1"}},
		{"null origin", []string{"Origin: null"}},
		{"same-site sibling", []string{"Sec-Fetch-Site: same-site"}},
		{"cross-site metadata only", []string{"Sec-Fetch-Site: cross-site"}},
		{"cross-site with basic auth", []string{"Origin: http://evil.example", "Authorization: Basic " + basic("alice", alicePassword)}},
	}
	for _, f := range forged {
		t.Run(f.name, func(t *testing.T) {
			resp, body := alice.do("POST", "/api/outputs/led", `{"state":"on"}`, f.header...)
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "cross-site") {
				t.Fatalf("got %s %s, want 403 cross-site", resp.Status, body)
			}
			// Signing in and out from another site is refused too (login CSRF).
			resp, body = newClient(t, r.url).do("POST", "/api/login", `{"user":"alice","password":"`+alicePassword+`"}`, f.header...)
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("cross-site sign-in: got %s %s, want 403", resp.Status, body)
			}
			resp, _ = alice.do("POST", "/api/logout", "", f.header...)
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("cross-site sign-out: got %s, want 403", resp.Status)
			}
		})
	}
	// The page itself sends Origin and same-origin metadata.
	resp, body := alice.do("POST", "/api/outputs/led", `{"state":"off"}`, "Origin: http://"+host, "Sec-Fetch-Site: same-origin")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("same-origin POST: %s %s", resp.Status, body)
	}
	if got := sub(); got != "0" {
		t.Fatalf("first command on %s is %q, want the legitimate 0: a forged POST got through", ledTopic, got)
	}
	if v, _ := r.led.Value(); v != 0 {
		t.Fatalf("led is %d", v)
	}
}

// mosquittoSubFirst starts mosquitto_sub on topic and returns a function giving its first
// message. It returns once mosquitto_sub is subscribed: it waits for the retained message
// the test publishes on a marker topic beside it.
func mosquittoSubFirst(t *testing.T, port int, topic string) func() string {
	t.Helper()
	bin := mqtttest.RequireTool(t, "mosquitto_sub", "mosquitto-clients")
	marker := "test/marker/" + strconv.FormatInt(time.Now().UnixNano(), 36)
	mosquittoPub(t, port, marker, "ready", "-r")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, bin, "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-q", "1",
		"-t", marker, "-t", topic, "-v", "-C", "2")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 2)
	go func() {
		defer close(lines)
		buf := make([]byte, 0, 256)
		one := make([]byte, 1)
		for {
			n, err := out.Read(one)
			if n == 1 && one[0] != '\n' {
				buf = append(buf, one[0])
				continue
			}
			if n == 1 {
				lines <- string(buf)
				buf = buf[:0]
				continue
			}
			if err != nil {
				return
			}
		}
	}()
	first := <-lines
	if first != marker+" ready" {
		t.Fatalf("mosquitto_sub: first line %q, want the marker", first)
	}
	return func() string {
		t.Helper()
		select {
		case l, ok := <-lines:
			_ = cmd.Wait()
			if !ok {
				t.Fatal("mosquitto_sub ended without a message")
			}
			got, _ := strings.CutPrefix(l, topic+" ")
			return got
		case <-ctx.Done():
			t.Fatal("mosquitto_sub: no message")
			return ""
		}
	}
}

// Bad bodies get 400 with a message that says what to send.
func TestBadBodies(t *testing.T) {
	r := newRig(t, Options{})
	c := r.client()
	c.login("alice", alicePassword)
	tests := []struct {
		name, body, want string
	}{
		{"empty", "", "the body is empty"},
		{"not JSON", "on", "not valid JSON"},
		{"truncated JSON", `{"state":`, "not valid JSON"},
		{"number", `{"state":1}`, `"state" must be a string`},
		{"unknown word", `{"state":"maybe"}`, `"state" is "maybe"`},
		{"no state", `{"level":"on"}`, `no "state"`},
		{"null state", `{"state":null}`, `no "state"`},
		{"array", `["on"]`, "must be a"},
		{"two values", `{"state":"on"}{"state":"off"}`, "more than one JSON value"},
		{"too long", `{"state":"on","pad":"` + strings.Repeat("x", maxBodyLen) + `"}`, "longer than 4096 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := c.do("POST", "/api/outputs/led", tt.body)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %s, want 400; body %s", resp.Status, body)
			}
			var e struct{ Error string }
			if err := json.Unmarshal([]byte(body), &e); err != nil {
				t.Fatalf("body %q is not a JSON error: %v", body, err)
			}
			if !strings.Contains(e.Error, tt.want) || !strings.Contains(e.Error, `{"state": "on"}`) {
				t.Errorf("error %q, want it to contain %q and the accepted form", e.Error, tt.want)
			}
		})
	}
	if v, _ := r.led.Value(); v != 0 {
		t.Fatalf("led is %d after bad bodies", v)
	}
	// Sign-in bodies too.
	for _, body := range []string{"", "user=alice", `{"user":"alice"}`, `{"user":1}`} {
		resp, b := newClient(t, r.url).do("POST", "/api/login", body)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("sign-in with %q: %s %s, want 400", body, resp.Status, b)
		}
	}
	resp, body := c.do("POST", "/api/outputs/nosuch", `{"state":"on"}`)
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, `no output called \"nosuch\"`) {
		t.Errorf("unknown output: %s %s", resp.Status, body)
	}
}

// Switching through the API drives the real line, the answer carries the confirmed state,
// and the change is shown as the user's in the event stream.
func TestSwitch(t *testing.T) {
	r := newRig(t, Options{})
	c := r.client()
	c.login("alice", alicePassword)
	ev := c.events()
	steps := []struct {
		state string
		want  string
		level int
	}{
		{"on", "on", 1},
		{"on", "on", 1}, // already on: answered at once
		{"toggle", "off", 0},
		{"TOGGLE", "on", 1},
		{"Off", "off", 0},
	}
	for i, st := range steps {
		resp, body := c.do("POST", "/api/outputs/led", `{"state":"`+st.state+`"}`)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("step %d %s: %s %s", i, st.state, resp.Status, body)
		}
		var got struct{ Name, State string }
		if err := json.Unmarshal([]byte(body), &got); err != nil || got.Name != "led" || got.State != st.want {
			t.Fatalf("step %d %s: body %s, want state %s", i, st.state, body, st.want)
		}
		if v, _ := r.led.Value(); v != st.level {
			t.Fatalf("step %d %s: line at %d, want %d", i, st.state, v, st.level)
		}
	}
	snap := ev.wait("four changes by alice", func(s Snapshot) bool { return len(s.Events) == 4 })
	for _, e := range snap.Events {
		if e.By != "alice" || e.Kind != "output" || e.Name != "led" {
			t.Errorf("event %+v, want led by alice", e)
		}
	}
	if snap.Events[0].State != "off" || snap.Events[3].State != "on" {
		t.Errorf("events not newest first: %+v", snap.Events)
	}
	// Basic authentication works for scripts.
	resp, body := newClient(t, r.url).do("POST", "/api/outputs/led", `{"state":"on"}`, "Authorization: Basic "+basic("alice", alicePassword))
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"on"`) {
		t.Fatalf("basic auth POST: %s %s", resp.Status, body)
	}
}

// A user who may only read sees the output as not writable, and the API refuses the command.
func TestReadOnlyUser(t *testing.T) {
	r := newRig(t, Options{Rights: readOnly{"bob": true}})
	bob := r.client()
	bob.login("bob", bobPassword)
	if o := output(t, bob.lines(), "led"); o.Writable || o.State != "off" {
		t.Fatalf("bob sees %+v, want a read-only led that is off", o)
	}
	resp, body := bob.do("POST", "/api/outputs/led", `{"state":"on"}`)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, `may not switch led (no write right on raspberry/led)`) {
		t.Fatalf("got %s %s, want 403 naming the topic", resp.Status, body)
	}
	alice := r.client()
	alice.login("alice", alicePassword)
	if o := output(t, alice.lines(), "led"); !o.Writable {
		t.Fatalf("alice sees %+v, want writable", o)
	}
	if v, _ := r.led.Value(); v != 0 {
		t.Fatalf("led is %d after bob's refused command", v)
	}
}

// rights is a Rights from a table of (user, topic) → read, write.
type rights map[[2]string][2]bool

func (r rights) CanRead(user, topic string) bool  { return r[[2]string{user, topic}][0] }
func (r rights) CanWrite(user, topic string) bool { return r[[2]string{user, topic}][1] }

// Lines a user may not read are not shown, nor their changes, status or telemetry.
func TestRightsHideLines(t *testing.T) {
	r := newRig(t, Options{Rights: rights{
		{"carol", ledTopic}: {false, true}, // may switch, may not read the state
		// nothing on the door, the status or telemetry
	}})
	r.mosquittoPub(telemetryTopic, `{"cpu_temp_c": 41.5}`, "-r")
	r.waitHub("telemetry", func(h *hub) bool { return h.telemetry != nil })
	auth := mapAuth{"carol": "carol-secret"}
	r.stopWeb()
	opts := r.opts
	opts.Auth = auth
	r.startWeb(opts)
	c := r.client()
	c.login("carol", "carol-secret")
	first := c.events().wait("a snapshot", func(Snapshot) bool { return true })
	if len(first.Inputs) != 0 || first.Status != statusUnknown || first.Telemetry != nil {
		t.Errorf("carol sees %+v, want no inputs, status unknown, no telemetry", first)
	}
	if o := output(t, first, "led"); o.State != "unknown" || !o.Writable {
		t.Errorf("carol sees led %+v, want unknown state, writable", o)
	}
	resp, body := c.do("POST", "/api/outputs/led", `{"state":"on"}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("carol switches: %s %s", resp.Status, body)
	}
	if v, _ := r.led.Value(); v != 1 {
		t.Fatal("carol's command did not switch the line")
	}
	r.mosquittoPub(doorSimTopic, "1")
	r.waitHub("door on", func(h *hub) bool { return h.byTopic[doorStateTopic].level == 1 })
	r.mosquittoPub(ledTopic, "0") // an event carol may not see, then one on the door
	r.waitHub("led off", func(h *hub) bool { return h.outputs["led"].level == 0 })
	resp, body = c.do("GET", "/api/telemetry", "")
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("telemetry: %s %s, want 403", resp.Status, body)
	}
	snap := c.lines()
	if len(snap.Events) != 0 {
		t.Errorf("/api/lines carries events: %+v", snap.Events)
	}
	// A new stream's first message is the whole present state.
	last := c.events().wait("a snapshot", func(Snapshot) bool { return true })
	if len(r.web.hub.events) < 2 {
		t.Fatalf("only %d events recorded", len(r.web.hub.events))
	}
	for _, e := range last.Events {
		t.Errorf("carol sees event %+v", e)
	}
}

// mapAuth is an Authenticator from a table, which also says who exists (userChecker).
type mapAuth map[string]string

func (m mapAuth) Check(user, password string) bool { p, ok := m[user]; return ok && p == password }
func (m mapAuth) Has(user string) bool             { _, ok := m[user]; return ok }

// Sign-in: right and wrong passwords, the cookie's attributes, sign-out, and no password in
// the log.
func TestSignIn(t *testing.T) {
	r := newRig(t, Options{})
	c := r.client()
	resp, body := c.do("POST", "/api/login", `{"user":"alice","password":"not-`+alicePassword+`"}`)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "wrong user name or password") {
		t.Fatalf("wrong password: %s %s", resp.Status, body)
	}
	if len(resp.Cookies()) != 0 {
		t.Fatalf("wrong password set cookies %v", resp.Cookies())
	}
	resp, body = c.do("POST", "/api/login", `{"user":"alice","password":"`+alicePassword+`"}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("sign in: %s %s", resp.Status, body)
	}
	ck := resp.Cookies()
	if len(ck) != 1 {
		t.Fatalf("cookies %v", ck)
	}
	want := http.Cookie{Name: cookieName, Path: "/", MaxAge: 30 * 24 * 3600, HttpOnly: true, SameSite: http.SameSiteStrictMode}
	got := *ck[0]
	if got.Name != want.Name || got.Path != want.Path || got.MaxAge != want.MaxAge || !got.HttpOnly || got.SameSite != want.SameSite || got.Secure {
		t.Fatalf("cookie %+v, want %+v (not Secure over plain HTTP)", got, want)
	}
	if len(got.Value) < 40 {
		t.Fatalf("session id %q is short", got.Value)
	}
	ev := c.events()
	ev.wait("a snapshot", func(Snapshot) bool { return true })
	if resp, _ := c.do("POST", "/api/logout", ""); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("sign out: %s", resp.Status)
	}
	if err := ev.waitEnd(); err == nil {
		t.Fatal("stream ended without error")
	}
	// The old cookie is dead on the server, not just deleted in this jar.
	stale := newClient(t, r.url)
	if resp, _ := stale.do("GET", "/api/lines", "", "Cookie: "+cookieName+"="+got.Value); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("session after sign-out: %s", resp.Status)
	}
	// A form post, as the page sends without its script, redirects home.
	req, _ := http.NewRequest("POST", r.url+"/api/login", strings.NewReader("user=alice&password="+alicePassword))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := newClient(t, r.url).hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" || len(resp.Cookies()) != 1 {
		t.Fatalf("form sign-in: %s %v", resp.Status, resp.Header)
	}
	if log := r.logBuf.String(); strings.Contains(log, alicePassword) {
		t.Fatal("the password is in the log")
	} else if !regexp.MustCompile(`msg="web: sign-in failed" .*user=alice remote=127.0.0.1`).MatchString(log) {
		t.Errorf("failed sign-in not logged with the user:\n%s", log)
	}
}

// Over TLS the cookie is Secure.
func TestSecureCookieOverTLS(t *testing.T) {
	r := newRig(t, Options{})
	srv := httptest.NewUnstartedServer(r.web.Handler())
	srv.StartTLS()
	t.Cleanup(srv.Close)
	hc := srv.Client()
	req, _ := http.NewRequest("POST", srv.URL+"/api/login", strings.NewReader(`{"user":"alice","password":"`+alicePassword+`"}`))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ck := resp.Cookies(); resp.StatusCode != http.StatusOK || len(ck) != 1 || !ck[0].Secure {
		t.Fatalf("%s %v: want a Secure cookie", resp.Status, ck)
	}
	if resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
		t.Fatal("not TLS")
	}
}

// A user taken out of the password file is signed out at the next request.
func TestUserRemoved(t *testing.T) {
	users := mapAuth{"dave": "dave-secret"}
	var gone atomic.Bool
	r := newRig(t, Options{Auth: removable{users, &gone}})
	c := r.client()
	c.login("dave", "dave-secret")
	c.lines()
	gone.Store(true)
	if resp, _ := c.do("GET", "/api/lines", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("removed user: %s, want 401", resp.Status)
	}
	if n := r.web.sessions.count(); n != 0 {
		t.Fatalf("%d sessions left", n)
	}
}

// removable is an Authenticator whose users all vanish when gone is set.
type removable struct {
	users mapAuth
	gone  *atomic.Bool
}

func (a removable) Check(u, p string) bool { return !a.gone.Load() && a.users.Check(u, p) }
func (a removable) Has(u string) bool      { return !a.gone.Load() && a.users.Has(u) }

// The throttle refuses before checking the password, with Retry-After; the built-in backoff
// slows one address down while the right password from another address still gets in.
func TestThrottle(t *testing.T) {
	t.Run("refuses before checking", func(t *testing.T) {
		var checked atomic.Int32
		r := newRig(t, Options{Auth: countingAuth{&checked}, Throttle: fixedWait(7 * time.Second)})
		resp, body := r.client().do("POST", "/api/login", `{"user":"alice","password":"x"}`)
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "7" || !strings.Contains(body, "try again in 7 s") {
			t.Fatalf("got %s %v %s", resp.Status, resp.Header, body)
		}
		resp, _ = r.client().do("GET", "/api/lines", "", "Authorization: Basic "+basic("alice", "x"))
		if resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("basic auth: %s, want 429", resp.Status)
		}
		if n := checked.Load(); n != 0 {
			t.Fatalf("password checked %d times while throttled", n)
		}
	})
	t.Run("per address", func(t *testing.T) {
		now := time.Unix(1_700_000_000, 0)
		r := newRig(t, Options{Throttle: newBackoff(func() time.Time { return now })})
		from := func(ip string) *client {
			c := newClient(t, r.url)
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
			c.hc.Transport = &http.Transport{DialContext: d.DialContext}
			return c
		}
		attacker, owner := from("127.0.0.1"), from("127.0.0.2")
		for i := 0; i < freeFailures+1; i++ {
			resp, body := attacker.do("POST", "/api/login", `{"user":"alice","password":"guess`+strconv.Itoa(i)+`"}`)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("guess %d: %s %s", i, resp.Status, body)
			}
		}
		resp, _ := attacker.do("POST", "/api/login", `{"user":"alice","password":"`+alicePassword+`"}`)
		if resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("after %d failures: %s, want 429", freeFailures+1, resp.Status)
		}
		owner.login("alice", alicePassword)
	})
}

// fixedWait is a Throttle that always asks for the same wait (0: none).
type fixedWait time.Duration

func (f fixedWait) Begin(string) (time.Duration, bool) { return time.Duration(f), f == 0 }
func (fixedWait) End(string, string, bool)             {}

type countingAuth struct{ n *atomic.Int32 }

func (c countingAuth) Check(string, string) bool { c.n.Add(1); return false }

// Without sign-in (a page on loopback only) everything works without a session, the
// cross-site check still holds, and changes made on the page say so.
func TestAnonymous(t *testing.T) {
	r := newRig(t, Options{Anonymous: true})
	c := r.client()
	if s := c.lines(); s.User != "" || output(t, s, "led").State != "off" {
		t.Fatalf("lines %+v", s)
	}
	ev := c.events()
	if resp, body := c.do("POST", "/api/outputs/led", `{"state":"on"}`, "Origin: http://evil.example"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site: %s %s", resp.Status, body)
	}
	if resp, body := c.do("POST", "/api/outputs/led", `{"state":"on"}`); resp.StatusCode != http.StatusOK {
		t.Fatalf("switch: %s %s", resp.Status, body)
	}
	ev.wait("the change by the page", func(s Snapshot) bool {
		return len(s.Events) == 1 && s.Events[0].By == anonymousBy
	})
	if resp, _ := c.do("POST", "/api/login", `{"user":"alice","password":"x"}`); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("sign-in with sign-in off: %s", resp.Status)
	}
}

// Without a connection to the broker the page says so and commands get 503.
func TestNoBroker(t *testing.T) {
	log, _ := testLog(t)
	dialed := make(chan struct{}, 1)
	s, err := New(Options{
		Dial: func(context.Context) (net.Conn, error) {
			select {
			case dialed <- struct{}{}:
			default:
			}
			return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errRefused}
		},
		Outputs: []Output{{Name: "led", CommandTopic: ledTopic}},
		Auth:    loadPasswords(t),
		Logger:  log,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	<-dialed
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL)
	c.login("alice", alicePassword)
	if snap := c.lines(); snap.Connected || snap.Status != statusUnknown || output(t, snap, "led").State != "unknown" {
		t.Fatalf("lines %+v", snap)
	}
	resp, body := c.do("POST", "/api/outputs/led", `{"state":"on"}`)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "no connection to the broker") {
		t.Fatalf("got %s %s, want 503", resp.Status, body)
	}
}

var errRefused = &net.AddrError{Err: "connection refused (test)", Addr: "nowhere"}

// A command the device does not confirm in time gets 202 and the state as it stands.
func TestUnconfirmed(t *testing.T) {
	r := newRig(t, Options{})
	r.stopDevice()
	r.waitHub("the device offline", func(h *hub) bool { return h.status == statusOffline })
	c := r.client()
	c.login("alice", alicePassword)
	start := time.Now()
	resp, body := c.do("POST", "/api/outputs/led", `{"state":"on"}`)
	if resp.StatusCode != http.StatusAccepted || !strings.Contains(body, `"pending":true`) || !strings.Contains(body, `"state":"off"`) {
		t.Fatalf("got %s %s, want 202 pending with state off", resp.Status, body)
	}
	if d := time.Since(start); d < confirmTimeout {
		t.Fatalf("answered after %v, before the %v wait", d, confirmTimeout)
	}
}

// Telemetry: the retained document as published, 404 before there is one.
func TestTelemetry(t *testing.T) {
	r := newRig(t, Options{})
	c := r.client()
	c.login("alice", alicePassword)
	resp, body := c.do("GET", "/api/telemetry", "")
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "no telemetry received yet on raspberry/telemetry") {
		t.Fatalf("before any: %s %s", resp.Status, body)
	}
	ev := c.events()
	r.mosquittoPub(telemetryTopic, "not json", "-r")
	r.mosquittoPub(telemetryTopic, `{"cpu_temp_c": 48.25, "uptime_s": 3600, "clients": 2}`, "-r")
	snap := ev.wait("telemetry", func(s Snapshot) bool { return s.Telemetry != nil })
	if string(snap.Telemetry) != `{"cpu_temp_c":48.25,"uptime_s":3600,"clients":2}` {
		t.Fatalf("telemetry in the stream: %s", snap.Telemetry)
	}
	resp, body = c.do("GET", "/api/telemetry", "")
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(body) != string(snap.Telemetry) || resp.Header.Get("Last-Modified") == "" {
		t.Fatalf("GET /api/telemetry: %s %v %s", resp.Status, resp.Header, body)
	}
}

// The page and its files, with gzip and revalidation; the manifest and the icons it names.
func TestStaticFiles(t *testing.T) {
	r := newRig(t, Options{Title: "Garden <Pi>"})
	c := r.client()
	resp, body := c.do("GET", "/", "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "<title>Garden &lt;Pi&gt;</title>") {
		t.Fatalf("GET /: %s %s", resp.Status, body)
	}
	for _, link := range []string{`rel="manifest" href="/manifest.webmanifest"`, `rel="apple-touch-icon" href="/apple-touch-icon.png"`, `name="viewport"`} {
		if !strings.Contains(body, link) {
			t.Errorf("page lacks %s", link)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
	etag := resp.Header.Get("ETag")
	if resp, _ := c.do("GET", "/", "", "If-None-Match: "+etag); resp.StatusCode != http.StatusNotModified {
		t.Errorf("revalidation: %s", resp.Status)
	}
	// Go's client asks for gzip and unpacks it by itself; ask by hand to see the header.
	req, _ := http.NewRequest("GET", r.url+"/app.js", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	gz, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	gz.Body.Close()
	if gz.Header.Get("Content-Encoding") != "gzip" {
		t.Errorf("app.js not gzipped: %v", gz.Header)
	}
	resp, body = c.do("GET", "/manifest.webmanifest", "")
	var m struct {
		Name, Display string
		StartURL      string `json:"start_url"`
		ThemeColor    string `json:"theme_color"`
		Icons         []struct{ Src, Sizes, Type string }
	}
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("manifest %s: %v", body, err)
	}
	if !strings.Contains(body, `"name":"Garden \u003cPi\u003e"`) || !strings.Contains(body, `"display":"standalone"`) || m.ThemeColor != themeColor || m.StartURL != "/" {
		t.Errorf("manifest %s", body)
	}
	sizes := map[string]bool{}
	for _, ic := range m.Icons {
		sizes[ic.Sizes] = true
		checkPNG(t, c, ic.Src, ic.Sizes)
	}
	if !sizes["192x192"] || !sizes["512x512"] {
		t.Errorf("manifest icons %+v, want 192 and 512", m.Icons)
	}
	checkPNG(t, c, "/apple-touch-icon.png", "180x180")
}

// checkPNG fetches path and checks it is a PNG of size ("WxH").
func checkPNG(t *testing.T, c *client, path, size string) {
	t.Helper()
	resp, body := c.do("GET", path, "")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "image/png" {
		t.Fatalf("GET %s: %s %v", path, resp.Status, resp.Header)
	}
	cfg, err := png.DecodeConfig(strings.NewReader(body))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if got := fmt.Sprintf("%dx%d", cfg.Width, cfg.Height); got != size {
		t.Errorf("%s is %s, want %s", path, got, size)
	}
}
