package device

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pimqtt/pimqtt/gpio"
	"github.com/pimqtt/pimqtt/mqtttest"
)

func TestSimTopicValidation(t *testing.T) {
	dial := func(context.Context) (net.Conn, error) { return nil, errRefusedTest }
	log, _ := newLogger(t)
	base := func() Options {
		return Options{Dial: dial, Logger: log,
			Outputs: []Output{{Name: "led", CommandTopic: "raspberry/led", Line: &fakeLine{}}},
			Inputs: []Input{{Name: "button", StateTopic: "raspberry/button/state", SimTopic: "raspberry/button/sim",
				Line: gpio.NewSimInput("button", gpio.WithLogger(log))}}}
	}
	bad := []struct {
		name   string
		mutate func(*Options)
		errHas string
	}{
		{"a line that cannot be driven", func(o *Options) { o.Inputs[0].Line = newFakeInput(0) }, "cannot be driven"},
		{"sim topic is the state topic", func(o *Options) { o.Inputs[0].SimTopic = "raspberry/button/state" }, "collides"},
		{"sim topic is a command topic", func(o *Options) { o.Inputs[0].SimTopic = "raspberry/led" }, "collides"},
		{"sim topic is the status topic", func(o *Options) { o.Inputs[0].SimTopic = "raspberry/status" }, "collides"},
		{"wildcard sim topic", func(o *Options) { o.Inputs[0].SimTopic = "raspberry/+/sim" }, "wildcard"},
	}
	for _, tc := range bad {
		o := base()
		tc.mutate(&o)
		_, err := New(o)
		if err == nil {
			t.Errorf("%s: New accepted it", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.errHas) || !strings.Contains(err.Error(), "SimTopic") {
			t.Errorf("%s: error %q does not name SimTopic and %q", tc.name, err, tc.errHas)
		}
	}
	if _, err := New(base()); err != nil {
		t.Fatalf("New with a SimTopic on a simulated line: %v", err)
	}
}

// TestSimTopicMochi: payloads on a simulated input's SimTopic drive the line, and its state
// follows, retained; what is not a level changes nothing.
func TestSimTopicMochi(t *testing.T) {
	b := newMochiBroker(t)
	log, logs := newLogger(t)
	button := gpio.NewSimInput("button", gpio.WithLogger(log))
	d := newTestDeviceOpts(t, Options{Dial: b.dial, BrokerLabel: "in-process", Logger: log,
		Inputs: []Input{{Name: "button", StateTopic: "raspberry/button/state", SimTopic: "raspberry/button/sim", Line: button}}})
	if err := d.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, d.Ready(), "Ready")
	pos := b.mark()
	steps := []struct {
		payload string
		want    int
	}{
		{"1", 1},
		{"OFF", 0},
		{"true", 1},
		{"TOGGLE", 0},
		{`{"state":"ON"}`, 1},
	}
	for _, st := range steps {
		b.publish(t, "raspberry/button/sim", []byte(st.payload))
		pos = b.waitMsg(t, pos, "raspberry/button/state", strconv.Itoa(st.want))
		if v, _ := button.Value(); v != st.want {
			t.Fatalf("after %q the line is %d, want %d", st.payload, v, st.want)
		}
		b.checkRetained(t, map[string]string{"raspberry/button/state": strconv.Itoa(st.want)})
	}
	mark := logs.mark()
	b.publish(t, "raspberry/button/sim", []byte("blink"))
	logs.waitMsg(t, mark, "unknown payload", "topic", "raspberry/button/sim")
	if v, _ := button.Value(); v != 1 {
		t.Fatalf("an unknown payload moved the line to %d", v)
	}
	closeDevice(t, d)
}

// TestSimTopicMosquitto: against the real mosquitto, a retained level on the SimTopic drives
// the input as soon as the device subscribes, and mosquitto_pub drives it from then on.
func TestSimTopicMosquitto(t *testing.T) {
	t.Parallel()
	m := mqtttest.StartMosquitto(t, mqtttest.MosquittoConfig{Extra: []string{"allow_anonymous true"}})
	mosquittoPub(t, m.Port, "raspberry/door/sim", "1", "-r")
	dial, err := NetDialer("tcp://127.0.0.1:"+strconv.Itoa(m.Port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	log, _ := newLogger(t)
	door := gpio.NewSimInput("door", gpio.WithLogger(log))
	d := newTestDeviceOpts(t, Options{Dial: dial, BrokerLabel: "tcp mosquitto", Logger: log,
		Inputs: []Input{{Name: "door", StateTopic: "raspberry/door/state", SimTopic: "raspberry/door/sim", Line: door}}})
	states := mosquittoSubStream(t, m.Port, "raspberry/door/state")
	if err := d.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	pos := waitLine(t, states, 0, "1")
	mosquittoPub(t, m.Port, "raspberry/door/sim", "0")
	waitLine(t, states, pos, "0")
	if got := mosquittoSubOne(t, m.Port, "raspberry/door/state"); got != "0" {
		t.Fatalf("retained state = %q, want 0", got)
	}
	closeDevice(t, d)
}
