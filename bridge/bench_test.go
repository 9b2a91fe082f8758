package bridge

import (
	"fmt"
	"testing"
	"time"

	"github.com/pimqtt/pimqtt/mqtttest"
)

// BenchmarkBridgeOut measures QoS 1 messages forwarded from pimqtt's broker to a mosquitto
// remote: a local client publishes b.N messages (waiting for each PUBACK only at the end),
// the clock stops when the remote observer has the last one.
func BenchmarkBridgeOut(b *testing.B) {
	log, _ := newLog(b)
	bt := testing.TB(b)
	local := startLocal(bt, "pimqtt", log)
	// The observer's copies may pile up at mosquitto: no bound there (max_queued_messages 0),
	// so what is measured is the bridge, not mosquitto's drops for a slow test client.
	m := mqtttest.StartMosquitto(bt, mqtttest.MosquittoConfig{Extra: []string{"allow_anonymous true", "max_queued_messages 0"}})
	remoteDial := tcpDial(fmt.Sprintf("127.0.0.1:%d", m.Port))
	topic, _ := ParseTopic("raspberry/# out 1")
	lo := newObserver(bt, "local", local.dial)
	ro := newObserver(bt, "remote", remoteDial, "raspberry/#")
	ro.limit = time.Minute
	br := startBridge(bt, Options{
		Remotes:    []Remote{{Label: "mosquitto", Dial: remoteDial}},
		Topics:     []Topic{topic},
		Local:      local.dial,
		Logger:     log,
		QueueLimit: b.N + 10,
	})
	waitConnected(bt, br)
	b.ResetTimer()
	for i := range b.N {
		lo.c.Publish("raspberry/bench", 1, false, fmt.Sprintf("m%d", i))
	}
	last := fmt.Sprintf("m%d", b.N-1)
	ro.waitFor("last", func(ms []rec) bool { return len(ms) > 0 && ms[len(ms)-1].Payload == last })
	if n := len(ro.all()); n != b.N {
		b.Errorf("remote got %d messages, want %d", n, b.N)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
}
