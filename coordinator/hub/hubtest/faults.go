package hubtest

import (
	"net/http"
	"strings"
)

// Fault targets. A fault is set for one in-repo file path ("model.safetensors",
// "original/config.json"; the path of the file in any repository that holds
// it) or for AllFiles. Fail also takes the scopes APIScope and CDNScope.
const (
	// AllFiles makes a fault apply to every file. Cut and Corrupt then count
	// their times per file: Cut(AllFiles, 0, 1) cuts each file's first
	// download once.
	AllFiles = "*"
	// APIScope, for Fail: every request to the /api/ endpoints.
	APIScope = "/api"
	// CDNScope, for Fail: prefix of the scopes on the CDN host, CDNScope+"*"
	// for every CDN request, CDNScope+path for the downloads of one file.
	CDNScope = "cdn:"
	// Always, as a count of times, makes a fault apply to every request
	// until removed (a count of 0 removes it).
	Always = -1
)

// counter is how many more requests a fault applies to, per file (the key
// is the file path; one key only for a fault on one file or on a scope).
type counter struct {
	times int // Always, or the number of requests per key
	used  map[string]int
}

func newCounter(times int) *counter { return &counter{times: times, used: map[string]int{}} }

// take consumes one application of the fault for key, if any is left.
func (c *counter) take(key string) bool {
	if c.times < 0 {
		return true
	}
	if c.used[key] >= c.times {
		return false
	}
	c.used[key]++
	return true
}

type cutRule struct {
	*counter
	after int64
}

type failRule struct {
	*counter
	status int
	header http.Header
}

// faults are the injected faults, guarded by Server.mu.
type faults struct {
	cut         map[string]*cutRule
	corrupt     map[string]*counter
	ignoreRange map[string]bool
	fail        map[string]*failRule
}

func newFaults() faults {
	return faults{cut: map[string]*cutRule{}, corrupt: map[string]*counter{},
		ignoreRange: map[string]bool{}, fail: map[string]*failRule{}}
}

// Cut makes the first times GET requests of a file's content (the resolve
// of a regular file, the CDN download of an LFS file) send afterBytes bytes
// of the body and then close the connection: the client has the status and
// a Content-Length but sees the body end early (an unexpected EOF, not a
// clean end), as on a dropped connection. times 0 removes the fault.
// HEAD requests and redirects are not cut.
func (s *Server) Cut(path string, afterBytes int64, times int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if times == 0 {
		delete(s.faults.cut, path)
		return
	}
	s.faults.cut[path] = &cutRule{counter: newCounter(times), after: max(afterBytes, 0)}
}

// Corrupt makes the first times GET requests of a file's content serve it
// with one byte changed (the middle byte of the body sent): same length and
// headers, so only a hash check can tell. times 0 removes the fault.
func (s *Server) Corrupt(path string, times int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if times == 0 {
		delete(s.faults.corrupt, path)
		return
	}
	s.faults.corrupt[path] = newCounter(times)
}

// IgnoreRange makes the file's content be served whole with 200 even when
// a Range was asked (as some proxies and CDNs do): a resuming client must
// notice and start over instead of appending.
func (s *Server) IgnoreRange(path string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.faults.ignoreRange[path] = true
	} else {
		delete(s.faults.ignoreRange, path)
	}
}

// Fail makes the first times requests in scope answer status (with header
// added, e.g. Retry-After for a 429 or a 503) and a JSON error body,
// before anything else is looked at. Scopes: a file path (its resolve
// requests, HEAD and GET), APIScope, AllFiles (every Hub request, API and
// resolve), CDNScope+path and CDNScope+"*" (CDN downloads). The count is
// shared by all requests in scope. times 0 removes the fault.
func (s *Server) Fail(scope string, times, status int, header http.Header) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if times == 0 {
		delete(s.faults.fail, scope)
		return
	}
	s.faults.fail[scope] = &failRule{counter: newCounter(times), status: status, header: header.Clone()}
}

// SetThrottle limits the CDN's bodies to bytesPerSec bytes per second
// (0: unlimited), so that a progress report has time to be seen.
func (s *Server) SetThrottle(bytesPerSec int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.throttle = max(bytesPerSec, 0)
}

// ResetFaults removes every fault and the throttle (not SetDown).
func (s *Server) ResetFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = newFaults()
	s.throttle = 0
}

// The lookups below are called with s.mu held. paths are the in-repo paths
// the content is served for (several for a CDN blob held at several
// paths); a fault on one of them wins over one on AllFiles.

func (s *Server) takeCut(paths []string) (int64, bool) {
	for _, p := range paths {
		if r := s.faults.cut[p]; r != nil {
			return r.after, r.take(p)
		}
	}
	if r := s.faults.cut[AllFiles]; r != nil && len(paths) > 0 {
		return r.after, r.take(paths[0])
	}
	return 0, false
}

func (s *Server) takeCorrupt(paths []string) bool {
	for _, p := range paths {
		if c := s.faults.corrupt[p]; c != nil {
			return c.take(p)
		}
	}
	if c := s.faults.corrupt[AllFiles]; c != nil && len(paths) > 0 {
		return c.take(paths[0])
	}
	return false
}

func (s *Server) ignoresRange(paths []string) bool {
	if s.faults.ignoreRange[AllFiles] {
		return true
	}
	for _, p := range paths {
		if s.faults.ignoreRange[p] {
			return true
		}
	}
	return false
}

// takeFail returns the failure to answer for the first scope (most
// specific first) whose fault has applications left.
func (s *Server) takeFail(scopes []string) (*failRule, bool) {
	for _, sc := range scopes {
		if r := s.faults.fail[sc]; r != nil && r.take("") {
			return r, true
		}
	}
	return nil, false
}

// failScopes are the Fail scopes a request falls in, most specific first.
func failScopes(host string, api bool, paths []string) []string {
	var scopes []string
	if host == HostCDN {
		for _, p := range paths {
			scopes = append(scopes, CDNScope+p)
		}
		return append(scopes, CDNScope+AllFiles)
	}
	scopes = append(scopes, paths...)
	if api {
		scopes = append(scopes, APIScope)
	}
	return append(scopes, AllFiles)
}

// failText is the error message of an injected failure.
func failText(status int) string {
	return strings.TrimSpace(http.StatusText(status) + " (injected by hubtest)")
}
