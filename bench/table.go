package main

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// kind says how a row's figures read.
type kind int

const (
	rate        kind = iota // msg/s, with messages lost
	percentiles             // p50 / p99 µs
	connects                // connects/s, broker CPU µs per connect
	memory                  // MiB
	memoryPer               // MiB, KiB per client
	millis                  // ms
)

// row is one line of the table.
type row struct {
	key, label string
	kind       kind
	samples    map[brokerName][]sample
	ran        bool // a scenario that fills it ran, whether or not it failed
}

// table collects the samples of every row.
type table struct {
	rows []*row
}

func newTable(c config) *table {
	n := func(x int) string { return group(fmt.Sprint(x)) }
	t := &table{}
	for _, r := range []row{
		{key: "fanin-qos0", kind: rate, label: fmt.Sprintf("fan-in QoS 0, 4 publishers → 1 subscriber, %s × %d B: delivered msg/s (lost)", n(c.messages/4*4), c.payload)},
		{key: "fanin-qos1", kind: rate, label: fmt.Sprintf("fan-in QoS 1, same, %d unacknowledged per publisher: delivered msg/s (lost)", c.window)},
		{key: "fanout-qos0", kind: rate, label: fmt.Sprintf("fan-out QoS 0, 1 publisher → %d subscribers, %s × %d B: delivered msg/s (lost)", c.fanout, n(c.messages/c.fanout), c.payload)},
		{key: "rtt-tcp-qos0", kind: percentiles, label: fmt.Sprintf("round trip QoS 0 over TCP, %s × %d B one at a time: p50 / p99 µs", n(c.rounds), c.payload)},
		{key: "rtt-tcp-qos1", kind: percentiles, label: "round trip QoS 1 over TCP: p50 / p99 µs"},
		{key: "rtt-ws-qos0", kind: percentiles, label: "round trip QoS 0 over WebSocket: p50 / p99 µs"},
		{key: "rtt-ws-qos1", kind: percentiles, label: "round trip QoS 1 over WebSocket: p50 / p99 µs"},
		{key: "connects", kind: connects, label: fmt.Sprintf("connects/s with password auth, %s clients, %d at a time (broker CPU µs per connect)", n(c.clients), c.workers)},
		{key: "rss-idle", kind: memory, label: "RSS idle (after one client came and went), MiB"},
		{key: "rss-few", kind: memoryPer, label: fmt.Sprintf("RSS with %s idle clients, MiB (KiB per client)", n(c.fewClients))},
		{key: "rss-many", kind: memoryPer, label: fmt.Sprintf("RSS with %s idle clients, MiB (KiB per client)", n(c.clients))},
		{key: "start", kind: millis, label: "start → listening, ms (pimqtt: all in one with --gpio sim, until a client has the device's retained status; mosquitto: first CONNACK)"},
		{key: "line", kind: percentiles, label: fmt.Sprintf("publish → line set, simulated line: PUBLISH raspberry/led → its raspberry/led/state back, p50 / p99 µs (pimqtt all in one, %s commands; mosquitto + the seed's Python script, %s)", n(c.lineRounds), n(c.pythonRounds))},
		{key: "stack-rss", kind: memory, label: "RSS of the LED stack after the commands, MiB (pimqtt: one process; mosquitto + Python script)"},
	} {
		r.samples = make(map[brokerName][]sample)
		t.rows = append(t.rows, &r)
	}
	return t
}

func (t *table) row(key string) *row {
	for _, r := range t.rows {
		if r.key == key {
			return r
		}
	}
	panic("bench: no row " + key) // a scenario names its rows: a typo is a bug
}

// ran marks the rows of a scenario that ran, so that they print even if
// every run failed.
func (t *table) ran(keys []string) {
	for _, k := range keys {
		t.row(k).ran = true
	}
}

func (t *table) add(key string, b brokerName, s sample) {
	r := t.row(key)
	r.samples[b] = append(r.samples[b], s)
}

// brief is a progress line's summary of one scenario run.
func (t *table) brief(keys []string, got map[string]sample) string {
	var parts []string
	for _, k := range keys {
		s, ok := got[k]
		if !ok {
			continue
		}
		p := k + " " + t.row(k).kind.cell(s.vals, s.lost)
		if !math.IsNaN(s.bcpu) {
			p += fmt.Sprintf(", broker CPU %.0f%%, generator CPU %.0f%%", s.bcpu, s.gcpu)
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "; ")
}

// med is the median of each figure of a row's samples for one broker.
type med struct {
	vals             []float64
	lost, bcpu, gcpu float64
	n                int
}

func (r *row) median(b brokerName) med {
	ss := r.samples[b]
	m := med{n: len(ss), lost: math.NaN(), bcpu: math.NaN(), gcpu: math.NaN()}
	if len(ss) == 0 {
		return m
	}
	pick := func(f func(sample) float64) float64 {
		xs := make([]float64, len(ss))
		for i, s := range ss {
			xs[i] = f(s)
		}
		return median(xs)
	}
	for i := range ss[0].vals {
		m.vals = append(m.vals, pick(func(s sample) float64 { return s.vals[i] }))
	}
	m.lost = pick(func(s sample) float64 { return s.lost })
	m.bcpu = pick(func(s sample) float64 { return s.bcpu })
	m.gcpu = pick(func(s sample) float64 { return s.gcpu })
	return m
}

// cell formats a broker's figures.
func (k kind) cell(v []float64, lost float64) string {
	if len(v) == 0 {
		return "failed"
	}
	switch k {
	case rate:
		return fmt.Sprintf("%s (%s lost)", number(v[0]), count(lost))
	case percentiles:
		return number(v[0]) + " / " + number(v[1])
	case connects:
		return fmt.Sprintf("%s (%s µs)", number(v[0]), number(v[1]))
	case memoryPer:
		return fmt.Sprintf("%s (%s KiB)", number(v[0]), number(v[1]))
	}
	return number(v[0])
}

// ratio formats pimqtt's figures divided by mosquitto's.
func (k kind) ratio(p, m []float64) string {
	if len(p) == 0 || len(m) == 0 {
		return "–"
	}
	switch k {
	case percentiles:
		return ratio(p[0], m[0]) + " / " + ratio(p[1], m[1])
	case connects:
		return ratio(p[0], m[0]) + " (CPU " + ratio(p[1], m[1]) + ")"
	case memoryPer:
		return ratio(p[0], m[0]) + " (" + ratio(p[1], m[1]) + ")"
	}
	return ratio(p[0], m[0])
}

// cpu formats the CPU figures of both brokers, or "–".
func cpu(m, p float64) string {
	if math.IsNaN(m) && math.IsNaN(p) {
		return "–"
	}
	f := func(x float64) string {
		if math.IsNaN(x) {
			return "–"
		}
		return fmt.Sprintf("%.0f%%", x)
	}
	return f(m) + " / " + f(p)
}

// print writes the table in markdown.
func (t *table) print(out io.Writer) {
	fmt.Fprintln(out, "| scenario | mosquitto | pimqtt | pimqtt ÷ mosquitto | broker CPU, mosquitto / pimqtt | load generator CPU, with mosquitto / with pimqtt |")
	fmt.Fprintln(out, "|---|---|---|---|---|---|")
	for _, r := range t.rows {
		if !r.ran {
			continue // not run (-run)
		}
		m, p := r.median(mosquitto), r.median(pimqtt)
		fmt.Fprintf(out, "| %s | %s | %s | %s | %s | %s |\n", r.label, r.kind.cell(m.vals, m.lost), r.kind.cell(p.vals, p.lost),
			r.kind.ratio(p.vals, m.vals), cpu(m.bcpu, p.bcpu), cpu(m.gcpu, p.gcpu))
	}
	fmt.Fprintln(out, "\nCPU: % of one core over the measured interval (first publish → last delivery; the round trips; the connects).")
	fmt.Fprintln(out, "msg/s and connects/s: higher is better; µs, ms, MiB, KiB: lower is better.")
}
