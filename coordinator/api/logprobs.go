package api

import (
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/gptoss/server/coordinator/harmony"
	"github.com/gptoss/server/coordinator/tokenizer"
	"github.com/gptoss/server/shared/step"
)

// Logprobs are reported for the tokens whose text is in the returned
// content (chat: final-channel and preamble text; completions: the text),
// in order. Reasoning, tool-call arguments, Harmony headers and control
// tokens are not listed. A token is listed once all of its text has been
// returned: text held back by stop-string matching waits, and tokens whose
// text a stop string cut off (even in part) are dropped with it, so the
// listed tokens' text is always a prefix of the content (all of it unless
// a stop string cut a token in two).

// lpEntry is one token to report.
type lpEntry struct {
	tok    step.Token
	start  int // byte offset of its text in the content stream
	offset int // its text's offset in the content, in characters (on release)
}

// logprobTrack follows one choice's tokens from the parser to the content
// the client sees.
type logprobTrack struct {
	stream  bool
	parser  *harmony.Parser
	win     []step.Token // recently pushed tokens the parser may still report
	winBase int          // position of win[0]
	n       int          // tokens pushed to the parser
	written int          // completions: bytes of text decoded so far
	pending []lpEntry    // reported, text not (wholly) returned yet
	done    []lpEntry    // released, in order (streams: this call's only)
	ends    []int        // per output delta of this call: len(done) after it
	runeAt  int          // content[:runeAt] holds runes characters
	runes   int
}

// begin starts a feed or finish call.
func (l *logprobTrack) begin() {
	l.ends = l.ends[:0]
	if l.stream {
		l.done = l.done[:0]
	}
}

// pushed notes a token about to be pushed to the parser.
func (l *logprobTrack) pushed(t step.Token, p *harmony.Parser) {
	l.parser = p
	if len(l.win) == 0 {
		l.winBase = l.n
	}
	l.win = append(l.win, t)
	l.n++
}

// trim keeps the last k pushed tokens, those the parser may still report.
func (l *logprobTrack) trim(k int) {
	if drop := len(l.win) - k; drop > 0 {
		l.win = l.win[:copy(l.win, l.win[drop:])]
		l.winBase += drop
	}
}

// onToken is the parser's OnToken hook.
func (l *logprobTrack) onToken(pos int, kind harmony.Kind) {
	if kind != harmony.Content {
		return
	}
	if i := pos - l.winBase; i >= 0 && i < len(l.win) {
		l.add(l.win[i], l.parser.Written(harmony.Content))
	}
}

// add queues a content token whose text starts at byte start.
func (l *logprobTrack) add(t step.Token, start int) {
	l.pending = append(l.pending, lpEntry{tok: t, start: start})
}

// contentIn is how many bytes of content text the tokens have produced.
func (l *logprobTrack) contentIn(c *choice) int {
	if c.parser != nil {
		return c.parser.Written(harmony.Content)
	}
	return l.written
}

// release moves the pending tokens whose text is all in content (the text
// returned so far; total bytes have been produced) to done; all releases
// every pending token (the sequence ended without a stop string). A token
// with no text of its own (the first bytes of a multi-byte character)
// goes with the text after it.
func (l *logprobTrack) release(total int, content string, all bool) {
	out := len(content)
	i := 0
	for ; i < len(l.pending); i++ {
		e := &l.pending[i]
		end := total
		if i+1 < len(l.pending) {
			end = l.pending[i+1].start
		}
		if !all && (end > out || end == e.start && e.start >= out) {
			break
		}
		if at := min(e.start, out); at > l.runeAt {
			l.runes += utf8.RuneCountInString(content[l.runeAt:at])
			l.runeAt = at
		}
		e.offset = l.runes
		l.done = append(l.done, *e)
	}
	l.pending = append(l.pending[:0], l.pending[i:]...)
}

// deltaEntries returns the entries that go with output delta i of the
// current call.
func (l *logprobTrack) deltaEntries(i int) []lpEntry {
	if l == nil || i >= len(l.ends) {
		return nil
	}
	from := 0
	if i > 0 {
		from = l.ends[i-1]
	}
	if l.stream {
		return l.done[from:l.ends[i]]
	}
	return nil
}

// ChatLogprobs is choices[i].logprobs of a chat completion or chunk.
type ChatLogprobs struct {
	Content []ChatTokenLogprob `json:"content"`
	Refusal *[]struct{}        `json:"refusal"` // always null
}

// ChatTokenLogprob is one content token with its alternatives.
type ChatTokenLogprob struct {
	Token       string           `json:"token"`
	Logprob     float32          `json:"logprob"`
	Bytes       []int            `json:"bytes"`
	TopLogprobs []ChatTopLogprob `json:"top_logprobs"`
}

// ChatTopLogprob is one of the most likely tokens at a position.
type ChatTopLogprob struct {
	Token   string  `json:"token"`
	Logprob float32 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

// CompletionLogprobs is choices[i].logprobs of a legacy completion.
type CompletionLogprobs struct {
	Tokens        []string         `json:"tokens"`
	TokenLogprobs []float32        `json:"token_logprobs"`
	TopLogprobs   []topLogprobsMap `json:"top_logprobs"`
	TextOffset    []int            `json:"text_offset"`
}

// topLogprobsMap is one position's {token: logprob} object, written most
// likely first (a token text seen twice keeps its first, larger, value).
type topLogprobsMap []ChatTopLogprob

func (m topLogprobsMap) MarshalJSON() ([]byte, error) {
	b := []byte{'{'}
	seen := make(map[string]bool, len(m))
	for _, t := range m {
		if seen[t.Token] {
			continue
		}
		seen[t.Token] = true
		if len(b) > 1 {
			b = append(b, ',')
		}
		b = appendJSONString(b, t.Token)
		b = append(b, ':')
		b = strconv.AppendFloat(b, float64(t.Logprob), 'g', -1, 32)
	}
	return append(b, '}'), nil
}

// minLogprob stands in for -inf (and NaN), which JSON cannot carry.
const minLogprob = -9999

func clampLogprob(v float32) float32 {
	if math.IsNaN(float64(v)) || v < minLogprob {
		return minLogprob
	}
	return v
}

// tokenBytes is a token's raw bytes as JSON numbers (a []byte would be
// written as base64).
func tokenBytes(tok *tokenizer.Tokenizer, id int) []int {
	raw, err := tok.TokenBytes(id)
	if err != nil {
		return []int{}
	}
	out := make([]int, len(raw))
	for i, c := range raw {
		out[i] = int(c)
	}
	return out
}

// chatLogprobs builds a chat choice's logprobs from its entries.
func chatLogprobs(tok *tokenizer.Tokenizer, es []lpEntry) *ChatLogprobs {
	out := &ChatLogprobs{Content: make([]ChatTokenLogprob, 0, len(es))}
	for _, e := range es {
		t := ChatTokenLogprob{Token: tok.TokenText(e.tok.ID), Logprob: clampLogprob(e.tok.Logprob),
			Bytes: tokenBytes(tok, e.tok.ID), TopLogprobs: make([]ChatTopLogprob, 0, len(e.tok.TopLogprobs))}
		for _, a := range e.tok.TopLogprobs {
			t.TopLogprobs = append(t.TopLogprobs, ChatTopLogprob{Token: tok.TokenText(a.ID),
				Logprob: clampLogprob(a.Logprob), Bytes: tokenBytes(tok, a.ID)})
		}
		out.Content = append(out.Content, t)
	}
	return out
}

// completionLogprobs builds a completion choice's logprobs. Each
// top_logprobs object holds the requested most likely tokens and, as
// OpenAI documents, the sampled token too when it is not among them.
func completionLogprobs(tok *tokenizer.Tokenizer, es []lpEntry) *CompletionLogprobs {
	out := &CompletionLogprobs{Tokens: make([]string, 0, len(es)), TokenLogprobs: make([]float32, 0, len(es)),
		TopLogprobs: make([]topLogprobsMap, 0, len(es)), TextOffset: make([]int, 0, len(es))}
	for _, e := range es {
		text, lp := tok.TokenText(e.tok.ID), clampLogprob(e.tok.Logprob)
		out.Tokens = append(out.Tokens, text)
		out.TokenLogprobs = append(out.TokenLogprobs, lp)
		out.TextOffset = append(out.TextOffset, e.offset)
		top := make(topLogprobsMap, 0, len(e.tok.TopLogprobs)+1)
		found := false
		for _, a := range e.tok.TopLogprobs {
			found = found || a.ID == e.tok.ID
			top = append(top, ChatTopLogprob{Token: tok.TokenText(a.ID), Logprob: clampLogprob(a.Logprob)})
		}
		if !found {
			top = append(top, ChatTopLogprob{Token: text, Logprob: lp})
		}
		out.TopLogprobs = append(out.TopLogprobs, top)
	}
	return out
}

// logprobsField is choices[i].logprobs for a finished choice: null unless
// the request asked for logprobs.
func (r *run) logprobsField(ch *choice) any {
	if ch.lp == nil {
		return jsonNull
	}
	if r.g.chat {
		return chatLogprobs(r.s.opts.Tokenizer, ch.lp.done)
	}
	return completionLogprobs(r.s.opts.Tokenizer, ch.lp.done)
}
