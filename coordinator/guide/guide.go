// Package guide constrains what a sequence may generate: structured output
// (JSON Schema, regex, Lark grammars), forced tool calls and the reasoning
// budget. Before each sampling step the scheduler asks a sequence's Guide
// for the tokens allowed next (a bitset over the vocabulary, sent with the
// step and applied by the samplers before they draw), and tells it the token
// drawn.
//
// The grammars are llguidance's (the engine behind vLLM's, SGLang's and
// llama.cpp's structured output), loaded at run time (llg.go). Harmony's
// message structure is this package's own: a Guide follows the messages
// with the same harmony.Parser the API reads the output with, leaves free
// text unconstrained (reasoning costs no mask work), chooses or forces
// message headers where the request demands (a final answer after the
// reasoning, a call to the named function), and hands only the content the
// request constrains to an llguidance matcher: response_format applies to
// the final channel alone, a tool's schema to that tool's arguments.
package guide

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/gptoss/server/coordinator/harmony"
	"github.com/gptoss/server/coordinator/tokenizer"
)

// Grammar is one constraint on a piece of text, in llguidance's terms:
// Kind is KindJSONSchema, KindRegex or KindLark.
type Grammar struct {
	Kind, Data string
}

// ToolChoice is the request's tool_choice.
type ToolChoice int

// The tool choices.
const (
	ChoiceAuto ToolChoice = iota
	// ChoiceNone: the API leaves the tools out of the prompt; nothing is
	// constrained for it here.
	ChoiceNone
	// ChoiceRequired: the answer is a call to one of the tools.
	ChoiceRequired
	// ChoiceNamed: the answer is a call to Spec.Named.
	ChoiceNamed
)

// Tool is a function the model may call.
type Tool struct {
	Name string
	// Args constrains its arguments when set (strict tools, or every tool
	// under the server's flag). A forced call's arguments always follow
	// Params.
	Args *Grammar
	// Params is the JSON Schema of its parameters, for forced calls.
	Params string
}

// Unlimited is Spec.ReasoningBudget when reasoning is not bounded.
const Unlimited = -1

// Spec is what one request constrains.
type Spec struct {
	// Raw is set for raw completions: Final then constrains the whole
	// output from its first token, and the grammar's end is one of Stops.
	Raw   bool
	Stops []int
	// Final constrains the final answer's content (response_format).
	Final *Grammar
	// Tools are the callable functions, Choice and Named the tool_choice.
	Tools  []Tool
	Choice ToolChoice
	Named  string
	// ReasoningBudget bounds the analysis channel's content tokens over
	// the whole answer (Unlimited, or 0 for no reasoning at all). When it
	// is reached the Guide ends the reasoning and moves on to the answer.
	ReasoningBudget int
}

// Active reports whether the spec constrains anything at all; a request
// whose spec is inactive needs no Guide.
func (s *Spec) Active() bool {
	if s.Final != nil || s.ReasoningBudget != Unlimited || s.Choice == ChoiceRequired || s.Choice == ChoiceNamed {
		return true
	}
	for _, t := range s.Tools {
		if t.Args != nil {
			return true
		}
	}
	return false
}

// Compiler builds Guides. It holds the llguidance vocabulary (built once,
// in about half a second) when the library is there; without it, Guides
// that need no grammar (the reasoning budget alone) still work, and
// grammars fail with ErrNoLibrary.
type Compiler struct {
	tok   *tokenizer.Tokenizer
	vocab *Vocab
	err   error // why vocab is nil
	// assistant is "assistant" as tokens (after <|start|>).
	assistant []int
	// Words is the size of a mask in 32-bit words.
	Words int

	// cache holds a compiled matcher per grammar, never advanced: a new
	// sequence gets a clone. Clones share the grammar's lexer, whose
	// states llguidance builds lazily as masks need them, so the
	// sequences of one schema (a client's, request after request) pay for
	// each state once instead of each paying for all of them, and skip the
	// compile.
	mu    sync.Mutex
	cache map[Grammar]*cached
	tick  uint64
}

// cached is one compiled grammar in the Compiler's cache.
type cached struct {
	m    *Matcher
	used uint64
}

// cacheSize bounds the compiled grammars kept (each is a few hundred KiB
// to a few MiB of lexer states).
const cacheSize = 64

var (
	sharedOnce sync.Once
	shared     *Compiler
)

// Shared returns the process's Compiler, building it on first use (call it
// early in a goroutine to hide the vocabulary's build). Err says whether
// llguidance is there.
func Shared() *Compiler {
	sharedOnce.Do(func() {
		lib, err := Open()
		if err == nil {
			shared, err = NewCompiler(lib, tokenizer.Default())
		}
		if err != nil {
			shared = &Compiler{tok: tokenizer.Default(), err: err}
			shared.init()
		}
	})
	return shared
}

// NewCompiler builds a Compiler over the tokenizer's vocabulary.
func NewCompiler(lib *Lib, tok *tokenizer.Tokenizer) (*Compiler, error) {
	v, err := lib.NewVocab(tok)
	if err != nil {
		return nil, err
	}
	c := &Compiler{tok: tok, vocab: v}
	c.init()
	return c, nil
}

func (c *Compiler) init() {
	c.assistant = c.tok.Encode("assistant")
	c.Words = (tokenizer.VocabSize + 31) / 32
}

// Err is nil when grammars can be compiled, or why not (wrapping
// ErrNoLibrary when llguidance was not found).
func (c *Compiler) Err() error { return c.err }

// Version is llguidance's version, or "" without it.
func (c *Compiler) Version() string {
	if c.vocab == nil {
		return ""
	}
	return c.vocab.lib.Version
}

// compile returns a fresh matcher for g, cloned from the cache's.
func (c *Compiler) compile(g *Grammar) (*Matcher, error) {
	if c.vocab == nil {
		return nil, c.err
	}
	if len(g.Data) > maxCachedGrammar {
		return c.vocab.Compile(g.Kind, g.Data)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tick++
	if e := c.cache[*g]; e != nil {
		e.used = c.tick
		return e.m.Clone(), nil
	}
	m, err := c.vocab.Compile(g.Kind, g.Data)
	if err != nil {
		return nil, err
	}
	if c.cache == nil {
		c.cache = map[Grammar]*cached{}
	}
	if len(c.cache) >= cacheSize {
		var old Grammar
		oldest := c.tick
		for k, e := range c.cache {
			if e.used < oldest {
				old, oldest = k, e.used
			}
		}
		c.cache[old].m.Close()
		delete(c.cache, old)
	}
	c.cache[*g] = &cached{m: m, used: c.tick}
	return m.Clone(), nil
}

// maxCachedGrammar: larger grammars are compiled for each sequence and not
// kept (the cache's memory stays bounded).
const maxCachedGrammar = 64 << 10

// ToolError is a tool's arguments grammar that could not be had (New):
// which tool, and why.
type ToolError struct {
	Tool string
	Err  error
}

func (e *ToolError) Error() string { return fmt.Sprintf("guide: tool %s: %v", e.Tool, e.Err) }
func (e *ToolError) Unwrap() error { return e.Err }

// New compiles spec into a Guide for one sequence. A grammar that fails to
// compile is a *CompileError (ErrNoLibrary without llguidance), wrapped in
// a *ToolError when it is a tool's: the API builds one Guide at request
// time to turn that into a 400 naming the field.
func (c *Compiler) New(spec *Spec) (_ *Guide, err error) {
	g := &Guide{c: c, spec: spec, budget: spec.ReasoningBudget, args: map[string]*Matcher{}}
	defer func() {
		if err != nil {
			g.Close()
		}
	}()
	if spec.Final != nil {
		if g.final, err = c.compile(spec.Final); err != nil {
			return nil, err
		}
	}
	forced := spec.Choice == ChoiceRequired || spec.Choice == ChoiceNamed
	for _, t := range spec.Tools {
		if spec.Choice == ChoiceNamed && t.Name != spec.Named {
			continue
		}
		gr := t.Args
		if forced {
			if gr, err = JSONSchema([]byte(t.Params)); err != nil {
				return nil, &ToolError{Tool: t.Name, Err: err}
			}
		}
		if gr == nil {
			continue
		}
		m, err := c.compile(gr)
		if err != nil {
			return nil, &ToolError{Tool: t.Name, Err: err}
		}
		g.args[t.Name] = m
	}
	if spec.Choice == ChoiceNamed && !slices.ContainsFunc(spec.Tools, func(t Tool) bool { return t.Name == spec.Named }) {
		return nil, fmt.Errorf("guide: tool_choice names %q, which is not among the tools", spec.Named)
	}
	if spec.Raw {
		if g.final == nil {
			return nil, errors.New("guide: a raw completion's guide needs a grammar")
		}
		g.seg, g.segEnd = g.final, spec.Stops
		g.final = nil
		return g, nil
	}
	g.p = harmony.NewStructureParser(c.tok)
	// The prompt ends with <|start|>assistant: a header comes first.
	g.beginHeader()
	return g, nil
}

// choice is one header the Guide offers (all of it, up to <|message|>).
type choice struct {
	toks []int
	tool string // the function called, or "" for analysis and final
}

// Guide constrains one sequence. Its methods are called from one goroutine
// at a time (the scheduler's loop), Mask possibly in parallel with other
// sequences' Guides.
type Guide struct {
	c    *Compiler
	spec *Spec
	p    *harmony.Parser
	out  []harmony.Delta

	// force is the run of tokens that must come next (a header the
	// request dictates, or the way out of spent reasoning).
	force []int
	// choices, while choosing a header: the candidates still matching the
	// tokens since the header began (pos of them).
	choices  []choice
	choosing bool
	pos      int
	// seg is the matcher of the content being generated, and segEnd the
	// tokens that may end it (the grammar's end).
	seg    *Matcher
	segEnd []int
	// final and args are the compiled grammars waiting for their message.
	final *Matcher
	args  map[string]*Matcher

	budget   int      // reasoning tokens left (Unlimited: no bound)
	reasoned bool     // an analysis message was written
	restrict bool     // headers are chosen, not free (see beginHeader)
	inReason bool     // inside analysis content
	buf      []uint32 // the mask
	// header: once force is through, a chosen header begins.
	header bool
	done   bool
	err    error
}

// beginHeader starts a message header. Headers are free (the model writes
// them, the parser reads them) unless the request needs a particular
// answer: a response_format (the answer must be the final channel), a
// forced call, or a reasoning budget already spent. Then the Guide offers
// the headers allowed (the reasoning once, the final answer, the calls) and
// the model chooses among them token by token.
func (g *Guide) beginHeader() {
	s := g.spec
	forced := s.Choice == ChoiceRequired || s.Choice == ChoiceNamed
	g.restrict = s.Final != nil || forced || g.budget == 0
	if !g.restrict {
		return
	}
	g.choices = g.choices[:0]
	if !g.reasoned && g.budget != 0 {
		g.choices = append(g.choices, choice{toks: g.headerToks("analysis", "")})
	}
	if !forced {
		g.choices = append(g.choices, choice{toks: g.headerToks("final", "")})
	}
	if s.Choice != ChoiceNone {
		for _, t := range s.Tools {
			if s.Choice == ChoiceNamed && t.Name != s.Named {
				continue
			}
			g.choices = append(g.choices, choice{toks: g.headerToks("commentary", t.Name), tool: t.Name})
		}
	}
	g.choosing, g.pos = true, 0
}

// header is a message header as the model writes it (and openai-harmony
// renders it): <|channel|>NAME<|message|>, or for a call
// <|channel|>commentary to=functions.NAME <|constrain|>json<|message|>.
func (g *Guide) headerToks(channel, tool string) []int {
	toks := []int{tokenizer.Channel}
	if tool == "" {
		toks = append(toks, g.c.tok.Encode(channel)...)
		return append(toks, tokenizer.Message)
	}
	toks = append(toks, g.c.tok.Encode(channel+" to=functions."+tool+" ")...)
	toks = append(toks, tokenizer.Constrain)
	toks = append(toks, g.c.tok.Encode("json")...)
	return append(toks, tokenizer.Message)
}

// Mask returns the tokens allowed next (a step.Seq.Allow bitset of
// Compiler.Words words, the Guide's own and valid until the next Accept),
// or nil when the next token is free.
func (g *Guide) Mask() ([]uint32, error) {
	if g.err != nil {
		return nil, g.err
	}
	if g.buf == nil {
		g.buf = make([]uint32, g.c.Words)
	}
	dst := g.buf
	switch {
	case g.done:
		return nil, nil
	case len(g.force) > 0:
		only(dst, g.force[0])
	case g.choosing:
		clear(dst)
		for _, c := range g.choices {
			set(dst, c.toks[g.pos])
		}
	case g.seg != nil:
		if err := g.seg.Mask(dst); err != nil {
			g.err = err
			return nil, err
		}
		if get(dst, eos) {
			unset(dst, eos)
			for _, t := range g.segEnd {
				set(dst, t)
			}
		}
	case g.inReason && g.restrict:
		// Reasoning stays free text, but must end in <|end|>: a chosen
		// answer cannot be skipped by stopping inside the reasoning.
		text(dst)
		set(dst, tokenizer.End)
	default:
		return nil, nil
	}
	return dst, nil
}

// FreeNext reports that the mask after the next token is nil whatever that
// token is (sched.FreeGuide): the pipelined loop then submits the step
// after it before the token is known. True once the Guide is done, and for
// a Guide that constrains nothing yet and cannot start to within one
// token: no response format, forced call or strict tool waiting, nothing
// forced or being chosen, and a reasoning budget (if any) that one more
// token cannot spend. That is every request with a profile's budget and no
// structure, while its budget lasts.
func (g *Guide) FreeNext() bool {
	if g.err != nil {
		return false
	}
	if g.done {
		return true
	}
	s := g.spec
	return !s.Raw && s.Final == nil && s.Choice != ChoiceRequired && s.Choice != ChoiceNamed &&
		g.final == nil && len(g.args) == 0 && g.seg == nil && !g.restrict && !g.choosing && len(g.force) == 0 &&
		g.budget != 0 && g.budget != 1
}

// Accept advances past the token drawn; a token the last mask did not allow
// is an error (the executor ignored the mask).
func (g *Guide) Accept(tok int) error {
	if g.err != nil {
		return g.err
	}
	if g.done {
		return nil
	}
	if err := g.accept(tok); err != nil {
		g.err = err
		return err
	}
	return nil
}

func (g *Guide) accept(tok int) error {
	if g.spec.Raw {
		if slices.Contains(g.segEnd, tok) {
			g.done = true
			return nil
		}
		return g.seg.Consume(tok)
	}
	switch {
	case len(g.force) > 0:
		if tok != g.force[0] {
			return fmt.Errorf("guide: token %d where %d was forced", tok, g.force[0])
		}
		g.force = g.force[1:]
		defer func() {
			if len(g.force) == 0 && g.header {
				g.header = false
				g.beginHeader()
			}
		}()
	case g.choosing:
		kept := g.choices[:0]
		for _, c := range g.choices {
			if c.toks[g.pos] == tok {
				kept = append(kept, c)
			}
		}
		if len(kept) == 0 {
			return fmt.Errorf("guide: token %d is no allowed header", tok)
		}
		g.choices, g.pos = kept, g.pos+1
		if len(kept) == 1 && g.pos == len(kept[0].toks) {
			g.choosing = false
		}
	case g.seg != nil:
		if slices.Contains(g.segEnd, tok) {
			g.seg.Close()
			g.seg, g.segEnd = nil, nil
		} else if err := g.seg.Consume(tok); err != nil {
			return err
		}
	}
	wasContent := g.inContent()
	g.out = g.p.Push(tok, g.out[:0])
	route, channel, content := g.p.Content()
	switch {
	case content && !wasContent:
		g.beginContent(route, channel)
	case !content && wasContent:
		g.endContent(tok)
	case content && g.inReason && !g.c.tok.IsSpecial(tok) && g.budget > 0:
		if g.budget--; g.budget == 0 {
			g.endReasoning()
		}
	}
	return nil
}

// endReasoning forces the end of a spent reasoning message and the start
// of the next, whose header is then chosen without it.
func (g *Guide) endReasoning() {
	g.force = append(g.force[:0], tokenizer.End, tokenizer.Start)
	g.force = append(g.force, g.c.assistant...)
	g.header = true
}

func (g *Guide) inContent() bool {
	_, _, ok := g.p.Content()
	return ok
}

// beginContent sets up the constraint of a message's content as it begins.
func (g *Guide) beginContent(route harmony.Kind, channel string) {
	g.choosing = false
	switch {
	case route == harmony.Reasoning:
		g.inReason, g.reasoned = true, true
		if g.budget == 0 {
			// A free header chose reasoning that is already spent.
			g.endReasoning()
		}
	case route == harmony.Function:
		name := ""
		for _, d := range g.out {
			if d.Kind == harmony.Function && d.Name != "" {
				name = d.Name
			}
		}
		if m := g.args[name]; m != nil {
			g.seg, g.segEnd = m, []int{tokenizer.Call}
			delete(g.args, name)
		}
	case channel == "final" && g.final != nil:
		g.seg, g.segEnd = g.final, []int{tokenizer.Return}
		g.final = nil
	}
}

// endContent follows a message's end: after <|end|> a chosen header is
// brought in by forcing <|start|>assistant; <|return|> and <|call|> end the
// answer.
func (g *Guide) endContent(tok int) {
	g.inReason = false
	if g.seg != nil {
		g.seg.Close()
		g.seg, g.segEnd = nil, nil
	}
	switch tok {
	case tokenizer.End:
		if len(g.force) == 0 && g.restrict {
			g.force = append(g.force, tokenizer.Start)
			g.force = append(g.force, g.c.assistant...)
			g.header = true
		}
	default:
		g.done = true
	}
}

// Close frees the matchers; safe to call more than once.
func (g *Guide) Close() {
	if g.seg != nil {
		g.seg.Close()
	}
	if g.final != nil {
		g.final.Close()
	}
	for _, m := range g.args {
		m.Close()
	}
	clear(g.args)
}

// jsonOptions are llguidance's JSON layout options for every schema whose
// author set none: compact JSON, as OpenAI's structured outputs write it.
// Flexible whitespace would let a model pad forever between tokens (a
// known failure of constrained JSON) and costs tokens for nothing.
const jsonOptions = `{"whitespace_flexible":false,"item_separator":",","key_separator":":"}`

// JSONSchema is the grammar of JSON documents following schema (a JSON
// Schema), laid out compactly unless the schema carries its own
// "x-guidance" options.
func JSONSchema(schema []byte) (*Grammar, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(schema, &top); err != nil {
		var b bool
		if json.Unmarshal(schema, &b) == nil {
			// true or false: a schema, but no object to carry options.
			top = map[string]json.RawMessage{}
			if !b {
				top["not"] = json.RawMessage(`{}`)
			}
		} else {
			return nil, fmt.Errorf("guide: the schema is not a JSON object: %w", err)
		}
	}
	if _, ok := top["x-guidance"]; !ok {
		top["x-guidance"] = json.RawMessage(jsonOptions)
	}
	data, err := json.Marshal(top)
	if err != nil {
		return nil, fmt.Errorf("guide: schema: %w", err)
	}
	return &Grammar{Kind: KindJSONSchema, Data: string(data)}, nil
}

// JSONObject is the grammar of any JSON object (response_format
// json_object).
var JSONObject = &Grammar{Kind: KindJSONSchema, Data: `{"type":"object","x-guidance":` + jsonOptions + `}`}
