package main

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/pimqtt/pimqtt/bench/proc"
	"github.com/pimqtt/pimqtt/bench/rawmqtt"
)

// dialConnect connects a client with the bench account, within ctx's
// deadline.
func dialConnect(ctx context.Context, e *env, network rawmqtt.Network, addr, id string, bufSize int) (*rawmqtt.Client, error) {
	timeout := connectTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	if timeout <= 0 {
		return nil, fmt.Errorf("connect %s: %w", id, context.DeadlineExceeded)
	}
	conn, err := rawmqtt.Dial(network, addr, timeout)
	if err != nil {
		return nil, err
	}
	c, err := rawmqtt.Connect(conn, rawmqtt.Options{ClientID: id, Username: e.user, Password: e.pass,
		KeepAlive: 300, BufferSize: bufSize}, timeout)
	if err != nil {
		return nil, fmt.Errorf("connect %s to %s: %w", id, addr, err)
	}
	return c, nil
}

// connectTimeout bounds one client's connection.
const connectTimeout = 10 * time.Second

// latencies are round-trip times, sorted.
type latencies struct {
	sorted    []time.Duration
	brokerCPU time.Duration
	genCPU    time.Duration
	wall      time.Duration
}

func (l latencies) p50() float64 { return micros(percentile(l.sorted, 50)) }
func (l latencies) p99() float64 { return micros(percentile(l.sorted, 99)) }

// roundTrips times rounds messages, one in flight at a time: the client
// subscribes to its own topic, publishes, and the time runs until the
// broker has delivered the message back (at QoS 1 the next message also
// waits for the PUBACK, and the delivery is acknowledged).
func roundTrips(ctx context.Context, e *env, t *target, network rawmqtt.Network, qos byte, rounds int) (latencies, error) {
	addr := t.tcp
	if network == rawmqtt.WebSocket {
		addr = t.ws
	}
	id := fmt.Sprintf("bench-rtt-%s-%d", network, qos)
	c, err := dialConnect(ctx, e, network, addr, id, 4096)
	if err != nil {
		return latencies{}, err
	}
	defer c.Close()
	topic := "bench/rtt/" + id
	deadline, _ := ctx.Deadline()
	if err := c.Subscribe(topic, qos, time.Until(deadline)); err != nil {
		return latencies{}, err
	}
	if err := c.Conn().SetDeadline(deadline); err != nil {
		return latencies{}, err
	}
	payload := make([]byte, 64)
	lat := make([]time.Duration, 0, rounds)
	cpu0, gen0, err := cpuNow(t.pid)
	if err != nil {
		return latencies{}, err
	}
	begin := time.Now()
	for i := range rounds {
		pid := packetID(i)
		start := time.Now()
		c.Publish(topic, qos, false, pid, payload)
		if err := c.Flush(); err != nil {
			return latencies{}, err
		}
		delivered, acked := false, qos == 0
		for !delivered || !acked {
			typ, flags, body, err := c.ReadPacket()
			if err != nil {
				return latencies{}, fmt.Errorf("round trip %d of %d over %s: %w", i+1, rounds, network, err)
			}
			switch typ {
			case rawmqtt.PUBLISH:
				if delivered {
					return latencies{}, fmt.Errorf("round trip %d over %s: a second delivery", i+1, network)
				}
				lat = append(lat, time.Since(start))
				delivered = true
				if flags>>1&3 == 1 {
					_, dpid, _, err := rawmqtt.ParsePublish(flags, body)
					if err != nil {
						return latencies{}, err
					}
					c.Puback(dpid)
					if err := c.Flush(); err != nil {
						return latencies{}, err
					}
				}
			case rawmqtt.PUBACK:
				acked = true
			}
		}
	}
	wall := time.Since(begin)
	cpu1, gen1, err := cpuNow(t.pid)
	if err != nil {
		return latencies{}, err
	}
	slices.Sort(lat)
	return latencies{sorted: lat, brokerCPU: cpu1 - cpu0, genCPU: gen1 - gen0, wall: wall}, nil
}

// cpuNow is the CPU time of the broker pid and of this process so far.
func cpuNow(pid int) (broker, self time.Duration, err error) {
	if broker, err = proc.CPUTime(pid); err != nil {
		return 0, 0, err
	}
	self, err = proc.SelfCPUTime()
	return broker, self, err
}

// Topics of pimqtt's default LED, which the seed's Python script also uses.
const (
	ledTopic    = "raspberry/led"
	stateTopic  = "raspberry/led/state"
	statusTopic = "raspberry/status"
)

// waitDeviceOn subscribes c to the status topic and returns once the
// device's retained {"status": "On"} has come.
func waitDeviceOn(ctx context.Context, c *rawmqtt.Client) error {
	deadline, _ := ctx.Deadline()
	if err := c.Subscribe(statusTopic, 0, time.Until(deadline)); err != nil {
		return err
	}
	return readUntil(c, deadline, func(topic, payload []byte) bool {
		return string(topic) == statusTopic && bytes.Contains(payload, []byte(`"On"`))
	})
}

// readUntil reads c's deliveries until done accepts one, acknowledging
// QoS 1 ones, or deadline passes.
func readUntil(c *rawmqtt.Client, deadline time.Time, done func(topic, payload []byte) bool) error {
	if err := c.Conn().SetReadDeadline(deadline); err != nil {
		return err
	}
	for {
		typ, flags, body, err := c.ReadPacket()
		if err != nil {
			return err
		}
		if typ != rawmqtt.PUBLISH {
			continue
		}
		topic, pid, payload, err := rawmqtt.ParsePublish(flags, body)
		if err != nil {
			return err
		}
		if flags>>1&3 == 1 {
			c.Puback(pid)
			if err := c.Flush(); err != nil {
				return err
			}
		}
		if done(topic, payload) {
			return nil
		}
	}
}

// commandRounds times rounds commands to the device behind c's broker:
// PUBLISH "1"/"0" (alternating, so each changes the line) on the command
// topic at QoS 0, until the device's state update with that value arrives
// on the state topic. c must be subscribed to nothing else.
func commandRounds(ctx context.Context, c *rawmqtt.Client, rounds int) (latencies, error) {
	deadline, _ := ctx.Deadline()
	if err := c.Subscribe(stateTopic, 0, time.Until(deadline)); err != nil {
		return latencies{}, err
	}
	values := [][]byte{[]byte("0"), []byte("1")}
	lat := make([]time.Duration, 0, rounds)
	for i := range rounds {
		want := values[(i+1)%2]
		start := time.Now()
		c.Publish(ledTopic, 0, false, 0, want)
		if err := c.Flush(); err != nil {
			return latencies{}, err
		}
		// The retained state that came with the SUBACK never matches:
		// the first command changes it.
		err := readUntil(c, deadline, func(topic, payload []byte) bool {
			return string(topic) == stateTopic && bytes.Equal(payload, want)
		})
		if err != nil {
			return latencies{}, fmt.Errorf("command %d of %d: no state %s: %w", i+1, rounds, want, err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	return latencies{sorted: lat}, nil
}
