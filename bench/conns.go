package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pimqtt/pimqtt/bench/proc"
	"github.com/pimqtt/pimqtt/bench/rawmqtt"
)

// connResult is what the connection scenario measured.
type connResult struct {
	rssIdle, rssFew, rssMany int64 // KiB, with 0, few and many clients connected
	few, many                int
	connectWall              time.Duration // connecting all many clients
	brokerCPU, genCPU        time.Duration // during the connects
}

func (r connResult) perSecond() float64 {
	return float64(r.many) / r.connectWall.Seconds()
}

func (r connResult) cpuPerConnect() float64 { return micros(r.brokerCPU) / float64(r.many) }

// kibPerClient is the resident memory n connected clients added.
func kibPerClient(rssN, rssIdle int64, n int) float64 { return float64(rssN-rssIdle) / float64(n) }

// runConnections measures a fresh broker's resident memory once idle,
// then connects few clients with the password (workers at a time,
// each connect timed to its CONNACK), measures again, connects the rest
// up to many and measures again. The clients stay connected and idle
// until the end.
func runConnections(ctx context.Context, e *env, t *target, few, many, workers int) (connResult, error) {
	res := connResult{few: few, many: many}
	// One client comes and goes first: what the first connection pulls
	// in once (code pages, the password check's buffers) is not per
	// client.
	probe, err := dialConnect(ctx, e, rawmqtt.TCP, t.tcp, "bench-probe", 128)
	if err != nil {
		return res, err
	}
	if err := pingAll(ctx, []*rawmqtt.Client{probe}); err != nil {
		return res, err
	}
	_ = probe.Disconnect()
	_ = probe.Close()
	if res.rssIdle, err = proc.RSSKiB(t.pid); err != nil {
		return res, err
	}
	clients := make([]*rawmqtt.Client, many)
	defer func() {
		for _, c := range clients {
			if c != nil {
				_ = c.Close()
			}
		}
	}()
	for _, phase := range []struct {
		from, to int
		rss      *int64
	}{{0, few, &res.rssFew}, {few, many, &res.rssMany}} {
		cpu0, gen0, err := cpuNow(t.pid)
		if err != nil {
			return res, err
		}
		start := time.Now()
		if err := connectRange(ctx, e, t, clients, phase.from, phase.to, workers); err != nil {
			return res, err
		}
		res.connectWall += time.Since(start)
		cpu1, gen1, err := cpuNow(t.pid)
		if err != nil {
			return res, err
		}
		res.brokerCPU += cpu1 - cpu0
		res.genCPU += gen1 - gen0
		// A PINGREQ answered by every client: the broker has read from
		// each since its CONNACK, so each connection is fully set up.
		if err := pingAll(ctx, clients[:phase.to]); err != nil {
			return res, err
		}
		if *phase.rss, err = proc.RSSKiB(t.pid); err != nil {
			return res, err
		}
	}
	return res, nil
}

// connectRange connects clients[from:to], workers at a time.
func connectRange(ctx context.Context, e *env, t *target, clients []*rawmqtt.Client, from, to, workers int) error {
	var next atomic.Int64
	next.Store(int64(from))
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= to || ctx.Err() != nil {
					return
				}
				c, err := dialConnect(ctx, e, rawmqtt.TCP, t.tcp, fmt.Sprintf("bench-idle-%d", i), 128)
				if err != nil {
					mu.Lock()
					first = errors.Join(first, fmt.Errorf("client %d of %d: %w", i+1, to, err))
					mu.Unlock()
					next.Store(int64(to)) // the others stop
					return
				}
				clients[i] = c
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		return fmt.Errorf("connecting clients %d to %d: %w", from+1, to, ctx.Err())
	}
	return first
}

// pingAll sends every client a PINGREQ, then reads every PINGRESP.
func pingAll(ctx context.Context, clients []*rawmqtt.Client) error {
	deadline, _ := ctx.Deadline()
	for _, c := range clients {
		c.Pingreq()
		if err := c.Flush(); err != nil {
			return err
		}
	}
	for i, c := range clients {
		if err := c.Conn().SetReadDeadline(deadline); err != nil {
			return err
		}
		typ, _, _, err := c.ReadPacket()
		if err != nil {
			return fmt.Errorf("client %d: waiting for PINGRESP: %w", i+1, err)
		}
		if typ != rawmqtt.PINGRESP {
			return fmt.Errorf("client %d: packet type %d where PINGRESP was due", i+1, typ)
		}
	}
	return nil
}
