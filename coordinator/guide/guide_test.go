package guide

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"

	"github.com/gptoss/server/coordinator/harmony"
	"github.com/gptoss/server/coordinator/sched"
	"github.com/gptoss/server/coordinator/tokenizer"
)

// compiler opens llguidance, skipping the test when `make llguidance` has
// not been run (the Makefile's test target always runs it).
func compiler(t testing.TB) *Compiler {
	t.Helper()
	c := Shared()
	if err := c.Err(); errors.Is(err, ErrNoLibrary) {
		t.Skip(err)
	} else if err != nil {
		t.Fatal(err)
	}
	return c
}

// drive plays a model that draws from the Guide's masks: pick chooses
// among the allowed tokens, or proposes any token when nothing is
// constrained. It returns the tokens up to a stop (<|return|>, <|call|>,
// <|endoftext|>) or max.
func drive(t *testing.T, c *Compiler, g *Guide, pick func(mask []uint32, free bool) int, max int) []int {
	t.Helper()
	var out []int
	for range max {
		mask, err := g.Mask()
		if err != nil {
			t.Fatal(err)
		}
		ok := mask != nil
		tok := pick(mask, !ok)
		if ok && !get(mask, tok) {
			t.Fatalf("picked %d outside the mask", tok)
		}
		if err := g.Accept(tok); err != nil {
			t.Fatalf("after %v: %v", out, err)
		}
		out = append(out, tok)
		if tok == tokenizer.Return || tok == tokenizer.Call || tok == tokenizer.EndOfText {
			break
		}
	}
	return out
}

// randomPick draws uniformly among allowed tokens, except that it takes an
// allowed special token or closer with probability 1/3 (so random JSON
// ends in reasonable time); free steps draw random text, ending the
// message with probability 1/20.
func randomPick(r *rand.Rand, c *Compiler) func([]uint32, bool) int {
	closers := []int{}
	for _, s := range []string{"}", "]", "\""} {
		closers = append(closers, c.tok.Encode(s)...)
	}
	return func(mask []uint32, free bool) int {
		if free {
			if r.IntN(20) == 0 {
				return tokenizer.End
			}
			return r.IntN(tokenizer.NumOrdinary)
		}
		var allowed []int
		for i, w := range mask {
			for ; w != 0; w &= w - 1 {
				allowed = append(allowed, i*32+trailing(w))
			}
		}
		if r.IntN(3) == 0 {
			for _, t := range allowed {
				if c.tok.IsSpecial(t) {
					return t
				}
			}
			for _, t := range closers {
				if get(mask, t) {
					return t
				}
			}
		}
		return allowed[r.IntN(len(allowed))]
	}
}

func trailing(w uint32) int {
	n := 0
	for w&1 == 0 {
		w >>= 1
		n++
	}
	return n
}

const personSchema = `{"type":"object","properties":{"name":{"type":"string","maxLength":20},"age":{"type":"integer","minimum":0},"tags":{"type":"array","items":{"enum":["a","b"]},"maxItems":3}},"required":["name","age","tags"],"additionalProperties":false}`

func TestFinalFollowsSchemaAfterBudget(t *testing.T) {
	c := compiler(t)
	for seed := range 20 {
		r := rand.New(rand.NewPCG(uint64(seed), 1))
		gr, err := JSONSchema([]byte(personSchema))
		if err != nil {
			t.Fatal(err)
		}
		spec := &Spec{Final: gr, ReasoningBudget: 7}
		g, err := c.New(spec)
		if err != nil {
			t.Fatal(err)
		}
		ids := drive(t, c, g, randomPick(r, c), 600)
		g.Close()
		if ids[len(ids)-1] != tokenizer.Return {
			continue // ran out of tokens inside the JSON
		}
		msgs, _ := harmony.ParseMessages(c.tok, ids)
		var final string
		reasoning := 0
		for _, m := range msgs {
			switch m.Channel {
			case "final":
				final = m.Content
			case "analysis":
				reasoning += len(c.tok.Encode(m.Content))
			}
		}
		var v struct {
			Name string       `json:"name"`
			Age  *json.Number `json:"age"`
			Tags []string     `json:"tags"`
		}
		dec := json.NewDecoder(strings.NewReader(final))
		dec.DisallowUnknownFields()
		dec.UseNumber()
		if strings.ContainsAny(final, " \n\t") && !strings.Contains(final, `"`) {
			t.Fatalf("seed %d: whitespace outside strings: %q", seed, final)
		}
		if err := dec.Decode(&v); err != nil || v.Age == nil || strings.HasPrefix(v.Age.String(), "-") || strings.ContainsAny(v.Age.String(), ".eE") || v.Tags == nil || len(v.Tags) > 3 {
			t.Fatalf("seed %d: final %q does not follow the schema (%v)", seed, final, err)
		}
		// Re-encoding may merge tokens at most; the budget is on generated tokens.
		if reasoning > 7+1 {
			t.Fatalf("seed %d: %d reasoning tokens over a budget of 7: %+v", seed, reasoning, msgs)
		}
	}
}

func TestRequiredCallHasValidArguments(t *testing.T) {
	c := compiler(t)
	tools := []Tool{
		{Name: "get_weather", Params: `{"type":"object","properties":{"city":{"type":"string","maxLength":10},"unit":{"enum":["c","f"]}},"required":["city","unit"],"additionalProperties":false}`},
		{Name: "add", Params: `{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"}},"required":["a","b"],"additionalProperties":false}`},
	}
	for _, tc := range []struct {
		choice ToolChoice
		named  string
	}{{ChoiceRequired, ""}, {ChoiceNamed, "add"}} {
		calls := 0
		for seed := range 20 {
			r := rand.New(rand.NewPCG(uint64(seed), 2))
			g, err := c.New(&Spec{Tools: tools, Choice: tc.choice, Named: tc.named, ReasoningBudget: Unlimited})
			if err != nil {
				t.Fatal(err)
			}
			ids := drive(t, c, g, randomPick(r, c), 400)
			g.Close()
			if ids[len(ids)-1] != tokenizer.Call {
				if ids[len(ids)-1] == tokenizer.Return {
					t.Fatalf("%v: the answer ended without a call: %q", tc, c.tok.TokenText(0))
				}
				continue
			}
			calls++
			msgs, bad := harmony.ParseMessages(c.tok, ids)
			last := msgs[len(msgs)-1]
			name, _ := strings.CutPrefix(last.Recipient, "functions.")
			if bad != 0 || (tc.named != "" && name != tc.named) || (name != "add" && name != "get_weather") {
				t.Fatalf("%v: bad call %+v (%d malformations)", tc, last, bad)
			}
			var args map[string]any
			dec := json.NewDecoder(strings.NewReader(last.Content))
			dec.UseNumber()
			if err := dec.Decode(&args); err != nil {
				t.Fatalf("%v: arguments %q: %v", tc, last.Content, err)
			}
			if _, ok := args[map[string]string{"add": "a", "get_weather": "city"}[name]]; !ok || len(args) != 2 {
				t.Fatalf("%v: arguments %q do not follow %s's schema", tc, last.Content, name)
			}
		}
		if calls < 10 {
			t.Fatalf("%v: only %d of 20 answers finished their call", tc, calls)
		}
	}
}

func TestBudgetZeroSkipsReasoning(t *testing.T) {
	c := compiler(t)
	g, err := c.New(&Spec{ReasoningBudget: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	r := rand.New(rand.NewPCG(3, 3))
	ids := drive(t, c, g, randomPick(r, c), 40)
	msgs, _ := harmony.ParseMessages(c.tok, ids)
	if len(msgs) == 0 || msgs[0].Channel != "final" {
		t.Fatalf("messages %+v: want the final answer first", msgs)
	}
}

func TestBudgetEndsFreeReasoning(t *testing.T) {
	c := compiler(t)
	g, err := c.New(&Spec{ReasoningBudget: 12})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	// A model that reasons forever in the analysis channel.
	ids := []int{tokenizer.Channel}
	ids = append(ids, c.tok.Encode("analysis")...)
	ids = append(ids, tokenizer.Message)
	i := 0
	var out []int
	for range 60 {
		mask, err := g.Mask()
		if err != nil {
			t.Fatal(err)
		}
		ok := mask != nil
		var tok int
		switch {
		case i < len(ids):
			tok = ids[i]
		case ok:
			tok = firstSet(mask)
		default:
			tok = c.tok.Encode(" hmm")[0]
		}
		i++
		if ok && !get(mask, tok) {
			t.Fatalf("token %d outside the mask at %d", tok, i)
		}
		if err := g.Accept(tok); err != nil {
			t.Fatal(err)
		}
		out = append(out, tok)
		if len(out) > 30 {
			break
		}
	}
	msgs, _ := harmony.ParseMessages(c.tok, out)
	if len(msgs) < 2 || msgs[0].Channel != "analysis" || msgs[1].Channel != "final" {
		t.Fatalf("messages %+v: want the reasoning cut and the final answer next", msgs)
	}
	if n := len(c.tok.Encode(msgs[0].Content)); n != 12 {
		t.Fatalf("reasoning of %d tokens, want 12", n)
	}
}

// FreeNext promises that whatever the next token, the mask after it is
// nil: checked against every special token and a sample of text tokens,
// at every point of a budget-only Guide's run (each candidate on a fresh
// Guide brought to the same point), and it must turn false before the
// budget forces the end of the reasoning.
func TestFreeNextKeepsItsPromise(t *testing.T) {
	c := compiler(t)
	path := []int{tokenizer.Channel}
	path = append(path, c.tok.Encode("analysis")...)
	path = append(path, tokenizer.Message)
	path = append(path, c.tok.Encode(" one two three four five six")...)
	candidates := []int{tokenizer.Channel, tokenizer.Message, tokenizer.End, tokenizer.Start, tokenizer.Return,
		tokenizer.Call, tokenizer.Constrain}
	candidates = append(candidates, c.tok.Encode(" hello final commentary to=functions.f {")...)
	const budget = 5
	at := func(n int) *Guide {
		g, err := c.New(&Spec{ReasoningBudget: budget})
		if err != nil {
			t.Fatal(err)
		}
		for _, tok := range path[:n] {
			if err := g.Accept(tok); err != nil {
				t.Fatal(err)
			}
		}
		return g
	}
	frees := 0
	for n := range len(path) {
		g := at(n)
		free := g.FreeNext()
		g.Close()
		if !free {
			continue
		}
		frees++
		for _, tok := range candidates {
			g := at(n)
			if err := g.Accept(tok); err == nil {
				if m, err := g.Mask(); err != nil || m != nil {
					t.Fatalf("after %d tokens FreeNext was true, but token %d leads to a mask (err %v)", n, tok, err)
				}
			}
			g.Close()
		}
	}
	if frees < 4 {
		t.Fatalf("FreeNext true at %d points of %d: a budget-only Guide should pipeline while its budget lasts", frees, len(path))
	}
	// A response format constrains the answer: never free before it.
	gr, err := JSONSchema([]byte(`{"type":"object"}`))
	if err != nil {
		t.Fatal(err)
	}
	g, err := c.New(&Spec{Final: gr, ReasoningBudget: Unlimited})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if g.FreeNext() {
		t.Fatal("a Guide with a response format is free")
	}
}

func firstSet(m []uint32) int {
	for i, w := range m {
		if w != 0 {
			return i*32 + trailing(w)
		}
	}
	return -1
}

func TestRawRegex(t *testing.T) {
	c := compiler(t)
	g, err := c.New(&Spec{Raw: true, Stops: []int{tokenizer.EndOfText}, Final: &Grammar{Kind: KindRegex, Data: `[0-9]{3}-[a-z]{2,4}`}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	r := rand.New(rand.NewPCG(4, 4))
	ids := drive(t, c, g, randomPick(r, c), 40)
	if ids[len(ids)-1] != tokenizer.EndOfText {
		t.Fatalf("no end: %v", ids)
	}
	s, _ := c.tok.Decode(ids[:len(ids)-1])
	if !regexp.MustCompile(`^[0-9]{3}-[a-z]{2,4}$`).MatchString(s) {
		t.Fatalf("%q does not match", s)
	}
}

func TestCompileErrorsNameTheKeyword(t *testing.T) {
	c := compiler(t)
	for schema, want := range map[string]string{
		`{"type":"object","if":{},"then":{}}`: "if",
		`{"$ref":"#/$defs/nope"}`:             "nope",
	} {
		gr, err := JSONSchema([]byte(schema))
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.New(&Spec{Final: gr, ReasoningBudget: Unlimited})
		var ce *CompileError
		if !errors.As(err, &ce) || !strings.Contains(ce.Msg, want) {
			t.Fatalf("%s: %v, want a compile error naming %q", schema, err, want)
		}
	}
}

// The scheduler's view of a Guide.
var _ sched.Guide = (*Guide)(nil)

// BenchmarkBudgetOnly is the per-token cost of the guide every request of a
// profile with a reasoning budget carries: no grammar, no mask, the
// message structure followed on the scheduler's loop.
func BenchmarkBudgetOnly(b *testing.B) {
	c := Shared()
	text := c.tok.Encode(strings.Repeat("The quick brown fox jumps over the lazy dog. ", 40))
	var ids []int
	ids = append(ids, tokenizer.Channel)
	ids = append(ids, c.tok.Encode("analysis")...)
	ids = append(ids, tokenizer.Message)
	ids = append(ids, text...)
	b.ResetTimer()
	for b.Loop() {
		g, err := c.New(&Spec{ReasoningBudget: 1 << 20})
		if err != nil {
			b.Fatal(err)
		}
		for _, id := range ids {
			if _, err := g.Mask(); err != nil {
				b.Fatal(err)
			}
			if err := g.Accept(id); err != nil {
				b.Fatal(err)
			}
		}
		g.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ids)), "ns/token")
}
