package broker

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pimqtt/pimqtt/bench/load"
)

// memSampler records the peak heap in use while a test runs.
type memSampler struct {
	stop     chan struct{}
	done     chan struct{}
	peakHeap atomic.Uint64
}

func sampleMemory() *memSampler {
	m := &memSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > m.peakHeap.Load() {
				m.peakHeap.Store(ms.HeapInuse)
			}
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
		}
	}()
	return m
}

// end stops sampling and returns the peak heap in use and the process's
// peak resident set (VmHWM; 0 where /proc is missing), in MiB.
func (m *memSampler) end() (heapMiB, rssMiB float64) {
	close(m.stop)
	<-m.done
	return float64(m.peakHeap.Load()) / (1 << 20), float64(procStatusKiB("VmHWM")) / 1024
}

// procStatusKiB reads one "Name: N kB" line of /proc/self/status.
func procStatusKiB(name string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == name+":" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

// TestFanInSlowSubscriberLosesNothing: 4 publishers, 1 subscriber that
// stops reading for a while, 20,000 messages at QoS 1 and at QoS 2, with
// per-client bounds far below the burst. Every message acknowledged to
// its publisher reaches the subscriber, in each publisher's order, and at
// QoS 2 exactly once. Mochi alone acknowledges the publisher and then
// drops the message when the subscriber's in-flight window or outbound
// queue is full.
func TestFanInSlowSubscriberLosesNothing(t *testing.T) {
	for _, qos := range []byte{1, 2} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			limits := DefaultLimits()
			limits.MaxInflight = 64
			limits.MaxQueued = 128
			b, _ := startTestBroker(t, Options{Listeners: []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}}, AllowAnonymous: true, Limits: limits})
			mem := sampleMemory()

			// The subscriber's handler blocks on its first message until the
			// publishers have had 2,000 messages acknowledged (without
			// back-pressure, at once) or, with back-pressure, until 2 s have
			// shown that they are held.
			var run *load.Run
			var once sync.Once
			var ackedInStall atomic.Int64
			stall := func(_ string, n int64) {
				once.Do(func() {
					deadline := time.Now().Add(2 * time.Second)
					for run.Acked() < 2000 && time.Now().Before(deadline) {
						time.Sleep(time.Millisecond) // polling a condition with a deadline
					}
					ackedInStall.Store(run.Acked())
				})
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var err error
			run, err = load.Prepare(ctx, load.Config{
				Addr:  listenerAddr(t, b, TCP),
				Flows: []load.Flow{{Name: "fanin", Publishers: 4, Subscribers: 1}},
				QoS:   qos, Messages: 5000, PayloadSize: 64, Outstanding: 32,
				Drain: 30 * time.Second, Stall: stall, ClientPrefix: t.Name(),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer run.Close()
			res := run.Start(ctx)
			heap, rss := mem.end()
			t.Logf("%s; peak heap in use %.1f MiB, peak RSS of the test process %.1f MiB", res, heap, rss)
			t.Logf("acknowledged while the subscriber read nothing: %d", ackedInStall.Load())
			if d := b.Dropped(); d != (Drops{}) {
				t.Errorf("drops %+v, want none", d)
			}
			if res.Reconnects != 0 {
				t.Errorf("the subscriber was disconnected %d times; 2 s of stall is below SlowClientTimeout", res.Reconnects)
			}
			if res.Acked != 20000 || res.Lost != 0 {
				t.Errorf("acknowledged %d of 20000, lost %d: every acknowledged message must be delivered", res.Acked, res.Lost)
			}
			if res.OutOfOrder != 0 {
				t.Errorf("%d messages out of their publisher's order", res.OutOfOrder)
			}
			if qos == 2 && res.Duplicates != 0 {
				t.Errorf("%d duplicates at QoS 2", res.Duplicates)
			}
		})
	}
}
