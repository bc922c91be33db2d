package mock

import (
	"context"
	"errors"
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

// allowOnly is a vocabulary bitset allowing ids alone.
func allowOnly(ids ...int) []uint32 {
	a := make([]uint32, tokenizer.VocabSize/32)
	for _, id := range ids {
		a[id/32] |= 1 << (id % 32)
	}
	return a
}

// guided steps one sequence with a set of allowed tokens per step (nil:
// none), feeding back what it produced as the scheduler does.
func guided(t *testing.T, e *Executor, id uint64, prompt []int, allows ...[]uint32) []int {
	t.Helper()
	st := step.Seq{ID: id, Tokens: prompt, Sample: true, Sampling: &step.Sampling{}}
	var out []int
	for _, allow := range allows {
		st.Allow = allow
		b := &step.Batch{Seqs: []step.Seq{st}}
		if err := e.Step(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		if b.Seqs[0].Err != nil {
			t.Fatal(b.Seqs[0].Err)
		}
		tok := b.Seqs[0].Out.ID
		out = append(out, tok)
		st.Pos += len(st.Tokens)
		st.Tokens = []int{tok}
	}
	e.Release([]uint64{id})
	return out
}

// A set that allows the script changes nothing; one that forces a token
// gets it, and the sequence, guided from then on, writes its script's
// answer and its stop token when the sets stop.
func TestAllowForced(t *testing.T) {
	tok := tokenizer.Default()
	e := New(tok, "m", Timing{})
	prompt := harmony.Render(tok, harmony.Conversation{Messages: []harmony.Message{{Role: "user", Content: "Hi"}}})
	free := run(t, e, 1, prompt, &step.Sampling{}, 10000)
	all := make([]uint32, tokenizer.VocabSize/32)
	for i := range all {
		all[i] = ^uint32(0)
	}
	sets := make([][]uint32, len(free))
	for i := range sets {
		sets[i] = all
	}
	if got := guided(t, e, 2, prompt, sets...); !equal(got, free) {
		t.Fatalf("a set allowing everything changed the reply:\n%v\n%v", got, free)
	}
	forced := tok.Encode(" forty")[0]
	answer := free[lastIndex(free, tokenizer.Message)+1 : len(free)-1]
	want := append([]int{forced, forced}, answer...)
	want = append(want, tokenizer.Return)
	sets = make([][]uint32, len(want))
	sets[0], sets[1] = allowOnly(forced), allowOnly(forced)
	if got := guided(t, e, 3, prompt, sets...); !equal(got, want) {
		t.Fatalf("forced %d then free: %v, want %v", forced, got, want)
	}
	if e.Active() != 0 {
		t.Fatal("state leaked")
	}
}

// A set that excludes the script's token makes the sequence follow the
// policy: an allowed special token (lowest first), else ", } or ] in that
// order, else a printable ASCII token by position (not tested here), else the lowest allowed token; once guided, the script's token no
// longer counts even where a set allows it.
func TestAllowPolicy(t *testing.T) {
	tok := tokenizer.Default()
	e := New(tok, "m", Timing{})
	prompt := tok.Encode("Once upon a time")
	script := run(t, e, 1, prompt, &step.Sampling{}, 100)
	brace, bracket, quote := tok.Encode("}")[0], tok.Encode("]")[0], tok.Encode(`"`)[0]
	for name, c := range map[string]struct {
		sets [][]uint32
		want []int
	}{
		"closers, in order": {[][]uint32{allowOnly(5, quote, bracket), allowOnly(5, quote, bracket, brace), allowOnly(quote, 3)},
			[]int{quote, quote, quote}},
		"closers without a quote": {[][]uint32{allowOnly(5, bracket), allowOnly(5, bracket, brace)},
			[]int{bracket, brace}},
		"specials first, lowest first": {[][]uint32{allowOnly(tokenizer.Call, tokenizer.Return, brace, 1)},
			[]int{tokenizer.Return}},
		"the script no longer counts": {[][]uint32{allowOnly(700), allowOnly(script[1], brace), allowOnly(script[2], 9000)},
			[]int{700, brace, min(script[2], 9000)}},
		"the script while allowed": {[][]uint32{allowOnly(script[0], 1), allowOnly(script[1], brace), allowOnly(3)},
			[]int{script[0], script[1], 3}},
	} {
		if got := guided(t, e, 2, prompt, c.sets...); !equal(got, c.want) {
			t.Errorf("%s: %v, want %v", name, got, c.want)
		}
	}
}

// Where no special token or closer is allowed, the pick is among the
// allowed tokens, and varies with the position (a grammar waiting for one
// particular token gets it).
func TestAllowPicksAmongAllowed(t *testing.T) {
	tok := tokenizer.Default()
	e := New(tok, "m", Timing{})
	prompt := tok.Encode("Once upon a time")
	sets := make([][]uint32, 12)
	for i := range sets {
		sets[i] = allowOnly(900, 500, 7000)
	}
	seen := map[int]bool{}
	for _, id := range guided(t, e, 2, prompt, sets...) {
		if id != 900 && id != 500 && id != 7000 {
			t.Fatalf("picked %d outside the set", id)
		}
		seen[id] = true
	}
	if len(seen) < 2 {
		t.Fatalf("the pick never varied: %v", seen)
	}
}

// A set that allows nothing in the vocabulary rejects its sequence alone.
func TestAllowNothing(t *testing.T) {
	tok := tokenizer.Default()
	e := New(tok, "m", Timing{})
	beyond := make([]uint32, tokenizer.VocabSize/32+1)
	beyond[len(beyond)-1] = 1 // token VocabSize: not in the vocabulary
	for _, allow := range [][]uint32{{}, allowOnly(), beyond} {
		b := &step.Batch{Seqs: []step.Seq{
			{ID: 1, Tokens: []int{1, 2}, Sample: true, Allow: allow},
			{ID: 2, Tokens: []int{3}, Sample: true},
		}}
		if err := e.Step(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		if !errors.Is(b.Seqs[0].Err, step.ErrRejected) || b.Seqs[1].Err != nil || e.Active() != 1 {
			t.Fatalf("allow of %d words: errors %v, %v; %d active", len(allow), b.Seqs[0].Err, b.Seqs[1].Err, e.Active())
		}
		e.Release([]uint64{2})
	}
}
