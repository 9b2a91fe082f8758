package web

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

const (
	// maxStreams bounds the open event streams (a goroutine and a connection each).
	maxStreams = 100
	// pingInterval keeps idle streams alive through proxies and finds dead readers.
	pingInterval = 25 * time.Second
	// streamWriteTimeout bounds each write to a stream, so a reader that stopped reading
	// cannot hold its goroutine.
	streamWriteTimeout = 10 * time.Second
	// retryMillis tells EventSource how soon to reconnect after the stream ends.
	retryMillis = 1000
)

// events answers GET /api/events with Server-Sent Events. Every message is a whole Snapshot
// (what the user may see, with telemetry and recent changes), sent on connecting and after every
// change, so a page that reconnects (EventSource does by itself, after a restart too) is up to
// date with its first message and needs no Last-Event-ID replay. The stream ends when the
// session does (sign-out) and when the server closes.
func (s *Server) events(w http.ResponseWriter, r *http.Request, p principal) {
	s.mu.Lock()
	if s.streams >= maxStreams {
		s.mu.Unlock()
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("too many open event streams (%d); close a page and retry", maxStreams))
		return
	}
	s.streams++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.streams--
		s.mu.Unlock()
		select {
		case s.streamEnded <- struct{}{}:
		default:
		}
	}()

	changed, stop := s.hub.watch()
	defer stop()
	var ended <-chan struct{}
	if p.sess != nil {
		ended = p.sess.done
	}
	rc := http.NewResponseController(w)
	// The deadlines set below stay on the connection; a request that follows on it must not
	// inherit them.
	defer func() { _ = rc.SetWriteDeadline(time.Time{}) }()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx and friends: do not buffer the stream
	w.WriteHeader(http.StatusOK)

	write := func(b []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	var last []byte
	id := 0
	send := func() bool {
		data, err := json.Marshal(s.snapshot(r, p, true))
		if err != nil || bytes.Equal(data, last) {
			return err == nil
		}
		last = data
		id++
		return write(fmt.Appendf(nil, "retry: %d\nid: %d\ndata: %s\n\n", retryMillis, id, data))
	}
	if !send() {
		return
	}
	ping := time.NewTicker(pingInterval)
	defer ping.Stop()
	for {
		select {
		case <-changed:
			if !send() {
				return
			}
		case <-ping.C:
			if uc, ok := s.opts.Auth.(userChecker); ok && p.sess != nil && !uc.Has(p.user) {
				return // taken out of the password file; the next request signs the page out
			}
			if !write([]byte(": ping\n\n")) {
				return
			}
		case <-ended:
			return
		case <-r.Context().Done():
			return
		case <-s.ctx.Done(): // for a Handler mounted on another server
			return
		}
	}
}
