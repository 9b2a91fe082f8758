package main

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"time"

	"github.com/pimqtt/pimqtt/bench/proc"
	"github.com/pimqtt/pimqtt/bench/rawmqtt"
	"github.com/pimqtt/pimqtt/mqtttest"
)

// stackResult is what the whole stack (broker and LED device) measured.
type stackResult struct {
	start  time.Duration // start → listening (see runStack)
	line   latencies     // command → state update
	rssKiB int64         // broker and device together, after the commands
}

// runStack measures the stack the user runs: for pimqtt the one process
// with its device on a simulated line (--gpio sim), for mosquitto the
// broker plus the seed's Python paho script as the device.
//
// Start → listening: for pimqtt until a client is connected and has the
// device's retained {"status": "On"} (pimqtt opens the network only once
// its device is subscribed, so the first connection marks it); for
// mosquitto until the first CONNACK (the broker alone: a Python device
// takes longer than any broker).
func runStack(ctx context.Context, e *env, name brokerName) (stackResult, error) {
	var res stackResult
	t0 := time.Now()
	var t *target
	var err error
	if name == pimqtt {
		t, err = e.startPimqtt(ctx, "--gpio", "sim", "--ws-listen", "")
	} else {
		t, err = e.startMosquitto(false) // as pimqtt here: TCP only
	}
	if err != nil {
		return res, err
	}
	failed := true
	defer func() { t.stop(failed) }()
	c, err := dialConnect(ctx, e, rawmqtt.TCP, t.tcp, "bench-phone", 4096)
	if err != nil {
		return res, err
	}
	defer c.Close()
	pids := []int{t.pid}
	rounds := e.cfg.lineRounds
	if name == pimqtt {
		if err := waitDeviceOn(ctx, c); err != nil {
			return res, fmt.Errorf("pimqtt's device: %w", err)
		}
		res.start = time.Since(t0)
	} else {
		res.start = time.Since(t0)
		rounds = e.cfg.pythonRounds
		py, err := e.startSeedDevice(t)
		if err != nil {
			return res, err
		}
		defer py.stop()
		pids = append(pids, py.cmd.Process.Pid)
		if err := waitDeviceOn(ctx, c); err != nil {
			return res, fmt.Errorf("the seed's Python device: %w; its output: %s", err, py.out.String())
		}
	}
	if res.line, err = commandRounds(ctx, c, rounds); err != nil {
		return res, err
	}
	for _, pid := range pids {
		kib, err := proc.RSSKiB(pid)
		if err != nil {
			return res, err
		}
		res.rssKiB += kib
	}
	failed = false
	return res, nil
}

// seedDevice is the seed's Python LED script, run beside mosquitto.
type seedDevice struct {
	cmd    *exec.Cmd
	out    *mqtttest.SyncBuffer
	exited chan struct{}
}

// startSeedDevice runs the seed's script (testdata/seed/led_device.py)
// with Debian's python3 and paho against the broker t.
func (e *env) startSeedDevice(t *target) (*seedDevice, error) {
	_, port, err := net.SplitHostPort(t.tcp)
	if err != nil {
		return nil, err
	}
	d := &seedDevice{out: &mqtttest.SyncBuffer{}, exited: make(chan struct{})}
	d.cmd = exec.Command(pythonPath, e.cfg.seedScript, "127.0.0.1", port, e.user, e.pass)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the seed's device %s with %s: %w (apt-get install python3-paho-mqtt)", e.cfg.seedScript, pythonPath, err)
	}
	go func() { _ = d.cmd.Wait(); close(d.exited) }()
	return d, nil
}

// pythonPath is Debian's interpreter, the one python3-paho-mqtt is for.
const pythonPath = "/usr/bin/python3"

func (d *seedDevice) stop() {
	_ = d.cmd.Process.Kill()
	<-d.exited
}
