package api

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gptoss/server/coordinator/harmony"
	"github.com/gptoss/server/coordinator/sched"
	"github.com/gptoss/server/coordinator/stats"
	"github.com/gptoss/server/coordinator/tokenizer"
	"github.com/gptoss/server/shared/step"
)

// choice turns one sequence's tokens into response text: Harmony parsing
// for chat, plain decoding for completions, and stop-string matching on the
// user-visible text. It is used by the streaming and the non-streaming path
// alike, so both produce the same text.
type choice struct {
	index  int
	stream *sched.Stream
	parser *harmony.Parser    // chat
	dec    *tokenizer.Decoder // completions
	stop   stopMatcher

	content, reasoning strings.Builder // accumulated (non-streaming)
	reasoningTokens    int
	stopHit            bool // a stop string matched: generation was cancelled
	final              *sched.Final
	tokens             int
	firstAt, lastAt    time.Time
	itl                []time.Duration
	streamDelay        []time.Duration // delivery to write, per streamed token
	deltas             []harmony.Delta
	recvBuf            []step.Token
	calls              []toolCall // function calls, in order
	// echo is the prompt's text, written before the choice's own text
	// (completions with echo).
	echo string

	lp *logprobTrack // nil unless the request asked for logprobs
}

// toolCall accumulates one function call of a choice.
type toolCall struct {
	id, name string
	args     strings.Builder
}

func newChoice(index int, st *sched.Stream, g *genParams, tok *tokenizer.Tokenizer) *choice {
	c := &choice{index: index, stream: st, stop: newStopMatcher(g.stop)}
	if g.chat {
		c.parser = harmony.NewParser(tok)
	} else {
		c.dec = tok.NewDecoder()
	}
	if g.sampling.Logprobs {
		c.lp = &logprobTrack{stream: g.stream}
		if c.parser != nil {
			c.parser.OnToken = c.lp.onToken
		}
	}
	return c
}

// feed consumes a batch of tokens and returns the text deltas they produce.
// The returned slice is reused by the next call.
func (c *choice) feed(toks []step.Token) []harmony.Delta {
	c.deltas = c.deltas[:0]
	if c.lp != nil {
		c.lp.begin()
	}
	for _, t := range toks {
		c.tokens++
		if c.stopHit {
			continue // generated before the cancel took effect; not shown
		}
		if c.parser != nil {
			if c.lp != nil {
				c.lp.pushed(t, c.parser)
			}
			c.deltas = c.parser.Push(t.ID, c.deltas)
			if c.lp != nil {
				c.lp.trim(c.parser.Pending())
			}
			if c.parser.InReasoning() && t.ID >= 0 && t.ID < tokenizer.NumOrdinary {
				// Reasoning text; not the <|message|> that opens it.
				c.reasoningTokens++
			}
		} else if !isStop(t.ID) {
			if c.lp != nil && t.ID >= 0 && t.ID < tokenizer.NumOrdinary {
				c.lp.add(t, c.lp.written)
			}
			s, err := c.dec.Add(t.ID)
			if err == nil && s != "" {
				c.deltas = harmony.AppendDelta(c.deltas, harmony.Delta{Kind: harmony.Content, Text: s})
				if c.lp != nil {
					c.lp.written += len(s)
				}
			}
		}
	}
	return c.filterStops()
}

// mark records that n tokens reached the client at time at: for streams
// when their event was written, otherwise when the scheduler delivered
// them. Tokens that arrive together have no gap between them, as a client
// sees it.
func (c *choice) mark(n int, at time.Time) {
	for range n {
		if c.firstAt.IsZero() {
			c.firstAt = at
		} else {
			c.itl = append(c.itl, at.Sub(c.lastAt))
		}
		c.lastAt = at
	}
}

// finish flushes held text once the sequence ended.
func (c *choice) finish(f *sched.Final) []harmony.Delta {
	c.final = f
	c.deltas = c.deltas[:0]
	if c.lp != nil {
		c.lp.begin()
	}
	if !c.stopHit {
		if c.parser != nil {
			c.deltas = c.parser.Finish(c.deltas)
		} else {
			s := c.dec.Flush()
			c.deltas = harmony.AppendDelta(c.deltas, harmony.Delta{Kind: harmony.Content, Text: s})
			if c.lp != nil {
				c.lp.written += len(s)
			}
		}
	}
	out := c.filterStops()
	if !c.stopHit {
		if rest := c.stop.flush(); rest != "" {
			c.content.WriteString(rest)
			out = c.appendOut(out, harmony.Delta{Kind: harmony.Content, Text: rest})
		}
		if c.lp != nil {
			// Whatever is still pending belongs to the text just flushed.
			c.lp.release(c.lp.contentIn(c), c.content.String(), true)
			if n := len(out); n > 0 && out[n-1].Kind == harmony.Content {
				c.lp.ends[n-1] = len(c.lp.done)
			}
		}
	}
	return out
}

// appendOut appends d to the choice's output deltas, with the logprob
// entries released so far (content deltas only ever get new ones).
func (c *choice) appendOut(out []harmony.Delta, d harmony.Delta) []harmony.Delta {
	n := len(out)
	out = harmony.AppendDelta(out, d)
	if c.lp != nil {
		if len(out) > n {
			c.lp.ends = append(c.lp.ends, len(c.lp.done))
		} else if n > 0 {
			c.lp.ends[n-1] = len(c.lp.done)
		}
	}
	return out
}

// filterStops runs content deltas through the stop matcher and accumulates
// everything for the non-streamed response. Stop strings apply to the
// answer text only, never to reasoning or tool arguments.
func (c *choice) filterStops() []harmony.Delta {
	out := c.deltas[:0]
	for _, d := range c.deltas {
		if c.stopHit {
			break
		}
		switch d.Kind {
		case harmony.Reasoning:
			c.reasoning.WriteString(d.Text)
			out = c.appendOut(out, d)
			continue
		case harmony.Function:
			if d.Name != "" {
				c.calls = append(c.calls, toolCall{id: newCallID(), name: d.Name})
			}
			if d.Call < len(c.calls) {
				c.calls[d.Call].args.WriteString(d.Text)
			}
			out = c.appendOut(out, d)
			continue
		}
		emit, hit := c.stop.push(d.Text)
		if emit != "" {
			c.content.WriteString(emit)
			if c.lp != nil {
				c.lp.release(c.lp.contentIn(c), c.content.String(), false)
			}
			out = c.appendOut(out, harmony.Delta{Kind: harmony.Content, Text: emit})
		}
		if hit {
			c.stopHit = true
			c.stream.Cancel()
		}
	}
	c.deltas = out
	return out
}

// recordMalformed adds the structural problems the Harmony parser smoothed
// over in this choice's output to rec, by kind: ParseWarnings (the total)
// and Malformed, which become gptoss_harmony_malformed_total{kind}.
func (c *choice) recordMalformed(rec *stats.Record) {
	if c.parser == nil {
		return
	}
	for k := range harmony.NumMalformations {
		n := c.parser.MalformedBy(k)
		if n == 0 {
			continue
		}
		if rec.Malformed == nil {
			rec.Malformed = make(map[string]int, 2)
		}
		rec.Malformed[k.String()] += n
		rec.ParseWarnings += n
	}
}

// finishReason is the OpenAI finish_reason for this choice.
func (c *choice) finishReason() string {
	if c.stopHit {
		return "stop"
	}
	if c.final == nil {
		return "abort"
	}
	if c.final.Reason == sched.FinishStop && c.parser != nil && c.parser.EndedWithCall() {
		return "tool_calls"
	}
	switch c.final.Reason {
	case sched.FinishStop, sched.FinishLength, sched.FinishAbort:
		return string(c.final.Reason)
	case sched.FinishCancelled:
		return "abort"
	default:
		return "error"
	}
}

// toolCalls is the choice's calls in the response shape.
func (c *choice) toolCalls() []ToolCall {
	if len(c.calls) == 0 {
		return nil
	}
	out := make([]ToolCall, len(c.calls))
	for i := range c.calls {
		out[i] = ToolCall{ID: c.calls[i].id, Type: "function",
			Function: FunctionCall{Name: c.calls[i].name, Arguments: c.calls[i].args.String()}}
	}
	return out
}

// newCallID makes a tool call id in OpenAI's style.
func newCallID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "call_" + hex.EncodeToString(b[:])
}

func isStop(id int) bool {
	return id == tokenizer.EndOfText || id == tokenizer.Return || id == tokenizer.Call
}

// stopMatcher finds stop strings in streamed text. It holds back the last
// few bytes that could be the start of a stop string, so a stop sequence
// split across tokens is still caught and never partly shown.
type stopMatcher struct {
	stops []string
	hold  int // longest stop minus one
	held  string
}

func newStopMatcher(stops []string) stopMatcher {
	m := stopMatcher{stops: stops}
	for _, s := range stops {
		m.hold = max(m.hold, len(s)-1)
	}
	return m
}

// push adds text; it returns the text safe to emit and whether a stop
// string matched (the text before it is emitted; the rest is dropped).
func (m *stopMatcher) push(s string) (string, bool) {
	if len(m.stops) == 0 {
		return s, false
	}
	buf := m.held + s
	cut := -1
	for _, st := range m.stops {
		if i := strings.Index(buf, st); i >= 0 && (cut < 0 || i < cut) {
			cut = i
		}
	}
	if cut >= 0 {
		m.held = ""
		return buf[:cut], true
	}
	keep := min(m.hold, len(buf))
	at := len(buf) - keep
	for at > 0 && at < len(buf) && !utf8.RuneStart(buf[at]) {
		at--
	}
	m.held = buf[at:]
	return buf[:at], false
}

func (m *stopMatcher) flush() string {
	s := m.held
	m.held = ""
	return s
}
