package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pimqtt/pimqtt/config"
	"github.com/pimqtt/pimqtt/mqtttest"
)

// startBroker runs argv (pimqtt, under runuser or qemu), MQTT on a
// loopback port of the kernel's choice, and returns that address and a
// stop function that sends SIGTERM and returns the exit error. The
// process ends with the test at the latest.
func startBroker(t *testing.T, argv ...string) (addr string, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, argv[0], append(argv[1:], "--listen", "127.0.0.1:0",
		"--ws-listen", "", "--http-listen", "", "--https-listen", "", "--gpio", "sim")...)
	// runuser forks: signal the whole group, so pimqtt itself stops (and
	// purge can delete its user).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		close(lines)
	}()
	var once sync.Once
	var waitErr error
	stop = func() error {
		once.Do(func() {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			// pimqtt's shutdown is bounded; past that, SIGKILL.
			kill := time.AfterFunc(30*time.Second, cancel)
			defer kill.Stop()
			<-done
			waitErr = cmd.Wait()
		})
		return waitErr
	}
	t.Cleanup(func() { stop(); cancel() })
	re := regexp.MustCompile(`\bmsg=listening .*\bkind=tcp .*\baddr=(\S+)`)
	deadline := time.After(60 * time.Second)
	var seen []string
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("%s exited before listening:\n%s", strings.Join(argv, " "), strings.Join(seen, "\n"))
			}
			seen = append(seen, l)
			if m := re.FindStringSubmatch(l); m != nil {
				go func() { // keep draining, so pimqtt never blocks on its log
					for range lines {
					}
				}()
				return m[1], stop
			}
		case <-deadline:
			t.Fatalf("no listening line from %s in 60 s:\n%s", strings.Join(argv, " "), strings.Join(seen, "\n"))
		}
	}
}

// mosquittoToggle switches the LED on as user phone and waits for the
// device's state to say so: the broker authenticated, the device obeyed.
func mosquittoToggle(t *testing.T, addr string, login ...string) {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	pub := mqtttest.RequireTool(t, "mosquitto_pub", "mosquitto-clients")
	sub := exec.Command(mqtttest.RequireTool(t, "mosquitto_sub", "mosquitto-clients"),
		append([]string{"-h", host, "-p", port, "-t", "raspberry/led/state", "-W", "20"}, login...)...)
	stdout, err := sub.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sub.Process.Kill(); sub.Wait() }()
	states := make(chan string)
	go func() {
		defer close(states)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			states <- strings.TrimSpace(sc.Text())
		}
	}()
	// The retained state first: the subscription is in place.
	if got, ok := <-states; !ok || got != "0" {
		t.Fatalf("retained raspberry/led/state: %q (open %v), want 0", got, ok)
	}
	output(t, pub, append([]string{"-h", host, "-p", port, "-q", "1", "-t", "raspberry/led", "-m", "1"}, login...)...)
	if got, ok := <-states; !ok || got != "1" {
		t.Fatalf("raspberry/led/state after the command: %q (open %v), want 1 (mosquitto_sub -W 20 ends the wait)", got, ok)
	}
}

type fileWant struct {
	path, mode, owner string
}

func checkFiles(t *testing.T, want []fileWant) {
	t.Helper()
	for _, w := range want {
		got := strings.TrimSpace(output(t, "stat", "-c", "%A %U:%G", w.path))
		if got != w.mode+" "+w.owner {
			t.Errorf("%s: %s, want %s %s", w.path, got, w.mode, w.owner)
		}
	}
}

func exists(path string) bool { _, err := os.Lstat(path); return err == nil }

func userExists(name string) bool { return exec.Command("getent", "passwd", name).Run() == nil }

// TestInstall installs the amd64 package on this machine (root only):
// the files land with their owners and modes, the installed binary runs
// as the service user with the packaged configuration and answers
// mosquitto_pub with a user added by pimqtt passwd, an upgrade keeps an
// edited conffile and the password file, a remove keeps the user's
// files, and purge removes everything the package added.
func TestInstall(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatalf("TestInstall installs the package on this machine and needs root: sudo env PATH=$PATH go test -race -count=1 -run TestInstall ./dist/")
	}
	for _, tool := range [][2]string{{"apt-get", "apt"}, {"dpkg", "dpkg"}, {"runuser", "util-linux"}, {"stat", "coreutils"}} {
		mqtttest.RequireTool(t, tool[0], tool[1])
	}
	if exec.Command("dpkg-query", "-W", "-f", "${Status}", "pimqtt").Run() == nil {
		t.Fatalf("a pimqtt package is already installed (or its config files are left): the test would replace it; apt-get purge -y pimqtt first")
	}
	if userExists("pimqtt") {
		t.Fatalf("user pimqtt exists but no package: the test checks that the package makes and removes it; userdel pimqtt first")
	}
	out := released(t)
	t.Cleanup(func() {
		exec.Command("apt-get", "purge", "-y", "pimqtt").Run()
	})
	output(t, "apt-get", "install", "-y", filepath.Join(out, "pimqtt_1.0.0_amd64.deb"))

	checkFiles(t, []fileWant{
		{"/usr/bin/pimqtt", "-rwxr-xr-x", "root:root"},
		{"/etc/pimqtt/pimqtt.toml", "-rw-r--r--", "root:root"},
		{"/etc/pimqtt/passwd", "-rw-r-----", "pimqtt:pimqtt"},
		{"/var/lib/pimqtt", "drwxr-x---", "pimqtt:pimqtt"},
		{"/lib/systemd/system/pimqtt.service", "-rw-r--r--", "root:root"},
		{"/lib/udev/rules.d/60-pimqtt-gpio.rules", "-rw-r--r--", "root:root"},
	})
	pw := strings.Split(strings.TrimSpace(output(t, "getent", "passwd", "pimqtt")), ":")
	if len(pw) != 7 || pw[5] != "/var/lib/pimqtt" || pw[6] != "/usr/sbin/nologin" || exists("/home/pimqtt") {
		t.Errorf("user pimqtt: %v, want home /var/lib/pimqtt (not created in /home), shell /usr/sbin/nologin", pw)
	}
	if groups := strings.Fields(output(t, "id", "-nG", "pimqtt")); !slices.Contains(groups, "gpio") || !slices.Contains(groups, "pimqtt") {
		t.Errorf("user pimqtt is in groups %v, want pimqtt and gpio", groups)
	}

	output(t, "/usr/bin/pimqtt", "passwd", "-b", "/etc/pimqtt/passwd", "phone", "s3cret-phone")
	// pimqtt passwd keeps the owner and writes 0600: still the service's.
	checkFiles(t, []fileWant{{"/etc/pimqtt/passwd", "-rw-------", "pimqtt:pimqtt"}})
	if v := output(t, "/usr/bin/pimqtt", "--version"); !strings.HasPrefix(v, "pimqtt 1.0.0 ") {
		t.Errorf("installed pimqtt --version = %q", v)
	}
	t.Run("runs as pimqtt", func(t *testing.T) {
		addr, _ := startBroker(t, "runuser", "-u", "pimqtt", "--", "/usr/bin/pimqtt", "--config", "/etc/pimqtt/pimqtt.toml")
		mosquittoToggle(t, addr, "-u", "phone", "-P", "s3cret-phone")
		host, port, _ := strings.Cut(addr, ":")
		bad := exec.Command("mosquitto_pub", "-h", host, "-p", port, "-u", "phone", "-P", "wrong", "-t", "raspberry/led", "-m", "0")
		if o, err := bad.CombinedOutput(); err == nil {
			t.Errorf("mosquitto_pub with a wrong password succeeded: %s", o)
		}
		if !exists("/var/lib/pimqtt/pimqtt.db") {
			t.Errorf("no /var/lib/pimqtt/pimqtt.db: the service user could not write its state directory")
		}
	})

	// Upgrade: same package, newer version, the user's edits in place.
	edited := config.Example() + "\n# edited by TestInstall\n"
	if err := os.WriteFile("/etc/pimqtt/pimqtt.toml", []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	passwd, err := os.ReadFile("/etc/pimqtt/passwd")
	if err != nil {
		t.Fatal(err)
	}
	newer := filepath.Join(t.TempDir(), "out")
	if err := distRun(newer, "-version", "1.0.1", "-arch", "amd64"); err != nil {
		t.Fatal(err)
	}
	output(t, "apt-get", "install", "-y", filepath.Join(newer, "pimqtt_1.0.1_amd64.deb"))
	if v := output(t, "/usr/bin/pimqtt", "--version"); !strings.HasPrefix(v, "pimqtt 1.0.1 ") {
		t.Errorf("after the upgrade pimqtt --version = %q, want 1.0.1", v)
	}
	if got, _ := os.ReadFile("/etc/pimqtt/pimqtt.toml"); string(got) != edited {
		t.Errorf("the upgrade replaced the edited /etc/pimqtt/pimqtt.toml")
	}
	if got, _ := os.ReadFile("/etc/pimqtt/passwd"); !bytes.Equal(got, passwd) {
		t.Errorf("the upgrade changed /etc/pimqtt/passwd: %q, was %q", got, passwd)
	}
	checkFiles(t, []fileWant{
		{"/etc/pimqtt/passwd", "-rw-------", "pimqtt:pimqtt"},
		{"/var/lib/pimqtt", "drwxr-x---", "pimqtt:pimqtt"},
	})

	// Remove keeps what the user made; purge takes everything.
	output(t, "apt-get", "remove", "-y", "pimqtt")
	for _, p := range []string{"/usr/bin/pimqtt", "/lib/systemd/system/pimqtt.service", "/lib/udev/rules.d/60-pimqtt-gpio.rules"} {
		if exists(p) {
			t.Errorf("apt-get remove left %s", p)
		}
	}
	for _, p := range []string{"/etc/pimqtt/passwd", "/etc/pimqtt/pimqtt.toml", "/var/lib/pimqtt/pimqtt.db"} {
		if !exists(p) {
			t.Errorf("apt-get remove deleted %s (only purge may)", p)
		}
	}
	if !userExists("pimqtt") {
		t.Errorf("apt-get remove deleted user pimqtt (only purge may)")
	}
	output(t, "apt-get", "purge", "-y", "pimqtt")
	for _, p := range []string{"/etc/pimqtt", "/var/lib/pimqtt"} {
		if exists(p) {
			t.Errorf("apt-get purge left %s", p)
		}
	}
	if userExists("pimqtt") {
		t.Errorf("apt-get purge left user pimqtt")
	}
	if exec.Command("getent", "group", "pimqtt").Run() == nil {
		t.Errorf("apt-get purge left group pimqtt")
	}
}
