package api

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gptoss/server/coordinator/mock"
)

const weatherTool = `[{"type":"function","name":"get_weather","description":"Weather of a city","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}]`

func decodeResponse(t *testing.T, b []byte) *ResponseObject {
	t.Helper()
	var r ResponseObject
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return &r
}

// itemText is the text of an output item's content parts.
func itemText(t *testing.T, it *Item) string {
	t.Helper()
	s, err := partsText(it.Content, "content")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A response has a reasoning item then a message, usage that adds up, the
// request echoed, and is stored for GET, input_items and DELETE.
func TestResponseCreateStoreDelete(t *testing.T) {
	e := newEnv(t)
	resp, b := e.post(t, "/v1/responses", `{"model":"gpt-oss-20b","input":"Hello","instructions":"Be brief.","metadata":{"k":"v"},"max_output_tokens":500,"temperature":0.5}`)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	r := decodeResponse(t, b)
	if !strings.HasPrefix(r.ID, "resp_") || r.Object != "response" || r.Status != "completed" || len(r.Output) != 2 ||
		r.Output[0].Type != "reasoning" || r.Output[1].Type != "message" || r.Output[1].Role != "assistant" {
		t.Fatalf("response %s", b)
	}
	if !strings.Contains(itemText(t, r.Output[1]), `You said: "Hello"`) || itemText(t, r.Output[0]) == "" {
		t.Fatalf("texts: %s", b)
	}
	u := r.Usage
	if u == nil || u.InputTokens == 0 || u.OutputTokens == 0 || u.TotalTokens != u.InputTokens+u.OutputTokens ||
		u.OutputTokensDetails.ReasoningTokens == 0 || u.OutputTokensDetails.ReasoningTokens >= u.OutputTokens {
		t.Fatalf("usage %+v", u)
	}
	if *r.Instructions != "Be brief." || r.Metadata["k"] != "v" || *r.MaxOutputTokens != 500 || r.Temperature != 0.5 || !r.Store {
		t.Fatalf("echo: %s", b)
	}
	resp, got := e.get(t, "/v1/responses/"+r.ID)
	if resp.StatusCode != 200 || !bytes.Equal(bytes.TrimSpace(got), bytes.TrimSpace(b)) {
		t.Fatalf("GET: %d\n%s\nwant\n%s", resp.StatusCode, got, b)
	}
	resp, items := e.get(t, "/v1/responses/"+r.ID+"/input_items")
	var list ItemList
	if err := json.Unmarshal(items, &list); err != nil || resp.StatusCode != 200 || len(list.Data) != 1 || list.Data[0].Role != "user" ||
		*list.FirstID != list.Data[0].ID || list.HasMore {
		t.Fatalf("input_items: %d %s", resp.StatusCode, items)
	}
	req, _ := http.NewRequest(http.MethodDelete, e.url+"/v1/responses/"+r.ID, nil)
	dr, err := http.DefaultClient.Do(req)
	if err != nil || dr.StatusCode != 200 {
		t.Fatalf("DELETE: %v %v", dr, err)
	}
	dr.Body.Close()
	if resp, b := e.get(t, "/v1/responses/"+r.ID); resp.StatusCode != 404 || errorOf(t, b)["code"] != "not_found" {
		t.Fatalf("after DELETE: %d %s", resp.StatusCode, b)
	}
	// store false: not kept.
	_, b = e.post(t, "/v1/responses", `{"model":"gpt-oss-20b","input":"Hi","store":false}`)
	if resp, _ := e.get(t, "/v1/responses/"+decodeResponse(t, b).ID); resp.StatusCode != 404 {
		t.Fatalf("store false retrievable: %d", resp.StatusCode)
	}
}

// A function call, answered with previous_response_id, and again with the
// whole history sent back (store false): both reach the tool's output.
func TestResponseFunctionCallRoundTrip(t *testing.T) {
	e := newEnv(t)
	_, b := e.post(t, "/v1/responses", `{"model":"gpt-oss-20b","input":"Weather in Paris?","tools":`+weatherTool+`}`)
	r := decodeResponse(t, b)
	call := r.Output[len(r.Output)-1]
	if r.Status != "completed" || call.Type != "function_call" || call.Name != "get_weather" || !strings.HasPrefix(call.CallID, "call_") ||
		!strings.HasPrefix(call.ID, "fc_") || !json.Valid([]byte(call.Arguments)) || r.Tools[0].Name != "get_weather" {
		t.Fatalf("call: %s", b)
	}
	out := `{"type":"function_call_output","call_id":"` + call.CallID + `","output":"sunny, 21 C"}`
	_, b = e.post(t, "/v1/responses", `{"model":"gpt-oss-20b","previous_response_id":"`+r.ID+`","input":[`+out+`],"tools":`+weatherTool+`}`)
	r2 := decodeResponse(t, b)
	if last := r2.Output[len(r2.Output)-1]; last.Type != "message" || !strings.Contains(itemText(t, last), "sunny, 21 C") || *r2.PreviousResponseID != r.ID {
		t.Fatalf("answer: %s", b)
	}
	// The same turn without the store: the first response's output items
	// sent back as input.
	first, _ := json.Marshal(r.Output)
	history := `[{"role":"user","content":"Weather in Paris?"},` + string(first[1:len(first)-1]) + `,` + out + `]`
	_, b = e.post(t, "/v1/responses", `{"model":"gpt-oss-20b","store":false,"input":`+history+`,"tools":`+weatherTool+`}`)
	r3 := decodeResponse(t, b)
	if last := r3.Output[len(r3.Output)-1]; last.Type != "message" || !strings.Contains(itemText(t, last), "sunny, 21 C") {
		t.Fatalf("full history: %s", b)
	}
	// Both ways render the same prompt: the same number of input tokens.
	if r3.Usage.InputTokens != r2.Usage.InputTokens {
		t.Fatalf("input tokens: chained %d, full history %d", r2.Usage.InputTokens, r3.Usage.InputTokens)
	}
}

// respEvents reads a Responses stream: each event's type line and data.
func respEvents(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	typ := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			typ = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			var ev map[string]any
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev); err != nil {
				t.Fatalf("%v: %s", err, line)
			}
			if ev["type"] != typ {
				t.Fatalf("event line %q, data type %v", typ, ev["type"])
			}
			out = append(out, ev)
		}
	}
	return out
}

// The stream's events come in OpenAI's order with increasing sequence
// numbers, token by token, and add up to the final response, which is the
// stored one.
func TestResponseStreamEvents(t *testing.T) {
	// Steps of 5 ms: tokens that arrive while the writer is still busy are
	// sent together (by design), and on a loaded machine the default
	// 0.2 ms steps would let that happen to the few tokens counted below.
	e := newEnv(t, func(c *testConfig) { c.timing = mock.Timing{Step: 5 * time.Millisecond} })
	resp, b := e.post(t, "/v1/responses", `{"model":"gpt-oss-20b","input":"Weather in Paris?","stream":true,"tools":`+weatherTool+`}`)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	evs := respEvents(t, b)
	var types []string
	reasoning, args := "", ""
	deltas := 0
	for i, ev := range evs {
		if int(ev["sequence_number"].(float64)) != i {
			t.Fatalf("event %d has sequence_number %v", i, ev["sequence_number"])
		}
		typ := ev["type"].(string)
		if len(types) == 0 || types[len(types)-1] != typ {
			types = append(types, typ)
		}
		switch typ {
		case "response.reasoning_text.delta":
			reasoning += ev["delta"].(string)
			deltas++
		case "response.function_call_arguments.delta":
			args += ev["delta"].(string)
		}
	}
	want := []string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
		"response.reasoning_text.delta", "response.reasoning_text.done", "response.content_part.done", "response.output_item.done",
		"response.output_item.added", "response.function_call_arguments.delta", "response.function_call_arguments.done",
		"response.output_item.done", "response.completed"}
	if strings.Join(types, " ") != strings.Join(want, " ") {
		t.Fatalf("events:\n%v\nwant\n%v", types, want)
	}
	if deltas < 3 {
		t.Fatalf("%d reasoning deltas: not token by token", deltas)
	}
	final, _ := json.Marshal(evs[len(evs)-1]["response"])
	r := decodeResponse(t, final)
	if itemText(t, r.Output[0]) != reasoning || r.Output[1].Arguments != args || r.Status != "completed" {
		t.Fatalf("final %s; reasoning %q args %q", final, reasoning, args)
	}
	_, stored := e.get(t, "/v1/responses/"+r.ID)
	if got := decodeResponse(t, stored); got.Output[1].Arguments != args || got.Usage.OutputTokens != r.Usage.OutputTokens {
		t.Fatalf("stored %s", stored)
	}
}

// What cannot be honoured is a 400 naming the parameter; unknown ids are
// 404s; a response cut by max_output_tokens is incomplete.
func TestResponseErrors(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct{ body, param string }{
		{`{"model":"gpt-oss-20b","input":"x","background":true}`, "background"},
		{`{"model":"gpt-oss-20b","input":"x","text":{"format":{"type":"json_schema"}}}`, "text.format.schema"},
		{`{"model":"gpt-oss-20b","input":"x","text":{"format":{"type":"json_schema","name":"x","schema":{"if":{},"then":{}}}}}`, "text.format"},
		{`{"model":"gpt-oss-20b","input":"x","text":{"format":{"type":"yaml"}}}`, "text.format.type"},
		{`{"model":"gpt-oss-20b","input":"x","tools":[{"type":"web_search"}]}`, "tools[0].type"},
		{`{"model":"gpt-oss-20b","input":"x","include":["message.output_text.logprobs"]}`, "include"},
		{`{"model":"gpt-oss-20b","input":"x","max_output_tokens":-1}`, "max_output_tokens"},
		{`{"model":"gpt-oss-20b","input":[]}`, "input"},
		{`{"model":"gpt-oss-20b"}`, "input"},
		{`{"model":"gpt-oss-20b","input":[{"type":"message","role":"robot","content":"x"}]}`, "input[0].role"},
		{`{"model":"gpt-oss-20b","input":[{"type":"message","role":"user","content":[{"type":"input_image","image_url":"x"}]}]}`, "input[0].content"},
		{`{"model":"gpt-oss-20b","input":"x","tools":` + weatherTool + `,"tool_choice":{"type":"function","name":"nope"}}`, "tool_choice.name"},
		{`{"model":"gpt-oss-20b","input":"x","reasoning":{"effort":"extreme"}}`, "reasoning.effort"},
		{`{"model":"gpt-oss-20b","input":"x","max_output_tokens":15}`, "max_output_tokens"},
		{`{"model":"gpt-oss-20b","input":"x","metadata":{"` + strings.Repeat("k", 65) + `":"v"}}`, "metadata"},
		{`{"model":"gpt-oss-20b","input":[{"role":"user","content":"q"},{"type":"function_call_output","call_id":"call_nope","output":"x"}]}`, "input[1].call_id"},
	} {
		resp, b := e.post(t, "/v1/responses", c.body)
		if resp.StatusCode != 400 || errorOf(t, b)["param"] != c.param {
			t.Errorf("%s: %d %s (want 400 on %s)", c.body, resp.StatusCode, b, c.param)
		}
	}
	resp, b := e.post(t, "/v1/responses", `{"model":"gpt-oss-20b","input":"x","previous_response_id":"resp_nope"}`)
	if resp.StatusCode != 404 || errorOf(t, b)["param"] != "previous_response_id" {
		t.Fatalf("unknown previous: %d %s", resp.StatusCode, b)
	}
	for _, p := range []string{"/v1/responses/resp_nope", "/v1/responses/resp_nope/input_items", "/v1/responses/..%2f..%2fetc"} {
		if resp, b := e.get(t, p); resp.StatusCode != 404 {
			t.Fatalf("GET %s: %d %s", p, resp.StatusCode, b)
		}
	}
	_, b = e.post(t, "/v1/responses", `{"model":"gpt-oss-20b","input":"Hello","max_output_tokens":16}`)
	if r := decodeResponse(t, b); r.Status != "incomplete" || r.IncompleteDetails.Reason != "max_output_tokens" || r.Usage.OutputTokens != 16 {
		t.Fatalf("cut: %s", b)
	}
}

// Items become chat messages as Harmony renders an assistant turn:
// reasoning and the calls after it in one message, outputs as tool
// messages, encrypted reasoning decoded.
func TestItemsToMessages(t *testing.T) {
	enc := *encryptedContent("thinking")
	items, err := parseInput(json.RawMessage(`[
		{"role":"user","content":"q"},
		{"type":"reasoning","encrypted_content":"` + enc + `","summary":[]},
		{"type":"function_call","call_id":"c1","name":"f","arguments":"{}"},
		{"type":"function_call_output","call_id":"c1","output":[{"type":"input_text","text":"r1"}]},
		{"type":"reasoning","content":[{"type":"reasoning_text","text":"more"}]},
		{"type":"message","role":"assistant","content":[{"type":"output_text","text":"answer"}]},
		{"type":"message","role":"user","content":[{"type":"input_text","text":"next"}]}]`))
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := itemsToMessages(items, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range msgs {
		s := m.Role
		if m.ReasoningContent != nil {
			s += " r=" + *m.ReasoningContent
		}
		for _, c := range m.ToolCalls {
			s += " call=" + c.Function.Name + "/" + c.ID
		}
		if m.ToolCallID != nil {
			s += " for=" + *m.ToolCallID
		}
		if present(m.Content) {
			s += " " + string(m.Content)
		}
		got = append(got, s)
	}
	want := []string{`user "q"`, `assistant r=thinking call=f/c1`, `tool for=c1 "r1"`, `assistant r=more "answer"`, `user "next"`}
	if strings.Join(got, " | ") != strings.Join(want, " | ") {
		t.Fatalf("\n%v\nwant\n%v", got, want)
	}
	bad := `[{"type":"reasoning","encrypted_content":"bm90IG91cnM="}]`
	items, _ = parseInput(json.RawMessage(bad))
	if _, err := itemsToMessages(items, 0); err == nil {
		t.Fatal("foreign encrypted_content accepted")
	}
}

// input_tokens counts what a create with the same body is charged.
func TestResponseInputTokens(t *testing.T) {
	e := newEnv(t)
	body := `{"model":"gpt-oss-20b","input":"Weather in Paris?","instructions":"Be brief.","tools":` + weatherTool + `}`
	_, b := e.post(t, "/v1/responses", body)
	want := decodeResponse(t, b).Usage.InputTokens
	resp, b := e.post(t, "/v1/responses/input_tokens", body)
	var got struct {
		Object      string `json:"object"`
		InputTokens int    `json:"input_tokens"`
	}
	if err := json.Unmarshal(b, &got); err != nil || resp.StatusCode != 200 || got.Object != "response.input_tokens" || got.InputTokens != want {
		t.Fatalf("%d %s, want %d input tokens", resp.StatusCode, b, want)
	}
	if resp, b := e.post(t, "/v1/responses/input_tokens", `{"input":"x","background":true}`); resp.StatusCode != 400 {
		t.Fatalf("refusals apply: %d %s", resp.StatusCode, b)
	}
}
