// Package console is the coordinator's web console: one page served at
// /ui/ with a chat playground (streamed answers, reasoning apart, tool
// calls, reasoning effort and profile, per-answer token counts, TTFT and
// tokens/s, a stop button) and a live dashboard of the deployment (each
// worker and its GPU, the KV cache, the queues per profile, request and
// token rates, latency percentiles, the start-up's download and load).
//
// The page is static: plain ES modules, one stylesheet and one HTML file,
// embedded in the binary, nothing fetched from elsewhere. It needs no API
// key to load; it reads the public /health, /stats and /metrics, and sends
// chat requests with the key the user enters (kept in the browser's
// localStorage). Every answer carries a Content-Security-Policy that lets
// the page load and connect to this origin only, so even model output that
// looks like markup can run nothing (the page also writes text as text).
package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

//go:embed assets
var assets embed.FS

// Prefix is where the console is served.
const Prefix = "/ui/"

// ContentSecurityPolicy allows this origin's scripts, styles and images and
// connections to this origin's API, and nothing else: no inline script or
// style, no plugin, no framing by other pages, no form posted elsewhere.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// contentTypes are the assets' types, fixed here rather than read from the
// machine's MIME tables (a browser refuses a module served as text/plain).
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
}

// file is one embedded asset, ready to serve.
type file struct {
	name  string
	body  []byte
	ctype string
	etag  string
}

// files are the assets by their path under Prefix; built once.
var files = func() map[string]*file {
	m := map[string]*file{}
	err := fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := assets.ReadFile(p)
		if err != nil {
			return err
		}
		ctype, ok := contentTypes[path.Ext(p)]
		if !ok {
			ctype = "application/octet-stream"
		}
		sum := sha256.Sum256(b)
		name := strings.TrimPrefix(p, "assets/")
		m[name] = &file{name: name, body: b, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		return nil
	})
	if err != nil {
		panic("console: reading the embedded assets: " + err.Error())
	}
	return m
}()

// Handler serves the console's files under Prefix (GET and HEAD). They
// are revalidated on every load (Cache-Control: no-cache with an ETag, so
// a reload costs a 304), because a new binary brings new files under the
// same names.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		name, ok := strings.CutPrefix(r.URL.Path, Prefix)
		if !ok {
			http.NotFound(w, r)
			return
		}
		if name == "" {
			name = "index.html"
		}
		f := files[name]
		if f == nil {
			http.NotFound(w, r)
			return
		}
		h.Set("Content-Type", f.ctype)
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", f.etag)
		// ServeContent answers If-None-Match with 304, ranges and HEAD.
		http.ServeContent(w, r, f.name, time.Time{}, bytes.NewReader(f.body))
	})
}

// Register adds the console's routes to e: the files under /ui/, and / and
// /ui redirecting to /ui/. They need no API key: the page holds no secret,
// and the API it calls checks the key.
func Register(e *echo.Echo) {
	h := echo.WrapHandler(Handler())
	toUI := func(c echo.Context) error { return c.Redirect(http.StatusFound, Prefix) }
	for _, p := range []string{"/", strings.TrimSuffix(Prefix, "/")} {
		e.GET(p, toUI)
		e.HEAD(p, toUI)
	}
	e.GET(Prefix+"*", h)
	e.HEAD(Prefix+"*", h)
}
