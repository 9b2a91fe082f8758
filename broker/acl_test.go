package broker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	pahopackets "github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/pimqtt/pimqtt/auth"
	"github.com/pimqtt/pimqtt/mqtttest"
)

// rawConnect sends a CONNECT with a user name and password (user "" for
// none) and returns the CONNACK's description.
func rawConnect(t *testing.T, c *rawClient, clientID, user, password string) string {
	t.Helper()
	var spec string
	switch {
	case user == "" && c.version == 5:
		spec = connect5 + "02 H60 00 s'" + clientID + "'"
	case user == "":
		spec = connect4 + "02 H60 s'" + clientID + "'"
	case c.version == 5:
		spec = connect5 + "C2 H60 00 s'" + clientID + "' s'" + user + "' s'" + password + "'"
	default:
		spec = connect4 + "C2 H60 s'" + clientID + "' s'" + user + "' s'" + password + "'"
	}
	if err := c.write(pk(spec)); err != nil {
		t.Fatal(err)
	}
	p, err := c.next()
	if err != nil {
		return "closed"
	}
	return p.describe(c.version)
}

// publishOutcome publishes at qos and describes what the broker answers,
// finishing the QoS 2 flow where the answer invites it; a PINGREQ after
// it proves nothing else came (QoS 0 included).
func publishOutcome(t *testing.T, c *rawClient, topic string, qos byte, id int) string {
	t.Helper()
	props := ""
	if c.version == 5 {
		props = " 00"
	}
	spec := fmt.Sprintf("%02x r? s'%s'", 0x30|qos<<1, topic)
	if qos > 0 {
		spec += fmt.Sprintf(" m%d", id)
	}
	if err := c.write(pk(spec + props + " 'p'")); err != nil {
		t.Fatal(err)
	}
	var out []string
	if qos > 0 {
		p, err := c.next()
		if err != nil {
			return "closed"
		}
		d := p.describe(c.version)
		// mosquitto says "no matching subscribers" (0x10), a success
		// code pimqtt never sends (it is optional).
		d = strings.TrimSuffix(d, " 0x10")
		out = append(out, d)
		if d == "PUBREC" {
			if err := c.write(pk(fmt.Sprintf("62 02 m%d", id))); err != nil {
				t.Fatal(err)
			}
			p, err := c.next()
			if err != nil {
				return "closed"
			}
			out = append(out, p.describe(c.version))
		}
	}
	if err := c.write([]byte{0xC0, 0x00}); err != nil {
		return strings.Join(append(out, "closed"), "; ")
	}
	p, err := c.next()
	if err != nil {
		return strings.Join(append(out, "closed"), "; ")
	}
	if d := p.describe(c.version); d != "PINGRESP" {
		out = append(out, d)
	}
	return strings.Join(out, "; ")
}

// TestACLAcksSameAsMosquitto: MQTT 3.1.1 and 5 clients get, for every
// QoS, the answers mosquitto gives to a PUBLISH the ACL refuses (3.1.1:
// the usual acknowledgement; 5: 0x87) and to one to $SYS, and the
// SUBACK differs only where pimqtt refuses what mosquitto would never
// deliver on (3.1.1: 0x80, 5: 0x87). Mochi alone would disconnect the
// 3.1.1 client and never acknowledge the $SYS one.
func TestACLAcksSameAsMosquitto(t *testing.T) {
	passwd, acl := writeACLFixture(t)
	m := mqtttest.StartMosquitto(t, mqtttest.MosquittoConfig{Extra: []string{
		"allow_anonymous true", "password_file " + passwd, "acl_file " + acl,
	}})
	b, _ := startTestBroker(t, Options{
		Listeners:      []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}},
		PasswordFile:   passwd,
		ACLFile:        acl,
		AllowAnonymous: true,
	})
	brokers := map[string]string{"mosquitto": fmt.Sprintf("127.0.0.1:%d", m.Port), "pimqtt": listenerAddr(t, b, TCP)}
	outcome := map[string][]string{}
	for name, addr := range brokers {
		for _, version := range []byte{4, 5} {
			c := dialRaw(t, addr, version)
			if ack := rawConnect(t, c, fmt.Sprintf("acks%d", version), "bob", passwordOf("bob")); ack != "CONNACK 0x00" {
				t.Fatalf("%s: %s", name, ack)
			}
			id := 1
			for _, topic := range []string{"alice/x", "$SYS/x", "shared/ok", "users/bob/x"} {
				for _, qos := range []byte{0, 1, 2} {
					o := publishOutcome(t, c, topic, qos, id)
					id++
					outcome[name] = append(outcome[name], fmt.Sprintf("v%d %s QoS %d: %s", version, topic, qos, o))
				}
			}
			sub := "82 r? m99 s'alice/#' 01"
			if version == 5 {
				sub = "82 r? m99 00 s'alice/#' 01"
			}
			if err := c.write(pk(sub)); err != nil {
				t.Fatal(err)
			}
			p, err := c.next()
			if err != nil {
				t.Fatalf("%s: SUBACK: %v", name, err)
			}
			outcome[name] = append(outcome[name], fmt.Sprintf("v%d subscribe alice/#: %s", version, p.describe(version)))
			c.close()
		}
	}
	want, got := outcome["mosquitto"], outcome["pimqtt"]
	if len(want) != len(got) {
		t.Fatalf("mosquitto:\n%s\npimqtt:\n%s", strings.Join(want, "\n"), strings.Join(got, "\n"))
	}
	for i := range want {
		w := want[i]
		switch w {
		case "v4 subscribe alice/#: SUBACK 0x01":
			w = "v4 subscribe alice/#: SUBACK 0x80"
		case "v5 subscribe alice/#: SUBACK 0x01":
			w = "v5 subscribe alice/#: SUBACK 0x87"
		}
		if got[i] != w {
			t.Errorf("pimqtt %q, want %q (mosquitto %q)", got[i], w, want[i])
		}
	}
	t.Logf("mosquitto's answers:\n%s", strings.Join(want, "\n"))
}

const (
	stateTopic  = "raspberry/led/state"
	statusTopic = "raspberry/status"
)

// TestDefaultRights: without an ACL file, network clients may read
// everything and write everything but $SYS and the device's state and
// status topics, whose retained values they cannot replace either; a
// will on the device's status topic is dropped with a log line; the
// device itself writes its topics.
func TestDefaultRights(t *testing.T) {
	b, logs := startTestBroker(t, Options{
		Listeners:      []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}},
		AllowAnonymous: true,
		DeviceClientID: testDeviceID,
		DeviceTopics:   []string{stateTopic, statusTopic},
	})
	addr := listenerAddr(t, b, TCP)
	device := connectInMemory(t, b, testDeviceID)
	if tok := device.Publish(stateTopic, 1, true, "device:0"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("device publish: %v", tok.Error())
	}

	sub := connectScriptClient(t, addr, "sub", "sub", "", nil)
	sub.subscribe(t, "raspberry/#", "$SYS/broker/x", "other/#", "sync/#")
	for f, code := range sub.subacks {
		if code != 1 {
			t.Errorf("subscription to %s: SUBACK %#x, want 1", f, code)
		}
	}

	// Wills: one on the device's status topic, dropped; one elsewhere.
	willBad := connectScriptClient(t, addr, "will-bad", "will-bad", "", &scriptWill{statusTopic, `{"status": "Off"}`})
	willOK := connectScriptClient(t, addr, "will-ok", "will-ok", "", &scriptWill{"other/will", "gone"})
	willBad.kill()
	willOK.kill()
	sub.waitUntil(t, "the allowed will", func() bool { return contains(sub.got, "other/will gone") })
	waitFor(t, 10*time.Second, "the forged will's client gone", func() bool {
		_, ok := b.server.Clients.Get("will-bad")
		return !ok
	})
	if !strings.Contains(logs.since(0), "will dropped: the client may not write its topic") ||
		!strings.Contains(logs.since(0), "topic="+statusTopic) {
		t.Errorf("no log line for the dropped will:\n%s", logs.since(0))
	}

	phone := connectScriptClient(t, addr, "phone", "phone", "", nil)
	phone.publish(t, stateTopic, 1, true)
	phone.publish(t, statusTopic, 2, true)
	phone.publish(t, "$SYS/broker/x", 1, false)
	phone.publish(t, "raspberry/led", 1, false) // the command topic stays open
	phone.publish(t, "other/x", 0, false)
	phone.publish(t, "sync/phone", 1, false)
	if tok := device.Publish(stateTopic, 1, true, "device:1"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("device publish: %v", tok.Error())
	}
	if tok := device.Publish("sync/device", 1, false, ""); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("device publish: %v", tok.Error())
	}
	sub.waitUntil(t, "both barriers", func() bool { return sub.syncs["phone"] && sub.syncs["device"] })
	sub.mu.Lock()
	got := append([]string(nil), sub.got...)
	sub.mu.Unlock()
	for _, want := range []string{stateTopic + " device:0", "raspberry/led phone:raspberry/led", "other/x phone:other/x", stateTopic + " device:1"} {
		if !contains(got, want) {
			t.Errorf("subscriber lacks %q: %q", want, got)
		}
	}
	for _, forged := range []string{stateTopic + " phone:" + stateTopic, statusTopic + " phone:" + statusTopic, "$SYS/broker/x phone:$SYS/broker/x", statusTopic + ` {"status": "Off"}`} {
		if contains(got, forged) {
			t.Errorf("subscriber received the forged %q", forged)
		}
	}
	if !strings.Contains(logs.since(0), "publish dropped: the client may not write the topic") {
		t.Errorf("no log line for the dropped publishes:\n%s", logs.since(0))
	}

	// The retained state is still the device's.
	late := connectScriptClient(t, addr, "late", "late", "", nil)
	late.subscribe(t, "raspberry/#", "sync/#")
	late.publish(t, "sync/late", 1, false)
	late.waitUntil(t, "its barrier", func() bool { return late.syncs["late"] })
	late.mu.Lock()
	defer late.mu.Unlock()
	if strings.Join(late.got, "|") != stateTopic+" device:1" {
		t.Fatalf("retained after the forgeries: %q, want only the device's %q", late.got, "device:1")
	}
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

// TestACLDeviceUnrestricted: with an ACL file that grants nothing, the
// in-process device still subscribes and publishes where it likes, and
// network clients get nothing.
func TestACLDeviceUnrestricted(t *testing.T) {
	acl := filepath.Join(t.TempDir(), "acl")
	if err := os.WriteFile(acl, []byte("# nothing for anyone\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, _ := startTestBroker(t, Options{
		Listeners:      []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}},
		AllowAnonymous: true,
		ACLFile:        acl,
		DeviceClientID: testDeviceID,
	})
	device := connectInMemory(t, b, testDeviceID)
	got := make(chan string, 10)
	tok := device.Subscribe("#", 1, func(_ paho.Client, m paho.Message) { got <- m.Topic() })
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("device subscribe: %v", tok.Error())
	}
	if tok := device.Publish(stateTopic, 1, true, "1"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("device publish: %v", tok.Error())
	}
	select {
	case topic := <-got:
		if topic != stateTopic {
			t.Fatalf("device got %q", topic)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the device does not get its own message")
	}
	c := dialRaw(t, listenerAddr(t, b, TCP), 5)
	defer c.close()
	if ack := rawConnect(t, c, "net", "", ""); ack != "CONNACK 0x00" {
		t.Fatal(ack)
	}
	if err := c.write(pk("82 r? m1 00 s'#' 01")); err != nil {
		t.Fatal(err)
	}
	c.expect("SUBACK 0x87")
	if o := publishOutcome(t, c, "raspberry/led", 1, 2); o != "PUBACK 0x87" {
		t.Fatalf("network client's publish: %s, want PUBACK 0x87", o)
	}
}

// TestControlCharactersRefused: a client id with a control character
// gets identifier rejected (3.1.1: 2, 5: 0x85), a user name with one bad
// user name or password (4, 0x86), before any password is checked.
// mosquitto closes such connections without a CONNACK (measured with
// 2.0.11); an answer tells the client why.
func TestControlCharactersRefused(t *testing.T) {
	file := filepath.Join(t.TempDir(), "passwd")
	if err := auth.SetPassword(file, "alice", "right", true); err != nil {
		t.Fatal(err)
	}
	b, logs := startTestBroker(t, Options{
		Listeners:      []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}},
		PasswordFile:   file,
		AllowAnonymous: true,
	})
	addr := listenerAddr(t, b, TCP)
	cases := []struct {
		name, id, user string
		v4, v5         string
	}{
		{"id with SOH", "a\x01b", "alice", "CONNACK 0x02", "CONNACK 0x85"},
		{"id with ESC", "a\x1b[2Jb", "", "CONNACK 0x02", "CONNACK 0x85"},
		{"id with DEL", "a\x7fb", "alice", "CONNACK 0x02", "CONNACK 0x85"},
		{"id with NEL (C1)", "a\u0085b", "alice", "CONNACK 0x02", "CONNACK 0x85"},
		{"user with newline", "ok", "ali\nce", "CONNACK 0x04", "CONNACK 0x86"},
		{"user with tab", "ok", "ali\tce", "CONNACK 0x04", "CONNACK 0x86"},
		{"user with DEL", "ok", "alice\x7f", "CONNACK 0x04", "CONNACK 0x86"},
		{"control", "ok", "alice", "CONNACK 0x00", "CONNACK 0x00"},
	}
	for _, tc := range cases {
		for _, version := range []byte{4, 5} {
			before := b.auth.passwordChecks.Load()
			c := dialRaw(t, addr, version)
			got := rawConnect(t, c, tc.id, tc.user, "right")
			c.close()
			want := tc.v4
			if version == 5 {
				want = tc.v5
			}
			if got != want {
				t.Errorf("%s, MQTT v%d: %s, want %s", tc.name, version, got, want)
			}
			if checked := b.auth.passwordChecks.Load() - before; want != "CONNACK 0x00" && checked != 0 {
				t.Errorf("%s: %d password(s) checked for a refused name", tc.name, checked)
			}
		}
	}
	if !strings.Contains(logs.since(0), "client refused: control character in the client id or user name") {
		t.Errorf("no log line:\n%s", logs.since(0))
	}
	if strings.Contains(logs.since(0), "\x1b") {
		t.Error("the log holds a raw escape character")
	}
}

// TestReloadACLAndPasswords: Reload puts new password and ACL files in
// force together; a connected client's subscriptions stay, and what
// reaches it follows the new rules at once (as in mosquitto: nothing once
// the topic is no longer readable, again once it is); a client whose
// password no longer checks out is disconnected; a file that cannot be
// read leaves both old files in force, and the error names the line.
func TestReloadACLAndPasswords(t *testing.T) {
	passwd, acl := writeACLFixture(t)
	b, logs := startTestBroker(t, Options{
		Listeners:      []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}},
		PasswordFile:   passwd,
		ACLFile:        acl,
		AllowAnonymous: true,
	})
	addr := listenerAddr(t, b, TCP)
	alice := connectScriptClient(t, addr, "alice", "alice", "alice", nil)
	alice.subscribe(t, "shared/#", "sync/#")
	bob := connectScriptClient(t, addr, "bob", "bob", "bob", nil)
	anon := connectScriptClient(t, addr, "anon", "anon", "", nil)

	step := 0
	// send publishes shared/NAME from bob and waits until alice has
	// everything bob sent before it.
	send := func(name string) {
		t.Helper()
		step++
		bob.publish(t, "shared/"+name, 1, false)
		barrier := fmt.Sprintf("bob%d", step)
		bob.publish(t, "sync/"+barrier, 1, false)
		alice.waitUntil(t, "barrier "+barrier, func() bool { return alice.syncs[barrier] })
	}
	received := func(name string) bool {
		alice.mu.Lock()
		defer alice.mu.Unlock()
		return contains(alice.got, "shared/"+name+" bob:shared/"+name)
	}
	writeACL := func(text string) {
		t.Helper()
		if err := os.WriteFile(acl, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	send("m1")
	if !received("m1") {
		t.Fatal("m1 not delivered under the first ACL")
	}
	writeACL(strings.Replace(aclFixture, "topic read shared/#", "topic read elsewhere/#", 1))
	if err := b.Reload(); err != nil {
		t.Fatal(err)
	}
	send("m2")
	if received("m2") {
		t.Fatal("m2 delivered although alice may no longer read shared/#")
	}
	writeACL(aclFixture)
	if err := b.Reload(); err != nil {
		t.Fatal(err)
	}
	send("m3")
	if !received("m3") {
		t.Fatal("m3 not delivered after the read right came back: the subscription should have stayed")
	}

	// A broken ACL file: the old rules stay, and the error says where.
	writeACL(aclFixture + "topik read x\n")
	err := b.Reload()
	badLine := fmt.Sprintf("%s:%d:", acl, strings.Count(aclFixture, "\n")+1)
	if err == nil || !strings.Contains(err.Error(), badLine) || !errors.Is(err, auth.ErrACLSyntax) {
		t.Fatalf("Reload with a broken ACL file: %v, want an error naming %s", err, badLine)
	}
	send("m4")
	if !received("m4") {
		t.Fatal("m4 not delivered: a failed reload must keep the old ACL in force")
	}
	if !strings.Contains(logs.since(0), "reload failed; the previous password and ACL files stay in force") {
		t.Errorf("no log line for the failed reload:\n%s", logs.since(0))
	}
	// A missing password file: the old passwords stay too (mosquitto
	// 2.0.11, measured, then lets any password in).
	writeACL(aclFixture)
	if err := os.Rename(passwd, passwd+".away"); err != nil {
		t.Fatal(err)
	}
	if err := b.Reload(); err == nil {
		t.Fatal("Reload without the password file succeeded")
	}
	if _, err := connectTCPAs(t, addr, "carol2", "carol", "wrong"); !errors.Is(err, pahopackets.ErrorRefusedBadUsernameOrPassword) {
		t.Fatalf("a wrong password after a failed reload: %v", err)
	}
	if err := os.Rename(passwd+".away", passwd); err != nil {
		t.Fatal(err)
	}

	// bob is removed: he is disconnected; alice and the anonymous client
	// stay.
	if err := auth.DeleteUser(passwd, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := b.Reload(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "bob disconnected", func() bool { return !bob.c.IsConnectionOpen() })
	if !alice.c.IsConnectionOpen() || !anon.c.IsConnectionOpen() {
		t.Fatal("alice or the anonymous client was disconnected by the reload")
	}
	if !strings.Contains(logs.since(0), "no longer accepted after the reload") {
		t.Errorf("no log line for bob's disconnection:\n%s", logs.since(0))
	}
}

// connectTCPAs connects a paho client (MQTT 3.1.1) with a user name and
// password and returns the CONNECT's outcome; a connected client is
// disconnected when the test ends.
func connectTCPAs(t testing.TB, addr, clientID, user, password string) (paho.Client, error) {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).
		SetUsername(user).SetPassword(password).
		SetAutoReconnect(false).SetConnectTimeout(10 * time.Second).SetProtocolVersion(4))
	tok := c.Connect()
	if !tok.WaitTimeout(20 * time.Second) {
		t.Fatalf("client %s: no CONNACK", clientID)
	}
	if tok.Error() == nil {
		t.Cleanup(func() { c.Disconnect(50) })
	}
	return c, tok.Error()
}
