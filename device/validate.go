package device

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// maxKeepAlive is the longest keepalive MQTT can carry (16 bits of seconds). paho truncates
// longer ones silently: 65536 s would go out as 0, which disables keepalive.
const maxKeepAlive = 65535 * time.Second

// normalize fills in opts' defaults and checks it against the rules New documents. The
// default state topics are filled into a copy of opts.Outputs: the caller's slice is left as it
// was.
func normalize(opts Options) (Options, error) {
	switch {
	case len(opts.Brokers) > 0 && opts.Dial != nil:
		return opts, errors.New("device: set Options.Dial or Options.Brokers, not both")
	case len(opts.Brokers) == 0 && opts.Dial == nil:
		return opts, errors.New("device: Options.Dial (or Options.Brokers) is required")
	case len(opts.Brokers) == 0:
		opts.Brokers = []Broker{{Label: opts.BrokerLabel, Dial: opts.Dial}}
	}
	opts.Brokers = slices.Clone(opts.Brokers)
	for i, b := range opts.Brokers {
		if b.Dial == nil {
			return opts, fmt.Errorf("device: Options.Brokers[%d] (%s) has no Dial", i, b.Label)
		}
		if b.Label == "" {
			opts.Brokers[i].Label = fmt.Sprintf("broker %d", i+1)
		}
	}
	if opts.Password != "" && opts.Username == "" {
		// MQTT 3.1.1 forbids a password without a username (MQTT-3.1.2-22).
		return opts, errors.New("device: a password needs a username")
	}
	if len(opts.Outputs) == 0 && len(opts.Inputs) == 0 {
		return opts, errors.New("device: at least one output or input (Options.Outputs, Options.Inputs) is required")
	}
	if opts.StatusTopic == "" {
		opts.StatusTopic = defaultStatusTopic
	}
	switch {
	case opts.KeepAlive == 0:
		opts.KeepAlive = defaultKeepAlive
	case opts.KeepAlive < time.Second:
		// paho counts keepalive in whole seconds: anything below 1 s would silently become 0,
		// which disables keepalive (and mosquitto ≥ 2.0.12 refuses it by default).
		return opts, fmt.Errorf("device: Options.KeepAlive %v is below 1s", opts.KeepAlive)
	case opts.KeepAlive/time.Second > maxKeepAlive/time.Second:
		return opts, fmt.Errorf("device: Options.KeepAlive %v is above MQTT's limit of %v", opts.KeepAlive, maxKeepAlive)
	}
	switch {
	case opts.MaxReconnectInterval == 0:
		opts.MaxReconnectInterval = defaultMaxReconnectInterval
	case opts.MaxReconnectInterval < 0:
		return opts, fmt.Errorf("device: Options.MaxReconnectInterval %v is negative", opts.MaxReconnectInterval)
	}
	if opts.ClientID == "" {
		opts.ClientID = DefaultClientID()
	}
	if opts.BrokerLabel == "" {
		opts.BrokerLabel = "unnamed broker"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}

	// Every topic the device subscribes or publishes to must be distinct: the device
	// subscribes to its command topics and its status topic, so a state topic equal to one of
	// them would feed states to the command parser (or the will repair), and two lines sharing
	// a state topic would clobber each other's retained level.
	topics := map[string]string{} // topic → what uses it
	claim := func(topic, what string) error {
		if err := validatePublishTopic(topic); err != nil {
			return fmt.Errorf("device: %s %q: %w", what, topic, err)
		}
		if prev, ok := topics[topic]; ok {
			return fmt.Errorf("device: %s %q collides with %s", what, topic, prev)
		}
		topics[topic] = what
		return nil
	}
	names := map[string]string{} // name → what uses it
	claimName := func(name, what string) error {
		switch {
		case name == "":
			return fmt.Errorf("device: %s has no Name", what)
		case !utf8.ValidString(name):
			return fmt.Errorf("device: %s Name %q is not valid UTF-8", what, name)
		}
		if prev, ok := names[name]; ok {
			return fmt.Errorf("device: %s Name %q is already used by %s", what, name, prev)
		}
		names[name] = what
		return nil
	}
	if err := claim(opts.StatusTopic, "Options.StatusTopic"); err != nil {
		return opts, err
	}
	opts.Outputs = slices.Clone(opts.Outputs)
	for i := range opts.Outputs {
		o := &opts.Outputs[i]
		what := fmt.Sprintf("Options.Outputs[%d]", i)
		if err := claimName(o.Name, what); err != nil {
			return opts, err
		}
		what = fmt.Sprintf("Options.Outputs[%d] (%s)", i, o.Name)
		if o.Line == nil {
			return opts, fmt.Errorf("device: %s Line is required", what)
		}
		if o.StateTopic == "" {
			o.StateTopic = o.CommandTopic + "/state"
		}
		if err := claim(o.CommandTopic, what+" CommandTopic"); err != nil {
			return opts, err
		}
		if err := claim(o.StateTopic, what+" StateTopic"); err != nil {
			return opts, err
		}
	}
	for i, in := range opts.Inputs {
		what := fmt.Sprintf("Options.Inputs[%d]", i)
		if err := claimName(in.Name, what); err != nil {
			return opts, err
		}
		what = fmt.Sprintf("Options.Inputs[%d] (%s)", i, in.Name)
		if in.Line == nil {
			return opts, fmt.Errorf("device: %s Line is required", what)
		}
		if err := claim(in.StateTopic, what+" StateTopic"); err != nil {
			return opts, err
		}
		if in.SimTopic == "" {
			continue
		}
		if _, ok := in.Line.(Driver); !ok {
			return opts, fmt.Errorf("device: %s SimTopic %q: line %v cannot be driven (it is no Driver): only a simulated line can", what, in.SimTopic, in.Line)
		}
		if err := claim(in.SimTopic, what+" SimTopic"); err != nil {
			return opts, err
		}
	}
	return opts, nil
}

// DefaultClientID is the client id a Device uses when Options.ClientID is empty,
// "pimqtt-HOSTNAME". Each Pi gets its own id: two devices sharing one would take each other's
// session over in a loop.
func DefaultClientID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		return "pimqtt"
	}
	return "pimqtt-" + host
}

// validatePublishTopic rejects topics the device could not publish to. Wildcards are refused
// even for command topics, because their state topics are derived from them and a message
// must be routed to exactly one output.
func validatePublishTopic(t string) error {
	switch {
	case t == "":
		return errors.New("empty")
	case len(t) > 65535:
		return errors.New("longer than 65535 bytes")
	case !utf8.ValidString(t):
		return errors.New("not valid UTF-8")
	case strings.ContainsAny(t, "+#\x00"):
		return errors.New("contains a wildcard (+ or #) or NUL")
	}
	return nil
}
