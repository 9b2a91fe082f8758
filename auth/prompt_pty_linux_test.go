package auth

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/pimqtt/pimqtt/mqtttest"
)

// openPTY returns the two ends of a new pseudo-terminal; the slave end is
// what a user's shell would give pimqtt as stdin.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	// Not m.Fd(): that would switch the master to blocking mode and make
	// its read deadline below useless.
	rc, err := m.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var unlock int32
	var n uint32
	var ioctlErr error
	if err := rc.Control(func(fd uintptr) {
		if ioctlErr = ioctl(fd, syscall.TIOCSPTLCK, unsafe.Pointer(&unlock)); ioctlErr == nil {
			ioctlErr = ioctl(fd, syscall.TIOCGPTN, unsafe.Pointer(&n))
		}
	}); err != nil || ioctlErr != nil {
		t.Fatalf("unlock pty / get its number: %v %v", err, ioctlErr)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty slave: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

func ioctl(fd uintptr, req uint, arg unsafe.Pointer) error {
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, uintptr(req), uintptr(arg)); errno != 0 {
		return errno
	}
	return nil
}

func echoOn(t *testing.T, f *os.File) bool {
	t.Helper()
	var tio syscall.Termios
	if err := ioctl(f.Fd(), syscall.TCGETS, unsafe.Pointer(&tio)); err != nil {
		t.Fatalf("TCGETS: %v", err)
	}
	return tio.Lflag&syscall.ECHO != 0
}

// TestReadPasswordTwiceTerminal types into a real pseudo-terminal: nothing
// typed may be echoed, Ctrl-C must cancel, and the terminal must get its
// echo back whatever happens.
func TestReadPasswordTwiceTerminal(t *testing.T) {
	// Each prompt ends its line, answered or cancelled (raw mode: "\r\n").
	const (
		one  = "Password: \r\n"
		both = "Password: \r\nReenter password: \r\n"
	)
	tests := []struct {
		name    string
		typed   string
		want    string
		wantErr string
		out     string // the prompts written
	}{
		{name: "match", typed: "s3cret\rs3cret\r", want: "s3cret", out: both},
		{name: "backspace edits", typed: "s3crex\x7ft\rs3cret\r", want: "s3cret", out: both},
		{name: "mismatch", typed: "one\rtwo\r", wantErr: "passwords do not match", out: both},
		{name: "ctrl-c cancels", typed: "abc\x03", wantErr: "cancelled", out: one},
		{name: "ctrl-d cancels", typed: "\x04", wantErr: "cancelled", out: one},
		{name: "empty", typed: "\r", wantErr: "empty", out: one},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			master, slave := openPTY(t)
			if !echoOn(t, slave) {
				t.Fatal("a new pty should echo")
			}
			type result struct {
				pw  string
				err error
			}
			done := make(chan result, 1)
			out := &mqtttest.SyncBuffer{}
			go func() {
				pw, err := ReadPasswordTwice(slave, out)
				done <- result{pw, err}
			}()

			// Typing before echo is off would echo at once: wait for it.
			deadline := time.Now().Add(5 * time.Second)
			for echoOn(t, slave) {
				if time.Now().After(deadline) {
					t.Fatal("echo was never switched off")
				}
				time.Sleep(time.Millisecond)
			}
			if _, err := io.WriteString(master, tt.typed); err != nil {
				t.Fatal(err)
			}
			var r result
			select {
			case r = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("ReadPasswordTwice did not return")
			}
			if tt.wantErr != "" {
				if r.err == nil || !strings.Contains(r.err.Error(), tt.wantErr) {
					t.Errorf("got %q, %v; want error containing %q", r.pw, r.err, tt.wantErr)
				}
				if tt.wantErr == "passwords do not match" && !errors.Is(r.err, ErrPasswordMismatch) {
					t.Errorf("error %v is not ErrPasswordMismatch", r.err)
				}
			} else if r.err != nil || r.pw != tt.want {
				t.Errorf("got %q, %v; want %q", r.pw, r.err, tt.want)
			}
			if !echoOn(t, slave) {
				t.Error("terminal echo not restored")
			}
			if out.String() != tt.out {
				t.Errorf("prompt output = %q, want %q", out.String(), tt.out)
			}
			// Anything the terminal echoed would now be readable on the
			// master side; the deadline bounds the wait for its absence.
			if err := master.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 256)
			if n, _ := master.Read(buf); n > 0 {
				t.Errorf("terminal echoed %q", buf[:n])
			}
		})
	}
}
