package api

import (
	"encoding/json"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/gptoss/server/coordinator/guide"
)

// needGuides skips when llguidance is not built (`make test` builds it).
func needGuides(t *testing.T) {
	t.Helper()
	if err := guide.Shared().Err(); errors.Is(err, guide.ErrNoLibrary) {
		t.Skip(err)
	} else if err != nil {
		t.Fatal(err)
	}
}

type chatOut struct {
	Choices []struct {
		FinishReason string `json:"finish_reason"`
		Message      struct {
			Content   *string `json:"content"`
			ToolCalls []struct {
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"message"`
	} `json:"choices"`
	Usage struct {
		Details struct {
			Reasoning int `json:"reasoning_tokens"`
		} `json:"completion_tokens_details"`
	} `json:"usage"`
}

func (e *testEnv) chatJSON(t *testing.T, body string) chatOut {
	t.Helper()
	resp, b := e.post(t, "/v1/chat/completions", body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %d %s", body, resp.StatusCode, b)
	}
	var out chatOut
	if err := json.Unmarshal(b, &out); err != nil || len(out.Choices) == 0 {
		t.Fatalf("%s: %v", b, err)
	}
	return out
}

const personFormat = `{"type":"json_schema","json_schema":{"name":"person","strict":true,"schema":{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},"tags":{"type":"array","items":{"type":"string"}}},"required":["name","age","tags"],"additionalProperties":false}}}`

// The mock answers a response_format with JSON that follows the schema:
// the final channel is constrained, the reasoning is not.
func TestResponseFormatOnTheMock(t *testing.T) {
	needGuides(t)
	e := newEnv(t)
	for _, rf := range []string{personFormat, `{"type":"json_object"}`} {
		out := e.chatJSON(t, `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Who?"}],"response_format":`+rf+`}`)
		c := out.Choices[0]
		if c.FinishReason != "stop" || c.Message.Content == nil {
			t.Fatalf("%s: finish %q content %v", rf, c.FinishReason, c.Message.Content)
		}
		var v map[string]any
		dec := json.NewDecoder(strings.NewReader(*c.Message.Content))
		if err := dec.Decode(&v); err != nil || dec.More() {
			t.Fatalf("%s: content %q is not one JSON object: %v", rf, *c.Message.Content, err)
		}
		if rf == personFormat {
			if _, ok := v["name"].(string); !ok || len(v) != 3 {
				t.Fatalf("content %q does not follow the schema", *c.Message.Content)
			}
		}
	}
}

// tool_choice "required" and a named function force a call with
// arguments that follow the tool's schema.
func TestForcedCallsOnTheMock(t *testing.T) {
	needGuides(t)
	e := newEnv(t)
	tools := `[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"],"additionalProperties":false}}},` +
		`{"type":"function","function":{"name":"add","parameters":{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"}},"required":["a","b"],"additionalProperties":false}}}]`
	for choice, want := range map[string]string{`"required"`: "", `{"type":"function","function":{"name":"add"}}`: "add"} {
		out := e.chatJSON(t, `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"tools":`+tools+`,"tool_choice":`+choice+`}`)
		c := out.Choices[0]
		if c.FinishReason != "tool_calls" || len(c.Message.ToolCalls) != 1 {
			t.Fatalf("%s: finish %q, %d calls", choice, c.FinishReason, len(c.Message.ToolCalls))
		}
		f := c.Message.ToolCalls[0].Function
		if want != "" && f.Name != want {
			t.Fatalf("%s: called %s", choice, f.Name)
		}
		var args map[string]any
		if err := json.Unmarshal([]byte(f.Arguments), &args); err != nil {
			t.Fatalf("%s: arguments %q: %v", choice, f.Arguments, err)
		}
		key := map[string]string{"get_weather": "city", "add": "a"}[f.Name]
		if _, ok := args[key]; !ok {
			t.Fatalf("%s: arguments %q lack %s", choice, f.Arguments, key)
		}
	}
}

// max_reasoning_tokens 0 skips the reasoning; a small budget cuts it.
func TestReasoningBudgetOnTheMock(t *testing.T) {
	e := newEnv(t)
	for _, n := range []int{0, 2} {
		out := e.chatJSON(t, `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Why is the sky blue?"}],"max_reasoning_tokens":`+strconv.Itoa(n)+`}`)
		c := out.Choices[0]
		if out.Usage.Details.Reasoning > n || c.Message.Content == nil || *c.Message.Content == "" {
			t.Fatalf("budget %d: %d reasoning tokens, content %v", n, out.Usage.Details.Reasoning, c.Message.Content)
		}
	}
}

// Completions follow structured_outputs from the first token.
func TestCompletionStructuredOutputsOnTheMock(t *testing.T) {
	needGuides(t)
	e := newEnv(t)
	for field, check := range map[string]func(string) bool{
		`"structured_outputs":{"regex":"[0-9]{3}-[a-z]{2}"}`: regexp.MustCompile(`^[0-9]{3}-[a-z]{2}$`).MatchString,
		`"structured_outputs":{"choice":["yes","no"]}`:       func(s string) bool { return s == "yes" || s == "no" },
		`"guided_json":{"type":"object","properties":{"x":{"type":"integer"}},"required":["x"]}`: func(s string) bool {
			var v struct{ X *int }
			return json.Unmarshal([]byte(s), &v) == nil && v.X != nil
		},
		`"structured_outputs":{"grammar":"start: \"a\" \"b\"+"}`: regexp.MustCompile(`^ab+$`).MatchString,
	} {
		resp, b := e.post(t, "/v1/completions", `{"model":"gpt-oss-20b","prompt":"Say","max_tokens":64,`+field+`}`)
		var out struct {
			Choices []struct {
				Text string `json:"text"`
			} `json:"choices"`
		}
		if resp.StatusCode != 200 || json.Unmarshal(b, &out) != nil || !check(out.Choices[0].Text) {
			t.Fatalf("%s: %d %s", field, resp.StatusCode, b)
		}
	}
}
