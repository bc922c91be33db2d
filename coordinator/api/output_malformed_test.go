package api

import (
	"bytes"
	"encoding/json"
	"maps"
	"strings"
	"testing"

	"github.com/gptoss/server/coordinator/sched"
	"github.com/gptoss/server/coordinator/stats"
	"github.com/gptoss/server/coordinator/tokenizer"
	"github.com/gptoss/server/shared/step"
)

// malformedScripts are model outputs that break the Harmony format, with
// what the client gets: they are never a failed request, never show
// markup, and are counted.
func malformedScripts() []struct {
	name               string
	ids                []int
	content, reasoning string
	kinds              map[string]int
} {
	s := func() *lpScript { return newScript() }
	return []struct {
		name               string
		ids                []int
		content, reasoning string
		kinds              map[string]int
	}{
		{"refusal without structure", s().text("I can't help with that.").ctl(tokenizer.Return).ids,
			"I can't help with that.", "", map[string]int{"unended_header": 1}},
		{"analysis header without <|message|>, stray tokens",
			s().ctl(tokenizer.Channel).text("analysis").text(strings.Repeat(" hmm", 70)).ctl(tokenizer.End).
				text("assistant").ctl(tokenizer.Channel).text("final").ctl(tokenizer.Message).
				text("A").ctl(200013, -1, tokenizer.VocabSize, tokenizer.Message, tokenizer.Constrain).text("B").ctl(tokenizer.Return).ids,
			"AB", strings.Repeat(" hmm", 70), map[string]int{"unended_header": 1, "outside_message": 1, "stray_token": 3, "invalid_token": 2}},
		{"call with an invalid name",
			s().ctl(tokenizer.Channel).text("commentary to=functions.get.weather ").ctl(tokenizer.Constrain).text("json").
				ctl(tokenizer.Message).text(`{"city":"Paris"}`).ctl(tokenizer.Call).ids,
			`{"city":"Paris"}`, "", map[string]int{"bad_recipient": 1}},
		{"text after the answer, then the end of the output",
			s().ctl(tokenizer.Channel).text("final").ctl(tokenizer.Message).text("Done.").ctl(tokenizer.End).text(" Really.").ids,
			"Done. Really.", "", map[string]int{"outside_message": 1, "unended_header": 1}},
	}
}

// malformedCount sums gptoss_harmony_malformed_total over its labels.
func malformedCount(t *testing.T, e *testEnv) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == "gptoss_harmony_malformed_total" {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

type malformedResp struct {
	Choices []struct {
		Message struct {
			Content          *string    `json:"content"`
			ReasoningContent *string    `json:"reasoning_content"`
			ToolCalls        []ToolCall `json:"tool_calls"`
		} `json:"message"`
		Delta struct {
			Content          *string         `json:"content"`
			ReasoningContent *string         `json:"reasoning_content"`
			ToolCalls        []ToolCallDelta `json:"tool_calls"`
		} `json:"delta"`
		Logprobs     json.RawMessage `json:"logprobs"`
		FinishReason *string         `json:"finish_reason"`
	} `json:"choices"`
	Error json.RawMessage `json:"error"`
}

// A malformed model output is a 200 with the degraded text, streamed or
// not (the stream's deltas add up to the same text), with logprobs too,
// and it is counted in gptoss_harmony_malformed_total.
func TestMalformedOutputDegrades(t *testing.T) {
	tools := `,"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]`
	for _, c := range malformedScripts() {
		t.Run(c.name, func(t *testing.T) {
			e := lpEnv(t, c.ids)
			per := 0
			for _, n := range c.kinds {
				per += n
			}
			requests := 0
			for _, extra := range []string{"", `,"logprobs":true,"top_logprobs":1`} {
				body := `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"max_tokens":300,"reasoning_field":"reasoning_content"` + tools + extra
				resp, b := e.post(t, "/v1/chat/completions", body+`}`)
				requests++
				if resp.StatusCode != 200 || strings.Contains(string(b), "<|") {
					t.Fatalf("status %d: %s", resp.StatusCode, b)
				}
				var r malformedResp
				if err := json.Unmarshal(b, &r); err != nil || len(r.Choices) != 1 {
					t.Fatalf("response %s: %v", b, err)
				}
				m := r.Choices[0].Message
				content, reasoning := "", ""
				if m.Content != nil {
					content = *m.Content
				}
				if m.ReasoningContent != nil {
					reasoning = *m.ReasoningContent
				}
				if content != c.content || reasoning != c.reasoning || len(m.ToolCalls) != 0 ||
					r.Choices[0].FinishReason == nil || *r.Choices[0].FinishReason != "stop" {
					t.Fatalf("got content %q reasoning %q: %s", content, reasoning, b)
				}
				if extra != "" {
					// The listed tokens spell the content, salvaged text included.
					lp := decodeChatLogprobs(t, r.Choices[0].Logprobs)
					if lp == nil || joinBytes(lp.Content) != content {
						t.Fatalf("logprobs do not spell the content %q: %s", content, b)
					}
				}

				resp, b = e.post(t, "/v1/chat/completions", body+`,"stream":true}`)
				requests++
				if resp.StatusCode != 200 {
					t.Fatalf("stream status %d: %s", resp.StatusCode, b)
				}
				var sc, sr strings.Builder
				finish := ""
				events := sseEvents(t, bytes.NewReader(b))
				if len(events) == 0 || events[len(events)-1] != "[DONE]" {
					t.Fatalf("stream not ended with [DONE]: %s", b)
				}
				for _, ev := range events[:len(events)-1] {
					if strings.Contains(ev, "<|") {
						t.Fatalf("markup in %s", ev)
					}
					var r malformedResp
					if err := json.Unmarshal([]byte(ev), &r); err != nil {
						t.Fatalf("chunk %s: %v", ev, err)
					}
					if len(r.Error) > 0 {
						t.Fatalf("error event %s", ev)
					}
					for _, ch := range r.Choices {
						if ch.Delta.Content != nil {
							sc.WriteString(*ch.Delta.Content)
						}
						if ch.Delta.ReasoningContent != nil {
							sr.WriteString(*ch.Delta.ReasoningContent)
						}
						if len(ch.Delta.ToolCalls) > 0 {
							t.Fatalf("tool call from a malformed call: %s", ev)
						}
						if ch.FinishReason != nil {
							finish = *ch.FinishReason
						}
					}
				}
				if sc.String() != c.content || sr.String() != c.reasoning || finish != "stop" {
					t.Fatalf("stream: content %q reasoning %q finish %q", sc.String(), sr.String(), finish)
				}
			}
			if got := malformedCount(t, e); got != float64(requests*per) {
				t.Fatalf("gptoss_harmony_malformed_total %v after %d requests, want %d", got, requests, requests*per)
			}
		})
	}
}

// recordMalformed reports a choice's malformations by kind, as
// gptoss_harmony_malformed_total labels them.
func TestChoiceRecordMalformed(t *testing.T) {
	for _, c := range malformedScripts() {
		ch := newChoice(0, nil, &genParams{chat: true}, tokenizer.Default())
		var toks []step.Token
		for _, id := range c.ids {
			toks = append(toks, step.Token{ID: id})
		}
		ch.feed(toks)
		ch.finish(&sched.Final{Reason: sched.FinishStop})
		var rec stats.Record
		ch.recordMalformed(&rec)
		if !maps.Equal(rec.Malformed, c.kinds) || rec.ParseWarnings != ch.parser.Malformed() {
			t.Fatalf("%s: recorded %v (%d warnings), want %v", c.name, rec.Malformed, rec.ParseWarnings, c.kinds)
		}
		if ch.content.String() != c.content || ch.reasoning.String() != c.reasoning {
			t.Fatalf("%s: content %q reasoning %q", c.name, ch.content.String(), ch.reasoning.String())
		}
	}
	// Completions have no parser: nothing to record.
	ch := newChoice(0, nil, &genParams{}, tokenizer.Default())
	var rec stats.Record
	ch.recordMalformed(&rec)
	if rec.Malformed != nil || rec.ParseWarnings != 0 {
		t.Fatalf("completions recorded %+v", rec)
	}
}
