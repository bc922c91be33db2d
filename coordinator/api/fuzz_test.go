package api

import (
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gptoss/server/coordinator/profiles"
	"github.com/gptoss/server/coordinator/tokenizer"
)

// FuzzRequests sends arbitrary bodies to both generation endpoints and to
// /tokenize and /detokenize: the answer is never a 5xx, errors always have
// OpenAI's shape, and successes are valid JSON.
func FuzzRequests(f *testing.F) {
	for _, s := range []string{
		hello,
		`{"model":"gpt-oss-20b","messages":[{"role":"user","content":[{"type":"text","text":"x"}]}],"stop":["a"],"n":2,"max_tokens":2}`,
		`{"model":"gpt-oss-20b","prompt":[1,2,3],"max_tokens":2}`,
		`{"model":"gpt-oss-20b","prompt":"x","max_tokens":2,"stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"gpt-oss-20b","messages":[{"role":"tool","tool_call_id":"a","content":"x"}]}`,
		`{"model":"gpt-oss-20b","messages":"hi"}`, `null`, `[]`, `{}`, `{"model":1e400}`,
		`{"prompt":"Hi","return_token_strs":true}`, `{"tokens":[1,200006,-1]}`,
		`{"messages":[{"role":"user","content":"Hi"}],"add_generation_prompt":false,"tools":[{"type":"function","function":{"name":"f"}}]}`,
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
		for _, path := range []string{"/v1/chat/completions", "/v1/completions", "/tokenize", "/detokenize"} {
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

// fuzzSeeds are bodies for both request decoders: valid ones, and the
// hostile ones of issue 14 (numbers past int32, int64 and float64, NaN,
// wrong types, legacy and vLLM parameters).
var fuzzSeeds = []string{
	`{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"max_tokens":2}`,
	`{"model":"gpt-oss-20b","prompt":"Hi","max_tokens":2}`,
	`{"model":"gpt-oss-20b","prompt":[1,2,3],"max_tokens":2,"logprobs":3}`,
	`{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"top_k":2147483648}`,
	`{"model":"gpt-oss-20b","prompt":"Hi","top_k":4294967301}`,
	`{"model":"gpt-oss-20b","prompt":"Hi","top_k":-1,"top_p":1e-9,"min_p":1,"seed":-9223372036854775808,"n":8,"temperature":2}`,
	`{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"seed":1.5,"n":1e2}`,
	`{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"temperature":NaN,"top_p":-Infinity}`,
	`{"model":"gpt-oss-20b","prompt":"Hi","temperature":1e400,"max_tokens":99999999999999999999}`,
	`{"model":"gpt-oss-20b","prompt":"Hi","frequency_penalty":"high","presence_penalty":true}`,
	`{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"logprobs":true,"top_logprobs":21}`,
	`{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Weather?"}],"functions":[{"name":"get_weather","parameters":{"type":"object"}}],"function_call":"auto"}`,
	`{"model":"gpt-oss-20b","messages":[{"role":"user","content":"x"},{"role":"assistant","content":null,"function_call":{"name":"f","arguments":"{}"}},{"role":"function","name":"f","content":"1"}]}`,
	`{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"chat_template_kwargs":{"reasoning_effort":"high","enable_thinking":false}}`,
	`{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"repetition_penalty":1.1,"store":true,"modalities":["audio"]}`,
	`{"model":"gpt-oss-20b","prompt":"Hi","response_format":{"type":"json_object"},"guided_json":{}}`,
	`{"model":"gpt-oss-20b","messages":[{"role":"tool","tool_call_id":"a","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"f"}}}`,
	`{"model":"gpt-oss-20b","messages":[{"role":"user","content":[{"type":"text","text":"\ud800"}]}],"stop":["a","b"],"stream":true,"stream_options":{"include_usage":true}}`,
	`{"model":"gpt-oss-20b","prompt":[[1,2],[3]],"suffix":"x","echo":true,"best_of":2}`,
	`{"model":"gpt-oss-20b","prompt":[[1,2],[3],"x"],"echo":true,"n":2,"stream":true}`,
	`{"model":"gpt-oss-20b","prompt":["a","b","c"],"echo":true,"logprobs":1,"max_tokens":3}`,
	`{"model":"gpt-oss-20b","prompt":"x","temperature":-NaN}{"x":1}`,
	`{"model":"gpt-oss-20b","messages":"hi"}`, `null`, `[]`, `{}`, ``, `{"model":1e400}`, `[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]`,
}

// fuzzDecoder runs arbitrary bodies through one endpoint's decoder and
// validator, then through the whole handler: the validator either accepts
// with every field inside its documented range or refuses with a 4xx
// OpenAI error; the handler never answers 5xx and never panics.
func fuzzDecoder[R any](f *testing.F, path string, parse func(*Server, *R) (*genParams, error)) {
	for _, s := range fuzzSeeds {
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
		var req R
		err := decodeJSON(strings.NewReader(body), &req)
		var g *genParams
		if err == nil {
			g, err = parse(e.srv, &req)
		}
		if err != nil {
			checkClientError(t, body, err)
		} else {
			checkParams(t, e.srv, body, g)
		}

		r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		switch {
		case rec.Code >= 500:
			t.Fatalf("%q: status %d %s", body, rec.Code, rec.Body)
		case rec.Code >= 400:
			errorOf(t, rec.Body.Bytes())
		case err != nil:
			t.Fatalf("%q: the validator refused (%v) but the handler answered %d", body, err, rec.Code)
		case strings.HasPrefix(rec.Header().Get("Content-Type"), "text/event-stream"):
		case !json.Valid(rec.Body.Bytes()):
			t.Fatalf("%q: invalid JSON response %q", body, rec.Body)
		}
	})
}

// checkClientError: a refusal is an *Error with a 4xx status and OpenAI's
// shape.
func checkClientError(t *testing.T, body string, err error) {
	t.Helper()
	var ae *Error
	if !errors.As(err, &ae) {
		t.Fatalf("%q: error %T %v is not an API error", body, err, err)
	}
	if ae.Status < 400 || ae.Status >= 500 || ae.Type != "invalid_request_error" || ae.Message == "" {
		t.Fatalf("%q: refusal %+v", body, ae)
	}
	b, merr := json.Marshal(ae.body())
	if merr != nil {
		t.Fatalf("%q: error body: %v", body, merr)
	}
	errorOf(t, b)
}

// checkParams: an accepted request has every field in its range.
func checkParams(t *testing.T, s *Server, body string, g *genParams) {
	t.Helper()
	sp := g.sampling
	inF := func(v, lo, hi float64) bool { return v >= lo && v <= hi }
	switch {
	case g.n < 1 || g.n > s.opts.Limits.MaxN,
		g.maxTokens < 1 || g.maxTokens > g.profile.Generation.MaxTokensCap,
		len(g.prompt) == 0 || len(g.prompt)+g.maxTokens > s.opts.Model.ContextLength,
		len(g.stop) > s.opts.Limits.MaxStop,
		!inF(sp.Temperature, 0, 2), !inF(sp.TopP, 0, 1) || sp.TopP == 0,
		sp.TopK < 0 || sp.TopK > tokenizer.VocabSize, sp.TopK > math.MaxInt32,
		!inF(sp.MinP, 0, 1), !inF(sp.PresencePenalty, -2, 2), !inF(sp.FrequencyPenalty, -2, 2),
		sp.TopLogprobs < 0 || sp.TopLogprobs > 20:
		t.Fatalf("%q accepted with %+v (n %d, max_tokens %d, prompt %d)", body, sp, g.n, g.maxTokens, len(g.prompt))
	}
	if len(g.batch()) > s.opts.Limits.MaxPromptStrings {
		t.Fatalf("%q accepted with %d prompts", body, len(g.batch()))
	}
	for _, in := range g.batch() {
		if len(in.ids) == 0 || in.maxTokens < 1 || in.maxTokens > g.profile.Generation.MaxTokensCap || len(in.ids)+in.maxTokens > s.opts.Model.ContextLength {
			t.Fatalf("%q accepted a prompt of %d tokens with max_tokens %d", body, len(in.ids), in.maxTokens)
		}
		for _, id := range in.ids {
			if id < 0 || id >= tokenizer.VocabSize {
				t.Fatalf("%q: token %d outside the vocabulary", body, id)
			}
		}
	}
}

// FuzzChatRequest: the chat decoder and validator, then the handler.
func FuzzChatRequest(f *testing.F) {
	fuzzDecoder(f, "/v1/chat/completions", (*Server).parseChat)
}

// FuzzCompletionRequest: the completions decoder and validator, then the
// handler.
func FuzzCompletionRequest(f *testing.F) {
	fuzzDecoder(f, "/v1/completions", (*Server).parseCompletion)
}
