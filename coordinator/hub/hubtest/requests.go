package hubtest

import (
	"net/http"
	"time"
)

// Request is one recorded request to the Hub or the CDN.
type Request struct {
	Host   string `json:"host"`   // HostHub or HostCDN
	Method string `json:"method"` // GET, HEAD
	Path   string `json:"path"`   // URL path as sent (escaped)
	Query  string `json:"query,omitempty"`
	// File is the in-repo path the request is about: the resolved file, or
	// for a CDN download the (first) path holding that blob.
	File string `json:"file,omitempty"`
	// Range is the Range header asked, "" for none.
	Range string `json:"range,omitempty"`
	// Auth tells whether the request carried an Authorization header.
	Auth bool `json:"auth"`
	// Status is the status answered; 0 when the connection was dropped
	// before any (SetDown).
	Status int `json:"status"`
	// Fault names the fault injected into the answer: "cut", "corrupt",
	// "ignore-range", "fail"; "" for none.
	Fault string `json:"fault,omitempty"`
}

// RequestKey identifies requests for counting: host, method and path.
type RequestKey struct {
	Host, Method, Path string
}

// String is "host METHOD /path", the key /_fake/requests counts under.
func (k RequestKey) String() string { return k.Host + " " + k.Method + " " + k.Path }

// Requests returns a copy of the requests recorded so far, in arrival
// order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, len(s.reqs))
	for i, r := range s.reqs {
		out[i] = *r
	}
	return out
}

// Counts returns how many requests were recorded per host, method and path.
func (s *Server) Counts() map[RequestKey]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[RequestKey]int{}
	for _, r := range s.reqs {
		out[RequestKey{r.Host, r.Method, r.Path}]++
	}
	return out
}

// Count returns how many requests of this method were made to this path
// (escaped, as sent) on this host.
func (s *Server) Count(host, method, path string) int {
	return s.Counts()[RequestKey{host, method, path}]
}

// RangesAsked returns the Range headers of the GET requests for a file's
// content (resolve of a regular file, CDN download of an LFS one), in
// order, "" where the whole content was asked.
func (s *Server) RangesAsked(path string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, r := range s.reqs {
		if r.Method == http.MethodGet && r.File == path && r.Status != http.StatusFound {
			out = append(out, r.Range)
		}
	}
	return out
}

// CDNAuthSeen tells whether any CDN request carried an Authorization
// header: a well-behaved client drops it when the Hub redirects it to
// another host, so a token never leaks to the storage provider.
func (s *Server) CDNAuthSeen() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cdnAuth
}

// ResetRequests forgets the recorded requests and CDNAuthSeen.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = nil
	s.cdnAuth = false
}

// begin records a request and returns the writer that fills in its status,
// and a func to call when the handler is done (it logs the request).
func (s *Server) begin(host string, w http.ResponseWriter, r *http.Request) (*recWriter, func()) {
	rec := &Request{Host: host, Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery,
		Range: r.Header.Get("Range"), Auth: r.Header.Get("Authorization") != ""}
	s.mu.Lock()
	s.reqs = append(s.reqs, rec)
	if host == HostCDN && rec.Auth {
		s.cdnAuth = true
	}
	s.mu.Unlock()
	start := time.Now()
	rw := &recWriter{ResponseWriter: w, s: s, rec: rec}
	return rw, func() {
		if s.opts.Logf == nil {
			return
		}
		s.mu.Lock()
		c := *rec
		s.mu.Unlock()
		s.logf("hubtest %s %s %s range=%q auth=%v -> %d %s (%v)", c.Host, c.Method, r.URL.RequestURI(),
			c.Range, c.Auth, c.Status, c.Fault, time.Since(start).Round(time.Millisecond))
	}
}

// note sets fields of the record under the lock.
func (w *recWriter) note(f func(r *Request)) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	f(w.rec)
}

// recWriter records the status of a response. It keeps http.Flusher, which
// Cut and the throttle need to push bytes out.
type recWriter struct {
	http.ResponseWriter
	s     *Server
	rec   *Request
	wrote bool
}

func (w *recWriter) WriteHeader(code int) {
	if !w.wrote {
		w.wrote = true
		w.note(func(r *Request) { r.Status = code })
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

func (w *recWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
