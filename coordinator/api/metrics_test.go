package api

import (
	"strings"
	"testing"
)

// TestRefusedRequestsCountedUnderEndpoint: a request refused before or by
// the handler (validation, auth, body limit) is counted in
// gptoss_requests_total under its endpoint, as one that ran is; only a URL
// that is no endpoint is counted as "unknown".
func TestRefusedRequestsCountedUnderEndpoint(t *testing.T) {
	e := newEnv(t, func(c *testConfig) { c.opts.APIKeys = []string{"sk-a"} })
	auth := []string{"Authorization", "Bearer sk-a"}
	e.post(t, "/v1/chat/completions", `{"model":"gpt-oss-20b","messages":[]}`, auth...)                                          // 400
	e.post(t, "/v1/chat/completions", `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"x"}],"top_k":"a"}`, auth...) // 400 at decoding
	e.post(t, "/v1/chat/completions", `{"model":"gpt-4","messages":[{"role":"user","content":"x"}]}`, auth...)                   // 404
	e.post(t, "/v1/chat/completions", hello)                                                                                     // 401
	e.post(t, "/v1/chat/completions", hello, auth...)                                                                            // 200
	e.post(t, "/v1/completions", `{"model":"gpt-oss-20b","prompt":""}`, auth...)                                                 // 400
	e.post(t, "/v1/completions", `{"model":"gpt-oss-20b","prompt":"x"}`)                                                         // 401
	e.post(t, "/v1/embeddings", `{}`, auth...)                                                                                   // 404, no such endpoint
	_, b := e.get(t, "/metrics")
	m := string(b)
	for _, want := range []string{
		`gptoss_requests_total{endpoint="chat",profile="latency_first",status="400"} 2`,
		`gptoss_requests_total{endpoint="chat",profile="latency_first",status="404"} 1`,
		`gptoss_requests_total{endpoint="chat",profile="latency_first",status="401"} 1`,
		`gptoss_requests_total{endpoint="chat",profile="latency_first",status="200"} 1`,
		`gptoss_requests_total{endpoint="completions",profile="latency_first",status="400"} 1`,
		`gptoss_requests_total{endpoint="completions",profile="latency_first",status="401"} 1`,
		`gptoss_requests_total{endpoint="unknown",profile="latency_first",status="404"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, l := range strings.Split(m, "\n") {
		if strings.HasPrefix(l, "gptoss_requests_total{") && strings.Contains(l, `endpoint="unknown"`) && !strings.Contains(l, `status="404"`) {
			t.Errorf("counted under unknown: %s", l)
		}
	}
}
