// Command dist builds every release artifact of pimqtt from the checkout:
// stripped, reproducible binaries for the Pi (linux/arm64, linux/arm
// GOARM=6) and linux/amd64, and a Debian package for each (arm64, armhf,
// amd64).
//
//	go run ./dist [-o DIR] [-version VERSION] [-arch amd64,arm64,armhf] [-unit FILE] [-src DIR]
//
// It prints each file it wrote with its size. Two runs on the same commit
// write byte-identical files: every time stamp comes from the commit
// (SOURCE_DATE_EPOCH overrides it), nothing from the build machine.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole command; it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	log := slog.New(slog.NewTextHandler(stderr, nil))
	fs := flag.NewFlagSet("dist", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "output directory (default dist/out in the checkout)")
	version := fs.String("version", "", "version to stamp in (default: git describe --tags --always --dirty)")
	arches := fs.String("arch", "amd64,arm64,armhf", "Debian architectures to build, comma-separated")
	unit := fs.String("unit", "", "systemd unit to package (default dist/pimqtt.service in the checkout)")
	srcDir := fs.String("src", ".", "a directory in the checkout to build (e.g. a clean clone)")
	noDeb := fs.Bool("no-deb", false, "build the binaries only")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "dist: unexpected argument %q (flags only; see -h)\n", fs.Arg(0))
		return 2
	}

	root, err := moduleRoot(ctx, *srcDir)
	if err != nil {
		log.Error("dist: finding the checkout", "err", err)
		return 1
	}
	targets, err := targetsFor(*arches)
	if err != nil {
		log.Error("dist", "err", err)
		return 2
	}
	src, err := describeSource(ctx, root, *version)
	if err != nil {
		log.Error("dist: reading the version from git", "err", err)
		return 1
	}
	if *out == "" {
		*out = filepath.Join(root, "dist", "out")
	}
	if *unit == "" {
		*unit = filepath.Join(root, "dist", "pimqtt.service")
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Error("dist: making the output directory", "err", err)
		return 1
	}
	log.Info("building", "version", src.Version, "deb_version", src.DebVersion, "mtime", src.MTime.UTC(), "out", *out)

	for _, t := range targets {
		bin := filepath.Join(*out, t.BinaryName())
		if err := buildBinary(ctx, root, t, src.Version, bin); err != nil {
			log.Error("dist: building the binary", "target", t, "err", err)
			return 1
		}
		if err := report(stdout, bin); err != nil {
			log.Error("dist", "err", err)
			return 1
		}
		if *noDeb {
			continue
		}
		deb, err := buildDeb(debSpec{
			Root: root, Target: t, Src: src, Binary: bin, Unit: *unit, OutDir: *out,
		})
		if err != nil {
			log.Error("dist: building the Debian package", "target", t, "err", err)
			return 1
		}
		if err := report(stdout, deb); err != nil {
			log.Error("dist", "err", err)
			return 1
		}
	}
	return 0
}

// report prints one artifact: its path and size.
func report(w io.Writer, path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("reading the size of %s: %w", path, err)
	}
	_, err = fmt.Fprintf(w, "%s\t%d bytes (%.1f MiB)\n", path, fi.Size(), float64(fi.Size())/(1<<20))
	return err
}

// targetsFor picks the targets named by a comma-separated list of Debian
// architectures.
func targetsFor(list string) ([]target, error) {
	var out []target
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		t, ok := targetByDebArch(name)
		if !ok {
			return nil, fmt.Errorf("unknown architecture %q in -arch: use amd64, arm64 or armhf", name)
		}
		out = append(out, t)
	}
	return out, nil
}
