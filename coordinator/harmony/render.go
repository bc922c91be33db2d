// Package harmony renders OpenAI-style conversations into gpt-oss's Harmony
// prompt format and parses the model's Harmony output stream back into
// reasoning, answer text and tool calls. Prompts are built token by token:
// text from clients is always encoded as ordinary text and the Harmony
// control tokens are spliced in by id, so a "<|start|>" typed by a user can
// never become a control token (shared/reference/gpt-oss.md §5, peers.md
// §5.10).
//
// Render reproduces the official renderer, openai-harmony 0.0.8
// (render_conversation_for_completion with its default config), token for
// token: testdata/render_golden.json holds that library's output for a set
// of conversations (written by scripts/golden_harmony.py) and the tests
// compare ids exactly. That includes its JSON Schema → TypeScript conversion
// of function parameters and its rule for dropping earlier chain of thought.
package harmony

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/gptoss/server/coordinator/tokenizer"
)

// KnowledgeCutoff is the date the gpt-oss system message states.
const KnowledgeCutoff = "2024-06"

// Message is one conversation turn, already normalised by the API layer.
// The JSON tags give the form the golden test data uses.
type Message struct {
	// Role is system, developer, user, assistant or tool. System and
	// developer messages become the developer message's instructions.
	Role string `json:"role"`
	// Content is the text of the message. For an assistant turn it is the
	// final answer, or a commentary preamble when ToolCalls is non-empty.
	Content string `json:"content,omitempty"`
	// Reasoning is an assistant turn's chain of thought (analysis channel).
	Reasoning string `json:"reasoning,omitempty"`
	// ToolCalls are the function calls an assistant turn made, rendered
	// after its preamble.
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
	// ToolName names the function whose result a tool message carries
	// (without the "functions." prefix).
	ToolName string `json:"tool_name,omitempty"`
}

// ToolCall is one function call in an assistant turn's history.
type ToolCall struct {
	// Name is the function name, without the "functions." prefix.
	Name string `json:"name"`
	// Arguments is the raw JSON text the model wrote.
	Arguments string `json:"arguments"`
}

// Tool is a client-defined function offered to the model.
type Tool struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Parameters is a JSON Schema object, or nil (or JSON null) for a
	// function without parameters. Property order is kept as written.
	Parameters json.RawMessage `json:"parameters,omitempty"`
}

// ResponseFormat is a structured-output schema announced to the model in
// the developer message. openai-harmony 0.0.8 cannot render one, so this
// follows the template of the Harmony format documentation (docs/format.md,
// "Structured output") and is not covered by the golden data.
type ResponseFormat struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Schema      json.RawMessage `json:"schema"`
}

// Conversation is everything that goes into one prompt.
type Conversation struct {
	Messages []Message `json:"messages"`
	// ReasoningEffort is low, medium or high; empty means medium.
	ReasoningEffort string `json:"reasoning_effort,omitempty"`
	// Date is the "Current date" line (YYYY-MM-DD); empty leaves it out.
	Date string `json:"date,omitempty"`
	// Tools are function tools. A non-empty list adds the developer
	// message's "# Tools" section and the system message's line sending
	// calls to the commentary channel.
	Tools []Tool `json:"tools,omitempty"`
	// ResponseFormat, if set, adds a "# Response Formats" section to the
	// developer message.
	ResponseFormat *ResponseFormat `json:"response_format,omitempty"`
}

// Validate reports whether the tool parameter schemas and the response
// format schema are well-formed JSON. Render does not fail: it renders a
// schema that does not parse as the TypeScript type any.
func (c Conversation) Validate() error {
	for i, t := range c.Tools {
		if _, err := parseSchema(t.Parameters); err != nil {
			return fmt.Errorf("tool %d (%q): parameters: %w", i, t.Name, err)
		}
	}
	if rf := c.ResponseFormat; rf != nil {
		if _, err := parseSchema(rf.Schema); err != nil {
			return fmt.Errorf("response format %q: schema: %w", rf.Name, err)
		}
	}
	return nil
}

// hmsg is one Harmony message as openai-harmony models it.
type hmsg struct {
	assistant   bool   // author role is assistant
	author      string // role text, or the tool name for tool messages
	recipient   string
	channel     string
	contentType string
	content     string
}

// Render returns the prompt token ids, ending with the generation prompt
// <|start|>assistant. System and developer messages from the client become
// the instructions of the Harmony developer message; the Harmony system
// message itself is written by the server (identity, dates, effort,
// channels), as the gpt-oss model card prescribes.
//
// Earlier chain of thought is dropped as the Harmony format prescribes:
// analysis messages before the last final message belong to finished turns
// and are left out; analysis after it (an ongoing tool-call chain) is kept.
// openai-harmony 0.0.8's auto_drop_analysis gives the same prompt for one
// finished turn, but only drops before the first final message, and only
// when the last assistant message is final; scripts/golden_harmony.py
// records the three golden cases where the library's shortcut differs.
func Render(tok *tokenizer.Tokenizer, c Conversation) []int {
	msgs := conversationMessages(c)
	lastFinal := -1
	for i, m := range msgs {
		if m.channel == "final" {
			lastFinal = i
		}
	}

	r := renderer{tok: tok}
	for i, m := range msgs {
		if i < lastFinal && m.channel == "analysis" {
			continue
		}
		r.message(m)
	}
	r.special(tokenizer.Start)
	r.text("assistant")
	return r.ids
}

// conversationMessages maps a Conversation onto Harmony messages, the way
// scripts/golden_harmony.py builds the openai-harmony conversation.
func conversationMessages(c Conversation) []hmsg {
	msgs := make([]hmsg, 0, len(c.Messages)+4)
	msgs = append(msgs, hmsg{author: "system", content: systemContent(c)})

	var instructions []string
	for _, m := range c.Messages {
		if (m.Role == "system" || m.Role == "developer") && m.Content != "" {
			instructions = append(instructions, m.Content)
		}
	}
	if len(instructions) > 0 || len(c.Tools) > 0 || c.ResponseFormat != nil {
		msgs = append(msgs, hmsg{author: "developer", content: developerContent(strings.Join(instructions, "\n\n"), c)})
	}

	for _, m := range c.Messages {
		switch m.Role {
		case "user":
			msgs = append(msgs, hmsg{author: "user", content: m.Content})
		case "assistant":
			if m.Reasoning != "" {
				msgs = append(msgs, hmsg{assistant: true, author: "assistant", channel: "analysis", content: m.Reasoning})
			}
			if m.Content != "" {
				ch := "final"
				if len(m.ToolCalls) > 0 {
					ch = "commentary" // a preamble before tool calls
				}
				msgs = append(msgs, hmsg{assistant: true, author: "assistant", channel: ch, content: m.Content})
			}
			for _, tc := range m.ToolCalls {
				msgs = append(msgs, hmsg{
					assistant: true, author: "assistant", recipient: "functions." + tc.Name,
					channel: "commentary", contentType: "<|constrain|>json", content: tc.Arguments,
				})
			}
		case "tool":
			msgs = append(msgs, hmsg{author: "functions." + m.ToolName, recipient: "assistant", channel: "commentary", content: m.Content})
		}
	}
	return msgs
}

type renderer struct {
	tok *tokenizer.Tokenizer
	ids []int
}

func (r *renderer) special(id int) { r.ids = append(r.ids, id) }
func (r *renderer) text(s string)  { r.ids = append(r.ids, r.tok.Encode(s)...) }

const constrainMarker = "<|constrain|>"

// message writes <|start|>AUTHOR[ to=RECIPIENT][<|channel|>CHANNEL][ TYPE]
// <|message|>CONTENT and <|call|> for assistant messages to a recipient,
// <|end|> for all others. Each piece is encoded separately, as
// openai-harmony does.
func (r *renderer) message(m hmsg) {
	r.special(tokenizer.Start)
	r.text(m.author)
	if m.recipient != "" && m.recipient != "all" {
		r.text(" to=" + m.recipient)
	}
	if m.channel != "" {
		r.special(tokenizer.Channel)
		r.text(m.channel)
	}
	if m.contentType != "" {
		if rest, ok := strings.CutPrefix(m.contentType, constrainMarker); ok {
			r.text(" ")
			r.special(tokenizer.Constrain)
			r.text(rest)
		} else {
			r.text(" " + m.contentType)
		}
	}
	r.special(tokenizer.Message)
	r.text(m.content)
	if m.assistant && m.recipient != "" {
		r.special(tokenizer.Call)
	} else {
		r.special(tokenizer.End)
	}
}

func systemContent(c Conversation) string {
	var b strings.Builder
	b.WriteString("You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: ")
	b.WriteString(KnowledgeCutoff)
	if c.Date != "" {
		b.WriteString("\nCurrent date: ")
		b.WriteString(c.Date)
	}
	effort := c.ReasoningEffort
	if effort == "" {
		effort = "medium"
	}
	b.WriteString("\n\nReasoning: ")
	b.WriteString(effort)
	b.WriteString("\n\n# Valid channels: analysis, commentary, final. Channel must be included for every message.")
	if len(c.Tools) > 0 {
		b.WriteString("\nCalls to these tools must go to the commentary channel: 'functions'.")
	}
	return b.String()
}

func developerContent(instructions string, c Conversation) string {
	var sections []string
	if instructions != "" {
		sections = append(sections, "# Instructions", instructions)
	}
	if len(c.Tools) > 0 {
		sections = append(sections, toolsSection(c.Tools))
	}
	if rf := c.ResponseFormat; rf != nil {
		sections = append(sections, responseFormatSection(rf))
	}
	return strings.Join(sections, "\n\n")
}

// toolsSection is openai-harmony's template_tools_section for the single
// "functions" namespace.
func toolsSection(tools []Tool) string {
	parts := []string{"## functions\n", "namespace functions {\n"}
	for _, t := range tools {
		for _, line := range rustLines(t.Description) {
			parts = append(parts, "// "+line)
		}
		v, err := parseSchema(t.Parameters)
		switch {
		case err != nil:
			parts = append(parts, "type "+t.Name+" = (_: any) => any;\n")
		case v == nil || v.kind == jNull:
			parts = append(parts, "type "+t.Name+" = () => any;\n")
		default:
			parts = append(parts, "type "+t.Name+" = (_: "+schemaToTypeScript(v, "")+") => any;\n")
		}
	}
	parts = append(parts, "} // namespace functions")
	return "# Tools\n\n" + strings.Join(parts, "\n")
}

// responseFormatSection follows docs/format.md of openai/harmony:
// "# Response Formats", "## NAME", "// DESCRIPTION" and the schema as
// compact JSON.
func responseFormatSection(rf *ResponseFormat) string {
	var b strings.Builder
	b.WriteString("# Response Formats\n\n## ")
	b.WriteString(rf.Name)
	b.WriteString("\n\n")
	for _, line := range rustLines(rf.Description) {
		b.WriteString("// ")
		b.WriteString(line)
		b.WriteString("\n")
	}
	v, err := parseSchema(rf.Schema)
	if err != nil || v == nil {
		b.WriteString("{}")
	} else {
		b.WriteString(v.String())
	}
	return b.String()
}

// rustLines splits s like Rust's str::lines: at "\n" or "\r\n", with an
// optional final line ending and no lines for an empty string.
func rustLines(s string) []string {
	if s == "" {
		return nil
	}
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	for i := range lines {
		// Only a "\r" that came before a "\n" is part of a line ending.
		if i < len(lines)-1 || strings.HasSuffix(s, "\n") {
			lines[i] = strings.TrimSuffix(lines[i], "\r")
		}
	}
	return lines
}

// ---------------------------------------------------------------------------
// JSON Schema → TypeScript, a port of openai-harmony 0.0.8's
// json_schema_to_typescript (src/encoding.rs). Its quirks are kept on
// purpose, because the model was trained on this rendering: a nested
// object's description is printed twice, nested objects indent their
// properties but not their first line, an enum array renders as
// `"a" | "b"[]`, anyOf and untyped enums become any, and so on.
// ---------------------------------------------------------------------------

func isEnum(s *jvalue) bool {
	e := s.get("enum")
	return e != nil && e.kind == jArray && len(e.arr) > 0
}

// str returns the string value of key, if it is a string.
func (v *jvalue) str(key string) (string, bool) {
	x := v.get(key)
	if x == nil || x.kind != jString {
		return "", false
	}
	return x.s, true
}

func isNullable(v *jvalue) bool {
	n := v.get("nullable")
	return n != nil && n.kind == jBool && n.b
}

// defaultComment renders a default value the way the trailing comments do:
// a string is quoted unless the schema is an enum, anything else is JSON.
func defaultComment(schema, def *jvalue) string {
	if def.kind == jString {
		if !isEnum(schema) {
			return `default: "` + def.s + `"`
		}
		return "default: " + def.s
	}
	return "default: " + def.String()
}

func schemaToTypeScript(schema *jvalue, indent string) string {
	if oneOf := schema.get("oneOf"); oneOf != nil && oneOf.kind == jArray {
		var b strings.Builder
		for _, variant := range oneOf.arr {
			b.WriteString("\n" + indent + " | ")
			ts := schemaToTypeScript(variant, indent+"   ")
			if isNullable(variant) && !strings.Contains(ts, "null") {
				ts += " | null"
			}
			b.WriteString(ts)
			var comments []string
			if d, ok := variant.str("description"); ok {
				comments = append(comments, d)
			}
			if def := variant.get("default"); def != nil {
				// Unlike the property-level rule, an enum's string default
				// is printed as JSON here.
				if def.kind == jString && !isEnum(variant) {
					comments = append(comments, `default: "`+def.s+`"`)
				} else {
					comments = append(comments, "default: "+def.String())
				}
			}
			if len(comments) > 0 {
				b.WriteString(" // " + strings.Join(comments, " "))
			}
		}
		return b.String()
	}
	typ := schema.get("type")
	if typ != nil && typ.kind == jArray {
		var types []string
		for _, t := range typ.arr {
			if t.kind == jString {
				if t.s == "integer" {
					types = append(types, "number")
				} else {
					types = append(types, t.s)
				}
			}
		}
		if len(types) > 0 {
			return strings.Join(types, " | ")
		}
	}
	if typ == nil || typ.kind != jString {
		// A oneOf that is not an array was not handled above.
		return "any"
	}
	switch typ.s {
	case "object":
		return objectToTypeScript(schema, indent)
	case "string":
		if e := schema.get("enum"); e != nil && e.kind == jArray {
			var vals []string
			for _, x := range e.arr {
				if x.kind == jString {
					vals = append(vals, `"`+x.s+`"`)
				}
			}
			if len(vals) > 0 {
				return strings.Join(vals, " | ")
			}
		}
		return "string"
	case "number", "integer":
		return "number"
	case "boolean":
		return "boolean"
	case "array":
		if items := schema.get("items"); items != nil {
			return schemaToTypeScript(items, indent) + "[]"
		}
		return "Array<any>"
	default:
		return "any"
	}
}

func objectToTypeScript(schema *jvalue, indent string) string {
	var b strings.Builder
	if d, ok := schema.str("description"); ok {
		b.WriteString(indent + "// " + d + "\n")
	}
	b.WriteString("{\n")
	props := schema.get("properties")
	if props != nil && props.kind == jObject {
		required := map[string]bool{}
		if req := schema.get("required"); req != nil && req.kind == jArray {
			for _, r := range req.arr {
				if r.kind == jString {
					required[r.s] = true
				}
			}
		}
		for i, key := range props.keys {
			val := props.vals[i]
			opt := "?"
			if required[key] {
				opt = ""
			}
			if t, ok := val.str("title"); ok {
				b.WriteString(indent + "// " + t + "\n" + indent + "//\n")
			}
			oneOf := val.get("oneOf")
			if oneOf == nil {
				if d, ok := val.str("description"); ok {
					b.WriteString(indent + "// " + d + "\n")
				}
			}
			if ex := val.get("examples"); ex != nil && ex.kind == jArray && len(ex.arr) > 0 {
				b.WriteString(indent + "// Examples:\n")
				for _, e := range ex.arr {
					if e.kind == jString {
						b.WriteString(indent + "// - \"" + e.s + "\"\n")
					}
				}
			}
			if oneOf != nil && oneOf.kind == jArray {
				propDesc, hasPropDesc := val.str("description")
				skipPropDesc := false
				if hasPropDesc && len(oneOf.arr) > 0 {
					if vd, ok := oneOf.arr[0].str("description"); ok && vd == propDesc {
						skipPropDesc = true
					}
				}
				descAbove := false
				if !skipPropDesc && hasPropDesc {
					b.WriteString(indent + "// " + propDesc + "\n")
					descAbove = true
				}
				if def := val.get("default"); def != nil {
					b.WriteString(indent + "// " + defaultComment(val, def) + "\n")
				}
				b.WriteString(indent + key + opt + ":\n")
				for vi, variant := range oneOf.arr {
					b.WriteString(indent + " | ")
					ts := schemaToTypeScript(variant, indent+"   ")
					if isNullable(variant) && !strings.Contains(ts, "null") {
						ts += " | null"
					}
					b.WriteString(ts)
					var comments []string
					if !(vi == 0 && descAbove) {
						if vd, ok := variant.str("description"); ok && (!hasPropDesc || vd != propDesc) {
							comments = append(comments, vd)
						}
					}
					if def := variant.get("default"); def != nil {
						comments = append(comments, defaultComment(variant, def))
					}
					if len(comments) > 0 {
						b.WriteString(" // " + strings.Join(comments, " "))
					}
					b.WriteString("\n")
				}
				b.WriteString(indent + ",\n")
				continue
			}
			b.WriteString(indent + key + opt + ": ")
			ts := schemaToTypeScript(val, indent+"    ")
			if isNullable(val) && !strings.Contains(ts, "null") {
				ts += " | null"
			}
			b.WriteString(ts + ",")
			if oneOf == nil {
				if def := val.get("default"); def != nil {
					b.WriteString(" // " + defaultComment(val, def))
				}
			}
			b.WriteString("\n")
		}
	}
	b.WriteString(indent + "}")
	return b.String()
}

// ---------------------------------------------------------------------------
// An order-preserving JSON value, printed like serde_json's compact
// Display (which is what openai-harmony uses for defaults): no HTML
// escaping, floats in Rust's shortest form ("1.0", "1e21", "1.5e-7").
// ---------------------------------------------------------------------------

type jkind int

const (
	jNull jkind = iota
	jBool
	jNumber
	jString
	jArray
	jObject
)

type jvalue struct {
	kind jkind
	b    bool
	s    string // string value, or a number already in serde_json's form
	arr  []*jvalue
	keys []string // object keys in first-seen order
	vals []*jvalue
}

// get returns an object member, or nil (also for non-objects).
func (v *jvalue) get(key string) *jvalue {
	if v == nil || v.kind != jObject {
		return nil
	}
	for i, k := range v.keys {
		if k == key {
			return v.vals[i]
		}
	}
	return nil
}

var errTrailing = errors.New("unexpected data after the JSON value")

// parseSchema parses raw JSON keeping object key order. Empty input gives
// nil. Duplicate keys keep their first position and their last value, as
// Python's json module and serde_json's preserve_order maps do.
func parseSchema(raw json.RawMessage) (*jvalue, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	v, err := decodeValue(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errTrailing
	}
	return v, nil
}

func decodeValue(dec *json.Decoder) (*jvalue, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case nil:
		return &jvalue{kind: jNull}, nil
	case bool:
		return &jvalue{kind: jBool, b: t}, nil
	case json.Number:
		return &jvalue{kind: jNumber, s: serdeNumber(string(t))}, nil
	case string:
		return &jvalue{kind: jString, s: t}, nil
	case json.Delim:
		switch t {
		case '[':
			v := &jvalue{kind: jArray}
			for dec.More() {
				e, err := decodeValue(dec)
				if err != nil {
					return nil, err
				}
				v.arr = append(v.arr, e)
			}
			_, err := dec.Token() // ]
			return v, err
		case '{':
			v := &jvalue{kind: jObject}
			idx := map[string]int{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				k, _ := kt.(string)
				e, err := decodeValue(dec)
				if err != nil {
					return nil, err
				}
				if i, dup := idx[k]; dup {
					v.vals[i] = e
					continue
				}
				idx[k] = len(v.keys)
				v.keys = append(v.keys, k)
				v.vals = append(v.vals, e)
			}
			_, err := dec.Token() // }
			return v, err
		}
	}
	return nil, fmt.Errorf("unexpected JSON token %v", tok)
}

// serdeNumber converts a JSON number literal to serde_json's display form:
// integers that fit 64 bits are printed as integers, everything else as an
// f64 in Rust's shortest round-trip notation (ryu).
func serdeNumber(lit string) string {
	if !strings.ContainsAny(lit, ".eE") {
		if i, err := strconv.ParseInt(lit, 10, 64); err == nil {
			return strconv.FormatInt(i, 10)
		}
		if u, err := strconv.ParseUint(lit, 10, 64); err == nil {
			return strconv.FormatUint(u, 10)
		}
	}
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return lit
	}
	return ryuFormat(f)
}

// ryuFormat prints f as Rust's ryu crate does (serde_json's float output).
func ryuFormat(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "null" // serde_json writes non-finite floats as null
	}
	sign := ""
	if math.Signbit(f) {
		sign = "-"
		f = -f
	}
	if f == 0 {
		return sign + "0.0"
	}
	e := strconv.FormatFloat(f, 'e', -1, 64) // d.ddde±X, shortest digits
	mant, exp, _ := strings.Cut(e, "e")
	digits := strings.Replace(mant, ".", "", 1)
	x, _ := strconv.Atoi(exp)
	n := len(digits)
	k := x - (n - 1) // value = digits × 10^k
	kk := n + k      // 10^(kk-1) <= value < 10^kk
	switch {
	case k >= 0 && kk <= 16:
		return sign + digits + strings.Repeat("0", k) + ".0"
	case kk > 0 && kk <= 16:
		return sign + digits[:kk] + "." + digits[kk:]
	case kk > -5 && kk <= 0:
		return sign + "0." + strings.Repeat("0", -kk) + digits
	case n == 1:
		return sign + digits + "e" + strconv.Itoa(kk-1)
	default:
		return sign + digits[:1] + "." + digits[1:] + "e" + strconv.Itoa(kk-1)
	}
}

// String returns v as compact JSON, as serde_json's Display writes it.
func (v *jvalue) String() string {
	var b strings.Builder
	v.write(&b)
	return b.String()
}

func (v *jvalue) write(b *strings.Builder) {
	switch v.kind {
	case jNull:
		b.WriteString("null")
	case jBool:
		b.WriteString(strconv.FormatBool(v.b))
	case jNumber:
		b.WriteString(v.s)
	case jString:
		writeJSONString(b, v.s)
	case jArray:
		b.WriteByte('[')
		for i, e := range v.arr {
			if i > 0 {
				b.WriteByte(',')
			}
			e.write(b)
		}
		b.WriteByte(']')
	case jObject:
		b.WriteByte('{')
		for i, k := range v.keys {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSONString(b, k)
			b.WriteByte(':')
			v.vals[i].write(b)
		}
		b.WriteByte('}')
	}
}

// writeJSONString escapes like serde_json: quote, backslash and control
// characters only; everything else, non-ASCII included, is written as is.
func writeJSONString(b *strings.Builder, s string) {
	const hex = "0123456789abcdef"
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if c < 0x20 {
				b.WriteString(`\u00`)
				b.WriteByte(hex[c>>4])
				b.WriteByte(hex[c&0xf])
			} else {
				b.WriteByte(c)
			}
		}
	}
	b.WriteByte('"')
}
