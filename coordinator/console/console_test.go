package console_test

import (
	"net/http"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/gptoss/server/coordinator/console"
)

// TestServesAssets checks the page's files and their headers, without a
// key on a server that has keys.
func TestServesAssets(t *testing.T) {
	e := newEnv(t, envConfig{keys: []string{"sk-test"}})
	resp, body := e.get(t, "/ui/")
	if resp.StatusCode != 200 {
		t.Fatalf("GET /ui/: %d %s", resp.StatusCode, body)
	}
	h := resp.Header
	for k, want := range map[string]string{
		"Content-Type":            "text/html; charset=utf-8",
		"Content-Security-Policy": console.ContentSecurityPolicy,
		"X-Content-Type-Options":  "nosniff",
		"Cache-Control":           "no-cache",
		"X-Frame-Options":         "DENY",
		"Referrer-Policy":         "no-referrer",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	for _, d := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(console.ContentSecurityPolicy, d) {
			t.Errorf("the policy lacks %q", d)
		}
	}
	if strings.Contains(console.ContentSecurityPolicy, "unsafe") {
		t.Errorf("the policy allows something unsafe: %s", console.ContentSecurityPolicy)
	}
	etag := h.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	if r, _ := e.get(t, "/ui/", "If-None-Match", etag); r.StatusCode != http.StatusNotModified {
		t.Errorf("revalidation with the ETag: %d, want 304", r.StatusCode)
	}

	types := map[string]string{".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
		".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
	for _, name := range console.Assets() {
		r, b := e.get(t, "/ui/"+name)
		if r.StatusCode != 200 || len(b) == 0 {
			t.Errorf("GET /ui/%s: %d, %d bytes", name, r.StatusCode, len(b))
		}
		if want := types[path.Ext(name)]; r.Header.Get("Content-Type") != want {
			t.Errorf("%s: Content-Type %q, want %q", name, r.Header.Get("Content-Type"), want)
		}
		if r.Header.Get("Content-Security-Policy") == "" {
			t.Errorf("%s: no Content-Security-Policy", name)
		}
	}

	for _, p := range []string{"/", "/ui"} {
		r, _ := e.get(t, p)
		if r.StatusCode != http.StatusFound || r.Header.Get("Location") != "/ui/" {
			t.Errorf("GET %s: %d to %q, want 302 to /ui/", p, r.StatusCode, r.Header.Get("Location"))
		}
	}
	if r, _ := e.get(t, "/ui/missing.js"); r.StatusCode != 404 {
		t.Errorf("a missing file: %d", r.StatusCode)
	}
	if r, _ := e.get(t, "/ui/../go.mod"); r.StatusCode != 404 {
		t.Errorf("a path out of the assets: %d", r.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodPost, e.url+"/ui/", strings.NewReader("x"))
	if r, err := http.DefaultClient.Do(req); err != nil || r.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /ui/: %v %v", r.StatusCode, err)
	} else {
		r.Body.Close()
	}
	// The API keeps its key.
	if r, _ := e.get(t, "/v1/models"); r.StatusCode != 401 {
		t.Errorf("/v1/models without the key: %d", r.StatusCode)
	}
}

// TestConsoleOff: without Options.Console (--ui=false) nothing is served.
func TestConsoleOff(t *testing.T) {
	e := newEnv(t, envConfig{noConsole: true})
	for _, p := range []string{"/", "/ui/", "/ui/app.js"} {
		if r, _ := e.get(t, p); r.StatusCode != 404 {
			t.Errorf("GET %s with the console off: %d", p, r.StatusCode)
		}
	}
}

// TestAssetsAreSelfContained reads the sources: every module and file the
// page names is embedded, nothing comes from another origin, and nothing
// needs what the policy forbids (inline script or style, eval) or writes
// text as markup.
func TestAssetsAreSelfContained(t *testing.T) {
	e := newEnv(t, envConfig{})
	names := console.Assets()
	read := func(name string) string {
		_, b := e.get(t, "/ui/"+name)
		return string(b)
	}
	refs := regexp.MustCompile(`(?:src|href)="([^"#]+)"|from '\./([^']+)'|import '\./([^']+)'`)
	for _, name := range names {
		text := read(name)
		for _, m := range refs.FindAllStringSubmatch(text, -1) {
			ref := m[1] + m[2] + m[3]
			if !slices.Contains(names, ref) {
				t.Errorf("%s refers to %q, which is not embedded", name, ref)
			}
		}
		for _, u := range regexp.MustCompile(`https?://[^\s"')]+`).FindAllString(text, -1) {
			if !strings.HasPrefix(u, "http://www.w3.org/") { // XML namespaces
				t.Errorf("%s names another origin: %s", name, u)
			}
		}
		switch path.Ext(name) {
		case ".html":
			for _, bad := range []*regexp.Regexp{regexp.MustCompile(`<script(?:\s+type="module")?>`),
				regexp.MustCompile(`\sstyle=`), regexp.MustCompile(`<style`), regexp.MustCompile(`\son[a-z]+=`)} {
				if bad.MatchString(text) {
					t.Errorf("%s has inline code or style (%s)", name, bad)
				}
			}
		case ".js":
			for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setAttribute('style'"} {
				if strings.Contains(text, bad) {
					t.Errorf("%s uses %s", name, bad)
				}
			}
		}
	}
	for _, want := range []string{"index.html", "app.js", "chat.js", "dashboard.js", "charts.js", "metrics.js", "api.js", "style.css"} {
		if !slices.Contains(names, want) {
			t.Errorf("%s is not embedded", want)
		}
	}
}
