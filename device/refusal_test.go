package device

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/pimqtt/pimqtt/auth"
	"github.com/pimqtt/pimqtt/mqtttest"
)

// The hints pimqtt's main gives; the tests check they reach the log as given.
var testHints = Hints{
	Credentials: "--username and --password (or env PIMQTT_PASSWORD)",
	ClientID:    "--client-id",
}

// waitRefusals waits until the device has dialled at least n times and returns the error and
// warn records logged about failed connections by then.
func waitRefusals(t *testing.T, k *killableDialer, logs *logRecorder, n int) []logRec {
	t.Helper()
	k.dials.waitFor(t, waitTimeout, fmt.Sprintf("%d dials", n), func(d int) bool { return d >= n })
	var out []logRec
	for _, msg := range []string{msgCannotConnect, msgRefusedCredentials, msgWantsCredentials, msgRefusedClientID} {
		out = append(out, logs.all(msg)...)
	}
	return out
}

// TestCredentialsRefusedMosquitto runs the device against the real mosquitto with a password
// file: a wrong password, or none, is reported once per outage at error level, saying where
// the credentials are set; the right one connects.
func TestCredentialsRefusedMosquitto(t *testing.T) {
	t.Parallel()
	pwfile := filepath.Join(t.TempDir(), "passwd")
	if err := auth.SetPassword(pwfile, "pi", "raspberry", true); err != nil {
		t.Fatal(err)
	}
	m := mqtttest.StartMosquitto(t, mqtttest.MosquittoConfig{Extra: []string{
		"allow_anonymous false", "password_file " + pwfile}})
	url := "tcp://127.0.0.1:" + strconv.Itoa(m.Port)

	tests := []struct {
		name, user, password string
		msg, fix             string // "" msg: connects
	}{
		{"wrong password", "pi", "wrong", msgRefusedCredentials, "check " + testHints.Credentials},
		{"unknown user", "mallory", "raspberry", msgRefusedCredentials, "check " + testHints.Credentials},
		{"no credentials", "", "", msgWantsCredentials, "the broker wants a user name and password: set them with " + testHints.Credentials},
		{"right password", "pi", "raspberry", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			inner, err := NetDialer(url, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			k := &killableDialer{inner: inner}
			log, logs := newLogger(t)
			d := newTestDeviceOpts(t, Options{Dial: k.dial, BrokerLabel: url, Logger: log, Hints: testHints,
				Username: tt.user, Password: tt.password,
				Outputs: []Output{{Name: "led", CommandTopic: "raspberry/led", Line: &fakeLine{}}}})
			if err := d.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			if tt.msg == "" {
				waitClosed(t, d.Ready(), "Ready")
				return
			}
			got := waitRefusals(t, k, logs, 3)
			if len(got) != 1 {
				t.Fatalf("%d failure reports for one outage of 3 attempts, want 1: %v", len(got), got)
			}
			r := got[0]
			if r.Level != slog.LevelError || r.Msg != tt.msg || r.Attrs["fix"] != tt.fix || r.Attrs["broker"] != url {
				t.Errorf("logged %v\nwant level ERROR, msg %q, fix %q, broker %q", r, tt.msg, tt.fix, url)
			}
			if tt.user != "" && r.Attrs["username"] != tt.user {
				t.Errorf("username = %q, want %q", r.Attrs["username"], tt.user)
			}
			for _, v := range r.Attrs {
				if tt.password != "" && v == tt.password {
					t.Errorf("the password reached the log: %v", r)
				}
			}
		})
	}
}

// connackRefuser is a Mochi hook that refuses every client with the CONNACK code given, as a
// broker refusing credentials or a client id does.
type connackRefuser struct {
	mochi.HookBase
	s    *mochi.Server
	code packets.Code
}

func (*connackRefuser) ID() string           { return "test-connack-refuser" }
func (*connackRefuser) Provides(b byte) bool { return b == mochi.OnConnect }
func (h *connackRefuser) OnConnect(cl *mochi.Client, _ packets.Packet) error {
	// Mochi writes no CONNACK for an OnConnect error: send it, as pimqtt's broker does.
	_ = h.s.SendConnack(cl, h.code, false, nil)
	return h.code
}

// TestRefusalsMochi: each CONNACK code reaches the log as the failure it is, once per outage,
// with the hint for what to fix; a change of failure is logged again (a broker that was down
// comes up and refuses the client id).
func TestRefusalsMochi(t *testing.T) {
	tests := []struct {
		name  string
		code  packets.Code // what Mochi is told; it maps MQTT 5 codes for 3.1.1 clients
		level slog.Level
		msg   string
		fix   string
	}{
		{"bad user name or password (rc 4)", packets.Code{Code: 0x04}, slog.LevelError, msgRefusedCredentials, "check " + testHints.Credentials},
		{"not authorized (rc 5)", packets.Code{Code: 0x05}, slog.LevelError, msgRefusedCredentials, "check " + testHints.Credentials},
		{"bad user name or password (0x86, sent as rc 5)", packets.ErrBadUsernameOrPassword, slog.LevelError, msgRefusedCredentials, "check " + testHints.Credentials},
		{"identifier rejected (0x85, sent as rc 2)", packets.ErrClientIdentifierNotValid, slog.LevelError, msgRefusedClientID,
			"another client may have this id, or the broker reserves it (pimqtt does for its own device): pick another with " + testHints.ClientID},
		{"server unavailable (rc 3)", packets.ErrServerUnavailable, slog.LevelWarn, msgCannotConnect, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := newMochiBroker(t)
			if err := b.s.AddHook(&connackRefuser{s: b.s, code: tt.code}, nil); err != nil {
				t.Fatal(err)
			}
			// The first two attempts find no broker: that outage is reported first, then the
			// refusal, which is news.
			var down atomic.Int32
			k := &killableDialer{inner: func(ctx context.Context) (net.Conn, error) {
				if down.Add(1) <= 2 {
					return nil, errRefusedTest
				}
				return b.dial(ctx)
			}}
			log, logs := newLogger(t)
			d := newTestDeviceOpts(t, Options{Dial: k.dial, BrokerLabel: "in-process", Logger: log, Hints: testHints,
				Username: "pi", Password: "secret", ClientID: "pimqtt-test-refused",
				Outputs: []Output{{Name: "led", CommandTopic: "raspberry/led", Line: &fakeLine{}}}})
			if err := d.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			got := waitRefusals(t, k, logs, 5)
			closeDevice(t, d)
			// Mochi 2.7.9's Close races a connection still being established (upstream
			// 541), and this device redials fast: let the last one finish first.
			b.active.waitFor(t, waitTimeout, "Mochi to drop every connection", func(n int) bool { return n == 0 })
			want := []string{msgCannotConnect}
			if tt.msg != msgCannotConnect {
				want = append(want, tt.msg)
			}
			var msgs []string
			for _, r := range got {
				msgs = append(msgs, r.Msg)
			}
			if fmt.Sprint(msgs) != fmt.Sprint(want) {
				t.Fatalf("failure reports %q, want %q", msgs, want)
			}
			r := logs.all(tt.msg)[len(logs.all(tt.msg))-1]
			if r.Level != tt.level || r.Attrs["fix"] != tt.fix {
				t.Errorf("logged %v\nwant level %v, fix %q", r, tt.level, tt.fix)
			}
			if tt.msg == msgRefusedClientID && r.Attrs["client_id"] != "pimqtt-test-refused" {
				t.Errorf("client_id = %q, want the device's", r.Attrs["client_id"])
			}
		})
	}
}

func TestClassifyRefusal(t *testing.T) {
	tests := []struct {
		err  error
		want refusal
	}{
		{&connackError{code: 4, err: errors.New("bad user name or password")}, refusalCredentials},
		{&connackError{code: 5, err: errors.New("not Authorized")}, refusalCredentials},
		{&connackError{code: 0x86, err: errors.New("?")}, refusalCredentials},
		{&connackError{code: 0x87, err: errors.New("?")}, refusalCredentials},
		{&connackError{code: 2, err: errors.New("identifier rejected")}, refusalClientID},
		{&connackError{code: 0x85, err: errors.New("?")}, refusalClientID},
		{fmt.Errorf("wrapped: %w", &connackError{code: 4, err: errors.New("x")}), refusalCredentials},
		{errRefusedTest, refusalOther},
		{context.DeadlineExceeded, refusalOther},
	}
	for _, tt := range tests {
		if got := classifyRefusal(tt.err); got != tt.want {
			t.Errorf("classifyRefusal(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
