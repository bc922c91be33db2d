package api

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
)

// chatPrompt decodes and validates a chat body as the handler does and
// returns the rendered prompt, or the error.
func chatPrompt(t *testing.T, e *testEnv, body string) ([]int, *Error) {
	t.Helper()
	var req ChatRequest
	err := decodeJSON(strings.NewReader(body), &req)
	var g *genParams
	if err == nil {
		g, err = e.srv.parseChat(&req)
	}
	if err != nil {
		var ae *Error
		if !errors.As(err, &ae) {
			t.Fatalf("%s: %T %v is not an API error", body, err, err)
		}
		return nil, ae
	}
	return g.prompt, nil
}

func mustChatPrompt(t *testing.T, e *testEnv, body string) []int {
	t.Helper()
	p, err := chatPrompt(t, e, body)
	if err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	return p
}

// wantRefusal checks that a body is refused with a 400 naming param.
func wantRefusal(t *testing.T, e *testEnv, path, body, param, code string) {
	t.Helper()
	resp, b := e.post(t, path, body)
	if resp.StatusCode != 400 {
		t.Errorf("%s %s: status %d, want 400: %.300s", path, body, resp.StatusCode, b)
		return
	}
	eo := errorOf(t, b)
	if eo["param"] != param || eo["code"] != code || eo["type"] != "invalid_request_error" {
		t.Errorf("%s %s: param %v code %v (%v), want %q %q", path, body, eo["param"], eo["code"], eo["message"], param, code)
	}
}

const legacyFunctions = `"functions":[{"name":"get_weather","description":"Current weather for a city.",
	"parameters":{"type":"object","properties":{"city":{"type":"string","description":"City name"},
	"unit":{"type":"string","enum":["c","f"],"default":"c"}},"required":["city"]}}]`

// TestLegacyFunctions: the deprecated functions and function_call map onto
// tools and tool_choice as OpenAI documents them: the same prompt, and
// the answer in the legacy shape (message.function_call, finish_reason
// "function_call").
func TestLegacyFunctions(t *testing.T) {
	e := newEnv(t)
	const user = `"messages":[{"role":"user","content":"Weather in Paris?"}]`
	chat := func(fields ...string) string {
		return `{"model":"gpt-oss-20b","max_tokens":200,` + strings.Join(append(fields, user), ",") + `}`
	}
	tools := mustChatPrompt(t, e, chat(weatherTools))
	noTools := mustChatPrompt(t, e, chat())
	for _, tc := range []struct {
		legacy string
		want   []int
	}{
		{legacyFunctions, tools},
		{legacyFunctions + `,"function_call":"auto"`, tools},
		{legacyFunctions + `,"function_call":null`, tools},
		{legacyFunctions + `,"function_call":"none"`, noTools},
	} {
		if got := mustChatPrompt(t, e, chat(tc.legacy)); !slices.Equal(got, tc.want) {
			t.Errorf("%s: prompt differs from the one with tools", tc.legacy)
		}
	}

	// Refusals: a forced call (like a named tool_choice), both spellings
	// at once, malformed functions.
	const path = "/v1/chat/completions"
	wantRefusal(t, e, path, chat(legacyFunctions, `"function_call":{"name":"get_time"}`), "function_call.name", "invalid_value")
	wantRefusal(t, e, path, chat(legacyFunctions, weatherTools), "functions", "invalid_value")
	wantRefusal(t, e, path, chat(legacyFunctions, `"function_call":"auto"`, `"tool_choice":"auto"`), "function_call", "invalid_value")
	wantRefusal(t, e, path, chat(legacyFunctions, `"function_call":"required"`), "function_call", "invalid_value")
	wantRefusal(t, e, path, chat(`"function_call":{"name":"f"}`), "function_call", "invalid_value")
	wantRefusal(t, e, path, chat(`"functions":[{"name":"get weather"}]`), "functions[0].name", "invalid_value")
	wantRefusal(t, e, path, chat(`"functions":[{"name":"f"},{"name":"f"}]`), "functions[1].name", "invalid_value")
	wantRefusal(t, e, path, chat(`"functions":[{"name":"f","parameters":[1]}]`), "functions[0].parameters", "invalid_value")
	wantRefusal(t, e, path, chat(`"functions":{"name":"f"}`), "functions", "invalid_type")

	// The answer, non-streamed: function_call instead of tool_calls.
	resp, b := e.post(t, path, chat(legacyFunctions))
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	var r struct {
		Choices []struct {
			FinishReason string         `json:"finish_reason"`
			Message      map[string]any `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(b, &r); err != nil || len(r.Choices) != 1 {
		t.Fatalf("%v %s", err, b)
	}
	c := r.Choices[0]
	fc, _ := c.Message["function_call"].(map[string]any)
	var args map[string]any
	if c.FinishReason != "function_call" || fc == nil || fc["name"] != "get_weather" || c.Message["tool_calls"] != nil ||
		json.Unmarshal([]byte(fc["arguments"].(string)), &args) != nil || args["city"] == nil || c.Message["content"] != nil {
		t.Fatalf("legacy answer %s", b)
	}

	// Streamed: function_call deltas, the name first.
	_, b = e.post(t, path, chat(legacyFunctions, `"stream":true`))
	var name, argText, finish string
	for _, ev := range sseEvents(t, strings.NewReader(string(b))) {
		if ev == "[DONE]" {
			continue
		}
		var ch struct {
			Choices []struct {
				Delta        map[string]json.RawMessage `json:"delta"`
				FinishReason *string                    `json:"finish_reason"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(ev), &ch); err != nil {
			t.Fatal(err)
		}
		d := ch.Choices[0].Delta
		if d["tool_calls"] != nil {
			t.Fatalf("tool_calls delta in a legacy stream: %s", ev)
		}
		if raw := d["function_call"]; raw != nil {
			var f FunctionDelta
			if err := json.Unmarshal(raw, &f); err != nil {
				t.Fatal(err)
			}
			if f.Name != "" {
				if name != "" {
					t.Fatalf("name repeated: %s", ev)
				}
				name = f.Name
			}
			argText += f.Arguments
		}
		if fr := ch.Choices[0].FinishReason; fr != nil {
			finish = *fr
		}
	}
	if name != "get_weather" || json.Unmarshal([]byte(argText), &args) != nil || finish != "function_call" {
		t.Fatalf("stream: name %q args %q finish %q: %s", name, argText, finish, b)
	}

	// History in the legacy shape renders as its tools equivalent: an
	// assistant function_call and the function's result (role function).
	modern := mustChatPrompt(t, e, `{"model":"gpt-oss-20b",`+weatherTools+`,"messages":[
		{"role":"user","content":"Weather in Paris?"},
		{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},
		{"role":"tool","tool_call_id":"c1","content":"{\"temp_c\":21}"}]}`)
	legacy := mustChatPrompt(t, e, `{"model":"gpt-oss-20b",`+legacyFunctions+`,"messages":[
		{"role":"user","content":"Weather in Paris?"},
		{"role":"assistant","content":null,"function_call":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
		{"role":"function","name":"get_weather","content":"{\"temp_c\":21}"}]}`)
	if !slices.Equal(modern, legacy) {
		t.Error("legacy history renders differently from its tools equivalent")
	}
	wantRefusal(t, e, path, `{"model":"gpt-oss-20b","messages":[{"role":"function","content":"x"}]}`, "messages[0].name", "missing_required_parameter")
	wantRefusal(t, e, path, `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"x"},{"role":"assistant","content":null,"function_call":{"name":""}}]}`,
		"messages[1].function_call", "invalid_value")
	wantRefusal(t, e, path, `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"x"},{"role":"assistant","content":null,"function_call":{"name":"f"},"tool_calls":[{"id":"c","type":"function","function":{"name":"f"}}]}]}`,
		"messages[1].function_call", "invalid_value")
}

// TestChatTemplateKwargs: vLLM's chat_template_kwargs carries only
// reasoning_effort here, with the request field's meaning; any other key
// is refused by name.
func TestChatTemplateKwargs(t *testing.T) {
	e := newEnv(t)
	chat := func(extra string) string {
		return `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}]` + extra + `}`
	}
	high := mustChatPrompt(t, e, chat(`,"reasoning_effort":"high"`))
	def := mustChatPrompt(t, e, chat(``))
	for extra, want := range map[string][]int{
		`,"chat_template_kwargs":{"reasoning_effort":"high"}`:                           high,
		`,"chat_template_kwargs":{"reasoning_effort":"high"},"reasoning_effort":"high"`: high,
		`,"chat_template_kwargs":{}`:                                                    def,
		`,"chat_template_kwargs":null`:                                                  def,
		`,"chat_template_kwargs":{"reasoning_effort":null}`:                             def,
	} {
		if got := mustChatPrompt(t, e, chat(extra)); !slices.Equal(got, want) {
			t.Errorf("%s: not the prompt of the equivalent request", extra)
		}
	}
	const path = "/v1/chat/completions"
	wantRefusal(t, e, path, chat(`,"chat_template_kwargs":{"reasoning_effort":"low"},"reasoning_effort":"high"`), "chat_template_kwargs.reasoning_effort", "invalid_value")
	wantRefusal(t, e, path, chat(`,"chat_template_kwargs":{"reasoning_effort":"extreme"}`), "chat_template_kwargs.reasoning_effort", "invalid_value")
	wantRefusal(t, e, path, chat(`,"chat_template_kwargs":{"reasoning_effort":3}`), "chat_template_kwargs.reasoning_effort", "invalid_type")
	wantRefusal(t, e, path, chat(`,"chat_template_kwargs":{"enable_thinking":false}`), "chat_template_kwargs.enable_thinking", "unsupported_parameter")
	wantRefusal(t, e, path, chat(`,"chat_template_kwargs":{"reasoning_effort":"low","tools":[]}`), "chat_template_kwargs.tools", "unsupported_parameter")
	wantRefusal(t, e, path, chat(`,"chat_template_kwargs":"low"`), "chat_template_kwargs", "invalid_type")
}

// TestRepetitionPenalty: vLLM's multiplicative penalty has no counterpart
// in the sampler: 1 (off) and null are accepted, anything else refused.
func TestRepetitionPenalty(t *testing.T) {
	e := newEnv(t)
	for _, path := range []string{"/v1/chat/completions", "/v1/completions"} {
		body := func(v string) string {
			return `{"model":"gpt-oss-20b","max_tokens":2,"messages":[{"role":"user","content":"Hi"}],"prompt":"Hi","repetition_penalty":` + v + `}`
		}
		for _, v := range []string{`1`, `1.0`, `null`} {
			if resp, b := e.post(t, path, body(v)); resp.StatusCode != 200 {
				t.Errorf("%s repetition_penalty %s: %d %s", path, v, resp.StatusCode, b)
			}
		}
		for _, v := range []string{`1.1`, `0.9`, `2`, `0`, `-1`} {
			wantRefusal(t, e, path, body(v), "repetition_penalty", "unsupported_parameter")
			_, b := e.post(t, path, body(v))
			if !strings.Contains(string(b), "not supported") {
				t.Errorf("%s: message %s", v, b)
			}
		}
	}
}

// TestCompletionResponseFormat: completions take response_format as chat
// does (the whole text follows it), and refuse a malformed one.
func TestCompletionResponseFormat(t *testing.T) {
	e := newEnv(t)
	body := func(v string) string {
		return `{"model":"gpt-oss-20b","prompt":"Hi","max_tokens":2,"response_format":` + v + `}`
	}
	for _, v := range []string{`{"type":"text"}`, `null`} {
		if resp, b := e.post(t, "/v1/completions", body(v)); resp.StatusCode != 200 {
			t.Errorf("response_format %s: %d %s", v, resp.StatusCode, b)
		}
	}
	for _, path := range []string{"/v1/completions", "/v1/chat/completions"} {
		b := func(v string) string {
			return `{"model":"gpt-oss-20b","prompt":"Hi","messages":[{"role":"user","content":"Hi"}],"response_format":` + v + `}`
		}
		for _, v := range []string{`{"type":"json_object"}`, `{"type":"json_schema","json_schema":{"name":"x","schema":{}}}`} {
			if resp, out := e.post(t, path, b(v)); resp.StatusCode != 200 {
				t.Errorf("%s response_format %s: %d %s", path, v, resp.StatusCode, out)
			}
		}
		wantRefusal(t, e, path, b(`{"type":"json_schema","json_schema":{"name":"x"}}`), "response_format.json_schema.schema", "missing_required_parameter")
		wantRefusal(t, e, path, b(`{"type":"yaml"}`), "response_format", "invalid_value")
		wantRefusal(t, e, path, b(`"json"`), "response_format", "invalid_type")
	}
}

// TestOtherParameters: each parameter of OpenAI's requests (and vLLM's
// common extensions) is either honoured, harmlessly ignored, or refused at
// any value whose absence would change the answer.
func TestOtherParameters(t *testing.T) {
	e := newEnv(t)
	type pc struct {
		field, value string
		ok           bool
	}
	shared := []pc{
		{"user", `"u1"`, true},
		{"metadata", `{"k":"v"}`, true},
		{"service_tier", `"auto"`, true},
		{"service_tier", `"flex"`, true},
		{"store", `false`, true},
		{"store", `null`, true},
		{"store", `true`, false},
		{"safety_identifier", `"abc"`, true},
		{"prompt_cache_key", `"abc"`, true},
		{"stream_options", `null`, true},
		// vLLM's sampling extensions: only their "off" values.
		{"min_tokens", `0`, true},
		{"min_tokens", `5`, false},
		{"ignore_eos", `false`, true},
		{"ignore_eos", `true`, false},
		{"stop_token_ids", `[]`, true},
		{"stop_token_ids", `[200002]`, false},
		{"bad_words", `["x"]`, false},
		{"allowed_token_ids", `[1,2]`, false},
		{"include_stop_str_in_output", `false`, true},
		{"include_stop_str_in_output", `true`, false},
		{"skip_special_tokens", `true`, true},
		{"skip_special_tokens", `false`, false},
		{"use_beam_search", `false`, true},
		{"use_beam_search", `true`, false},
		{"length_penalty", `1`, true},
		{"length_penalty", `1.5`, false},
		{"prompt_logprobs", `null`, true},
		{"prompt_logprobs", `1`, false},
		{"truncate_prompt_tokens", `10`, false},
		// vLLM's structured-output fields are honoured (structured_test.go).
		{"guided_json", `{"type":"object"}`, true},
		{"guided_regex", `"a+"`, true},
		{"guided_choice", `["a","b"]`, true},
		{"guided_grammar", `"start: \"a\""`, true},
		{"structured_outputs", `{"json":{}}`, true},
		{"logits_processors", `["x"]`, false},
		{"return_tokens_as_token_ids", `true`, false},
	}
	chatOnly := []pc{
		{"parallel_tool_calls", `false`, true}, // one call per turn: always honoured
		{"parallel_tool_calls", `true`, true},
		{"prediction", `{"type":"content","content":"Hello"}`, true}, // a speed hint: same answer
		{"modalities", `["text"]`, true},
		{"modalities", `["text","audio"]`, false},
		{"audio", `null`, true},
		{"audio", `{"voice":"alloy","format":"mp3"}`, false},
		{"web_search_options", `{}`, false},
		{"verbosity", `"medium"`, true},
		{"verbosity", `"low"`, false},
		{"echo", `false`, true},
		{"echo", `true`, false},
		{"add_generation_prompt", `true`, true},
		{"add_generation_prompt", `false`, false},
		{"continue_final_message", `true`, false},
		{"chat_template", `"{{ messages }}"`, false},
		{"documents", `[{"text":"x"}]`, false},
		{"best_of", `1`, true},
		{"best_of", `2`, false},
	}
	completionOnly := []pc{
		{"suffix", `""`, true},
		{"suffix", `"x"`, false},
		{"best_of", `1`, true},
		{"best_of", `3`, false},
		{"echo", `false`, true},
		{"echo", `true`, true}, // the prompt's text before each choice's
	}
	run := func(path string, cases []pc) {
		for _, c := range cases {
			body := `{"model":"gpt-oss-20b","max_tokens":2,"messages":[{"role":"user","content":"Hi"}],"prompt":"Hi","` + c.field + `":` + c.value + `}`
			if c.ok {
				if resp, b := e.post(t, path, body); resp.StatusCode != 200 {
					t.Errorf("%s %s=%s: %d %s", path, c.field, c.value, resp.StatusCode, b)
				}
				continue
			}
			wantRefusal(t, e, path, body, c.field, "unsupported_parameter")
		}
	}
	run("/v1/chat/completions", shared)
	run("/v1/completions", shared)
	run("/v1/chat/completions", chatOnly)
	run("/v1/completions", completionOnly)
}
