package hubtest

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"time"
)

// signedURLLifetime is how long a CDN URL stays valid, as the Hub's signed
// URLs expire (an hour or so): a client must re-resolve, not cache them.
const signedURLLifetime = time.Hour

// blobPath is the CDN path of an LFS content, named by its sha256 as the
// Hub's storage names it.
func blobPath(sha string) string {
	return "/repos/" + sha[:2] + "/" + sha[2:4] + "/" + sha
}

var blobPathRe = regexp.MustCompile(`^/repos/([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{64})$`)

// sign is the fake signature of a CDN URL: an HMAC with the server's
// random key, so a client has to use the Location exactly as given.
func (s *Server) sign(p, disposition string, expires int64) string {
	m := hmac.New(sha256.New, s.signKey)
	m.Write([]byte(p + "\n" + disposition + "\n" + strconv.FormatInt(expires, 10)))
	return hex.EncodeToString(m.Sum(nil))
}

// signedBlobURL is the CDN URL the resolve endpoint redirects an LFS file
// to, with a disposition naming the file as the real redirect does.
func (s *Server) signedBlobURL(sha, name string) string {
	exp := time.Now().Add(signedURLLifetime).Unix()
	disp := contentDisposition(name)
	p := blobPath(sha)
	q := url.Values{
		"response-content-disposition": {disp},
		"Expires":                      {strconv.FormatInt(exp, 10)},
		"Signature":                    {s.sign(p, disp, exp)},
		"Key-Pair-Id":                  {"HUBTEST"},
	}
	return s.CDNURL() + p + "?" + q.Encode()
}

// CDNBlobURL returns a signed CDN URL of an LFS content by its sha256, for
// tests that fetch the CDN directly. The content must be in some repo.
func (s *Server) CDNBlobURL(sha256Hex string) string {
	return s.signedBlobURL(sha256Hex, sha256Hex)
}

// writeCDNError answers as an S3/CloudFront-style storage does: XML, no
// Hub headers (a client must not expect X-Error-Code from the CDN).
func writeCDNError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	body := `<?xml version="1.0" encoding="UTF-8"?>` + "\n<Error><Code>" + code + "</Code><Message>" + msg +
		"</Message></Error>"
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write([]byte(body))
	}
}

// serveCDN is the CDN listener's handler: HEAD and GET of LFS contents by
// signed URL, with Range support; no authentication (the signature is it).
func (s *Server) serveCDN(w http.ResponseWriter, r *http.Request) {
	rw, done := s.begin(HostCDN, w, r)
	defer done()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeCDNError(rw, r, http.StatusMethodNotAllowed, "MethodNotAllowed", "The method is not allowed")
		return
	}
	m := blobPathRe.FindStringSubmatch(r.URL.Path)
	if m == nil || m[1] != m[3][:2] || m[2] != m[3][2:4] {
		writeCDNError(rw, r, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
		return
	}
	sha := m[3]
	q := r.URL.Query()
	disp := q.Get("response-content-disposition")
	exp, err := strconv.ParseInt(q.Get("Expires"), 10, 64)
	want := s.sign(r.URL.Path, disp, exp)
	if err != nil || time.Now().Unix() > exp ||
		subtle.ConstantTimeCompare([]byte(want), []byte(q.Get("Signature"))) != 1 {
		writeCDNError(rw, r, http.StatusForbidden, "AccessDenied", "Access denied: missing, bad or expired signature")
		return
	}

	s.mu.Lock()
	b := s.blobs[sha]
	var paths []string
	if b != nil {
		for p := range b.paths {
			paths = append(paths, p)
		}
		sort.Strings(paths)
	}
	fail, failed := s.takeFail(failScopes(HostCDN, false, paths))
	s.mu.Unlock()
	if len(paths) > 0 {
		rw.note(func(rec *Request) { rec.File = paths[0] })
	}
	if failed {
		for k, vs := range fail.header {
			for _, v := range vs {
				rw.Header().Add(k, v)
			}
		}
		rw.note(func(rec *Request) { rec.Fault = "fail" })
		writeCDNError(rw, r, fail.status, "Injected", failText(fail.status))
		return
	}
	if b == nil {
		writeCDNError(rw, r, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
		return
	}
	h := rw.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("ETag", `"`+sha+`"`)
	h.Set("Last-Modified", "Tue, 05 Aug 2025 00:00:00 GMT")
	h.Set("Cache-Control", "public, max-age=604800, immutable")
	if disp != "" {
		h.Set("Content-Disposition", disp)
	}
	s.serveContent(rw, r, HostCDN, b.data, paths)
}
