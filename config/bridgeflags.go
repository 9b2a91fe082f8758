package config

import (
	"fmt"
	"slices"

	"github.com/spf13/pflag"
)

// defaultBridgeName names the bridge the --bridge flags make when the file
// has none to apply them to.
const defaultBridgeName = "bridge"

// bridgeFlags are the --bridge-* flags: one bridge, given on the command
// line or completing one from the file.
type bridgeFlags struct {
	name, username, password, clientID, caFile string
	addresses, topics                          []string
	// passwordFor is the index in Config.Bridges of the bridge
	// --bridge-password was given for; -1 = none.
	passwordFor int
}

func (b *bridgeFlags) bind(fs *pflag.FlagSet) {
	fs.StringArrayVar(&b.addresses, "bridge", nil, "bridge the broker to a remote broker at this URL: tcp://, mqtts://, ws://, wss:// (repeatable: the addresses of one remote, e.g. a cluster's nodes, tried in order)")
	fs.StringArrayVar(&b.topics, "bridge-topic", nil, `what the bridge carries, in mosquitto's syntax: 'PATTERN [in|out|both] [QOS] [LOCAL_PREFIX] [REMOTE_PREFIX]' (repeatable; default direction out, QoS 0)`)
	fs.StringVar(&b.name, "bridge-name", "", `the bridge's name: logs and $SYS/broker/connection/NAME/state (default "bridge", or the file's only [[bridge]])`)
	fs.StringVar(&b.username, "bridge-username", "", "the bridge's user name at the remote broker")
	fs.StringVar(&b.password, "bridge-password", "", "the bridge's password at the remote broker (or env PIMQTT_BRIDGE_PASSWORD, which stays out of ps)")
	fs.StringVar(&b.clientID, "bridge-client-id", "", "the bridge's client id at the remote broker (default HOSTNAME.NAME)")
	fs.StringVar(&b.caFile, "bridge-ca-file", "", "CA (PEM) of the remote broker's certificate, for mqtts:// and wss:// remotes with a certificate of their own")
}

// apply puts the flags given into cfg: into the bridge named --bridge-name,
// else the file's only bridge, else a new bridge named "bridge". A list
// flag replaces that bridge's list.
func (b *bridgeFlags) apply(cfg *Config, changed func(string) bool) error {
	b.passwordFor = -1
	given := false
	for _, f := range []string{"bridge", "bridge-topic", "bridge-name", "bridge-username", "bridge-password", "bridge-client-id", "bridge-ca-file"} {
		given = given || changed(f)
	}
	if !given {
		return nil
	}
	i := -1
	switch {
	case b.name != "":
		i = slices.IndexFunc(cfg.Bridges, func(br Bridge) bool { return br.Name == b.name })
	case len(cfg.Bridges) == 1:
		i = 0
	case len(cfg.Bridges) > 1:
		return fmt.Errorf("--bridge-*: the configuration has %d bridges; say which one with --bridge-name", len(cfg.Bridges))
	}
	if i < 0 {
		name := b.name
		if name == "" {
			name = defaultBridgeName
		}
		cfg.Bridges = append(cfg.Bridges, Bridge{Name: name})
		i = len(cfg.Bridges) - 1
		cfg.origins.set(fmt.Sprintf("bridge[%d]", i), origin{flag: "--bridge"})
	}
	br := &cfg.Bridges[i]
	key := fmt.Sprintf("bridge[%d]", i)
	set := func(flag, field string, apply func()) {
		if changed(flag) {
			apply()
			cfg.origins.set(key+"."+field, origin{flag: "--" + flag})
		}
	}
	set("bridge", "address", func() { br.Addresses = slices.Clone(b.addresses) })
	set("bridge-topic", "topic", func() { br.Topics = slices.Clone(b.topics) })
	set("bridge-username", "username", func() { br.Username = b.username })
	set("bridge-client-id", "client_id", func() { br.ClientID = b.clientID })
	set("bridge-ca-file", "ca_file", func() { br.CAFile = b.caFile })
	set("bridge-password", "password", func() { br.Password, b.passwordFor = b.password, i })
	return nil
}

// setBridgePasswords gives each bridge with a user name its password:
// --bridge-password (already applied), else env PIMQTT_BRIDGE_PASSWORD,
// else the first line of its password_file, else what an imported
// mosquitto.conf said (remote_password).
func (c *Command) setBridgePasswords(cfg *Config) error {
	env := c.getenv("PIMQTT_BRIDGE_PASSWORD")
	for i := range cfg.Bridges {
		br := &cfg.Bridges[i]
		if br.Username == "" || i == c.bridge.passwordFor {
			continue
		}
		switch {
		case env != "":
			br.Password = env
		case br.PasswordFile != "":
			p, err := ReadPasswordFile(br.PasswordFile)
			if err != nil {
				return cfg.Wrap(fmt.Sprintf("bridge[%d].password_file", i), err)
			}
			br.Password = p
		}
	}
	return nil
}
