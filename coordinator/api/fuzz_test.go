package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gptoss/server/coordinator/profiles"
)

// FuzzRequests sends arbitrary bodies to both generation endpoints: the
// answer is never a 5xx, errors always have OpenAI's shape, and successes
// are valid JSON.
func FuzzRequests(f *testing.F) {
	for _, s := range []string{
		hello,
		`{"model":"gpt-oss-20b","messages":[{"role":"user","content":[{"type":"text","text":"x"}]}],"stop":["a"],"n":2,"max_tokens":2}`,
		`{"model":"gpt-oss-20b","prompt":[1,2,3],"max_tokens":2}`,
		`{"model":"gpt-oss-20b","prompt":"x","max_tokens":2,"stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"gpt-oss-20b","messages":[{"role":"tool","tool_call_id":"a","content":"x"}]}`,
		`{"model":"gpt-oss-20b","messages":"hi"}`, `null`, `[]`, `{}`, `{"model":1e400}`,
	} {
		f.Add(s)
	}
	e := newEnv(f, func(c *testConfig) {
		c.profile = func(s profiles.Set) {
			for _, p := range s {
				p.Generation.MaxTokens, p.Generation.MaxTokensCap = 4, 8
			}
		}
	})
	h := e.srv.Handler()
	f.Fuzz(func(t *testing.T, body string) {
		for _, path := range []string{"/v1/chat/completions", "/v1/completions"} {
			req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code >= 500 {
				t.Fatalf("%s %q: status %d %s", path, body, rec.Code, rec.Body)
			}
			if rec.Code >= 400 {
				errorOf(t, rec.Body.Bytes())
				continue
			}
			if strings.HasPrefix(rec.Header().Get("Content-Type"), "text/event-stream") {
				continue
			}
			if !json.Valid(rec.Body.Bytes()) {
				t.Fatalf("invalid JSON response %q", rec.Body)
			}
		}
	})
}
