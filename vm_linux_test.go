//go:build linux

package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/pimqtt/pimqtt/broker"
	"github.com/pimqtt/pimqtt/config"
	"github.com/pimqtt/pimqtt/mqtttest"
)

// These tests run the whole program against a real kernel GPIO chip inside
// the project's VM (.ci/vm/run-in-vm.sh, driven by `.ci/gpio-vm .` with
// GPIOVM_RUN='^TestVM'; .ci/test runs it). Outside the VM they skip, and
// .ci/test allows that skip on the host only; inside the VM .ci/gpio-vm
// fails on any skip.

// simChip returns the sysfs directory of the VM's prepared gpio-sim chip.
func simChip(t testing.TB) string {
	t.Helper()
	if os.Getenv("GPIOSIM_CHIP") == "" {
		t.Skip("needs a gpio-sim chip: runs inside the VM of .ci/vm/run-in-vm.sh (.ci/test and CI run it: .ci/gpio-vm .)")
	}
	return os.Getenv("GPIOSIM_SYSFS")
}

// simLevel reads the physical level the kernel drives on line off.
func simLevel(t testing.TB, sysfs string, off int) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(sysfs, fmt.Sprintf("sim_gpio%d", off), "value"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// simPull drives input line off from outside, as a switch would.
func simPull(t testing.TB, sysfs string, off int, up bool) {
	t.Helper()
	pull := "pull-down"
	if up {
		pull = "pull-up"
	}
	if err := os.WriteFile(filepath.Join(sysfs, fmt.Sprintf("sim_gpio%d", off), "pull"), []byte(pull), 0); err != nil {
		t.Fatal(err)
	}
}

// vmConfig is an all-in-one pimqtt with named lines on the sim chip.
func vmConfig(t testing.TB, dataDir string) config.Config {
	t.Helper()
	cfg := testConfig("")
	cfg.Broker.Listeners = []config.Listener{{Address: "127.0.0.1:0", Kind: config.KindMQTT}}
	cfg.Device.DataDir = dataDir
	for _, o := range []string{"led=GPIO21", "relay=GPIO20,active-low,initial=restore", "fan=GPIO19,initial=restore"} {
		f, err := config.ParseOutputFlag(o)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Outputs = append(cfg.Outputs, f)
	}
	f, err := config.ParseInputFlag("door=GPIO5,pull-down,debounce=5ms")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Inputs = []config.Input{f}
	if cfg.UseShorthand() {
		t.Fatal("named lines and the one-LED shorthand both configured")
	}
	return cfg
}

func runVM(t testing.TB, cfg config.Config) (*Main, string) {
	t.Helper()
	logs := &mqtttest.SyncBuffer{}
	m := &Main{Config: cfg, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if err := m.Run(context.Background()); err != nil {
		t.Fatalf("Run: %v\n%s", err, logs)
	}
	t.Cleanup(func() {
		_ = m.Close()
		if t.Failed() {
			t.Logf("program log:\n%s", logs)
		}
	})
	host, port := addr(t, m, broker.TCP)
	return m, "tcp://" + host + ":" + port
}

func TestVMEndToEnd(t *testing.T) {
	sysfs := simChip(t)
	// Pulls decide what the sim chip reports for a line nobody drives, so each
	// output's level after the restart below differs from its undriven level:
	// only a driven line reads as checked. They are set before the lines are
	// first requested, while the sim still follows them.
	pulls := map[int]bool{21: true, 20: true, 19: false} // offset: pull-up
	for off, up := range pulls {
		simPull(t, sysfs, off, up)
	}
	t.Cleanup(func() {
		for off := range pulls {
			simPull(t, sysfs, off, false)
		}
	})
	dataDir := t.TempDir()
	m, url := runVM(t, vmConfig(t, dataDir))
	sub := newSubscriber(t, url, "", "", "raspberry/+/state")
	sub.waitFor(t, "raspberry/door/state", "0")
	if v := simLevel(t, sysfs, 21); v != 0 {
		t.Fatalf("GPIO21 level %d at start, want 0: the led (initial off) is driven against its pull-up", v)
	}

	// MQTT command -> level the kernel drives.
	publish(t, url, "", "", "raspberry/led", []byte("1"))
	sub.waitFor(t, "raspberry/led/state", "1")
	if v := simLevel(t, sysfs, 21); v != 1 {
		t.Fatalf("GPIO21 level %d after led=1", v)
	}
	publish(t, url, "", "", "raspberry/relay", []byte("ON"))
	sub.waitFor(t, "raspberry/relay/state", "1")
	if v := simLevel(t, sysfs, 20); v != 0 {
		t.Fatalf("active-low GPIO20 level %d after relay=ON, want 0", v)
	}
	publish(t, url, "", "", "raspberry/fan", []byte("1"))
	sub.waitFor(t, "raspberry/fan/state", "1")
	if v := simLevel(t, sysfs, 19); v != 1 {
		t.Fatalf("GPIO19 level %d after fan=1", v)
	}

	// Kernel edge -> MQTT state, debounced in the kernel.
	simPull(t, sysfs, 5, true)
	sub.waitFor(t, "raspberry/door/state", "1")
	simPull(t, sysfs, 5, false)
	sub.waitFor(t, "raspberry/door/state", "0")

	// Restart: the relay and the fan (initial=restore) come back on, the LED
	// (initial off) does not. On shutdown the LED goes to 0 and the restore
	// outputs keep their level, and each says so before the broker stops;
	// then the lines are released without being driven, and gpio-sim shows
	// the pulls (TestVMRestoreAcrossRestart has a Pi's released line keep
	// its level instead).
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	sub.waitFor(t, "raspberry/led/state", "0")
	for off, up := range pulls {
		want := 0
		if up {
			want = 1
		}
		if v := simLevel(t, sysfs, off); v != want {
			t.Fatalf("released GPIO%d reads %d, want its pull's %d", off, v, want)
		}
	}
	_, url = runVM(t, vmConfig(t, dataDir))
	for _, c := range []struct {
		name      string
		off, want int
	}{
		{"relay (on, active-low; pulled up)", 20, 0},
		{"fan (on; pulled down)", 19, 1},
		{"led (off; pulled up)", 21, 0},
	} {
		if v := simLevel(t, sysfs, c.off); v != c.want {
			t.Fatalf("%s: GPIO%d level %d after restart, want %d", c.name, c.off, v, c.want)
		}
	}
	for _, name := range []string{"relay", "fan"} {
		topic := "raspberry/" + name + "/state"
		newSubscriber(t, url, "", "", topic).waitFor(t, topic, "1")
	}
}

// BenchmarkVMCommandToState times a command over TCP to its retained state
// message, which the device publishes after setting the real line and
// reading it back: an upper bound on publish -> line set.
func BenchmarkVMCommandToState(b *testing.B) {
	simChip(b)
	_, url := runVM(b, vmConfig(b, b.TempDir()))
	states := make(chan string, 16)
	c := benchClient(b, url, "raspberry/led/state", states)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		want := strconv.Itoa((i + 1) % 2)
		start := time.Now()
		c.Publish("raspberry/led", 1, false, want)
		waitState(b, states, want)
		lat = append(lat, time.Since(start))
	}
	reportPercentiles(b, lat)
}

// BenchmarkVMEdgeToPublish times a level change on a real input line to
// its state message at a subscriber.
func BenchmarkVMEdgeToPublish(b *testing.B) {
	sysfs := simChip(b)
	_, url := runVM(b, vmConfig(b, b.TempDir()))
	states := make(chan string, 16)
	benchClient(b, url, "raspberry/door/state", states)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		up := i%2 == 0
		want := "0"
		if up {
			want = "1"
		}
		start := time.Now()
		simPull(b, sysfs, 5, up)
		waitState(b, states, want)
		lat = append(lat, time.Since(start))
	}
	reportPercentiles(b, lat)
}

// benchClient subscribes to topic and forwards live (not retained) payloads.
func benchClient(b *testing.B, url, topic string, states chan<- string) paho.Client {
	b.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("vm-bench"))
	if tok := c.Connect(); !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	b.Cleanup(func() { c.Disconnect(50) })
	tok := c.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) {
		if !m.Retained() {
			states <- string(m.Payload())
		}
	})
	if !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	return c
}

func waitState(b *testing.B, states <-chan string, want string) {
	b.Helper()
	for {
		select {
		case got := <-states:
			if got == want {
				return
			}
		case <-time.After(testTimeout):
			b.Fatalf("no state %s within %v", want, testTimeout)
		}
	}
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
