package device

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
)

// downableDialer is a broker that can be taken down: while down, dials are refused (as a dead
// host's port answers) and, when taken down, its connections are cut.
type downableDialer struct {
	killableDialer
	down atomic.Bool
}

var errBrokerDown = errors.New("connect: connection refused (test broker down)")

func (d *downableDialer) dial(ctx context.Context) (net.Conn, error) {
	if d.down.Load() {
		return nil, errBrokerDown
	}
	return d.killableDialer.dial(ctx)
}

func (d *downableDialer) takeDown() { d.down.Store(true); d.killAll() }
func (d *downableDialer) bringUp()  { d.down.Store(false) }

// TestFailover: a device with two brokers connects to the first, moves to the second when the
// first dies, follows commands there with its status and state retained there, and at the next
// loss goes back to the first, without a restart.
func TestFailover(t *testing.T) {
	t.Parallel()
	brokers := []*mochiBroker{newMochiBroker(t), newMochiBroker(t)}
	dialers := []*downableDialer{{}, {}}
	for i := range dialers {
		dialers[i].inner = brokers[i].dial
	}
	log, rec := newLogger(t)
	line := &fakeLine{}
	d := newTestDeviceOpts(t, Options{
		Brokers: []Broker{{Label: "A", Dial: dialers[0].dial}, {Label: "B", Dial: dialers[1].dial}},
		Outputs: []Output{{Name: "led", CommandTopic: "raspberry/led", Line: line}},
		Logger:  log,
	})
	if err := d.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	waitClosed(t, d.Ready(), "Ready")
	if got := rec.all("connected to broker"); len(got) != 1 || got[0].Attrs["broker"] != "A" {
		t.Fatalf("first connection: %v, want one to A (the first listed)", got)
	}
	brokers[0].publish(t, "raspberry/led", []byte("1"))
	line.waitValue(t, 1)

	// Each move: take the broker in use down, wait until the device has subscribed and said
	// On at the other (status published follows the SUBACK), then command it there.
	for _, step := range []struct {
		down, to int
		label    string
		command  string
		want     int
	}{
		{down: 0, to: 1, label: "B", command: "0", want: 0},
		{down: 1, to: 0, label: "A", command: "1", want: 1},
	} {
		dialers[step.to].bringUp()
		mark := rec.mark()
		dialers[step.down].takeDown()
		rec.waitMsg(t, mark, "connected to broker", "broker", step.label)
		rec.waitMsg(t, mark, "status published")
		brokers[step.to].checkRetained(t, map[string]string{"raspberry/status": statusOn})
		mark = rec.mark()
		brokers[step.to].publish(t, "raspberry/led", []byte(step.command))
		line.waitValue(t, step.want)
		rec.waitMsg(t, mark, "state published", "value", step.command)
		brokers[step.to].checkRetained(t, map[string]string{"raspberry/led/state": step.command})
	}
	closeDevice(t, d)
}

// TestFailoverFirstDownAtStart: with the first broker down at boot the device connects to the
// second at once, and the log names both and says why the first was passed over (at debug).
func TestFailoverFirstDownAtStart(t *testing.T) {
	t.Parallel()
	b := newMochiBroker(t)
	down := &downableDialer{}
	down.down.Store(true)
	log, rec := newLogger(t)
	line := &fakeLine{}
	d := newTestDeviceOpts(t, Options{
		Brokers: []Broker{{Label: "tcp://first:1883", Dial: down.dial}, {Label: "tcp://second:1883", Dial: b.dial}},
		Outputs: []Output{{Name: "led", CommandTopic: "raspberry/led", Line: line}},
		Logger:  log,
	})
	if err := d.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	waitClosed(t, d.Ready(), "Ready")
	b.publish(t, "raspberry/led", []byte("1"))
	line.waitValue(t, 1)
	starting := rec.all("connecting to broker")
	if len(starting) != 1 || starting[0].Attrs["brokers"] != "tcp://first:1883 tcp://second:1883" {
		t.Errorf("start line %v, want brokers listed in order", starting)
	}
	passed := rec.all("broker unreachable, trying the next")
	if len(passed) == 0 || !strings.Contains(passed[0].Attrs["err"], "connection refused") {
		t.Errorf("no debug line about the first broker: %v", passed)
	}
	closeDevice(t, d)
}

// TestBrokersValidation: Dial and Brokers are exclusive, and every broker needs a Dial.
func TestBrokersValidation(t *testing.T) {
	dial := func(context.Context) (net.Conn, error) { return nil, errBrokerDown }
	outputs := []Output{{Name: "led", CommandTopic: "raspberry/led", Line: &fakeLine{}}}
	for _, tt := range []struct {
		name string
		opts Options
		want string
	}{
		{"neither", Options{Outputs: outputs}, "Options.Dial (or Options.Brokers) is required"},
		{"both", Options{Dial: dial, Brokers: []Broker{{Dial: dial}}, Outputs: outputs}, "not both"},
		{"broker without dial", Options{Brokers: []Broker{{Label: "a", Dial: dial}, {Label: "b"}}, Outputs: outputs}, "Options.Brokers[1] (b) has no Dial"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v, want %q", err, tt.want)
			}
		})
	}
}
