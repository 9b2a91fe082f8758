package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// profiler serves Go's profiler on [debug] pprof_listen, for a user who
// reports slowness. The address was checked to be loopback by the config
// layer: the profiler shows memory contents, so it is never served to the
// network.
type profiler struct {
	srv  *http.Server
	addr net.Addr
	done chan struct{}
}

// startProfiler is the "profiler" part: first, so that a slow start-up can
// be profiled too.
func (m *Main) startProfiler(ctx context.Context) error {
	addr := m.Config.Debug.PprofListen
	if addr == "" {
		return nil
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return m.Config.Wrap("debug.pprof_listen", fmt.Errorf("profiler: %w (pick another port, or leave pprof_listen empty)", err))
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	p := &profiler{
		// No write timeout: a CPU profile or trace takes as long as the
		// seconds= it is asked for.
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		addr: ln.Addr(),
		done: make(chan struct{}),
	}
	go func() {
		defer close(p.done)
		if err := p.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.Logger.Error("profiler stopped", "address", p.addr.String(), "error", err)
		}
	}()
	m.profiler = p
	m.Logger.Warn("profiler listening: it shows memory contents; turn it off when done",
		"address", p.addr.String(), "try", "go tool pprof http://"+p.addr.String()+"/debug/pprof/profile?seconds=30")
	return nil
}

// closeProfiler stops serving; a profile being taken is cut short.
func (m *Main) closeProfiler() error {
	if m.profiler == nil {
		return nil
	}
	err := m.profiler.srv.Close()
	<-m.profiler.done
	m.profiler = nil
	return err
}

// ProfilerAddr is the profiler's bound address, nil when it is off.
func (m *Main) ProfilerAddr() net.Addr {
	if m.profiler == nil {
		return nil
	}
	return m.profiler.addr
}
