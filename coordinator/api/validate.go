package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

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
var DefaultLimits = Limits{MaxMessages: 4096, MaxN: 8, MaxStop: 4, MaxStopBytes: 256, MaxTools: 128, MaxPromptStrings: 1}

// genParams is a validated generation request, common to both endpoints.
type genParams struct {
	chat         bool
	profile      *profiles.Profile
	prompt       []int
	maxTokens    int
	sampling     step.Sampling
	stop         []string
	n            int
	stream       bool
	includeUsage bool
	// reasoningField is where chat reasoning goes: reasoning_content,
	// reasoning, both, or none (left out).
	reasoningField string
}

// decodeJSON reads the body into v. Syntax errors and type mismatches are
// 400s naming the field; unknown fields are ignored.
func decodeJSON(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case isBodyTooLarge(err):
			return err
		case errors.As(err, &te):
			field := jsonField(te, v)
			if field == "" {
				field = "body"
			}
			return invalid(field, "invalid_type", "Invalid type for '%s': expected %s, but got a JSON %s.", field, goTypeName(te.Type.String()), te.Value).withCause(err)
		case errors.Is(err, io.EOF):
			return invalid("", "", "We could not parse the JSON body of your request. (HINT: the body is empty. This likely means you have not sent a JSON body.)").withCause(err)
		default:
			return invalid("", "", "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload: %s)", err).withCause(err)
		}
	}
	// Trailing garbage after the object is a malformed body too.
	if dec.More() {
		return invalid("", "", "We could not parse the JSON body of your request. (HINT: unexpected data after the JSON object.)")
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

// resolve validates the sampling fields and returns the step.Sampling they
// ask for, with the profile's defaults where a field is absent. Logprobs
// are left unset: the endpoint sets them.
func (p *SamplingParams) resolve(def profiles.Generation) (step.Sampling, error) {
	sp := step.Sampling{Temperature: def.Temperature, TopP: def.TopP}
	if v := p.Temperature; v != nil {
		if *v < 0 || *v > 2 {
			return step.Sampling{}, invalid("temperature", "invalid_value", "%g is not a valid temperature: it must be between 0 and 2.", *v)
		}
		sp.Temperature = *v
	}
	if v := p.TopP; v != nil {
		if *v < 0 || *v > 1 {
			return step.Sampling{}, invalid("top_p", "invalid_value", "%g is not a valid top_p: it must be between 0 and 1.", *v)
		}
		sp.TopP = *v
	}
	if v := p.TopK; v != nil {
		if *v < -1 {
			return step.Sampling{}, invalid("top_k", "invalid_value", "%d is not a valid top_k: it must be -1 (disabled), 0 (disabled) or positive.", *v)
		}
		sp.TopK = max(*v, 0)
	}
	if v := p.MinP; v != nil {
		if *v < 0 || *v > 1 {
			return step.Sampling{}, invalid("min_p", "invalid_value", "%g is not a valid min_p: it must be between 0 and 1.", *v)
		}
		sp.MinP = *v
	}
	if v := p.PresencePenalty; v != nil {
		if *v < -2 || *v > 2 {
			return step.Sampling{}, invalid("presence_penalty", "invalid_value", "%g is not a valid presence_penalty: it must be between -2 and 2.", *v)
		}
		sp.PresencePenalty = *v
	}
	if v := p.FrequencyPenalty; v != nil {
		if *v < -2 || *v > 2 {
			return step.Sampling{}, invalid("frequency_penalty", "invalid_value", "%g is not a valid frequency_penalty: it must be between -2 and 2.", *v)
		}
		sp.FrequencyPenalty = *v
	}
	if p.Seed != nil {
		sp.Seed, sp.HasSeed = *p.Seed, true
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
			return invalid("n", "invalid_value", "%d is not a valid n: it must be between 1 and %d.", *v, s.opts.Limits.MaxN)
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

// resolveMaxTokens applies the profile's default and cap and the context
// length. requested is nil when the client set no limit.
func (s *Server) resolveMaxTokens(requested *int, param string, g *genParams) error {
	ctxLen := s.opts.Model.ContextLength
	// A sequence must also fit in the engine's KV cache at once, or it
	// could never finish however much the scheduler preempts.
	if kv := s.opts.Engine.Capabilities().KVTokens; kv > 0 && kv < ctxLen {
		ctxLen = kv
	}
	prompt := len(g.prompt)
	if prompt >= ctxLen {
		return invalid("messages", "context_length_exceeded",
			"This model's maximum context length is %d tokens. However, your messages resulted in %d tokens. Please reduce the length of the messages.", ctxLen, prompt)
	}
	cap := g.profile.Generation.MaxTokensCap
	if requested == nil {
		g.maxTokens = min(g.profile.Generation.MaxTokens, ctxLen-prompt)
		return nil
	}
	m := *requested
	switch {
	case m < 1:
		return invalid(param, "invalid_value", "Invalid '%s': integer below minimum value. Expected a value >= 1, but got %d instead.", param, m)
	case m > cap:
		return invalid(param, "invalid_value", "%s is too large: %d. The %s profile allows at most %d completion tokens, whereas you provided %d.", param, m, g.profile.Name, cap, m)
	case prompt+m > ctxLen:
		return invalid("messages", "context_length_exceeded",
			"This model's maximum context length is %d tokens. However, you requested %d tokens (%d in the messages, %d in the completion). Please reduce the length of the messages or completion.", ctxLen, prompt+m, prompt, m)
	}
	g.maxTokens = m
	return nil
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
		if *v < 0 || *v > 20 {
			return nil, invalid("top_logprobs", "invalid_value", "%d is not a valid top_logprobs: it must be between 0 and 20.", *v)
		}
		if *v > 0 && !g.sampling.Logprobs {
			return nil, invalid("top_logprobs", "invalid_value", "top_logprobs requires logprobs to be true.")
		}
		g.sampling.TopLogprobs = *v
	}
	tools, err := s.resolveTools(req)
	if err != nil {
		return nil, err
	}
	if g.reasoningField, err = s.resolveReasoningField(req); err != nil {
		return nil, err
	}
	if rf := req.ResponseFormat; rf != nil {
		switch rf.Type {
		case "text", "":
		case "json_object", "json_schema":
			return nil, unsupported("response_format", "response_format %q is not supported yet; only \"text\" is.", rf.Type)
		default:
			return nil, invalid("response_format", "invalid_value", "Invalid response_format type %q: expected text, json_object or json_schema.", clipString(rf.Type, 50))
		}
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
	if v := req.User; v != nil && len(*v) > 512 {
		return nil, invalid("user", "invalid_value", "Invalid 'user': at most 512 bytes.")
	}
	msgs, err := s.convertMessages(req.Messages)
	if err != nil {
		return nil, err
	}
	g.prompt = harmony.Render(s.opts.Tokenizer, harmony.Conversation{
		Messages: msgs, ReasoningEffort: effort, Date: time.Now().UTC().Format(time.DateOnly), Tools: tools,
	})
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

// resolveTools validates tools and tool_choice and returns the functions
// to render into the prompt. tool_choice "none" keeps the model from
// calling by not offering the tools; "auto" (the default with tools)
// offers them. "required" and a named function cannot be enforced without
// constrained decoding, so they are refused rather than silently treated
// as "auto".
func (s *Server) resolveTools(req *ChatRequest) ([]harmony.Tool, error) {
	if len(req.Tools) > s.opts.Limits.MaxTools {
		return nil, invalid("tools", "invalid_value", "Invalid 'tools': at most %d tools are allowed, got %d.", s.opts.Limits.MaxTools, len(req.Tools))
	}
	tools := make([]harmony.Tool, 0, len(req.Tools))
	seen := map[string]bool{}
	for i, t := range req.Tools {
		param := fmt.Sprintf("tools[%d]", i)
		if t.Type != "function" || t.Function == nil {
			return nil, invalid(param, "invalid_value", "Invalid tool at index %d: expected {\"type\": \"function\", \"function\": {\"name\": ...}}.", i)
		}
		f := t.Function
		if !validFunctionName(f.Name) {
			return nil, invalid(param+".function.name", "invalid_value", "Invalid function name %q: it must be 1 to 64 characters of a-z, A-Z, 0-9, _ and -.", clipString(f.Name, 80))
		}
		if seen[f.Name] {
			return nil, invalid(param+".function.name", "invalid_value", "Duplicate function name %q.", f.Name)
		}
		seen[f.Name] = true
		params := bytes.TrimSpace(f.Parameters)
		if bytes.Equal(params, jsonNull) {
			params = nil
		}
		if len(params) > 0 && params[0] != '{' {
			return nil, invalid(param+".function.parameters", "invalid_value", "Invalid 'parameters' of function %q: expected a JSON Schema object.", f.Name)
		}
		tools = append(tools, harmony.Tool{Name: f.Name, Description: f.Description, Parameters: params})
	}
	choice := bytes.TrimSpace(req.ToolChoice)
	if len(choice) == 0 || bytes.Equal(choice, jsonNull) {
		return tools, nil
	}
	var sv string
	if err := json.Unmarshal(choice, &sv); err != nil {
		if len(tools) == 0 {
			return nil, invalid("tool_choice", "invalid_value", "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.")
		}
		return nil, unsupported("tool_choice", "tool_choice naming a function cannot be enforced by this server yet; use \"auto\".")
	}
	switch sv {
	case "auto":
		return tools, nil
	case "none":
		return nil, nil
	case "required":
		if len(tools) == 0 {
			return nil, invalid("tool_choice", "invalid_value", "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.")
		}
		return nil, unsupported("tool_choice", "tool_choice \"required\" cannot be enforced by this server yet; use \"auto\".")
	default:
		return nil, invalid("tool_choice", "invalid_value", "Invalid value for 'tool_choice': expected none, auto, required or a function object.")
	}
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
			if !present && len(m.ToolCalls) == 0 && hm.Reasoning == "" {
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
			return nil, unsupported(param+".role", "The deprecated 'function' role is not supported; use 'tool'.")
		default:
			return nil, invalid(param+".role", "invalid_value", "Invalid value for '%s.role': %q. Supported values are: 'system', 'developer', 'user', 'assistant' and 'tool'.", param, clipString(m.Role, 50))
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
// tokens send token ids.
func (s *Server) parseCompletion(req *CompletionRequest) (*genParams, error) {
	g, err := s.newParams(false, req.Model, req.Profile, &req.SamplingParams, &req.OutputParams)
	if err != nil {
		return nil, err
	}
	if v := req.Logprobs; v != nil {
		// logprobs: 0 asks for the sampled tokens' logprobs alone.
		if *v < 0 || *v > 20 {
			return nil, invalid("logprobs", "invalid_value", "%d is not a valid logprobs: it must be between 0 and 20.", *v)
		}
		if !s.opts.Engine.Capabilities().Logprobs {
			return nil, unsupported("logprobs", "logprobs are not supported by the %s engine.", s.opts.Mode)
		}
		g.sampling.Logprobs, g.sampling.TopLogprobs = true, *v
	}
	if req.Echo != nil && *req.Echo {
		return nil, unsupported("echo", "echo is not supported by this server.")
	}
	if req.Suffix != nil && *req.Suffix != "" {
		return nil, unsupported("suffix", "suffix is not supported: gpt-oss has no fill-in-the-middle mode.")
	}
	if req.BestOf != nil && *req.BestOf != 1 {
		return nil, unsupported("best_of", "best_of other than 1 is not supported by this server.")
	}
	prompt, err := s.completionPrompt(req.Prompt)
	if err != nil {
		return nil, err
	}
	g.prompt = prompt
	if err := s.resolveMaxTokens(req.MaxTokens, "max_tokens", g); err != nil {
		return nil, err
	}
	return g, nil
}

func (s *Server) completionPrompt(raw json.RawMessage) ([]int, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, jsonNull) {
		return nil, invalid("prompt", "missing_required_parameter", "Missing required parameter: 'prompt'.")
	}
	bad := func(err error) *Error {
		return invalid("prompt", "invalid_type", "Invalid 'prompt': expected a string, an array of strings, an array of token ids or an array of token-id arrays.").withCause(err)
	}
	var prompts [][]int
	switch raw[0] {
	case '"':
		var t string
		if err := json.Unmarshal(raw, &t); err != nil {
			return nil, bad(err)
		}
		prompts = [][]int{s.opts.Tokenizer.Encode(t)}
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
			prompts = [][]int{ids}
			break
		}
		if len(items) > s.opts.Limits.MaxPromptStrings {
			return nil, unsupported("prompt", "Batched prompts are not supported: send at most %d prompt per request.", s.opts.Limits.MaxPromptStrings)
		}
		for _, it := range items {
			it = bytes.TrimSpace(it)
			if len(it) > 0 && it[0] == '"' {
				var t string
				if err := json.Unmarshal(it, &t); err != nil {
					return nil, bad(err)
				}
				prompts = append(prompts, s.opts.Tokenizer.Encode(t))
				continue
			}
			var ids []int
			if err := json.Unmarshal(it, &ids); err != nil {
				return nil, bad(err)
			}
			prompts = append(prompts, ids)
		}
	default:
		return nil, bad(nil)
	}
	ids := prompts[0]
	if len(ids) == 0 {
		return nil, invalid("prompt", "invalid_value", "Invalid 'prompt': the prompt is empty.")
	}
	for _, id := range ids {
		if id < 0 || id >= tokenizer.VocabSize {
			return nil, invalid("prompt", "invalid_value", "Invalid 'prompt': token id %d is outside the vocabulary (0..%d).", id, tokenizer.VocabSize-1)
		}
	}
	return ids, nil
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
