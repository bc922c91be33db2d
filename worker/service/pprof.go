package service

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

// The worker's profiling endpoint (--pprof-addr): net/http/pprof on a
// listener of its own, never on a port the service uses for anything else.
// It is off by default and loopback only, because profiles expose memory
// contents and the command line (which may carry a NATS token), and a CPU
// profile costs the model's time: reaching one takes a shell on the host
// (or an SSH tunnel), as for the coordinator's --pprof-addr.

// checkPprofAddr accepts host:port whose host is "localhost" or a loopback
// IP; an empty host (every interface) or any other address is refused.
func checkPprofAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--pprof-addr %q: want host:port on loopback, e.g. 127.0.0.1:6061: %w", addr, err)
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

// pprofServer is the running profiling endpoint.
type pprofServer struct {
	srv  *http.Server
	addr net.Addr
	done chan struct{}
}

// startPprof checks addr, listens on it and serves net/http/pprof until
// Close.
func startPprof(addr string, log *zap.Logger) (*pprofServer, error) {
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
	// No write timeout: a CPU profile or trace streams for as long as
	// its ?seconds= asks.
	p := &pprofServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, addr: l.Addr(), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		if err := p.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("pprof server stopped", zap.Error(err))
		}
	}()
	log.Info("pprof listening", zap.String("address", l.Addr().String()))
	return p, nil
}

// Addr is the address it listens on (the port chosen for port 0).
func (p *pprofServer) Addr() net.Addr { return p.addr }

// Close stops it, ending the profiles in progress; nil-safe.
func (p *pprofServer) Close() {
	if p == nil {
		return
	}
	_ = p.srv.Close()
	<-p.done
}
