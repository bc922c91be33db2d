package api

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gptoss/server/coordinator/mock"
)

func TestRateLimitPerKey(t *testing.T) {
	e := newEnv(t, func(c *testConfig) { c.opts.KeyLimits = KeyLimits{Rate: 0.5, Burst: 2} })
	small := `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"max_tokens":1}`
	for i := range 2 {
		if resp, b := e.post(t, "/v1/chat/completions", small, "Authorization", "Bearer alice"); resp.StatusCode != 200 {
			t.Fatalf("request %d within the burst: %d %s", i, resp.StatusCode, b)
		}
	}
	resp, b := e.post(t, "/v1/chat/completions", small, "Authorization", "Bearer alice")
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" || errorOf(t, b)["code"] != "rate_limit_exceeded" {
		t.Fatalf("over the rate: %d %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), b)
	}
	// Another key has its own budget; refusals cost nothing.
	if resp, _ := e.post(t, "/v1/chat/completions", small, "Authorization", "Bearer bob"); resp.StatusCode != 200 {
		t.Fatalf("bob: %d", resp.StatusCode)
	}
	if resp, _ := e.get(t, "/v1/models"); resp.StatusCode != 200 {
		t.Fatal("models are not rate limited")
	}
}

func TestConcurrencyLimitPerKey(t *testing.T) {
	e := newEnv(t, func(c *testConfig) {
		c.opts.KeyLimits = KeyLimits{Concurrency: 1}
		c.timing = mock.Timing{Step: 2 * time.Millisecond}
	})
	e.exec.SetMinReply(1 << 30)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	long := `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"max_tokens":4000,"stream":true}`
	req, _ := http.NewRequestWithContext(ctx, "POST", e.url+"/v1/chat/completions", strings.NewReader(long))
	req.Header.Set("Authorization", "Bearer carol")
	go func() {
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	waitFor(t, func() bool { return e.sched.Load()["latency_first"].Active == 1 })
	resp, b := e.post(t, "/v1/chat/completions", long, "Authorization", "Bearer carol")
	if resp.StatusCode != 429 || errorOf(t, b)["code"] != "too_many_concurrent_requests" {
		t.Fatalf("second concurrent request: %d %s", resp.StatusCode, b)
	}
	cancel()
	waitFor(t, func() bool { return e.sched.Idle() })
	// The slot is free again.
	if resp, _ := e.post(t, "/v1/chat/completions", `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"max_tokens":2}`,
		"Authorization", "Bearer carol"); resp.StatusCode != 200 {
		t.Fatalf("after the first ended: %d", resp.StatusCode)
	}
}

func TestLimiterTableBounded(t *testing.T) {
	l := newLimiter(KeyLimits{Rate: 1, Burst: 1})
	now := time.Now()
	for i := range maxTrackedClients + 100 {
		id := [32]byte{byte(i), byte(i >> 8), byte(i >> 16)}
		release, refusal := l.acquire(id, now.Add(time.Duration(i)*time.Second))
		if refusal != nil {
			t.Fatal(refusal)
		}
		release()
	}
	if n := len(l.clients); n > maxTrackedClients {
		t.Fatalf("%d clients tracked", n)
	}
}
