package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pimqtt/pimqtt/config"
	"github.com/pimqtt/pimqtt/mqtttest"
)

// The release build takes a while (three architectures), so the tests
// share one, made on first use and removed when the tests end.
var (
	sharedOnce sync.Once
	sharedDir  string
	sharedErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedDir != "" {
		os.RemoveAll(sharedDir)
	}
	os.Exit(code)
}

// released is the output directory of one `go run ./dist -version 1.0.0`.
func released(t *testing.T) string {
	t.Helper()
	sharedOnce.Do(func() {
		sharedDir, sharedErr = os.MkdirTemp("", "pimqtt-dist-test-")
		if sharedErr != nil {
			return
		}
		sharedErr = distRun(filepath.Join(sharedDir, "out"), "-version", "1.0.0")
	})
	if sharedErr != nil {
		t.Fatalf("go run ./dist: %v", sharedErr)
	}
	return filepath.Join(sharedDir, "out")
}

// unitFile is dist/pimqtt.service, or while that is not written yet a
// minimal stand-in in a temporary directory (never in the checkout).
func unitFile() (string, error) {
	root, err := moduleRoot(context.Background(), ".")
	if err != nil {
		return "", err
	}
	unit := filepath.Join(root, "dist", "pimqtt.service")
	if _, err := os.Stat(unit); err == nil {
		return unit, nil
	}
	dir, err := os.MkdirTemp("", "pimqtt-unit-")
	if err != nil {
		return "", err
	}
	unit = filepath.Join(dir, "pimqtt.service")
	return unit, os.WriteFile(unit, []byte("[Unit]\nDescription=pimqtt (stand-in)\n\n[Service]\nExecStart=/usr/bin/pimqtt\n\n[Install]\nWantedBy=multi-user.target\n"), 0o644)
}

// distRun runs the command in-process into out, with more flags.
func distRun(out string, flags ...string) error {
	unit, err := unitFile()
	if err != nil {
		return err
	}
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if code := run(ctx, append([]string{"-o", out, "-unit", unit}, flags...), &stdout, &stderr); code != 0 {
		return fmt.Errorf("exit %d: %s%s", code, stdout.String(), stderr.String())
	}
	return nil
}

// output runs a command and returns its combined output, failing the test
// with that output when it fails.
func output(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestDebVersion(t *testing.T) {
	commit := time.Date(2026, 12, 1, 8, 9, 30, 0, time.UTC)
	tests := []struct{ in, want string }{
		{"v1.2.3", "1.2.3"},
		{"1.0.0", "1.0.0"},
		{"v1.2.3-4-gabc1234", "1.2.3+4.gabc1234"},
		{"v1.2.3-4-gabc1234-dirty", "1.2.3+4.gabc1234+dirty"},
		{"v1.2.3-dirty", "1.2.3+dirty"},
		{"c18534a", "0.0.0+git20261201080930.c18534a"},
		{"c18534a-dirty", "0.0.0+git20261201080930.c18534a.dirty"},
	}
	for _, tt := range tests {
		if got := debVersion(tt.in, commit); got != tt.want {
			t.Errorf("debVersion(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	// What dpkg itself makes of the order: a later build sorts later.
	mqtttest.RequireTool(t, "dpkg", "dpkg")
	for _, pair := range [][2]string{
		{"1.2.3", "1.2.3+4.gabc1234"},
		{"1.2.3+4.gabc1234", "1.2.4"},
		{"0.0.0+git20261201080930.c18534a", "0.0.0+git20261201080931.0aaaaaa"},
		{"0.0.0+git20261201080930.c18534a", "0.1.0"},
	} {
		if err := exec.Command("dpkg", "--compare-versions", pair[0], "lt", pair[1]).Run(); err != nil {
			t.Errorf("dpkg --compare-versions %s lt %s: %v", pair[0], pair[1], err)
		}
	}
}

// TestReproducible: two builds of the same commit, in a clean clone of
// HEAD (the checkout may change under the test) into two directories,
// are byte-identical, binary and package.
func TestReproducible(t *testing.T) {
	clone := filepath.Join(t.TempDir(), "src")
	output(t, "git", "clone", "--quiet", "--shared", "--no-hardlinks", "../", clone)
	var dirs [2]string
	for i := range dirs {
		dirs[i] = filepath.Join(t.TempDir(), "out")
		if err := distRun(dirs[i], "-src", clone, "-version", "1.0.0", "-arch", "amd64"); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"pimqtt-linux-amd64", "pimqtt_1.0.0_amd64.deb"} {
		a, err := os.ReadFile(filepath.Join(dirs[0], name))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dirs[1], name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between two builds of the same commit (%d and %d bytes): something time- or path-dependent leaks in", name, len(a), len(b))
		}
	}
}

// TestBinaries: each binary is an ELF file for its machine, the 32-bit one
// for ARMv6, and --version names the version, the commit and the target.
func TestBinaries(t *testing.T) {
	out := released(t)
	readelf := mqtttest.RequireTool(t, "readelf", "binutils")
	tests := []struct {
		name, class, machine string
		goarm                bool
		goarch, qemu         string
	}{
		{"pimqtt-linux-amd64", "ELF64", "Advanced Micro Devices X86-64", false, "amd64", ""},
		{"pimqtt-linux-arm64", "ELF64", "AArch64", false, "arm64", "qemu-aarch64-static"},
		{"pimqtt-linux-armv6", "ELF32", "ARM", true, "arm", "qemu-arm-static"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bin := filepath.Join(out, tt.name)
			h := output(t, readelf, "-h", bin)
			for _, want := range []string{`Class:\s+` + tt.class, `Machine:\s+` + regexp.QuoteMeta(tt.machine) + `\n`, `Type:\s+EXEC`} {
				if !regexp.MustCompile(want).MatchString(h) {
					t.Errorf("readelf -h %s: no %q in\n%s", tt.name, want, h)
				}
			}
			m := output(t, "go", "version", "-m", bin)
			rev := regexp.MustCompile(`\bvcs\.revision=([0-9a-f]{40})\n`).FindStringSubmatch(m)
			if rev == nil {
				t.Fatalf("go version -m %s: no vcs.revision (built without -buildvcs?):\n%s", tt.name, m)
			}
			// The checkout may have moved on since the build: the commit
			// need only be one of its own.
			commit := rev[1]
			output(t, "git", "cat-file", "-e", commit+"^{commit}")
			for _, want := range []string{"GOARCH=" + tt.goarch, "CGO_ENABLED=0", "-trimpath=true"} {
				if !strings.Contains(m, want) {
					t.Errorf("go version -m %s: no %q in\n%s", tt.name, want, m)
				}
			}
			if got := strings.Contains(m, "GOARM=6"); got != tt.goarm {
				t.Errorf("go version -m %s: GOARM=6 present %v, want %v:\n%s", tt.name, got, tt.goarm, m)
			}
			if strings.Contains(h, "debug_info") || strings.Contains(output(t, readelf, "-S", bin), ".symtab") {
				t.Errorf("%s is not stripped (a .symtab or debug info is left)", tt.name)
			}
			cmd := []string{bin, "--version"}
			if tt.qemu != "" {
				cmd = append([]string{mqtttest.RequireTool(t, tt.qemu, "qemu-user-static")}, cmd...)
			}
			v := output(t, cmd[0], cmd[1:]...)
			want := "pimqtt 1.0.0 commit " + commit
			if !strings.HasPrefix(v, want) || !strings.Contains(v, "linux/"+tt.goarch) {
				t.Errorf("%s --version = %q, want %q ... linux/%s", strings.Join(cmd, " "), v, want, tt.goarch)
			}
		})
	}
}

// TestDebContents: each package has its architecture, the conffile, the
// four files with their modes, the maintainer scripts, and the packaged
// configuration is config.Example().
func TestDebContents(t *testing.T) {
	out := released(t)
	mqtttest.RequireTool(t, "dpkg-deb", "dpkg")
	for _, arch := range []string{"amd64", "arm64", "armhf"} {
		t.Run(arch, func(t *testing.T) {
			deb := filepath.Join(out, "pimqtt_1.0.0_"+arch+".deb")
			if got := strings.TrimSpace(output(t, "dpkg-deb", "-f", deb, "Architecture")); got != arch {
				t.Errorf("Architecture: %q, want %q", got, arch)
			}
			if got := strings.TrimSpace(output(t, "dpkg-deb", "-f", deb, "Version")); got != "1.0.0" {
				t.Errorf("Version: %q, want 1.0.0", got)
			}
			if got := output(t, "dpkg-deb", "-I", deb, "conffiles"); got != "/etc/pimqtt/pimqtt.toml\n" {
				t.Errorf("conffiles: %q, want only /etc/pimqtt/pimqtt.toml", got)
			}
			info := output(t, "dpkg-deb", "-I", deb)
			for _, script := range []string{"postinst", "prerm", "postrm"} {
				if !regexp.MustCompile(`\d+ bytes,\s+\d+ lines\s+\*\s+` + script + `\s+#!/bin/sh`).MatchString(info) {
					t.Errorf("dpkg-deb -I: no executable %s script in\n%s", script, info)
				}
			}
			list := output(t, "dpkg-deb", "-c", deb)
			for _, want := range []string{
				`-rwxr-xr-x root/root .* \./usr/bin/pimqtt\n`,
				`-rw-r--r-- root/root .* \./etc/pimqtt/pimqtt\.toml\n`,
				`-rw-r--r-- root/root .* \./lib/systemd/system/pimqtt\.service\n`,
				`-rw-r--r-- root/root .* \./lib/udev/rules\.d/60-pimqtt-gpio\.rules\n`,
			} {
				if !regexp.MustCompile(want).MatchString(list) {
					t.Errorf("dpkg-deb -c: no line matching %q in\n%s", want, list)
				}
			}
			dir := t.TempDir()
			output(t, "dpkg-deb", "-x", deb, dir)
			conf, err := os.ReadFile(filepath.Join(dir, "etc/pimqtt/pimqtt.toml"))
			if err != nil {
				t.Fatal(err)
			}
			if string(conf) != config.Example() {
				t.Errorf("the packaged pimqtt.toml is not config.Example()")
			}
			rule, err := os.ReadFile(filepath.Join(dir, "lib/udev/rules.d/60-pimqtt-gpio.rules"))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(rule), `SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"`) {
				t.Errorf("udev rule:\n%s", rule)
			}
		})
	}
}

// TestMaintainerScripts: the scripts are POSIX sh that dash accepts.
func TestMaintainerScripts(t *testing.T) {
	dash := mqtttest.RequireTool(t, "dash", "dash")
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		output(t, dash, "-n", filepath.Join("debian", s))
	}
}
