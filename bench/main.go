// Command bench measures pimqtt side by side with the stack it replaces
// (mosquitto plus the seed's Python paho LED script) in one run on this
// machine: start-up time to a listening port, resident memory once idle,
// and the round trip from a phone-like client's command to the device's
// retained state update (median and p99). Everything runs on 127.0.0.1.
//
//	go build -o /tmp/pimqtt . && go run ./bench -pimqtt /tmp/pimqtt
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

func main() {
	bin := flag.String("pimqtt", "./pimqtt", "pimqtt binary to measure")
	rounds := flag.Int("rounds", 2000, "command round trips per stack (bounded)")
	starts := flag.Int("starts", 5, "start-ups per stack")
	flag.Parse()
	if err := run(*bin, *rounds, *starts); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// stack is one way of providing broker + device.
type stack struct {
	name  string
	start func(dir, port string) ([]*exec.Cmd, error)
}

func run(bin string, rounds, starts int) error {
	if fi, err := os.Stat(bin); err == nil {
		fmt.Printf("pimqtt binary: %s, %.1f MiB\n", bin, float64(fi.Size())/(1<<20))
	}
	dir, err := os.MkdirTemp("", "pimqtt-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	passwd := filepath.Join(dir, "passwd")
	if out, err := exec.Command(bin, "passwd", "-c", "-b", passwd, "bench", "bench").CombinedOutput(); err != nil {
		return fmt.Errorf("pimqtt passwd: %v: %s", err, out)
	}
	stacks := []stack{
		{"pimqtt (one process)", func(dir, port string) ([]*exec.Cmd, error) {
			c := exec.Command(bin, "--password-file", passwd, "--listen", "127.0.0.1:"+port, "--ws-listen", "", "--gpio", "sim", "--log-level", "warn")
			return []*exec.Cmd{c}, c.Start()
		}},
		{"mosquitto + python paho script", func(dir, port string) ([]*exec.Cmd, error) {
			conf := filepath.Join(dir, "mosquitto.conf")
			lines := "listener " + port + " 127.0.0.1\nallow_anonymous false\npassword_file " + passwd + "\npersistence false\nuser root\nlog_type none\n"
			if err := os.WriteFile(conf, []byte(lines), 0o600); err != nil {
				return nil, err
			}
			m := exec.Command(mosquittoPath(), "-c", conf)
			if err := m.Start(); err != nil {
				return nil, err
			}
			if err := waitPort(port, 10*time.Second); err != nil {
				return []*exec.Cmd{m}, err
			}
			py := exec.Command("/usr/bin/python3", "testdata/seed/led_device.py", "127.0.0.1", port, "bench", "bench")
			return []*exec.Cmd{m, py}, py.Start()
		}},
	}
	fmt.Printf("%-32s %14s %14s %12s %12s\n", "stack", "start→listen", "idle RSS", "cmd p50", "cmd p99")
	for _, s := range stacks {
		var startTimes []time.Duration
		var rss int
		var p50, p99 time.Duration
		for i := 0; i < starts; i++ {
			port, err := freePort()
			if err != nil {
				return err
			}
			t0 := time.Now()
			cmds, err := s.start(dir, port)
			if err == nil {
				err = waitPort(port, 10*time.Second)
			}
			startTimes = append(startTimes, time.Since(t0))
			if err == nil && i == starts-1 {
				rss, p50, p99, err = measure(cmds, port, rounds)
			}
			for _, c := range cmds {
				_ = c.Process.Kill()
				_ = c.Wait()
			}
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
		}
		sort.Slice(startTimes, func(i, j int) bool { return startTimes[i] < startTimes[j] })
		fmt.Printf("%-32s %14v %11.1f MiB %12v %12v\n", s.name, startTimes[len(startTimes)/2].Round(100*time.Microsecond),
			float64(rss)/1024, p50.Round(time.Microsecond), p99.Round(time.Microsecond))
	}
	return nil
}

// measure waits for the device to be up, times command round trips, then
// reads the resident memory of every process of the stack.
func measure(cmds []*exec.Cmd, port string, rounds int) (int, time.Duration, time.Duration, error) {
	states := make(chan string, 16)
	status := make(chan struct{}, 1)
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://127.0.0.1:" + port).
		SetClientID("bench-phone").SetUsername("bench").SetPassword("bench").SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return 0, 0, 0, fmt.Errorf("connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	c.Subscribe("raspberry/status", 1, func(_ paho.Client, m paho.Message) {
		if strings.Contains(string(m.Payload()), "On") {
			select {
			case status <- struct{}{}:
			default:
			}
		}
	}).Wait()
	select {
	case <-status:
	case <-time.After(15 * time.Second):
		return 0, 0, 0, errors.New("device never reported On")
	}
	c.Subscribe("raspberry/led/state", 1, func(_ paho.Client, m paho.Message) {
		if !m.Retained() {
			states <- string(m.Payload())
		}
	}).Wait()
	lat := make([]time.Duration, 0, rounds)
	for i := 0; i < rounds; i++ {
		want := strconv.Itoa((i + 1) % 2)
		t0 := time.Now()
		c.Publish("raspberry/led", 1, false, want)
		for got := ""; got != want; {
			select {
			case got = <-states:
			case <-time.After(10 * time.Second):
				return 0, 0, 0, fmt.Errorf("round %d: no state %s", i, want)
			}
		}
		lat = append(lat, time.Since(t0))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	// Idle memory: after the burst, as a Pi would sit between commands.
	time.Sleep(time.Second)
	rss := 0
	for _, cmd := range cmds {
		kb, err := rssKiB(cmd.Process.Pid)
		if err != nil {
			return 0, 0, 0, err
		}
		rss += kb
	}
	return rss, lat[len(lat)/2], lat[len(lat)*99/100], nil
}

func rssKiB(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			return strconv.Atoi(f[1])
		}
	}
	return 0, errors.New("no VmRSS")
}

// mosquittoPath finds the broker where Debian puts it: /usr/sbin, which a
// normal user's PATH lacks.
func mosquittoPath() string {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	return "/usr/sbin/mosquitto"
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port, nil
}

func waitPort(port string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("port %s not listening after %v", port, limit)
		}
		time.Sleep(500 * time.Microsecond)
	}
}
