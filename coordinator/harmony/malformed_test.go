package harmony

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gptoss/server/coordinator/tokenizer"
)

// parsed is everything a parser delivered for one sequence.
type parsed struct {
	reasoning, content string
	names, args        []string
	endedWithCall      bool
	kinds              map[Malformation]int
	deltas             []Delta
}

func (r parsed) String() string {
	return fmt.Sprintf("reasoning %q content %q calls %q %q ended-with-call %v malformed %v",
		r.reasoning, r.content, r.names, r.args, r.endedWithCall, r.kinds)
}

// parseAll pushes ids one at a time, as a stream does, and gathers the
// output; it fails the test on a delta that breaks the Delta contract.
func parseAll(t testing.TB, ids []int) (parsed, *Parser) {
	t.Helper()
	p := NewParser(tokenizer.Default())
	var r parsed
	add := func(ds []Delta) {
		for _, d := range ds {
			r.deltas = AppendDelta(r.deltas, d)
			switch d.Kind {
			case Reasoning:
				r.reasoning += d.Text
			case Content:
				r.content += d.Text
			case Function:
				if d.Name != "" {
					if d.Call != len(r.names) {
						t.Fatalf("call %d started as call number %d", len(r.names), d.Call)
					}
					r.names = append(r.names, d.Name)
					r.args = append(r.args, "")
				}
				if d.Call < 0 || d.Call >= len(r.names) {
					t.Fatalf("arguments for call %d, which never started", d.Call)
				}
				r.args[d.Call] += d.Text
			default:
				t.Fatalf("delta of kind %d", d.Kind)
			}
		}
	}
	for _, id := range ids {
		add(p.Push(id, nil))
	}
	add(p.Finish(nil))
	r.endedWithCall = p.EndedWithCall()
	r.kinds = map[Malformation]int{}
	for k := range NumMalformations {
		if n := p.MalformedBy(k); n > 0 {
			r.kinds[k] = n
		}
	}
	return r, p
}

// call is a tool call expected from a table case.
type call struct{ name, args string }

// TestParseMalformed holds the degradation of each malformed output: the
// parser keeps going, routes text it cannot place to content (reasoning
// when it is clearly in an analysis message), never shows control tokens,
// reports a call only for a complete, well-formed header, and counts each
// problem by kind.
func TestParseMalformed(t *testing.T) {
	const (
		ch   = tokenizer.Channel
		msg  = tokenizer.Message
		end  = tokenizer.End
		st   = tokenizer.Start
		ret  = tokenizer.Return
		cll  = tokenizer.Call
		cons = tokenizer.Constrain
		eot  = tokenizer.EndOfText
		sot  = tokenizer.StartOfText
	)
	analysis := []any{ch, "analysis", msg, "Think.", end, st, "assistant"}
	pre := func(parts ...any) []int { return seq(append(slices.Clone(analysis), parts...)...) }
	type want struct {
		reasoning, content string
		calls              []call
		endedWithCall      bool
		kinds              map[Malformation]int
	}
	cases := []struct {
		name string
		ids  []int
		want want
	}{
		// Well-formed references.
		{"well-formed answer", pre(ch, "final", msg, "4", ret),
			want{reasoning: "Think.", content: "4"}},
		{"well-formed call, recipient in the role header", pre(" to=functions.get_weather", ch, "commentary ", cons, "json", msg, `{"city":"Paris"}`, cll),
			want{reasoning: "Think.", calls: []call{{"get_weather", `{"city":"Paris"}`}}, endedWithCall: true}},
		{"well-formed call, recipient right after the prompt's role", seq(" to=functions.f", ch, "commentary", msg, `{}`, cll),
			want{calls: []call{{"f", `{}`}}, endedWithCall: true}},

		// A recipient in odd places.
		{"recipient after the content type", seq(ch, "commentary ", cons, "json to=functions.f", msg, `{}`, cll),
			want{calls: []call{{"f", `{}`}}, endedWithCall: true}},
		{"recipient where the channel name belongs", seq(ch, " to=functions.f", msg, `{}`, cll),
			want{calls: []call{{"f", `{}`}}, endedWithCall: true, kinds: map[Malformation]int{CallChannel: 1}}},
		{"call with no channel", pre(" to=functions.f", msg, `{}`, cll),
			want{reasoning: "Think.", calls: []call{{"f", `{}`}}, endedWithCall: true, kinds: map[Malformation]int{CallChannel: 1}}},
		{"two different recipients", seq(ch, "commentary to=functions.a to=functions.b", msg, `{"x":1}`, cll),
			want{content: `{"x":1}`, kinds: map[Malformation]int{BadRecipient: 1}}},
		{"empty function name", seq(ch, "commentary to=functions.", msg, `{}`, cll),
			want{content: `{}`, kinds: map[Malformation]int{BadRecipient: 1}}},
		{"invalid function name", seq(ch, "commentary to=functions.get.weather", msg, `{}`, cll),
			want{content: `{}`, kinds: map[Malformation]int{BadRecipient: 1}}},
		{"empty recipient", seq(ch, "commentary to=", msg, `{}`, cll),
			want{content: `{}`, kinds: map[Malformation]int{BadRecipient: 1}}},
		{"built-in tool", seq(ch, "analysis to=browser.search ", cons, "json", msg, `{"q":"x"}`, cll),
			want{content: `{"q":"x"}`, kinds: map[Malformation]int{BadRecipient: 1}}},
		{"to= in content is text", seq(ch, "final", msg, "send to=functions.x now", ret),
			want{content: "send to=functions.x now"}},

		// A tool call on the analysis channel: still a call, counted.
		{"call on the analysis channel", pre(" to=functions.f", ch, "analysis ", cons, "json", msg, `{}`, cll),
			want{reasoning: "Think.", calls: []call{{"f", `{}`}}, endedWithCall: true, kinds: map[Malformation]int{CallChannel: 1}}},

		// Tokens after <|end|> without a new <|start|>.
		{"text after <|end|>, then the end", seq(ch, "final", msg, "ok", end, " stray"),
			want{content: "ok stray", kinds: map[Malformation]int{OutsideMessage: 1, UnendedHeader: 1}}},
		{"text after <|end|>, then <|return|>", seq(ch, "final", msg, "ok", end, " more text", ret),
			want{content: "ok more text", kinds: map[Malformation]int{OutsideMessage: 1, UnendedHeader: 1}}},
		{"header after <|end|> without <|start|>", seq(ch, "analysis", msg, "hm", end, "assistant", ch, "final", msg, "ok", ret),
			want{reasoning: "hm", content: "ok", kinds: map[Malformation]int{OutsideMessage: 1}}},
		{"channel after <|end|> without <|start|>", seq(ch, "analysis", msg, "hm", end, ch, "final", msg, "ok", ret),
			want{reasoning: "hm", content: "ok", kinds: map[Malformation]int{OutsideMessage: 1}}},
		{"<|message|> after <|end|>", seq(ch, "analysis", msg, "hm", end, msg, "ok", ret),
			want{reasoning: "hm", content: "ok", kinds: map[Malformation]int{OutsideMessage: 1, NoChannel: 1}}},
		{"control tokens between messages", seq(ch, "final", msg, "ok", end, end, ret),
			want{content: "ok", kinds: map[Malformation]int{StrayToken: 2}}},

		// Missing channel tokens.
		{"message without a channel", pre(msg, "hi", end),
			want{reasoning: "Think.", content: "hi", kinds: map[Malformation]int{NoChannel: 1}}},
		{"first message without a channel", seq(msg, "hello", ret),
			want{content: "hello", kinds: map[Malformation]int{NoChannel: 1}}},

		// A refusal without any Harmony structure.
		{"plain text, then <|return|>", seq("I can't help with that.", ret),
			want{content: "I can't help with that.", kinds: map[Malformation]int{UnendedHeader: 1}}},
		{"plain text, then the end", seq("I can't help with that."),
			want{content: "I can't help with that.", kinds: map[Malformation]int{UnendedHeader: 1}}},
		{"long plain text", seq(strings.Repeat("I can't help with that. ", 20), ret),
			want{content: strings.Repeat("I can't help with that. ", 20), kinds: map[Malformation]int{UnendedHeader: 1}}},
		{"plain text starting with a role word", seq("user names are case-sensitive.", ret),
			want{content: "user names are case-sensitive.", kinds: map[Malformation]int{UnendedHeader: 1}}},
		{"plain text ended by <|endoftext|>", seq("\nSorry.\n", eot),
			want{content: "\nSorry.\n", kinds: map[Malformation]int{UnendedHeader: 1}}},

		// <|message|> twice.
		{"<|message|> twice", seq(ch, "final", msg, "a", msg, "b", ret),
			want{content: "ab", kinds: map[Malformation]int{StrayToken: 1}}},

		// Unknown or empty channels.
		{"unknown channel", seq(ch, "summary", msg, "hi", ret),
			want{content: "hi", kinds: map[Malformation]int{BadChannel: 1}}},
		{"empty channel", seq(ch, msg, "hi", ret),
			want{content: "hi", kinds: map[Malformation]int{BadChannel: 1}}},
		{"channel marker then constrain", seq(ch, cons, "json", msg, "hi", ret),
			want{content: "hi", kinds: map[Malformation]int{BadChannel: 1}}},
		{"two channels", seq(ch, "analysis", ch, "final", msg, "hi", ret),
			want{content: "hi", kinds: map[Malformation]int{BadChannel: 1}}},

		// Headers that never end.
		{"header without <|message|>, long", seq(strings.Repeat("word ", 100)),
			want{content: strings.Repeat("word ", 100), kinds: map[Malformation]int{UnendedHeader: 1}}},
		{"analysis header without <|message|>", seq(ch, "analysis", strings.Repeat(" step", 80), end, st, "assistant", ch, "final", msg, "ok", ret),
			want{reasoning: strings.Repeat(" step", 80), content: "ok", kinds: map[Malformation]int{UnendedHeader: 1}}},
		{"final header without <|message|>", seq(ch, "final", " Sorry, I can't.", ret),
			want{content: " Sorry, I can't.", kinds: map[Malformation]int{UnendedHeader: 1}}},
		{"call header without <|message|>", seq(ch, "commentary to=functions.f ", cons, "json", ` {"a":1}`, cll),
			want{content: ` {"a":1}`, kinds: map[Malformation]int{UnendedHeader: 1}}},
		{"text before the channel", seq("Sure.", ch, "final", msg, " 4", ret),
			want{content: "Sure. 4", kinds: map[Malformation]int{HeaderText: 1}}},
		{"text after the channel", seq(ch, "final Sure:", msg, " 4", ret),
			want{content: " Sure: 4", kinds: map[Malformation]int{HeaderText: 1}}},
		{"text in a call header: no call", seq(ch, "commentary to=functions.f Sure!", msg, `{}`, cll),
			want{content: " Sure!{}", kinds: map[Malformation]int{HeaderText: 1}}},
		{"a content type is not text", seq(ch, "commentary to=functions.f text", msg, `{}`, cll),
			want{calls: []call{{"f", `{}`}}, endedWithCall: true}},
		{"restarted header", seq("Hello", st, "assistant", ch, "final", msg, " world", ret),
			want{content: "Hello world", kinds: map[Malformation]int{UnendedHeader: 1}}},
		{"restarted role-only header", pre(st, "assistant", ch, "final", msg, "ok", ret),
			want{reasoning: "Think.", content: "ok", kinds: map[Malformation]int{UnendedHeader: 1}}},
		{"markup typed as text is text", seq("<|channel|>final", msg, "x", ret),
			want{content: "<|channel|>finalx", kinds: map[Malformation]int{HeaderText: 1, NoChannel: 1}}},

		// <|constrain|> in odd places.
		{"<|constrain|> in content", seq(ch, "final", msg, "a", cons, "b", ret),
			want{content: "ab", kinds: map[Malformation]int{StrayToken: 1}}},
		{"<|constrain|> before the channel", seq(cons, "json", ch, "commentary to=functions.f", msg, `{}`, cll),
			want{calls: []call{{"f", `{}`}}, endedWithCall: true}},
		{"<|constrain|> with no type", seq(ch, "final", cons, msg, "hi", ret),
			want{content: "hi"}},
		{"<|constrain|> between messages", seq(ch, "final", msg, "a", end, cons, "json", msg, "b", ret),
			want{content: "ab", kinds: map[Malformation]int{OutsideMessage: 1, NoChannel: 1}}},

		// <|call|> outside a to= message.
		{"<|call|> ending an answer", seq(ch, "final", msg, "done", cll),
			want{content: "done", kinds: map[Malformation]int{BadTerminator: 1}}},
		{"<|call|> ending a preamble", seq(ch, "commentary", msg, "Let me check.", cll),
			want{content: "Let me check.", kinds: map[Malformation]int{BadTerminator: 1}}},

		// <|return|> (or another stop) mid-header.
		{"<|return|> after the channel", seq(ch, "final", ret),
			want{kinds: map[Malformation]int{UnendedHeader: 1}}},
		{"<|return|> in a call header", seq(ch, "commentary to=functions.f ", cons, "json", ret),
			want{kinds: map[Malformation]int{UnendedHeader: 1}}},
		{"<|call|> in a call header", seq(ch, "commentary to=functions.f", cll),
			want{kinds: map[Malformation]int{UnendedHeader: 1}}},
		{"<|end|> mid-header, then a message", seq(ch, "analysis", end, st, "assistant", ch, "final", msg, "ok", ret),
			want{content: "ok", kinds: map[Malformation]int{UnendedHeader: 1}}},

		// The output ends mid-message (max_tokens): not a malformation.
		{"end mid-answer", seq(ch, "final", msg, "partial"),
			want{content: "partial"}},
		{"end mid-call", seq(ch, "commentary to=functions.f", msg, `{"a":`),
			want{calls: []call{{"f", `{"a":`}}}},
		{"end mid-header", seq(ch, "fin"),
			want{kinds: map[Malformation]int{UnendedHeader: 1}}},
		{"end mid-character", append(seq(ch, "final", msg, "caf"), byteTokens(t, "é")[0]),
			want{content: "caf\uFFFD"}},

		// Special tokens that are not Harmony's.
		{"<|endoftext|> ends the answer", seq(ch, "final", msg, "ok", eot),
			want{content: "ok"}},
		{"<|startoftext|> in content", seq(ch, "final", msg, "a", sot, "b", ret),
			want{content: "ab", kinds: map[Malformation]int{StrayToken: 1}}},
		{"reserved tokens in content", seq(ch, "final", msg, "a", 200000, 200013, tokenizer.VocabSize-1, "b", ret),
			want{content: "ab", kinds: map[Malformation]int{StrayToken: 3}}},
		{"reserved token in a header", seq(ch, 200004, "final", msg, "a", ret),
			want{content: "a", kinds: map[Malformation]int{StrayToken: 1}}},
		{"reserved token in header text", seq("Hel", 200011, "lo", ret),
			want{content: "Hello", kinds: map[Malformation]int{StrayToken: 1, UnendedHeader: 1}}},

		// Ids outside the vocabulary.
		{"invalid ids in content", seq(ch, "final", msg, "a", -1, tokenizer.VocabSize, 1<<40, "b", ret),
			want{content: "ab", kinds: map[Malformation]int{InvalidToken: 3}}},
		{"invalid ids in a header", seq(ch, -5, "final", tokenizer.VocabSize+7, msg, "a", ret),
			want{content: "a", kinds: map[Malformation]int{InvalidToken: 2}}},
		{"invalid id between messages", seq(ch, "final", msg, "a", end, -1, st, "assistant", ch, "final", msg, "b", ret),
			want{content: "ab", kinds: map[Malformation]int{InvalidToken: 1}}},

		// Other slips.
		{"<|start|> without <|end|>", seq(ch, "final", msg, "a", st, "assistant", ch, "final", msg, "b", ret),
			want{content: "ab", kinds: map[Malformation]int{BadTerminator: 1}}},
		{"a user message", seq(ch, "final", msg, "a", end, st, "user", msg, "b?", end),
			want{content: "ab?", kinds: map[Malformation]int{BadRole: 1, NoChannel: 1}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, _ := parseAll(t, c.ids)
			var calls []call
			for i := range r.names {
				calls = append(calls, call{r.names[i], r.args[i]})
			}
			if c.want.kinds == nil {
				c.want.kinds = map[Malformation]int{}
			}
			if r.reasoning != c.want.reasoning || r.content != c.want.content || !slices.Equal(calls, c.want.calls) ||
				r.endedWithCall != c.want.endedWithCall || fmt.Sprint(r.kinds) != fmt.Sprint(c.want.kinds) {
				t.Fatalf("input %q\n got %v\nwant %+v", decodeLossy(c.ids), r, c.want)
			}
			checkInvariants(t, c.ids, r)
		})
	}
}

// decodeLossy renders ids for failure messages, invalid ids as <|bad|>.
func decodeLossy(ids []int) string {
	tok := tokenizer.Default()
	var b strings.Builder
	for _, id := range ids {
		if id < 0 || id >= tokenizer.VocabSize {
			b.WriteString("<|bad|>")
			continue
		}
		b.WriteString(tok.TokenText(id))
	}
	return b.String()
}

// byteTokens are the single-byte tokens spelling s.
func byteTokens(t testing.TB, s string) []int {
	t.Helper()
	var out []int
	for _, c := range []byte(s) {
		id, ok := tokenizer.Default().ByteToken(c)
		if !ok {
			t.Fatalf("no token for byte %x", c)
		}
		out = append(out, id)
	}
	return out
}

// checkInvariants holds what every output must satisfy, whatever the ids:
// no special markup rendered (callers only pass ids whose ordinary text
// has no "<|" unless a case says otherwise), valid UTF-8, call names that
// the API accepts, and the same output when the ids arrive in other chunk
// sizes.
func checkInvariants(t *testing.T, ids []int, r parsed) {
	t.Helper()
	for _, d := range r.deltas {
		if !utf8.ValidString(d.Text) {
			t.Fatalf("invalid UTF-8 in %+v", d)
		}
		if d.Name != "" && !validFunctionName(d.Name) {
			t.Fatalf("call name %q", d.Name)
		}
	}
	for _, n := range []int{2, 3, 7, len(ids) + 1} {
		if got := parseChunked(ids, func(int) int { return n }); !slices.Equal(got, r.deltas) {
			t.Fatalf("chunks of %d: %+v, want %+v", n, got, r.deltas)
		}
	}
}

// parseChunked feeds ids in chunks as the API does (one output slice per
// chunk, reused), and merges the chunks' deltas.
func parseChunked(ids []int, size func(i int) int) []Delta {
	p := NewParser(tokenizer.Default())
	var all, out []Delta
	for i, k := 0, 0; i < len(ids); k++ {
		n := min(max(size(k), 1), len(ids)-i)
		out = out[:0]
		for _, id := range ids[i : i+n] {
			out = p.Push(id, out)
		}
		for _, d := range out {
			all = AppendDelta(all, d)
		}
		i += n
	}
	for _, d := range p.Finish(out[:0]) {
		all = AppendDelta(all, d)
	}
	return all
}

// fuzzIDs is the alphabet FuzzParse draws tokens from: Harmony's control
// tokens (often), other special and reserved tokens, ids outside the
// vocabulary, and ordinary tokens that spell headers, answers, JSON and
// split UTF-8 characters. No ordinary token has '<' or '|', so "<|" in
// the output can only be rendered markup.
func fuzzIDs(tb testing.TB) []int {
	tok := tokenizer.Default()
	ids := []int{
		tokenizer.Start, tokenizer.End, tokenizer.Message, tokenizer.Channel, tokenizer.Constrain,
		tokenizer.Return, tokenizer.Call,
		tokenizer.Start, tokenizer.End, tokenizer.Message, tokenizer.Channel, tokenizer.Message, tokenizer.Channel,
		tokenizer.EndOfText, tokenizer.StartOfText, 200000, 200001, 200004, 200009, 200013, tokenizer.VocabSize - 1,
		-1, tokenizer.VocabSize, 1 << 40,
	}
	for _, s := range fuzzWords {
		for _, id := range tok.Encode(s) {
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
	}
	for _, id := range byteTokens(tb, "é🙂") {
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	if len(ids) > 256 {
		tb.Fatalf("%d fuzz ids: more than a byte can pick", len(ids))
	}
	for _, id := range ids {
		if id >= 0 && id < tokenizer.NumOrdinary && strings.ContainsAny(tok.TokenText(id), "<|") {
			tb.Fatalf("fuzz token %d spells %q", id, tok.TokenText(id))
		}
	}
	return ids
}

var fuzzWords = []string{
	"assistant", " to=functions.get_weather", "to=functions.f", " to=browser.search", "to=python",
	"analysis", "final", "commentary", " commentary", "json", " json", "code", "user",
	`{"city":"Paris"}`, `{"city":`, "I can't help with that.", "Hello world", " step", "\n\n", " ", "4", "Think.",
	" Hello", " Sorry",
}

// harmonyControl reports whether id is one of the control tokens the
// parser acts on.
func harmonyControl(id int) bool {
	switch id {
	case tokenizer.Start, tokenizer.End, tokenizer.Message, tokenizer.Channel, tokenizer.Constrain,
		tokenizer.Return, tokenizer.Call, tokenizer.EndOfText:
		return true
	}
	return false
}

// toBytes writes ids in FuzzParse's alphabet (every id must be in it).
func toBytes(tb testing.TB, alphabet, ids []int) []byte {
	var b []byte
	for _, id := range ids {
		i := slices.Index(alphabet, id)
		if i < 0 {
			tb.Fatalf("id %d (%q) not in the fuzz alphabet", id, tokenizer.Default().TokenText(id))
		}
		b = append(b, byte(i))
	}
	return b
}

// FuzzParse feeds the parser arbitrary token sequences in arbitrary chunk
// sizes and checks that it never panics, never renders markup, never loses
// the text of a token it read inside a message body, reports each token it
// routes exactly once and with the text it delivered, and delivers the
// same output whatever the chunking, and the same text as the messages it
// records. Run it with make fuzz (go test -run XXX -fuzz '^FuzzParse$').
func FuzzParse(f *testing.F) {
	tok := tokenizer.Default()
	alphabet := fuzzIDs(f)
	ch, msg, end, st, ret, cll, cons := tokenizer.Channel, tokenizer.Message, tokenizer.End, tokenizer.Start, tokenizer.Return, tokenizer.Call, tokenizer.Constrain
	seeds := [][]int{
		// Well-formed.
		seq(ch, "analysis", msg, "Think.", end, st, "assistant", ch, "final", msg, "4", ret),
		seq(ch, "analysis", msg, "Think.", end, st, "assistant", " to=functions.get_weather", ch, " commentary", " ", cons, "json", msg, `{"city":"Paris"}`, cll),
		seq(ch, "commentary", " to=functions.get_weather", " ", cons, "json", msg, `{"city":"Paris"}`, cll),
		seq(ch, "commentary", msg, "Hello world", end, st, "assistant", "to=functions.f", ch, " commentary", msg, `{"city":"Paris"}`, cll),
		seq(ch, "analysis", msg, "Think.", end, st, "assistant", ch, "analysis", " ", "to=python", " ", "code", msg, "4", cll),
		// Malformed.
		seq(ch, "analysis", " to=functions.get_weather", msg, `{"city":"Paris"}`, cll),
		seq(ch, "final", msg, "4", end, "Hello world"),
		seq(st, "assistant", msg, "Hello world", end),
		seq("I can't help with that.", ret),
		seq("I can't help with that."),
		seq(ch, "final", msg, "4", msg, "4", ret),
		seq(ch, "user", msg, "4", ret),
		seq(ch, msg, "4", ret),
		seq(ch, "final", " step", " step", " step"),
		seq(cons, "json", ch, "final", msg, "4", cons, "4", ret),
		seq(ch, "final", msg, "4", cll),
		seq(ch, "final", ret, "4"),
		seq(ch, "commentary", " to=functions.get_weather", msg, `{"city":`),
		seq(ch, "final", msg, tokenizer.EndOfText, tokenizer.StartOfText, 200013, "4", ret),
		seq(ch, -1, "final", msg, tokenizer.VocabSize, "4", 1<<40, ret),
		seq("Hello world", st, "assistant", ch, "analysis", " step", end, ch, "final", msg, "4"),
		append(seq(ch, "final", msg), byteTokens(f, "é🙂")...),
	}
	for i, s := range seeds {
		f.Add(toBytes(f, alphabet, s), []byte{byte(i)})
	}
	f.Fuzz(func(t *testing.T, data, chunks []byte) {
		// Long inputs add nothing (a header overflows at 65 tokens) and
		// slow the fuzzer down (recorded messages grow by copying).
		data = data[:min(len(data), 1024)]
		ids := make([]int, len(data))
		utf8Clean := true // every ordinary token is valid UTF-8 on its own
		for i, b := range data {
			ids[i] = alphabet[int(b)%len(alphabet)]
			if bs, err := tok.TokenBytes(ids[i]); err == nil && !utf8.Valid(bs) {
				utf8Clean = false
			}
		}

		// Token by token, watching what is reported and in which state.
		p := NewParser(tok)
		p.record = true
		reported := map[int]Kind{}
		var order [3][]int // reported ids per kind, in order
		p.OnToken = func(pos int, k Kind) {
			if _, dup := reported[pos]; dup {
				t.Fatalf("token %d reported twice", pos)
			}
			if pos < 0 || pos >= p.n {
				t.Fatalf("token %d reported after %d pushes", pos, p.n)
			}
			reported[pos] = k
			order[k] = append(order[k], ids[pos])
		}
		var whole []Delta
		inBody := map[int]bool{} // positions pushed while a message body was open
		for i, id := range ids {
			if p.st == stContent {
				inBody[i] = true
			}
			for _, d := range p.Push(id, nil) {
				whole = AppendDelta(whole, d)
			}
			if len(p.header) > maxHeaderTokens {
				t.Fatalf("header buffer grew to %d tokens", len(p.header))
			}
			if p.Pending() > i+1 {
				t.Fatalf("%d tokens pending after %d pushes", p.Pending(), i+1)
			}
		}
		for _, d := range p.Finish(nil) {
			whole = AppendDelta(whole, d)
		}

		// No markup, valid UTF-8, valid call names, calls in order.
		var text [3]strings.Builder
		calls := 0
		for _, d := range whole {
			if strings.Contains(d.Text, "<|") || strings.Contains(d.Name, "<|") {
				t.Fatalf("markup in output: %+v", d)
			}
			if !utf8.ValidString(d.Text) {
				t.Fatalf("invalid UTF-8: %+v", d)
			}
			if d.Name != "" {
				if !validFunctionName(d.Name) || d.Call != calls || d.Kind != Function {
					t.Fatalf("call start %+v after %d calls", d, calls)
				}
				calls++
			}
			if d.Kind == Function && d.Call >= calls {
				t.Fatalf("arguments of a call not started: %+v", d)
			}
			text[d.Kind].WriteString(d.Text)
		}
		if calls != p.Calls() || (p.EndedWithCall() && calls == 0) {
			t.Fatalf("%d calls delivered, parser says %d (ended with call %v)", calls, p.Calls(), p.EndedWithCall())
		}
		for k := range text {
			if text[k].Len() != p.Written(Kind(k)) {
				t.Fatalf("kind %d: %d bytes delivered, Written says %d", k, text[k].Len(), p.Written(Kind(k)))
			}
		}

		// No lost text: an ordinary token read inside a message body is
		// always delivered. Each delivered token's text is what came out.
		for pos := range inBody {
			if id := ids[pos]; id >= 0 && id < tokenizer.NumOrdinary {
				if _, ok := reported[pos]; !ok {
					t.Fatalf("token %d (%q) in a message body was not delivered", pos, tok.TokenText(id))
				}
			}
		}
		// Nor is header text lost: a capitalised word ("Hello", not a
		// role, recipient or content type) in a header is delivered unless
		// it names the channel or follows <|constrain|>.
		for pos, id := range ids {
			if inBody[pos] || id < 0 || id >= tokenizer.NumOrdinary {
				continue
			}
			if s := tok.TokenText(id); len(s) < 2 || s[0] != ' ' || s[1] < 'A' || s[1] > 'Z' {
				continue
			}
			prev := -1
			for j := pos - 1; j >= 0; j-- {
				q := ids[j]
				if q < 0 || q >= tokenizer.VocabSize || (q < tokenizer.NumOrdinary && strings.TrimSpace(tok.TokenText(q)) == "") ||
					(tok.IsSpecial(q) && !harmonyControl(q)) {
					continue // no text, or only a word break
				}
				prev = q
				break
			}
			if _, ok := reported[pos]; !ok && prev != tokenizer.Channel && prev != tokenizer.Constrain {
				t.Fatalf("header word %d (%q) was not delivered", pos, tok.TokenText(id))
			}
		}
		if utf8Clean {
			for k := range text {
				s, err := tok.Decode(order[k])
				if err != nil || s != text[k].String() {
					t.Fatalf("kind %d: delivered %q, the reported tokens spell %q (%v)", k, text[k].String(), s, err)
				}
			}
		}

		// The recorded messages hold the delivered text, in order.
		var all, msgs strings.Builder
		for _, d := range whole {
			all.WriteString(d.Text)
		}
		for _, m := range p.messages {
			msgs.WriteString(m.Content)
		}
		if all.String() != msgs.String() {
			t.Fatalf("deltas %q, messages %q", all.String(), msgs.String())
		}
		if n := p.Malformed(); n < 0 {
			t.Fatalf("malformed %d", n)
		}

		// Streaming in arbitrary chunks gives the same output.
		got := parseChunked(ids, func(k int) int {
			if len(chunks) == 0 {
				return 1
			}
			return int(chunks[k%len(chunks)]%8) + 1
		})
		if !slices.Equal(got, whole) {
			t.Fatalf("chunked %+v, whole %+v", got, whole)
		}
	})
}
