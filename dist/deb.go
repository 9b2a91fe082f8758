package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"

	"github.com/pimqtt/pimqtt/config"
)

// debSpec is what one Debian package is made of.
type debSpec struct {
	Root   string // the checkout: dist/debian holds the scripts and the udev rule
	Target target
	Src    source
	Binary string // the release binary for Target
	Unit   string // the systemd unit file
	OutDir string
}

// buildDeb writes pimqtt_VERSION_ARCH.deb into OutDir and returns its path.
// nfpm writes the ar/tar/control layout; every time stamp in it is
// Src.MTime, every owner root, every mode explicit, so the file depends on
// its inputs alone.
func buildDeb(s debSpec) (string, error) {
	if _, err := os.Stat(s.Unit); err != nil {
		return "", fmt.Errorf("the systemd unit to package: %w (give -unit FILE)", err)
	}
	stage, err := os.MkdirTemp("", "pimqtt-deb-")
	if err != nil {
		return "", fmt.Errorf("making a staging directory: %w", err)
	}
	defer os.RemoveAll(stage)
	// Generated from the code that reads it, so the packaged example
	// always matches the binary beside it.
	conf := filepath.Join(stage, "pimqtt.toml")
	if err := os.WriteFile(conf, []byte(config.Example()), 0o644); err != nil {
		return "", fmt.Errorf("staging the example configuration: %w", err)
	}

	debian := filepath.Join(s.Root, "dist", "debian")
	file := func(src, dst string, mode os.FileMode, typ string) *files.Content {
		return &files.Content{
			Source: src, Destination: dst, Type: typ,
			FileInfo: &files.ContentFileInfo{Owner: "root", Group: "root", Mode: mode, MTime: s.Src.MTime},
		}
	}
	info := nfpm.WithDefaults(&nfpm.Info{
		Name:          "pimqtt",
		Arch:          s.Target.DebArch,
		Platform:      "linux",
		Version:       s.Src.DebVersion,
		VersionSchema: "none", // DebVersion is already Debian's syntax
		Section:       "net",
		Priority:      "optional",
		Maintainer:    "pimqtt developers <pimqtt@users.noreply.github.com>",
		Homepage:      "https://github.com/pimqtt/pimqtt",
		Description: "MQTT broker and Raspberry Pi GPIO device in one program\n" +
			"pimqtt is an MQTT broker (TCP and WebSocket, mosquitto password files)\n" +
			"with a built-in device that switches GPIO outputs and reports inputs,\n" +
			"and a control page for phones. It replaces mosquitto plus a script.",
		MTime: s.Src.MTime,
		Overridables: nfpm.Overridables{
			// passwd: useradd, groupadd, usermod in the maintainer scripts.
			Depends: []string{"passwd"},
			Contents: files.Contents{
				file(s.Binary, "/usr/bin/pimqtt", 0o755, files.TypeFile),
				// A conffile: dpkg keeps the user's edits on upgrade and asks
				// before replacing them.
				file(conf, "/etc/pimqtt/pimqtt.toml", 0o644, files.TypeConfigNoReplace),
				file(s.Unit, "/lib/systemd/system/pimqtt.service", 0o644, files.TypeFile),
				file(filepath.Join(debian, "60-pimqtt-gpio.rules"), "/lib/udev/rules.d/60-pimqtt-gpio.rules", 0o644, files.TypeFile),
			},
			Scripts: nfpm.Scripts{
				PostInstall: filepath.Join(debian, "postinst"),
				PreRemove:   filepath.Join(debian, "prerm"),
				PostRemove:  filepath.Join(debian, "postrm"),
			},
			Deb: nfpm.Deb{Compression: "gzip"},
		},
	})
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return "", fmt.Errorf("checking the package contents: %w", err)
	}
	path := filepath.Join(s.OutDir, deb.Default.ConventionalFileName(info))
	f, err := os.Create(path)
	if err != nil {
		return "", fmt.Errorf("creating %s: %w", path, err)
	}
	if err := deb.Default.Package(info, f); err != nil {
		f.Close()
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	return path, nil
}
