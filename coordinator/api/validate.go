package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/gptoss/server/coordinator/guide"
	"github.com/gptoss/server/coordinator/harmony"
	"github.com/gptoss/server/coordinator/profiles"
	"github.com/gptoss/server/coordinator/tokenizer"
	"github.com/gptoss/server/shared/step"
)

// Limits caps every size a client controls. The body size itself is capped
// before decoding (Options.MaxBodyBytes).
type Limits struct {
	MaxMessages      int // messages per chat request
	MaxN             int // choices per request
	MaxStop          int // stop sequences
	MaxStopBytes     int // bytes per stop sequence
	MaxTools         int // tools per request
	MaxPromptStrings int // strings or token arrays in one completions prompt
}

// DefaultLimits are the caps used when the configuration sets none.
// MaxPromptStrings 16 lets a client batch a few prompts in one completions
// request (with n 8, at most 128 sequences, a fraction of a profile's
// queue) without one request taking over the scheduler.
var DefaultLimits = Limits{MaxMessages: 4096, MaxN: 8, MaxStop: 4, MaxStopBytes: 256, MaxTools: 128, MaxPromptStrings: 16}

// genParams is a validated generation request, common to both endpoints.
type genParams struct {
	chat    bool
	profile *profiles.Profile
	// prompt and maxTokens are the prompt and its output budget (a
	// completions request's first prompt).
	prompt    []int
	maxTokens int
	// inputs are a completions request's prompts, prompt's included: each
	// is answered by n choices, choice j of prompt i at index i*n+j, as
	// OpenAI numbers them. nil for chat and responses (prompt alone).
	inputs       []input
	sampling     step.Sampling
	stop         []string
	n            int
	stream       bool
	includeUsage bool
	// reasoningField is where chat reasoning goes: reasoning_content,
	// reasoning, both, or none (left out).
	reasoningField string
	// legacyFunctions: the request offered the deprecated functions, so a
	// call is answered as message.function_call with finish_reason
	// "function_call".
	legacyFunctions bool
	// echo (completions) puts each prompt's text before its choices' text.
	echo bool
	// guide is what constrained decoding enforces (nil: nothing): each
	// sequence gets its own guide.Guide from it.
	guide *guide.Spec
}

// input is one prompt of a request and its output budget.
type input struct {
	ids       []int
	maxTokens int
	// text is the prompt as text, what echo repeats: the string sent, or
	// the ids decoded (filled only when echo asks for it).
	text string
}

// batch is the request's prompts: inputs, or the one prompt.
func (g *genParams) batch() []input {
	if g.inputs != nil {
		return g.inputs
	}
	return []input{{ids: g.prompt, maxTokens: g.maxTokens}}
}

// promptTokens counts the prompt tokens of the request, each prompt once
// however many choices answer it (usage.prompt_tokens, as OpenAI counts).
func (g *genParams) promptTokens() int {
	if g.inputs == nil {
		return len(g.prompt)
	}
	n := 0
	for _, in := range g.inputs {
		n += len(in.ids)
	}
	return n
}

// decodeJSON reads the body into v. Syntax errors and type mismatches are
// 400s naming the field; unknown fields are ignored. A number a numeric
// field cannot hold (beyond int64 or float64, a fraction for an integer)
// and NaN or Infinity (not JSON, but what Python's json module writes for
// nan and inf) are refused naming the field and its allowed range.
func decodeJSON(r io.Reader, v any) error {
	data, err := io.ReadAll(r)
	if err != nil {
		if isBodyTooLarge(err) {
			return err
		}
		return invalid("", "", "We could not read the body of your request.").withCause(err)
	}
	err = decodeBytes(data, v)
	if err == nil {
		return nil
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		if ae := nonNumberError(data, v, se); ae != nil {
			return ae.withCause(err)
		}
	}
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &te):
		field := jsonField(te, v)
		if field == "" {
			field = "body"
		}
		if lit, ok := strings.CutPrefix(te.Value, "number "); ok && numberOutOfRange(te.Type, lit) {
			return outOfRange(field, clipString(lit, 40)).withCause(err)
		}
		return invalid(field, "invalid_type", "Invalid type for '%s': expected %s, but got a JSON %s.", field, goTypeName(te.Type.String()), te.Value).withCause(err)
	case errors.Is(err, io.EOF):
		return invalid("", "", "We could not parse the JSON body of your request. (HINT: the body is empty. This likely means you have not sent a JSON body.)").withCause(err)
	case errors.Is(err, errTrailingData):
		return invalid("", "", "We could not parse the JSON body of your request. (HINT: unexpected data after the JSON object.)").withCause(err)
	default:
		return invalid("", "", "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload: %s)", err).withCause(err)
	}
}

var errTrailingData = errors.New("data after the JSON value")

// decodeBytes decodes one JSON value into v; anything but white space
// after it is an error.
func decodeBytes(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errTrailingData
	}
	return nil
}

// numberOutOfRange reports whether a JSON number that a field of type t
// could not hold is a range error rather than a type error: any number for
// a float field (beyond float64), an integer literal for an integer field
// (beyond int64). A fraction or an exponent for an integer field is a type
// error.
func numberOutOfRange(t reflect.Type, lit string) bool {
	switch {
	case isFloat(t):
		return true
	case isInteger(t):
		return lit != "" && strings.Trim(strings.TrimPrefix(lit, "-"), "0123456789") == ""
	}
	return false
}

func isFloat(t reflect.Type) bool { return t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64 }

func isInteger(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

// maxNonNumbers bounds how many NaN or Infinity literals nonNumberError
// replaces while looking for the field of the first.
const maxNonNumbers = 8

// nonNumberError explains a syntax error caused by NaN, Infinity or
// -Infinity in place of a number: the literal is replaced by a string and
// the body decoded again, so that the decoder names the field it was for.
// It returns nil when the syntax error is something else, or when the
// literal is not where a number is expected.
func nonNumberError(data []byte, v any, se *json.SyntaxError) *Error {
	t := reflect.TypeOf(v)
	if t == nil || t.Kind() != reflect.Pointer {
		return nil
	}
	var first string
	for range maxNonNumbers {
		i := int(se.Offset) - 1 // the offending byte
		if i < 0 || i >= len(data) {
			return nil
		}
		start := i
		if start > 0 && data[start-1] == '-' {
			start--
		}
		var lit string
		for _, l := range []string{"-Infinity", "-NaN", "Infinity", "NaN"} {
			if bytes.HasPrefix(data[start:], []byte(l)) {
				lit = l
				break
			}
		}
		if lit == "" {
			return nil
		}
		if first == "" {
			first = lit
		}
		patched := make([]byte, 0, len(data)+2)
		patched = append(patched, data[:start]...)
		patched = append(patched, '"')
		patched = append(patched, lit...)
		patched = append(patched, '"')
		data = append(patched, data[start+len(lit):]...)
		err := decodeBytes(data, reflect.New(t.Elem()).Interface())
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te):
			if te.Value != "string" || !(isFloat(te.Type) || isInteger(te.Type)) {
				return nil
			}
			field := jsonField(te, v)
			return invalid(field, "invalid_value", "Invalid '%s': %s is not a JSON number; it must be %s.", field, first, allowedRange(field))
		case errors.As(err, &se):
			continue // another one further on
		default:
			return nil
		}
	}
	return nil
}

// jsonField is the path of the JSON key a type error is about. Go's
// decoder names a field promoted from an embedded struct through that
// struct's Go name ("SamplingParams.temperature"), which the client never
// sent: the embedded structs of v's type are left out of the path.
func jsonField(te *json.UnmarshalTypeError, v any) string {
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct || te.Field == "" {
		return te.Field
	}
	parts := strings.Split(te.Field, ".")
	out := parts[:0]
	for _, p := range parts {
		if f, ok := t.FieldByName(p); ok && f.Anonymous && f.Tag.Get("json") == "" {
			continue
		}
		out = append(out, p)
	}
	return strings.Join(out, ".")
}

// isBodyTooLarge reports a read cut off by the body limit, which must stay
// a 413 rather than turn into a JSON syntax 400.
func isBodyTooLarge(err error) bool {
	var he *echo.HTTPError
	var me *http.MaxBytesError
	return errors.As(err, &me) || (errors.As(err, &he) && he.Code == http.StatusRequestEntityTooLarge)
}

func goTypeName(t string) string {
	switch {
	case strings.Contains(t, "int"):
		return "an integer"
	case strings.Contains(t, "float"):
		return "a number"
	case t == "string" || strings.HasSuffix(t, "*string"):
		return "a string"
	case t == "bool" || strings.HasSuffix(t, "*bool"):
		return "a boolean"
	case strings.HasPrefix(t, "[]"):
		return "an array"
	default:
		return "an object"
	}
}

// newParams validates what chat and completions share: model, profile and
// the sampling, choice and streaming fields.
func (s *Server) newParams(chat bool, modelName string, profileName *string, sp *SamplingParams, op *OutputParams) (*genParams, error) {
	p, err := s.resolveProfile(modelName, profileName)
	if err != nil {
		return nil, err
	}
	g := &genParams{chat: chat, profile: p}
	if g.sampling, err = sp.resolve(p.Generation); err != nil {
		return nil, err
	}
	if err := s.resolveOutput(op, g); err != nil {
		return nil, err
	}
	return g, nil
}

// resolveProfile checks the model id and picks the request's profile.
func (s *Server) resolveProfile(modelName string, profileName *string) (*profiles.Profile, error) {
	if modelName == "" {
		return nil, invalid("model", "missing_required_parameter", "you must provide a model parameter")
	}
	if !s.servesModel(modelName) {
		return nil, &Error{Status: 404, Type: "invalid_request_error", Param: "model", Code: "model_not_found",
			Message: fmt.Sprintf("The model `%s` does not exist or you do not have access to it. This server serves %s.", clipString(modelName, 100), s.opts.Model.ID)}
	}
	name := s.opts.DefaultProfile
	if profileName != nil {
		name = *profileName
	}
	p, err := s.opts.Profiles.Get(name)
	if err != nil {
		return nil, invalid("profile", "invalid_value", "Unknown profile %q. Known profiles: %s.", clipString(name, 100), strings.Join(s.opts.Profiles.Names(), ", ")).withCause(err)
	}
	return p, nil
}

// allowedRanges says what each numeric request field allows, for the
// error messages; resolve and the endpoint parsers enforce these bounds
// (docs/coordinator.md lists them). n and max_tokens have bounds from the
// configuration and the profile, which their checks name.
var allowedRanges = map[string]string{
	"temperature":           "a number between 0 and 2",
	"top_p":                 "a number greater than 0 and at most 1",
	"top_k":                 fmt.Sprintf("-1 or 0 (no top-k), or an integer between 1 and %d (the vocabulary size)", tokenizer.VocabSize),
	"min_p":                 "a number between 0 and 1",
	"presence_penalty":      "a number between -2 and 2",
	"frequency_penalty":     "a number between -2 and 2",
	"repetition_penalty":    "1 (off); other values are not supported",
	"seed":                  "an integer between -9223372036854775808 and 9223372036854775807",
	"n":                     "an integer >= 1",
	"max_tokens":            "an integer >= 1",
	"max_completion_tokens": "an integer >= 1",
	"logprobs":              "an integer between 0 and 20",
	"top_logprobs":          "an integer between 0 and 20",
}

// allowedRange is the allowed range of a numeric field, for messages.
func allowedRange(field string) string {
	if r, ok := allowedRanges[field]; ok {
		return r
	}
	return "a number in range"
}

// outOfRange is the 400 for a number outside its field's range.
func outOfRange(field, got string) *Error {
	return invalid(field, "invalid_value", "Invalid '%s': %s is out of range: it must be %s.", field, got, allowedRange(field))
}

// checkFloat refuses v outside [lo, hi] ((lo, hi] when loOpen). NaN is
// outside every range.
func checkFloat(field string, v, lo, hi float64, loOpen bool) error {
	if !(v >= lo && v <= hi) || (loOpen && v == lo) {
		return outOfRange(field, strconv.FormatFloat(v, 'g', -1, 64))
	}
	return nil
}

// checkInt refuses v outside [lo, hi].
func checkInt(field string, v, lo, hi int) error {
	if v < lo || v > hi {
		return outOfRange(field, strconv.Itoa(v))
	}
	return nil
}

// resolve validates the sampling fields and returns the step.Sampling they
// ask for, with the profile's defaults where a field is absent. Logprobs
// are left unset: the endpoint sets them. Every bound is checked here, so
// nothing reaches the wire (int32 fields) out of range.
func (p *SamplingParams) resolve(def profiles.Generation) (step.Sampling, error) {
	sp := step.Sampling{Temperature: def.Temperature, TopP: def.TopP}
	floats := []struct {
		field  string
		v      *float64
		lo, hi float64
		loOpen bool
		dst    *float64
	}{
		{"temperature", p.Temperature, 0, 2, false, &sp.Temperature},
		{"top_p", p.TopP, 0, 1, true, &sp.TopP},
		{"min_p", p.MinP, 0, 1, false, &sp.MinP},
		{"presence_penalty", p.PresencePenalty, -2, 2, false, &sp.PresencePenalty},
		{"frequency_penalty", p.FrequencyPenalty, -2, 2, false, &sp.FrequencyPenalty},
	}
	for _, f := range floats {
		if f.v == nil {
			continue
		}
		if err := checkFloat(f.field, *f.v, f.lo, f.hi, f.loOpen); err != nil {
			return step.Sampling{}, err
		}
		*f.dst = *f.v
	}
	if v := p.TopK; v != nil {
		// -1 is vLLM's "off", 0 OpenAI-style clients' "off"; above the
		// vocabulary, top-k means nothing (and past int32 it would not fit
		// the wire).
		if err := checkInt("top_k", *v, -1, tokenizer.VocabSize); err != nil {
			return step.Sampling{}, err
		}
		sp.TopK = max(*v, 0)
	}
	if p.Seed != nil {
		sp.Seed, sp.HasSeed = *p.Seed, true
	}
	if v := p.RepetitionPenalty; v != nil && *v != 1 {
		if math.IsNaN(*v) || math.IsInf(*v, 0) {
			return step.Sampling{}, outOfRange("repetition_penalty", strconv.FormatFloat(*v, 'g', -1, 64))
		}
		return step.Sampling{}, unsupported("repetition_penalty", "repetition_penalty %g is not supported: this server's sampler has no multiplicative repetition penalty, so only 1 (off) is accepted. Use presence_penalty or frequency_penalty (-2 to 2) instead.", *v)
	}
	if len(p.LogitBias) > 0 {
		return step.Sampling{}, unsupported("logit_bias", "logit_bias is not supported by this server.")
	}
	return sp, nil
}

// resolveOutput validates n, stream, stream_options and stop.
func (s *Server) resolveOutput(op *OutputParams, g *genParams) error {
	g.n = 1
	if v := op.N; v != nil {
		if *v < 1 || *v > s.opts.Limits.MaxN {
			return invalid("n", "invalid_value", "Invalid 'n': %d is out of range: it must be an integer between 1 and %d.", *v, s.opts.Limits.MaxN)
		}
		g.n = *v
	}
	if op.Stream != nil {
		g.stream = *op.Stream
	}
	if op.StreamOptions != nil {
		if !g.stream {
			return invalid("stream_options", "invalid_value", "The 'stream_options' parameter is only allowed when 'stream' is enabled.")
		}
		g.includeUsage = op.StreamOptions.IncludeUsage
	}
	if g.stream && !s.opts.EnableStreaming {
		return invalid("stream", "streaming_disabled", "Streaming is disabled on this server (ENABLE_STREAMING=false). Send the request without \"stream\": true.")
	}
	stops, err := s.parseStop(op.Stop)
	if err != nil {
		return err
	}
	g.stop = stops
	return nil
}

func (s *Server) parseStop(raw json.RawMessage) ([]string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, jsonNull) {
		return nil, nil
	}
	var list []string
	if raw[0] == '"' {
		var one string
		if err := json.Unmarshal(raw, &one); err != nil {
			return nil, invalid("stop", "invalid_type", "Invalid 'stop': expected a string or an array of strings.").withCause(err)
		}
		list = []string{one}
	} else if err := json.Unmarshal(raw, &list); err != nil {
		return nil, invalid("stop", "invalid_type", "Invalid 'stop': expected a string or an array of strings.").withCause(err)
	}
	if len(list) > s.opts.Limits.MaxStop {
		return nil, invalid("stop", "invalid_value", "Invalid 'stop': at most %d stop sequences are allowed, got %d.", s.opts.Limits.MaxStop, len(list))
	}
	out := list[:0]
	for _, st := range list {
		if len(st) > s.opts.Limits.MaxStopBytes {
			return nil, invalid("stop", "invalid_value", "Invalid 'stop': each stop sequence must be at most %d bytes.", s.opts.Limits.MaxStopBytes)
		}
		if st != "" {
			out = append(out, st)
		}
	}
	return out, nil
}

// resolveMaxTokens sets the output budget of the request's prompt.
// requested is nil when the client set no limit.
func (s *Server) resolveMaxTokens(requested *int, param string, g *genParams) error {
	m, err := s.maxTokensFor(requested, param, len(g.prompt), g.profile)
	g.maxTokens = m
	return err
}

// maxTokensFor is the output budget of a prompt of promptLen tokens: the
// requested one, held to the profile's max_tokens_cap and the context; or,
// when the client set none, the rest of the context, capped by
// max_tokens_cap (and by the profile's max_tokens when it sets one). The
// rest of the context is what OpenAI and vLLM give, and what a reasoning
// model needs: gpt-oss at high effort writes thousands of reasoning tokens
// before its answer, and a small default budget cut answers off before
// they began (finish_reason "length", empty content).
func (s *Server) maxTokensFor(requested *int, param string, promptLen int, p *profiles.Profile) (int, error) {
	ctxLen := s.contextTokens()
	if promptLen >= ctxLen {
		return 0, invalid("messages", "context_length_exceeded",
			"This model's maximum context length is %d tokens. However, your messages resulted in %d tokens. Please reduce the length of the messages.", ctxLen, promptLen)
	}
	cap := p.Generation.MaxTokensCap
	if requested == nil {
		budget := min(ctxLen-promptLen, cap)
		if d := p.Generation.MaxTokens; d > 0 {
			budget = min(budget, d)
		}
		return budget, nil
	}
	m := *requested
	switch {
	case m < 1:
		return 0, invalid(param, "invalid_value", "Invalid '%s': integer below minimum value. Expected a value >= 1, but got %d instead.", param, m)
	case m > cap:
		return 0, invalid(param, "invalid_value", "%s is too large: %d. The %s profile allows at most %d completion tokens, whereas you provided %d.", param, m, p.Name, cap, m)
	case promptLen+m > ctxLen:
		return 0, invalid("messages", "context_length_exceeded",
			"This model's maximum context length is %d tokens. However, you requested %d tokens (%d in the messages, %d in the completion). Please reduce the length of the messages or completion.", ctxLen, promptLen+m, promptLen, m)
	}
	return m, nil
}

// contextTokens is the most tokens (prompt and output) one sequence may
// hold: the model's context, or less when the engine's KV cache cannot
// hold that much for one sequence (it could then never finish, however
// much the scheduler preempts).
func (s *Server) contextTokens() int {
	ctxLen := s.opts.Model.ContextLength
	if kv := s.opts.Engine.Capabilities().KVTokens; kv > 0 && kv < ctxLen {
		ctxLen = kv
	}
	return ctxLen
}

// parseChat validates a chat request and renders its prompt.
func (s *Server) parseChat(req *ChatRequest) (*genParams, error) {
	g, err := s.newParams(true, req.Model, req.Profile, &req.SamplingParams, &req.OutputParams)
	if err != nil {
		return nil, err
	}
	p := g.profile
	if req.Logprobs != nil && *req.Logprobs {
		if !s.opts.Engine.Capabilities().Logprobs {
			return nil, unsupported("logprobs", "logprobs are not supported by the %s engine.", s.opts.Mode)
		}
		g.sampling.Logprobs = true
	}
	if v := req.TopLogprobs; v != nil {
		if err := checkInt("top_logprobs", *v, 0, 20); err != nil {
			return nil, err
		}
		if *v > 0 && !g.sampling.Logprobs {
			return nil, invalid("top_logprobs", "invalid_value", "top_logprobs requires logprobs to be true.")
		}
		g.sampling.TopLogprobs = *v
	}
	if err := refuseUnsupported(append(req.RefusedParams.refusables(), req.ChatRefusedParams.refusables()...)); err != nil {
		return nil, err
	}
	g.legacyFunctions = len(req.Functions) > 0
	if g.reasoningField, err = s.resolveReasoningField(req); err != nil {
		return nil, err
	}
	final, finalParam, err := resolveGrammar(req.ResponseFormat, &req.StructuredParams)
	if err != nil {
		return nil, err
	}
	if v := req.User; v != nil && len(*v) > 512 {
		return nil, invalid("user", "invalid_value", "Invalid 'user': at most 512 bytes.")
	}
	rc, err := s.renderChat(req, p)
	if err != nil {
		return nil, err
	}
	g.prompt = rc.prompt
	if g.guide, err = s.guideSpec(final, rc.tools, rc.choice, rc.strict, req.MaxReasoningTokens, p); err != nil {
		return nil, err
	}
	if g.guide != nil {
		if err := s.checkSpec(g.guide, finalParam); err != nil {
			return nil, err
		}
	}
	param := "max_tokens"
	mt := req.MaxTokens
	if req.MaxCompletionTokens != nil {
		param, mt = "max_completion_tokens", req.MaxCompletionTokens
	}
	if err := s.resolveMaxTokens(mt, param, g); err != nil {
		return nil, err
	}
	return g, nil
}

// renderChat validates what shapes a chat prompt (tools or the deprecated
// functions, tool_choice, reasoning_effort and chat_template_kwargs, the
// messages) and renders it in the Harmony format, ending with the
// generation prompt. It is the one rendering of /v1/chat/completions (and
// so of the Responses API) and of /tokenize's messages form, so /tokenize
// counts exactly the tokens a chat request is charged.
func (s *Server) renderChat(req *ChatRequest, p *profiles.Profile) (*rendered, error) {
	tools, choice, err := s.resolveTools(req)
	if err != nil {
		return nil, err
	}
	effort := p.Generation.ReasoningEffort
	if v := req.ReasoningEffort; v != nil {
		switch *v {
		case "low", "medium", "high":
			effort = *v
		default:
			return nil, invalid("reasoning_effort", "invalid_value", "Invalid reasoning_effort %q: expected low, medium or high.", clipString(*v, 50))
		}
	}
	if v, err := resolveTemplateKwargs(req.ChatTemplateKwargs, req.ReasoningEffort); err != nil {
		return nil, err
	} else if v != nil {
		effort = *v
	}
	msgs, err := s.convertMessages(req.Messages)
	if err != nil {
		return nil, err
	}
	conv := harmony.Conversation{Messages: msgs, ReasoningEffort: effort, Date: time.Now().UTC().Format(time.DateOnly), Tools: tools}
	if choice.choice == guide.ChoiceNone {
		// "none" keeps the model from calling by not offering the tools.
		conv.Tools = nil
	}
	if rf := req.ResponseFormat; rf != nil && rf.Type == "json_schema" && rf.JSONSchema != nil {
		// The schema is announced to the model as Harmony does, so that it
		// writes what the decoder enforces instead of being forced into it.
		conv.ResponseFormat = &harmony.ResponseFormat{Name: rf.JSONSchema.Name, Description: rf.JSONSchema.Description, Schema: rf.JSONSchema.Schema}
		if conv.ResponseFormat.Name == "" {
			conv.ResponseFormat.Name = "response"
		}
	}
	r := &rendered{prompt: harmony.Render(s.opts.Tokenizer, conv), tools: conv.Tools, choice: choice, strict: map[string]bool{}}
	for _, t := range req.Tools {
		if t.Function != nil && t.Function.Strict != nil && *t.Function.Strict {
			r.strict[t.Function.Name] = true
		}
	}
	return r, nil
}

// rendered is a chat request's prompt and what constrained decoding needs
// of its shape: the tools offered, tool_choice, the strict tools.
type rendered struct {
	prompt []int
	tools  []harmony.Tool
	choice toolChoice
	strict map[string]bool
}

// resolveTools validates tools and tool_choice (or their deprecated
// forms, functions and function_call) and returns the functions and the
// choice. "auto" (the default with tools) lets the model decide;
// "required" and a named function are enforced by constrained decoding
// (coordinator/guide); "none" is honoured by not offering the tools.
func (s *Server) resolveTools(req *ChatRequest) ([]harmony.Tool, toolChoice, error) {
	if len(req.Functions) > 0 || present(req.FunctionCall) {
		return s.resolveFunctions(req)
	}
	auto := toolChoice{choice: guide.ChoiceAuto}
	if len(req.Tools) > s.opts.Limits.MaxTools {
		return nil, auto, invalid("tools", "invalid_value", "Invalid 'tools': at most %d tools are allowed, got %d.", s.opts.Limits.MaxTools, len(req.Tools))
	}
	fs := make([]*FunctionSchema, len(req.Tools))
	for i, t := range req.Tools {
		if t.Type != "function" || t.Function == nil {
			return nil, auto, invalid(fmt.Sprintf("tools[%d]", i), "invalid_value", "Invalid tool at index %d: expected {\"type\": \"function\", \"function\": {\"name\": ...}}.", i)
		}
		fs[i] = t.Function
	}
	tools, err := functionTools(fs, func(i int, sub string) string { return fmt.Sprintf("tools[%d].function%s", i, sub) })
	if err != nil {
		return nil, auto, err
	}
	choice := bytes.TrimSpace(req.ToolChoice)
	if !present(choice) {
		return tools, auto, nil
	}
	noTools := invalid("tool_choice", "invalid_value", "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.")
	var sv string
	if err := json.Unmarshal(choice, &sv); err != nil {
		var named struct {
			Type     string `json:"type"`
			Function *struct {
				Name string `json:"name"`
			} `json:"function"`
		}
		if json.Unmarshal(choice, &named) != nil || named.Type != "function" || named.Function == nil {
			return nil, auto, invalid("tool_choice", "invalid_value", "Invalid value for 'tool_choice': expected none, auto, required or {\"type\": \"function\", \"function\": {\"name\": ...}}.")
		}
		if len(tools) == 0 {
			return nil, auto, noTools
		}
		return s.namedChoice(tools, named.Function.Name, "tool_choice.function.name")
	}
	switch sv {
	case "auto":
		return tools, auto, nil
	case "none":
		return tools, toolChoice{choice: guide.ChoiceNone}, nil
	case "required":
		if len(tools) == 0 {
			return nil, auto, noTools
		}
		return tools, toolChoice{choice: guide.ChoiceRequired}, nil
	default:
		return nil, auto, invalid("tool_choice", "invalid_value", "Invalid value for 'tool_choice': expected none, auto, required or a function object.")
	}
}

// namedChoice is a tool_choice (or function_call) naming one of tools.
func (s *Server) namedChoice(tools []harmony.Tool, name, param string) ([]harmony.Tool, toolChoice, error) {
	for _, t := range tools {
		if t.Name == name {
			return tools, toolChoice{choice: guide.ChoiceNamed, named: name}, nil
		}
	}
	return nil, toolChoice{}, invalid(param, "invalid_value", "Invalid '%s': no function named %q among the tools.", param, clipString(name, 80))
}

// resolveFunctions maps the deprecated functions and function_call onto
// tools and tool_choice, as OpenAI documents them: each function is a tool
// of type function; function_call "none" and "auto" are tool_choice's, and
// a named function_call is a named tool_choice.
func (s *Server) resolveFunctions(req *ChatRequest) ([]harmony.Tool, toolChoice, error) {
	auto := toolChoice{choice: guide.ChoiceAuto}
	if len(req.Tools) > 0 {
		return nil, auto, invalid("functions", "invalid_value", "'functions' and 'tools' cannot be given together: send 'tools' ('functions' is its deprecated form).")
	}
	if present(req.ToolChoice) {
		param := "tool_choice"
		if present(req.FunctionCall) {
			param = "function_call"
		}
		return nil, auto, invalid(param, "invalid_value", "'function_call' and 'tool_choice' cannot be mixed with 'functions': send 'tools' with 'tool_choice', or 'functions' with 'function_call'.")
	}
	if len(req.Functions) > s.opts.Limits.MaxTools {
		return nil, auto, invalid("functions", "invalid_value", "Invalid 'functions': at most %d functions are allowed, got %d.", s.opts.Limits.MaxTools, len(req.Functions))
	}
	fs := make([]*FunctionSchema, len(req.Functions))
	for i := range req.Functions {
		fs[i] = &req.Functions[i]
	}
	tools, err := functionTools(fs, func(i int, sub string) string { return fmt.Sprintf("functions[%d]%s", i, sub) })
	if err != nil {
		return nil, auto, err
	}
	call := bytes.TrimSpace(req.FunctionCall)
	if !present(call) {
		return tools, auto, nil
	}
	switch call[0] {
	case '"':
		var sv string
		if err := json.Unmarshal(call, &sv); err != nil {
			return nil, auto, invalid("function_call", "invalid_type", "Invalid 'function_call': expected \"none\", \"auto\" or {\"name\": ...}.").withCause(err)
		}
		switch sv {
		case "auto":
			return tools, auto, nil
		case "none":
			return tools, toolChoice{choice: guide.ChoiceNone}, nil
		default:
			return nil, auto, invalid("function_call", "invalid_value", "Invalid value for 'function_call': expected \"none\", \"auto\" or {\"name\": ...}.")
		}
	case '{':
		if len(tools) == 0 {
			return nil, auto, invalid("function_call", "invalid_value", "Invalid value for 'function_call': 'function_call' naming a function is only allowed when 'functions' are specified.")
		}
		var named struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(call, &named); err != nil {
			return nil, auto, invalid("function_call", "invalid_type", "Invalid 'function_call': expected \"none\", \"auto\" or {\"name\": ...}.").withCause(err)
		}
		return s.namedChoice(tools, named.Name, "function_call.name")
	default:
		return nil, auto, invalid("function_call", "invalid_type", "Invalid 'function_call': expected \"none\", \"auto\" or {\"name\": ...}.")
	}
}

// functionTools validates function definitions (names, uniqueness,
// parameters) and returns them as Harmony tools; param names the i-th
// function's field sub (".name", ".parameters") in errors.
func functionTools(fs []*FunctionSchema, param func(i int, sub string) string) ([]harmony.Tool, error) {
	tools := make([]harmony.Tool, 0, len(fs))
	seen := map[string]bool{}
	for i, f := range fs {
		if !validFunctionName(f.Name) {
			return nil, invalid(param(i, ".name"), "invalid_value", "Invalid function name %q: it must be 1 to 64 characters of a-z, A-Z, 0-9, _ and -.", clipString(f.Name, 80))
		}
		if seen[f.Name] {
			return nil, invalid(param(i, ".name"), "invalid_value", "Duplicate function name %q.", f.Name)
		}
		seen[f.Name] = true
		params := bytes.TrimSpace(f.Parameters)
		if bytes.Equal(params, jsonNull) {
			params = nil
		}
		if len(params) > 0 && params[0] != '{' {
			return nil, invalid(param(i, ".parameters"), "invalid_value", "Invalid 'parameters' of function %q: expected a JSON Schema object.", f.Name)
		}
		tools = append(tools, harmony.Tool{Name: f.Name, Description: f.Description, Parameters: params})
	}
	return tools, nil
}

// present reports whether a raw JSON field was given a non-null value.
func present(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && !bytes.Equal(raw, jsonNull)
}

// validFunctionName applies OpenAI's rule for function names.
func validFunctionName(n string) bool {
	if n == "" || len(n) > 64 {
		return false
	}
	for _, r := range n {
		if !(r == '_' || r == '-' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')) {
			return false
		}
	}
	return true
}

// resolveReasoningField picks where reasoning goes in a chat response.
func (s *Server) resolveReasoningField(req *ChatRequest) (string, error) {
	f := s.opts.ReasoningField
	if req.ReasoningField != nil {
		switch *req.ReasoningField {
		case "reasoning_content", "reasoning", "both":
			f = *req.ReasoningField
		default:
			return "", invalid("reasoning_field", "invalid_value", "Invalid reasoning_field %q: expected reasoning_content, reasoning or both.", clipString(*req.ReasoningField, 50))
		}
	}
	if req.IncludeReasoning != nil && !*req.IncludeReasoning {
		f = "none"
	}
	return f, nil
}

// convertMessages validates the conversation and turns it into Harmony
// messages.
func (s *Server) convertMessages(in []ChatMessage) ([]harmony.Message, error) {
	if len(in) == 0 {
		return nil, invalid("messages", "empty_array", "[] is too short - 'messages'")
	}
	if len(in) > s.opts.Limits.MaxMessages {
		return nil, invalid("messages", "invalid_value", "Invalid 'messages': at most %d messages are allowed, got %d.", s.opts.Limits.MaxMessages, len(in))
	}
	callNames := map[string]string{} // tool_call_id -> function name
	out := make([]harmony.Message, 0, len(in))
	for i, m := range in {
		param := fmt.Sprintf("messages[%d]", i)
		text, present, err := contentText(m.Content, param)
		if err != nil {
			return nil, err
		}
		hm := harmony.Message{Role: m.Role, Content: text}
		switch m.Role {
		case "system", "developer", "user":
			if !present {
				return nil, invalid(param+".content", "missing_required_parameter", "Missing required parameter: '%s.content'.", param)
			}
		case "assistant":
			if m.ReasoningContent != nil {
				hm.Reasoning = *m.ReasoningContent
			} else if m.Reasoning != nil {
				hm.Reasoning = *m.Reasoning
			}
			for j, tc := range m.ToolCalls {
				if tc.Function.Name == "" || tc.ID == "" {
					return nil, invalid(fmt.Sprintf("%s.tool_calls[%d]", param, j), "invalid_value", "Each tool call needs an 'id' and a 'function.name'.")
				}
				callNames[tc.ID] = tc.Function.Name
				hm.ToolCalls = append(hm.ToolCalls, harmony.ToolCall{Name: tc.Function.Name, Arguments: tc.Function.Arguments})
			}
			if fc := m.FunctionCall; fc != nil {
				// The deprecated form of one tool call; its result comes
				// in a "function" message naming the function.
				if len(m.ToolCalls) > 0 {
					return nil, invalid(param+".function_call", "invalid_value", "Invalid '%s': give 'tool_calls' or the deprecated 'function_call', not both.", param)
				}
				if fc.Name == "" {
					return nil, invalid(param+".function_call", "invalid_value", "Invalid '%s.function_call': it needs a 'name'.", param)
				}
				hm.ToolCalls = append(hm.ToolCalls, harmony.ToolCall{Name: fc.Name, Arguments: fc.Arguments})
			}
			if !present && len(hm.ToolCalls) == 0 && hm.Reasoning == "" {
				return nil, invalid(param+".content", "missing_required_parameter", "Invalid '%s': an assistant message needs 'content' or 'tool_calls'.", param)
			}
		case "tool":
			if !present {
				return nil, invalid(param+".content", "missing_required_parameter", "Missing required parameter: '%s.content'.", param)
			}
			if m.ToolCallID == nil || *m.ToolCallID == "" {
				return nil, invalid(param+".tool_call_id", "missing_required_parameter", "Missing required parameter: '%s.tool_call_id'.", param)
			}
			name, ok := callNames[*m.ToolCallID]
			if !ok {
				return nil, invalid(param+".tool_call_id", "invalid_value", "Invalid '%s.tool_call_id': no earlier assistant message has a tool call with id %q.", param, clipString(*m.ToolCallID, 100))
			}
			hm.ToolName = name
		case "":
			return nil, invalid(param+".role", "missing_required_parameter", "Missing required parameter: '%s.role'.", param)
		case "function":
			// The deprecated form of a tool message: the result of the
			// function it names.
			if m.Name == nil || *m.Name == "" {
				return nil, invalid(param+".name", "missing_required_parameter", "Missing required parameter: '%s.name' (a 'function' message names the function whose result it carries).", param)
			}
			if !validFunctionName(*m.Name) {
				return nil, invalid(param+".name", "invalid_value", "Invalid '%s.name' %q: it must be 1 to 64 characters of a-z, A-Z, 0-9, _ and -.", param, clipString(*m.Name, 80))
			}
			if !present {
				return nil, invalid(param+".content", "missing_required_parameter", "Missing required parameter: '%s.content'.", param)
			}
			hm.Role, hm.ToolName = "tool", *m.Name
		default:
			return nil, invalid(param+".role", "invalid_value", "Invalid value for '%s.role': %q. Supported values are: 'system', 'developer', 'user', 'assistant', 'tool' and the deprecated 'function'.", param, clipString(m.Role, 50))
		}
		out = append(out, hm)
	}
	return out, nil
}

// contentText flattens a message content (string, text parts or null).
// present is false for null or a missing content.
func contentText(raw json.RawMessage, param string) (text string, present bool, err error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, jsonNull) {
		return "", false, nil
	}
	switch raw[0] {
	case '"':
		if err := json.Unmarshal(raw, &text); err != nil {
			return "", false, invalid(param+".content", "invalid_type", "Invalid '%s.content': expected a string.", param).withCause(err)
		}
		return text, true, nil
	case '[':
		var parts []ContentPart
		if err := json.Unmarshal(raw, &parts); err != nil {
			return "", false, invalid(param+".content", "invalid_type", "Invalid '%s.content': expected a string or an array of content parts.", param).withCause(err)
		}
		texts := make([]string, 0, len(parts))
		for j, p := range parts {
			switch p.Type {
			case "text":
				if p.Text == nil {
					return "", false, invalid(fmt.Sprintf("%s.content[%d].text", param, j), "missing_required_parameter", "Missing required parameter: '%s.content[%d].text'.", param, j)
				}
				texts = append(texts, *p.Text)
			case "image_url", "input_audio", "file", "input_image":
				return "", false, unsupported(fmt.Sprintf("%s.content[%d].type", param, j), "Content of type %q is not supported: gpt-oss is a text-only model.", p.Type)
			default:
				return "", false, invalid(fmt.Sprintf("%s.content[%d].type", param, j), "invalid_value", "Invalid content part type %q.", clipString(p.Type, 50))
			}
		}
		return strings.Join(texts, "\n"), true, nil
	default:
		return "", false, invalid(param+".content", "invalid_type", "Invalid '%s.content': expected a string or an array of content parts.", param)
	}
}

// parseCompletion validates a completions request. A text prompt is
// encoded as ordinary text (no special tokens); clients that need control
// tokens send token ids. A list of prompts is answered as OpenAI does:
// n choices for each, every prompt with its own budget.
func (s *Server) parseCompletion(req *CompletionRequest) (*genParams, error) {
	g, err := s.newParams(false, req.Model, req.Profile, &req.SamplingParams, &req.OutputParams)
	if err != nil {
		return nil, err
	}
	if v := req.Logprobs; v != nil {
		// logprobs: 0 asks for the sampled tokens' logprobs alone.
		if err := checkInt("logprobs", *v, 0, 20); err != nil {
			return nil, err
		}
		if !s.opts.Engine.Capabilities().Logprobs {
			return nil, unsupported("logprobs", "logprobs are not supported by the %s engine.", s.opts.Mode)
		}
		g.sampling.Logprobs, g.sampling.TopLogprobs = true, *v
	}
	if req.Echo != nil && *req.Echo {
		if g.sampling.Logprobs {
			// OpenAI lists the prompt's tokens with logprobs when echoing;
			// the sampler computes logprobs of generated tokens only.
			return nil, unsupported("echo", "echo together with logprobs is not supported: this server computes logprobs for generated tokens only, not for the prompt's. Send echo or logprobs, not both.")
		}
		g.echo = true
	}
	if req.Suffix != nil && *req.Suffix != "" {
		return nil, unsupported("suffix", "suffix is not supported: gpt-oss has no fill-in-the-middle mode.")
	}
	if req.BestOf != nil && *req.BestOf != 1 {
		return nil, unsupported("best_of", "best_of other than 1 is not supported by this server.")
	}
	if err := refuseUnsupported(req.RefusedParams.refusables()); err != nil {
		return nil, err
	}
	final, finalParam, err := resolveGrammar(req.ResponseFormat, &req.StructuredParams)
	if err != nil {
		return nil, err
	}
	if final != nil {
		// Raw text follows the grammar from its first token, and ends where
		// the grammar does.
		g.guide = &guide.Spec{Raw: true, Final: final, Stops: stopTokens(false), ReasoningBudget: guide.Unlimited}
		if err := s.checkSpec(g.guide, finalParam); err != nil {
			return nil, err
		}
	}
	inputs, err := s.completionPrompts(req.Prompt)
	if err != nil {
		return nil, err
	}
	for i := range inputs {
		in := &inputs[i]
		if in.maxTokens, err = s.maxTokensFor(req.MaxTokens, "max_tokens", len(in.ids), g.profile); err != nil {
			return nil, err
		}
		if g.echo && in.text == "" {
			// Token ids echo as their text, special tokens by name.
			if in.text, err = s.opts.Tokenizer.Decode(in.ids); err != nil {
				return nil, invalid("prompt", "invalid_value", "Invalid 'prompt': %v.", err).withCause(err)
			}
		}
	}
	g.inputs, g.prompt, g.maxTokens = inputs, inputs[0].ids, inputs[0].maxTokens
	return g, nil
}

// completionPrompts decodes a completions prompt: a string, an array of
// token ids, or an array of strings or token-id arrays, each a prompt of
// its own (at most Limits.MaxPromptStrings). A string prompt keeps its
// text for echo.
func (s *Server) completionPrompts(raw json.RawMessage) ([]input, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, jsonNull) {
		return nil, invalid("prompt", "missing_required_parameter", "Missing required parameter: 'prompt'.")
	}
	bad := func(err error) *Error {
		return invalid("prompt", "invalid_type", "Invalid 'prompt': expected a string, an array of strings, an array of token ids or an array of token-id arrays.").withCause(err)
	}
	var inputs []input
	switch raw[0] {
	case '"':
		var t string
		if err := json.Unmarshal(raw, &t); err != nil {
			return nil, bad(err)
		}
		inputs = []input{{ids: s.opts.Tokenizer.Encode(t), text: t}}
	case '[':
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, bad(err)
		}
		if len(items) == 0 {
			return nil, invalid("prompt", "empty_array", "[] is too short - 'prompt'")
		}
		if c := bytes.TrimSpace(items[0]); len(c) > 0 && (c[0] == '-' || (c[0] >= '0' && c[0] <= '9')) {
			var ids []int
			if err := json.Unmarshal(raw, &ids); err != nil {
				return nil, bad(err)
			}
			inputs = []input{{ids: ids}}
			break
		}
		if len(items) > s.opts.Limits.MaxPromptStrings {
			return nil, invalid("prompt", "invalid_value", "Invalid 'prompt': at most %d prompts are allowed in one request, got %d.", s.opts.Limits.MaxPromptStrings, len(items))
		}
		for _, it := range items {
			it = bytes.TrimSpace(it)
			if len(it) > 0 && it[0] == '"' {
				var t string
				if err := json.Unmarshal(it, &t); err != nil {
					return nil, bad(err)
				}
				inputs = append(inputs, input{ids: s.opts.Tokenizer.Encode(t), text: t})
				continue
			}
			var ids []int
			if err := json.Unmarshal(it, &ids); err != nil {
				return nil, bad(err)
			}
			inputs = append(inputs, input{ids: ids})
		}
	default:
		return nil, bad(nil)
	}
	for i, in := range inputs {
		which := "the prompt"
		if len(inputs) > 1 {
			which = fmt.Sprintf("prompt %d", i)
		}
		if len(in.ids) == 0 {
			return nil, invalid("prompt", "invalid_value", "Invalid 'prompt': %s is empty.", which)
		}
		for _, id := range in.ids {
			if id < 0 || id >= tokenizer.VocabSize {
				return nil, invalid("prompt", "invalid_value", "Invalid 'prompt': token id %d of %s is outside the vocabulary (0..%d).", id, which, tokenizer.VocabSize-1)
			}
		}
	}
	return inputs, nil
}

func clipString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// refusable is one parameter this server does not implement: a value
// other than null or one of its neutral values is refused.
type refusable struct {
	name    string
	raw     json.RawMessage
	neutral []string // JSON values that mean "off"
	why     string   // completes "… is not supported: "
}

// refuseUnsupported refuses the first parameter set to a value that would
// change the answer.
func refuseUnsupported(ps []refusable) error {
	for _, p := range ps {
		if isNeutral(p.raw, p.neutral) {
			continue
		}
		accepted := "null"
		if len(p.neutral) > 0 {
			accepted = strings.Join(p.neutral, " or ") + " (or null)"
		}
		return unsupported(p.name, "'%s' = %s is not supported: %s. Only %s is accepted.", p.name, clipString(string(bytes.TrimSpace(p.raw)), 60), p.why, accepted)
	}
	return nil
}

// isNeutral reports whether raw is absent, null or equal as JSON to one of
// neutral (numbers compare by value: 1 and 1.0 are equal).
func isNeutral(raw json.RawMessage, neutral []string) bool {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, jsonNull) {
		return true
	}
	var got any
	if json.Unmarshal(raw, &got) != nil {
		return false
	}
	for _, n := range neutral {
		var want any
		if json.Unmarshal([]byte(n), &want) == nil && reflect.DeepEqual(got, want) {
			return true
		}
	}
	return false
}

const (
	whySampler = "this server's sampler does not implement it"
)

// refusables lists the parameters of both endpoints that are refused at
// any value but their neutral ones (docs/coordinator.md explains each).
func (p *RefusedParams) refusables() []refusable {
	return []refusable{
		{"store", p.Store, []string{"false"}, "this server does not store completions"},
		{"min_tokens", p.MinTokens, []string{"0"}, whySampler},
		{"ignore_eos", p.IgnoreEOS, []string{"false"}, whySampler},
		{"stop_token_ids", p.StopTokenIDs, []string{"[]"}, "stop tokens are fixed by the Harmony format; use 'stop' strings"},
		{"bad_words", p.BadWords, []string{"[]"}, whySampler},
		{"allowed_token_ids", p.AllowedTokenIDs, nil, whySampler},
		{"include_stop_str_in_output", p.IncludeStopStrInOutput, []string{"false"}, "stop strings are never included in the output"},
		{"skip_special_tokens", p.SkipSpecialTokens, []string{"true"}, "special tokens are never shown"},
		{"use_beam_search", p.UseBeamSearch, []string{"false"}, "this server has no beam search"},
		{"length_penalty", p.LengthPenalty, []string{"1"}, "this server has no beam search"},
		{"prompt_logprobs", p.PromptLogprobs, nil, "logprobs are reported for generated tokens only"},
		{"truncate_prompt_tokens", p.TruncatePromptTokens, nil, "prompts are never truncated; a prompt over the context is refused"},
		{"logits_processors", p.LogitsProcessors, []string{"[]"}, whySampler},
		{"return_tokens_as_token_ids", p.ReturnTokensAsTokenIDs, []string{"false"}, "logprobs name tokens by their text"},
	}
}

// refusables lists the chat-only parameters refused the same way.
func (p *ChatRefusedParams) refusables() []refusable {
	return []refusable{
		{"modalities", p.Modalities, []string{`["text"]`}, "gpt-oss is a text-only model"},
		{"audio", p.Audio, nil, "gpt-oss is a text-only model"},
		{"web_search_options", p.WebSearchOptions, nil, "this server has no web search"},
		{"verbosity", p.Verbosity, []string{`"medium"`}, "gpt-oss has no verbosity control"},
		{"echo", p.Echo, []string{"false"}, "this server does not echo the prompt"},
		{"add_generation_prompt", p.AddGenerationPrompt, []string{"true"}, "the Harmony prompt always ends with the assistant's turn"},
		{"continue_final_message", p.ContinueFinalMessage, []string{"false"}, "the Harmony prompt always starts a new assistant message"},
		{"chat_template", p.ChatTemplate, nil, "prompts are rendered in the Harmony format, never by a template"},
		{"documents", p.Documents, []string{"[]"}, "prompts are rendered in the Harmony format, which has no documents"},
		{"best_of", p.BestOf, []string{"1"}, "this server generates exactly n choices"},
	}
}

// resolveTemplateKwargs reads vLLM's chat_template_kwargs: reasoning_effort
// (the request field's meaning; the two must agree) and nothing else.
func resolveTemplateKwargs(kw map[string]json.RawMessage, effort *string) (*string, error) {
	keys := make([]string, 0, len(kw))
	for k := range kw {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		param := "chat_template_kwargs." + clipString(k, 64)
		raw := bytes.TrimSpace(kw[k])
		if k != "reasoning_effort" {
			return nil, unsupported(param, "chat_template_kwargs key %q is not supported: prompts are rendered in the Harmony format, whose only option is reasoning_effort.", clipString(k, 64))
		}
		if len(raw) == 0 || bytes.Equal(raw, jsonNull) {
			continue
		}
		var v string
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, invalid(param, "invalid_type", "Invalid type for '%s': expected a string.", param).withCause(err)
		}
		switch v {
		case "low", "medium", "high":
		default:
			return nil, invalid(param, "invalid_value", "Invalid %s %q: expected low, medium or high.", param, clipString(v, 50))
		}
		if effort != nil && *effort != v {
			return nil, invalid(param, "invalid_value", "%s %q conflicts with reasoning_effort %q: give one, or the same value in both.", param, v, clipString(*effort, 50))
		}
		effort = &v
	}
	return effort, nil
}
