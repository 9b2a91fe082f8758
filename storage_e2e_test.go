package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/pimqtt/pimqtt/broker"
)

// TestPersistenceThroughKill9: the pimqtt binary with a data directory
// keeps, across kill -9, a retained message and a persistent session with
// its subscription and the message queued for it while it was away; the
// in-process device's own retained messages are not stored (it publishes
// them again at start).
func TestPersistenceThroughKill9(t *testing.T) {
	dataDir := t.TempDir()
	args := []string{"--data-dir", dataDir, "--listen", "127.0.0.1:0", "--ws-listen", "", "--gpio", "sim"}
	p := startProcess(t, nil, args...)
	url := "tcp://" + p.listenAddr(t, broker.TCP)
	waitLog(t, p.logs, "persistence on", filepath.Join(dataDir, "pimqtt.db"))

	connect := func(url string, got chan<- string) (paho.Client, bool) {
		opts := paho.NewClientOptions().AddBroker(url).SetClientID("phone").SetCleanSession(false).
			SetAutoReconnect(false).SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) })
		c := paho.NewClient(opts)
		tok := c.Connect()
		if !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
			t.Fatalf("connect: %v", tok.Error())
		}
		return c, tok.(*paho.ConnectToken).SessionPresent()
	}
	got := make(chan string, 16)
	phone, _ := connect(url, got)
	if tok := phone.Subscribe("alerts/#", 1, nil); !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	phone.Disconnect(100)
	host, port, _ := strings.Cut(strings.TrimPrefix(url, "tcp://"), ":")
	if out, code := mosquittoPub(t, "-h", host, "-p", port, "-q", "1", "-r", "-t", "home/door", "-m", "open"); code != 0 {
		t.Fatalf("mosquitto_pub: %s", out)
	}
	if out, code := mosquittoPub(t, "-h", host, "-p", port, "-q", "1", "-t", "alerts/smoke", "-m", "kitchen"); code != 0 {
		t.Fatalf("mosquitto_pub: %s", out)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.wait(t)

	p = startProcess(t, nil, args...)
	url = "tcp://" + p.listenAddr(t, broker.TCP)
	waitLog(t, p.logs, "storage: restored", "sessions=1", "subscriptions=1", "queued_messages=1", "retained=1")
	if _, present := connect(url, got); !present {
		t.Fatal("the persistent session is not present after kill -9")
	}
	select {
	case m := <-got:
		if m != "kitchen" {
			t.Fatalf("got %q, want the queued alert", m)
		}
	case <-time.After(testTimeout):
		t.Fatal("the queued alert did not arrive after kill -9")
	}
	s := newSubscriber(t, url, "", "", "home/door")
	s.waitFor(t, "home/door", "open")
}

// TestPersistenceOffWithoutDataDirectory: left at its default, persistence
// needs an existing data directory, and pimqtt creates none.
func TestPersistenceOffWithoutDataDirectory(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "absent")
	p := startProcess(t, nil, "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--ws-listen", "", "--gpio", "sim")
	p.listenAddr(t, broker.TCP)
	waitLog(t, p.logs, "persistence off", "storage.persistence = true")
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Fatalf("the data directory was created (%v)", err)
	}
}
