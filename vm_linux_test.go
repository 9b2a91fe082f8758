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
	"github.com/pimqtt/pimqtt/gpio"
	"github.com/pimqtt/pimqtt/mqtttest"
)

// These tests run the whole program against a real kernel GPIO chip inside
// ../shared/gpio-vm (`.ci/gpio-vm .` with GPIOVM_RUN='^TestVM'). Outside
// the VM they skip; inside it, .ci/gpio-vm fails on any skip.

// simChip returns the sysfs directory of the VM's prepared gpio-sim chip.
func simChip(t testing.TB) string {
	t.Helper()
	if os.Getenv("GPIOSIM_CHIP") == "" {
		t.Skip("needs a gpio-sim chip: runs inside ../shared/gpio-vm (CI does)")
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
func vmConfig(t testing.TB, dataDir string) Config {
	t.Helper()
	cfg := testConfig("")
	cfg.Listeners = []broker.ListenerConfig{{Kind: broker.TCP, Addr: "127.0.0.1:0"}}
	cfg.UseShorthand = false
	cfg.DataDir = dataDir
	for _, o := range []string{"led=GPIO21", "relay=GPIO20,active-low,initial=restore"} {
		f, err := gpio.ParseOutputFlag(o)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Outputs = append(cfg.Outputs, f)
	}
	f, err := gpio.ParseInputFlag("door=GPIO5,pull-down,debounce=5ms")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Inputs = []gpio.LineFlag{f}
	return cfg
}

func runVM(t testing.TB, cfg Config) (*Main, string) {
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
	dataDir := t.TempDir()
	m, url := runVM(t, vmConfig(t, dataDir))
	sub := newSubscriber(t, url, "", "", "raspberry/+/state")
	sub.waitFor(t, "raspberry/door/state", "0")

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

	// Kernel edge -> MQTT state, debounced in the kernel.
	simPull(t, sysfs, 5, true)
	sub.waitFor(t, "raspberry/door/state", "1")
	simPull(t, sysfs, 5, false)
	sub.waitFor(t, "raspberry/door/state", "0")

	// Restart: the relay (initial=restore) comes back on, the LED (off) does not.
	// On shutdown outputs go to 0 and say so before the broker stops; once
	// released, the kernel owns the level, so it is not checked here.
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	sub.waitFor(t, "raspberry/relay/state", "0")
	_, url = runVM(t, vmConfig(t, dataDir))
	if v := simLevel(t, sysfs, 20); v != 0 {
		t.Fatalf("relay level %d after restart, want 0 (on, active-low)", v)
	}
	if v := simLevel(t, sysfs, 21); v != 0 {
		t.Fatalf("led level %d after restart, want 0", v)
	}
	sub2 := newSubscriber(t, url, "", "", "raspberry/relay/state")
	sub2.waitFor(t, "raspberry/relay/state", "1")
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
