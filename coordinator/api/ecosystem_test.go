package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/gptoss/server/coordinator/profiles"
	"github.com/gptoss/server/coordinator/tokenizer"
	"github.com/gptoss/server/shared/model"
)

// What users of vLLM expect from the API: CORS, /tokenize, /detokenize,
// /version, vLLM's model card, lists of prompts and echo on completions,
// and the rest of the context as the default output budget.

// do sends one request with headers given as name, value pairs.
func (e *testEnv) do(t testing.TB, method, path, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.url+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
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

// corsHeaders lists the Access-Control-* headers of a response.
func corsHeaders(h http.Header) []string {
	var out []string
	for k := range h {
		if strings.HasPrefix(k, "Access-Control-") {
			out = append(out, k)
		}
	}
	return out
}

const (
	appOrigin  = "https://app.example"
	sdkHeaders = "authorization, content-type, x-stainless-os, x-stainless-retry-count, openai-beta"
)

// preflight sends a browser's preflight for method on path from origin.
func (e *testEnv) preflight(t testing.TB, path, method, origin string) (*http.Response, []byte) {
	t.Helper()
	return e.do(t, http.MethodOptions, path, "", "Origin", origin,
		"Access-Control-Request-Method", method, "Access-Control-Request-Headers", sdkHeaders)
}

// TestCORSOffByDefault: without origins, no response carries a CORS
// header, preflights included.
func TestCORSOffByDefault(t *testing.T) {
	e := newEnv(t)
	resp, _ := e.preflight(t, chatRoute, "POST", appOrigin)
	if h := corsHeaders(resp.Header); len(h) > 0 {
		t.Fatalf("preflight without CORS configured: %v", h)
	}
	resp, _ = e.do(t, "POST", chatRoute, hello, "Origin", appOrigin)
	if h := corsHeaders(resp.Header); resp.StatusCode != 200 || len(h) > 0 {
		t.Fatalf("request without CORS configured: %d %v", resp.StatusCode, h)
	}
}

// TestCORSPreflight: every API route answers an allowed origin's
// preflight with 204 and the CORS headers, without a key, without taking
// from the per-key limits and without a line in the stats; a disallowed
// origin gets no CORS headers; real responses carry Allow-Origin and
// Expose-Headers, errors included. (TestCORSRateLimitIgnoresPreflights
// holds the limits.)
func TestCORSPreflight(t *testing.T) {
	e := newEnv(t, func(c *testConfig) {
		c.opts.CORS = CORS{Origins: []string{appOrigin + "/", "http://localhost:3000"}}
		c.opts.APIKeys = []string{"sk-1"}
	})
	routes := []struct{ path, method string }{
		{chatRoute, "POST"}, {completionsRoute, "POST"}, {responsesRoute, "POST"},
		{responsesRoute + "/resp_1", "GET"}, {responsesRoute + "/resp_1", "DELETE"},
		{"/v1/models", "GET"}, {"/v1/models/gpt-oss-20b", "GET"},
		{"/tokenize", "POST"}, {"/detokenize", "POST"}, {"/version", "GET"}, {"/health", "GET"},
	}
	for range 3 {
		for _, r := range routes {
			resp, b := e.preflight(t, r.path, r.method, appOrigin)
			h := resp.Header
			if resp.StatusCode != 204 || len(b) != 0 {
				t.Fatalf("preflight %s %s: %d %s", r.method, r.path, resp.StatusCode, b)
			}
			if h.Get("Access-Control-Allow-Origin") != appOrigin || !strings.Contains(h.Get("Access-Control-Allow-Methods"), r.method) ||
				h.Get("Access-Control-Allow-Headers") != sdkHeaders || h.Get("Access-Control-Max-Age") != "600" ||
				h.Get("Access-Control-Allow-Credentials") != "" || !slices.Contains(h.Values("Vary"), "Origin") {
				t.Fatalf("preflight %s %s: headers %v", r.method, r.path, h)
			}
		}
	}
	if tot := e.stats.Snapshot(nil).Total; tot.RequestsTotal != 0 {
		t.Fatalf("preflights counted in the stats: %+v", tot)
	}

	// A second allowed origin; headers the page names that are no header
	// names get the SDKs' list instead of an echo.
	resp, _ := e.do(t, http.MethodOptions, "/tokenize", "", "Origin", "http://localhost:3000",
		"Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "content-type, bad header")
	if h := resp.Header; resp.StatusCode != 204 || h.Get("Access-Control-Allow-Origin") != "http://localhost:3000" ||
		!strings.Contains(h.Get("Access-Control-Allow-Headers"), "X-Stainless-Retry-Count") || !strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("second origin: %d %v", resp.StatusCode, h)
	}
	// A disallowed origin, and an unknown path.
	for _, origin := range []string{"https://evil.example", "https://app.example.evil", "http://app.example"} {
		resp, _ := e.preflight(t, chatRoute, "POST", origin)
		if h := corsHeaders(resp.Header); len(h) > 0 {
			t.Fatalf("preflight from %s: %v", origin, h)
		}
		resp, _ = e.do(t, "POST", chatRoute, hello, "Origin", origin, "Authorization", "Bearer sk-1")
		if h := corsHeaders(resp.Header); len(h) > 0 {
			t.Fatalf("request from %s: %v", origin, h)
		}
	}
	if resp, b := e.preflight(t, "/v1/embeddings", "POST", appOrigin); resp.StatusCode != 404 {
		t.Fatalf("preflight of an unknown URL: %d %s", resp.StatusCode, b)
	}

	small := `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"max_tokens":1}`
	// Real responses, and a 401, carry the origin and the exposed headers.
	resp, b := e.do(t, "POST", chatRoute, small, "Origin", appOrigin)
	if resp.StatusCode != 401 || resp.Header.Get("Access-Control-Allow-Origin") != appOrigin {
		t.Fatalf("401 to an allowed origin: %d %v %s", resp.StatusCode, resp.Header, b)
	}
	resp, b = e.do(t, "GET", "/v1/models", "", "Origin", appOrigin, "Authorization", "Bearer sk-1")
	exposed := resp.Header.Get("Access-Control-Expose-Headers")
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != appOrigin ||
		!strings.Contains(exposed, "X-Request-Id") || !strings.Contains(exposed, "Retry-After") {
		t.Fatalf("models to an allowed origin: %d %v %s", resp.StatusCode, resp.Header, b)
	}
}

// TestCORSRateLimitIgnoresPreflights: a key with a burst of one sends
// preflights, then its one request passes.
func TestCORSRateLimitIgnoresPreflights(t *testing.T) {
	e := newEnv(t, func(c *testConfig) {
		c.opts.CORS = CORS{Origins: []string{appOrigin}}
		c.opts.KeyLimits = KeyLimits{Rate: 0.001, Burst: 1, Concurrency: 1}
	})
	small := `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"max_tokens":1}`
	for range 5 {
		if resp, _ := e.do(t, http.MethodOptions, chatRoute, "", "Origin", appOrigin, "Access-Control-Request-Method", "POST",
			"Authorization", "Bearer alice"); resp.StatusCode != 204 {
			t.Fatalf("preflight: %d", resp.StatusCode)
		}
	}
	if resp, b := e.do(t, "POST", chatRoute, small, "Origin", appOrigin, "Authorization", "Bearer alice"); resp.StatusCode != 200 {
		t.Fatalf("the request after preflights: %d %s", resp.StatusCode, b)
	}
	if resp, _ := e.do(t, "POST", chatRoute, small, "Origin", appOrigin, "Authorization", "Bearer alice"); resp.StatusCode != 429 {
		t.Fatalf("the limit is not on: %d", resp.StatusCode)
	}
}

// TestCORSCredentialsAndAnyOrigin: "*" answers any origin with "*";
// credentials name the origin and say true; the two together, and origins
// that are no origins, are refused when the server is built.
func TestCORSCredentialsAndAnyOrigin(t *testing.T) {
	e := newEnv(t, func(c *testConfig) { c.opts.CORS = CORS{Origins: []string{"*"}} })
	resp, _ := e.preflight(t, "/tokenize", "POST", "https://anyone.example")
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "*" || resp.Header.Get("Access-Control-Allow-Credentials") != "" {
		t.Fatalf("any origin: %d %v", resp.StatusCode, resp.Header)
	}
	e = newEnv(t, func(c *testConfig) { c.opts.CORS = CORS{Origins: []string{appOrigin}, AllowCredentials: true} })
	for _, method := range []string{http.MethodOptions, http.MethodGet} {
		resp, _ := e.do(t, method, "/version", "", "Origin", appOrigin, "Access-Control-Request-Method", "GET")
		if resp.Header.Get("Access-Control-Allow-Origin") != appOrigin || resp.Header.Get("Access-Control-Allow-Credentials") != "true" {
			t.Fatalf("%s with credentials: %d %v", method, resp.StatusCode, resp.Header)
		}
	}
	base := Options{Engine: e.srv.opts.Engine, Tokenizer: e.srv.opts.Tokenizer, Stats: e.srv.opts.Stats, Profiles: e.srv.opts.Profiles, DefaultProfile: "balanced"}
	for _, bad := range []CORS{
		{Origins: []string{"*"}, AllowCredentials: true},
		{Origins: []string{"https://a.example", "*"}, AllowCredentials: true},
		{AllowCredentials: true},
		{Origins: []string{"app.example"}},
		{Origins: []string{"https://app.example/path"}},
		{Origins: []string{"https://user@app.example"}},
	} {
		o := base
		o.CORS = bad
		if _, err := New(o); err == nil {
			t.Errorf("CORS %+v accepted", bad)
		}
	}
}

// tokenizeOK posts body to /tokenize and decodes the answer, which must
// be a 200.
func tokenizeOK(t *testing.T, e *testEnv, body string) TokenizeResponse {
	t.Helper()
	resp, b := e.post(t, "/tokenize", body)
	if resp.StatusCode != 200 {
		t.Fatalf("tokenize: %d %s", resp.StatusCode, b)
	}
	var out TokenizeResponse
	if err := json.Unmarshal(b, &out); err != nil || out.Count != len(out.Tokens) {
		t.Fatalf("tokenize: %v %s", err, b)
	}
	return out
}

// TestTokenizeDetokenize: a prompt's ids are the ones /v1/completions
// would use; /detokenize turns them back; token_strs concatenate to the
// text; bad input is a 400 naming the field.
func TestTokenizeDetokenize(t *testing.T) {
	e := newEnv(t)
	tok := tokenizer.Default()
	text := "Hello, wörld! <|start|> is text here. 🦀"
	body, _ := json.Marshal(map[string]any{"model": "gpt-oss-20b", "prompt": text, "add_special_tokens": true, "return_token_strs": true})
	out := tokenizeOK(t, e, string(body))
	if !slices.Equal(out.Tokens, tok.Encode(text)) || out.MaxModelLen != 131072 {
		t.Fatalf("tokenize %+v", out)
	}
	if strs := strings.Join(out.TokenStrs, ""); len(out.TokenStrs) != out.Count || !strings.HasPrefix(strs, "Hello, w") {
		t.Fatalf("token_strs %q", out.TokenStrs)
	}
	// The completion of the same prompt is charged the same count.
	resp, b := e.post(t, "/v1/completions", fmt.Sprintf(`{"model":"gpt-oss-20b","prompt":%q,"max_tokens":1}`, text))
	var c Completion
	if err := json.Unmarshal(b, &c); resp.StatusCode != 200 || err != nil {
		t.Fatalf("completion: %d %s", resp.StatusCode, b)
	}
	if u, _ := json.Marshal(c.Usage); !strings.Contains(string(u), fmt.Sprintf(`"prompt_tokens":%d`, out.Count)) {
		t.Fatalf("completion usage %s, tokenize count %d", u, out.Count)
	}
	ids, _ := json.Marshal(out.Tokens)
	resp, b = e.post(t, "/detokenize", `{"tokens":`+string(ids)+`}`)
	var d DetokenizeResponse
	if err := json.Unmarshal(b, &d); resp.StatusCode != 200 || err != nil || d.Prompt != text {
		t.Fatalf("detokenize: %d %s", resp.StatusCode, b)
	}
	// Specials decode by name; no model and no tokens are fine.
	resp, b = e.post(t, "/detokenize", fmt.Sprintf(`{"model":"openai/gpt-oss-20b","tokens":[%d,%d]}`, tokenizer.Start, tokenizer.End))
	if err := json.Unmarshal(b, &d); resp.StatusCode != 200 || err != nil || d.Prompt != "<|start|><|end|>" {
		t.Fatalf("specials: %d %s", resp.StatusCode, b)
	}
	out = tokenizeOK(t, e, `{"prompt":""}`)
	if out.Count != 0 || out.Tokens == nil || out.TokenStrs != nil {
		t.Fatalf("empty prompt %+v", out)
	}
	if _, b := e.post(t, "/tokenize", `{"prompt":""}`); !strings.Contains(string(b), `"tokens":[]`) || strings.Contains(string(b), "token_strs") {
		t.Fatalf("empty prompt body %s", b)
	}
	if resp, b := e.post(t, "/detokenize", `{"tokens":[]}`); resp.StatusCode != 200 || string(bytes.TrimSpace(b)) != `{"prompt":""}` {
		t.Fatalf("no tokens: %d %s", resp.StatusCode, b)
	}

	for _, tc := range []struct {
		path, body  string
		status      int
		param, code string
	}{
		{"/detokenize", `{"tokens":[1,201088]}`, 400, "tokens", "invalid_value"},
		{"/detokenize", `{"tokens":[-1]}`, 400, "tokens", "invalid_value"},
		{"/detokenize", `{"tokens":["a"]}`, 400, "tokens", "invalid_type"},
		{"/detokenize", `{"tokens":[1.5]}`, 400, "tokens", "invalid_type"},
		{"/detokenize", `{}`, 400, "tokens", "missing_required_parameter"},
		{"/detokenize", `{"model":"gpt-9","tokens":[1]}`, 404, "model", "model_not_found"},
		{"/tokenize", `{}`, 400, "prompt", "missing_required_parameter"},
		{"/tokenize", `{"prompt":"a","messages":[{"role":"user","content":"a"}]}`, 400, "messages", "invalid_value"},
		{"/tokenize", `{"prompt":1}`, 400, "prompt", "invalid_type"},
		{"/tokenize", `{"model":"gpt-9","prompt":"a"}`, 404, "model", "model_not_found"},
		{"/tokenize", `{"prompt":"a","profile":"fastest"}`, 400, "profile", "invalid_value"},
		{"/tokenize", `{"messages":[]}`, 400, "messages", "empty_array"},
		{"/tokenize", `{"messages":[{"role":"robot","content":"a"}]}`, 400, "messages[0].role", "invalid_value"},
		{"/tokenize", `{"messages":[{"role":"user","content":"a"}],"add_generation_prompt":"yes"}`, 400, "add_generation_prompt", "invalid_type"},
		{"/tokenize", `{"messages":[{"role":"user","content":"a"}],"continue_final_message":true}`, 400, "continue_final_message", "unsupported_parameter"},
		{"/tokenize", `{"messages":[{"role":"user","content":"a"}],"chat_template_kwargs":{"enable_thinking":true}}`, 400, "chat_template_kwargs.enable_thinking", "unsupported_parameter"},
		{"/tokenize", `{"messages":[{"role":"user","content":"a"}],"tools":[{"type":"function","function":{"name":"bad name"}}]}`, 400, "tools[0].function.name", "invalid_value"},
		{"/tokenize", `not json`, 400, "", ""},
	} {
		resp, b := e.post(t, tc.path, tc.body)
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: %d, want %d: %s", tc.path, tc.body, resp.StatusCode, tc.status, b)
			continue
		}
		eo := errorOf(t, b)
		if tc.param != "" && (eo["param"] != tc.param || eo["code"] != tc.code) {
			t.Errorf("%s %s: param %v code %v, want %s %s", tc.path, tc.body, eo["param"], eo["code"], tc.param, tc.code)
		}
	}
	if resp, _ := e.get(t, "/tokenize"); resp.StatusCode != 405 {
		t.Fatalf("GET /tokenize: %d", resp.StatusCode)
	}
	// None of this is a generation request: the stats saw one completion.
	if tot := e.stats.Snapshot(nil).Total; tot.RequestsTotal != 1 {
		t.Fatalf("stats %+v", tot)
	}
}

// TestTokenizeChatIsTheChatPrompt: /tokenize's messages form gives the ids
// /v1/chat/completions renders (and is charged for), with tools, the
// deprecated functions, reasoning effort however given, and profiles;
// add_generation_prompt false leaves out the trailing <|start|>assistant.
func TestTokenizeChatIsTheChatPrompt(t *testing.T) {
	e := newEnv(t)
	msgs := `"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"What is the weather in Paris?"}]`
	tools := `"tools":[{"type":"function","function":{"name":"get_weather","description":"Weather now","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]`
	for _, extra := range []string{
		"",
		"," + tools,
		"," + tools + `,"tool_choice":"none"`,
		`,"functions":[{"name":"get_weather","parameters":{"type":"object"}}]`,
		`,"reasoning_effort":"high"`,
		`,"chat_template_kwargs":{"reasoning_effort":"low"}`,
		`,"profile":"quality_first"`,
		`,"add_generation_prompt":true`,
	} {
		body := `{"model":"gpt-oss-20b",` + msgs + extra + `}`
		out := tokenizeOK(t, e, body)
		if want := mustChatPrompt(t, e, body); !slices.Equal(out.Tokens, want) {
			t.Errorf("%s: tokenize gives %d ids, the chat path renders %d", extra, out.Count, len(want))
		}
		chat := strings.Replace(body, `"add_generation_prompt":true`, `"add_generation_prompt":true,"max_tokens":1`, 1)
		if !strings.Contains(chat, "max_tokens") {
			chat = strings.TrimSuffix(body, "}") + `,"max_tokens":1}`
		}
		resp, b := e.post(t, chatRoute, chat)
		var cc struct {
			Usage Usage `json:"usage"`
		}
		if err := json.Unmarshal(b, &cc); resp.StatusCode != 200 || err != nil || cc.Usage.PromptTokens != out.Count {
			t.Errorf("%s: chat usage %+v (%d %s), tokenize count %d", extra, cc.Usage, resp.StatusCode, b, out.Count)
		}
	}
	// The effort is rendered: high and low differ.
	high := tokenizeOK(t, e, `{`+msgs+`,"reasoning_effort":"high","return_token_strs":true}`)
	low := tokenizeOK(t, e, `{`+msgs+`,"reasoning_effort":"low"}`)
	if slices.Equal(high.Tokens, low.Tokens) || !strings.Contains(strings.Join(high.TokenStrs, ""), "Reasoning: high") {
		t.Fatal("reasoning_effort is not rendered")
	}
	full := tokenizeOK(t, e, `{`+msgs+`}`)
	bare := tokenizeOK(t, e, `{`+msgs+`,"add_generation_prompt":false}`)
	gen := append([]int{tokenizer.Start}, tokenizer.Default().Encode("assistant")...)
	if !slices.Equal(append(slices.Clone(bare.Tokens), gen...), full.Tokens) || bare.Tokens[len(bare.Tokens)-1] != tokenizer.End {
		t.Fatalf("add_generation_prompt false: %d ids, with it %d", bare.Count, full.Count)
	}
}

// TestUtilityEndpointsAuth: /tokenize, /detokenize and /version take the
// same key as /v1; /health does not.
func TestUtilityEndpointsAuth(t *testing.T) {
	e := newEnv(t, func(c *testConfig) { c.opts.APIKeys = []string{"sk-1"}; c.opts.Version = "1.2.3" })
	for _, r := range []struct{ method, path, body string }{
		{"POST", "/tokenize", `{"prompt":"a"}`}, {"POST", "/detokenize", `{"tokens":[1]}`}, {"GET", "/version", ""},
	} {
		if resp, b := e.do(t, r.method, r.path, r.body); resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
			t.Fatalf("%s without a key: %d %s", r.path, resp.StatusCode, b)
		}
		if resp, b := e.do(t, r.method, r.path, r.body, "Authorization", "Bearer sk-1"); resp.StatusCode != 200 {
			t.Fatalf("%s with the key: %d %s", r.path, resp.StatusCode, b)
		}
	}
	resp, b := e.do(t, "GET", "/version", "", "X-Api-Key", "sk-1")
	if resp.StatusCode != 200 || string(bytes.TrimSpace(b)) != `{"version":"1.2.3"}` {
		t.Fatalf("version: %d %s", resp.StatusCode, b)
	}
	if resp, _ := e.get(t, "/health"); resp.StatusCode != 200 {
		t.Fatal("health needs no key")
	}
	// Refusals of these endpoints are no generation requests: not counted
	// (in particular not as "unknown").
	if tot := e.stats.Snapshot(nil).Total; tot.RequestsTotal != 0 {
		t.Fatalf("stats %+v", tot)
	}
}

// TestModelCardVLLMFields: each card carries vLLM's max_model_len, root,
// parent (null) and permission ([]).
func TestModelCardVLLMFields(t *testing.T) {
	e := newEnv(t)
	for _, path := range []string{"/v1/models", "/v1/models/gpt-oss-20b"} {
		_, b := e.get(t, path)
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		card := v
		if data, ok := v["data"].([]any); ok {
			card = data[0].(map[string]any)
		}
		parent, hasParent := card["parent"]
		perm, _ := card["permission"].([]any)
		if card["root"] != "openai/gpt-oss-20b" || !hasParent || parent != nil || perm == nil || len(perm) != 0 ||
			card["max_model_len"] != float64(131072) || card["object"] != "model" {
			t.Fatalf("%s: %s", path, b)
		}
	}
	for p, want := range map[model.Preset]string{
		model.Presets["20b"]:                                    "openai/gpt-oss-20b",
		model.Presets["tiny"]:                                   "gpt-oss-tiny",
		{Name: "/models/my-ckpt", ID: "my-ckpt"}:                "/models/my-ckpt",
		{Name: "./ckpt", ID: "ckpt"}:                            "./ckpt",
		{Name: "org/name", ID: "org/name", HubRepo: "org/name"}: "org/name",
	} {
		if got := modelRoot(p); got != want {
			t.Errorf("root of %+v: %q, want %q", p, got, want)
		}
	}
	e = newEnv(t, func(c *testConfig) { c.opts.Root = "/srv/ckpt" })
	if _, b := e.get(t, "/v1/models/gpt-oss-20b"); !strings.Contains(string(b), `"root":"/srv/ckpt"`) {
		t.Fatalf("Root option: %s", b)
	}
}

// completionTexts posts a completions request and returns each choice's
// text by index, streamed or not, with the usage.
func completionTexts(t *testing.T, e *testEnv, body string, stream bool) (map[int]string, map[int]string, *Usage) {
	t.Helper()
	if stream {
		body = strings.TrimSuffix(body, "}") + `,"stream":true,"stream_options":{"include_usage":true}}`
	}
	resp, b := e.post(t, completionsRoute, body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %d %s", body, resp.StatusCode, b)
	}
	texts, finish := map[int]string{}, map[int]string{}
	var usage *Usage
	add := func(raw []byte) {
		var c struct {
			Choices []CompletionChoice `json:"choices"`
			Usage   *Usage             `json:"usage"`
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			t.Fatalf("%v: %s", err, raw)
		}
		for _, ch := range c.Choices {
			texts[ch.Index] += ch.Text
			if ch.FinishReason != nil {
				if _, twice := finish[ch.Index]; twice {
					t.Fatalf("choice %d finished twice", ch.Index)
				}
				finish[ch.Index] = *ch.FinishReason
			}
		}
		if c.Usage != nil {
			usage = c.Usage
		}
	}
	if !stream {
		add(b)
		return texts, finish, usage
	}
	events := sseEvents(t, bytes.NewReader(b))
	if events[len(events)-1] != "[DONE]" {
		t.Fatalf("stream did not end with [DONE]: %q", events[len(events)-1])
	}
	for _, ev := range events[:len(events)-1] {
		add([]byte(ev))
	}
	return texts, finish, usage
}

// TestCompletionsPromptList: a list of prompts is answered with n choices
// each, choice j of prompt i at index i*n+j, streamed or not, the same
// text either way; usage counts each prompt once.
func TestCompletionsPromptList(t *testing.T) {
	e := newEnv(t)
	tok := tokenizer.Default()
	prompts := []string{"Alpha says", "Bravo says", "Charlie says"}
	list, _ := json.Marshal(prompts)
	body := `{"model":"gpt-oss-20b","prompt":` + string(list) + `,"n":2,"max_tokens":40,"temperature":0}`
	wantPrompt := 0
	for _, p := range prompts {
		wantPrompt += len(tok.Encode(p))
	}
	plain, plainFinish, usage := completionTexts(t, e, body, false)
	streamed, streamFinish, streamUsage := completionTexts(t, e, body, true)
	if len(plain) != 6 || len(streamed) != 6 || len(plainFinish) != 6 || len(streamFinish) != 6 {
		t.Fatalf("choices: %d plain, %d streamed", len(plain), len(streamed))
	}
	for i, p := range prompts {
		word := strings.Fields(p)[0]
		for j := range 2 {
			idx := i*2 + j
			if !strings.Contains(plain[idx], word) {
				t.Errorf("choice %d does not answer prompt %d (%q): %q", idx, i, p, plain[idx])
			}
			if plain[idx] != streamed[idx] || plainFinish[idx] != streamFinish[idx] {
				t.Errorf("choice %d: streamed %q (%s), not %q (%s)", idx, streamed[idx], streamFinish[idx], plain[idx], plainFinish[idx])
			}
		}
	}
	if usage == nil || streamUsage == nil || usage.PromptTokens != wantPrompt || streamUsage.PromptTokens != wantPrompt ||
		usage.CompletionTokens != streamUsage.CompletionTokens || usage.CompletionTokens > 6*40 {
		t.Fatalf("usage %+v, streamed %+v, want %d prompt tokens", usage, streamUsage, wantPrompt)
	}
	// Token-id arrays are prompts too; each its own budget against the
	// context.
	ids := [][]int{tok.Encode("Delta says"), tok.Encode("Echo says")}
	raw, _ := json.Marshal(ids)
	texts, _, _ := completionTexts(t, e, `{"model":"gpt-oss-20b","prompt":`+string(raw)+`,"max_tokens":40,"temperature":0}`, false)
	if len(texts) != 2 || !strings.Contains(texts[0], "Delta") || !strings.Contains(texts[1], "Echo") {
		t.Fatalf("token-id prompts: %v", texts)
	}
	// The list may hold 16 prompts, not 17.
	sixteen, _ := json.Marshal(slices.Repeat([]string{"x"}, 16))
	if texts, _, _ := completionTexts(t, e, `{"model":"gpt-oss-20b","prompt":`+string(sixteen)+`,"max_tokens":1}`, false); len(texts) != 16 {
		t.Fatalf("16 prompts: %d choices", len(texts))
	}
	// With a seed, a prompt's choices are what the prompt gets alone.
	seeded := `{"model":"gpt-oss-20b","prompt":%s,"n":2,"max_tokens":20,"temperature":1,"seed":11}`
	both, _, _ := completionTexts(t, e, fmt.Sprintf(seeded, `["Alpha says","Bravo says"]`), false)
	alone, _, _ := completionTexts(t, e, fmt.Sprintf(seeded, `"Bravo says"`), false)
	if both[2] != alone[0] || both[3] != alone[1] {
		t.Fatalf("seeded prompt 1 in a list %q, alone %v", []string{both[2], both[3]}, alone)
	}
}

// TestCompletionsEcho: echo puts the prompt's text (a string as sent,
// token ids decoded) before each choice's own text, streamed or not.
func TestCompletionsEcho(t *testing.T) {
	e := newEnv(t)
	base := `{"model":"gpt-oss-20b","prompt":["Say hi","Say bye"],"n":2,"max_tokens":8,"temperature":0%s}`
	without, _, _ := completionTexts(t, e, fmt.Sprintf(base, ""), false)
	plain, _, u1 := completionTexts(t, e, fmt.Sprintf(base, `,"echo":true`), false)
	streamed, _, u2 := completionTexts(t, e, fmt.Sprintf(base, `,"echo":true`), true)
	for idx := range 4 {
		prompt := []string{"Say hi", "Say bye"}[idx/2]
		if plain[idx] != prompt+without[idx] || streamed[idx] != plain[idx] {
			t.Errorf("choice %d: echo %q, streamed %q, without echo %q", idx, plain[idx], streamed[idx], without[idx])
		}
	}
	if u1.CompletionTokens != u2.CompletionTokens || u1.PromptTokens != u2.PromptTokens {
		t.Fatalf("usage %+v %+v", u1, u2)
	}
	ids, _ := json.Marshal(append(tokenizer.Default().Encode("Once upon"), tokenizer.End))
	texts, _, _ := completionTexts(t, e, `{"model":"gpt-oss-20b","prompt":`+string(ids)+`,"echo":true,"max_tokens":3}`, false)
	if !strings.HasPrefix(texts[0], "Once upon<|end|>") {
		t.Fatalf("token-id echo %q", texts[0])
	}
}

// TestDefaultMaxTokens: without max_tokens the budget is the rest of the
// context, capped by the profile's max_tokens_cap (and by its optional
// max_tokens); the same for chat, completions and the Responses API.
func TestDefaultMaxTokens(t *testing.T) {
	const ctx = 600
	e := newEnv(t, func(c *testConfig) {
		c.opts.Model.ContextLength = ctx
		c.profile = func(s profiles.Set) {
			s["latency_first"].Generation.MaxTokens, s["latency_first"].Generation.MaxTokensCap = 0, 40
			s["balanced"].Generation.MaxTokens, s["balanced"].Generation.MaxTokensCap = 0, 100000
			s["quality_first"].Generation.MaxTokens, s["quality_first"].Generation.MaxTokensCap = 25, 100000
		}
	})
	e.exec.SetMinReply(5000) // every reply runs to its budget
	for _, tc := range []struct {
		profile string
		want    func(prompt int) int
	}{
		{"latency_first", func(int) int { return 40 }},             // the cap
		{"balanced", func(prompt int) int { return ctx - prompt }}, // the rest of the context
		{"quality_first", func(int) int { return 25 }},             // the profile's own default
	} {
		for _, r := range []struct{ path, body string }{
			{chatRoute, `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Think hard"}],"profile":%q}`},
			{completionsRoute, `{"model":"gpt-oss-20b","prompt":"Think hard","profile":%q}`},
			{completionsRoute, `{"model":"gpt-oss-20b","prompt":"Think hard","profile":%q,"stream":true,"stream_options":{"include_usage":true}}`},
		} {
			resp, b := e.post(t, r.path, fmt.Sprintf(r.body, tc.profile))
			if resp.StatusCode != 200 {
				t.Fatalf("%s %s: %d %s", tc.profile, r.path, resp.StatusCode, b)
			}
			if strings.Contains(r.body, "stream") {
				events := sseEvents(t, bytes.NewReader(b))
				b = []byte(events[len(events)-2])
			}
			var out struct {
				Usage Usage `json:"usage"`
			}
			_ = json.Unmarshal(b, &out)
			if want := tc.want(out.Usage.PromptTokens); out.Usage.CompletionTokens != want {
				t.Errorf("%s %s: %d completion tokens (prompt %d), want %d", tc.profile, r.path, out.Usage.CompletionTokens, out.Usage.PromptTokens, want)
			}
		}
	}
	// The Responses API without max_output_tokens: the same budget.
	resp, b := e.post(t, responsesRoute, `{"model":"gpt-oss-20b","input":"Think hard","profile":"latency_first"}`)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"output_tokens":40`) {
		t.Fatalf("responses: %d %s", resp.StatusCode, b)
	}
	// An explicit max_tokens is still held to the cap and the context.
	if resp, b := e.post(t, chatRoute, `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"max_tokens":41}`); resp.StatusCode != 400 || errorOf(t, b)["param"] != "max_tokens" {
		t.Fatalf("over the cap: %d %s", resp.StatusCode, b)
	}
	if resp, b := e.post(t, chatRoute, `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"max_tokens":599,"profile":"balanced"}`); resp.StatusCode != 400 || errorOf(t, b)["code"] != "context_length_exceeded" {
		t.Fatalf("over the context: %d %s", resp.StatusCode, b)
	}
}
