package auth

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pimqtt/pimqtt/mqtttest"
)

// mosquittoAcceptsACL starts the real mosquitto with text as its acl_file
// and a listener on a Unix socket (no port needed) and reports whether it
// got as far as running, with its log.
func mosquittoAcceptsACL(t *testing.T, bin, text string) (bool, string) {
	t.Helper()
	// A short directory: a Unix socket's path is limited to 107 bytes.
	dir, err := os.MkdirTemp("", "acl")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	acl := filepath.Join(dir, "acl")
	conf := filepath.Join(dir, "conf")
	if err := os.WriteFile(acl, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("listener 0 %s\nacl_file %s\nallow_anonymous true\nuser root\npersistence false\nlog_dest stderr\n",
		filepath.Join(dir, "sock"), acl)
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), mqtttest.WaitTimeout)
	defer cancel()
	out := &mqtttest.SyncBuffer{}
	cmd := exec.CommandContext(ctx, bin, "-c", conf)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-exited:
			return false, out.String()
		case <-ctx.Done():
			<-exited
			t.Fatalf("mosquitto neither ran nor exited:\n%s", out)
		case <-tick.C: // its log is the only readiness signal another process gives
			if strings.Contains(out.String(), " running") {
				_ = cmd.Process.Kill()
				<-exited
				return true, out.String()
			}
		}
	}
}

// TestACLParseMatchesMosquitto gives the same files to the real
// mosquitto and to ParseACL: each accepts exactly what the other does.
func TestACLParseMatchesMosquitto(t *testing.T) {
	bin := mqtttest.RequireTool(t, "mosquitto", "mosquitto")
	files := []string{
		"",
		"# c\n\n   \n\t\ntopic read a\n",
		"topic read a\r\nuser u\r\ntopic write b\r\n",
		"topic read a",
		"   topic   read   a\n",
		"topic read my topic \n",
		"user  my user \ntopic a\n",
		"topic read\n",
		"topic deny\n",
		"topic read a\t\n",
		"topic read " + strings.Repeat("a/", 200) + "a\n",
		"topic read " + strings.Repeat("a/", 201) + "a\n",
		"topic read " + strings.Repeat("a", 65535) + "\n",
		"topic read " + strings.Repeat("a", 65536) + "\n",
		"topic read a\ntopics read b\n",
		"Topic a\n",
		"topic\tread a\n",
		"topic a\n  # note\n",
		"\n\ntopic\n",
		"pattern   \n",
		"user\n",
		"user    \n",
		"topic rw a/b\n",
		"topic my topic\n",
		"topic read a/b+/c\n",
		"pattern read #/a\n",
		"topic a#\n",
		"topic read +\n",
		"topic read a/+/#\n",
		"pattern read d/%c/%u/#\npattern write x%cy\n",
		aclRules,
	}
	for i, text := range files {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			_, perr := ParseACL(strings.NewReader(text), "acl", nil)
			ok, log := mosquittoAcceptsACL(t, bin, text)
			if ok != (perr == nil) {
				t.Fatalf("file %q:\nmosquitto accepts: %v\nParseACL: %v\nmosquitto log:\n%s", shorten(text), ok, perr, log)
			}
		})
	}
}

func shorten(s string) string {
	if len(s) > 200 {
		return s[:100] + fmt.Sprintf("...(%d bytes)...", len(s)-150) + s[len(s)-50:]
	}
	return s
}
