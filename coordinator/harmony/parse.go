package harmony

import (
	"strings"

	"github.com/gptoss/server/coordinator/tokenizer"
)

// Kind says where a piece of generated output belongs in the API response.
type Kind int

const (
	// Content is user-visible answer text (final channel, preambles).
	Content Kind = iota
	// Reasoning is chain of thought (analysis channel).
	Reasoning
	// Function is a function call: a delta with Name set starts call
	// number Call, the following ones carry its argument text.
	Function
)

// Delta is a piece of decoded output routed to one output field.
type Delta struct {
	Kind Kind
	Text string
	// Call numbers the tool calls of a sequence from 0 (Function only).
	Call int
	// Name is the function name, set only on the delta that starts a call.
	Name string
}

// ParsedMessage is one complete Harmony message as parsed from a
// completion, with the fields openai-harmony reports.
type ParsedMessage struct {
	Role        string `json:"role"`
	Channel     string `json:"channel"`
	Recipient   string `json:"recipient"`
	ContentType string `json:"content_type"`
	Content     string `json:"content"`
}

type state int

const (
	stHeader      state = iota // collecting a message header until <|message|>
	stContent                  // streaming message content
	stExpectStart              // after <|end|>: the next message must start
)

// maxHeaderTokens bounds a header; a model that never sends <|message|>
// (a random or broken model) has its text salvaged as content instead of
// being buffered forever.
const maxHeaderTokens = 64

// functionsPrefix is the recipient namespace of client-defined functions.
const functionsPrefix = "functions."

// Parser turns a stream of generated token ids into routed deltas. It
// starts in the header state because every prompt ends with
// <|start|>assistant. It never returns Harmony markup as text: control
// tokens are consumed, and malformed structure degrades into content while
// Malformed counts what went wrong. Memory is bounded by the header limit
// plus the text of the message being parsed when recording messages.
type Parser struct {
	tok       *tokenizer.Tokenizer
	dec       *tokenizer.Decoder
	st        state
	route     Kind
	call      int // current tool call number; -1 before the first
	header    []int
	malformed int
	stop      int  // the terminating token of the last message
	lastCall  bool // the last message was a function call

	record   bool
	messages []ParsedMessage
	cur      *ParsedMessage

	// OnToken, when set, is called for every generated ordinary token whose
	// text the parser routes to an output, at the moment it does so: with
	// the token's position among the pushed tokens (0 for the first Push)
	// and its Kind. The text the token completes follows in the deltas; it
	// may be "" while a multi-byte character is unfinished, and text flushed
	// for an unfinished character belongs to the last token reported. A
	// header salvaged as content reports its tokens late, with their own
	// positions (Pending says how many recent tokens that can still be).
	OnToken func(pos int, kind Kind)
	n       int    // tokens pushed
	hstart  int    // position of the header's first token
	written [3]int // bytes of text output per Kind
}

// NewParser returns a parser for one generated sequence.
func NewParser(tok *tokenizer.Tokenizer) *Parser {
	return &Parser{tok: tok, dec: tok.NewDecoder(), call: -1}
}

// ParseMessages parses a whole completion into its messages, feeding the
// parser token by token as a stream would.
func ParseMessages(tok *tokenizer.Tokenizer, ids []int) ([]ParsedMessage, int) {
	p := NewParser(tok)
	p.record = true
	var out []Delta
	for _, id := range ids {
		out = p.Push(id, out[:0])
	}
	p.Finish(out[:0])
	return p.messages, p.malformed
}

// InReasoning reports whether the last token pushed was reasoning text, so
// callers can count reasoning tokens for usage.
func (p *Parser) InReasoning() bool { return p.st == stContent && p.route == Reasoning }

// Written reports how many bytes of text the parser has output as kind.
func (p *Parser) Written(kind Kind) int { return p.written[kind] }

// Pending reports how many of the most recently pushed tokens are held in
// an unfinished header, whose text may still be salvaged (and reported to
// OnToken); earlier tokens will never be reported.
func (p *Parser) Pending() int {
	if p.st == stHeader {
		return len(p.header)
	}
	return 0
}

// Malformed reports how many structural problems the parser smoothed over.
func (p *Parser) Malformed() int { return p.malformed }

// Calls reports how many tool calls the sequence made.
func (p *Parser) Calls() int { return p.call + 1 }

// Push consumes one generated token and appends the output it completes.
func (p *Parser) Push(id int, out []Delta) []Delta {
	pos := p.n
	p.n++
	switch p.st {
	case stHeader:
		switch id {
		case tokenizer.Message:
			out = p.beginContent(out)
		case tokenizer.Start:
			p.header = p.header[:0] // a restarted header replaces the old one
			p.hstart = pos + 1
		case tokenizer.End, tokenizer.Return, tokenizer.Call, tokenizer.EndOfText:
			// A message that ended inside its header: salvage its text.
			if len(p.header) > 0 {
				p.malformed++
				out = p.salvageHeader(out)
			}
			p.stop, p.st = id, stExpectStart
		default:
			p.header = append(p.header, id)
			if len(p.header) > maxHeaderTokens {
				p.malformed++
				out = p.salvageHeader(out)
				p.startMessage(ParsedMessage{Role: "assistant"}, Content)
			}
		}
	case stContent:
		if !p.tok.IsSpecial(id) {
			return p.emit(out, id, pos)
		}
		out = p.flush(out)
		switch id {
		case tokenizer.End, tokenizer.Return, tokenizer.Call, tokenizer.EndOfText:
			p.endMessage()
			p.stop, p.st = id, stExpectStart
		case tokenizer.Start:
			p.endMessage()
			p.st, p.header, p.hstart = stHeader, p.header[:0], pos+1
		default:
			p.malformed++ // stray control token inside content: dropped
		}
	case stExpectStart:
		switch {
		case id == tokenizer.Start:
			p.st, p.header, p.hstart = stHeader, p.header[:0], pos+1
		case p.tok.IsSpecial(id):
			p.malformed++
		default:
			// Text after a finished message with no new header.
			p.malformed++
			p.startMessage(ParsedMessage{Role: "assistant"}, Content)
			return p.emit(out, id, pos)
		}
	}
	return out
}

// Finish flushes any text held back for an incomplete UTF-8 character and
// closes the last message.
func (p *Parser) Finish(out []Delta) []Delta {
	if p.st == stHeader && len(p.header) > 0 {
		p.malformed++
		return p.salvageHeader(out)
	}
	out = p.flush(out)
	p.endMessage()
	return out
}

// EndedWithCall reports whether the sequence ended in a function call: the
// model handed control to a tool, so the finish reason is "tool_calls".
// A call the model closed with <|return|> instead of <|call|> (a known
// slip) still counts.
func (p *Parser) EndedWithCall() bool { return p.lastCall && p.st != stContent }

func (p *Parser) emit(out []Delta, id, pos int) []Delta {
	s, err := p.dec.Add(id)
	if err != nil {
		p.malformed++
		return out
	}
	if p.OnToken != nil {
		p.OnToken(pos, p.route)
	}
	return p.text(out, s)
}

func (p *Parser) flush(out []Delta) []Delta { return p.text(out, p.dec.Flush()) }

func (p *Parser) text(out []Delta, s string) []Delta {
	if s == "" {
		return out
	}
	if p.cur != nil {
		p.cur.Content += s
	}
	p.written[p.route] += len(s)
	d := Delta{Kind: p.route, Text: s}
	if p.route == Function {
		d.Call = p.call
	}
	return AppendDelta(out, d)
}

// AppendDelta appends d to out, merging its text into the last delta when
// that continues the same output (same kind and call), so consumers see one
// delta per run rather than one per token. A delta that starts a tool call
// (Name set) is never merged into an earlier one.
func AppendDelta(out []Delta, d Delta) []Delta {
	if d.Text == "" && d.Name == "" {
		return out
	}
	if n := len(out); n > 0 && d.Name == "" && out[n-1].Kind == d.Kind && out[n-1].Call == d.Call {
		out[n-1].Text += d.Text
		return out
	}
	return append(out, d)
}

func (p *Parser) salvageHeader(out []Delta) []Delta {
	p.startMessage(ParsedMessage{Role: "assistant"}, Content)
	for i, id := range p.header {
		if !p.tok.IsSpecial(id) {
			out = p.emit(out, id, p.hstart+i)
		}
	}
	p.header = p.header[:0]
	out = p.flush(out)
	p.endMessage()
	return out
}

func (p *Parser) startMessage(m ParsedMessage, route Kind) {
	p.route, p.st = route, stContent
	p.lastCall = route == Function
	if p.record {
		p.messages = append(p.messages, m)
		p.cur = &p.messages[len(p.messages)-1]
	}
}

func (p *Parser) endMessage() { p.cur = nil }

// beginContent parses the collected header and routes the message body:
// analysis → reasoning; a functions.NAME recipient (after the role or after
// the channel) → a tool call; everything else (final, commentary
// preambles, unknown channels) → content.
func (p *Parser) beginContent(out []Delta) []Delta {
	var b strings.Builder
	for _, id := range p.header {
		switch id {
		case tokenizer.Channel:
			b.WriteString(" <|channel|> ")
		case tokenizer.Constrain:
			b.WriteString(" <|constrain|>")
		default:
			if bs, err := p.tok.TokenBytes(id); err == nil && !p.tok.IsSpecial(id) {
				b.Write(bs)
			}
		}
	}
	m := ParsedMessage{Role: "assistant"}
	fields := strings.Fields(b.String())
	for i := 0; i < len(fields); i++ {
		f := fields[i]
		switch {
		case f == "<|channel|>":
			if i+1 < len(fields) {
				i++
				m.Channel = fields[i]
			}
		case strings.HasPrefix(f, "to="):
			m.Recipient = strings.TrimPrefix(f, "to=")
		case i == 0 && m.Channel == "" && !strings.HasPrefix(f, "<|"):
			m.Role = f // a role word after <|start|> (assistant, or a tool author)
		default:
			m.ContentType = f
		}
	}
	if m.Channel == "" {
		p.malformed++
	}
	p.header = p.header[:0]
	route := Content
	switch {
	case strings.HasPrefix(m.Recipient, functionsPrefix) && len(m.Recipient) > len(functionsPrefix):
		p.call++
		route = Function
		p.startMessage(m, route)
		return AppendDelta(out, Delta{Kind: Function, Call: p.call, Name: strings.TrimPrefix(m.Recipient, functionsPrefix)})
	case m.Recipient != "":
		// A built-in tool (browser, python) that this server does not
		// offer: shown as content rather than dropped.
		p.malformed++
	case m.Channel == "analysis":
		route = Reasoning
	}
	p.startMessage(m, route)
	return out
}
