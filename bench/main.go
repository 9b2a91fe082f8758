// Command bench measures pimqtt side by side with Debian's mosquitto 2.0.11
// in one run on this machine, on 127.0.0.1 only, and prints a markdown
// table of medians and the ratio pimqtt ÷ mosquitto:
//
//	go build -o /tmp/pimqtt . && go run ./bench -pimqtt /tmp/pimqtt
//
// Both brokers get the same mosquitto-format password file (made with
// `pimqtt passwd`) and the same load generator, a raw MQTT 3.1.1 client
// (bench/rawmqtt) light enough not to be the bottleneck: its CPU is
// printed beside the broker's. Each scenario starts a fresh broker, and
// the repetitions interleave the brokers (mosquitto, pimqtt, mosquitto,
// pimqtt, …). The scenarios:
//
//   - fan-in QoS 0 and QoS 1: 4 publishers → 1 subscriber as fast as the
//     broker takes them; delivered msg/s and the messages lost (sent, and
//     at QoS 1 acknowledged, but never delivered);
//   - fan-out QoS 0: 1 publisher → 50 subscribers;
//   - round trip QoS 0 and 1 over TCP and WebSocket, one message in flight;
//   - connects/s with the password check, and the broker's CPU per connect;
//   - resident memory idle and with 200 and 2,000 idle clients;
//   - the LED stack: start → listening, command → state update on a
//     simulated line, and its memory (pimqtt's one process; mosquitto plus
//     the seed's Python script).
//
// pimqtt runs as `--mode broker` with a fresh data directory, except for
// the stack, where it runs all in one with `--gpio sim`. Every scenario has
// a deadline (-timeout): a stuck broker makes it an error, not a hang.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/pimqtt/pimqtt/bench/rawmqtt"
)

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.total())
	defer cancel()
	if _, err := run(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// config is one benchmark run.
type config struct {
	pimqtt       string
	pimqttArgs   []string
	reps         int
	messages     int // fan-in messages; fan-out deliveries
	fanout       int // fan-out subscribers
	payload      int
	window       int
	rounds       int
	fewClients   int
	clients      int
	workers      int
	lineRounds   int
	pythonRounds int
	seedScript   string
	idle         time.Duration
	timeout      time.Duration
	only         *regexp.Regexp
	cpuProfile   string
}

// parseFlags reads the command line.
func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.pimqtt, "pimqtt", "./pimqtt", "pimqtt binary to measure (go build -o /tmp/pimqtt .)")
	extra := fs.String("pimqtt-args", "", "more arguments for every pimqtt, space-separated (e.g. \"--max-queued 8192\")")
	fs.IntVar(&c.reps, "reps", 3, "repetitions of each scenario per broker (medians are printed)")
	fs.IntVar(&c.messages, "messages", 200000, "fan-in: messages in all (4 publishers); fan-out: deliveries in all")
	fs.IntVar(&c.fanout, "fanout", 50, "fan-out subscribers")
	fs.IntVar(&c.payload, "payload", 64, "message size in bytes (at least 8)")
	fs.IntVar(&c.window, "window", 128, "fan-in QoS 1: unacknowledged messages per publisher")
	fs.IntVar(&c.rounds, "rounds", 5000, "round trips per transport and QoS")
	fs.IntVar(&c.fewClients, "few-clients", 200, "idle clients of the first memory figure")
	fs.IntVar(&c.clients, "clients", 2000, "clients of the connect storm and of the second memory figure")
	fs.IntVar(&c.workers, "connect-workers", 16, "connections made at once in the connect storm")
	fs.IntVar(&c.lineRounds, "line-rounds", 2000, "commands to pimqtt's simulated line")
	fs.IntVar(&c.pythonRounds, "python-rounds", 100, "commands to the seed's Python script beside mosquitto (it takes ~40 ms each)")
	fs.StringVar(&c.seedScript, "seed-script", "testdata/seed/led_device.py", "the seed's Python LED script")
	fs.DurationVar(&c.idle, "idle", 3*time.Second, "fan-in/out: the tail ends when no message arrived for this long")
	fs.DurationVar(&c.timeout, "timeout", 2*time.Minute, "deadline of each scenario with one broker")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write the load generator's own CPU profile to this file (go tool pprof FILE), to check it is not the bottleneck")
	only := fs.String("run", "", "only the scenarios whose name matches this regexp (fanin-qos0, fanin-qos1, fanout-qos0, rtt-tcp-qos0, rtt-tcp-qos1, rtt-ws-qos0, rtt-ws-qos1, connections, stack)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q: every setting is a flag (-h lists them)", fs.Args())
	}
	c.pimqttArgs = strings.Fields(*extra)
	re, err := regexp.Compile(*only)
	if err != nil {
		return c, fmt.Errorf("-run: %w", err)
	}
	c.only = re
	return c, c.check()
}

func (c config) check() error {
	for _, f := range []struct {
		name     string
		value    int
		min, max int
	}{
		{"-reps", c.reps, 1, 100},
		{"-messages", c.messages, 4 * 64, 100_000_000},
		{"-fanout", c.fanout, 1, 10_000},
		{"-payload", c.payload, 8, 65536},
		{"-window", c.window, 2, 65535},
		{"-rounds", c.rounds, 1, 10_000_000},
		{"-few-clients", c.fewClients, 1, c.clients - 1},
		{"-clients", c.clients, 2, 100_000},
		{"-connect-workers", c.workers, 1, 1000},
		{"-line-rounds", c.lineRounds, 1, 10_000_000},
		{"-python-rounds", c.pythonRounds, 1, 1_000_000},
	} {
		if f.value < f.min || f.value > f.max {
			return fmt.Errorf("%s %d: want %d to %d", f.name, f.value, f.min, f.max)
		}
	}
	if c.messages/c.fanout < 1 {
		return fmt.Errorf("-messages %d: fewer than one message for each of the %d fan-out subscribers", c.messages, c.fanout)
	}
	if c.idle <= 0 || c.timeout <= c.idle {
		return fmt.Errorf("-idle %v, -timeout %v: want 0 < idle < timeout", c.idle, c.timeout)
	}
	return nil
}

// total bounds the whole run: every scenario with every broker at its
// deadline.
func (c config) total() time.Duration {
	return time.Duration(c.reps*len(scenarios)*len(brokers))*c.timeout + time.Minute
}

// scenario is one measurement, run with each broker in turn.
type scenario struct {
	name string
	// rows it fills, by key.
	rows []string
	// own: the scenario starts its brokers itself (the stack);
	// otherwise run gets a fresh broker.
	own bool
	run func(ctx context.Context, e *env, b brokerName, t *target) (map[string]sample, error)
}

// sample is one scenario's figures for one row, one broker, one repetition.
type sample struct {
	vals []float64
	lost float64 // NaN where nothing can be lost
	bcpu float64 // broker CPU, % of one core; NaN if not measured
	gcpu float64 // load generator CPU, % of one core; NaN if not measured
}

func newSample(vals ...float64) sample {
	return sample{vals: vals, lost: math.NaN(), bcpu: math.NaN(), gcpu: math.NaN()}
}

func (s sample) withCPU(broker, gen, wall time.Duration) sample {
	s.bcpu, s.gcpu = cpuPercent(broker, wall), cpuPercent(gen, wall)
	return s
}

func floodScenario(name string, qos byte, publishers int, fanout bool) scenario {
	return scenario{name: name, rows: []string{name}, run: func(ctx context.Context, e *env, _ brokerName, t *target) (map[string]sample, error) {
		spec := floodSpec{name: name, qos: qos, publishers: publishers, subscribers: 1,
			perPublisher: e.cfg.messages / publishers, payload: e.cfg.payload, window: e.cfg.window, idle: e.cfg.idle}
		if fanout {
			spec.subscribers, spec.perPublisher = e.cfg.fanout, e.cfg.messages/e.cfg.fanout
		}
		r, err := runFlood(ctx, e, t, spec)
		if err != nil {
			return nil, err
		}
		s := newSample(r.rate()).withCPU(r.brokerCPU, r.genCPU, r.elapsed)
		s.lost = float64(r.lost)
		return map[string]sample{name: s}, nil
	}}
}

func rttScenario(network rawmqtt.Network, qos byte) scenario {
	name := fmt.Sprintf("rtt-%s-qos%d", network, qos)
	return scenario{name: name, rows: []string{name}, run: func(ctx context.Context, e *env, _ brokerName, t *target) (map[string]sample, error) {
		l, err := roundTrips(ctx, e, t, network, qos, e.cfg.rounds)
		if err != nil {
			return nil, err
		}
		return map[string]sample{name: newSample(l.p50(), l.p99()).withCPU(l.brokerCPU, l.genCPU, l.wall)}, nil
	}}
}

// scenarios in the order they run and print.
var scenarios = []scenario{
	floodScenario("fanin-qos0", 0, 4, false),
	floodScenario("fanin-qos1", 1, 4, false),
	floodScenario("fanout-qos0", 0, 1, true),
	rttScenario(rawmqtt.TCP, 0),
	rttScenario(rawmqtt.TCP, 1),
	rttScenario(rawmqtt.WebSocket, 0),
	rttScenario(rawmqtt.WebSocket, 1),
	{name: "connections", rows: []string{"connects", "rss-idle", "rss-few", "rss-many"},
		run: func(ctx context.Context, e *env, _ brokerName, t *target) (map[string]sample, error) {
			r, err := runConnections(ctx, e, t, e.cfg.fewClients, e.cfg.clients, e.cfg.workers)
			if err != nil {
				return nil, err
			}
			return map[string]sample{
				"connects": newSample(r.perSecond(), r.cpuPerConnect()).withCPU(r.brokerCPU, r.genCPU, r.connectWall),
				"rss-idle": newSample(float64(r.rssIdle) / 1024),
				"rss-few":  newSample(float64(r.rssFew)/1024, kibPerClient(r.rssFew, r.rssIdle, r.few)),
				"rss-many": newSample(float64(r.rssMany)/1024, kibPerClient(r.rssMany, r.rssIdle, r.many)),
			}, nil
		}},
	{name: "stack", rows: []string{"start", "line", "stack-rss"}, own: true,
		run: func(ctx context.Context, e *env, b brokerName, _ *target) (map[string]sample, error) {
			r, err := runStack(ctx, e, b)
			if err != nil {
				return nil, err
			}
			return map[string]sample{
				"start":     newSample(float64(r.start) / float64(time.Millisecond)),
				"line":      newSample(r.line.p50(), r.line.p99()),
				"stack-rss": newSample(float64(r.rssKiB) / 1024),
			}, nil
		}},
}

// raiseFileLimit lifts this process's open-file limit to its hard limit
// before the brokers start: they inherit it, and the connection scenario
// needs a descriptor per client on both sides.
func raiseFileLimit(clients int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("open-file limit: %w", err)
	}
	lim.Cur = lim.Max
	// Setting it explicitly also makes os/exec pass the raised limit on:
	// Go otherwise restores the original soft limit in children.
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raise the open-file limit to %d: %w", lim.Max, err)
	}
	if need := uint64(clients) + 256; lim.Cur < need {
		return fmt.Errorf("open-file hard limit %d is below the %d the connection scenario needs: raise it (ulimit -Hn, or LimitNOFILE) or lower -clients", lim.Cur, need)
	}
	return nil
}

// run measures every scenario with both brokers, reps times, printing
// progress to progress and the table to out, which it also returns.
func run(ctx context.Context, cfg config, out, progress io.Writer) (*table, error) {
	if err := raiseFileLimit(cfg.clients); err != nil {
		return nil, err
	}
	e, err := newEnv(cfg)
	if err != nil {
		return nil, err
	}
	defer e.close()
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return nil, fmt.Errorf("-cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, fmt.Errorf("-cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	begin := time.Now()
	tab := newTable(cfg)
	var failures []string
	for rep := 1; rep <= cfg.reps; rep++ {
		for _, sc := range scenarios {
			if !cfg.only.MatchString(sc.name) {
				continue
			}
			tab.ran(sc.rows)
			for _, b := range brokers {
				t0 := time.Now()
				got, err := runOne(ctx, e, sc, b)
				if err != nil {
					msg := fmt.Sprintf("rep %d, %s, %s: %v", rep, sc.name, b, err)
					failures = append(failures, msg)
					fmt.Fprintln(progress, "FAILED", msg)
					if ctx.Err() != nil {
						return tab, fmt.Errorf("the run's deadline passed: %s", msg)
					}
					continue
				}
				for key, s := range got {
					tab.add(key, b, s)
				}
				fmt.Fprintf(progress, "rep %d/%d %-12s %-9s %s in %v\n", rep, cfg.reps, sc.name, b, tab.brief(sc.rows, got), time.Since(t0).Round(time.Millisecond))
			}
		}
	}
	printHeader(out, cfg, time.Since(begin))
	tab.print(out)
	if len(failures) > 0 {
		fmt.Fprintf(out, "\n%d scenario runs failed:\n", len(failures))
		for _, f := range failures {
			fmt.Fprintln(out, "- "+f)
		}
		return tab, fmt.Errorf("%d scenario runs failed", len(failures))
	}
	return tab, nil
}

// runOne runs one scenario with one broker, started fresh unless the
// scenario starts its own, within the scenario's deadline.
func runOne(ctx context.Context, e *env, sc scenario, b brokerName) (map[string]sample, error) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.timeout)
	defer cancel()
	if sc.own {
		return sc.run(ctx, e, b, nil)
	}
	t, err := e.startBroker(ctx, b)
	if err != nil {
		return nil, err
	}
	got, err := sc.run(ctx, e, b, t)
	t.stop(err != nil)
	return got, err
}

// printHeader says what was measured, where and how.
func printHeader(out io.Writer, cfg config, took time.Duration) {
	version := func(name string, args ...string) string {
		o, err := runCommand(name, args...)
		if strings.TrimSpace(o) == "" { // mosquitto -h exits 3
			return fmt.Sprintf("unknown (%v)", err)
		}
		return strings.TrimSpace(strings.SplitN(o, "\n", 2)[0])
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	fmt.Fprintf(out, "pimqtt: %s (%s)\n", cfg.pimqtt, version(cfg.pimqtt, "--version"))
	fmt.Fprintf(out, "mosquitto: %s\n", version(mosquittoBinary(), "-h"))
	fmt.Fprintf(out, "machine: %d CPUs, %s/%s, Linux %s; load generator: bench/rawmqtt (%s)\n",
		runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, strings.TrimSpace(string(kernel)), runtime.Version())
	fmt.Fprintf(out, "medians of %d repetitions, brokers interleaved, a fresh broker per scenario; run took %v\n\n",
		cfg.reps, took.Round(time.Second))
}

// mosquittoBinary is where Debian installs mosquitto, for its version.
func mosquittoBinary() string {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	return "/usr/sbin/mosquitto"
}

// runCommand runs a short command and returns its combined output.
func runCommand(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}
