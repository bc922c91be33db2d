package harmony

import (
	"bytes"
	"strings"
	"unicode"
	"unicode/utf8"

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

// Malformation is a kind of structural problem in the model's output that
// the parser smoothed over. The set is closed (NumMalformations kinds), so
// it can label a metric.
type Malformation int

const (
	// NoChannel: a message header without <|channel|>. Its text is content.
	NoChannel Malformation = iota
	// BadChannel: an empty, unknown or contradictory channel name. Content.
	BadChannel
	// BadRecipient: a recipient that is not functions.NAME with a valid
	// function name (a built-in tool this server does not offer, an empty
	// or malformed name, two different recipients). Its text is content.
	BadRecipient
	// CallChannel: a function call outside the commentary channel
	// (analysis, none, unknown). Still reported as the call.
	CallChannel
	// BadRole: a header whose role is not assistant (the model writing a
	// user, system or tool message). Routed by its channel.
	BadRole
	// HeaderText: text in a header that is not header structure (a
	// message that started before its <|message|>). The text is delivered
	// (reasoning on the analysis channel, otherwise content); a call
	// header with such text is not a call.
	HeaderText
	// UnendedHeader: a header cut short by a stop token, a new <|start|>,
	// the end of the output, or by outgrowing the header limit. Its
	// structure is dropped and its text delivered.
	UnendedHeader
	// OutsideMessage: text or header tokens after a finished message
	// without a new <|start|>. Parsed as a new message's header.
	OutsideMessage
	// StrayToken: a control, reserved or unused special token where it has
	// no meaning (inside content, between messages, in a header). Dropped.
	StrayToken
	// BadTerminator: <|call|> ending a message that has no recipient, or
	// a message cut short by <|start|> without <|end|>.
	BadTerminator
	// InvalidToken: an id outside the vocabulary. Dropped.
	InvalidToken
	// NumMalformations is the number of kinds.
	NumMalformations
)

var malformationNames = [NumMalformations]string{
	NoChannel: "no_channel", BadChannel: "bad_channel", BadRecipient: "bad_recipient",
	CallChannel: "call_channel", BadRole: "bad_role", HeaderText: "header_text",
	UnendedHeader: "unended_header", OutsideMessage: "outside_message", StrayToken: "stray_token",
	BadTerminator: "bad_terminator", InvalidToken: "invalid_token",
}

// String is the kind's metric label, e.g. "no_channel".
func (k Malformation) String() string {
	if k >= 0 && k < NumMalformations {
		return malformationNames[k]
	}
	return "unknown"
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
// <|start|>assistant.
//
// Whatever the ids, it never fails, never returns Harmony markup as text
// (special tokens are consumed, never rendered) and loses no text that is
// not header structure: malformed structure degrades into content (or
// reasoning, for text that is clearly inside an analysis message), and a
// function call is reported only for a complete, well-formed header (a
// functions.NAME recipient with a valid NAME, no stray text, then
// <|message|>). Each problem is counted by kind (MalformedBy). Memory is
// bounded by the header limit plus the text of the message being parsed
// when recording messages.
type Parser struct {
	tok      *tokenizer.Tokenizer
	dec      *tokenizer.Decoder
	st       state
	route    Kind
	call     int // current tool call number; -1 before the first
	header   []int
	stop     int    // the terminating token of the last message
	lastCall bool   // the last message was a function call
	toTool   bool   // the current message has a recipient
	channel  string // the current message's channel, once its content began
	// structure: content text is not decoded (NewStructureParser).
	structure bool

	malformed [NumMalformations]int

	// Scratch space of scanHeader, reused across headers.
	hbuf  []byte
	spans [][2]int
	marks []hmark
	items []hitem
	free  []bool

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

// NewStructureParser returns a parser that follows the message structure
// alone: headers, channels, recipients and calls as NewParser reads them,
// but content tokens are not decoded, so deltas of content carry no text.
// The structured-output guides follow every generated token with one, on
// the scheduler's loop, where decoding text nobody reads would cost every
// step.
func NewStructureParser(tok *tokenizer.Tokenizer) *Parser {
	p := NewParser(tok)
	p.structure = true
	return p
}

// ParseMessages parses a whole completion into its messages, feeding the
// parser token by token as a stream would. It returns the messages and the
// number of malformations.
func ParseMessages(tok *tokenizer.Tokenizer, ids []int) ([]ParsedMessage, int) {
	p := NewParser(tok)
	p.record = true
	var out []Delta
	for _, id := range ids {
		out = p.Push(id, out[:0])
	}
	p.Finish(out[:0])
	return p.messages, p.Malformed()
}

// InReasoning reports whether the last token pushed was reasoning text, so
// callers can count reasoning tokens for usage.
func (p *Parser) InReasoning() bool { return p.st == stContent && p.route == Reasoning }

// Content reports whether the last token pushed left the parser inside a
// message's content, and that message's route and channel: what the
// structured-output guide (coordinator/guide) constrains is decided by the
// same reading of the header as the API's.
func (p *Parser) Content() (route Kind, channel string, ok bool) {
	if p.st != stContent {
		return 0, "", false
	}
	return p.route, p.channel, true
}

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
func (p *Parser) Malformed() int {
	n := 0
	for _, c := range p.malformed {
		n += c
	}
	return n
}

// MalformedBy reports how many problems of kind k the parser smoothed over.
func (p *Parser) MalformedBy(k Malformation) int {
	if k < 0 || k >= NumMalformations {
		return 0
	}
	return p.malformed[k]
}

// Calls reports how many tool calls the sequence made.
func (p *Parser) Calls() int { return p.call + 1 }

func (p *Parser) warn(k Malformation) { p.malformed[k]++ }

// Push consumes one generated token and appends the output it completes.
func (p *Parser) Push(id int, out []Delta) []Delta {
	pos := p.n
	p.n++
	valid := id >= 0 && id < tokenizer.VocabSize
	if !valid {
		p.warn(InvalidToken)
	}
	switch p.st {
	case stHeader:
		switch id {
		case tokenizer.Message:
			out = p.beginContent(out)
		case tokenizer.Start:
			// A restarted header replaces the old one; text it held is
			// salvaged.
			out = p.salvageHeader(out)
			p.st, p.hstart = stHeader, pos+1
		case tokenizer.End, tokenizer.Return, tokenizer.Call, tokenizer.EndOfText:
			// A message that ended inside its header: salvage its text.
			out = p.salvageHeader(out)
			p.stop, p.st = id, stExpectStart
		default:
			if valid && p.tok.IsSpecial(id) && id != tokenizer.Channel && id != tokenizer.Constrain {
				p.warn(StrayToken)
			}
			// Every token is kept (an invalid or stray one only separates
			// words) so header token i is at position hstart+i.
			p.header = append(p.header, id)
			if len(p.header) > maxHeaderTokens {
				out = p.overflowHeader(out)
			}
		}
	case stContent:
		if !valid {
			return out
		}
		if !p.tok.IsSpecial(id) {
			return p.emit(out, id, pos)
		}
		out = p.flush(out)
		switch id {
		case tokenizer.End, tokenizer.Return, tokenizer.Call, tokenizer.EndOfText:
			if id == tokenizer.Call && !p.toTool {
				p.warn(BadTerminator)
			}
			p.endMessage()
			p.stop, p.st = id, stExpectStart
		case tokenizer.Start:
			p.warn(BadTerminator) // no <|end|> before the next message
			p.endMessage()
			p.st, p.header, p.hstart = stHeader, p.header[:0], pos+1
		default:
			p.warn(StrayToken) // stray control token inside content: dropped
		}
	case stExpectStart:
		switch {
		case !valid:
		case id == tokenizer.Start:
			p.st, p.header, p.hstart = stHeader, p.header[:0], pos+1
		case id == tokenizer.Message:
			// A body with no header at all.
			p.warn(OutsideMessage)
			p.st, p.header, p.hstart = stHeader, p.header[:0], pos+1
			out = p.beginContent(out)
		case id == tokenizer.Channel || id == tokenizer.Constrain || !p.tok.IsSpecial(id):
			// A header, or text, without <|start|>: parsed as the header of
			// a new message (salvaged as text if it turns out to be text).
			p.warn(OutsideMessage)
			p.st, p.header, p.hstart = stHeader, append(p.header[:0], id), pos
		default:
			p.warn(StrayToken)
		}
	}
	return out
}

// Finish flushes any text held back for an incomplete UTF-8 character and
// closes the last message; a header still open is salvaged.
func (p *Parser) Finish(out []Delta) []Delta {
	if p.st == stHeader {
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
	if p.structure {
		if p.OnToken != nil {
			p.OnToken(pos, p.route)
		}
		return out
	}
	s, err := p.dec.Add(id)
	if err != nil {
		// Unreachable: Push drops (and counts) ids outside the vocabulary.
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

func (p *Parser) startMessage(m ParsedMessage, route Kind) {
	p.route, p.st = route, stContent
	p.lastCall = route == Function
	p.toTool = m.Recipient != ""
	if p.record {
		p.messages = append(p.messages, m)
		p.cur = &p.messages[len(p.messages)-1]
	}
}

func (p *Parser) endMessage() { p.cur = nil }

// emitFree outputs the header tokens scanHeader marked as text, with their
// own positions, on the current route.
func (p *Parser) emitFree(out []Delta) []Delta {
	for i, id := range p.header {
		if p.free[i] {
			out = p.emit(out, id, p.hstart+i)
		}
	}
	return out
}

// salvageHeader ends a header that will not get its <|message|> (a stop
// token, a new <|start|>, the end of the output): its structure is
// dropped and any text in it is delivered as a message of its own.
func (p *Parser) salvageHeader(out []Delta) []Delta {
	if len(p.header) == 0 {
		return out
	}
	h := p.scanHeader()
	if h.fields > 0 {
		p.warn(UnendedHeader)
	}
	if h.anyFree {
		p.startMessage(h.salvaged(), h.salvageRoute())
		out = p.emitFree(out)
		out = p.flush(out)
		p.endMessage()
	}
	p.header = p.header[:0]
	return out
}

// overflowHeader gives up on a header that outgrew maxHeaderTokens: its
// text starts a message that the following tokens continue.
func (p *Parser) overflowHeader(out []Delta) []Delta {
	h := p.scanHeader()
	p.warn(UnendedHeader)
	p.startMessage(h.salvaged(), h.salvageRoute())
	out = p.emitFree(out)
	p.header = p.header[:0]
	return out
}

// beginContent parses the collected header and routes the message body:
// analysis → reasoning; a well-formed functions.NAME recipient (after the
// role or after the channel) → a tool call; everything else (final,
// commentary preambles, unknown channels, built-in tools) → content.
func (p *Parser) beginContent(out []Delta) []Delta {
	h := p.scanHeader()
	m := h.msg
	p.channel = m.Channel
	if h.role != "" && h.role != "assistant" {
		p.warn(BadRole)
	}
	if h.anyFree {
		p.warn(HeaderText)
	}
	route := Content
	switch {
	case h.recipients > 0:
		name, ok := strings.CutPrefix(m.Recipient, functionsPrefix)
		ok = ok && !h.recipConflict && validFunctionName(name)
		switch {
		case ok && !h.anyFree:
			if m.Channel != "commentary" || h.chanConflict {
				p.warn(CallChannel)
			}
			p.header = p.header[:0]
			p.call++
			p.startMessage(m, Function)
			return AppendDelta(out, Delta{Kind: Function, Call: p.call, Name: name})
		case !ok:
			// A built-in tool (browser, python) that this server does not
			// offer, or no valid function: shown as content.
			p.warn(BadRecipient)
		}
	case h.channels == 0:
		p.warn(NoChannel)
	case h.chanConflict || !knownChannel(m.Channel):
		p.warn(BadChannel)
	case m.Channel == "analysis":
		route = Reasoning
	}
	p.startMessage(m, route)
	p.toTool = h.recipients > 0
	if h.anyFree {
		out = p.emitFree(out)
		out = p.flush(out)
	}
	p.header = p.header[:0]
	return out
}

func knownChannel(c string) bool { return c == "analysis" || c == "commentary" || c == "final" }

// validFunctionName applies OpenAI's rule for function names (the API
// refuses tools named otherwise): 1 to 64 of a-z, A-Z, 0-9, _ and -.
func validFunctionName(n string) bool {
	if n == "" || len(n) > 64 {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// isRole reports whether a header's first word is a Harmony author: a
// role, or a tool author such as functions.NAME.
func isRole(w string) bool {
	switch w {
	case "assistant", "user", "system", "developer", "tool", "python":
		return true
	}
	return strings.HasPrefix(w, functionsPrefix) || strings.HasPrefix(w, "browser.")
}

// isContentType reports whether a bare header word is a content type
// (openai-harmony writes "<|constrain|>json"; "json" and, for python,
// "code" appear bare). In a header with a recipient, where reading a
// content type as text would cost the call, any word shaped like one
// (lower-case letters, digits and /+.-_) is taken as one.
func isContentType(w string, toTool bool) bool {
	if w == "json" || w == "code" {
		return true
	}
	if !toTool || len(w) > 32 {
		return false
	}
	for i := 0; i < len(w); i++ {
		c := w[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("/+.-_", c) >= 0) {
			return false
		}
	}
	return true
}

// roleEnds reports whether the items after a role word make it one: the
// end of the header, a marker or a recipient. A role word followed by
// other words ("user names are...") is text.
func roleEnds(b []byte, rest []hitem) bool {
	if len(rest) == 0 || rest[0].kind != itemWord {
		return true
	}
	return bytes.HasPrefix(b[rest[0].start:rest[0].end], []byte("to="))
}

// A header is scanned as a sequence of items: words (maximal runs of
// non-space text; special tokens also end a word) and the two markers.
type hitemKind int

const (
	itemWord hitemKind = iota
	itemChannel
	itemConstrain
)

type hitem struct {
	kind       hitemKind
	start, end int // bytes of a word in hbuf; start == end at a marker
	free       bool
}

type hmark struct {
	at   int
	kind hitemKind
}

// headerInfo is what scanHeader found.
type headerInfo struct {
	msg           ParsedMessage
	role          string // the author word, if the header has one
	fields        int    // words and markers
	channels      int    // <|channel|> markers
	chanConflict  bool   // an empty channel name or two different ones
	recipients    int    // to= words
	recipConflict bool   // two different recipients
	anyFree       bool   // some header token is text, not structure
}

// salvageRoute is where the text of a header that never ended goes:
// reasoning if the header put it on the analysis channel (and nowhere
// else), content otherwise.
func (h *headerInfo) salvageRoute() Kind {
	if h.msg.Channel == "analysis" && h.channels == 1 && !h.chanConflict && h.recipients == 0 {
		return Reasoning
	}
	return Content
}

// salvaged is the message recorded for a salvaged header's text.
func (h *headerInfo) salvaged() ParsedMessage {
	if h.salvageRoute() == Reasoning {
		return ParsedMessage{Role: "assistant", Channel: "analysis"}
	}
	return ParsedMessage{Role: "assistant"}
}

// scanHeader parses p.header as openai-harmony parses a header: the text
// with " <|channel|> " and " <|constrain|>" for the markers, split on
// white space; the word after <|channel|> is the channel, a word starting
// "to=" the recipient, a first word that is an author the role, a word
// after <|constrain|> (or json/code after other structure) the content
// type. Any other word is text ("free"), and so is white space between
// free words; p.free marks the header tokens that hold free text. Markup
// typed as ordinary text ("<|channel|>" spelled in ordinary tokens) is
// text, never structure: markers are found by token id.
func (p *Parser) scanHeader() headerInfo {
	b, spans, marks := p.hbuf[:0], p.spans[:0], p.marks[:0]
	for _, id := range p.header {
		start := len(b)
		switch {
		case id == tokenizer.Channel:
			marks = append(marks, hmark{len(b), itemChannel})
		case id == tokenizer.Constrain:
			marks = append(marks, hmark{len(b), itemConstrain})
		case id < 0 || id >= tokenizer.VocabSize:
		case p.tok.IsSpecial(id):
			marks = append(marks, hmark{len(b), itemWord}) // a word break only
		default:
			bs, _ := p.tok.TokenBytes(id)
			b = append(b, bs...)
		}
		spans = append(spans, [2]int{start, len(b)})
	}

	// Split into items.
	items := p.items[:0]
	word := -1 // start of the word being read
	endWord := func(at int) {
		if word >= 0 {
			items = append(items, hitem{kind: itemWord, start: word, end: at})
			word = -1
		}
	}
	mi := 0
	for i := 0; ; {
		for mi < len(marks) && marks[mi].at == i {
			endWord(i)
			if k := marks[mi].kind; k != itemWord {
				items = append(items, hitem{kind: k, start: i, end: i})
			}
			mi++
		}
		if i >= len(b) {
			break
		}
		r, w := utf8.DecodeRune(b[i:])
		if mi < len(marks) && marks[mi].at < i+w {
			r, w = utf8.RuneError, 1 // a character cut by a special token
		}
		switch {
		case unicode.IsSpace(r):
			endWord(i)
		case word < 0:
			word = i
		}
		i += w
	}
	endWord(len(b))

	// Classify.
	h := headerInfo{msg: ParsedMessage{Role: "assistant"}, fields: len(items)}
	words := 0
	wantChannel, wantType, afterStruct := false, false, false
	for k := range items {
		it := &items[k]
		switch it.kind {
		case itemChannel:
			if wantChannel {
				h.chanConflict = true // <|channel|> with no name
			}
			h.channels++
			wantChannel, wantType = true, false
			continue
		case itemConstrain:
			if wantChannel {
				h.chanConflict = true // <|channel|> with no name
			}
			h.msg.ContentType = "<|constrain|>"
			wantChannel, wantType = false, true
			continue
		}
		w := string(b[it.start:it.end])
		first := words == 0
		words++
		switch {
		case wantChannel && !strings.HasPrefix(w, "to="):
			if h.msg.Channel != "" && h.msg.Channel != w {
				h.chanConflict = true
			}
			h.msg.Channel = w
		case strings.HasPrefix(w, "to="):
			r := w[len("to="):]
			if h.recipients > 0 && r != h.msg.Recipient {
				h.recipConflict = true
			}
			h.recipients++
			h.msg.Recipient = r
		case wantType:
			h.msg.ContentType = "<|constrain|>" + w
		case first && isRole(w) && roleEnds(b, items[k+1:]):
			h.role, h.msg.Role = w, w
		case afterStruct && isContentType(w, h.recipients > 0):
			h.msg.ContentType = w
		default:
			it.free = true
			h.anyFree = true
		}
		if wantChannel && strings.HasPrefix(w, "to=") {
			h.chanConflict = true // <|channel|> with no name
		}
		wantChannel, wantType = false, false
		afterStruct = !it.free
	}
	if wantChannel {
		h.chanConflict = true
	}

	// Mark the free bytes: free words, and the space between two free
	// words (or a free word and the header's start or end).
	free := p.free[:0]
	var fb []bool // per byte of b; only needed when there is text
	if h.anyFree {
		fb = make([]bool, len(b))
		prevFree, prevEnd := true, 0 // the header's start counts as free
		for k := 0; k <= len(items); k++ {
			nextFree, nextStart := true, len(b) // and so does its end
			if k < len(items) {
				nextFree, nextStart = items[k].free, items[k].start
			}
			if prevFree && nextFree {
				for j := prevEnd; j < nextStart; j++ {
					fb[j] = true
				}
			}
			if k < len(items) {
				if items[k].free {
					for j := items[k].start; j < items[k].end; j++ {
						fb[j] = true
					}
				}
				prevFree, prevEnd = items[k].free, items[k].end
			}
		}
	}
	for i, id := range p.header {
		f := false
		if h.anyFree && id >= 0 && !p.tok.IsSpecial(id) && id < tokenizer.VocabSize {
			for j := spans[i][0]; j < spans[i][1]; j++ {
				if fb[j] {
					f = true
					break
				}
			}
		}
		free = append(free, f)
	}
	p.hbuf, p.spans, p.marks, p.items, p.free = b, spans, marks, items, free
	return h
}
