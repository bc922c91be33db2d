// Package hubtest is a fake Hugging Face Hub for tests of the model
// download path. It speaks the Hub's protocol as the official client,
// huggingface_hub, expects it (the e2e suite runs that client against it),
// so that a downloader tested here behaves the same against the real Hub:
//
//   - GET /api/models/{org}/{name}[/revision/{rev}][?blobs=true]: model info
//     with the commit and the file list (sizes, blob ids, LFS oids).
//   - GET /api/models/{org}/{name}/tree/{rev}[/{path}][?recursive=true]: the
//     tree listing, cursor-paginated with a Link: rel="next" header.
//   - HEAD and GET /{org}/{name}/resolve/{rev}/{path}: regular files served
//     directly (ETag: git blob sha1), LFS files redirected (302) to a signed
//     URL on a second "CDN" listener (X-Linked-Etag: sha256, X-Linked-Size).
//
// Errors carry X-Error-Code / X-Error-Message as the Hub sends them, so the
// client's error classification (repo, revision, entry not found; bad
// token) is exercised too. The Hub and the CDN listen on different ports,
// that is different origins, as on huggingface.co: a client must drop the
// Authorization header on the redirect, and CDNAuthSeen tells if it did not.
//
// Faults can be injected at any time (Cut, Corrupt, IgnoreRange, Fail,
// SetThrottle, SetDown), and every request is recorded (Requests, Counts).
// With Options.Control the Hub listener also answers a few /_fake/ control
// endpoints, and a third, never-down listener serves them too (for the
// scripts/fakehub command, which Python tests drive).
package hubtest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

const (
	// DefaultLFSThreshold is the size over which any file is stored with
	// LFS, whatever its name (the Hub's own limit for plain git files).
	DefaultLFSThreshold = 10 << 20
	// DefaultTreePageSize is the Hub's page size of the tree API.
	DefaultTreePageSize = 1000
)

// Host names of the listeners, as Request.Host records them.
const (
	HostHub = "hub"
	HostCDN = "cdn"
)

// Options configure a Server. The zero value is a server with public repos
// only and the Hub's defaults.
type Options struct {
	// Token is the one valid access token. Empty: any bearer token is
	// valid (private repositories then need some token, whatever it is).
	// A request with an invalid token gets 401 "Invalid credentials in
	// Authorization header", even for a public repository, as on the Hub.
	Token string
	// LFSThreshold: files larger than this are LFS whatever their name
	// (default DefaultLFSThreshold).
	LFSThreshold int64
	// TreePageSize is the number of entries per page of the tree API
	// (default DefaultTreePageSize); tests set it small to exercise the
	// pagination.
	TreePageSize int
	// Host is the address the listeners bind (default 127.0.0.1).
	Host string
	// Control serves the /_fake/ endpoints (see ControlURL).
	Control bool
	// Logf, when set, gets one line per request.
	Logf func(format string, args ...any)
}

// Server is a running fake Hub: a Hub listener, a CDN listener and,
// with Options.Control, a control listener. Safe for concurrent use.
type Server struct {
	opts    Options
	signKey []byte
	hub     *endpoint
	cdn     *endpoint
	ctl     *endpoint // nil without Options.Control

	mu       sync.Mutex
	repos    map[string]*repo
	blobs    map[string]*blob // sha256 → content, for the CDN
	faults   faults
	throttle int64 // CDN bytes per second, 0: unlimited
	down     bool
	reqs     []*Request
	cdnAuth  bool
}

// blob is one LFS content on the CDN, with the repo paths that hold it
// (so faults set per path apply to CDN downloads too).
type blob struct {
	data  []byte
	paths map[string]bool
}

// Start starts a fake Hub on loopback ports. Close it when done.
func Start(opts Options) (*Server, error) {
	if opts.LFSThreshold <= 0 {
		opts.LFSThreshold = DefaultLFSThreshold
	}
	if opts.TreePageSize <= 0 {
		opts.TreePageSize = DefaultTreePageSize
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	s := &Server{opts: opts, repos: map[string]*repo{}, blobs: map[string]*blob{}, faults: newFaults()}
	s.signKey = make([]byte, 32)
	if _, err := rand.Read(s.signKey); err != nil {
		return nil, fmt.Errorf("hubtest: signing key: %w", err)
	}
	var errLog *log.Logger
	if opts.Logf != nil {
		errLog = log.New(logfWriter(opts.Logf), "", 0)
	} else {
		errLog = log.New(io.Discard, "", 0)
	}
	var err error
	if s.hub, err = newEndpoint(HostHub, opts.Host, http.HandlerFunc(s.serveHub), errLog); err != nil {
		return nil, err
	}
	if s.cdn, err = newEndpoint(HostCDN, opts.Host, http.HandlerFunc(s.serveCDN), errLog); err != nil {
		_ = s.hub.close()
		return nil, err
	}
	if opts.Control {
		if s.ctl, err = newEndpoint("control", opts.Host, http.HandlerFunc(s.serveControl), errLog); err != nil {
			_ = s.hub.close()
			_ = s.cdn.close()
			return nil, err
		}
	}
	return s, nil
}

// New starts a fake Hub for a test and closes it when the test ends. With
// a nil t it panics on error and the caller closes it (for commands).
func New(t testing.TB, opts Options) *Server {
	var logMu sync.Mutex
	var ended bool
	if t != nil {
		t.Helper()
		if opts.Logf == nil && testing.Verbose() {
			// A handler may still be running when the test ends, and
			// t.Logf after the end panics: stop logging at cleanup.
			opts.Logf = func(format string, args ...any) {
				logMu.Lock()
				defer logMu.Unlock()
				if !ended {
					t.Logf(format, args...)
				}
			}
		}
	}
	s, err := Start(opts)
	if err != nil {
		if t == nil {
			panic(err)
		}
		t.Fatal(err)
	}
	if t != nil {
		t.Cleanup(func() {
			logMu.Lock()
			ended = true
			logMu.Unlock()
			_ = s.Close()
		})
	}
	return s
}

// URL is the Hub endpoint ("http://127.0.0.1:port"): what HF_ENDPOINT is
// set to.
func (s *Server) URL() string { return "http://" + s.hub.addr }

// CDNURL is the base URL of the CDN host LFS downloads are redirected to.
func (s *Server) CDNURL() string { return "http://" + s.cdn.addr }

// ControlURL is the base URL of the control listener ("" without
// Options.Control). It serves the same /_fake/ endpoints as the Hub
// listener but is not taken down by SetDown, so a test can bring the Hub
// back.
func (s *Server) ControlURL() string {
	if s.ctl == nil {
		return ""
	}
	return "http://" + s.ctl.addr
}

// Close stops every listener and closes every connection.
func (s *Server) Close() error {
	var errs []error
	for _, e := range []*endpoint{s.hub, s.cdn, s.ctl} {
		if e != nil {
			errs = append(errs, e.close())
		}
	}
	return errors.Join(errs...)
}

// SetDown takes the Hub and the CDN off the network (true) or back on. Down,
// their listening sockets are closed, so connecting is refused as for an
// unreachable host (what a client treats as "offline", unlike an HTTP
// error), and every open connection is closed at once.
func (s *Server) SetDown(down bool) error { return s.setDown(down, nil) }

// setDown is SetDown sparing one connection (nil: none) from the cut.
func (s *Server) setDown(down bool, keep net.Conn) error {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
	return errors.Join(s.hub.setDown(down, keep), s.cdn.setDown(down, keep))
}

// Down tells whether SetDown(true) is in effect.
func (s *Server) Down() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.down
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, args...)
	}
}

type logfWriter func(format string, args ...any)

func (f logfWriter) Write(p []byte) (int, error) {
	f("hubtest: %s", p)
	return len(p), nil
}

// connKey is the context key of a request's connection.
type connKey struct{}

// endpoint is one listener with its HTTP server. It can be taken down and
// brought back on the same address, which a plain httptest.Server cannot.
type endpoint struct {
	name string
	addr string // host:port, fixed at the first listen
	srv  *http.Server
	wg   sync.WaitGroup

	mu     sync.Mutex
	ln     net.Listener // nil while down
	conns  map[net.Conn]struct{}
	closed bool
}

func newEndpoint(name, host string, h http.Handler, errLog *log.Logger) (*endpoint, error) {
	e := &endpoint{name: name, conns: map[net.Conn]struct{}{}}
	e.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ConnState: e.track, ErrorLog: errLog,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		}}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, fmt.Errorf("hubtest: listen for the %s: %w", name, err)
	}
	e.addr = ln.Addr().String()
	e.mu.Lock()
	e.serve(ln)
	e.mu.Unlock()
	return e, nil
}

// serve starts serving ln. Called with e.mu held.
func (e *endpoint) serve(ln net.Listener) {
	e.ln = ln
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		_ = e.srv.Serve(ln) // returns when ln is closed: down or Close
	}()
}

// track keeps the open connections, for setDown to cut them.
func (e *endpoint) track(c net.Conn, st http.ConnState) {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch st {
	case http.StateNew:
		e.conns[c] = struct{}{}
	case http.StateClosed, http.StateHijacked:
		delete(e.conns, c)
	}
}

func (e *endpoint) setDown(down bool, keep net.Conn) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	if down {
		var err error
		if e.ln != nil {
			err = e.ln.Close()
			e.ln = nil
		}
		for c := range e.conns {
			if c != keep {
				_ = c.Close()
			}
		}
		if err != nil {
			return fmt.Errorf("hubtest: take the %s down: %w", e.name, err)
		}
		return nil
	}
	if e.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", e.addr)
	if err != nil {
		return fmt.Errorf("hubtest: bring the %s back on %s: %w", e.name, e.addr, err)
	}
	e.serve(ln)
	return nil
}

func (e *endpoint) close() error {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	err := e.srv.Close() // closes the listener (if up) and all connections
	e.wg.Wait()
	if err != nil {
		return fmt.Errorf("hubtest: close the %s: %w", e.name, err)
	}
	return nil
}
