package hubtest

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
)

// The control endpoints, served with Options.Control under /_fake/ (a
// prefix no Hub URL uses, so they cannot shadow the protocol) on the Hub
// listener, and on the control listener (ControlURL), which stays up when
// SetDown takes the Hub down. They are not recorded as requests.
//
//	GET  /_fake/requests   {"requests": [Request...], "counts": {"hub GET /path": n},
//	                        "cdn_auth_seen": bool, "down": bool}
//	POST /_fake/reset      forget the recorded requests and cdn_auth_seen
//	POST /_fake/down?on=1  SetDown(true); on=0 brings the Hub back
//	POST /_fake/fault?kind=cut&path=P&bytes=N&times=K
//	POST /_fake/fault?kind=corrupt&path=P&times=K
//	POST /_fake/fault?kind=ignore-range&path=P&on=1
//	POST /_fake/fault?kind=fail&scope=S&status=N&times=K[&retry_after=SECONDS]
//	POST /_fake/fault?kind=throttle&bps=N
//	POST /_fake/fault?kind=clear   ResetFaults
//
// times=-1 is Always; path defaults to AllFiles. Answers are JSON; a bad
// query gets 400 {"error": ...}.
func (s *Server) serveControl(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/_fake/requests":
		if r.Method != http.MethodGet {
			writeError(w, r, http.StatusMethodNotAllowed, "", "use GET")
			return
		}
		counts := map[string]int{}
		for k, n := range s.Counts() {
			counts[k.String()] = n
		}
		writeJSON(w, r, http.StatusOK, map[string]any{
			"requests": s.Requests(), "counts": counts, "cdn_auth_seen": s.CDNAuthSeen(), "down": s.Down(),
		})
	case "/_fake/reset":
		if r.Method != http.MethodPost {
			writeError(w, r, http.StatusMethodNotAllowed, "", "use POST")
			return
		}
		s.ResetRequests()
		writeJSON(w, r, http.StatusOK, map[string]bool{"ok": true})
	case "/_fake/down":
		if r.Method != http.MethodPost {
			writeError(w, r, http.StatusMethodNotAllowed, "", "use POST")
			return
		}
		on, err := strconv.ParseBool(r.URL.Query().Get("on"))
		if err != nil {
			writeError(w, r, http.StatusBadRequest, "", "on must be 1 or 0")
			return
		}
		// Down before answering, so that the Hub is down by the time the
		// client reads the answer; but the connection this request came in
		// on (when on the Hub listener) is spared and closed after the
		// answer, so the answer arrives.
		keep, _ := r.Context().Value(connKey{}).(net.Conn)
		if err := s.setDown(on, keep); err != nil {
			writeError(w, r, http.StatusInternalServerError, "", err.Error())
			return
		}
		if on {
			w.Header().Set("Connection", "close")
		}
		writeJSON(w, r, http.StatusOK, map[string]bool{"down": on})
	case "/_fake/fault":
		if r.Method != http.MethodPost {
			writeError(w, r, http.StatusMethodNotAllowed, "", "use POST")
			return
		}
		if err := s.controlFault(r); err != nil {
			writeError(w, r, http.StatusBadRequest, "", err.Error())
			return
		}
		writeJSON(w, r, http.StatusOK, map[string]bool{"ok": true})
	default:
		writeError(w, r, http.StatusNotFound, "", "no such control endpoint")
	}
}

// controlFault applies POST /_fake/fault.
func (s *Server) controlFault(r *http.Request) error {
	q := r.URL.Query()
	p := q.Get("path")
	if p == "" {
		p = AllFiles
	}
	num := func(name string, def int64) (int64, error) {
		v := q.Get(name)
		if v == "" {
			return def, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", name, err)
		}
		return n, nil
	}
	times, err := num("times", 1)
	if err != nil {
		return err
	}
	switch kind := q.Get("kind"); kind {
	case "cut":
		n, err := num("bytes", 0)
		if err != nil {
			return err
		}
		s.Cut(p, n, int(times))
	case "corrupt":
		s.Corrupt(p, int(times))
	case "ignore-range":
		on, err := strconv.ParseBool(q.Get("on"))
		if err != nil {
			return fmt.Errorf("on: %w", err)
		}
		s.IgnoreRange(p, on)
	case "fail":
		status, err := num("status", 0)
		if err != nil {
			return err
		}
		if status < 100 || status > 599 {
			return fmt.Errorf("status %d is not an HTTP status", status)
		}
		scope := q.Get("scope")
		if scope == "" {
			scope = p
		}
		var h http.Header
		if ra := q.Get("retry_after"); ra != "" {
			h = http.Header{"Retry-After": {ra}}
		}
		s.Fail(scope, int(times), int(status), h)
	case "throttle":
		bps, err := num("bps", 0)
		if err != nil {
			return err
		}
		s.SetThrottle(bps)
	case "clear":
		s.ResetFaults()
	default:
		return fmt.Errorf("unknown fault kind %q (cut, corrupt, ignore-range, fail, throttle, clear)", kind)
	}
	return nil
}
