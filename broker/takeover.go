package broker

import (
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// takeoverGuard closes a race in Mochi (v2.7.9) between the end of a
// clean-session connection and a new connection under the same client
// id. When a connection ends, Mochi calls OnDisconnect, checks that the
// connection was not taken over, and then forgets the client by id
// (Clients.Delete). A new connection that takes the id over in between
// (a phone reconnecting at once) is the one forgotten: it stays connected
// and subscribed, and gets nothing, with no error and no count: every
// message acknowledged to a publisher for it is lost.
//
// The guard orders the two: a new connection under the id of a
// clean-session connection that has ended waits until Mochi has forgotten
// that one; an ending connection whose id a new connection is taking over
// waits until the new one's CONNACK, by which time Mochi has marked the
// old one taken over and leaves the id alone. Both waits are bounded by
// takeoverWait; they happen only when a client reconnects while its
// previous connection is still being cleaned up.
type takeoverGuard struct {
	mqtt.HookBase
	server *mqtt.Server

	mu sync.Mutex
	// replacing are connections taking over the id of a client Mochi
	// still knows, until their CONNACK.
	replacing map[string]*mqtt.Client
	// ending are clean-session connections past OnDisconnect, until
	// Mochi forgets them.
	ending map[string]*mqtt.Client
	// sweepAt is the size of the maps at which forgotten entries are
	// dropped.
	sweepAt int
}

// takeoverWait bounds each wait of the guard: Mochi forgets a client
// microseconds after its OnDisconnect, and a new connection sends its
// CONNACK as soon as it has taken the session over.
const takeoverWait = 2 * time.Second

func newTakeoverGuard(server *mqtt.Server) *takeoverGuard {
	return &takeoverGuard{server: server, replacing: make(map[string]*mqtt.Client), ending: make(map[string]*mqtt.Client), sweepAt: minSweep}
}

func (h *takeoverGuard) ID() string { return "pimqtt-takeover" }

func (h *takeoverGuard) Provides(b byte) bool {
	return b == mqtt.OnSessionEstablish || b == mqtt.OnPacketEncode || b == mqtt.OnDisconnect
}

// OnSessionEstablish runs before Mochi looks for a session under the
// client's id.
func (h *takeoverGuard) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	old, ok := h.server.Clients.Get(cl.ID)
	if !ok || old == cl {
		return
	}
	h.mu.Lock()
	if h.ending[cl.ID] == old {
		h.mu.Unlock()
		pollUntil(func() bool {
			cur, ok := h.server.Clients.Get(cl.ID)
			return !ok || cur != old
		})
		h.mu.Lock()
		if h.ending[cl.ID] == old {
			delete(h.ending, cl.ID)
		}
	}
	h.replacing[cl.ID] = cl
	h.sweepLocked()
	h.mu.Unlock()
}

// OnPacketEncode sees a connection's CONNACK: Mochi has taken the session
// over (or found none) and knows the client under its id.
func (h *takeoverGuard) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack {
		h.mu.Lock()
		if h.replacing[cl.ID] == cl {
			delete(h.replacing, cl.ID)
		}
		h.mu.Unlock()
	}
	return pk
}

// OnDisconnect runs just before Mochi decides whether to forget the
// client.
func (h *takeoverGuard) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if !expire {
		return // Mochi keeps the session: nothing is forgotten
	}
	h.mu.Lock()
	r := h.replacing[cl.ID]
	if r == nil || r == cl {
		h.ending[cl.ID] = cl
		h.sweepLocked()
		h.mu.Unlock()
		return
	}
	h.mu.Unlock()
	pollUntil(func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.replacing[cl.ID] != r || r.Closed()
	})
}

// sweepLocked drops the entries Mochi is done with, once the maps have
// grown to sweepAt; h.mu is held.
func (h *takeoverGuard) sweepLocked() {
	if len(h.ending)+len(h.replacing) < h.sweepAt {
		return
	}
	for id, cl := range h.ending {
		if cur, ok := h.server.Clients.Get(id); !ok || cur != cl {
			delete(h.ending, id)
		}
	}
	for id, cl := range h.replacing {
		if cl.Closed() {
			delete(h.replacing, id)
		}
	}
	h.sweepAt = max(2*(len(h.ending)+len(h.replacing)), minSweep)
}

// pollUntil polls done until it holds or takeoverWait has passed: Mochi
// signals neither event the guard waits for.
func pollUntil(done func() bool) {
	deadline := time.Now().Add(takeoverWait)
	for !done() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling interval
	}
}
