package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/gptoss/server/coordinator/mock"
	"github.com/gptoss/server/coordinator/profiles"
	"github.com/gptoss/server/coordinator/sched"
	"github.com/gptoss/server/coordinator/stats"
	"github.com/gptoss/server/coordinator/tokenizer"
	"github.com/gptoss/server/shared/model"
	"github.com/gptoss/server/shared/step"
	"github.com/gptoss/server/shared/testkit"
)

type testEnv struct {
	url   string
	srv   *Server
	sched *sched.Scheduler
	exec  *mock.Executor
	stats *stats.Recorder
	reg   *prometheus.Registry
}

type testConfig struct {
	opts    Options
	timing  mock.Timing
	profile func(profiles.Set)
	engine  step.Executor // instead of the mock engine
}

func newEnv(t testing.TB, mods ...func(*testConfig)) *testEnv {
	t.Helper()
	profs, err := profiles.Default()
	if err != nil {
		t.Fatal(err)
	}
	cfg := &testConfig{timing: mock.Timing{Step: 200 * time.Microsecond}}
	cfg.opts = Options{
		Model: model.Presets["20b"], Mode: "mock", ModeReason: "test", Profiles: profs,
		DefaultProfile: "latency_first", EnableStreaming: true, MaxBodyBytes: 1 << 20,
		SSEWriteTimeout: 5 * time.Second, Version: "test",
	}
	for _, m := range mods {
		m(cfg)
	}
	if cfg.profile != nil {
		cfg.profile(profs)
	}
	tok := tokenizer.Default()
	exec := mock.New(tok, cfg.opts.Model.ID, cfg.timing)
	reg := prometheus.NewRegistry()
	rec, err := stats.New(profs.Names(), reg)
	if err != nil {
		t.Fatal(err)
	}
	var engine step.Executor = exec
	if cfg.engine != nil {
		engine = cfg.engine
	}
	sch := sched.New(engine, profs, sched.Options{OnStep: rec.ObserveStep})
	cfg.opts.Tokenizer, cfg.opts.Engine, cfg.opts.Stats, cfg.opts.Gatherer = tok, sch, rec, reg
	if tt, ok := t.(*testing.T); ok {
		cfg.opts.Logger = zaptest.NewLogger(tt)
	}
	srv, err := New(cfg.opts)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		hs.Close()
		sch.Close()
	})
	return &testEnv{url: hs.URL, srv: srv, sched: sch, exec: exec, stats: rec, reg: reg}
}

func (e *testEnv) post(t testing.TB, path, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.url+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func (e *testEnv) get(t testing.TB, path string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(e.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// errorOf checks the OpenAI error shape (all four keys present) and
// returns the error object.
func errorOf(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var body map[string]map[string]any
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("error body is not JSON: %q", b)
	}
	e, ok := body["error"]
	if !ok {
		t.Fatalf("no error object in %s", b)
	}
	for _, k := range []string{"message", "type", "param", "code"} {
		if _, ok := e[k]; !ok {
			t.Fatalf("error object lacks %q: %s", k, b)
		}
	}
	if e["message"] == "" {
		t.Fatalf("empty message: %s", b)
	}
	return e
}

const hello = `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hello"}],"max_tokens":20}`

func TestChatNonStreaming(t *testing.T) {
	e := newEnv(t)
	resp, b := e.post(t, "/v1/chat/completions", hello)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	var r ChatCompletion
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.Object != "chat.completion" || r.Model != "gpt-oss-20b" || len(r.Choices) != 1 {
		t.Fatalf("response %s", b)
	}
	c := r.Choices[0]
	if c.FinishReason != "length" || c.Message.Content == nil || *c.Message.Content == "" || c.Message.ReasoningContent == nil {
		t.Fatalf("choice %s", b)
	}
	if strings.Contains(*c.Message.Content, "<|") || strings.Contains(*c.Message.ReasoningContent, "<|") {
		t.Fatalf("Harmony markup leaked: %s", b)
	}
	if r.Usage.CompletionTokens != 20 || r.Usage.TotalTokens != r.Usage.PromptTokens+20 {
		t.Fatalf("usage %+v", r.Usage)
	}
	if resp.Header.Get("X-Request-Id") == "" {
		t.Fatal("no request id")
	}
}

func TestGreedyIsDeterministicAndSeedMatters(t *testing.T) {
	e := newEnv(t)
	body := func(extra string) string {
		return `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Tell me"}],"max_tokens":200` + extra + `}`
	}
	text := func(extra string) string {
		_, b := e.post(t, "/v1/chat/completions", body(extra))
		var r ChatCompletion
		if err := json.Unmarshal(b, &r); err != nil || len(r.Choices) == 0 {
			t.Fatalf("bad response %s", b)
		}
		return *r.Choices[0].Message.Content
	}
	if a, b := text(`,"temperature":0`), text(`,"temperature":0`); a != b {
		t.Fatal("greedy output differs between runs")
	}
	if a, b := text(`,"temperature":1,"seed":7`), text(`,"temperature":1,"seed":7`); a != b {
		t.Fatal("seeded output differs between runs")
	}
	if a, b := text(`,"temperature":1,"seed":7`), text(`,"temperature":1,"seed":8`); a == b {
		t.Fatal("different seeds gave the same text")
	}
}

// sseEvents reads a streamed response into its data payloads.
func sseEvents(t testing.TB, r io.Reader) []string {
	t.Helper()
	var events []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var cur []string
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if len(cur) > 0 {
				events = append(events, strings.Join(cur, "\n"))
				cur = nil
			}
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("unexpected SSE line %q", line)
		}
		cur = append(cur, data)
	}
	if len(cur) > 0 {
		t.Fatalf("unterminated event %q", cur)
	}
	return events
}

func TestChatStreamingFraming(t *testing.T) {
	e := newEnv(t)
	for _, usage := range []bool{false, true} {
		t.Run(fmt.Sprint("usage=", usage), func(t *testing.T) {
			body := `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Count"}],"max_tokens":30,"stream":true,"temperature":0`
			if usage {
				body += `,"stream_options":{"include_usage":true}`
			}
			req, _ := http.NewRequest("POST", e.url+"/v1/chat/completions", strings.NewReader(body+"}"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
				t.Fatalf("content type %q", ct)
			}
			ev := sseEvents(t, resp.Body)
			if ev[len(ev)-1] != "[DONE]" {
				t.Fatalf("last event %q", ev[len(ev)-1])
			}
			var chunks []map[string]any
			for _, d := range ev[:len(ev)-1] {
				var m map[string]any
				if err := json.Unmarshal([]byte(d), &m); err != nil {
					t.Fatalf("chunk %q: %v", d, err)
				}
				if m["object"] != "chat.completion.chunk" {
					t.Fatalf("object %v", m["object"])
				}
				u, has := m["usage"]
				if has != usage {
					t.Fatalf("usage key present=%v in %s", has, d)
				}
				_ = u
				chunks = append(chunks, m)
			}
			first := chunks[0]["choices"].([]any)[0].(map[string]any)
			if first["delta"].(map[string]any)["role"] != "assistant" {
				t.Fatalf("first chunk %v", chunks[0])
			}
			finishIdx := len(chunks) - 1
			if usage {
				last := chunks[len(chunks)-1]
				if len(last["choices"].([]any)) != 0 || last["usage"] == nil {
					t.Fatalf("usage chunk %v", last)
				}
				if last["usage"].(map[string]any)["completion_tokens"].(float64) != 30 {
					t.Fatalf("usage %v", last["usage"])
				}
				for _, c := range chunks[:len(chunks)-1] {
					if c["usage"] != nil {
						t.Fatalf("non-final chunk carries usage: %v", c)
					}
				}
				finishIdx--
			}
			fin := chunks[finishIdx]["choices"].([]any)[0].(map[string]any)
			if fin["finish_reason"] != "length" {
				t.Fatalf("finish chunk %v", fin)
			}
			for _, c := range chunks[:finishIdx] {
				if fr := c["choices"].([]any)[0].(map[string]any)["finish_reason"]; fr != nil {
					t.Fatalf("early finish_reason %v", fr)
				}
			}
		})
	}
}

func TestErrors(t *testing.T) {
	e := newEnv(t, func(c *testConfig) { c.opts.Model = model.Presets["tiny"] })
	long := strings.Repeat("word ", 5000)
	msg := func(extra string) string {
		return `{"model":"gpt-oss-tiny","messages":[{"role":"user","content":"Hi"}]` + extra + `}`
	}
	cases := []struct {
		name, path, body string
		status           int
		param, code      string
	}{
		{"invalid json", "/v1/chat/completions", `{"model":`, 400, "", ""},
		{"empty body", "/v1/chat/completions", ``, 400, "", ""},
		{"not an object", "/v1/chat/completions", `[1,2]`, 400, "body", "invalid_type"},
		{"trailing garbage", "/v1/chat/completions", msg("") + "x", 400, "", ""},
		{"missing model", "/v1/chat/completions", `{"messages":[{"role":"user","content":"Hi"}]}`, 400, "model", "missing_required_parameter"},
		{"unknown model", "/v1/chat/completions", `{"model":"gpt-4","messages":[{"role":"user","content":"Hi"}]}`, 404, "model", "model_not_found"},
		{"empty messages", "/v1/chat/completions", `{"model":"gpt-oss-tiny","messages":[]}`, 400, "messages", "empty_array"},
		{"missing messages", "/v1/chat/completions", `{"model":"gpt-oss-tiny"}`, 400, "messages", "empty_array"},
		{"null content", "/v1/chat/completions", `{"model":"gpt-oss-tiny","messages":[{"role":"user","content":null}]}`, 400, "messages[0].content", "missing_required_parameter"},
		{"no content", "/v1/chat/completions", `{"model":"gpt-oss-tiny","messages":[{"role":"user"}]}`, 400, "messages[0].content", "missing_required_parameter"},
		{"bad role", "/v1/chat/completions", `{"model":"gpt-oss-tiny","messages":[{"role":"wizard","content":"x"}]}`, 400, "messages[0].role", "invalid_value"},
		{"empty assistant", "/v1/chat/completions", `{"model":"gpt-oss-tiny","messages":[{"role":"user","content":"x"},{"role":"assistant"}]}`, 400, "messages[1].content", "missing_required_parameter"},
		{"orphan tool", "/v1/chat/completions", `{"model":"gpt-oss-tiny","messages":[{"role":"tool","content":"x","tool_call_id":"c1"}]}`, 400, "messages[0].tool_call_id", "invalid_value"},
		{"image", "/v1/chat/completions", `{"model":"gpt-oss-tiny","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"http://x"}}]}]}`, 400, "messages[0].content[0].type", "unsupported_parameter"},
		{"content wrong type", "/v1/chat/completions", `{"model":"gpt-oss-tiny","messages":[{"role":"user","content":5}]}`, 400, "messages[0].content", "invalid_type"},
		{"temperature type", "/v1/chat/completions", msg(`,"temperature":"hot"`), 400, "temperature", "invalid_type"},
		{"temperature range", "/v1/chat/completions", msg(`,"temperature":2.5`), 400, "temperature", "invalid_value"},
		{"top_p range", "/v1/chat/completions", msg(`,"top_p":1.5`), 400, "top_p", "invalid_value"},
		{"n zero", "/v1/chat/completions", msg(`,"n":0`), 400, "n", "invalid_value"},
		{"n too big", "/v1/chat/completions", msg(`,"n":1000000`), 400, "n", "invalid_value"},
		{"presence", "/v1/chat/completions", msg(`,"presence_penalty":3`), 400, "presence_penalty", "invalid_value"},
		{"frequency", "/v1/chat/completions", msg(`,"frequency_penalty":-2.5`), 400, "frequency_penalty", "invalid_value"},
		{"max_tokens zero", "/v1/chat/completions", msg(`,"max_tokens":0`), 400, "max_tokens", "invalid_value"},
		{"max_tokens over cap", "/v1/chat/completions", msg(`,"max_tokens":10000`), 400, "max_tokens", "invalid_value"},
		{"max_completion_tokens over cap", "/v1/chat/completions", msg(`,"max_completion_tokens":10000`), 400, "max_completion_tokens", "invalid_value"},
		{"prompt plus budget over context", "/v1/chat/completions", `{"model":"gpt-oss-tiny","profile":"quality_first","max_tokens":4000,"messages":[{"role":"user","content":"` + strings.Repeat("word ", 200) + `"}]}`, 400, "messages", "context_length_exceeded"},
		{"prompt over context", "/v1/chat/completions", `{"model":"gpt-oss-tiny","messages":[{"role":"user","content":"` + long + `"}]}`, 400, "messages", "context_length_exceeded"},
		{"unknown profile", "/v1/chat/completions", msg(`,"profile":"fastest"`), 400, "profile", "invalid_value"},
		{"too many stops", "/v1/chat/completions", msg(`,"stop":["a","b","c","d","e"]`), 400, "stop", "invalid_value"},
		{"stop type", "/v1/chat/completions", msg(`,"stop":5`), 400, "stop", "invalid_type"},
		{"logprobs mock", "/v1/chat/completions", msg(`,"logprobs":true`), 400, "logprobs", "unsupported_parameter"},
		{"top_logprobs range", "/v1/chat/completions", msg(`,"top_logprobs":50`), 400, "top_logprobs", "invalid_value"},
		{"stream_options without stream", "/v1/chat/completions", msg(`,"stream_options":{"include_usage":true}`), 400, "stream_options", "invalid_value"},
		{"tool_choice object without function", "/v1/chat/completions", msg(`,"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function"}`), 400, "tool_choice", "invalid_value"},
		{"tool_choice names no tool", "/v1/chat/completions", msg(`,"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"g"}}`), 400, "tool_choice.function.name", "invalid_value"},
		{"bad function name", "/v1/chat/completions", msg(`,"tools":[{"type":"function","function":{"name":"get weather"}}]`), 400, "tools[0].function.name", "invalid_value"},
		{"duplicate function", "/v1/chat/completions", msg(`,"tools":[{"type":"function","function":{"name":"f"}},{"type":"function","function":{"name":"f"}}]`), 400, "tools[1].function.name", "invalid_value"},
		{"parameters not object", "/v1/chat/completions", msg(`,"tools":[{"type":"function","function":{"name":"f","parameters":[1]}}]`), 400, "tools[0].function.parameters", "invalid_value"},
		{"reasoning_field", "/v1/chat/completions", msg(`,"reasoning_field":"thoughts"`), 400, "reasoning_field", "invalid_value"},
		{"bad tool", "/v1/chat/completions", msg(`,"tools":[{"type":"function"}]`), 400, "tools[0]", "invalid_value"},
		{"tool_choice without tools", "/v1/chat/completions", msg(`,"tool_choice":"required"`), 400, "tool_choice", "invalid_value"},
		{"json_schema without schema", "/v1/chat/completions", msg(`,"response_format":{"type":"json_schema"}`), 400, "response_format.json_schema.schema", "missing_required_parameter"},
		{"json_schema without name", "/v1/chat/completions", msg(`,"response_format":{"type":"json_schema","json_schema":{"schema":{}}}`), 400, "response_format.json_schema.name", "missing_required_parameter"},
		{"json_schema not enforceable", "/v1/chat/completions", msg(`,"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object","if":{},"then":{}}}}`), 400, "response_format", "invalid_value"},
		{"two constraints", "/v1/chat/completions", msg(`,"response_format":{"type":"json_object"},"guided_regex":"a"`), 400, "guided_regex", "invalid_value"},
		{"negative reasoning budget", "/v1/chat/completions", msg(`,"max_reasoning_tokens":-1`), 400, "max_reasoning_tokens", ""},
		{"effort", "/v1/chat/completions", msg(`,"reasoning_effort":"extreme"`), 400, "reasoning_effort", "invalid_value"},
		{"logit_bias", "/v1/chat/completions", msg(`,"logit_bias":{"1":5}`), 400, "logit_bias", "unsupported_parameter"},
		{"too many messages", "/v1/chat/completions", `{"model":"gpt-oss-tiny","messages":[` + strings.Repeat(`{"role":"user","content":"x"},`, 4096) + `{"role":"user","content":"x"}]}`, 400, "messages", "invalid_value"},
		{"completion no prompt", "/v1/completions", `{"model":"gpt-oss-tiny"}`, 400, "prompt", "missing_required_parameter"},
		{"completion bad token", "/v1/completions", `{"model":"gpt-oss-tiny","prompt":[1,999999]}`, 400, "prompt", "invalid_value"},
		{"completion negative token", "/v1/completions", `{"model":"gpt-oss-tiny","prompt":[-1]}`, 400, "prompt", "invalid_value"},
		{"completion empty", "/v1/completions", `{"model":"gpt-oss-tiny","prompt":""}`, 400, "prompt", "invalid_value"},
		{"completion too many prompts", "/v1/completions", `{"model":"gpt-oss-tiny","prompt":[` + strings.TrimSuffix(strings.Repeat(`"a",`, 17), ",") + `]}`, 400, "prompt", "invalid_value"},
		{"completion empty prompt in a list", "/v1/completions", `{"model":"gpt-oss-tiny","prompt":["a",""]}`, 400, "prompt", "invalid_value"},
		{"completion prompt type", "/v1/completions", `{"model":"gpt-oss-tiny","prompt":{"a":1}}`, 400, "prompt", "invalid_type"},
		{"unknown route", "/v1/embeddings", `{}`, 404, "", "unknown_url"},
		{"too many tools", "/v1/chat/completions", msg(`,"tools":[` + strings.TrimSuffix(strings.Repeat(`{"type":"function","function":{"name":"f"}},`, 129), ",") + `]`), 400, "tools", "invalid_value"},
		{"long stop", "/v1/chat/completions", msg(`,"stop":"` + strings.Repeat("s", 300) + `"`), 400, "stop", "invalid_value"},
		{"user too long", "/v1/chat/completions", msg(`,"user":"` + strings.Repeat("u", 600) + `"`), 400, "user", "invalid_value"},
		{"function role without name", "/v1/chat/completions", `{"model":"gpt-oss-tiny","messages":[{"role":"function","content":"x"}]}`, 400, "messages[0].name", "missing_required_parameter"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := e.post(t, tc.path, tc.body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, b)
			}
			eo := errorOf(t, b)
			if tc.param != "" && eo["param"] != tc.param {
				t.Fatalf("param %v, want %q: %s", eo["param"], tc.param, b)
			}
			if tc.code != "" && eo["code"] != tc.code {
				t.Fatalf("code %v, want %q: %s", eo["code"], tc.code, b)
			}
		})
	}
	// The server is unharmed and every refusal was counted.
	if resp, b := e.post(t, "/v1/chat/completions", msg(`,"max_tokens":3`)); resp.StatusCode != 200 {
		t.Fatalf("after errors: %d %s", resp.StatusCode, b)
	}
	snap := e.stats.Snapshot(nil)
	if snap.Total.RequestsClientError < uint64(len(cases)-1) {
		t.Fatalf("client errors counted %d, want >= %d", snap.Total.RequestsClientError, len(cases)-1)
	}
}

func TestMethodNotAllowedAndHead(t *testing.T) {
	e := newEnv(t)
	resp, b := e.get(t, "/v1/chat/completions")
	if resp.StatusCode != 405 || errorOf(t, b)["code"] != "method_not_allowed" {
		t.Fatalf("GET chat: %d %s", resp.StatusCode, b)
	}
	req, _ := http.NewRequest(http.MethodHead, e.url+"/health", nil)
	hr, err := http.DefaultClient.Do(req)
	if err != nil || hr.StatusCode != 200 {
		t.Fatalf("HEAD /health: %v %v", hr, err)
	}
	hr.Body.Close()
}

func TestUnknownFieldsIgnored(t *testing.T) {
	e := newEnv(t)
	resp, b := e.post(t, "/v1/chat/completions", `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi","x_extra":1}],
		"max_tokens":3,"some_future_field":{"a":[1,2]},"user":"u1","parallel_tool_calls":true,"tool_choice":"none",
		"response_format":{"type":"text"},"reasoning_effort":"high","seed":1,"n":1,"top_logprobs":0}`)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
}

func TestAssistantHistoryAndReasoningFields(t *testing.T) {
	e := newEnv(t)
	resp, b := e.post(t, "/v1/chat/completions", `{"model":"openai/gpt-oss-20b","max_tokens":3,"messages":[
		{"role":"developer","content":"Be brief."},
		{"role":"user","content":[{"type":"text","text":"Weather?"}]},
		{"role":"assistant","content":null,"reasoning":"need tool","tool_calls":[{"id":"c1","type":"function","function":{"name":"get_weather","arguments":"{}"}}]},
		{"role":"tool","tool_call_id":"c1","content":"sunny"},
		{"role":"assistant","content":"It is sunny.","reasoning_content":"done"},
		{"role":"user","content":"Thanks"}]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
}

func TestBodyLimit(t *testing.T) {
	e := newEnv(t)
	big := `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"` + strings.Repeat("a", 2<<20) + `"}]}`
	resp, b := e.post(t, "/v1/chat/completions", big)
	if resp.StatusCode != 413 {
		t.Fatalf("status %d: %.200s", resp.StatusCode, b)
	}
	if eo := errorOf(t, b); eo["code"] != "request_too_large" {
		t.Fatalf("%s", b)
	}
}

func TestAPIKeys(t *testing.T) {
	e := newEnv(t, func(c *testConfig) { c.opts.APIKeys = []string{"sk-a", "sk-b"} })
	for _, tc := range []struct {
		hdr    []string
		status int
	}{
		{nil, 401},
		{[]string{"Authorization", "Bearer sk-wrong"}, 401},
		{[]string{"Authorization", "Basic sk-a"}, 401},
		{[]string{"Authorization", "Bearer sk-a"}, 200},
		{[]string{"Authorization", "Bearer sk-b"}, 200},
		{[]string{"X-Api-Key", "sk-b"}, 200},
	} {
		resp, b := e.post(t, "/v1/chat/completions", hello, tc.hdr...)
		if resp.StatusCode != tc.status {
			t.Fatalf("%v: status %d want %d: %s", tc.hdr, resp.StatusCode, tc.status, b)
		}
		if tc.status == 401 {
			if eo := errorOf(t, b); eo["code"] != "invalid_api_key" {
				t.Fatalf("%s", b)
			}
		}
	}
	for _, p := range []string{"/health", "/ready", "/metrics", "/stats"} {
		if resp, _ := e.get(t, p); resp.StatusCode != 200 {
			t.Fatalf("%s: %d without key", p, resp.StatusCode)
		}
	}
	if resp, _ := e.get(t, "/v1/models"); resp.StatusCode != 401 {
		t.Fatalf("/v1/models without key: %d", resp.StatusCode)
	}
}

func TestStreamingDisabled(t *testing.T) {
	e := newEnv(t, func(c *testConfig) { c.opts.EnableStreaming = false })
	resp, b := e.post(t, "/v1/chat/completions", `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"stream":true}`)
	if resp.StatusCode != 400 || errorOf(t, b)["code"] != "streaming_disabled" {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	if resp, _ := e.post(t, "/v1/chat/completions", hello); resp.StatusCode != 200 {
		t.Fatalf("non-stream with streaming disabled: %d", resp.StatusCode)
	}
}

func TestQueueFull503(t *testing.T) {
	e := newEnv(t, func(c *testConfig) {
		c.timing = mock.Timing{Step: 5 * time.Millisecond}
		c.profile = func(s profiles.Set) {
			p := s["latency_first"]
			p.Scheduling.MaxBatch, p.Scheduling.QueueLimit = 1, 1
		}
	})
	e.exec.SetMinReply(1 << 30)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	long := `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"max_tokens":4000,"stream":true}`
	for i := range 2 {
		req, _ := http.NewRequestWithContext(ctx, "POST", e.url+"/v1/chat/completions", strings.NewReader(long))
		go func() {
			if resp, err := http.DefaultClient.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
		// One runs (max_batch 1), the other waits (queue_limit 1).
		waitFor(t, func() bool { l := e.sched.Load()["latency_first"]; return l.Active == 1 && l.Queued == i })
	}
	resp, b := e.post(t, "/v1/chat/completions", long)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d retry-after %q: %s", resp.StatusCode, resp.Header.Get("Retry-After"), b)
	}
	if errorOf(t, b)["code"] != "server_overloaded" {
		t.Fatalf("%s", b)
	}
	// Another profile has its own queue.
	if resp, b := e.post(t, "/v1/chat/completions", `{"model":"gpt-oss-20b","profile":"balanced","messages":[{"role":"user","content":"Hi"}],"max_tokens":2}`); resp.StatusCode != 200 {
		t.Fatalf("balanced: %d %s", resp.StatusCode, b)
	}
	cancel()
	waitFor(t, func() bool { return e.sched.Idle() })
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	testkit.Eventually(t, 5*time.Second, "the condition", cond)
}

func TestClientDisconnectFreesSequence(t *testing.T) {
	e := newEnv(t, func(c *testConfig) { c.timing = mock.Timing{Step: 2 * time.Millisecond} })
	e.exec.SetMinReply(1 << 30)
	for _, stream := range []bool{true, false} {
		ctx, cancel := context.WithCancel(context.Background())
		body := fmt.Sprintf(`{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"max_tokens":4000,"stream":%v}`, stream)
		req, _ := http.NewRequestWithContext(ctx, "POST", e.url+"/v1/chat/completions", strings.NewReader(body))
		done := make(chan struct{})
		go func() {
			defer close(done)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return
			}
			br := bufio.NewReader(resp.Body)
			_, _ = br.ReadString('\n')
			<-ctx.Done()
			resp.Body.Close()
		}()
		waitFor(t, func() bool { return e.sched.Load()["latency_first"].Active == 1 })
		time.Sleep(20 * time.Millisecond)
		cancel()
		<-done
		waitFor(t, func() bool { return e.sched.Idle() })
		waitFor(t, func() bool { return e.stats.Snapshot(nil).Total.CancelledTotal >= 1 })
	}
	if got := e.stats.Snapshot(nil).Total.CancelledTotal; got != 2 {
		t.Fatalf("cancelled %d, want 2", got)
	}
}

func TestStopStringAcrossTokens(t *testing.T) {
	e := newEnv(t)
	_, b := e.post(t, "/v1/completions", `{"model":"gpt-oss-20b","prompt":"abc","max_tokens":60,"temperature":0}`)
	var full Completion
	if err := json.Unmarshal(b, &full); err != nil {
		t.Fatal(err)
	}
	text := full.Choices[0].Text
	stop := text[30:37]
	for _, stream := range []bool{false, true} {
		body := fmt.Sprintf(`{"model":"gpt-oss-20b","prompt":"abc","max_tokens":60,"temperature":0,"stop":%q,"stream":%v}`, stop, stream)
		resp, b := e.post(t, "/v1/completions", body)
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
		var got, finish string
		if stream {
			for _, ev := range sseEvents(t, bytes.NewReader(b)) {
				if ev == "[DONE]" {
					continue
				}
				var c Completion
				if err := json.Unmarshal([]byte(ev), &c); err != nil {
					t.Fatal(err)
				}
				got += c.Choices[0].Text
				if fr := c.Choices[0].FinishReason; fr != nil {
					finish = *fr
				}
			}
		} else {
			var c Completion
			_ = json.Unmarshal(b, &c)
			got, finish = c.Choices[0].Text, *c.Choices[0].FinishReason
		}
		if want := text[:strings.Index(text, stop)]; got != want || finish != "stop" {
			t.Fatalf("stream=%v: got %q (%s), want %q", stream, got, finish, want)
		}
	}
	waitFor(t, func() bool { return e.sched.Idle() && e.exec.Active() == 0 })
}

func TestNChoicesStreaming(t *testing.T) {
	e := newEnv(t)
	_, b := e.post(t, "/v1/chat/completions", `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"max_tokens":5,"n":3,"stream":true}`)
	seen := map[float64]int{}
	for _, ev := range sseEvents(t, bytes.NewReader(b)) {
		if ev == "[DONE]" {
			continue
		}
		var m map[string]any
		_ = json.Unmarshal([]byte(ev), &m)
		ch := m["choices"].([]any)[0].(map[string]any)
		if ch["finish_reason"] != nil {
			seen[ch["index"].(float64)]++
		}
	}
	if len(seen) != 3 {
		t.Fatalf("finished choices %v", seen)
	}
}

func TestModelsHealthStatsMetrics(t *testing.T) {
	e := newEnv(t)
	e.post(t, "/v1/chat/completions", hello)
	e.post(t, "/v1/chat/completions", `{"model":"gpt-oss-20b","messages":[],"max_tokens":1}`)

	_, b := e.get(t, "/v1/models")
	var ml ModelList
	if err := json.Unmarshal(b, &ml); err != nil || len(ml.Data) != 1 || ml.Data[0].ID != "gpt-oss-20b" || ml.Data[0].ContextLength != 131072 || ml.Data[0].OwnedBy == "" {
		t.Fatalf("models %s", b)
	}
	if resp, _ := e.get(t, "/v1/models/gpt-oss-20b"); resp.StatusCode != 200 {
		t.Fatal("model card")
	}
	if resp, _ := e.get(t, "/v1/models/gpt-9"); resp.StatusCode != 404 {
		t.Fatal("unknown model card")
	}

	_, b = e.get(t, "/health")
	var h map[string]any
	_ = json.Unmarshal(b, &h)
	if h["status"] != "ok" || h["mode"] != "mock" || h["model"] != "gpt-oss-20b" || h["uptime_seconds"] == nil {
		t.Fatalf("health %s", b)
	}
	if resp, _ := e.get(t, "/ready"); resp.StatusCode != 200 {
		t.Fatal("ready")
	}

	_, b = e.get(t, "/stats")
	var st struct {
		Stats stats.Snapshot `json:"stats"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("stats %s", b)
	}
	tot := st.Stats.Total
	if tot.RequestsTotal != 2 || tot.RequestsOK != 1 || tot.RequestsClientError != 1 || tot.CompletionTokensTotal != 20 {
		t.Fatalf("stats total %+v", tot)
	}
	if tot.StreamDelay.P50 != 0 {
		t.Fatalf("stream delay without streams: %+v", tot.StreamDelay)
	}
	e.post(t, "/v1/chat/completions", `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"max_tokens":5,"stream":true}`)
	_, b = e.get(t, "/stats")
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("stats %s", b)
	}
	if sd := st.Stats.Total.StreamDelay; sd.P50 <= 0 || sd.P99 < sd.P50 {
		t.Fatalf("stream delay %+v", sd)
	}
	if lf := st.Stats.Profiles["latency_first"]; lf.RequestsTotal != 3 || lf.TTFT.P50 <= 0 || lf.Latency.P95 <= 0 || lf.InterTokenLatency.P50 <= 0 {
		t.Fatalf("latency_first %+v", lf)
	}

	_, b = e.get(t, "/metrics")
	for _, want := range []string{
		"gptoss_time_to_first_token_seconds_bucket", "gptoss_inter_token_latency_seconds_bucket",
		"gptoss_e2e_request_latency_seconds_bucket", `gptoss_requests_total{endpoint="chat",profile="latency_first",status="200"} 2`,
		`gptoss_generation_tokens_total{profile="latency_first"} 25`, "gptoss_stream_delay_seconds_bucket",
		"gptoss_step_duration_seconds_count", "gptoss_step_sequences_bucket",
	} {
		if !strings.Contains(string(b), want) {
			t.Fatalf("metrics lack %q", want)
		}
	}
}

func TestShutdownDrainsThenAborts(t *testing.T) {
	e := newEnv(t, func(c *testConfig) { c.timing = mock.Timing{Step: 2 * time.Millisecond} })
	e.exec.SetMinReply(1 << 30)
	type result struct {
		finish string
		err    error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := http.Post(e.url+"/v1/chat/completions", "application/json",
			strings.NewReader(`{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"max_tokens":4000,"stream":true}`))
		if err != nil {
			res <- result{err: err}
			return
		}
		defer resp.Body.Close()
		var finish string
		for _, ev := range sseEvents(t, resp.Body) {
			if ev == "[DONE]" {
				continue
			}
			var m map[string]any
			_ = json.Unmarshal([]byte(ev), &m)
			if ch := m["choices"].([]any); len(ch) > 0 {
				if fr, ok := ch[0].(map[string]any)["finish_reason"].(string); ok {
					finish = fr
				}
			}
		}
		res <- result{finish: finish}
	}()
	waitFor(t, func() bool { return e.sched.Load()["latency_first"].Active == 1 })
	done := make(chan error, 1)
	go func() { done <- e.srv.Shutdown(context.Background(), 100*time.Millisecond) }()
	waitFor(t, func() bool { return !e.srv.ready.Load() })
	// Draining: new work is refused with 503, readiness is false.
	if resp, b := e.post(t, "/v1/chat/completions", hello); resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("during drain: %d %s", resp.StatusCode, b)
	}
	if resp, _ := e.get(t, "/ready"); resp.StatusCode != 503 {
		t.Fatal("ready during drain")
	}
	r := <-res
	if r.err != nil || r.finish != "abort" {
		t.Fatalf("stream ended with %+v", r)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if e.exec.Active() != 0 {
		t.Fatal("executor still holds sequences")
	}
}

// TestNoLeaks runs a mix of good, bad, streamed and abandoned requests and
// checks that goroutines, executor state and the scheduler return to rest.
func TestNoLeaks(t *testing.T) {
	e := newEnv(t, func(c *testConfig) { c.timing = mock.Timing{Step: 500 * time.Microsecond} })
	tr := &http.Transport{}
	client := &http.Client{Transport: tr}
	do := func(ctx context.Context, body string) {
		req, _ := http.NewRequestWithContext(ctx, "POST", e.url+"/v1/chat/completions", strings.NewReader(body))
		resp, err := client.Do(req)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	settle := func() int {
		tr.CloseIdleConnections()
		waitFor(t, func() bool { return e.sched.Idle() && e.exec.Active() == 0 })
		time.Sleep(50 * time.Millisecond)
		return runtime.NumGoroutine()
	}
	do(context.Background(), hello)
	base := settle()
	bodies := []string{
		hello,
		`{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"max_tokens":30,"stream":true}`,
		`{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"max_tokens":30,"stream":true,"n":3,"stream_options":{"include_usage":true}}`,
		`{"model":"gpt-oss-20b","messages":[],"max_tokens":3}`,
		`{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"max_tokens":60,"stop":["e"]}`,
		`not json`,
	}
	var wg sync.WaitGroup
	for i := range 120 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			if i%5 == 4 {
				// Abandoned mid-way.
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, 3*time.Millisecond)
				defer cancel()
			}
			do(ctx, bodies[i%len(bodies)])
		}()
	}
	wg.Wait()
	if after := settle(); after > base+2 {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t.Fatalf("goroutines: %d before, %d after\n%s", base, after, buf[:n])
	}
}
