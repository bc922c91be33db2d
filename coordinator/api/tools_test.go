package api

import (
	"encoding/json"
	"strings"
	"testing"
)

const weatherTools = `"tools":[{"type":"function","function":{"name":"get_weather","description":"Current weather for a city.",
	"parameters":{"type":"object","properties":{"city":{"type":"string","description":"City name"},
	"unit":{"type":"string","enum":["c","f"],"default":"c"}},"required":["city"]}}}]`

func TestToolCallNonStreaming(t *testing.T) {
	e := newEnv(t)
	resp, b := e.post(t, "/v1/chat/completions", `{"model":"gpt-oss-20b","max_tokens":200,`+weatherTools+`,
		"messages":[{"role":"user","content":"Weather in Paris?"}]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	var r ChatCompletion
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	c := r.Choices[0]
	if c.FinishReason != "tool_calls" || len(c.Message.ToolCalls) != 1 || c.Message.Content != nil || c.Message.ReasoningContent == nil {
		t.Fatalf("choice %s", b)
	}
	tc := c.Message.ToolCalls[0]
	var args map[string]any
	if tc.Type != "function" || tc.Function.Name != "get_weather" || !strings.HasPrefix(tc.ID, "call_") ||
		json.Unmarshal([]byte(tc.Function.Arguments), &args) != nil || args["city"] == nil {
		t.Fatalf("tool call %+v", tc)
	}

	// The next turn carries the call and its result; the mock answers.
	next := `{"model":"gpt-oss-20b","max_tokens":200,` + weatherTools + `,"messages":[
		{"role":"user","content":"Weather in Paris?"},
		{"role":"assistant","content":null,"reasoning_content":` + mustJSON(*c.Message.ReasoningContent) + `,"tool_calls":[` + mustJSON(tc) + `]},
		{"role":"tool","tool_call_id":"` + tc.ID + `","content":"{\"temp_c\":21}"}]}`
	resp, b = e.post(t, "/v1/chat/completions", next)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	var r2 ChatCompletion
	_ = json.Unmarshal(b, &r2)
	if m := r2.Choices[0].Message; r2.Choices[0].FinishReason != "stop" || m.Content == nil || !strings.Contains(*m.Content, "temp_c") || len(m.ToolCalls) != 0 {
		t.Fatalf("after the tool result: %s", b)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestToolCallStreaming(t *testing.T) {
	e := newEnv(t)
	_, b := e.post(t, "/v1/chat/completions", `{"model":"gpt-oss-20b","max_tokens":200,"stream":true,`+weatherTools+`,
		"messages":[{"role":"user","content":"Weather in Paris?"}]}`)
	var name, id, args, finish string
	starts := 0
	for _, ev := range sseEvents(t, strings.NewReader(string(b))) {
		if ev == "[DONE]" {
			continue
		}
		var ch ChatChunk
		if err := json.Unmarshal([]byte(ev), &ch); err != nil {
			t.Fatal(err)
		}
		raw := map[string]any{}
		_ = json.Unmarshal([]byte(ev), &raw)
		delta := raw["choices"].([]any)[0].(map[string]any)["delta"].(map[string]any)
		if calls, ok := delta["tool_calls"].([]any); ok {
			tc := calls[0].(map[string]any)
			if tc["index"].(float64) != 0 {
				t.Fatalf("index %v", tc["index"])
			}
			f := tc["function"].(map[string]any)
			if n, ok := f["name"].(string); ok {
				starts++
				name, id = n, tc["id"].(string)
				if tc["type"] != "function" {
					t.Fatalf("start chunk %s", ev)
				}
			} else if tc["id"] != nil {
				t.Fatalf("argument chunk repeats the id: %s", ev)
			}
			args += f["arguments"].(string)
		}
		if fr := ch.Choices[0].FinishReason; fr != nil {
			finish = *fr
		}
	}
	var parsed map[string]any
	if starts != 1 || name != "get_weather" || !strings.HasPrefix(id, "call_") || json.Unmarshal([]byte(args), &parsed) != nil || finish != "tool_calls" {
		t.Fatalf("starts %d name %q id %q args %q finish %q", starts, name, id, args, finish)
	}
}

func TestToolChoiceNoneHidesTools(t *testing.T) {
	e := newEnv(t)
	_, b := e.post(t, "/v1/chat/completions", `{"model":"gpt-oss-20b","max_tokens":200,"tool_choice":"none",`+weatherTools+`,
		"messages":[{"role":"user","content":"Weather in Paris?"}]}`)
	var r ChatCompletion
	_ = json.Unmarshal(b, &r)
	if len(r.Choices) != 1 || len(r.Choices[0].Message.ToolCalls) != 0 || r.Choices[0].FinishReason == "tool_calls" {
		t.Fatalf("%s", b)
	}
}

func TestReasoningField(t *testing.T) {
	e := newEnv(t)
	for field, want := range map[string][2]bool{
		`"reasoning_field":"reasoning_content"`: {true, false},
		`"reasoning_field":"reasoning"`:         {false, true},
		`"reasoning_field":"both"`:              {true, true},
		`"include_reasoning":false`:             {false, false},
	} {
		for _, stream := range []bool{false, true} {
			body := `{"model":"gpt-oss-20b","max_tokens":40,"messages":[{"role":"user","content":"Hi"}],` + field
			if stream {
				body += `,"stream":true`
			}
			_, b := e.post(t, "/v1/chat/completions", body+`}`)
			text := string(b)
			if got := [2]bool{strings.Contains(text, `"reasoning_content":`), strings.Contains(text, `"reasoning":`)}; got != want {
				t.Fatalf("%s stream=%v: reasoning_content/reasoning present %v, want %v: %.300s", field, stream, got, want, text)
			}
		}
	}
}
