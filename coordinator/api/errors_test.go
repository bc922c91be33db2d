package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/gptoss/server/coordinator/sched"
)

func TestErrorUnwrapsToCause(t *testing.T) {
	cause := fmt.Errorf("%w: profile latency_first has 1 requests waiting", sched.ErrQueueFull)
	ae := submitError(cause)
	if ae.Status != http.StatusServiceUnavailable || ae.Code != "server_overloaded" {
		t.Fatalf("queue full mapped to %d %s", ae.Status, ae.Code)
	}
	if !errors.Is(ae, sched.ErrQueueFull) || !errors.Is(errors.Unwrap(ae), cause) {
		t.Fatalf("%v does not unwrap to its cause", ae)
	}
	// Through further wrapping, as a Go caller up the stack sees it.
	var err error = fmt.Errorf("chat: %w", ae)
	var got *Error
	if !errors.Is(err, sched.ErrQueueFull) || !errors.As(err, &got) || got != ae {
		t.Fatalf("errors.Is/As through %v", err)
	}
	if !strings.Contains(ae.Error(), sched.ErrQueueFull.Error()) {
		t.Fatalf("Error() %q lacks the cause", ae.Error())
	}
	// The client sees the OpenAI object alone, not the cause.
	b, _ := json.Marshal(ae.body())
	if strings.Contains(string(b), "queue full") || strings.Contains(string(b), "latency_first") {
		t.Fatalf("cause leaked into the body: %s", b)
	}

	for _, tc := range []struct {
		err    error
		status int
	}{
		{sched.ErrQueueTimeout, 503},
		{sched.ErrAborted, 503},
		{sched.ErrEngineUnavailable, 503},
		{sched.ErrEngineFailed, 500},
		{sched.ErrDeadline, 504},
	} {
		wrapped := fmt.Errorf("seq 7: %w", tc.err)
		ae := finalError(&sched.Final{Reason: sched.FinishError, Err: wrapped}, false)
		if ae.Status != tc.status || !errors.Is(ae, tc.err) {
			t.Errorf("%v: got %d, errors.Is %v", tc.err, ae.Status, errors.Is(ae, tc.err))
		}
	}
	if ae := submitError(sched.ErrDraining); !errors.Is(ae, sched.ErrDraining) || ae.Code != "shutting_down" {
		t.Fatalf("draining: %v", ae)
	}
}

// refusingEngine is the scheduler with admission failing with err.
type refusingEngine struct {
	*sched.Scheduler
	err error
}

func (f refusingEngine) Submit(context.Context, *sched.Request) (*sched.Stream, error) {
	return nil, f.err
}

// observed is a server whose log lines and handler-chain errors a test can
// read. Requests are served synchronously (serve), so nothing races.
type observed struct {
	srv  *Server
	logs *observer.ObservedLogs
	errs []error // what the handler chain passed to the error handler
}

func newObserved(t *testing.T, mods ...func(*Options)) *observed {
	t.Helper()
	e := newEnv(t)
	core, logs := observer.New(zapcore.DebugLevel)
	opts := e.srv.opts
	opts.Logger = zap.New(core)
	for _, m := range mods {
		m(&opts)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	o := &observed{srv: srv, logs: logs}
	h := srv.echo.HTTPErrorHandler
	srv.echo.HTTPErrorHandler = func(err error, c echo.Context) {
		o.errs = append(o.errs, err)
		h(err, c)
	}
	return o
}

func (o *observed) serve(method, path, body string, hdr ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	o.srv.Handler().ServeHTTP(rec, req)
	return rec
}

// lastError is the *Error the handler chain produced for the last request.
func (o *observed) lastError(t *testing.T) *Error {
	t.Helper()
	if len(o.errs) == 0 {
		t.Fatal("no error reached the error handler")
	}
	var ae *Error
	if !errors.As(o.errs[len(o.errs)-1], &ae) {
		t.Fatalf("%T %v is not an *Error", o.errs[len(o.errs)-1], o.errs[len(o.errs)-1])
	}
	return ae
}

// requestLine is the log line of the request with the given id.
func (o *observed) requestLine(t *testing.T, id string) map[string]any {
	t.Helper()
	for _, l := range o.logs.FilterMessage("request").All() {
		if f := l.ContextMap(); f["request_id"] == id {
			return f
		}
	}
	t.Fatalf("no request log line with request_id %q", id)
	return nil
}

func TestQueueFullErrorCarriesCauseAndRequestID(t *testing.T) {
	o := newObserved(t, func(opts *Options) {
		opts.Engine = refusingEngine{opts.Engine.(*sched.Scheduler),
			fmt.Errorf("%w: profile latency_first has 1 requests waiting", sched.ErrQueueFull)}
	})
	rec := o.serve(http.MethodPost, "/v1/chat/completions", hello, "X-Request-Id", "req-queue-full-1")
	if rec.Code != 503 || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	// The body is exactly OpenAI's shape, without the cause.
	var body map[string]map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || len(body) != 1 || len(body["error"]) != 4 {
		t.Fatalf("body %s", rec.Body)
	}
	if eo := errorOf(t, rec.Body.Bytes()); eo["code"] != "server_overloaded" || strings.Contains(rec.Body.String(), "queue full") {
		t.Fatalf("body %s", rec.Body)
	}
	ae := o.lastError(t)
	if !errors.Is(ae, sched.ErrQueueFull) || ae.RequestID != "req-queue-full-1" || ae.Status != 503 {
		t.Fatalf("error %v, request id %q", ae, ae.RequestID)
	}
	line := o.requestLine(t, "req-queue-full-1")
	if msg, _ := line["error"].(string); !strings.Contains(msg, sched.ErrQueueFull.Error()) {
		t.Fatalf("log line error %q lacks the cause: %v", line["error"], line)
	}
	if line["error_code"] != "server_overloaded" {
		t.Fatalf("log line %v", line)
	}
}

func TestHandlerErrorsCarryRequestID(t *testing.T) {
	o := newObserved(t, func(opts *Options) { opts.APIKeys = []string{"sk-a"} })
	auth := []string{"Authorization", "Bearer sk-a"}
	for _, tc := range []struct {
		name, method, path, body string
		hdr                      []string
		status                   int
		cause                    bool // the error has a cause worth logging
	}{
		{"validation", http.MethodPost, "/v1/chat/completions", `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"temperature":5}`, auth, 400, false},
		{"json syntax", http.MethodPost, "/v1/completions", `{"model":`, auth, 400, true},
		{"json type", http.MethodPost, "/v1/completions", `{"model":"gpt-oss-20b","prompt":"x","top_p":"high"}`, auth, 400, true},
		{"unknown profile", http.MethodPost, "/v1/chat/completions", `{"model":"gpt-oss-20b","profile":"nope","messages":[{"role":"user","content":"Hi"}]}`, auth, 400, true},
		{"auth middleware", http.MethodPost, "/v1/chat/completions", hello, nil, 401, false},
		{"unknown route", http.MethodGet, "/v1/nothing", "", auth, 404, true},
		{"model route", http.MethodGet, "/v1/models/gpt-4", "", auth, 404, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, sent := range []string{"req-" + strings.ReplaceAll(tc.name, " ", "-"), ""} {
				hdr := tc.hdr
				if sent != "" {
					hdr = append(append([]string(nil), hdr...), "X-Request-Id", sent)
				}
				rec := o.serve(tc.method, tc.path, tc.body, hdr...)
				if rec.Code != tc.status {
					t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
				}
				id := rec.Header().Get("X-Request-Id")
				if id == "" || (sent != "" && id != sent) {
					t.Fatalf("response request id %q, sent %q", id, sent)
				}
				ae := o.lastError(t)
				if ae.RequestID != id || ae.Status != tc.status {
					t.Fatalf("error %v has request id %q, want %q", ae, ae.RequestID, id)
				}
				if tc.cause != (ae.Cause != nil) {
					t.Fatalf("cause %v, want one: %v", ae.Cause, tc.cause)
				}
				line := o.requestLine(t, id)
				if msg, _ := line["error"].(string); msg != ae.Error() {
					t.Fatalf("log line error %q, want %q", line["error"], ae.Error())
				}
				errorOf(t, rec.Body.Bytes())
			}
		})
	}
	// A request that succeeds logs no error.
	rec := o.serve(http.MethodPost, "/v1/chat/completions", hello, append(auth, "X-Request-Id", "req-ok")...)
	if rec.Code != 200 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if line := o.requestLine(t, "req-ok"); line["error"] != nil {
		t.Fatalf("error logged for a success: %v", line)
	}
}

func TestPanicErrorCarriesCause(t *testing.T) {
	o := newObserved(t)
	boom := errors.New("boom")
	o.srv.echo.GET("/panic-error", func(echo.Context) error { panic(boom) })
	o.srv.echo.GET("/panic-value", func(echo.Context) error { panic("not an error") })
	rec := o.serve(http.MethodGet, "/panic-error", "", "X-Request-Id", "req-panic")
	if rec.Code != 500 || strings.Contains(rec.Body.String(), "boom") {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if ae := o.lastError(t); !errors.Is(ae, boom) || ae.RequestID != "req-panic" {
		t.Fatalf("panic error %v (request id %q)", ae, ae.RequestID)
	}
	rec = o.serve(http.MethodGet, "/panic-value", "")
	if ae := o.lastError(t); rec.Code != 500 || ae.Cause == nil || !strings.Contains(ae.Cause.Error(), "not an error") {
		t.Fatalf("%d: %v", rec.Code, ae)
	}
}

// Type errors in the embedded parameter structs name the JSON key alone,
// as they did when the fields were declared on the request types.
func TestTypeErrorParamOfSharedFields(t *testing.T) {
	o := newObserved(t)
	for _, path := range []string{"/v1/chat/completions", "/v1/completions"} {
		for _, f := range []string{"temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty", "frequency_penalty", "logit_bias", "n", "stream", "stream_options"} {
			rec := o.serve(http.MethodPost, path, `{"model":"gpt-oss-20b","prompt":"x","messages":[{"role":"user","content":"x"}],"`+f+`":"str"}`)
			eo := errorOf(t, rec.Body.Bytes())
			if rec.Code != 400 || eo["param"] != f || eo["code"] != "invalid_type" || !strings.Contains(eo["message"].(string), "'"+f+"'") {
				t.Errorf("%s %s: %d %s", path, f, rec.Code, rec.Body)
			}
		}
	}
}
