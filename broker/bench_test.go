package broker

import (
	"bufio"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pimqtt/pimqtt/mqtttest"
)

// Benchmarks of the publish path over real TCP on 127.0.0.1, with raw
// MQTT 3.1.1 clients light enough that the broker is what is measured.
// Each runs with the fast path (fast) and with Mochi's routing alone
// (mochi), side by side:
//
//	go test -run '^$' -bench . -count 6 ./broker/ > new.txt
//
// ns/op is per message delivered; msgs/s and lost are reported as extra
// metrics (lost must be 0: a QoS 0 copy dropped for a full queue counts).

// benchModes are the ways of routing a PUBLISH, and mosquitto for
// scale (-bench-mosquitto).
var benchModes = []struct {
	name string
	off  bool
}{{"fast", false}, {"mochi", true}, {"mosquitto", false}}

var benchMosquitto = flag.Bool("bench-mosquitto", false, "benchmarks: also measure Debian's mosquitto")

// startBenchBroker starts an anonymous broker on a TCP port of 127.0.0.1:
// pimqtt's (with the fast path unless noFastPath), or mosquitto for the
// mode of that name.
func startBenchBroker(tb testing.TB, mode string, noFastPath bool) string {
	tb.Helper()
	if mode == "mosquitto" {
		m := mqtttest.StartMosquitto(tb, mqtttest.MosquittoConfig{Extra: []string{"allow_anonymous true"}})
		tb.Cleanup(func() { m.Stop(tb) })
		return fmt.Sprintf("127.0.0.1:%d", m.Port)
	}
	b, err := New(Options{
		Listeners:      []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}},
		AllowAnonymous: true,
		Logger:         discardLogger(),
		noFastPath:     noFastPath,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = b.Close() })
	if err := b.Start(); err != nil {
		tb.Fatal(err)
	}
	b.OpenNetwork()
	return listenerAddr(tb, b, TCP)
}

// loadConn is a bare MQTT 3.1.1 connection for load: buffered both ways,
// no per-packet deadline.
type loadConn struct {
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
	body []byte
}

func dialLoad(tb testing.TB, addr, id string) *loadConn {
	tb.Helper()
	return dialLoadWith(tb, addr, connectFor(4, id))
}

// dialLoadWith connects with the CONNECT given, which must be accepted.
func dialLoadWith(tb testing.TB, addr string, connect []byte) *loadConn {
	tb.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	c := &loadConn{conn: conn, r: bufio.NewReaderSize(conn, 64<<10), w: bufio.NewWriterSize(conn, 16<<10)}
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	c.send(connect)
	if h, body, err := c.read(); err != nil || h != 0x20 || len(body) != 2 || body[1] != 0 {
		tb.Fatalf("CONNACK: %x %x %v", h, body, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return c
}

func (c *loadConn) send(b []byte) {
	_, _ = c.w.Write(b)
	_ = c.w.Flush()
}

// read reads one packet; the body is valid until the next read.
func (c *loadConn) read() (byte, []byte, error) {
	h, err := c.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mult := 0, 1
	for {
		d, err := c.r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(d&0x7f) * mult
		if d&0x80 == 0 {
			break
		}
		mult *= 128
	}
	if cap(c.body) < n {
		c.body = make([]byte, n)
	}
	c.body = c.body[:n]
	if _, err := io.ReadFull(c.r, c.body); err != nil {
		return 0, nil, err
	}
	return h, c.body, nil
}

func (c *loadConn) subscribe(tb testing.TB, filter string, qos byte) {
	tb.Helper()
	c.send(pk(fmt.Sprintf("82 r? m1 s'%s' %02x", filter, qos)))
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if h, body, err := c.read(); err != nil || h != 0x90 || body[2] != qos {
		tb.Fatalf("SUBACK: %x %x %v", h, body, err)
	}
	_ = c.conn.SetReadDeadline(time.Time{})
}

// publishPacket encodes a PUBLISH with a 64-byte payload whose first 8
// bytes are seq.
func publishPacket(topic string, qos byte, id uint16, seq uint64) []byte {
	payload := make([]byte, 64)
	binary.BigEndian.PutUint64(payload, seq)
	body := append(pkU16(len(topic)), topic...)
	if qos > 0 {
		body = append(body, pkU16(int(id))...)
	}
	body = append(body, payload...)
	return append(append([]byte{0x30 | qos<<1}, pkVarint(len(body))...), body...)
}

// counter reads PUBLISH packets until it has want of them or the
// connection ends, acknowledging QoS 1 ones, and records when each
// arrived relative to start if times is set.
type counter struct {
	got  atomic.Int64
	done chan struct{}
}

func (c *loadConn) count(want int64) *counter {
	ct := &counter{done: make(chan struct{})}
	go func() {
		defer close(ct.done)
		ack := []byte{0x40, 0x02, 0, 0}
		for ct.got.Load() < want {
			h, body, err := c.read()
			if err != nil {
				return
			}
			if h>>4 != 3 {
				continue
			}
			if h&0x06 != 0 {
				tl := int(body[0])<<8 | int(body[1])
				ack[2], ack[3] = body[2+tl], body[3+tl]
				_, _ = c.w.Write(ack)
				if c.r.Buffered() == 0 {
					_ = c.w.Flush()
				}
			}
			ct.got.Add(1)
		}
		_ = c.w.Flush()
	}()
	return ct
}

// wait waits until the counter has all it wants, or nothing more has
// arrived for quiet, and returns what it got.
func (ct *counter) wait(quiet time.Duration) int64 {
	last := int64(-1)
	for {
		select {
		case <-ct.done:
			return ct.got.Load()
		case <-time.After(quiet):
			n := ct.got.Load()
			if n == last {
				return n
			}
			last = n
		}
	}
}

// publishAll sends n messages numbered from first on topic; at QoS 1 it
// keeps at most window unacknowledged and waits for every PUBACK.
func (c *loadConn) publishAll(tb testing.TB, topic string, qos byte, first, n, window int) {
	if qos == 0 {
		for i := 0; i < n; i++ {
			_, _ = c.w.Write(publishPacket(topic, 0, 0, uint64(first+i)))
			if c.w.Buffered() > 8<<10 {
				_ = c.w.Flush()
			}
		}
		_ = c.w.Flush()
		return
	}
	slots := make(chan struct{}, window)
	acked := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			h, _, err := c.read()
			if err != nil {
				acked <- err
				return
			}
			if h>>4 != 4 {
				i--
				continue
			}
			<-slots
		}
		acked <- nil
	}()
	for i := 0; i < n; i++ {
		slots <- struct{}{}
		_, _ = c.w.Write(publishPacket(topic, 1, uint16(i%65000+1), uint64(first+i)))
		if len(slots) == window || i == n-1 {
			_ = c.w.Flush()
		}
	}
	select {
	case err := <-acked:
		if err != nil {
			tb.Errorf("PUBACKs: %v", err)
		}
	case <-time.After(30 * time.Second):
		tb.Errorf("PUBACKs: none for 30 s")
	}
}

// benchFan sends b.N messages from pubs publishers on one topic to subs
// subscribers at qos, and reports delivered msg/s and lost.
func benchFan(b *testing.B, pubs, subs int, qos byte) {
	for _, m := range benchModes {
		if m.name == "mosquitto" && !*benchMosquitto {
			continue
		}
		b.Run(m.name, func(b *testing.B) {
			addr := startBenchBroker(b, m.name, m.off)
			topic := "bench/fan"
			var counters []*counter
			per := max(b.N/pubs, 1)
			want := int64(per * pubs)
			for i := range subs {
				s := dialLoad(b, addr, fmt.Sprintf("sub%d", i))
				s.subscribe(b, topic, qos)
				counters = append(counters, s.count(want))
			}
			var ps []*loadConn
			for i := range pubs {
				ps = append(ps, dialLoad(b, addr, fmt.Sprintf("pub%d", i)))
			}
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for i, p := range ps {
				wg.Add(1)
				go func() {
					defer wg.Done()
					p.publishAll(b, topic, qos, i*per, per, 32)
				}()
			}
			wg.Wait()
			var got int64
			for _, ct := range counters {
				got += ct.wait(300 * time.Millisecond)
			}
			elapsed := time.Since(start)
			b.StopTimer()
			total := want * int64(subs)
			b.ReportMetric(float64(got)/elapsed.Seconds(), "msgs/s")
			b.ReportMetric(float64(total-got), "lost")
			b.ReportMetric(float64(elapsed.Nanoseconds())/float64(max(got, 1)), "ns/msg")
		})
	}
}

func BenchmarkFanInQoS0(b *testing.B)  { benchFan(b, 4, 1, 0) }
func BenchmarkFanInQoS1(b *testing.B)  { benchFan(b, 4, 1, 1) }
func BenchmarkFanOutQoS0(b *testing.B) { benchFan(b, 1, 50, 0) }

// benchRoundTrip publishes one message at a time to a topic another
// client subscribes to and waits for it: ns/op is the round trip; p50
// and p99 are reported in µs.
func benchRoundTrip(b *testing.B, qos byte) {
	for _, m := range benchModes {
		if m.name == "mosquitto" && !*benchMosquitto {
			continue
		}
		b.Run(m.name, func(b *testing.B) {
			addr := startBenchBroker(b, m.name, m.off)
			sub := dialLoad(b, addr, "rt-sub")
			sub.subscribe(b, "bench/rt", qos)
			pub := dialLoad(b, addr, "rt-pub")
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			// The publisher's PUBACKs are read and dropped.
			go func() {
				for ctx.Err() == nil {
					if _, _, err := pub.read(); err != nil {
						return
					}
				}
			}()
			lat := make([]time.Duration, 0, b.N)
			ack := []byte{0x40, 0x02, 0, 0}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				pub.send(publishPacket("bench/rt", qos, uint16(i%65000+1), uint64(i)))
				for {
					_ = sub.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
					h, body, err := sub.read()
					if err != nil {
						b.Fatalf("round trip %d: %v", i, err)
					}
					if h>>4 != 3 {
						continue
					}
					if h&0x06 != 0 {
						ack[2], ack[3] = body[10], body[11]
						sub.send(ack)
					}
					break
				}
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

func BenchmarkRoundTripQoS0(b *testing.B) { benchRoundTrip(b, 0) }
func BenchmarkRoundTripQoS1(b *testing.B) { benchRoundTrip(b, 1) }
