package device

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// ErrUnknownCommand is wrapped by every ParseCommand error, so callers can tell "the payload
// was not a command" (log it, ignore it) from other failures with errors.Is.
var ErrUnknownCommand = errors.New("unknown command payload")

// maxCommandLen bounds what ParseCommand looks at. The longest accepted form,
// {"state":"TOGGLE"} padded with some whitespace, is far below it; anything longer is refused
// before any trimming or JSON decoding, so a 1 MB payload costs nothing.
const maxCommandLen = 256

// ParseCommand turns a command payload into the level the line should be driven to. current is
// the line's present level, needed only for TOGGLE.
//
// Accepted, surrounded by optional whitespace: "0"/"1", the single bytes 0x00/0x01, ON/OFF,
// true/false and TOGGLE in any case, and JSON {"state":"ON"|"OFF"|"TOGGLE"} (value in any case).
// Everything else, including an empty payload, returns an error wrapping ErrUnknownCommand.
func ParseCommand(payload []byte, current int) (int, error) {
	if len(payload) > maxCommandLen {
		return 0, fmt.Errorf("%w: %d bytes is longer than the %d-byte limit", ErrUnknownCommand, len(payload), maxCommandLen)
	}
	// The raw single bytes are checked before trimming: they are not whitespace, but checking
	// first keeps them from ever being confused with the ASCII digits.
	if len(payload) == 1 {
		switch payload[0] {
		case 0x00:
			return 0, nil
		case 0x01:
			return 1, nil
		}
	}
	p := bytes.TrimSpace(payload)
	if len(p) == 0 {
		return 0, fmt.Errorf("%w: empty payload", ErrUnknownCommand)
	}
	if p[0] == '{' {
		return parseJSONCommand(p, current)
	}
	switch strings.ToLower(string(p)) {
	case "1", "on", "true":
		return 1, nil
	case "0", "off", "false":
		return 0, nil
	case "toggle":
		return toggle(current), nil
	}
	return 0, fmt.Errorf("%w: not 0/1, ON/OFF, true/false, TOGGLE or JSON state", ErrUnknownCommand)
}

// parseJSONCommand accepts the Home Assistant style {"state":"ON"} object. Other members are
// ignored (Home Assistant may add some), but "state" must be present and a string.
func parseJSONCommand(p []byte, current int) (int, error) {
	var cmd struct {
		State *string `json:"state"`
	}
	if err := json.Unmarshal(p, &cmd); err != nil {
		return 0, fmt.Errorf("%w: invalid JSON: %w", ErrUnknownCommand, err)
	}
	if cmd.State == nil {
		return 0, fmt.Errorf("%w: JSON object has no string \"state\"", ErrUnknownCommand)
	}
	switch strings.ToLower(strings.TrimSpace(*cmd.State)) {
	case "on":
		return 1, nil
	case "off":
		return 0, nil
	case "toggle":
		return toggle(current), nil
	}
	return 0, fmt.Errorf("%w: JSON state %q is not ON, OFF or TOGGLE", ErrUnknownCommand, *cmd.State)
}

// toggle treats any non-zero level as high, so a line reporting e.g. 255 still toggles to 0.
func toggle(current int) int {
	if current != 0 {
		return 0
	}
	return 1
}
