package broker

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/pimqtt/pimqtt/auth"
)

// accessControl decides which topics each client may read and write: the
// ACL file's rules when there is one (mosquitto's meaning, see auth.ACL),
// pimqtt's default rights otherwise. The default rights: every client
// may read everything and write everything except $SYS (and $share, as
// in mosquitto) and the in-process device's own topics (DeviceTopics),
// so that nobody else can announce "the LED is on". The in-process
// device, on the trusted listener, may do anything in either case.
//
// It also remembers, per connected network client, what the checks need:
// the identity the ACL is applied to and, for Reload, the password it
// logged in with (mosquitto keeps it too, to disconnect clients whose
// password no longer checks out after a reload).
type accessControl struct {
	acl             atomic.Pointer[auth.ACL] // nil: default rights
	deviceTopics    []string                 // filters only the device may write
	trustedListener string

	mu      sync.RWMutex
	clients map[*mqtt.Client]*clientAccess
	// sweepAt is the size at which closed clients are swept out: a
	// client refused after OnConnect never reaches OnDisconnect.
	sweepAt int
}

// clientAccess is what accessControl keeps per network client.
type clientAccess struct {
	id       auth.Identity
	password string
	rules    atomic.Pointer[cachedRules]
}

// cachedRules are a client's rules under one ACL.
type cachedRules struct {
	acl   *auth.ACL
	rules *auth.ClientRules
}

const minSweep = 64

func newAccessControl(deviceTopics []string, trustedListener string) (*accessControl, error) {
	a := &accessControl{trustedListener: trustedListener, clients: make(map[*mqtt.Client]*clientAccess), sweepAt: minSweep}
	for _, f := range deviceTopics {
		if f == "" || !mqtt.IsValidFilter(f, false) {
			return nil, fmt.Errorf("broker: device topic %q is not a valid topic filter", f)
		}
		a.deviceTopics = append(a.deviceTopics, f)
	}
	return a, nil
}

// trusted reports whether cl is the in-process device or Mochi's own
// inline client.
func (a *accessControl) trusted(cl *mqtt.Client) bool {
	return cl.Net.Inline || cl.Net.Listener == a.trustedListener
}

// register remembers a network client that has passed authentication.
func (a *accessControl) register(cl *mqtt.Client, pk packets.Packet) {
	ca := &clientAccess{
		id: auth.Identity{
			ClientID:  cl.ID,
			Username:  string(pk.Connect.Username),
			Anonymous: !pk.Connect.UsernameFlag,
		},
		password: string(pk.Connect.Password),
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.clients[cl] = ca
	if len(a.clients) >= a.sweepAt {
		for c := range a.clients {
			if c.Closed() {
				delete(a.clients, c)
			}
		}
		a.sweepAt = max(2*len(a.clients), minSweep)
	}
}

// forget drops a client whose connection has ended.
func (a *accessControl) forget(cl *mqtt.Client) {
	a.mu.Lock()
	delete(a.clients, cl)
	a.mu.Unlock()
}

// rules returns cl's rules under the current ACL.
func (a *accessControl) rules(cl *mqtt.Client, acl *auth.ACL) *auth.ClientRules {
	a.mu.RLock()
	ca := a.clients[cl]
	a.mu.RUnlock()
	if ca == nil {
		// Not registered (it cannot be: every network client past
		// OnConnect is); judge it by what Mochi knows.
		return acl.Rules(auth.Identity{ClientID: cl.ID, Username: string(cl.Properties.Username), Anonymous: cl.Properties.Username == nil})
	}
	if c := ca.rules.Load(); c != nil && c.acl == acl {
		return c.rules
	}
	r := acl.Rules(ca.id)
	ca.rules.Store(&cachedRules{acl: acl, rules: r})
	return r
}

// mayWrite reports whether cl may publish to topic (or leave a will
// there).
func (a *accessControl) mayWrite(cl *mqtt.Client, topic string) bool {
	if a.trusted(cl) {
		return true
	}
	if acl := a.acl.Load(); acl != nil {
		return a.rules(cl, acl).Allowed(topic, auth.Write)
	}
	if !auth.SystemTopicAllowed(topic, auth.Write) {
		return false
	}
	for _, f := range a.deviceTopics {
		if auth.TopicMatches(f, topic) {
			return false
		}
	}
	return true
}

// mayRead reports whether a message published to topic may be delivered
// to cl.
func (a *accessControl) mayRead(cl *mqtt.Client, topic string) bool {
	if a.trusted(cl) {
		return true
	}
	if acl := a.acl.Load(); acl != nil {
		return a.rules(cl, acl).Allowed(topic, auth.Read)
	}
	return true
}

// maySubscribe reports whether a subscription to filter could deliver
// anything to cl. Where it could not, mosquitto grants the SUBSCRIBE and
// delivers nothing; pimqtt refuses it, so the client learns why.
func (a *accessControl) maySubscribe(cl *mqtt.Client, filter string) bool {
	if a.trusted(cl) {
		return true
	}
	if acl := a.acl.Load(); acl != nil {
		return a.rules(cl, acl).MayRead(filter)
	}
	return true
}

// reauthenticate checks every connected client's password against pw, as
// mosquitto does on reload, and disconnects those it no longer admits (a
// user removed, a password changed). Anonymous clients stay.
func (a *accessControl) reauthenticate(server *mqtt.Server, pw *auth.Passwords, log *slog.Logger) {
	type entry struct {
		cl *mqtt.Client
		ca *clientAccess
	}
	var all []entry
	a.mu.RLock()
	for cl, ca := range a.clients {
		all = append(all, entry{cl, ca})
	}
	a.mu.RUnlock()
	for _, e := range all {
		if e.ca.id.Anonymous || e.cl.Closed() || pw.Check(e.ca.id.Username, e.ca.password) {
			continue
		}
		log.Warn("client disconnected: its user name and password are no longer accepted after the reload",
			clientAttrs(e.cl, e.ca.id.Username)...)
		_ = server.DisconnectClient(e.cl, packets.ErrNotAuthorized)
	}
}

// loadAccessFiles reads the password file and the ACL file, either
// optional, and puts them in force together, or neither.
func (b *Broker) loadAccessFiles() (*auth.Passwords, error) {
	var pw *auth.Passwords
	var acl *auth.ACL
	var err error
	if b.opts.PasswordFile != "" {
		if pw, err = auth.Load(b.opts.PasswordFile, b.log); err != nil {
			return nil, fmt.Errorf("broker: password file: %w", err)
		}
	}
	if b.opts.ACLFile != "" {
		if acl, err = auth.LoadACL(b.opts.ACLFile, b.log); err != nil {
			return nil, fmt.Errorf("broker: ACL file: %w", err)
		}
	}
	if pw != nil {
		b.passwords.Store(pw)
		b.log.Info("password file loaded", "path", b.opts.PasswordFile, "users", pw.Len())
	}
	if acl != nil {
		b.rights.acl.Store(acl)
		b.log.Info("ACL file loaded", "path", b.opts.ACLFile, "rules", acl.Len())
		if b.opts.PasswordFile == "" {
			b.log.Warn("ACL file without a password file: user names are not checked, so any client can claim any user's rights",
				"acl_file", b.opts.ACLFile)
		}
	}
	return pw, nil
}

// reloadAccessFiles is Reload's part for the password and ACL files:
// both are read again and put in force together; if either cannot be
// read, both old ones stay in force and the error says why. Clients whose
// password no longer checks out are disconnected; the subscriptions of
// the others stay, and what they receive from now on is decided by the
// new ACL (a topic no longer readable is no longer delivered; one
// readable again is delivered again), as in mosquitto.
func (b *Broker) reloadAccessFiles() error {
	pw, err := b.loadAccessFiles()
	if err != nil {
		b.log.Error("reload failed; the previous password and ACL files stay in force", "error", err)
		return err
	}
	if pw != nil && b.server != nil {
		b.rights.reauthenticate(b.server, pw, b.log)
	}
	return nil
}
