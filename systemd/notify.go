// Package systemd speaks systemd's service notification protocol
// (sd_notify(3)): a service of Type=notify tells systemd when it is ready,
// reloading or stopping, what it is doing (STATUS=, shown by systemctl
// status), and proves it is alive with watchdog pings (WatchdogSec=).
//
// The protocol is one datagram of newline-separated KEY=VALUE lines sent
// to the unix socket named by $NOTIFY_SOCKET; a name starting with '@' is
// an abstract socket. Everything here does nothing when NOTIFY_SOCKET is
// unset, so the program behaves the same when run by hand.
package systemd

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Notifier sends notifications to the service manager. Its zero value,
// and a Notifier made without NOTIFY_SOCKET, does nothing.
type Notifier struct {
	socket   string        // $NOTIFY_SOCKET; "" disables notification
	watchdog time.Duration // $WATCHDOG_USEC for this process; 0 when off
}

// New reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID through getenv
// (os.Getenv in the program) for the process pid (os.Getpid()). The
// watchdog counts only when WATCHDOG_PID is unset or names pid: a child
// started with the parent's environment must not ping for it.
func New(getenv func(string) string, pid int) (*Notifier, error) {
	n := &Notifier{socket: getenv("NOTIFY_SOCKET")}
	usec := getenv("WATCHDOG_USEC")
	if usec == "" || n.socket == "" {
		return n, nil
	}
	if p := getenv("WATCHDOG_PID"); p != "" {
		wpid, err := strconv.Atoi(p)
		if err != nil {
			return n, fmt.Errorf("systemd: WATCHDOG_PID=%q is not a process id; watchdog pings are off", p)
		}
		if wpid != pid {
			return n, nil
		}
	}
	us, err := strconv.ParseUint(usec, 10, 63)
	if err != nil || us == 0 {
		return n, fmt.Errorf("systemd: WATCHDOG_USEC=%q is not a positive number of microseconds; watchdog pings are off (check WatchdogSec= in the unit)", usec)
	}
	n.watchdog = time.Duration(us) * time.Microsecond
	return n, nil
}

// Enabled reports whether a service manager listens.
func (n *Notifier) Enabled() bool { return n != nil && n.socket != "" }

// WatchdogInterval is how often to call Watchdog: half the interval the
// service manager gives, as sd_watchdog_enabled(3) advises, so one late
// ping does not count as a hang. ok is false when no watchdog is asked for.
func (n *Notifier) WatchdogInterval() (d time.Duration, ok bool) {
	if n == nil || n.watchdog == 0 {
		return 0, false
	}
	return n.watchdog / 2, true
}

// Ready says start-up (or a reload) is complete: READY=1, with a status
// line when status is not empty.
func (n *Notifier) Ready(status string) error {
	return n.Notify(withStatus([]string{"READY=1"}, status)...)
}

// Reloading says a reload begins. systemd 253 and later, for
// Type=notify-reload, want the time on CLOCK_MONOTONIC alongside, so that
// a stale message is not mistaken for this reload; older ones ignore it.
// Send Ready when the reload is done, whether it succeeded or not.
func (n *Notifier) Reloading() error {
	fields := []string{"RELOADING=1"}
	if us, ok := monotonicUsec(); ok {
		fields = append(fields, "MONOTONIC_USEC="+strconv.FormatUint(us, 10))
	}
	return n.Notify(fields...)
}

// Stopping says shutdown begins, so that systemctl stop waits for the
// process instead of reporting a crash in between.
func (n *Notifier) Stopping() error { return n.Notify("STOPPING=1") }

// Watchdog is the keep-alive ping (WATCHDOG=1). Send it only from where
// the program proves it still works: a ping from a goroutine that runs
// whatever else is stuck hides a hang from the watchdog.
func (n *Notifier) Watchdog() error { return n.Notify("WATCHDOG=1") }

// Status sets the one-line status systemctl status shows.
func (n *Notifier) Status(status string) error { return n.Notify(withStatus(nil, status)...) }

// Notify sends the fields (KEY=VALUE each) in one datagram. It does
// nothing when no service manager listens, or when there is no field.
func (n *Notifier) Notify(fields ...string) error {
	if !n.Enabled() || len(fields) == 0 {
		return nil
	}
	for _, f := range fields {
		if !strings.Contains(f, "=") || strings.Contains(f, "\n") {
			return fmt.Errorf("systemd: notify field %q: want one KEY=VALUE line", f)
		}
	}
	// Go's net package turns a leading '@' into the NUL byte of an
	// abstract socket name, which is how systemd writes those names.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.socket, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("systemd: notify socket %s: %w (is NOTIFY_SOCKET stale? start the service with systemctl)", n.socket, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(strings.Join(fields, "\n") + "\n")); err != nil {
		return fmt.Errorf("systemd: notify %s: %w", strings.Join(fields, " "), err)
	}
	return nil
}

// withStatus adds STATUS= when status is not empty; systemd takes one
// line, so line breaks become spaces.
func withStatus(fields []string, status string) []string {
	if status == "" {
		return fields
	}
	return append(fields, "STATUS="+strings.ReplaceAll(status, "\n", " "))
}
