// Command soak loads a pimqtt broker on 127.0.0.1 with QoS 1 traffic for
// a fixed time and checks that nothing acknowledged is lost, while it
// samples the broker's resident memory and goroutines.
//
// The default run: 1,000 clients for 60 s, a fan-in and a fan-out at once
// (half the clients publish to one subscriber, one client publishes to
// the other half), each publisher at -rate messages per second:
//
//	go run ./bench/soak                                  # broker in this process
//	go build -o /tmp/pimqtt . && go run ./bench/soak -pimqtt /tmp/pimqtt
//
// With -pimqtt the broker is that binary (--mode broker on 127.0.0.1:0,
// with a fresh data directory, so persistence is on unless -pimqtt-args
// says --persistence=false), and the memory figures are its own; its
// goroutines come from $SYS/broker/system/threads every 10 s. In this
// process they include the clients.
//
// -fanin N instead publishes N messages from 4 publishers to 1 subscriber
// as fast as the broker takes them: the subscriber cannot keep up, and a
// broker without back-pressure drops acknowledged messages.
//
// It prints the counts and, for memory and goroutines, the first sample
// once every client is connected, the peak, the last sample after the
// drain, and the least-squares slope during publishing. It exits 1 if an
// acknowledged message was lost, a publish was never acknowledged, or
// (QoS 2) a message arrived twice.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/pimqtt/pimqtt/bench/load"
	"github.com/pimqtt/pimqtt/bench/proc"
	"github.com/pimqtt/pimqtt/broker"
)

// config is one soak run.
type config struct {
	clients  int
	duration time.Duration
	rate     float64
	qos      int
	payload  int
	fanin    int // messages of a fan-in run; 0 runs the soak
	pimqtt   string
	args     string // more arguments for the pimqtt binary
	sample   time.Duration
	drain    time.Duration
}

// maxDuration bounds -duration: a soak is a bounded loop.
const maxDuration = 24 * time.Hour

func main() {
	var c config
	flag.IntVar(&c.clients, "clients", 1000, "clients in the soak (at least 4): half publish to one subscriber, one publishes to the others")
	flag.DurationVar(&c.duration, "duration", 60*time.Second, "publishing time of the soak (at most 24h)")
	flag.Float64Var(&c.rate, "rate", 5, "messages per second of each soak publisher")
	flag.IntVar(&c.qos, "qos", 1, "QoS of publishes and subscriptions (1 or 2)")
	flag.IntVar(&c.payload, "payload", 64, "message size in bytes")
	flag.IntVar(&c.fanin, "fanin", 0, "instead of the soak: publish this many messages from 4 publishers to 1 subscriber, as fast as possible")
	flag.StringVar(&c.pimqtt, "pimqtt", "", "pimqtt binary to run as the broker (default: a broker in this process)")
	flag.StringVar(&c.args, "pimqtt-args", "", "more arguments for the pimqtt binary, space-separated (e.g. --persistence=false)")
	flag.DurationVar(&c.sample, "sample", time.Second, "memory and goroutine sampling interval")
	flag.DurationVar(&c.drain, "drain", 60*time.Second, "longest wait, after publishing, for every acknowledged message to arrive")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), c.duration+c.drain+10*time.Minute)
	defer cancel()
	rep, err := run(ctx, c, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}
	if !rep.ok() {
		os.Exit(1)
	}
}

// report is what a run measured.
type report struct {
	res        load.Result
	qos        int
	rss        series // KiB
	goroutines series
	drops      *broker.Drops // in-process broker only
	warnings   []string      // the broker's warnings (binary only)
}

func (r report) ok() bool {
	return r.res.Lost == 0 && r.res.PublishErrors == 0 && (r.qos < 2 || r.res.Duplicates == 0)
}

func (c *config) check() error {
	switch {
	case c.fanin <= 0 && c.clients < 4:
		return fmt.Errorf("-clients %d: want at least 4", c.clients)
	case c.fanin <= 0 && (c.duration <= 0 || c.duration > maxDuration):
		return fmt.Errorf("-duration %v: want more than 0 and at most %v", c.duration, maxDuration)
	case c.qos != 1 && c.qos != 2:
		return fmt.Errorf("-qos %d: want 1 or 2", c.qos)
	case c.rate <= 0 && c.fanin <= 0:
		return fmt.Errorf("-rate %v: want more than 0", c.rate)
	case c.sample <= 0:
		return fmt.Errorf("-sample %v: want more than 0", c.sample)
	}
	return nil
}

// run starts the broker, runs the load and prints the report to out.
func run(ctx context.Context, c config, out io.Writer) (report, error) {
	if err := c.check(); err != nil {
		return report{}, err
	}
	rep := report{qos: c.qos}
	var b target
	var err error
	if c.pimqtt != "" {
		b, err = startBinary(ctx, c.pimqtt, strings.Fields(c.args), c.clients+10)
	} else {
		b, err = startInProcess(c.clients + 10)
	}
	if err != nil {
		return rep, err
	}
	defer b.close()

	lc := load.Config{
		Addr: b.addr(), QoS: byte(c.qos), PayloadSize: c.payload, Drain: c.drain,
		ClientPrefix: "soak", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if c.fanin > 0 {
		lc.Flows = []load.Flow{{Name: "fanin", Publishers: 4, Subscribers: 1}}
		lc.Messages = (c.fanin + 3) / 4
		lc.Outstanding = 128
		fmt.Fprintf(out, "fan-in: 4 publishers → 1 subscriber, %d QoS %d messages of %d bytes, broker %s\n", lc.Messages*4, c.qos, c.payload, b.name())
	} else {
		half := (c.clients - 2) / 2
		lc.Flows = []load.Flow{
			{Name: "in", Publishers: c.clients - 2 - half, Subscribers: 1},
			{Name: "out", Publishers: 1, Subscribers: half},
		}
		lc.Duration, lc.Rate = c.duration, c.rate
		fmt.Fprintf(out, "soak: %d clients (fan-in %d → 1, fan-out 1 → %d), QoS %d, %.1f msg/s per publisher, %v, broker %s\n",
			c.clients, c.clients-2-half, half, c.qos, c.rate, c.duration, b.name())
	}
	connectStart := time.Now()
	r, err := load.Prepare(ctx, lc)
	if err != nil {
		return rep, err
	}
	defer r.Close()
	fmt.Fprintf(out, "connected and subscribed in %v\n", time.Since(connectStart).Round(time.Millisecond))

	s := startSampler(b, c.sample)
	rep.res = r.Start(ctx)
	s.mark() // publishing and drain are over
	rep.rss, rep.goroutines = s.stop()
	if d, ok := b.drops(); ok {
		rep.drops = &d
	}
	rep.warnings = b.warnings()
	rep.print(out)
	return rep, nil
}

func (r report) print(out io.Writer) {
	fmt.Fprintln(out, r.res)
	fmt.Fprintf(out, "resident memory (MiB): %s\n", r.rss.describe(1.0/1024))
	fmt.Fprintf(out, "goroutines:            %s\n", r.goroutines.describe(1))
	if r.drops != nil {
		fmt.Fprintf(out, "broker: %+v\n", *r.drops)
	}
	if len(r.warnings) > 0 {
		fmt.Fprintln(out, "broker warnings (the first ones):")
		for _, w := range r.warnings {
			fmt.Fprintln(out, "  "+w)
		}
	}
	verdict := "OK: nothing acknowledged was lost"
	if !r.ok() {
		verdict = "FAIL: acknowledged messages lost, unacknowledged or duplicated"
	}
	fmt.Fprintln(out, verdict)
}

// target is the broker under load.
type target interface {
	addr() string
	name() string
	rssKiB() (int64, bool)
	goroutines() (int64, bool)
	drops() (broker.Drops, bool)
	// warnings are the broker's first warning and error log lines.
	warnings() []string
	close()
}

// inProcess is a broker in this process.
type inProcess struct{ b *broker.Broker }

func startInProcess(maxClients int) (*inProcess, error) {
	limits := broker.DefaultLimits()
	limits.MaxClients = int64(maxClients)
	limits.MaxPendingConnections = int64(maxClients)
	b, err := broker.New(broker.Options{
		Listeners:      []broker.ListenerConfig{{Kind: broker.TCP, Addr: "127.0.0.1:0"}},
		AllowAnonymous: true,
		Limits:         limits,
		Logger:         slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return nil, err
	}
	if err := b.Start(); err != nil {
		_ = b.Close()
		return nil, err
	}
	b.OpenNetwork()
	return &inProcess{b: b}, nil
}

func (p *inProcess) addr() string { return p.b.Addrs()[0].Addr.String() }
func (p *inProcess) name() string {
	return "in this process (memory and goroutines include the clients)"
}
func (p *inProcess) rssKiB() (int64, bool) {
	n, err := proc.RSSKiB(0)
	return n, err == nil
}
func (p *inProcess) goroutines() (int64, bool)   { return int64(runtime.NumGoroutine()), true }
func (p *inProcess) drops() (broker.Drops, bool) { return p.b.Dropped(), true }
func (p *inProcess) close()                      { _ = p.b.Close() }

// warnings: a broker in this process logs to stderr.
func (p *inProcess) warnings() []string { return nil }

// binary is a pimqtt process.
type binary struct {
	*proc.Pimqtt
	dir     string // its data directory, removed by close
	sys     paho.Client
	mu      sync.Mutex
	threads int64 // from $SYS/broker/system/threads
	fresh   bool  // threads arrived since goroutines last read it
}

func startBinary(ctx context.Context, path string, args []string, maxClients int) (*binary, error) {
	dir, err := os.MkdirTemp("", "pimqtt-soak")
	if err != nil {
		return nil, err
	}
	// The data directory exists: pimqtt stores sessions there unless
	// told otherwise (--persistence=false).
	p, err := proc.StartPimqtt(ctx, path, append([]string{"--mode", "broker", "--listen", "127.0.0.1:0", "--ws-listen", "", "--http-listen", "",
		"--data-dir", dir, "--max-clients", strconv.Itoa(maxClients), "--max-pending", strconv.Itoa(maxClients), "--log-level", "info"}, args...), "tcp")
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	b := &binary{Pimqtt: p, dir: dir}
	b.sys = paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.addr()).SetClientID("soak-sys").SetAutoReconnect(false))
	if tok := b.sys.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.close()
		return nil, fmt.Errorf("connect to %s: %v", b.addr(), tok.Error())
	}
	// Retained: the first value is from before the clients connect.
	b.sys.Subscribe("$SYS/broker/system/threads", 0, func(_ paho.Client, m paho.Message) {
		if n, err := strconv.ParseInt(string(m.Payload()), 10, 64); err == nil {
			b.mu.Lock()
			b.threads, b.fresh = n, true
			b.mu.Unlock()
		}
	}).WaitTimeout(10 * time.Second)
	return b, nil
}

func (b *binary) addr() string { return b.Addr("tcp") }
func (b *binary) name() string {
	return strings.Join(b.Args(), " ") + " (pid " + strconv.Itoa(b.PID()) + ")"
}
func (b *binary) rssKiB() (int64, bool) {
	n, err := proc.RSSKiB(b.PID())
	return n, err == nil
}

// goroutines is the broker's count from $SYS, once per new value: pimqtt
// publishes it every 10 s.
func (b *binary) goroutines() (int64, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	fresh := b.fresh
	b.fresh = false
	return b.threads, fresh
}
func (b *binary) drops() (broker.Drops, bool) { return broker.Drops{}, false }
func (b *binary) warnings() []string          { return b.Warnings() }
func (b *binary) close() {
	if b.sys != nil {
		b.sys.Disconnect(100)
	}
	b.Close()
	_ = os.RemoveAll(b.dir)
}

// sample is one measurement.
type sample struct {
	at    time.Duration // since sampling started
	value float64
}

// series is a measurement over a run: samples from the moment every
// client is connected to the end of publishing and drain (the mark), and
// one after.
type series struct {
	samples []sample
	marked  int // index of the first sample after the mark; -1 if none
}

// describe renders start, peak, end and the slope during publishing,
// with values multiplied by scale.
func (s series) describe(scale float64) string {
	if len(s.samples) == 0 {
		return "not available"
	}
	pub := s.samples
	if s.marked >= 0 {
		pub = s.samples[:s.marked]
	}
	peak := 0.0
	for _, x := range s.samples {
		peak = max(peak, x.value)
	}
	slope := func(ss []sample) string {
		if k, ok := leastSquares(ss); ok {
			return fmt.Sprintf("%+.2f/min", k*scale*60)
		}
		return "n/a"
	}
	first, last := s.samples[0].value, s.samples[len(s.samples)-1].value
	return fmt.Sprintf("start %.1f, peak %.1f, end %.1f; slope %s over the run, %s over its second half (%d samples)",
		first*scale, peak*scale, last*scale, slope(pub), slope(pub[len(pub)/2:]), len(s.samples))
}

// leastSquares is the slope, per second, of the line that fits samples.
func leastSquares(samples []sample) (float64, bool) {
	if len(samples) < 3 {
		return 0, false
	}
	var sx, sy, sxx, sxy float64
	n := float64(len(samples))
	for _, s := range samples {
		x := s.at.Seconds()
		sx += x
		sy += s.value
		sxx += x * x
		sxy += x * s.value
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0, false
	}
	return (n*sxy - sx*sy) / d, true
}

// sampler samples a target's memory and goroutines at an interval until
// stopped.
type sampler struct {
	t     target
	start time.Time
	stopc chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	rss   series
	gor   series
}

func startSampler(t target, every time.Duration) *sampler {
	// A value from before the clients connected (the binary's retained
	// $SYS count) is not a start value.
	t.goroutines()
	s := &sampler{t: t, start: time.Now(), stopc: make(chan struct{}), done: make(chan struct{}),
		rss: series{marked: -1}, gor: series{marked: -1}}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			s.take()
			select {
			case <-s.stopc:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *sampler) take() {
	at := time.Since(s.start)
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.t.rssKiB(); ok {
		s.rss.samples = append(s.rss.samples, sample{at, float64(v)})
	}
	if v, ok := s.t.goroutines(); ok {
		s.gor.samples = append(s.gor.samples, sample{at, float64(v)})
	}
}

// mark notes the end of publishing and drain, and takes a sample.
func (s *sampler) mark() {
	s.mu.Lock()
	s.rss.marked, s.gor.marked = len(s.rss.samples), len(s.gor.samples)
	s.mu.Unlock()
	s.take()
}

func (s *sampler) stop() (rss, goroutines series) {
	close(s.stopc)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rss, s.gor
}
