package broker

import (
	"fmt"
	"os"
	"testing"

	"github.com/pimqtt/pimqtt/auth"
)

// TestLoginCacheOverTCP: over real connections, a client logging in again
// with the password that worked is not hashed again; a wrong password
// always is and never passes; after Reload (what SIGHUP does) a changed
// password and a removed user are refused, whatever passed before.
func TestLoginCacheOverTCP(t *testing.T) {
	passwd := writeBenchPasswords(t) // phone, laptop, plug: the password is the name
	b, _ := startTestBroker(t, Options{
		Listeners:    []ListenerConfig{{Kind: TCP, Addr: "127.0.0.1:0"}},
		PasswordFile: passwd,
	})
	addr := listenerAddr(t, b, TCP)
	n := 0
	login := func(user, password, want string) {
		t.Helper()
		n++
		c := dialRaw(t, addr, 4)
		defer c.close()
		if err := c.write(connectWithPassword(fmt.Sprint("cache-", n), user, password)); err != nil {
			t.Fatal(err)
		}
		c.expect(want)
	}
	hashes := func() int64 { return b.passwords.Load().Hashes() }

	steps := []struct {
		user, password, want string
		hashes               int64 // added
	}{
		{"phone", "phone", "CONNACK 0x00", 1},
		{"phone", "phone", "CONNACK 0x00", 0},
		{"phone", "phone", "CONNACK 0x00", 0},
		{"phone", "Phone", "CONNACK 0x04", 1},
		{"laptop", "phone", "CONNACK 0x04", 1},
		{"laptop", "laptop", "CONNACK 0x00", 1},
		{"laptop", "laptop", "CONNACK 0x00", 0},
	}
	for i, s := range steps {
		before := hashes()
		login(s.user, s.password, s.want)
		if got := hashes() - before; got != s.hashes {
			t.Fatalf("step %d (%s/%s): %d hashes, want %d", i, s.user, s.password, got, s.hashes)
		}
	}

	// phone's password changes, laptop is removed, plug stays.
	h, err := auth.HashPassword("new phone")
	if err != nil {
		t.Fatal(err)
	}
	plug, err := auth.HashPassword("plug")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(passwd, []byte("phone:"+h+"\nplug:"+plug+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.Reload(); err != nil {
		t.Fatal(err)
	}
	login("phone", "phone", "CONNACK 0x04")
	login("laptop", "laptop", "CONNACK 0x04")
	login("phone", "new phone", "CONNACK 0x00")
	before := hashes()
	login("phone", "new phone", "CONNACK 0x00")
	if got := hashes() - before; got != 0 {
		t.Fatalf("the new password was hashed again after it passed: %d hashes", got)
	}
}
