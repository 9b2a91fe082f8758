package bridge

import (
	"sort"
	"sync"
)

// retainedMap is the latest retained message per local topic under the outgoing trees, as the
// local subscription delivered them (the retained ones at subscription time, then every live
// retained publish, whose retain flag the local broker keeps for a bridge). It is sent to the
// remote on every connection, before subscribing there. Bounded: a full map learns no new
// topics (updates and deletions of known ones still apply).
type retainedMap struct {
	limit int

	mu      sync.Mutex
	entries map[string]retainedEntry // local topic → latest
	seq     uint64
}

type retainedEntry struct {
	remoteTopic string
	payload     []byte
	seq         uint64 // order of arrival, so the remote gets them in the order learnt
}

func newRetainedMap(limit int) *retainedMap {
	return &retainedMap{limit: limit, entries: map[string]retainedEntry{}}
}

// set records the retained message on localTopic; an empty payload deletes it (as it deletes
// the retained message at a broker). It reports false when the map is full and the topic new.
func (r *retainedMap) set(localTopic, remoteTopic string, payload []byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(payload) == 0 {
		delete(r.entries, localTopic)
		return true
	}
	if _, known := r.entries[localTopic]; !known && len(r.entries) >= r.limit {
		return false
	}
	r.seq++
	r.entries[localTopic] = retainedEntry{remoteTopic: remoteTopic, payload: payload, seq: r.seq}
	return true
}

// snapshot returns the entries in the order they were last set.
func (r *retainedMap) snapshot() []retainedEntry {
	r.mu.Lock()
	out := make([]retainedEntry, 0, len(r.entries))
	for _, e := range r.entries {
		out = append(out, e)
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}
