package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"go.uber.org/zap"
)

// The coordinator's profiling endpoint (--pprof-addr): net/http/pprof on a
// listener of its own. Not on the API's port, because the API's middleware
// (auth, limits, body caps, write timeouts) has no business with a
// 30-second CPU profile, and an API open to the network must not open
// profiling with it. Off by default and loopback only: profiles expose
// memory contents and the command line, and a CPU profile costs serving
// time; remotely, an SSH tunnel reaches it.

// checkPprofAddr accepts host:port whose host is "localhost" or a loopback
// IP. An empty host (every interface) or any other address is refused, so
// a mistyped flag fails the start-up instead of exposing profiles.
func checkPprofAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--pprof-addr %q: want host:port on loopback, e.g. 127.0.0.1:6060: %w", addr, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("--pprof-addr %q: port %q is not a port number", addr, port)
	}
	if !isLoopback(host) {
		return fmt.Errorf("--pprof-addr %q: pprof listens on loopback only (localhost, 127.0.0.1 or [::1]); reach it remotely through an SSH tunnel", addr)
	}
	return nil
}

// pprofServer is the running profiling endpoint.
type pprofServer struct {
	srv  *http.Server
	l    net.Listener
	done chan struct{}
	err  error // Serve's, once done is closed
}

// startPprof checks addr, listens on it and serves at once: the start-up
// (resolving, downloading, loading) can be profiled too. "" returns nil:
// profiling is off.
func startPprof(addr string, log *zap.Logger) (*pprofServer, error) {
	if addr == "" {
		return nil, nil
	}
	if err := checkPprofAddr(addr); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pprof: listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	// No write timeout: a CPU profile or trace streams for as long as its
	// ?seconds= asks.
	p := &pprofServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, l: l, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		if err := p.srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			p.err = fmt.Errorf("pprof: serve %s: %w", l.Addr(), err)
		}
	}()
	log.Info("pprof listening", zap.String("address", l.Addr().String()))
	return p, nil
}

// Addr is the address it listens on (the port chosen for port 0).
func (p *pprofServer) Addr() net.Addr { return p.l.Addr() }

// Wait returns when the server stops: nil after Close, else why it failed
// (the run.Group actor, whose end then ends the coordinator).
func (p *pprofServer) Wait() error {
	<-p.done
	return p.err
}

// Close stops it, ending the profiles in progress; nil-safe and
// idempotent.
func (p *pprofServer) Close() {
	if p == nil {
		return
	}
	_ = p.srv.Close()
	<-p.done
}
