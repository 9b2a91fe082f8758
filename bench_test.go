package main

import (
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/pimqtt/pimqtt/broker"
)

// notifyingLine is a simulated line that reports each change, so the
// benchmark can time publish → line set without polling.
type notifyingLine struct {
	mu      sync.Mutex
	value   int
	changed chan int
}

func (l *notifyingLine) SetValue(v int) error {
	l.mu.Lock()
	l.value = v
	l.mu.Unlock()
	select {
	case l.changed <- v:
	default:
	}
	return nil
}

func (l *notifyingLine) Value() (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.value, nil
}

func (l *notifyingLine) Close() error   { return nil }
func (l *notifyingLine) String() string { return "bench" }

// BenchmarkPublishToLine measures the time from a phone-like client's
// PUBLISH over TCP to the line being set by the in-process device, and
// reports the median and p99 per operation.
func BenchmarkPublishToLine(b *testing.B) {
	for _, qos := range []byte{0, 1} {
		b.Run(fmt.Sprintf("qos%d", qos), func(b *testing.B) {
			line := &notifyingLine{changed: make(chan int, 1)}
			cfg := testConfig("")
			m := &Main{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Line: line}
			if err := m.Run(b.Context()); err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			host, port := addr(b, m, broker.TCP)
			url := "tcp://" + host + ":" + port
			// Wait until the device is subscribed: its retained state appears.
			sub := newSubscriber(b, url, "", "", "raspberry/led/state")
			sub.waitFor(b, "raspberry/led/state", "0")

			c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("bench-pub"))
			if tok := c.Connect(); !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
				b.Fatal(tok.Error())
			}
			defer c.Disconnect(100)
			payloads := [][]byte{[]byte("0"), []byte("1")}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				want := (i + 1) % 2
				start := time.Now()
				c.Publish("raspberry/led", qos, false, payloads[want])
				select {
				case v := <-line.changed:
					if v != want {
						b.Fatalf("line set to %d, want %d", v, want)
					}
				case <-time.After(testTimeout):
					b.Fatalf("line not set within %v", testTimeout)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}
