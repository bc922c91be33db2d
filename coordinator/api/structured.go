package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/gptoss/server/coordinator/guide"
	"github.com/gptoss/server/coordinator/harmony"
	"github.com/gptoss/server/coordinator/profiles"
)

// JSONSchemaFormat is response_format's json_schema.
type JSONSchemaFormat struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Schema      json.RawMessage `json:"schema,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

// StructuredOutputs is vLLM's structured_outputs: exactly one of its
// constraints.
type StructuredOutputs struct {
	JSON       json.RawMessage `json:"json"`
	Regex      *string         `json:"regex"`
	Choice     []string        `json:"choice"`
	Grammar    *string         `json:"grammar"`
	JSONObject *bool           `json:"json_object"`
}

// StructuredParams are the constrained-decoding fields chat and
// completions share: vLLM's structured_outputs and its older guided_*
// spellings. (response_format is each endpoint's own.)
type StructuredParams struct {
	StructuredOutputs *StructuredOutputs `json:"structured_outputs"`
	GuidedJSON        json.RawMessage    `json:"guided_json"`
	GuidedRegex       *string            `json:"guided_regex"`
	GuidedChoice      []string           `json:"guided_choice"`
	GuidedGrammar     *string            `json:"guided_grammar"`
}

// maxGrammarBytes caps a schema, regex or grammar a client sends (the
// request body cap bounds it too; this one bounds the compile).
const maxGrammarBytes = 256 << 10

// resolveGrammar resolves the request's constraint on the answer:
// response_format (json_object, json_schema), or one of
// structured_outputs / guided_*. It returns nil for none, and the parameter
// it came from.
func resolveGrammar(rf *ResponseFormat, sp *StructuredParams) (*guide.Grammar, string, error) {
	type source struct {
		param string
		make  func() (*guide.Grammar, error)
	}
	var found []source
	lark := func(param, s string) func() (*guide.Grammar, error) {
		return func() (*guide.Grammar, error) {
			if strings.Contains(s, "::=") {
				// vLLM's xgrammar takes GBNF too; llguidance takes Lark.
				return nil, invalid(param, "invalid_value", "Invalid '%s': this looks like a GBNF grammar (::=); this server takes Lark grammars (llguidance's syntax: 'start: ...').", param)
			}
			return &guide.Grammar{Kind: guide.KindLark, Data: s}, nil
		}
	}
	jsonObject := func() (*guide.Grammar, error) { return guide.JSONObject, nil }
	if rf != nil {
		switch rf.Type {
		case "text", "":
		case "json_object":
			found = append(found, source{"response_format", jsonObject})
		case "json_schema":
			if rf.JSONSchema == nil || !present(rf.JSONSchema.Schema) {
				// OpenAI requires the schema; an absent one would be any JSON.
				return nil, "", invalid("response_format.json_schema.schema", "missing_required_parameter", "Missing required parameter: 'response_format.json_schema.schema'.")
			}
			if rf.JSONSchema.Name == "" {
				// As OpenAI: the name is what the model is told to write.
				return nil, "", invalid("response_format.json_schema.name", "missing_required_parameter", "Missing required parameter: 'response_format.json_schema.name'.")
			}
			found = append(found, source{"response_format", func() (*guide.Grammar, error) {
				return schemaGrammar("response_format.json_schema.schema", rf.JSONSchema.Schema)
			}})
		default:
			return nil, "", invalid("response_format", "invalid_value", "Invalid response_format type %q: expected text, json_object or json_schema.", clipString(rf.Type, 50))
		}
	}
	if sp != nil {
		if so := sp.StructuredOutputs; so != nil {
			var in []source
			if present(so.JSON) {
				in = append(in, source{"structured_outputs.json", func() (*guide.Grammar, error) { return schemaGrammar("structured_outputs.json", so.JSON) }})
			}
			if so.Regex != nil {
				in = append(in, source{"structured_outputs.regex", regexGrammar(*so.Regex)})
			}
			if so.Choice != nil {
				in = append(in, source{"structured_outputs.choice", func() (*guide.Grammar, error) { return choiceGrammar("structured_outputs.choice", so.Choice) }})
			}
			if so.Grammar != nil {
				in = append(in, source{"structured_outputs.grammar", lark("structured_outputs.grammar", *so.Grammar)})
			}
			if so.JSONObject != nil && *so.JSONObject {
				in = append(in, source{"structured_outputs.json_object", jsonObject})
			}
			if len(in) != 1 {
				return nil, "", invalid("structured_outputs", "invalid_value", "Invalid 'structured_outputs': give exactly one of json, regex, choice, grammar or json_object (got %d).", len(in))
			}
			found = append(found, in...)
		}
		if present(sp.GuidedJSON) {
			found = append(found, source{"guided_json", func() (*guide.Grammar, error) { return schemaGrammar("guided_json", sp.GuidedJSON) }})
		}
		if sp.GuidedRegex != nil {
			found = append(found, source{"guided_regex", regexGrammar(*sp.GuidedRegex)})
		}
		if sp.GuidedChoice != nil {
			found = append(found, source{"guided_choice", func() (*guide.Grammar, error) { return choiceGrammar("guided_choice", sp.GuidedChoice) }})
		}
		if sp.GuidedGrammar != nil {
			found = append(found, source{"guided_grammar", lark("guided_grammar", *sp.GuidedGrammar)})
		}
	}
	switch len(found) {
	case 0:
		return nil, "", nil
	case 1:
	default:
		return nil, "", invalid(found[1].param, "invalid_value", "'%s' and '%s' both constrain the output: give one.", found[0].param, found[1].param)
	}
	g, err := found[0].make()
	if err != nil {
		return nil, "", err
	}
	if len(g.Data) > maxGrammarBytes {
		return nil, "", invalid(found[0].param, "invalid_value", "Invalid '%s': at most %d bytes.", found[0].param, maxGrammarBytes)
	}
	return g, found[0].param, nil
}

// schemaGrammar reads a JSON Schema: an object (or true/false), as JSON or
// as a string holding JSON (vLLM accepts both for guided_json).
func schemaGrammar(param string, raw json.RawMessage) (*guide.Grammar, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, invalid(param, "invalid_type", "Invalid '%s': expected a JSON Schema.", param).withCause(err)
		}
		raw = bytes.TrimSpace([]byte(s))
	}
	if len(raw) == 0 || (raw[0] != '{' && !bytes.Equal(raw, []byte("true")) && !bytes.Equal(raw, []byte("false"))) || !json.Valid(raw) {
		return nil, invalid(param, "invalid_type", "Invalid '%s': expected a JSON Schema object.", param)
	}
	g, err := guide.JSONSchema(raw)
	if err != nil {
		return nil, invalid(param, "invalid_value", "Invalid '%s': %v.", param, err).withCause(err)
	}
	return g, nil
}

func regexGrammar(re string) func() (*guide.Grammar, error) {
	return func() (*guide.Grammar, error) { return &guide.Grammar{Kind: guide.KindRegex, Data: re}, nil }
}

// choiceGrammar is a regex matching exactly one of the strings.
func choiceGrammar(param string, choices []string) (*guide.Grammar, error) {
	if len(choices) == 0 {
		return nil, invalid(param, "invalid_value", "Invalid '%s': give at least one choice.", param)
	}
	alts := make([]string, len(choices))
	for i, c := range choices {
		alts[i] = regexp.QuoteMeta(c)
	}
	return &guide.Grammar{Kind: guide.KindRegex, Data: "(?:" + strings.Join(alts, "|") + ")"}, nil
}

// toolChoice is a chat request's resolved tool_choice.
type toolChoice struct {
	choice guide.ToolChoice
	named  string
}

// guideSpec builds a chat request's guide.Spec from what parseChat
// resolved, or nil when nothing is constrained.
func (s *Server) guideSpec(final *guide.Grammar, tools []harmony.Tool, tc toolChoice, strict map[string]bool, budget *int, p *profiles.Profile) (*guide.Spec, error) {
	spec := &guide.Spec{Final: final, Choice: tc.choice, Named: tc.named, ReasoningBudget: guide.Unlimited}
	if p.Generation.MaxReasoningTokens > 0 {
		spec.ReasoningBudget = p.Generation.MaxReasoningTokens
	}
	if budget != nil {
		if err := checkInt("max_reasoning_tokens", *budget, 0, 1<<30); err != nil {
			return nil, err
		}
		spec.ReasoningBudget = *budget
	}
	for i, t := range tools {
		params := string(t.Parameters)
		if params == "" {
			params = `{"type":"object","properties":{}}`
		}
		gt := guide.Tool{Name: t.Name, Params: params}
		if strict[t.Name] || s.opts.StrictTools {
			g, err := schemaGrammar(fmt.Sprintf("tools[%d].function.parameters", i), json.RawMessage(params))
			if err != nil {
				return nil, err
			}
			gt.Args = g
		}
		spec.Tools = append(spec.Tools, gt)
	}
	if !spec.Active() {
		return nil, nil
	}
	return spec, nil
}

// checkSpec builds a Guide for spec once and throws it away, so that a
// grammar llguidance cannot honour is a 400 naming its field before
// anything is queued (the sequences' own Guides clone the compiled
// grammars from the cache).
func (s *Server) checkSpec(spec *guide.Spec, finalParam string) error {
	gd, err := s.guides().New(spec)
	if err == nil {
		gd.Close()
		return nil
	}
	param, kind := finalParam, guide.KindJSONSchema
	if spec.Final != nil {
		kind = spec.Final.Kind
	}
	var te *guide.ToolError
	if errors.As(err, &te) {
		kind = guide.KindJSONSchema
		for i, t := range spec.Tools {
			if t.Name == te.Tool {
				param = fmt.Sprintf("tools[%d].function.parameters", i)
			}
		}
	}
	if errors.Is(err, guide.ErrNoLibrary) {
		return unsupported(param, "Structured output needs the llguidance library, which this server could not load (%v).", err).withCause(err)
	}
	var ce *guide.CompileError
	if errors.As(err, &ce) {
		return invalid(param, "invalid_value", "Invalid '%s': the %s cannot be enforced: %s", param, grammarNoun(kind), clipString(ce.Msg, 400)).withCause(err)
	}
	return invalid(param, "invalid_value", "Invalid '%s': %v", param, err).withCause(err)
}

func grammarNoun(kind string) string {
	switch kind {
	case guide.KindRegex:
		return "regular expression"
	case guide.KindLark:
		return "grammar"
	}
	return "schema"
}

// guides is the server's guide.Compiler.
func (s *Server) guides() *guide.Compiler {
	if s.opts.Guides != nil {
		return s.opts.Guides
	}
	return guide.Shared()
}

// newGuide builds one sequence's Guide for g's spec (nil without one).
func (s *Server) newGuide(g *genParams) (*guide.Guide, error) {
	if g.guide == nil {
		return nil, nil
	}
	gd, err := s.guides().New(g.guide)
	if err != nil {
		return nil, fmt.Errorf("api: structured output: %w", err)
	}
	return gd, nil
}
