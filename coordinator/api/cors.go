package api

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"
)

// CORS lets browser pages on other origins call the API (a web UI served
// from elsewhere, a notebook in the browser). Without origins the server
// sends no CORS headers at all, so browsers keep their same-origin rule:
// opening the API to other sites is the operator's decision, never a
// default.
type CORS struct {
	// Origins are the origins allowed to call: scheme://host[:port], as a
	// browser sends them in the Origin header, or "*" for any origin.
	Origins []string
	// AllowCredentials lets pages send credentials (cookies, HTTP
	// authentication) and read the answer. Browsers refuse it together
	// with "*", so New refuses the pair too. An API key set by the page in
	// Authorization or X-Api-Key needs no credentials mode.
	AllowCredentials bool
}

// The fixed CORS answers.
const (
	// corsMaxAge is how long (seconds) a browser may reuse a preflight's
	// answer: Starlette's (so vLLM's) default. Chromium caps it at 7200.
	corsMaxAge = "600"
	// corsExposed are the response headers a page's script may read: the
	// ones the OpenAI SDKs read to retry and to report (X-Request-Id,
	// Retry-After, x-should-retry), the mock marker and the 401 challenge.
	corsExposed = "X-Request-Id, Retry-After, Retry-After-Ms, X-Should-Retry, WWW-Authenticate, " + MockHeader
	// corsDefaultHeaders are allowed when a preflight's requested headers
	// cannot be echoed (absent, too long or malformed): what the OpenAI
	// SDKs send.
	corsDefaultHeaders = "Authorization, Content-Type, X-Api-Key, X-Request-Id, OpenAI-Beta, OpenAI-Organization, OpenAI-Project, " +
		"X-Stainless-Arch, X-Stainless-Async, X-Stainless-Lang, X-Stainless-OS, X-Stainless-Package-Version, " +
		"X-Stainless-Retry-Count, X-Stainless-Runtime, X-Stainless-Runtime-Version, X-Stainless-Timeout, " +
		"X-Stainless-Helper-Method, X-Stainless-Poll-Helper, X-Stainless-Custom-Poll-Interval"
	// maxCORSRequestHeaders bounds the Access-Control-Request-Headers
	// value echoed back (a client-controlled size); the SDKs send about
	// 300 bytes.
	maxCORSRequestHeaders = 2048
)

// corsPolicy is a validated CORS.
type corsPolicy struct {
	any         bool
	origins     map[string]bool
	credentials bool
}

// newCORSPolicy validates c; nil when no origin is allowed.
func newCORSPolicy(c CORS) (*corsPolicy, error) {
	if len(c.Origins) == 0 {
		if c.AllowCredentials {
			return nil, errors.New("api: CORS credentials without origins: set the origins allowed to send them")
		}
		return nil, nil
	}
	p := &corsPolicy{origins: map[string]bool{}, credentials: c.AllowCredentials}
	for _, o := range c.Origins {
		o = strings.TrimSpace(o)
		if o == "*" {
			p.any = true
			continue
		}
		norm, err := normalizeOrigin(o)
		if err != nil {
			return nil, fmt.Errorf("api: CORS origin %q: %w", o, err)
		}
		p.origins[norm] = true
	}
	if p.any && p.credentials {
		// Browsers reject a response that allows credentials to "*"; a
		// server that echoed every origin instead would let any site act
		// with the user's cookies.
		return nil, errors.New("api: CORS origin \"*\" cannot be combined with allowing credentials: list the origins")
	}
	return p, nil
}

// normalizeOrigin checks an origin's form (scheme://host[:port], nothing
// after) and lower-cases it, as browsers serialise origins.
func normalizeOrigin(o string) (string, error) {
	u, err := url.Parse(strings.TrimSuffix(o, "/"))
	switch {
	case err != nil:
		return "", fmt.Errorf("not a URL: %w", err)
	case u.Scheme == "" || u.Host == "":
		return "", errors.New("want scheme://host[:port], e.g. https://app.example.com")
	case u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return "", errors.New("an origin is scheme://host[:port] alone, without user, path, query or fragment")
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}

// allowOrigin is the Access-Control-Allow-Origin value for a request's
// Origin, and whether it is allowed at all.
func (p *corsPolicy) allowOrigin(origin string) (string, bool) {
	if origin == "" {
		return "", false
	}
	if p.origins[strings.ToLower(origin)] {
		return origin, true
	}
	if p.any {
		return "*", true
	}
	return "", false
}

// corsMiddleware answers preflights and marks responses for allowed
// origins. It runs before every route's own middleware: a preflight is
// answered here, so it needs no API key (browsers never send one on a
// preflight), takes nothing from the per-key limits and is not a request
// in the stats. A request from an origin that is not allowed gets no CORS
// headers and goes on as if the middleware were not there: the browser
// then hides the answer from the page.
func (s *Server) corsMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	p := s.cors
	return func(c echo.Context) error {
		req := c.Request()
		origin := req.Header.Get(echo.HeaderOrigin)
		if origin == "" {
			return next(c)
		}
		h := c.Response().Header()
		if !p.any || p.credentials || len(p.origins) > 0 {
			// The answer depends on the origin: caches must key on it.
			h.Add(echo.HeaderVary, echo.HeaderOrigin)
		}
		allow, ok := p.allowOrigin(origin)
		preflight := req.Method == http.MethodOptions && req.Header.Get(echo.HeaderAccessControlRequestMethod) != ""
		if !ok {
			return next(c)
		}
		h.Set(echo.HeaderAccessControlAllowOrigin, allow)
		if p.credentials {
			h.Set(echo.HeaderAccessControlAllowCredentials, "true")
		}
		if !preflight {
			h.Set(echo.HeaderAccessControlExposeHeaders, corsExposed)
			return next(c)
		}
		// The router put the route's methods in the context when the path
		// exists (it has no OPTIONS handler of its own); an unknown path
		// gets its usual 404.
		methods, known := c.Get(echo.ContextKeyHeaderAllow).(string)
		if !known {
			return next(c)
		}
		h.Add(echo.HeaderVary, echo.HeaderAccessControlRequestMethod)
		h.Add(echo.HeaderVary, echo.HeaderAccessControlRequestHeaders)
		h.Set(echo.HeaderAllow, methods)
		h.Set(echo.HeaderAccessControlAllowMethods, methods)
		h.Set(echo.HeaderAccessControlAllowHeaders, allowHeaders(req.Header.Get(echo.HeaderAccessControlRequestHeaders)))
		h.Set(echo.HeaderAccessControlMaxAge, corsMaxAge)
		return c.NoContent(http.StatusNoContent)
	}
}

// allowHeaders is the Access-Control-Allow-Headers of a preflight: the
// headers the page asked for, echoed (as Starlette does for "*", which
// browsers do not accept as a wildcard when credentials are allowed), when
// they are a short list of header names; the SDKs' headers otherwise.
func allowHeaders(requested string) string {
	requested = strings.TrimSpace(requested)
	if requested == "" || len(requested) > maxCORSRequestHeaders {
		return corsDefaultHeaders
	}
	for _, name := range strings.Split(requested, ",") {
		if name = strings.TrimSpace(name); !isToken(name) {
			return corsDefaultHeaders
		}
	}
	return requested
}

// isToken reports whether s is an HTTP token (RFC 9110 §5.6.2), the form
// of a header name.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
