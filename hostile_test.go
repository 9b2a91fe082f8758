package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pimqtt/pimqtt/broker"
)

// TestHostileClientsAgainstBinary sends the bytes that crash or exhaust a
// stock Mochi broker to the real pimqtt binary: the process stays up, its
// memory stays small, and a normal client toggles the LED right after.
func TestHostileClientsAgainstBinary(t *testing.T) {
	// The oversized first packets below must be refused by pimqtt's CONNECT
	// guard, and nothing else: they claim less than --max-packet-size, so
	// Mochi's own limit lets them through, and --connect-timeout is longer
	// than the test waits for them to be closed.
	p := startProcess(t, nil, "--listen", "127.0.0.1:0", "--ws-listen", "", "--gpio", "sim",
		"--max-connect-size", "1024", "--max-packet-size", "2097152", "--connect-timeout", "1m", "--log-level", "debug")
	addr := p.listenAddr(t, broker.TCP)
	rssBefore := rssKiB(t, p.cmd.Process.Pid)

	// mochi-mqtt/server#501: after an MQTT 5 CONNECT, a truncated SUBSCRIBE
	// makes packets.go index past the end of the packet.
	c := dialRaw(t, addr)
	connectV5 := []byte{0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x02, 0x00, 0x3C, 0x00, 0x00, 0x00}
	writeRaw(t, c, connectV5)
	ack := make([]byte, 64)
	if n, err := c.Read(ack); err != nil || n < 4 || ack[0] != 0x20 {
		t.Fatalf("CONNACK: % x %v", ack[:n], err)
	}
	writeRaw(t, c, []byte{0x82, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, 0x61})
	expectClosed(t, c)
	waitLog(t, p.logs, "panic while serving a connection")

	// Three connections whose CONNECT claims 1 MiB (remaining length
	// 0x80 0x80 0x40): over --max-connect-size, under --max-packet-size.
	// Without the guard Mochi allocates the claimed length and waits for it.
	for i := 0; i < 3; i++ {
		c := dialRaw(t, addr)
		writeRaw(t, c, []byte{0x10, 0x80, 0x80, 0x40})
		expectClosed(t, c)
	}
	waitLog(t, p.logs, "first packet larger than the CONNECT size limit", "1048576 > 1024")

	select {
	case err := <-p.done:
		p.done <- err
		t.Fatalf("pimqtt exited: %v", err)
	default:
	}
	rssAfter := rssKiB(t, p.cmd.Process.Pid)
	t.Logf("RSS %d KiB before, %d KiB after the hostile clients", rssBefore, rssAfter)
	if rssAfter-rssBefore > 32<<10 {
		t.Fatalf("RSS grew by %d KiB", rssAfter-rssBefore)
	}

	url := "tcp://" + addr
	sub := newSubscriber(t, url, "", "", "raspberry/led/state")
	publish(t, url, "", "", "raspberry/led", []byte("1"))
	sub.waitFor(t, "raspberry/led/state", "1")
}

func dialRaw(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	return c
}

func writeRaw(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	if _, err := c.Write(b); err != nil {
		t.Fatalf("write % x: %v", b, err)
	}
}

// expectClosed reads until the peer closes; a deadline means it did not.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	buf := make([]byte, 256)
	for {
		if _, err := c.Read(buf); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("connection not closed within %v", testTimeout)
			}
			return
		}
	}
}

// rssKiB reads a process's resident set size from /proc.
func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}
