// Package mock is a fake model behind the real scheduler: it implements
// step.Executor with deterministic output and realistic step timing, so
// the whole serving path (admission, batching, streaming, cancellation,
// stats, limits) runs for real on a machine with no weights and no GPU.
//
// What it generates: for a chat prompt (ending in <|start|>assistant) a
// well-formed Harmony reply, a short analysis message then a final answer
// ending in <|return|>; when the prompt offers function tools and the last
// message is the user's, an analysis message then a call to the first tool
// (arguments naming its top-level parameters) ending in <|call|>; after a
// tool result, a final answer quoting it; for a raw completion prompt,
// plain text ending in <|endoftext|>. The text is a function of the prompt, and of the seed when
// temperature > 0 (random when no seed is given), so greedy requests repeat
// exactly, as a real model's would.
//
// It honours step.Seq.Follow, so shared/pipeline runs its steps back to
// back as the workers run theirs (the zero-bubble loop).
//
// A set of allowed tokens (step.Seq.Allow, structured output) is obeyed:
// the scripted token when the set allows it; otherwise the sequence leaves
// its script for good ("guided") and takes, deterministically, the allowed
// token that closes a JSON grammar soonest (see guide). A guided step
// without a set writes the script's answer (the text of its last message)
// and then its stop token. A set that allows no
// token of the vocabulary rejects that sequence alone, as the workers do.
package mock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/bits"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gptoss/server/coordinator/tokenizer"
	"github.com/gptoss/server/shared/step"
)

// Timing is the simulated cost of a step:
// Step + PerSeq × sequences + PerPrefillToken × prompt tokens.
type Timing struct {
	Step            time.Duration
	PerSeq          time.Duration
	PerPrefillToken time.Duration
}

// DefaultTiming approximates a fast single-GPU gpt-oss-20b deployment: about
// 100 tokens/s for one stream, slowing gently as the batch grows.
var DefaultTiming = Timing{Step: 10 * time.Millisecond, PerSeq: 20 * time.Microsecond, PerPrefillToken: 5 * time.Microsecond}

// Executor is the mock model.
type Executor struct {
	tok    *tokenizer.Tokenizer
	timing Timing
	model  string
	seqs   map[uint64]*seqState
	// gone holds the sequences rejected in a step, until their release:
	// a pipelined step sent behind that one may still name them.
	gone  map[uint64]bool
	sleep func(context.Context, time.Duration) error
	// minReply, when positive, pads every reply with filler text to at
	// least this many tokens, so load tests control output length with
	// max_tokens alone.
	minReply  atomic.Int64
	filler    []int
	user      []int // "user" as tokens, to find the last user message
	assistant []int
	closers   []int        // the tokens of ", } and ], in guide's order
	active    atomic.Int64 // len(seqs), readable from other goroutines
}

type seqState struct {
	prompt []int
	script []int // the reply without its final stop token
	stop   int   // <|return|> for chat, <|endoftext|> for raw text
	pos    int
	last   int // the last token produced
	// guided: a set of allowed tokens excluded the script's token once,
	// and the script no longer applies.
	guided bool
	// answer is the text of the script's last message, which a guided
	// sequence writes where nothing constrains it (apos tokens so far).
	answer []int
	apos   int
	closed int // closers taken in a row while guided (negative: a pause)
}

// New returns a mock executor that names itself model in its replies.
func New(tok *tokenizer.Tokenizer, model string, t Timing) *Executor {
	e := &Executor{tok: tok, timing: t, model: model, seqs: map[uint64]*seqState{}, gone: map[uint64]bool{}, sleep: sleepCtx,
		filler: tok.Encode(" " + strings.Join(words, " ") + "."), user: tok.Encode("user"), assistant: tok.Encode("assistant")}
	for _, c := range []byte(`"}]`) {
		if id, ok := tok.ByteToken(c); ok {
			e.closers = append(e.closers, id)
		}
	}
	return e
}

// SetMinReply makes every reply at least n tokens long (0: natural length).
// It may be called while the executor runs.
func (e *Executor) SetMinReply(n int) { e.minReply.Store(int64(n)) }

// Capabilities: the mock has no probability distribution, so it cannot
// return logprobs; the API refuses logprobs requests instead of faking them.
func (e *Executor) Capabilities() step.Capabilities { return step.Capabilities{} }

// Step produces the next scripted token for every sequence that samples.
func (e *Executor) Step(ctx context.Context, b *step.Batch) error {
	prefill := 0
	for i := range b.Seqs {
		st := &b.Seqs[i]
		s := e.seqs[st.ID]
		if e.gone[st.ID] || (s == nil && st.Follow) {
			// Rejected in the step before, which this one was sent behind
			// (step.Seq.Follow): the scheduler has retired it already.
			st.Err = fmt.Errorf("%w: mock: sequence %d was dropped in the step before", step.ErrRejected, st.ID)
			continue
		}
		if s == nil {
			if st.Pos != 0 {
				return fmt.Errorf("mock: sequence %d starts at position %d without state", st.ID, st.Pos)
			}
			s = &seqState{}
			e.seqs[st.ID] = s
			e.active.Add(1)
		}
		if s.script == nil {
			if st.Pos != len(s.prompt) {
				return fmt.Errorf("mock: sequence %d: prompt chunk at %d, expected %d", st.ID, st.Pos, len(s.prompt))
			}
			s.prompt = append(s.prompt, st.Tokens...)
			prefill += len(st.Tokens)
		} else if len(st.Tokens) != 1 || s.pos == 0 || (!st.Follow && st.Tokens[0] != s.last) {
			// The scheduler must feed back exactly what was sampled, as a
			// real KV cache would require.
			return fmt.Errorf("mock: sequence %d: decode input %v does not follow the generated text", st.ID, st.Tokens)
		}
		if !st.Sample {
			continue
		}
		if s.script == nil {
			s.script, s.stop = e.script(s.prompt, st.Sampling)
			s.answer = s.script[lastIndex(s.script, tokenizer.Message)+1:]
		}
		id := s.stop
		switch {
		case s.pos < len(s.script):
			id = s.script[s.pos]
		case s.stop != tokenizer.Call && int64(s.pos) < e.minReply.Load():
			id = e.filler[(s.pos-len(s.script))%len(e.filler)]
		}
		if st.Allow != nil || s.guided {
			var ok bool
			if id, ok = e.guide(s, id, st.Allow); !ok {
				st.Err = fmt.Errorf("%w: mock: sequence %d: no token of the vocabulary is allowed", step.ErrRejected, st.ID)
				e.drop(st.ID)
				e.gone[st.ID] = true // until the scheduler releases it
				continue
			}
		}
		s.pos++
		s.last = id
		st.Out = step.Token{ID: id}
	}
	d := e.timing.Step + time.Duration(len(b.Seqs))*e.timing.PerSeq + time.Duration(prefill)*e.timing.PerPrefillToken
	return e.sleep(ctx, d)
}

// guide applies a set of allowed tokens (nil: none) to the scripted token
// id of a sequence that has a set or is already guided, and returns the
// token to emit; false when the set allows no token of the vocabulary.
// The script's token is kept while the set allows it. Otherwise the
// sequence is guided from then on and takes, lowest id first within each
// rule, an allowed special token (a grammar that may end lets it: a stop
// or a message's end), else the first allowed of ", } and ] (which close
// JSON strings and values: " first, so a string never grows without end),
// else a token chosen by position (printable ASCII on even positions),
// so that a grammar that forces JSON finishes within a few tokens and one
// that waits for a particular token gets it. A guided step without a set writes the
// script's answer, then its stop token: a forced header leads to text.
func (e *Executor) guide(s *seqState, id int, allow []uint32) (int, bool) {
	switch {
	case allow == nil:
		if s.apos < len(s.answer) {
			s.apos++
			return s.answer[s.apos-1], true
		}
		return s.stop, true
	case !s.guided && step.Allowed(allow, id):
		return id, true
	}
	s.guided = true
	top := min(len(allow)*32, tokenizer.VocabSize)
	for t := tokenizer.NumOrdinary; t < top; t++ {
		if step.Allowed(allow, t) && e.tok.IsSpecial(t) {
			return t, true
		}
	}
	// A run of eight closers is no JSON nesting but a string that takes
	// them as characters (an e-mail address waiting for its "@"): then
	// they are left alone for 32 tokens.
	switch {
	case s.closed >= 8:
		s.closed = -32
	case s.closed < 0:
		s.closed++
	default:
		for _, t := range e.closers {
			if step.Allowed(allow, t) {
				s.closed++
				return t, true
			}
		}
		s.closed = 0
	}
	// Otherwise a token picked by position, on even positions among the
	// printable ASCII ones (ids 0 to 93, "!" to "~") when some are
	// allowed, else among all: the lowest alone would loop where a grammar
	// needs one particular token to move on (0.000… under an exclusive
	// minimum of 0, an e-mail address waiting for its "@", a list of
	// columns waiting for " FROM").
	h := (uint64(s.pos)+1)*0x9E3779B97F4A7C15 ^ uint64(len(s.prompt))
	h >>= 32
	var ascii []int
	for t := range min(94, top) {
		if step.Allowed(allow, t) {
			ascii = append(ascii, t)
		}
	}
	if len(ascii) > 0 && s.pos%2 == 0 {
		return ascii[h%uint64(len(ascii))], true
	}
	n := 0
	for _, word := range allow {
		n += bits.OnesCount32(word)
	}
	if n == 0 {
		return 0, false
	}
	k := int(h % uint64(n))
	for w, word := range allow {
		if c := bits.OnesCount32(word); k >= c {
			k -= c
			continue
		}
		for ; ; word &= word - 1 {
			if k == 0 {
				if t := w*32 + bits.TrailingZeros32(word); t < top {
					return t, true
				}
				break
			}
			k--
		}
		break
	}
	// The pick fell past the vocabulary: the lowest allowed token.
	for w, word := range allow {
		if word != 0 {
			if t := w*32 + bits.TrailingZeros32(word); t < top {
				return t, true
			}
			break
		}
	}
	return 0, false
}

// lastIndex is the index of the last v in ids, or -1.
func lastIndex(ids []int, v int) int {
	for i := len(ids) - 1; i >= 0; i-- {
		if ids[i] == v {
			return i
		}
	}
	return -1
}

// Release forgets finished sequences.
func (e *Executor) Release(ids []uint64) {
	for _, id := range ids {
		e.drop(id)
		delete(e.gone, id)
	}
}

func (e *Executor) drop(id uint64) {
	if _, ok := e.seqs[id]; ok {
		delete(e.seqs, id)
		e.active.Add(-1)
	}
}

// Active reports how many sequences hold state, for leak tests. Unlike
// Step and Release it may be called from any goroutine.
func (e *Executor) Active() int { return int(e.active.Load()) }

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return errors.New("mock: step interrupted")
	}
}

// script builds the whole reply for a prompt, and the token that ends it.
func (e *Executor) script(prompt []int, sp *step.Sampling) ([]int, int) {
	h := fnv.New64a()
	for _, id := range prompt {
		_, _ = h.Write([]byte{byte(id), byte(id >> 8), byte(id >> 16)})
	}
	seed := h.Sum64()
	if sp != nil && sp.Temperature > 0 {
		if sp.HasSeed {
			seed ^= uint64(sp.Seed)*0x9E3779B97F4A7C15 + 1
		} else {
			seed ^= rand.Uint64()
		}
	}
	rng := rand.New(rand.NewPCG(seed, seed>>1|1))
	question := e.lastUserText(prompt)
	answer := e.answer(rng, question)
	if !e.isChatPrompt(prompt) {
		return e.tok.Encode(answer), tokenizer.EndOfText
	}
	text, _ := e.tok.Decode(prompt)
	var ids []int
	if result, ok := lastToolResult(text); ok {
		// After a tool result: answer with it.
		ids = e.header(ids, "", "analysis", false)
		ids = append(ids, e.tok.Encode("The tool answered; summarise it.")...)
		ids = append(ids, tokenizer.End, tokenizer.Start)
		ids = e.header(ids, "assistant", "final", false)
		ids = append(ids, e.tok.Encode(fmt.Sprintf("Mock answer from %s using the tool result: %s", e.model, clip(result, 120)))...)
		return ids, tokenizer.Return
	}
	if name, params, ok := firstTool(text); ok && lastIsUser(text) {
		// Tools offered for a user turn: call the first one, as gpt-oss
		// does: reasoning, then a commentary message to functions.NAME
		// ended by <|call|>.
		ids = e.header(ids, "", "analysis", false)
		ids = append(ids, e.tok.Encode("Need to call "+name+".")...)
		ids = append(ids, tokenizer.End, tokenizer.Start)
		ids = e.header(ids, "assistant to=functions."+name, "commentary ", true)
		ids = append(ids, e.tok.Encode(mockArguments(params, question))...)
		return ids, tokenizer.Call
	}
	ids = e.header(ids, "", "analysis", false)
	ids = append(ids, e.tok.Encode(e.analysis(question))...)
	ids = append(ids, tokenizer.End, tokenizer.Start)
	ids = e.header(ids, "assistant", "final", false)
	ids = append(ids, e.tok.Encode(answer)...)
	return ids, tokenizer.Return
}

// header appends a Harmony message header up to <|message|>: the role (and
// recipient) text, the channel, and <|constrain|>json for tool calls.
func (e *Executor) header(ids []int, role, channel string, json bool) []int {
	if role != "" {
		ids = append(ids, e.tok.Encode(role)...)
	}
	ids = append(ids, tokenizer.Channel)
	ids = append(ids, e.tok.Encode(channel)...)
	if json {
		ids = append(ids, tokenizer.Constrain)
		ids = append(ids, e.tok.Encode("json")...)
	}
	return append(ids, tokenizer.Message)
}

// lastMessage returns the header and body of the last message of a decoded
// Harmony prompt, before the closing <|start|>assistant.
func lastMessage(text string) (header, body string) {
	text = strings.TrimSuffix(text, "<|start|>assistant")
	i := strings.LastIndex(text, "<|start|>")
	if i < 0 {
		return "", ""
	}
	msg := text[i+len("<|start|>"):]
	header, body, _ = strings.Cut(msg, "<|message|>")
	body = strings.TrimSuffix(strings.TrimSuffix(body, "<|end|>"), "<|call|>")
	return header, body
}

func lastIsUser(text string) bool {
	h, _ := lastMessage(text)
	return h == "user"
}

// lastToolResult reports the body of the last message when it is a tool
// result (author functions.NAME).
func lastToolResult(text string) (string, bool) {
	h, body := lastMessage(text)
	return body, strings.HasPrefix(h, "functions.")
}

// firstTool finds the first function of the developer message's
// "namespace functions" and its top-level parameter names.
func firstTool(text string) (name string, params []string, ok bool) {
	_, ns, found := strings.Cut(text, "namespace functions {")
	if !found {
		return "", nil, false
	}
	ns, _, _ = strings.Cut(ns, "} // namespace functions")
	_, decl, found := strings.Cut(ns, "type ")
	if !found {
		return "", nil, false
	}
	name, rest, found := strings.Cut(decl, " = ")
	if !found || name == "" {
		return "", nil, false
	}
	if !strings.HasPrefix(rest, "(_: {") {
		return name, nil, true
	}
	depth := 0
	for _, line := range strings.Split(rest, "\n")[1:] {
		line = strings.TrimSpace(line)
		if depth == 0 {
			if strings.HasPrefix(line, "}") {
				break
			}
			if p, _, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, "//") {
				params = append(params, strings.TrimSuffix(p, "?"))
			}
		}
		depth += strings.Count(line, "{") - strings.Count(line, "}")
	}
	return name, params, true
}

// mockArguments is a JSON object giving every parameter a string value.
func mockArguments(params []string, question string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, p := range params {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(p)
		v, _ := json.Marshal(clip(question, 40))
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.String()
}

// isChatPrompt reports whether the prompt ends with <|start|>assistant, the
// Harmony generation prompt.
func (e *Executor) isChatPrompt(p []int) bool {
	n := len(e.assistant)
	return len(p) > n && p[len(p)-n-1] == tokenizer.Start && slices.Equal(p[len(p)-n:], e.assistant)
}

// lastUserText decodes the last user message of a Harmony prompt, or the
// tail of a raw prompt, so the reply can refer to it.
func (e *Executor) lastUserText(p []int) string {
	n := len(e.user)
	body := p
	for i := len(p) - n - 2; i >= 0; i-- {
		if p[i] == tokenizer.Start && slices.Equal(p[i+1:i+1+n], e.user) && p[i+1+n] == tokenizer.Message {
			body = p[i+2+n:]
			for j, id := range body {
				if id == tokenizer.End {
					body = body[:j]
					break
				}
			}
			break
		}
	}
	if len(body) > 32 {
		body = body[len(body)-32:]
	}
	var b strings.Builder
	for _, id := range body {
		if e.tok.IsSpecial(id) {
			continue
		}
		if bs, err := e.tok.TokenBytes(id); err == nil {
			b.Write(bs)
		}
	}
	return strings.ToValidUTF8(strings.TrimSpace(b.String()), "")
}

var words = strings.Fields(`the model server stream token batch request answer latency
throughput scheduler worker tensor kernel memory cache block prompt reply quick steady
careful simple clear signal value result measure check reason plan step layer expert router
attention window sequence profile queue limit state record field`)

func (e *Executor) analysis(q string) string {
	return fmt.Sprintf("Mock engine; reply to %q.", clip(q, 24))
}

func (e *Executor) answer(rng *rand.Rand, q string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "This is a mock reply from %s (no model weights are loaded).", e.model)
	if q != "" {
		fmt.Fprintf(&b, " You said: %q.", clip(q, 80))
	}
	sentences := 3 + rng.IntN(20)
	for range sentences {
		n := 6 + rng.IntN(10)
		b.WriteByte(' ')
		for i := range n {
			w := words[rng.IntN(len(words))]
			if i == 0 {
				w = strings.ToUpper(w[:1]) + w[1:]
			} else {
				b.WriteByte(' ')
			}
			b.WriteString(w)
		}
		b.WriteByte('.')
	}
	return b.String()
}

func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}
