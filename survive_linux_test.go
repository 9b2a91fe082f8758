package main

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/pimqtt/pimqtt/broker"
	"github.com/pimqtt/pimqtt/device"
	"github.com/pimqtt/pimqtt/gpio"
	"github.com/pimqtt/pimqtt/mqtttest"
)

// The device survives everything on the broker side (broker restarts, a link cut without a
// FIN, a broker refusing its password), and the all-in-one binary shuts down cleanly and in
// bounded time on SIGTERM under load. The device package's survive_test.go has the flood and
// backoff-cap tests that need its internals.

const (
	statusOn  = `{"status": "On"}`
	statusOff = `{"status": "Off"}`
)

// TestSurviveMosquittoRestarts: device-only pimqtt against a real mosquitto that is stopped
// (SIGTERM), killed (SIGKILL) and stopped again, each time started anew (on a port picked
// afresh: the device reaches it through a relay that is pointed at each new broker, so the
// device keeps one address and no port is ever reused). After each restart the retained
// status is On again, the line's state is published again (the new broker has no retained
// messages: persistence is off), and the line follows commands.
func TestSurviveMosquittoRestarts(t *testing.T) {
	t.Parallel()
	pw := passwordFile(t, "device", "devpass", "phone", "s3cret")
	start := func() *mqtttest.Mosquitto {
		return mqtttest.StartMosquitto(t, mqtttest.MosquittoConfig{
			Extra: []string{"allow_anonymous false", "password_file " + pw}})
	}
	m := start()
	relay := mqtttest.NewRelay(t)
	relay.Forward("127.0.0.1:" + strconv.Itoa(m.Port))
	p := startProcess(t, []string{"PIMQTT_PASSWORD=devpass"}, "--mode", "device", "--gpio", "sim",
		"--broker", "tcp://"+relay.Addr(), "--username", "device", "--client-id", "pi-survive-restarts")
	sub := newSubscriber(t, mosquittoURL(m), "phone", "s3cret", "raspberry/status", "raspberry/led/state")
	sub.waitFor(t, "raspberry/status", statusOn)

	value := 1
	command(t, m, sub, value)
	ends := []struct {
		name string
		end  func(*mqtttest.Mosquitto, testing.TB)
	}{
		{"stop", (*mqtttest.Mosquitto).Stop},
		{"kill -9", (*mqtttest.Mosquitto).Kill},
		{"stop", (*mqtttest.Mosquitto).Stop},
	}
	for round, e := range ends {
		e.end(m, t)
		waitLogCount(t, p.logs, `msg="connection to broker lost"`, round+1)
		m = start()
		relay.Forward("127.0.0.1:" + strconv.Itoa(m.Port))
		up := time.Now()
		sub = newSubscriber(t, mosquittoURL(m), "phone", "s3cret", "raspberry/status", "raspberry/led/state")
		sub.waitFor(t, "raspberry/status", statusOn)
		back := time.Since(up)
		// Published again by the device: the new broker started empty.
		sub.waitFor(t, "raspberry/led/state", strconv.Itoa(value))
		t.Logf("round %d (%s): status On on the new broker %v after it was running", round+1, e.name, back.Round(time.Millisecond))
		if got := retained(t, m, "raspberry/status"); got != statusOn {
			t.Fatalf("round %d: retained status %q after the restart, want %q", round+1, got, statusOn)
		}
		if got := retained(t, m, "raspberry/led/state"); got != strconv.Itoa(value) {
			t.Fatalf("round %d: retained state %q after the restart, want %d", round+1, got, value)
		}
		value = 1 - value
		command(t, m, sub, value)
	}
	if n := strings.Count(p.logs.String(), `msg="connected to broker"`); n != len(ends)+1 {
		t.Errorf("%d connections logged, want %d (one per broker)", n, len(ends)+1)
	}
}

// TestSurviveCutWithoutFIN: the network between the device and its broker drops every packet
// while both ends keep their sockets (mqtttest.Relay.Cut). The broker, finding no packet within
// 1.5 times the device's keepalive, publishes the device's will (status Off); the device
// finds the dead link by its own keepalive and reconnects once the network is back, with its
// status On and its state published again and the line following commands. Against the real
// mosquitto and against pimqtt's own broker (the binary in broker mode).
//
// The keepalive cannot be set from pimqtt's command line, so the device runs in the test
// process through package device, as the binary's device mode does.
func TestSurviveCutWithoutFIN(t *testing.T) {
	t.Parallel()
	const keepAlive = 2 * time.Second
	tests := []struct {
		name  string
		start func(t *testing.T, pw string) (addr string)
		// slack is what the broker's own clock adds to 1.5 × keepalive: mosquitto 2.0 looks at
		// keepalives only every 6 s (keepalive.c: "last_keepalive_check + 5 < now") on a
		// whole-second clock, so its wills come up to 7 s late; Mochi sets a read deadline of
		// exactly 1.5 × keepalive at each packet.
		slack time.Duration
	}{
		{"mosquitto", func(t *testing.T, pw string) string {
			m := mqtttest.StartMosquitto(t, mqtttest.MosquittoConfig{
				Extra: []string{"allow_anonymous false", "password_file " + pw}})
			return "127.0.0.1:" + strconv.Itoa(m.Port)
		}, 7 * time.Second},
		{"pimqtt broker", func(t *testing.T, pw string) string {
			p := startProcess(t, nil, "--mode", "broker", "--password-file", pw,
				"--listen", "127.0.0.1:0", "--ws-listen", "")
			return p.listenAddr(t, broker.TCP)
		}, 500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pw := passwordFile(t, "device", "devpass", "phone", "s3cret")
			brokerAddr := tt.start(t, pw)
			relay := mqtttest.NewRelay(t)
			relay.Forward(brokerAddr)
			logs := &mqtttest.SyncBuffer{}
			log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			line := gpio.NewSim("GPIO21", gpio.WithLogger(log))
			dial, err := device.NetDialer("tcp://"+relay.Addr(), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			d, err := device.New(device.Options{
				Dial: dial, BrokerLabel: "relay to " + tt.name, Logger: log,
				Username: "device", Password: "devpass", ClientID: "pi-survive-cut",
				KeepAlive: keepAlive, MaxReconnectInterval: time.Second,
				Outputs: []device.Output{{Name: "led", CommandTopic: "raspberry/led", Line: line}},
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = d.Close(ctx)
				if t.Failed() {
					t.Logf("device log:\n%s", logs)
				}
			})
			if err := d.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			url := "tcp://" + brokerAddr
			sub := newSubscriber(t, url, "phone", "s3cret", "raspberry/status", "raspberry/led/state")
			sub.waitFor(t, "raspberry/status", statusOn)
			// The state the device publishes for this command is the last packet the broker gets
			// from it before the cut, so the broker's keepalive clock starts about now.
			publish(t, url, "phone", "s3cret", "raspberry/led", []byte("1"))
			sub.waitFor(t, "raspberry/led/state", "1")

			cut := time.Now()
			relay.Cut()
			sub.waitFor(t, "raspberry/status", statusOff)
			will := time.Since(cut)
			limit := keepAlive*3/2 + tt.slack
			t.Logf("will after %v (keepalive %v, 1.5 × keepalive %v)", will.Round(time.Millisecond), keepAlive, keepAlive*3/2)
			if will > limit {
				t.Errorf("will published %v after the cut, want at most 1.5 × keepalive %v (+%v for the broker's clock)", will, keepAlive*3/2, tt.slack)
			}
			waitLog(t, logs, `msg="connection to broker lost"`)
			noticed := time.Since(cut)
			t.Logf("device noticed the dead link after %v", noticed.Round(time.Millisecond))

			healed := time.Now()
			relay.Heal()
			sub.waitFor(t, "raspberry/status", statusOn)
			sub.waitFor(t, "raspberry/led/state", "1")
			t.Logf("status On again %v after the network came back", time.Since(healed).Round(time.Millisecond))
			publish(t, url, "phone", "s3cret", "raspberry/led", []byte("0"))
			sub.waitFor(t, "raspberry/led/state", "0")
			if v, err := line.Value(); err != nil || v != 0 {
				t.Fatalf("line %d, %v after the command 0, want 0", v, err)
			}
		})
	}
}

// TestSurviveRefusedPasswordBinary: device-only pimqtt with a password mosquitto refuses logs
// one error naming the flags to fix, and retries no more often than its fixed interval
// before a first connection allows (5 s): no busy loop, no log line per attempt.
func TestSurviveRefusedPasswordBinary(t *testing.T) {
	t.Parallel()
	pw := passwordFile(t, "device", "devpass")
	m := mqtttest.StartMosquitto(t, mqtttest.MosquittoConfig{
		Extra: []string{"allow_anonymous false", "password_file " + pw}})
	relay := mqtttest.NewRelay(t) // counts the attempts
	relay.Forward("127.0.0.1:" + strconv.Itoa(m.Port))
	// Without the control page, whose own MQTT link would add its attempts to the relay's count.
	p := startProcess(t, []string{"PIMQTT_PASSWORD=wrong"}, "--mode", "device", "--gpio", "sim",
		"--broker", "tcp://"+relay.Addr(), "--username", "device", "--http-listen", "")
	waitLog(t, p.logs, "level=ERROR", `msg="the broker refused the credentials, retrying in the background"`,
		"username=device", "--username and --password", "PIMQTT_PASSWORD")
	// A fixed window of measurement from the first attempt, not a wait for an event.
	const (
		interval = 5 * time.Second // device.firstRetryInterval, under the default 30 s cap
		window   = 11 * time.Second
	)
	time.Sleep(window)
	attempts := relay.Accepted()
	t.Logf("%d connection attempts in the first %v", attempts, window)
	if most := int(window/interval) + 1; attempts > most {
		t.Errorf("%d connection attempts in %v, want at most %d (one per %v)", attempts, window, most, interval)
	}
	if attempts < 2 {
		t.Errorf("%d connection attempts in %v: the device stopped retrying", attempts, window)
	}
	if n := strings.Count(p.logs.String(), "refused the credentials"); n != 1 {
		t.Errorf("the refusal was logged %d times in one outage, want once:\n%s", n, p.logs)
	}
}

// TestShutdownUnderLoad: SIGTERM to the all-in-one binary while 50 clients are connected, 10
// of them publishing QoS 1 as fast as they can and 40 subscribed to what they publish. The
// device says Off (a subscriber sees it), the line is driven to 0, and the process exits 0
// well within systemd's stop timeout (TimeoutStopSec=15 in the README's unit).
func TestShutdownUnderLoad(t *testing.T) {
	t.Parallel()
	const (
		publishers  = 10
		subscribers = 40
		perClient   = 100_000          // bounds each publisher's loop
		budget      = 10 * time.Second // leaves 5 s of systemd's 15 s
	)
	pw := passwordFile(t, "phone", "s3cret")
	p := startProcess(t, nil, "--password-file", pw, "--gpio", "sim",
		"--listen", "127.0.0.1:0", "--ws-listen", "")
	url := "tcp://" + p.listenAddr(t, broker.TCP)
	watcher := newSubscriber(t, url, "phone", "s3cret", "raspberry/status")
	watcher.waitFor(t, "raspberry/status", statusOn)

	const loaded = 40_000 // deliveries before the signal: the broker is busy
	var received atomic.Int64
	busy := make(chan struct{})
	var busyOnce sync.Once
	onLoad := func(paho.Client, paho.Message) {
		if received.Add(1) >= loaded {
			busyOnce.Do(func() { close(busy) })
		}
	}
	for i := range subscribers {
		c := loadClient(t, url, fmt.Sprintf("load-sub-%d", i))
		if tok := c.Subscribe("load/#", 1, onLoad); !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
			t.Fatalf("load subscriber %d: %v", i, tok.Error())
		}
	}
	var published atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range publishers {
		c := loadClient(t, url, fmt.Sprintf("load-pub-%d", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload := []byte(strings.Repeat("x", 64))
			for n := 0; n < perClient; n++ {
				select {
				case <-stop:
					return
				default:
				}
				tok := c.Publish(fmt.Sprintf("load/%d", i), 1, false, payload)
				published.Add(1)
				if n%64 != 63 {
					continue // up to 64 in flight per publisher: it is always mid-publish
				}
				select {
				case <-tok.Done():
					if tok.Error() != nil {
						return // the broker is going away
					}
				case <-stop:
					return
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	// New connections keep coming during the shutdown: when is the last one let in?
	var lastIn atomic.Int64 // UnixNano of the last CONNACK
	connectorDone := make(chan struct{})
	go func() {
		defer close(connectorDone)
		for n := 0; n < 10_000; n++ {
			select {
			case <-stop:
				return
			default:
			}
			c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("late-%d", n)).
				SetUsername("phone").SetPassword("s3cret").SetAutoReconnect(false).SetConnectTimeout(time.Second))
			tok := c.Connect()
			if tok.WaitTimeout(2*time.Second) && tok.Error() == nil {
				lastIn.Store(time.Now().UnixNano())
				c.Disconnect(0)
			} else if tok.Error() != nil && strings.Contains(tok.Error().Error(), "connection refused") {
				return // the listener is gone
			}
		}
	}()
	select {
	case <-busy:
	case <-time.After(testTimeout):
		t.Fatalf("only %d messages delivered to the load subscribers in %v", received.Load(), testTimeout)
	}

	sent := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	watcher.waitFor(t, "raspberry/status", statusOff)
	off := time.Since(sent)
	code := p.wait(t)
	took := time.Since(sent)
	<-connectorDone
	t.Logf("SIGTERM with %d clients connected (%d published, %d delivered): Off seen after %v, exit %d after %v; last new connection accepted %v after SIGTERM",
		publishers+subscribers+1, published.Load(), received.Load(), off.Round(time.Millisecond), code, took.Round(time.Millisecond),
		time.Unix(0, lastIn.Load()).Sub(sent).Round(time.Millisecond))
	if lastIn.Load() == 0 {
		t.Errorf("no new connection was accepted under the load before SIGTERM")
	}
	if code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	if took > budget {
		t.Errorf("shutdown took %v, want at most %v (systemd's TimeoutStopSec=15 with margin)", took, budget)
	}
	waitLog(t, p.logs, `msg="line driven to 0"`)
	waitLog(t, p.logs, `msg="shutting down"`)
}

// TestShutdownDeadLink: SIGTERM to device-only pimqtt whose link to the broker is cut without a
// FIN. The device cannot have its Off acknowledged, so it gives up after its goodbye timeout and
// drops the connection instead; the process still exits 0 in bounded time, and once the network
// is back the broker gets the Off (the publish held in the network, or else the will).
func TestShutdownDeadLink(t *testing.T) {
	t.Parallel()
	const budget = 10 * time.Second // leaves 5 s of systemd's 15 s
	pw := passwordFile(t, "device", "devpass", "phone", "s3cret")
	m := mqtttest.StartMosquitto(t, mqtttest.MosquittoConfig{
		Extra: []string{"allow_anonymous false", "password_file " + pw}})
	relay := mqtttest.NewRelay(t)
	relay.Forward("127.0.0.1:" + strconv.Itoa(m.Port))
	p := startProcess(t, []string{"PIMQTT_PASSWORD=devpass"}, "--mode", "device", "--gpio", "sim",
		"--broker", "tcp://"+relay.Addr(), "--username", "device", "--http-listen", "")
	sub := newSubscriber(t, mosquittoURL(m), "phone", "s3cret", "raspberry/status")
	sub.waitFor(t, "raspberry/status", statusOn)

	relay.Cut()
	sent := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code := p.wait(t)
	took := time.Since(sent)
	t.Logf("SIGTERM with the link cut: exit %d after %v", code, took.Round(time.Millisecond))
	if code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	if took > budget {
		t.Errorf("shutdown took %v, want at most %v", took, budget)
	}
	waitLog(t, p.logs, `msg="line driven to 0"`)
	relay.Heal()
	sub.waitFor(t, "raspberry/status", statusOff)
}

// loadClient connects one paho client for the load, disconnected at cleanup.
func loadClient(t *testing.T, url, id string) paho.Client {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(id).
		SetUsername("phone").SetPassword("s3cret").SetAutoReconnect(false).
		SetConnectTimeout(5 * time.Second))
	if tok := c.Connect(); !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
		t.Fatalf("load client %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// command publishes value to the LED with mosquitto_pub and waits for the state to follow.
func command(t *testing.T, m *mqtttest.Mosquitto, sub *subscriber, value int) {
	t.Helper()
	v := strconv.Itoa(value)
	if out, code := mosquittoPub(t, "-h", "127.0.0.1", "-p", strconv.Itoa(m.Port), "-u", "phone", "-P", "s3cret",
		"-q", "1", "-t", "raspberry/led", "-m", v); code != 0 {
		t.Fatalf("mosquitto_pub: %d %s", code, out)
	}
	sub.waitFor(t, "raspberry/led/state", v)
}

// retained returns the retained message on topic, read with mosquitto_sub.
func retained(t *testing.T, m *mqtttest.Mosquitto, topic string) string {
	t.Helper()
	bin := mqtttest.RequireTool(t, "mosquitto_sub", "mosquitto-clients")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-h", "127.0.0.1", "-p", strconv.Itoa(m.Port),
		"-u", "phone", "-P", "s3cret", "-t", topic, "--retained-only", "-C", "1", "-W", "5").Output()
	if err != nil {
		t.Fatalf("mosquitto_sub --retained-only %s: %v (output %q)", topic, err, out)
	}
	return strings.TrimSuffix(string(out), "\n")
}

func mosquittoURL(m *mqtttest.Mosquitto) string {
	return "tcp://127.0.0.1:" + strconv.Itoa(m.Port)
}
