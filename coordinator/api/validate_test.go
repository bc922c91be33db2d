package api

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/gptoss/server/coordinator/tokenizer"
)

// rangeCase is one value of one numeric field: accepted (ok) or refused
// with a 400 naming the field (code invalid_value for a number out of
// range, invalid_type for a value of the wrong type) whose message
// contains hint.
type rangeCase struct {
	field, value string
	ok           bool
	code, hint   string
}

// numericCases lists every numeric sampling field the two endpoints share.
// The bounds are those docs/coordinator.md documents.
func numericCases() []rangeCase {
	ok := func(f, v string) rangeCase { return rangeCase{field: f, value: v, ok: true} }
	bad := func(f, v, hint string) rangeCase {
		return rangeCase{field: f, value: v, code: "invalid_value", hint: hint}
	}
	typ := func(f, v string) rangeCase {
		return rangeCase{field: f, value: v, code: "invalid_type", hint: "'" + f + "'"}
	}
	var cs []rangeCase
	// Every field: wrong JSON types are refused, null is "not set".
	for _, f := range []string{"temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty", "frequency_penalty", "n", "max_tokens", "repetition_penalty"} {
		cs = append(cs, typ(f, `"1"`), typ(f, `true`), typ(f, `[1]`), typ(f, `{"v":1}`), ok(f, `null`))
	}
	for _, f := range []string{"temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty"} {
		// Not JSON numbers (Python's json module writes them for nan and
		// inf), and numbers beyond float64.
		cs = append(cs, bad(f, `NaN`, "'"+f+"'"), bad(f, `Infinity`, "'"+f+"'"), bad(f, `-Infinity`, "'"+f+"'"),
			bad(f, `1e400`, "'"+f+"'"), bad(f, `-1e400`, "'"+f+"'"))
	}
	for _, f := range []string{"top_k", "seed", "n", "max_tokens"} {
		// Integers only: no fractions, no exponents, nothing beyond int64.
		cs = append(cs, typ(f, `1.5`), typ(f, `1e3`), bad(f, `9223372036854775808`, "'"+f+"'"),
			bad(f, `-9223372036854775809`, "'"+f+"'"), bad(f, `99999999999999999999999`, "'"+f+"'"))
	}
	cs = append(cs,
		ok("temperature", `0`), ok("temperature", `2`), ok("temperature", `0.7`), ok("temperature", `-0`),
		bad("temperature", `-0.01`, "between 0 and 2"), bad("temperature", `2.0001`, "between 0 and 2"),

		ok("top_p", `1`), ok("top_p", `0.01`), ok("top_p", `1e-9`),
		bad("top_p", `0`, "greater than 0 and at most 1"), bad("top_p", `-0.5`, "greater than 0 and at most 1"),
		bad("top_p", `1.01`, "greater than 0 and at most 1"),

		ok("top_k", `-1`), ok("top_k", `0`), ok("top_k", `1`), ok("top_k", `40`), ok("top_k", fmt.Sprint(tokenizer.VocabSize)),
		bad("top_k", `-2`, "201088"), bad("top_k", fmt.Sprint(tokenizer.VocabSize+1), "201088"),
		// Past int32 (negative on the wire) and past uint32 (wrapped to 5).
		bad("top_k", `2147483648`, "201088"), bad("top_k", `4294967301`, "201088"), bad("top_k", `-2147483649`, "201088"),

		ok("min_p", `0`), ok("min_p", `1`), ok("min_p", `0.05`),
		bad("min_p", `-0.01`, "between 0 and 1"), bad("min_p", `1.01`, "between 0 and 1"),

		ok("presence_penalty", `-2`), ok("presence_penalty", `2`), ok("presence_penalty", `0.5`),
		bad("presence_penalty", `-2.01`, "between -2 and 2"), bad("presence_penalty", `2.01`, "between -2 and 2"),
		ok("frequency_penalty", `-2`), ok("frequency_penalty", `2`),
		bad("frequency_penalty", `-2.5`, "between -2 and 2"), bad("frequency_penalty", `3`, "between -2 and 2"),

		ok("seed", `0`), ok("seed", `-1`), ok("seed", `7`),
		ok("seed", `9223372036854775807`), ok("seed", `-9223372036854775808`),

		ok("n", `1`), ok("n", `8`),
		bad("n", `0`, "between 1 and 8"), bad("n", `-1`, "between 1 and 8"), bad("n", `9`, "between 1 and 8"),
		bad("n", `4294967297`, "between 1 and 8"),

		// latency_first's max_tokens_cap.
		ok("max_tokens", `1`), ok("max_tokens", `8192`),
		bad("max_tokens", `0`, ">= 1"), bad("max_tokens", `-1`, ">= 1"), bad("max_tokens", `8193`, "8192"),
		bad("max_tokens", `4294967297`, "8192"), bad("max_tokens", `9223372036854775807`, "8192"),

		ok("repetition_penalty", `1`), ok("repetition_penalty", `1.0`),
	)
	return cs
}

// postRange sends one value of one field and checks the answer.
func postRange(t *testing.T, e *testEnv, path, body string, c rangeCase) {
	t.Helper()
	resp, b := e.post(t, path, body)
	if c.ok {
		if resp.StatusCode != 200 {
			t.Errorf("%s %s=%s: status %d, want 200: %s", path, c.field, c.value, resp.StatusCode, b)
		}
		return
	}
	if resp.StatusCode != 400 {
		t.Errorf("%s %s=%s: status %d, want 400: %s", path, c.field, c.value, resp.StatusCode, b)
		return
	}
	eo := errorOf(t, b)
	msg, _ := eo["message"].(string)
	if eo["type"] != "invalid_request_error" || eo["param"] != c.field || eo["code"] != c.code || !strings.Contains(msg, c.hint) {
		t.Errorf("%s %s=%s: got type %v param %v code %v %q; want param %q code %q and a message with %q",
			path, c.field, c.value, eo["type"], eo["param"], eo["code"], msg, c.field, c.code, c.hint)
	}
}

// TestNumericFieldRanges holds every numeric sampling field of chat and
// completions to its type and range, at the API: nothing out of range
// reaches the scheduler (where top_k 2^31 wrapped negative on the wire and
// 2^32+5 silently became 5).
func TestNumericFieldRanges(t *testing.T) {
	e := lpEnv(t, newScript().content("Hi").ids)
	chat := func(extra string) string {
		return `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}]` + extra + `}`
	}
	completion := func(extra string) string {
		return `{"model":"gpt-oss-20b","prompt":"Hi"` + extra + `}`
	}
	for _, c := range numericCases() {
		extra := `,"` + c.field + `":` + c.value
		postRange(t, e, "/v1/chat/completions", chat(extra), c)
		postRange(t, e, "/v1/completions", completion(extra), c)
		if c.field == "max_tokens" {
			c.field = "max_completion_tokens"
			c.hint = strings.ReplaceAll(c.hint, "'max_tokens'", "'max_completion_tokens'")
			postRange(t, e, "/v1/chat/completions", chat(`,"max_completion_tokens":`+c.value), c)
		}
	}
}

// TestLogprobsFieldRanges: the logprobs fields, whose spelling differs
// between the endpoints (chat: logprobs boolean and top_logprobs 0-20;
// completions: logprobs 0-20).
func TestLogprobsFieldRanges(t *testing.T) {
	e := lpEnv(t, newScript().content("Hi").ids)
	chat := func(extra string) string {
		return `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"logprobs":true` + extra + `}`
	}
	completion := func(extra string) string {
		return `{"model":"gpt-oss-20b","prompt":"Hi"` + extra + `}`
	}
	ok := func(f, v string) rangeCase { return rangeCase{field: f, value: v, ok: true} }
	bad := func(f, v string) rangeCase {
		return rangeCase{field: f, value: v, code: "invalid_value", hint: "between 0 and 20"}
	}
	typ := func(f, v string) rangeCase {
		return rangeCase{field: f, value: v, code: "invalid_type", hint: "'" + f + "'"}
	}
	var cs []rangeCase
	for _, f := range []string{"top_logprobs", "logprobs"} {
		cs = append(cs, ok(f, `0`), ok(f, `1`), ok(f, `20`), ok(f, `null`), bad(f, `21`), bad(f, `-1`),
			bad(f, `4294967296`), bad(f, `9223372036854775808`),
			typ(f, `1.5`), typ(f, `"2"`), typ(f, `[2]`))
	}
	for _, c := range cs {
		extra := `,"` + c.field + `":` + c.value
		if c.field == "top_logprobs" {
			postRange(t, e, "/v1/chat/completions", chat(extra), c)
		} else {
			postRange(t, e, "/v1/completions", completion(extra), c)
		}
	}
	// Chat's logprobs is a boolean.
	for _, v := range []string{`1`, `"true"`, `0`} {
		postRange(t, e, "/v1/chat/completions", `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"logprobs":`+v+`}`,
			rangeCase{field: "logprobs", value: v, code: "invalid_type", hint: "boolean"})
	}
	// Completions' logprobs is a number, not a boolean.
	postRange(t, e, "/v1/completions", completion(`,"logprobs":true`), rangeCase{field: "logprobs", value: "true", code: "invalid_type", hint: "integer"})
}

// TestSamplingReachesEngineIntact: accepted values arrive at the executor
// as sent (no wrap-around between the API and the step).
func TestSamplingReachesEngineIntact(t *testing.T) {
	e := newEnv(t)
	var req ChatRequest
	body := `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"top_k":201088,"seed":-9223372036854775808,"temperature":2,"top_p":1e-9,"min_p":1,"presence_penalty":-2,"frequency_penalty":2}`
	if err := decodeJSON(strings.NewReader(body), &req); err != nil {
		t.Fatal(err)
	}
	g, err := e.srv.parseChat(&req)
	if err != nil {
		t.Fatal(err)
	}
	sp := g.sampling
	if sp.TopK != 201088 || !sp.HasSeed || sp.Seed != -9223372036854775808 || sp.Temperature != 2 || sp.TopP != 1e-9 ||
		sp.MinP != 1 || sp.PresencePenalty != -2 || sp.FrequencyPenalty != 2 {
		t.Fatalf("sampling %+v", sp)
	}
	// top_k -1 means off, as 0 does.
	req = ChatRequest{}
	if err := json.Unmarshal([]byte(`{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"top_k":-1}`), &req); err != nil {
		t.Fatal(err)
	}
	if g, err = e.srv.parseChat(&req); err != nil || g.sampling.TopK != 0 {
		t.Fatalf("top_k -1: %v %+v", err, g)
	}
}
