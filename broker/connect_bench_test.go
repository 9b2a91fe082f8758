package broker

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pimqtt/pimqtt/auth"
)

// connectBenchUsers are the users of the benchmarks' password file: a
// password each, hashed the way mosquitto_passwd 2.0 does ($7$101).
var connectBenchUsers = []string{"phone", "laptop", "plug"}

// writeBenchPasswords writes a password file whose users log in with
// their own name as the password.
func writeBenchPasswords(tb testing.TB) string {
	tb.Helper()
	var text []byte
	for _, u := range connectBenchUsers {
		h, err := auth.HashPassword(u)
		if err != nil {
			tb.Fatal(err)
		}
		text = fmt.Appendf(text, "%s:%s\n", u, h)
	}
	path := filepath.Join(tb.TempDir(), "passwd")
	if err := os.WriteFile(path, text, 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// connectWithPassword is an MQTT 3.1.1 CONNECT with a clean session, a
// user name and a password.
func connectWithPassword(clientID, user, password string) []byte {
	return pk("10 r? s'MQTT' 04 C2 H60 s'" + clientID + "' s'" + user + "' s'" + password + "'")
}

// BenchmarkConnect measures what one client costs that connects with a
// password, is accepted and disconnects, over real TCP on loopback: the
// path a reconnect storm after a Wi-Fi blip takes thousands of times.
// "first" logs in with a password the broker has not seen yet (every
// connect pays PBKDF2); "again" with one that logged in before. Run with
// -cpuprofile to see where a connect's time goes; the broker logs at its
// default level (info: a line per connect and disconnect).
func BenchmarkConnect(b *testing.B) {
	for _, c := range []struct {
		name  string
		fresh bool // a new password file for each connect's user: no cache can hold it
	}{{"first", true}, {"again", false}} {
		b.Run(c.name, func(b *testing.B) {
			passwd := writeBenchPasswords(b)
			br, err := New(Options{
				Listeners:    []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}},
				PasswordFile: passwd,
				Logger:       slog.New(slog.NewTextHandler(discardWriter{}, nil)),
			})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = br.Close() })
			if err := br.Start(); err != nil {
				b.Fatal(err)
			}
			br.OpenNetwork()
			addr := listenerAddr(b, br, TCP)
			disconnect := pk("E0 00")
			i := 0
			var cpu time.Duration
			for b.Loop() {
				i++
				if c.fresh {
					b.StopTimer()
					if err := br.Reload(); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
				cpu0 := processCPU()
				user := connectBenchUsers[i%len(connectBenchUsers)]
				conn, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				cl := newRawClient(b, conn, 4)
				if err := cl.write(connectWithPassword(fmt.Sprintf("bench-%d", i), user, user)); err != nil {
					b.Fatal(err)
				}
				cl.expect("CONNACK 0x00")
				_ = cl.write(disconnect)
				// The broker closes first once it has read DISCONNECT;
				// waiting for that keeps the connects sequential, as the
				// clean-up is part of each one's cost.
				cl.expectClosed()
				cl.close()
				cpu += processCPU() - cpu0
			}
			// The process's CPU, broker and client together: on a
			// machine shared with other work it varies less than the
			// time per connect.
			b.ReportMetric(float64(cpu.Microseconds())/float64(i), "cpu-µs/op")
		})
	}
}

// discardWriter is io.Discard as a type of its own, so a text handler
// still formats every record (a discarding handler would skip the work a
// real log does).
type discardWriter struct{}

func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }
