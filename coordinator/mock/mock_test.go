package mock

import (
	"context"
	"strings"
	"testing"

	"github.com/gptoss/server/coordinator/harmony"
	"github.com/gptoss/server/coordinator/tokenizer"
	"github.com/gptoss/server/shared/step"
)

// run drives one sequence through the executor the way the scheduler does.
func run(t *testing.T, e *Executor, id uint64, prompt []int, sp *step.Sampling, max int) []int {
	t.Helper()
	b := &step.Batch{Seqs: []step.Seq{{ID: id, Tokens: prompt, Pos: 0, Sample: true, Sampling: sp}}}
	var out []int
	for len(out) < max {
		if err := e.Step(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		tok := b.Seqs[0].Out.ID
		out = append(out, tok)
		if tok == tokenizer.Return || tok == tokenizer.EndOfText || tok == tokenizer.Call {
			break
		}
		b.Seqs[0].Pos += len(b.Seqs[0].Tokens)
		b.Seqs[0].Tokens = []int{tok}
	}
	e.Release([]uint64{id})
	return out
}

func TestChatReplyIsWellFormedHarmony(t *testing.T) {
	tok := tokenizer.Default()
	e := New(tok, "gpt-oss-20b", Timing{})
	prompt := harmony.Render(tok, harmony.Conversation{Messages: []harmony.Message{{Role: "user", Content: "What is Python?"}}})
	out := run(t, e, 1, prompt, &step.Sampling{}, 10000)
	if out[len(out)-1] != tokenizer.Return {
		t.Fatalf("reply does not end with <|return|>")
	}
	p := harmony.NewParser(tok)
	var deltas []harmony.Delta
	for _, id := range out {
		deltas = p.Push(id, deltas)
	}
	deltas = p.Finish(deltas)
	var reasoning, content string
	for _, d := range deltas {
		if d.Kind == harmony.Reasoning {
			reasoning += d.Text
		} else {
			content += d.Text
		}
	}
	if p.Malformed() != 0 || !strings.Contains(reasoning, "What is Python?") || !strings.Contains(content, "What is Python?") {
		t.Fatalf("malformed %d reasoning %q content %q", p.Malformed(), reasoning, content)
	}
	if e.Active() != 0 {
		t.Fatal("state leaked")
	}
}

func TestDeterminism(t *testing.T) {
	tok := tokenizer.Default()
	e := New(tok, "m", Timing{})
	prompt := tok.Encode("Once upon a time")
	greedy := &step.Sampling{}
	a, b := run(t, e, 1, prompt, greedy, 500), run(t, e, 2, prompt, greedy, 500)
	if !equal(a, b) || a[len(a)-1] != tokenizer.EndOfText {
		t.Fatal("greedy replies differ or raw reply does not end with <|endoftext|>")
	}
	s1 := &step.Sampling{Temperature: 1, Seed: 1, HasSeed: true}
	s2 := &step.Sampling{Temperature: 1, Seed: 2, HasSeed: true}
	if !equal(run(t, e, 3, prompt, s1, 500), run(t, e, 4, prompt, s1, 500)) {
		t.Fatal("same seed, different replies")
	}
	if equal(run(t, e, 5, prompt, s1, 500), run(t, e, 6, prompt, s2, 500)) {
		t.Fatal("different seeds, same reply")
	}
}

func TestMinReplyPadsOutput(t *testing.T) {
	tok := tokenizer.Default()
	e := New(tok, "m", Timing{})
	e.SetMinReply(2000)
	out := run(t, e, 1, tok.Encode("x"), &step.Sampling{}, 5000)
	if len(out) != 2001 || out[2000] != tokenizer.EndOfText {
		t.Fatalf("reply of %d tokens", len(out))
	}
}

func TestRejectsInconsistentFeed(t *testing.T) {
	tok := tokenizer.Default()
	e := New(tok, "m", Timing{})
	b := &step.Batch{Seqs: []step.Seq{{ID: 1, Tokens: []int{1, 2}, Sample: true}}}
	if err := e.Step(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	b.Seqs[0].Pos, b.Seqs[0].Tokens = 2, []int{12345} // not what was sampled
	if err := e.Step(context.Background(), b); err == nil {
		t.Fatal("a decode step that does not follow the generated text was accepted")
	}
	b.Seqs[0] = step.Seq{ID: 9, Tokens: []int{1}, Pos: 5}
	if err := e.Step(context.Background(), b); err == nil {
		t.Fatal("a sequence starting mid-way was accepted")
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestToolCallReply(t *testing.T) {
	tok := tokenizer.Default()
	e := New(tok, "m", Timing{})
	e.SetMinReply(1000) // padding must never corrupt a call's arguments
	conv := harmony.Conversation{
		Tools: []harmony.Tool{{Name: "get_weather", Description: "Weather.",
			Parameters: []byte(`{"type":"object","properties":{"city":{"type":"string"},"unit":{"type":"string"}},"required":["city"]}`)}},
		Messages: []harmony.Message{{Role: "user", Content: "Weather in Paris?"}},
	}
	out := run(t, e, 1, harmony.Render(tok, conv), &step.Sampling{}, 1000)
	if out[len(out)-1] != tokenizer.Call {
		t.Fatal("a tool call must end with <|call|>")
	}
	msgs, bad := harmony.ParseMessages(tok, out)
	if bad != 0 || len(msgs) != 2 || msgs[1].Recipient != "functions.get_weather" || msgs[1].Content != `{"city":"Weather in Paris?","unit":"Weather in Paris?"}` {
		t.Fatalf("messages %+v malformed %d", msgs, bad)
	}

	// After the tool result the mock answers with it.
	conv.Messages = append(conv.Messages,
		harmony.Message{Role: "assistant", Reasoning: msgs[0].Content, ToolCalls: []harmony.ToolCall{{Name: "get_weather", Arguments: msgs[1].Content}}},
		harmony.Message{Role: "tool", ToolName: "get_weather", Content: `{"temp_c":21}`})
	e.SetMinReply(0)
	out = run(t, e, 2, harmony.Render(tok, conv), &step.Sampling{}, 1000)
	msgs, _ = harmony.ParseMessages(tok, out)
	if last := msgs[len(msgs)-1]; last.Channel != "final" || !strings.Contains(last.Content, `{"temp_c":21}`) {
		t.Fatalf("after the tool result: %+v", msgs)
	}
}
