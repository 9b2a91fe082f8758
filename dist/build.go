package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// target is one release platform: Go's name for it and Debian's.
type target struct {
	GOARCH string
	// Env pins the instruction set level, so a GOAMD64 or GOARM in the
	// builder's environment cannot change the artifact.
	Env     []string
	DebArch string
	// Suffix names the binary: pimqtt-linux-SUFFIX.
	Suffix string
}

// releaseTargets are the release platforms. GOARM=6 runs on every 32-bit Pi
// (the Zero and the 1 are ARMv6 with a VFPv2 FPU), which is what Debian's
// armhf name promises on Raspberry Pi OS.
func releaseTargets() []target {
	return []target{
		{GOARCH: "amd64", Env: []string{"GOAMD64=v1"}, DebArch: "amd64", Suffix: "amd64"},
		{GOARCH: "arm64", Env: []string{"GOARM64=v8.0"}, DebArch: "arm64", Suffix: "arm64"},
		{GOARCH: "arm", Env: []string{"GOARM=6"}, DebArch: "armhf", Suffix: "armv6"},
	}
}

func targetByDebArch(name string) (target, bool) {
	for _, t := range releaseTargets() {
		if t.DebArch == name {
			return t, true
		}
	}
	return target{}, false
}

// BinaryName is the release binary's file name.
func (t target) BinaryName() string { return "pimqtt-linux-" + t.Suffix }

func (t target) String() string { return "linux/" + t.GOARCH + " (" + t.DebArch + ")" }

// source says what is being built: the version strings and the time
// stamp every file in a package gets.
type source struct {
	// Version is stamped into the binary (pimqtt --version).
	Version string
	// DebVersion is Version in Debian's syntax, ordered the same way.
	DebVersion string
	// MTime is the commit's time, or SOURCE_DATE_EPOCH when set.
	MTime time.Time
}

// moduleRoot is the directory of the go.mod of the module dir is in.
func moduleRoot(ctx context.Context, dir string) (string, error) {
	out, err := command(ctx, dir, nil, "go", "env", "GOMOD")
	if err != nil {
		return "", err
	}
	gomod := strings.TrimSpace(out)
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("%s is not inside the pimqtt module: run go run ./dist from the checkout, or give -src", dir)
	}
	return filepath.Dir(gomod), nil
}

// describeSource reads the version (unless given) and the commit time.
func describeSource(ctx context.Context, root, version string) (source, error) {
	if version == "" {
		out, err := command(ctx, root, nil, "git", "describe", "--tags", "--always", "--dirty")
		if err != nil {
			return source{}, fmt.Errorf("%w (or give -version)", err)
		}
		version = strings.TrimSpace(out)
	}
	mtime, err := sourceTime(ctx, root)
	if err != nil {
		return source{}, err
	}
	return source{Version: version, DebVersion: debVersion(version, mtime), MTime: mtime}, nil
}

// sourceTime is SOURCE_DATE_EPOCH (the reproducible-builds convention)
// or else the time of the commit checked out.
func sourceTime(ctx context.Context, root string) (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	what := "SOURCE_DATE_EPOCH"
	if s == "" {
		out, err := command(ctx, root, nil, "git", "log", "-1", "--format=%ct", "HEAD")
		if err != nil {
			return time.Time{}, fmt.Errorf("reading the commit time: %w (or set SOURCE_DATE_EPOCH)", err)
		}
		s, what = strings.TrimSpace(out), "git log's commit time"
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %q is not a Unix time in seconds: %w", what, s, err)
	}
	return time.Unix(sec, 0).UTC(), nil
}

var describeRE = regexp.MustCompile(`^v?([0-9][0-9A-Za-z.]*)(?:-([0-9]+)-g([0-9a-f]+))?(-dirty)?$`)

// debVersion turns a git describe string into a Debian version that sorts
// the same way: v1.2.3 → 1.2.3, v1.2.3-4-gabc → 1.2.3+4.gabc (after 1.2.3),
// and a checkout without a tag, abc → 0.0.0+gitYYYYMMDDhhmmss.abc (later
// commits sort later). A dash would start a Debian revision, so none stays.
func debVersion(v string, commit time.Time) string {
	if m := describeRE.FindStringSubmatch(v); m != nil {
		out := m[1]
		if m[2] != "" {
			out += "+" + m[2] + ".g" + m[3]
		}
		if m[4] != "" {
			out += "+dirty"
		}
		return out
	}
	clean := strings.Map(func(r rune) rune {
		switch {
		case r >= '0' && r <= '9', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r == '.', r == '+', r == '~':
			return r
		}
		return '.'
	}, v)
	return "0.0.0+git" + commit.UTC().Format("20060102150405") + "." + clean
}

// buildBinary builds one release binary: static (CGO_ENABLED=0), no file
// system paths (-trimpath), stripped (-s -w), the version stamped in and
// the commit recorded (-buildvcs=true wins over a GOFLAGS=-buildvcs=false
// in the builder's go env), with an empty build ID so the bytes depend
// on the source alone.
func buildBinary(ctx context.Context, root string, t target, version, out string) error {
	env := append([]string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=" + t.GOARCH}, t.Env...)
	ldflags := "-s -w -buildid= -X main.version=" + version
	_, err := command(ctx, root, env, "go", "build", "-trimpath", "-buildvcs=true",
		"-ldflags", ldflags, "-o", out, ".")
	return err
}

// command runs a program and returns its standard output; an error
// carries the command line and its standard error.
func command(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err,
			strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}
