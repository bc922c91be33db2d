// Package pprof serves net/http/pprof for the coordinator and the workers
// (their --pprof-addr) on a listener of its own, never on a port used for
// anything else: the API's middleware (auth, limits, body caps, write
// timeouts) has no business with a 30-second CPU profile, and an API open
// to the network must not open profiling with it. It is off unless asked
// for and loopback only, because profiles expose memory contents and the
// command line (which may carry a token) and a CPU profile costs serving
// time: remotely, an SSH tunnel reaches it.
package pprof

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

// Check accepts host:port whose host is "localhost" or a loopback IP. An
// empty host (every interface) or any other address is refused, so a
// mistyped flag fails the start-up instead of exposing profiles.
func Check(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--pprof-addr %q: want host:port on loopback, e.g. 127.0.0.1:6060: %w", addr, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("--pprof-addr %q: port %q is not a port number", addr, port)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("--pprof-addr %q: pprof listens on loopback only (localhost, 127.0.0.1 or [::1]); reach it remotely through an SSH tunnel", addr)
}

// Server is a running profiling endpoint.
type Server struct {
	srv  *http.Server
	l    net.Listener
	done chan struct{}
	err  error // Serve's, once done is closed
}

// Start checks addr, listens on it and serves at once (a start-up can be
// profiled too). "" returns nil: profiling is off.
func Start(addr string, log *zap.Logger) (*Server, error) {
	if addr == "" {
		return nil, nil
	}
	if err := Check(addr); err != nil {
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
	s := &Server{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, l: l, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			s.err = fmt.Errorf("pprof: serve %s: %w", l.Addr(), err)
		}
	}()
	log.Info("pprof listening", zap.String("address", l.Addr().String()))
	return s, nil
}

// Addr is the address it listens on (the port chosen for port 0).
func (s *Server) Addr() net.Addr { return s.l.Addr() }

// Wait returns when the server stops: nil after Close, else why it failed.
func (s *Server) Wait() error {
	<-s.done
	return s.err
}

// Close stops it, ending the profiles in progress; nil-safe and idempotent.
func (s *Server) Close() {
	if s == nil {
		return
	}
	_ = s.srv.Close()
	<-s.done
}
