package hubtest

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// parseRange reads a single-range "bytes=" header against a content of
// size bytes. ok is false when the header is to be ignored (malformed or
// several ranges: RFC 9110 lets a server then send the whole content);
// satisfiable is false when the range lies past the end (416).
func parseRange(h string, size int64) (start, end int64, ok, satisfiable bool) {
	unit, spec, found := strings.Cut(strings.TrimSpace(h), "=")
	if !found || !strings.EqualFold(strings.TrimSpace(unit), "bytes") || strings.Contains(spec, ",") {
		return 0, 0, false, false
	}
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false, false
	}
	first, last = strings.TrimSpace(first), strings.TrimSpace(last)
	if first == "" { // suffix: the last N bytes
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n < 0 {
			return 0, 0, false, false
		}
		if n == 0 || size == 0 {
			return 0, 0, true, false
		}
		return max(size-n, 0), size - 1, true, true
	}
	a, err := strconv.ParseInt(first, 10, 64)
	if err != nil || a < 0 {
		return 0, 0, false, false
	}
	b := size - 1
	if last != "" {
		if b, err = strconv.ParseInt(last, 10, 64); err != nil || b < a {
			return 0, 0, false, false
		}
		b = min(b, size-1)
	}
	if a >= size {
		return 0, 0, true, false
	}
	return a, b, true, true
}

// serveContent serves a file's content with Range support and the faults
// set for its paths: ignore-range, corrupt, cut, and on the CDN the
// throttle. The caller has set the other headers.
func (s *Server) serveContent(w *recWriter, r *http.Request, host string, data []byte, paths []string) {
	size := int64(len(data))
	h := w.Header()
	h.Set("Accept-Ranges", "bytes")

	s.mu.Lock()
	ignore := s.ignoresRange(paths)
	var cutAfter int64
	var cut, corrupt bool
	if r.Method == http.MethodGet {
		cutAfter, cut = s.takeCut(paths)
		corrupt = s.takeCorrupt(paths)
	}
	rate := int64(0)
	if host == HostCDN {
		rate = s.throttle
	}
	s.mu.Unlock()

	start, end, partial := int64(0), size-1, false
	if rh := r.Header.Get("Range"); rh != "" {
		if ignore {
			w.note(func(rec *Request) { rec.Fault = "ignore-range" })
		} else if a, b, ok, satisfiable := parseRange(rh, size); ok {
			if !satisfiable {
				h.Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
				writeError(w, r, http.StatusRequestedRangeNotSatisfiable, "", "Requested Range Not Satisfiable")
				return
			}
			start, end, partial = a, b, true
		}
	}
	body := data[start : end+1]
	if corrupt && len(body) > 0 {
		body = append([]byte(nil), body...)
		body[len(body)/2] ^= 0xff
		w.note(func(rec *Request) { rec.Fault = "corrupt" })
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if partial {
		h.Set("Content-Range", "bytes "+strconv.FormatInt(start, 10)+"-"+strconv.FormatInt(end, 10)+"/"+
			strconv.FormatInt(size, 10))
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.WriteHeader(http.StatusOK)
	}
	if r.Method == http.MethodHead {
		return
	}
	if cut && cutAfter < int64(len(body)) {
		w.note(func(rec *Request) { rec.Fault = "cut" })
		writePaced(w, r, body[:cutAfter], rate)
		w.Flush()
		// Abort the response: net/http closes the connection without
		// ending the body, so the client sees fewer bytes than announced.
		panic(http.ErrAbortHandler)
	}
	writePaced(w, r, body, rate)
}

// writePaced writes body at most rate bytes per second (rate 0: at once),
// flushing each chunk so the client sees the bytes as they are paced.
func writePaced(w *recWriter, r *http.Request, body []byte, rate int64) {
	if rate <= 0 {
		_, _ = w.Write(body)
		return
	}
	chunk := int(min(max(rate/20, 1), 64<<10))
	start := time.Now()
	for sent := 0; sent < len(body); {
		n := min(chunk, len(body)-sent)
		if _, err := w.Write(body[sent : sent+n]); err != nil {
			return
		}
		w.Flush()
		sent += n
		due := start.Add(time.Duration(float64(sent) / float64(rate) * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
	}
}
