package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"go.uber.org/zap"

	"github.com/gptoss/server/coordinator/harmony"
	"github.com/gptoss/server/coordinator/sched"
)

// The Responses API (POST /v1/responses and the stored-response routes).
// A request becomes a chat request: its input items (and, with
// previous_response_id, the stored conversation before them) become chat
// messages, which parseChat validates and renders with the same Harmony
// renderer; generation runs through the same choice and run machinery, and
// only the output's shape differs: items (reasoning, message,
// function_call) and, streamed, OpenAI's typed events.

// ResponseStore keeps responses: the JSON of a storedResponse by id. Get
// and Delete answer ErrResponseNotFound for an id they do not hold
// (unknown, deleted or expired).
type ResponseStore interface {
	Put(ctx context.Context, id string, value []byte) error
	Get(ctx context.Context, id string) ([]byte, error)
	Delete(ctx context.Context, id string) error
}

// ErrResponseNotFound is what a ResponseStore answers for an id it does
// not hold.
var ErrResponseNotFound = errors.New("response not found")

// memStore is the ResponseStore when none is configured (tests, and
// embedding the API without NATS): in memory, the oldest of more than
// memStoreMax entries dropped.
type memStore struct {
	mu    sync.Mutex
	m     map[string][]byte
	order []string
}

const memStoreMax = 1000

func (s *memStore) Put(_ context.Context, id string, v []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string][]byte{}
	}
	if _, ok := s.m[id]; !ok {
		s.order = append(s.order, id)
	}
	s.m[id] = v
	for len(s.order) > memStoreMax {
		delete(s.m, s.order[0])
		s.order = s.order[1:]
	}
	return nil
}

func (s *memStore) Get(_ context.Context, id string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[id]
	if !ok {
		return nil, ErrResponseNotFound
	}
	return v, nil
}

func (s *memStore) Delete(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[id]; !ok {
		return ErrResponseNotFound
	}
	delete(s.m, id)
	return nil
}

// storeTimeout bounds one store operation: a slow store must not hold a
// response that is already generated.
const storeTimeout = 10 * time.Second

// newItemID makes an item id with OpenAI's prefixes: resp_, msg_, rs_, fc_.
func newItemID(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return prefix + "_" + hex.EncodeToString(b[:])
}

// respParams is a Responses request after validation: the chat generation
// it runs, and what the response echoes.
type respParams struct {
	g         *genParams
	echo      ResponseObject // the request's fields as the response repeats them
	input     []*Item        // this request's input items, with ids
	history   []*Item        // the conversation before the input (previous_response_id): earlier inputs and outputs
	store     bool
	encrypted bool // include reasoning.encrypted_content
}

func (s *Server) createResponse(c echo.Context) error {
	var req ResponsesRequest
	if err := decodeJSON(c.Request().Body, &req); err != nil {
		return err
	}
	s.noteProfile(c, req.Profile)
	p, err := s.parseResponses(c.Request().Context(), &req)
	if err != nil {
		return err
	}
	return s.respond(c, p)
}

// countInputTokens is POST /v1/responses/input_tokens (the SDKs'
// responses.input_tokens.count): the input tokens a request with this body
// would be charged, from the same rendering, without generating.
func (s *Server) countInputTokens(c echo.Context) error {
	var req ResponsesRequest
	if err := decodeJSON(c.Request().Body, &req); err != nil {
		return err
	}
	if req.Model == "" {
		req.Model = s.opts.Model.ID // optional here, as in OpenAI's API
	}
	req.Stream = nil
	p, err := s.parseResponses(c.Request().Context(), &req)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"object": "response.input_tokens", "input_tokens": len(p.g.prompt)})
}

// parseResponses validates a request and turns it into a chat generation.
func (s *Server) parseResponses(ctx context.Context, req *ResponsesRequest) (*respParams, error) {
	switch {
	case req.Background != nil && *req.Background:
		return nil, unsupported("background", "background responses are not supported by this server; send the request without background (stream it to see progress).")
	case present(req.Conversation):
		return nil, unsupported("conversation", "conversations are not supported by this server; use previous_response_id.")
	case present(req.Prompt):
		return nil, unsupported("prompt", "prompt templates are not supported by this server; send input and instructions.")
	case req.Truncation != nil && *req.Truncation != "disabled":
		return nil, unsupported("truncation", "truncation %q is not supported: a conversation longer than the context is refused (truncation \"disabled\").", clipString(*req.Truncation, 20))
	case req.TopLogprobs != nil && *req.TopLogprobs != 0:
		return nil, unsupported("top_logprobs", "logprobs are not supported by the Responses endpoint of this server; use /v1/chat/completions.")
	case req.MaxToolCalls != nil && *req.MaxToolCalls < 1:
		return nil, invalid("max_tool_calls", "invalid_value", "Invalid 'max_tool_calls': must be at least 1.")
	case req.MaxOutputTokens != nil && *req.MaxOutputTokens < minOutputTokens:
		return nil, invalid("max_output_tokens", "integer_below_min_value", "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= %d, but got %d instead.", minOutputTokens, *req.MaxOutputTokens)
	}
	if err := checkMetadata(req.Metadata); err != nil {
		return nil, err
	}
	var format *ResponseFormat
	if req.Text != nil && req.Text.Format != nil {
		// The Responses API's flat text.format is chat's response_format.
		switch f := req.Text.Format; f.Type {
		case "text", "":
		case "json_object":
			format = &ResponseFormat{Type: f.Type}
		case "json_schema":
			format = &ResponseFormat{Type: f.Type, JSONSchema: &JSONSchemaFormat{Name: f.Name, Description: f.Description, Schema: f.Schema, Strict: f.Strict}}
		default:
			return nil, invalid("text.format.type", "invalid_value", "Invalid text.format type %q: expected text, json_object or json_schema.", clipString(f.Type, 30))
		}
	}
	p := &respParams{store: req.Store == nil || *req.Store}
	for _, inc := range req.Include {
		switch inc {
		case "reasoning.encrypted_content":
			p.encrypted = true
		default:
			return nil, unsupported("include", "include %q is not supported by this server (only reasoning.encrypted_content).", clipString(inc, 60))
		}
	}
	input, err := parseInput(req.Input)
	if err != nil {
		return nil, err
	}
	p.input = input
	if id := req.PreviousResponseID; id != nil && *id != "" {
		prev, err := s.loadResponse(ctx, *id)
		if err != nil {
			var ae *Error
			if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
				ae.Param, ae.Message = "previous_response_id", fmt.Sprintf("Previous response with id '%s' not found.", clipString(*id, 80))
			}
			return nil, err
		}
		// The conversation so far: what came before that response, its
		// input, and its output (instructions are not carried over, as
		// OpenAI does).
		p.history = append(append(append(p.history, prev.History...), prev.Input...), prev.Response.Output...)
	}
	tools, err := responseTools(req.Tools)
	if err != nil {
		return nil, err
	}
	msgs, err := itemsToMessages(append(append([]*Item{}, p.history...), p.input...), len(p.history))
	if err != nil {
		return nil, err
	}
	if req.Instructions != nil && *req.Instructions != "" {
		content, _ := json.Marshal(*req.Instructions)
		msgs = append([]ChatMessage{{Role: "developer", Content: content}}, msgs...)
	}
	chat := ChatRequest{Model: req.Model, Messages: msgs, MaxCompletionTokens: req.MaxOutputTokens,
		ToolChoice: chatToolChoice(req.ToolChoice), ParallelToolCalls: req.ParallelToolCalls, User: req.User, Profile: req.Profile,
		ResponseFormat: format, MaxReasoningTokens: req.MaxReasoningTokens}
	chat.Temperature, chat.TopP, chat.Stream = req.Temperature, req.TopP, req.Stream
	for _, t := range tools {
		fn := &FunctionSchema{Name: t.Name, Parameters: t.Parameters, Strict: t.Strict}
		if t.Description != nil {
			fn.Description = *t.Description
		}
		chat.Tools = append(chat.Tools, Tool{Type: "function", Function: fn})
	}
	if req.Reasoning != nil {
		chat.ReasoningEffort = req.Reasoning.Effort
		if v := req.Reasoning.Summary; v != nil && *v != "" && *v != "none" {
			// gpt-oss writes its full chain of thought, which the
			// reasoning item carries; it has no summarizer.
			return nil, unsupported("reasoning.summary", "reasoning summaries are not produced by gpt-oss; the reasoning item carries the full reasoning text (content). Leave reasoning.summary unset.")
		}
	}
	g, err := s.parseChat(&chat)
	if err != nil {
		return nil, responsesParam(err)
	}
	p.g = g
	p.echo = ResponseObject{Object: "response", Model: s.opts.Model.ID, Instructions: req.Instructions,
		MaxOutputTokens: req.MaxOutputTokens, MaxToolCalls: req.MaxToolCalls, Metadata: req.Metadata,
		ParallelToolCalls: req.ParallelToolCalls == nil || *req.ParallelToolCalls, PreviousResponseID: req.PreviousResponseID,
		Store: p.store, Temperature: g.sampling.Temperature, TopP: g.sampling.TopP, Truncation: "disabled", User: req.User,
		Text: TextConfig{Format: &TextFormat{Type: "text"}}, Tools: tools, ServiceTier: "default"}
	if format != nil {
		p.echo.Text.Format = req.Text.Format
	}
	if p.echo.Metadata == nil {
		p.echo.Metadata = map[string]string{}
	}
	if p.echo.Tools == nil {
		p.echo.Tools = []ResponseTool{}
	}
	effort := g.profile.Generation.ReasoningEffort
	if chat.ReasoningEffort != nil {
		effort = *chat.ReasoningEffort
	}
	p.echo.Reasoning = ReasoningConfig{Effort: &effort}
	p.echo.ToolChoice = json.RawMessage(`"auto"`)
	if present(req.ToolChoice) {
		p.echo.ToolChoice = req.ToolChoice
	}
	return p, nil
}

// minOutputTokens is OpenAI's floor on max_output_tokens.
const minOutputTokens = 16

// Metadata bounds, as OpenAI documents them.
const (
	maxMetadataPairs    = 16
	maxMetadataKeyLen   = 64
	maxMetadataValueLen = 512
)

// checkMetadata holds metadata to OpenAI's bounds: it is stored and echoed.
func checkMetadata(m map[string]string) error {
	if len(m) > maxMetadataPairs {
		return invalid("metadata", "object_above_max_properties", "Invalid 'metadata': too many properties. Expected an object with at most %d properties, but got an object with %d properties instead.", maxMetadataPairs, len(m))
	}
	for k, v := range m {
		if len(k) > maxMetadataKeyLen {
			return invalid("metadata", "string_above_max_length", "Invalid 'metadata': key '%s...' is longer than %d characters.", clipString(k, 20), maxMetadataKeyLen)
		}
		if len(v) > maxMetadataValueLen {
			return invalid("metadata", "string_above_max_length", "Invalid 'metadata': the value of '%s' is longer than %d characters.", clipString(k, 64), maxMetadataValueLen)
		}
	}
	return nil
}

// responsesParam renames the chat parameters in an error from parseChat to
// the Responses request's names, so the client is told about its own
// fields.
func responsesParam(err error) error {
	var ae *Error
	if !errors.As(err, &ae) {
		return err
	}
	for _, r := range [][2]string{{"max_completion_tokens", "max_output_tokens"}, {"reasoning_effort", "reasoning.effort"},
		{"response_format.json_schema.schema", "text.format.schema"}, {"response_format.json_schema.name", "text.format.name"}, {"response_format", "text.format"}, {"tool_choice.function.name", "tool_choice.name"}} {
		if strings.HasPrefix(ae.Param, r[0]) {
			ae.Param = r[1] + strings.TrimPrefix(ae.Param, r[0])
		}
		ae.Message = strings.ReplaceAll(ae.Message, "'"+r[0], "'"+r[1])
	}
	// A chat message's index is not an input item's (instructions come
	// first, a turn's items merge into one message): name the input.
	if strings.HasPrefix(ae.Param, "messages") {
		ae.Param = "input"
	}
	return ae
}

// parseInput reads input: a string (one user message) or a list of items.
func parseInput(raw json.RawMessage) ([]*Item, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, invalid("input", "missing_required_parameter", "Missing required parameter: 'input'.")
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, invalid("input", "invalid_type", "Invalid 'input': expected a string or an array of items.")
		}
		content, _ := json.Marshal([]ContentItem{{Type: "input_text", Text: s}})
		return []*Item{{ID: newItemID("msg"), Type: "message", Role: "user", Status: "completed", Content: content}}, nil
	}
	var items []*Item
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, invalid("input", "invalid_type", "Invalid 'input': expected a string or an array of items.")
	}
	if len(items) == 0 {
		return nil, invalid("input", "empty_array", "Invalid 'input': empty array. Expected at least one item.")
	}
	for i, it := range items {
		if it == nil {
			return nil, invalid(fmt.Sprintf("input[%d]", i), "invalid_type", "Invalid 'input[%d]': expected an object.", i)
		}
		if it.Type == "" && it.Role != "" {
			it.Type = "message" // EasyInputMessage: {role, content}
		}
		switch it.Type {
		case "message":
			switch it.Role {
			case "user", "system", "developer", "assistant":
			default:
				return nil, invalid(fmt.Sprintf("input[%d].role", i), "invalid_value", "Invalid 'input[%d].role': expected user, system, developer or assistant.", i)
			}
			if it.ID == "" {
				it.ID = newItemID("msg")
			}
			if err := normalizeContent(it); err != nil {
				return nil, invalid(fmt.Sprintf("input[%d].content", i), "invalid_type", "Invalid 'input[%d].content': %v.", i, err)
			}
		case "function_call":
			if it.CallID == "" || it.Name == "" {
				return nil, invalid(fmt.Sprintf("input[%d]", i), "missing_required_parameter", "Invalid 'input[%d]': a function_call needs call_id and name.", i)
			}
			if it.ID == "" {
				it.ID = newItemID("fc")
			}
		case "function_call_output":
			if it.CallID == "" || !present(it.Output) {
				return nil, invalid(fmt.Sprintf("input[%d]", i), "missing_required_parameter", "Invalid 'input[%d]': a function_call_output needs call_id and output.", i)
			}
			if it.ID == "" {
				it.ID = newItemID("fco")
			}
		case "reasoning":
			if it.ID == "" {
				it.ID = newItemID("rs")
			}
		case "item_reference":
			return nil, unsupported(fmt.Sprintf("input[%d]", i), "item_reference input items are not supported by this server; send the item itself or use previous_response_id.")
		default:
			return nil, unsupported(fmt.Sprintf("input[%d].type", i), "Input items of type %q are not supported by this server (message, function_call, function_call_output, reasoning).", clipString(it.Type, 40))
		}
	}
	return items, nil
}

// normalizeContent gives a message item the content the SDKs type input
// items with: a list of parts (input_text; output_text with annotations
// for the assistant), never a bare string.
func normalizeContent(it *Item) error {
	text, err := partsText(it.Content, "content")
	if err != nil {
		return err
	}
	if it.Status == "" {
		it.Status = "completed"
	}
	c := bytes.TrimSpace(it.Content)
	if len(c) > 0 && c[0] == '[' {
		return nil // parts already (partsText checked them)
	}
	part := ContentItem{Type: "input_text", Text: text}
	if it.Role == "assistant" {
		part = outputText(text)
	}
	it.Content, _ = json.Marshal([]ContentItem{part})
	return nil
}

// responseTools reads function tools in the Responses shape.
func responseTools(raw []json.RawMessage) ([]ResponseTool, error) {
	var out []ResponseTool
	for i, r := range raw {
		var t ResponseTool
		if err := json.Unmarshal(r, &t); err != nil {
			return nil, invalid(fmt.Sprintf("tools[%d]", i), "invalid_type", "Invalid 'tools[%d]': expected an object.", i)
		}
		if t.Type != "function" {
			return nil, unsupported(fmt.Sprintf("tools[%d].type", i), "Tools of type %q are not supported by this server; only function tools.", clipString(t.Type, 40))
		}
		if t.Name == "" {
			return nil, invalid(fmt.Sprintf("tools[%d].name", i), "missing_required_parameter", "Missing required parameter: 'tools[%d].name'.", i)
		}
		out = append(out, t)
	}
	return out, nil
}

// chatToolChoice turns the Responses tool_choice into chat's: the strings
// are the same; a named function {"type": "function", "name": N} becomes
// {"type": "function", "function": {"name": N}}.
func chatToolChoice(raw json.RawMessage) json.RawMessage {
	var named struct {
		Type string `json:"type"`
		Name string `json:"name"`
	}
	if json.Unmarshal(raw, &named) == nil && named.Type == "function" && named.Name != "" {
		b, _ := json.Marshal(map[string]any{"type": "function", "function": map[string]string{"name": named.Name}})
		return b
	}
	return raw
}

// itemsToMessages turns a conversation of items into chat messages: a
// reasoning item and the function calls or message after it form one
// assistant message, as Harmony renders one assistant turn.
//
// Errors name input items by their index in the request: items before
// first (the stored conversation of previous_response_id) are not the
// request's, and are counted out.
func itemsToMessages(items []*Item, first int) ([]ChatMessage, error) {
	calls := map[string]bool{} // call ids of the function calls so far
	var out []ChatMessage
	var cur *ChatMessage // the assistant message being assembled
	var reasoning strings.Builder
	flush := func() {
		if cur == nil && reasoning.Len() == 0 {
			return
		}
		if cur == nil {
			cur = &ChatMessage{Role: "assistant"}
		}
		if reasoning.Len() > 0 {
			r := reasoning.String()
			cur.ReasoningContent = &r
			reasoning.Reset()
		}
		out = append(out, *cur)
		cur = nil
	}
	for n, it := range items {
		i := n - first
		switch it.Type {
		case "reasoning":
			if cur != nil && (present(cur.Content) || len(cur.ToolCalls) > 0) {
				flush()
			}
			text, err := reasoningText(it)
			if err != nil {
				return nil, invalid(fmt.Sprintf("input[%d]", i), "invalid_value", "Invalid 'input[%d]': %v.", i, err)
			}
			reasoning.WriteString(text)
		case "function_call":
			if cur == nil {
				cur = &ChatMessage{Role: "assistant"}
			} else if present(cur.Content) {
				flush()
				cur = &ChatMessage{Role: "assistant"}
			}
			cur.ToolCalls = append(cur.ToolCalls, ToolCall{ID: it.CallID, Type: "function", Function: FunctionCall{Name: it.Name, Arguments: it.Arguments}})
			calls[it.CallID] = true
		case "function_call_output":
			if !calls[it.CallID] {
				return nil, invalid(fmt.Sprintf("input[%d].call_id", i), "invalid_value", "No tool call found for function call output with call_id %s.", clipString(it.CallID, 80))
			}
			flush()
			text, err := partsText(it.Output, "output")
			if err != nil {
				return nil, invalid(fmt.Sprintf("input[%d].output", i), "invalid_type", "Invalid 'input[%d].output': %v.", i, err)
			}
			content, _ := json.Marshal(text)
			id := it.CallID
			out = append(out, ChatMessage{Role: "tool", ToolCallID: &id, Content: content})
		case "message":
			text, err := partsText(it.Content, "content")
			if err != nil {
				return nil, invalid(fmt.Sprintf("input[%d].content", i), "invalid_type", "Invalid 'input[%d].content': %v.", i, err)
			}
			content, _ := json.Marshal(text)
			if it.Role == "assistant" {
				if cur != nil && (present(cur.Content) || len(cur.ToolCalls) > 0) {
					flush()
				}
				if cur == nil {
					cur = &ChatMessage{Role: "assistant"}
				}
				cur.Content = content
				flush()
				continue
			}
			flush()
			out = append(out, ChatMessage{Role: it.Role, Content: content})
		}
	}
	flush()
	return out, nil
}

// reasoningText is a reasoning item's text: its reasoning_text content,
// or the encrypted_content this server handed out (see encryptedContent).
func reasoningText(it *Item) (string, error) {
	if present(it.Content) {
		return partsText(it.Content, "content")
	}
	if it.EncryptedContent != nil && *it.EncryptedContent != "" {
		b, err := base64.StdEncoding.DecodeString(*it.EncryptedContent)
		if err != nil || !bytes.HasPrefix(b, []byte(encryptedPrefix)) {
			return "", errors.New("encrypted_content was not made by this server")
		}
		return string(b[len(encryptedPrefix):]), nil
	}
	return "", nil
}

// encryptedPrefix marks this server's encrypted_content. It is not
// encrypted: gpt-oss's reasoning is returned in clear anyway; the field
// only lets clients that run with store false hand it back opaquely.
const encryptedPrefix = "gptoss-reasoning-v1\x00"

func encryptedContent(text string) *string {
	s := base64.StdEncoding.EncodeToString([]byte(encryptedPrefix + text))
	return &s
}

// partsText reads a content or output field: a string, or a list of text
// parts (input_text, output_text, reasoning_text, text, refusal).
func partsText(raw json.RawMessage, field string) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return "", nil
	}
	if raw[0] == '"' {
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	}
	var parts []ContentItem
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", fmt.Errorf("%s: expected a string or an array of text parts", field)
	}
	var b strings.Builder
	for _, p := range parts {
		switch p.Type {
		case "input_text", "output_text", "reasoning_text", "text", "summary_text", "refusal":
			b.WriteString(p.Text)
		default:
			return "", fmt.Errorf("content parts of type %q are not supported (text only)", clipString(p.Type, 30))
		}
	}
	return b.String(), nil
}

// loadResponse reads a stored response; an unknown id is a 404.
func (s *Server) loadResponse(ctx context.Context, id string) (*storedResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	b, err := s.responses.Get(ctx, id)
	if errors.Is(err, ErrResponseNotFound) {
		return nil, &Error{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "not_found",
			Message: fmt.Sprintf("Response with id '%s' not found.", clipString(id, 80))}
	}
	if err != nil {
		return nil, (&Error{Status: 503, Type: "server_error", Code: "store_unavailable", Message: "The response store could not be read. Please retry.", RetryAfter: 1}).withCause(err)
	}
	var rec storedResponse
	if err := json.Unmarshal(b, &rec); err != nil || rec.Response == nil {
		return nil, (&Error{Status: 500, Type: "server_error", Code: "store_corrupt", Message: "The stored response could not be read."}).withCause(err)
	}
	return &rec, nil
}

func (s *Server) getResponse(c echo.Context) error {
	if v := c.QueryParam("stream"); v == "true" {
		return unsupported("stream", "replaying a stored response as a stream is not supported; GET it without stream.")
	}
	rec, err := s.loadResponse(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, rec.Response)
}

func (s *Server) deleteResponse(c echo.Context) error {
	id := c.Param("id")
	ctx, cancel := context.WithTimeout(c.Request().Context(), storeTimeout)
	defer cancel()
	err := s.responses.Delete(ctx, id)
	if errors.Is(err, ErrResponseNotFound) {
		return &Error{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "not_found",
			Message: fmt.Sprintf("Response with id '%s' not found.", clipString(id, 80))}
	}
	if err != nil {
		return (&Error{Status: 503, Type: "server_error", Code: "store_unavailable", Message: "The response store could not be written. Please retry.", RetryAfter: 1}).withCause(err)
	}
	return c.JSON(http.StatusOK, DeletedResponse{ID: id, Object: "response", Deleted: true})
}

// cancelResponse is POST /v1/responses/{id}/cancel: only background
// responses can be cancelled, and this server runs none (a streamed or
// waiting request is cancelled by closing its connection).
func (s *Server) cancelResponse(c echo.Context) error {
	if _, err := s.loadResponse(c.Request().Context(), c.Param("id")); err != nil {
		return err
	}
	return invalid("", "invalid_request", "Only background responses can be cancelled, and this server runs none: close the connection of a running request to cancel it.")
}

// listInputItems is GET /v1/responses/{id}/input_items: the response's
// own input items, newest first by default, paged by limit and after.
func (s *Server) listInputItems(c echo.Context) error {
	rec, err := s.loadResponse(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	items := append([]*Item{}, rec.Input...)
	switch c.QueryParam("order") {
	case "", "desc":
		for i, j := 0, len(items)-1; i < j; i, j = i+1, j-1 {
			items[i], items[j] = items[j], items[i]
		}
	case "asc":
	default:
		return invalid("order", "invalid_value", "Invalid 'order': expected asc or desc.")
	}
	limit := 20
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return invalid("limit", "invalid_value", "Invalid 'limit': expected an integer from 1 to 100.")
		}
		limit = n
	}
	if after := c.QueryParam("after"); after != "" {
		at := -1
		for i, it := range items {
			if it.ID == after {
				at = i
			}
		}
		if at < 0 {
			return invalid("after", "invalid_value", "Invalid 'after': no input item with id '%s'.", clipString(after, 80))
		}
		items = items[at+1:]
	}
	out := ItemList{Object: "list", Data: items}
	if len(items) > limit {
		out.Data, out.HasMore = items[:limit], true
	}
	if n := len(out.Data); n > 0 {
		out.FirstID, out.LastID = &out.Data[0].ID, &out.Data[n-1].ID
	}
	if out.Data == nil {
		out.Data = []*Item{}
	}
	return c.JSON(http.StatusOK, out)
}

// respond generates the response, streamed or not, and stores it.
func (s *Server) respond(c echo.Context, p *respParams) error {
	start := getInfo(c).start
	g := p.g
	setInfo(c, func(i *reqInfo) {
		i.endpoint, i.stream, i.promptTokens, i.profile = "responses", g.stream, len(g.prompt), g.profile.Name
	})
	ctx, subCtx, cancel := runContexts(c, g)
	defer cancel()
	st, err := s.submit(subCtx, g, &sched.Request{
		ID: requestID(c), Profile: g.profile, Prompt: g.prompt, MaxTokens: g.maxTokens,
		StopTokens: stopTokens(true), Sampling: g.sampling,
	})
	if err != nil {
		return err
	}
	ch := newChoice(0, st, g, s.opts.Tokenizer)
	r := &run{s: s, c: c, g: g, choices: []*choice{ch}, start: start, endpoint: "responses", created: time.Now().Unix()}
	rr := &respRun{run: r, p: p, ch: ch}
	rr.resp = p.echo
	rr.resp.ID, rr.resp.CreatedAt, rr.resp.Status, rr.resp.Output = newItemID("resp"), r.created, "in_progress", []*Item{}
	if g.stream {
		err = rr.stream(ctx)
	} else {
		err = rr.collect(ctx)
	}
	r.record()
	return err
}

// respRun is one Responses generation: the chat run underneath, and the
// output items built from its Harmony deltas.
type respRun struct {
	*run
	p    *respParams
	ch   *choice
	resp ResponseObject
	seq  int   // the next event's sequence_number
	cur  *Item // the item receiving deltas
	text strings.Builder
	emit bool // streaming: events are written as items change
	werr error
}

// event writes one typed event: "event: TYPE" and its JSON, which carries
// the type and the sequence number too.
func (r *respRun) event(typ string, fields map[string]any) {
	if !r.emit || r.werr != nil {
		return
	}
	fields["type"] = typ
	fields["sequence_number"] = r.seq
	r.seq++
	b, err := json.Marshal(fields)
	if err != nil {
		r.werr = err
		return
	}
	var buf bytes.Buffer
	buf.Grow(len(b) + len(typ) + 16)
	buf.WriteString("event: ")
	buf.WriteString(typ)
	buf.WriteString("\ndata: ")
	buf.Write(b)
	buf.WriteString("\n\n")
	r.werr = r.sse.write(buf.Bytes())
}

// index is the output index of the current item.
func (r *respRun) index() int { return len(r.resp.Output) - 1 }

// open starts an output item.
func (r *respRun) open(it *Item) {
	r.close("completed")
	it.Status = "in_progress"
	r.resp.Output = append(r.resp.Output, it)
	r.cur = it
	r.text.Reset()
	r.event("response.output_item.added", map[string]any{"output_index": r.index(), "item": r.itemView(it)})
	switch it.Type {
	case "reasoning":
		r.event("response.content_part.added", map[string]any{"item_id": it.ID, "output_index": r.index(), "content_index": 0,
			"part": ContentItem{Type: "reasoning_text", Text: ""}})
	case "message":
		r.event("response.content_part.added", map[string]any{"item_id": it.ID, "output_index": r.index(), "content_index": 0,
			"part": outputText("")})
	}
}

// itemView is an item as an event shows it (the in-progress reasoning and
// message items with empty content).
func (r *respRun) itemView(it *Item) *Item {
	v := *it
	if it.Status == "in_progress" {
		switch it.Type {
		case "reasoning":
			v.Content = json.RawMessage("[]")
		case "message":
			v.Content = json.RawMessage("[]")
		}
	}
	return &v
}

func outputText(text string) ContentItem {
	empty := []any{}
	return ContentItem{Type: "output_text", Text: text, Annotations: &empty, Logprobs: &empty}
}

// add appends a delta to the current item.
func (r *respRun) add(d harmony.Delta) {
	switch d.Kind {
	case harmony.Reasoning:
		if r.cur == nil || r.cur.Type != "reasoning" {
			empty := []ReasoningPart{}
			r.open(&Item{ID: newItemID("rs"), Type: "reasoning", Summary: &empty})
		}
		if d.Text == "" {
			return
		}
		r.text.WriteString(d.Text)
		r.event("response.reasoning_text.delta", map[string]any{"item_id": r.cur.ID, "output_index": r.index(), "content_index": 0, "delta": d.Text})
	case harmony.Content:
		if d.Text == "" {
			return
		}
		if r.cur == nil || r.cur.Type != "message" {
			r.open(&Item{ID: newItemID("msg"), Type: "message", Role: "assistant"})
		}
		r.text.WriteString(d.Text)
		r.event("response.output_text.delta", map[string]any{"item_id": r.cur.ID, "output_index": r.index(), "content_index": 0,
			"delta": d.Text, "logprobs": []any{}})
	case harmony.Function:
		if d.Name != "" {
			callID := newCallID()
			if d.Call < len(r.ch.calls) {
				callID = r.ch.calls[d.Call].id
			}
			r.open(&Item{ID: newItemID("fc"), Type: "function_call", CallID: callID, Name: d.Name})
		}
		if r.cur == nil || r.cur.Type != "function_call" || d.Text == "" {
			return
		}
		r.text.WriteString(d.Text)
		r.event("response.function_call_arguments.delta", map[string]any{"item_id": r.cur.ID, "output_index": r.index(), "delta": d.Text})
	}
}

// close ends the current item with status.
func (r *respRun) close(status string) {
	it := r.cur
	if it == nil {
		return
	}
	r.cur = nil
	text := r.text.String()
	idx := r.index()
	switch it.Type {
	case "reasoning":
		it.Content, _ = json.Marshal([]ContentItem{{Type: "reasoning_text", Text: text}})
		if r.p.encrypted {
			it.EncryptedContent = encryptedContent(text)
		}
		r.event("response.reasoning_text.done", map[string]any{"item_id": it.ID, "output_index": idx, "content_index": 0, "text": text})
		r.event("response.content_part.done", map[string]any{"item_id": it.ID, "output_index": idx, "content_index": 0,
			"part": ContentItem{Type: "reasoning_text", Text: text}})
	case "message":
		it.Content, _ = json.Marshal([]ContentItem{outputText(text)})
		r.event("response.output_text.done", map[string]any{"item_id": it.ID, "output_index": idx, "content_index": 0, "text": text, "logprobs": []any{}})
		r.event("response.content_part.done", map[string]any{"item_id": it.ID, "output_index": idx, "content_index": 0, "part": outputText(text)})
	case "function_call":
		it.Arguments = text
		r.event("response.function_call_arguments.done", map[string]any{"item_id": it.ID, "output_index": idx, "name": it.Name, "arguments": text})
	}
	it.Status = status
	r.event("response.output_item.done", map[string]any{"output_index": idx, "item": it})
}

// finish sets the response's final status and usage from the sequence's end.
func (r *respRun) finish() {
	f := r.ch.final
	now := time.Now().Unix()
	r.resp.CompletedAt = &now
	u := &ResponseUsage{InputTokens: len(r.g.prompt), OutputTokens: r.ch.tokens}
	if f != nil {
		u.OutputTokens, u.InputTokensDetails.CachedTokens, u.InputTokensDetails.CacheWriteTokens = f.CompletionTokens, f.CachedTokens, f.CacheWriteTokens
	}
	u.OutputTokensDetails.ReasoningTokens = min(r.ch.reasoningTokens, u.OutputTokens)
	u.TotalTokens = u.InputTokens + u.OutputTokens
	r.resp.Usage = u
	if f != nil && f.Reason == sched.FinishLength {
		r.close("incomplete")
		r.resp.Status, r.resp.IncompleteDetails = "incomplete", &IncompleteReason{Reason: "max_output_tokens"}
		return
	}
	r.close("completed")
	r.resp.Status = "completed"
}

// save stores the finished response (store true); a failure is logged and
// the response still returned: it was generated, only not kept.
func (r *respRun) save() {
	if !r.p.store {
		return
	}
	b, err := json.Marshal(storedResponse{Response: &r.resp, Input: r.p.input, History: r.p.history})
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
		err = r.s.responses.Put(ctx, r.resp.ID, b)
		cancel()
	}
	if err != nil {
		r.s.log.Error("storing a response failed: it cannot be retrieved or continued", zap.String("response", r.resp.ID), zap.Error(err))
	}
}

// collect generates the whole response and writes it as one object.
func (r *respRun) collect(ctx context.Context) error {
	for {
		u := r.next(ctx)
		if u.err != nil {
			return r.clientGone()
		}
		for _, d := range r.ch.feed(u.toks) {
			r.add(d)
		}
		for _, t := range u.toks {
			r.ch.mark(1, t.At)
		}
		if u.final == nil {
			continue
		}
		for _, d := range r.ch.finish(u.final) {
			r.add(d)
		}
		if err := finalError(u.final, false); err != nil {
			return r.refuse(err)
		}
		r.finish()
		r.save()
		r.status = http.StatusOK
		return r.c.JSON(http.StatusOK, &r.resp)
	}
}

// stream writes the response's events as tokens arrive.
func (r *respRun) stream(ctx context.Context) error {
	r.emit = true
	for {
		u := r.next(ctx)
		if u.err != nil {
			return r.clientGone()
		}
		if r.sse == nil {
			if err := endedUnheard(u); err != nil {
				return r.refuse(err)
			}
			r.openSSE()
			r.event("response.created", map[string]any{"response": &r.resp})
			r.event("response.in_progress", map[string]any{"response": &r.resp})
		}
		for _, d := range r.ch.feed(u.toks) {
			r.add(d)
		}
		now := time.Now()
		r.ch.mark(len(u.toks), now)
		for _, t := range u.toks {
			r.ch.streamDelay = append(r.ch.streamDelay, now.Sub(t.At))
		}
		if r.werr != nil {
			return r.clientGone()
		}
		if u.final == nil {
			continue
		}
		for _, d := range r.ch.finish(u.final) {
			r.add(d)
		}
		if e := finalError(u.final, false); e != nil {
			// The headers are out: the failure goes in-band.
			e.RequestID = requestID(r.c)
			r.failed = true
			r.s.log.Warn("response stream failed", zap.String("request_id", e.RequestID), zap.Error(u.final.Err))
			setInfo(r.c, func(i *reqInfo) { i.errCode, i.err = e.Code, e })
			r.close("incomplete")
			now := time.Now().Unix()
			r.resp.Status, r.resp.CompletedAt = "failed", &now
			r.resp.Error = &ResponseError{Code: e.Code, Message: e.Message}
			r.event("response.failed", map[string]any{"response": &r.resp})
			return nil
		}
		r.finish()
		r.save()
		typ := "response.completed"
		if r.resp.Status == "incomplete" {
			typ = "response.incomplete"
		}
		r.event(typ, map[string]any{"response": &r.resp})
		if r.werr != nil {
			return r.clientGone()
		}
		return nil
	}
}
