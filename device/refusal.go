package device

import (
	"errors"
	"net"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// refusal is the kind of a failed connection attempt, as far as it changes what the user
// must do about it.
type refusal int

const (
	refusalOther       refusal = iota // the network, a broker that is down, a timeout: wait
	refusalCredentials                // wrong or missing user name or password: fix them
	refusalClientID                   // the client id is refused: pick another
)

// CONNACK return codes (MQTT 3.1.1) and reason codes (MQTT 5) that mean the broker refused
// who the device says it is. paho speaks 3.1.1, but a broker may send the MQTT 5 code to a
// 3.1.1 client anyway (Mochi 2.7.9 does for 0x87), so both are recognised.
var refusalCodes = map[byte]refusal{
	packets.ErrRefusedBadUsernameOrPassword: refusalCredentials, // 4
	packets.ErrRefusedNotAuthorised:         refusalCredentials, // 5
	0x86:                                    refusalCredentials, // bad user name or password
	0x87:                                    refusalCredentials, // not authorized
	packets.ErrRefusedIDRejected:            refusalClientID,    // 2
	0x85:                                    refusalClientID,    // client identifier not valid
}

// connackError is a connection attempt the broker refused in its CONNACK.
type connackError struct {
	code byte
	err  error // paho's, e.g. "bad user name or password"
}

func (e *connackError) Error() string { return e.err.Error() }
func (e *connackError) Unwrap() error { return e.err }

// dialError is a dial failure whose text leaves the address out: every device log line names
// the broker already (broker=...), and a *net.OpError names it again. The OpError stays
// reachable through errors.As.
type dialError struct{ op *net.OpError }

func (e *dialError) Error() string { return e.op.Err.Error() }
func (e *dialError) Unwrap() error { return e.op }

// connectError gives a failed Connect's error the shape the log wants: a refusal carries its
// CONNACK code, and paho's "network Error : " prefix and the dialled address are dropped.
func connectError(tok mqtt.Token, err error) error {
	if ct, ok := tok.(*mqtt.ConnectToken); ok {
		if _, known := refusalCodes[ct.ReturnCode()]; known {
			return &connackError{code: ct.ReturnCode(), err: err}
		}
	}
	// paho joins its ErrorNetworkError with the dial's error ("%w : %w").
	if multi, ok := err.(interface{ Unwrap() []error }); ok && errors.Is(err, packets.ErrorNetworkError) {
		for _, e := range multi.Unwrap() {
			if e != packets.ErrorNetworkError {
				err = e
				break
			}
		}
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" && op.Err != nil {
		return &dialError{op: op}
	}
	return err
}

// classifyRefusal tells what kind of failure err, from connect, is.
func classifyRefusal(err error) refusal {
	var ce *connackError
	if errors.As(err, &ce) {
		return refusalCodes[ce.code]
	}
	return refusalOther
}

// Messages of the connection failures logConnectFailure reports.
const (
	msgCannotConnect      = "cannot connect to broker, retrying in the background"
	msgRefusedCredentials = "the broker refused the credentials, retrying in the background"
	msgWantsCredentials   = "the broker refused the connection without credentials, retrying in the background"
	msgRefusedClientID    = "the broker refused the client id, retrying in the background"
)

// logConnectFailure reports a failed connection attempt: a refusal the user must fix at error
// level, with a fix attribute that says where to fix it; anything else, which retrying may
// cure, at warn.
func (d *Device) logConnectFailure(kind refusal, err error) {
	switch kind {
	case refusalCredentials:
		where := d.hints.Credentials
		if where == "" {
			where = "Options.Username and Options.Password"
		}
		if d.username == "" {
			d.log.Error(msgWantsCredentials, "err", err,
				"fix", "the broker wants a user name and password: set them with "+where,
				"max_interval", d.maxBackoff)
			return
		}
		d.log.Error(msgRefusedCredentials, "err", err, "username", d.username,
			"fix", "check "+where, "max_interval", d.maxBackoff)
	case refusalClientID:
		where := d.hints.ClientID
		if where == "" {
			where = "Options.ClientID"
		}
		d.log.Error(msgRefusedClientID, "err", err, "client_id", d.clientID,
			"fix", "another client may have this id, or the broker reserves it (pimqtt does for its own device): pick another with "+where,
			"max_interval", d.maxBackoff)
	default:
		d.log.Warn(msgCannotConnect, "err", err, "max_interval", d.maxBackoff)
	}
}
