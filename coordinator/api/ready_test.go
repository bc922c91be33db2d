package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gptoss/server/coordinator/mock"
	"github.com/gptoss/server/coordinator/sched"
	"github.com/gptoss/server/coordinator/tokenizer"
	"github.com/gptoss/server/shared/step"
)

// switchable is the mock engine with a readiness switch, as the workers'
// client is not ready while workers are lost or restarting.
type switchable struct {
	*mock.Executor
	ready atomic.Bool
}

func (s *switchable) Ready() bool { return s.ready.Load() }

// While the workers are not ready, /ready says 503 and /health says
// "degraded" (it said ok and 200 with a frozen worker); both recover with
// the workers.
func TestReadinessFollowsTheEngine(t *testing.T) {
	eng := &switchable{Executor: mock.New(tokenizer.Default(), "gpt-oss-20b", mock.Timing{Step: time.Millisecond})}
	eng.ready.Store(true)
	e := newEnv(t, func(c *testConfig) { c.engine = eng })
	check := func(wantReady int, wantStatus string) {
		t.Helper()
		resp, _ := e.get(t, "/ready")
		if resp.StatusCode != wantReady {
			t.Fatalf("/ready: %d, want %d", resp.StatusCode, wantReady)
		}
		_, body := e.get(t, "/health")
		var h map[string]any
		if err := json.Unmarshal(body, &h); err != nil {
			t.Fatal(err)
		}
		if h["status"] != wantStatus || h["engine_ready"] != (wantReady == 200) {
			t.Fatalf("/health: status %v, engine_ready %v", h["status"], h["engine_ready"])
		}
	}
	check(200, "ok")
	eng.ready.Store(false)
	check(503, "degraded")
	eng.ready.Store(true)
	check(200, "ok")
}

// rejecting is an executor that refuses every sequence alone, as a worker
// refuses sampling parameters it cannot honour.
type rejecting struct{}

func (rejecting) Step(_ context.Context, b *step.Batch) error {
	for i := range b.Seqs {
		b.Seqs[i].Err = fmt.Errorf("%w: sequence %d: sample: TopK -7 out of range", step.ErrRejected, b.Seqs[i].ID)
	}
	return nil
}
func (rejecting) Release([]uint64)                {}
func (rejecting) Capabilities() step.Capabilities { return step.Capabilities{} }

// A sequence the workers reject is the client's error (400 naming the
// engine's reason), not a 500.
func TestRejectedSequenceIs400(t *testing.T) {
	e := newEnv(t, func(c *testConfig) { c.engine = rejecting{} })
	resp, body := e.post(t, "/v1/completions", `{"model":"gpt-oss-20b","prompt":"hi","max_tokens":3}`)
	if resp.StatusCode != 400 || !strings.Contains(string(body), "TopK -7 out of range") {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
}

// A request refused after its steps kept running past their deadline gets
// a retryable 503, never a 500.
func TestEngineTimeoutIs503(t *testing.T) {
	err := fmt.Errorf("%w: remote: step 9: %w", sched.ErrEngineTimeout, step.ErrTimeout)
	ae := finalError(&sched.Final{Reason: sched.FinishError, Err: err}, false)
	if ae == nil || ae.Status != 503 || ae.NoRetry || ae.RetryAfter == 0 || !errors.Is(ae, sched.ErrEngineTimeout) {
		t.Fatalf("%+v", ae)
	}
}

// fakeStartup is a start-up stuck in a phase.
type fakeStartup struct{ phase atomic.Value }

func (f *fakeStartup) Phase() string { return f.phase.Load().(string) }
func (f *fakeStartup) Pending() string {
	switch f.Phase() {
	case "ready":
		return ""
	case "failed":
		return "The model failed to start: disk full"
	}
	return "The model is downloading: 42%"
}
func (f *fakeStartup) RetryAfter() int { return 7 }
func (f *fakeStartup) Status() any     { return map[string]any{"phase": f.Phase(), "bytes_done": 42} }

// While the model downloads or loads, generation gets 503 with Retry-After
// and the phase's message, /ready 503, /health 200 with the phase and the
// progress; once ready everything serves. The mock marks its responses.
func TestStartupGatesGeneration(t *testing.T) {
	st := &fakeStartup{}
	st.phase.Store("downloading")
	e := newEnv(t, func(c *testConfig) { c.opts.Startup = st })
	chat := `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"hi"}],"max_tokens":3}`
	for _, path := range []string{"/v1/chat/completions", "/v1/completions"} {
		body := chat
		if path == "/v1/completions" {
			body = `{"model":"gpt-oss-20b","prompt":"hi","max_tokens":3}`
		}
		resp, b := e.post(t, path, body)
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "7" || !strings.Contains(string(b), `"code":"model_loading"`) ||
			!strings.Contains(string(b), "42%") {
			t.Fatalf("%s while downloading: %d %s %s", path, resp.StatusCode, resp.Header.Get("Retry-After"), b)
		}
	}
	if resp, _ := e.get(t, "/ready"); resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "7" {
		t.Fatalf("/ready while downloading: %d", resp.StatusCode)
	}
	resp, b := e.get(t, "/health")
	var h map[string]any
	if err := json.Unmarshal(b, &h); err != nil || resp.StatusCode != 200 || h["status"] != "starting" || h["phase"] != "downloading" {
		t.Fatalf("/health while downloading: %d %s", resp.StatusCode, b)
	}
	if p, ok := h["startup"].(map[string]any); !ok || p["bytes_done"] != 42.0 {
		t.Fatalf("/health startup: %v", h["startup"])
	}
	if resp, _ := e.get(t, "/v1/models"); resp.StatusCode != 200 {
		t.Fatalf("/v1/models while downloading: %d", resp.StatusCode)
	}

	st.phase.Store("failed")
	resp, b = e.post(t, "/v1/chat/completions", chat)
	if resp.StatusCode != 503 || !strings.Contains(string(b), "model_failed") {
		t.Fatalf("failed: %d %s", resp.StatusCode, b)
	}
	if _, b = e.get(t, "/health"); !strings.Contains(string(b), `"status":"failed"`) {
		t.Fatalf("/health after failure: %s", b)
	}

	st.phase.Store("ready")
	resp, b = e.post(t, "/v1/chat/completions", chat)
	if resp.StatusCode != 200 || resp.Header.Get(MockHeader) != "true" || !strings.Contains(string(b), `"system_fingerprint":"mock_`) {
		t.Fatalf("ready (mock): %d %v %s", resp.StatusCode, resp.Header, b)
	}
	if resp, _ := e.get(t, "/ready"); resp.StatusCode != 200 {
		t.Fatalf("/ready once ready: %d", resp.StatusCode)
	}
}

// A real engine's responses carry no mock mark.
func TestRealResponsesUnmarked(t *testing.T) {
	e := newEnv(t, func(c *testConfig) { c.opts.Mode = "real" })
	resp, b := e.post(t, "/v1/chat/completions", `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"hi"}],"max_tokens":3}`)
	if resp.StatusCode != 200 || resp.Header.Get(MockHeader) != "" || !strings.Contains(string(b), `"system_fingerprint":"fp_`) {
		t.Fatalf("%d %v %s", resp.StatusCode, resp.Header, b)
	}
}
