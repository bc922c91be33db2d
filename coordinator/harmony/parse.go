package harmony

import (
	"strings"

	"github.com/gptoss/server/coordinator/tokenizer"
)

// Kind says where a piece of generated text belongs in the API response.
type Kind int

const (
	// Content is user-visible answer text (final channel, preambles).
	Content Kind = iota
	// Reasoning is chain of thought (analysis channel).
	Reasoning
)

// Delta is a piece of decoded text routed to one output field.
type Delta struct {
	Kind Kind
	Text string
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

// Parser turns a stream of generated token ids into routed text deltas. It
// starts in the header state because every prompt ends with
// <|start|>assistant. It never returns Harmony markup as text: control
// tokens are consumed, and malformed structure degrades into content while
// Malformed counts what went wrong.
type Parser struct {
	tok       *tokenizer.Tokenizer
	dec       *tokenizer.Decoder
	st        state
	route     Kind
	header    []int
	malformed int
}

// NewParser returns a parser for one generated sequence.
func NewParser(tok *tokenizer.Tokenizer) *Parser {
	return &Parser{tok: tok, dec: tok.NewDecoder()}
}

// InReasoning reports whether the last token pushed was reasoning text, so
// callers can count reasoning tokens for usage.
func (p *Parser) InReasoning() bool { return p.st == stContent && p.route == Reasoning }

// Malformed reports how many structural problems the parser smoothed over.
func (p *Parser) Malformed() int { return p.malformed }

// Push consumes one generated token and appends the text it completes.
func (p *Parser) Push(id int, out []Delta) []Delta {
	switch p.st {
	case stHeader:
		switch id {
		case tokenizer.Message:
			p.beginContent()
		case tokenizer.Start:
			p.header = p.header[:0] // a restarted header replaces the old one
		case tokenizer.End, tokenizer.Return, tokenizer.Call, tokenizer.EndOfText:
			// A message that ended inside its header: salvage its text.
			if len(p.header) > 0 {
				p.malformed++
				out = p.salvageHeader(out)
			}
			p.st = stExpectStart
		default:
			p.header = append(p.header, id)
			if len(p.header) > maxHeaderTokens {
				p.malformed++
				out = p.salvageHeader(out)
				p.route, p.st = Content, stContent
			}
		}
	case stContent:
		if !p.tok.IsSpecial(id) {
			return p.emit(out, p.route, id)
		}
		out = p.flush(out)
		switch id {
		case tokenizer.End, tokenizer.Return, tokenizer.Call, tokenizer.EndOfText:
			p.st = stExpectStart
		case tokenizer.Start:
			p.st, p.header = stHeader, p.header[:0]
		default:
			p.malformed++ // stray control token inside content: dropped
		}
	case stExpectStart:
		switch {
		case id == tokenizer.Start:
			p.st, p.header = stHeader, p.header[:0]
		case p.tok.IsSpecial(id):
			p.malformed++
		default:
			// Text after a finished message with no new header.
			p.malformed++
			p.route, p.st = Content, stContent
			return p.emit(out, Content, id)
		}
	}
	return out
}

// Finish flushes any text held back for an incomplete UTF-8 character.
func (p *Parser) Finish(out []Delta) []Delta {
	if p.st == stHeader && len(p.header) > 0 {
		p.malformed++
		return p.salvageHeader(out)
	}
	return p.flush(out)
}

func (p *Parser) emit(out []Delta, k Kind, id int) []Delta {
	s, err := p.dec.Add(id)
	if err != nil {
		p.malformed++
		return out
	}
	return AppendDelta(out, k, s)
}

func (p *Parser) flush(out []Delta) []Delta {
	return AppendDelta(out, p.route, p.dec.Flush())
}

// AppendDelta appends text of kind k to out, merging it into the last
// delta when that has the same kind, so consumers see one delta per kind
// run rather than one per token.
func AppendDelta(out []Delta, k Kind, s string) []Delta {
	if s == "" {
		return out
	}
	if n := len(out); n > 0 && out[n-1].Kind == k {
		out[n-1].Text += s
		return out
	}
	return append(out, Delta{Kind: k, Text: s})
}

func (p *Parser) salvageHeader(out []Delta) []Delta {
	for _, id := range p.header {
		if p.tok.IsSpecial(id) {
			continue
		}
		out = p.emit(out, Content, id)
	}
	p.header = p.header[:0]
	out = AppendDelta(out, Content, p.dec.Flush())
	return out
}

// beginContent parses the collected header and routes the message body.
func (p *Parser) beginContent() {
	var b strings.Builder
	for _, id := range p.header {
		switch id {
		case tokenizer.Channel:
			b.WriteString(" <|channel|> ")
		case tokenizer.Constrain:
			b.WriteString(" <|constrain|> ")
		default:
			if bs, err := p.tok.TokenBytes(id); err == nil && !p.tok.IsSpecial(id) {
				b.Write(bs)
			}
		}
	}
	var channel, recipient string
	fields := strings.Fields(b.String())
	for i := 0; i < len(fields); i++ {
		f := fields[i]
		switch {
		case f == "<|channel|>" && i+1 < len(fields):
			i++
			channel = fields[i]
		case strings.HasPrefix(f, "to="):
			recipient = strings.TrimPrefix(f, "to=")
		}
	}
	p.route = Content
	if channel == "analysis" && recipient == "" {
		p.route = Reasoning
	}
	if channel == "" {
		p.malformed++
	}
	p.header = p.header[:0]
	p.st = stContent
}
