package api

import (
	"strconv"
	"unicode/utf8"

	"github.com/gptoss/server/coordinator/harmony"
)

// chunkEncoder writes the per-token streaming chunk (a chat content or
// reasoning delta, or a completion text piece) by appending the text to
// pieces prepared once per request. The same chunks as encoding/json would
// produce for ChatChunk and Completion, without reflection or allocation.
type chunkEncoder struct {
	head []byte // `data: {"id":...,"choices":[{"index":`
	// after the index, up to the opening quote of the text
	content, reasoning, text []byte
	// reasoningAgain repeats reasoning under a second key ("both").
	reasoningAgain []byte
	tail           []byte // after the text, to the end of the event
	completion     bool   // /v1/completions: "text" instead of a delta
	buf            []byte
}

func newChunkEncoder(r *run) *chunkEncoder {
	e := &chunkEncoder{completion: !r.g.chat}
	object := "text_completion"
	if r.g.chat {
		object = "chat.completion.chunk"
	}
	h := []byte(`data: {"id":`)
	h = appendJSONString(h, r.id)
	h = append(h, `,"object":"`+object+`","created":`...)
	h = strconv.AppendInt(h, r.created, 10)
	h = append(h, `,"model":`...)
	h = appendJSONString(h, r.s.opts.Model.ID)
	h = append(h, `,"system_fingerprint":`...)
	h = appendJSONString(h, r.s.fingerprint)
	h = append(h, `,"choices":[{"index":`...)
	e.head = h
	e.content = []byte(`,"delta":{"content":`)
	switch r.g.reasoningField {
	case "reasoning":
		e.reasoning = []byte(`,"delta":{"reasoning":`)
	case "both":
		e.reasoning = []byte(`,"delta":{"reasoning_content":`)
		e.reasoningAgain = []byte(`,"reasoning":`)
	default:
		e.reasoning = []byte(`,"delta":{"reasoning_content":`)
	}
	e.text = []byte(`,"text":`)
	tail := `},"logprobs":null,"finish_reason":null}]`
	if !r.g.chat {
		tail = `,"logprobs":null,"finish_reason":null}]`
	}
	if r.g.includeUsage {
		tail += `,"usage":null`
	}
	e.tail = []byte(tail + "}\n\n")
	return e
}

// delta returns the event for one piece of text; valid until the next call.
func (e *chunkEncoder) delta(index int, kind harmony.Kind, s string) []byte {
	b := append(e.buf[:0], e.head...)
	b = strconv.AppendInt(b, int64(index), 10)
	switch {
	case e.completion:
		b = append(b, e.text...)
	case kind == harmony.Reasoning:
		b = append(b, e.reasoning...)
		if e.reasoningAgain != nil {
			b = appendJSONString(b, s)
			b = append(b, e.reasoningAgain...)
		}
	default:
		b = append(b, e.content...)
	}
	b = appendJSONString(b, s)
	b = append(b, e.tail...)
	e.buf = b
	return b
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string, escaped as encoding/json
// does with HTML escaping off: quotes, backslashes and control characters
// escaped, U+2028 and U+2029 escaped (JavaScript line terminators), invalid
// UTF-8 replaced by U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
