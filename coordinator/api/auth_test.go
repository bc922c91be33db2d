package api

import (
	"net/http"
	"strings"
	"testing"
)

// TestBearerSchemeCaseInsensitive: the Authorization scheme is
// case-insensitive (RFC 9110 §11.1, formerly RFC 7235), and the key may be
// separated from it by more than one space.
func TestBearerSchemeCaseInsensitive(t *testing.T) {
	e := newEnv(t, func(c *testConfig) { c.opts.APIKeys = []string{"sk-a"} })
	for _, tc := range []struct {
		auth   string
		status int
	}{
		{"Bearer sk-a", 200},
		{"bearer sk-a", 200},
		{"BEARER sk-a", 200},
		{"bEaReR sk-a", 200},
		{"Bearer   sk-a", 200},
		{"bearer\tsk-a", 200},
		{"bearer sk-b", 401},
		{"bearer", 401},
		{"bearer ", 401},
		{"Bearersk-a", 401},
		{"Basic sk-a", 401},
		{"Token sk-a", 401},
	} {
		resp, b := e.post(t, "/v1/chat/completions", `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"max_tokens":2}`, "Authorization", tc.auth)
		if resp.StatusCode != tc.status {
			t.Errorf("Authorization %q: status %d, want %d: %s", tc.auth, resp.StatusCode, tc.status, b)
		}
	}
}

// TestUnauthorizedCarriesWWWAuthenticate: every 401 names the scheme the
// server expects (RFC 9110 §11.6.1), missing key or wrong one.
func TestUnauthorizedCarriesWWWAuthenticate(t *testing.T) {
	e := newEnv(t, func(c *testConfig) { c.opts.APIKeys = []string{"sk-a"} })
	check := func(what string, resp *http.Response, b []byte) {
		t.Helper()
		if resp.StatusCode != 401 {
			t.Fatalf("%s: status %d: %s", what, resp.StatusCode, b)
		}
		h := resp.Header.Get("WWW-Authenticate")
		if !strings.HasPrefix(h, "Bearer") {
			t.Errorf("%s: WWW-Authenticate %q, want a Bearer challenge", what, h)
		}
		if errorOf(t, b)["code"] != "invalid_api_key" {
			t.Errorf("%s: %s", what, b)
		}
	}
	resp, b := e.post(t, "/v1/chat/completions", hello)
	check("no key", resp, b)
	resp, b = e.post(t, "/v1/chat/completions", hello, "Authorization", "Bearer sk-wrong")
	check("wrong key", resp, b)
	if h := resp.Header.Get("WWW-Authenticate"); !strings.Contains(h, `error="invalid_token"`) {
		t.Errorf("wrong key: WWW-Authenticate %q lacks error=\"invalid_token\" (RFC 6750 §3)", h)
	}
	resp, b = e.post(t, "/v1/completions", `{"model":"gpt-oss-20b","prompt":"x"}`, "X-Api-Key", "nope")
	check("wrong X-Api-Key", resp, b)
	resp, b = e.get(t, "/v1/models")
	check("models without key", resp, b)
	// Other statuses carry no challenge.
	resp, _ = e.post(t, "/v1/chat/completions", `{}`, "Authorization", "Bearer sk-a")
	if resp.StatusCode != 400 || resp.Header.Get("WWW-Authenticate") != "" {
		t.Errorf("400: %d, WWW-Authenticate %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
}

// TestRateLimitKeyIgnoresSchemeCase: "bearer K" and "Bearer K" are the same
// client for the per-key limits.
func TestRateLimitKeyIgnoresSchemeCase(t *testing.T) {
	e := newEnv(t, func(c *testConfig) {
		c.opts.KeyLimits = KeyLimits{Rate: 0.001, Burst: 1}
	})
	body := `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"max_tokens":1}`
	if resp, b := e.post(t, "/v1/chat/completions", body, "Authorization", "Bearer k1"); resp.StatusCode != 200 {
		t.Fatalf("first: %d %s", resp.StatusCode, b)
	}
	if resp, _ := e.post(t, "/v1/chat/completions", body, "Authorization", "bearer k1"); resp.StatusCode != 429 {
		t.Fatalf("same key, lowercase scheme: %d, want 429 (one bucket per key)", resp.StatusCode)
	}
}
