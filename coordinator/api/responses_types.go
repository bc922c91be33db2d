package api

import "encoding/json"

// The Responses API's types, as OpenAI's reference and the official SDKs
// (openai-python's types/responses) spell them. Only what this server
// produces or reads is declared; unknown request fields are ignored, as
// everywhere.

// ResponsesRequest is the body of POST /v1/responses.
type ResponsesRequest struct {
	Model string `json:"model"`
	// Input is a string (one user message) or a list of items.
	Input              json.RawMessage   `json:"input"`
	Instructions       *string           `json:"instructions"`
	Tools              []json.RawMessage `json:"tools"`
	ToolChoice         json.RawMessage   `json:"tool_choice"`
	ParallelToolCalls  *bool             `json:"parallel_tool_calls"`
	MaxOutputTokens    *int              `json:"max_output_tokens"`
	MaxToolCalls       *int              `json:"max_tool_calls"`
	Temperature        *float64          `json:"temperature"`
	TopP               *float64          `json:"top_p"`
	TopLogprobs        *int              `json:"top_logprobs"`
	Reasoning          *ReasoningConfig  `json:"reasoning"`
	Text               *TextConfig       `json:"text"`
	Metadata           map[string]string `json:"metadata"`
	Store              *bool             `json:"store"`
	PreviousResponseID *string           `json:"previous_response_id"`
	Stream             *bool             `json:"stream"`
	Include            []string          `json:"include"`
	Background         *bool             `json:"background"`
	Truncation         *string           `json:"truncation"`
	Conversation       json.RawMessage   `json:"conversation"`
	Prompt             json.RawMessage   `json:"prompt"`
	User               *string           `json:"user"`
	// Profile is this server's extension: which serving profile to use.
	Profile *string `json:"profile"`
	// MaxReasoningTokens is this server's reasoning budget (as in chat).
	MaxReasoningTokens *int `json:"max_reasoning_tokens"`
}

// ReasoningConfig is the request's (and the response's) reasoning settings.
type ReasoningConfig struct {
	Effort  *string `json:"effort"`
	Summary *string `json:"summary"`
}

// TextConfig is the request's text output settings.
type TextConfig struct {
	Format    *TextFormat `json:"format,omitempty"`
	Verbosity *string     `json:"verbosity,omitempty"`
}

// TextFormat is the output's format: "text", "json_object", or
// "json_schema" with the schema (chat's response_format, flattened).
type TextFormat struct {
	Type        string          `json:"type"`
	Name        string          `json:"name,omitempty"`
	Description string          `json:"description,omitempty"`
	Schema      json.RawMessage `json:"schema,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

// ResponseTool is a function tool in the Responses shape (flat, unlike
// chat's {"type": "function", "function": {...}}).
type ResponseTool struct {
	Type        string          `json:"type"`
	Name        string          `json:"name"`
	Description *string         `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

// Item is one input or output item: a message, a function call, its
// output, or reasoning. One struct for all kinds keeps decoding a list of
// mixed items simple; Type says which fields apply.
type Item struct {
	ID   string `json:"id,omitempty"`
	Type string `json:"type"`
	// message
	Role    string          `json:"role,omitempty"`
	Content json.RawMessage `json:"content,omitempty"`
	// message, function_call, reasoning: "in_progress", "completed", "incomplete"
	Status string `json:"status,omitempty"`
	// function_call, function_call_output
	CallID    string `json:"call_id,omitempty"`
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments,omitempty"`
	// function_call_output: a string, or a list of input_text parts
	Output json.RawMessage `json:"output,omitempty"`
	// reasoning
	Summary          *[]ReasoningPart `json:"summary,omitempty"`
	EncryptedContent *string          `json:"encrypted_content,omitempty"`
}

// MarshalJSON writes the fields of the item's type, each of them even when
// empty (the SDKs require, say, a function call's arguments while they
// stream in as ""), and none of the other types'.
func (it *Item) MarshalJSON() ([]byte, error) {
	m := map[string]any{"type": it.Type}
	if it.ID != "" {
		m["id"] = it.ID
	}
	if it.Status != "" {
		m["status"] = it.Status
	}
	raw := func(r json.RawMessage, empty string) json.RawMessage {
		if len(r) == 0 {
			return json.RawMessage(empty)
		}
		return r
	}
	switch it.Type {
	case "message":
		m["role"], m["content"] = it.Role, raw(it.Content, "[]")
	case "function_call":
		m["call_id"], m["name"], m["arguments"] = it.CallID, it.Name, it.Arguments
	case "function_call_output":
		m["call_id"], m["output"] = it.CallID, raw(it.Output, `""`)
	case "reasoning":
		summary := []ReasoningPart{}
		if it.Summary != nil {
			summary = *it.Summary
		}
		m["summary"] = summary
		if len(it.Content) > 0 {
			m["content"] = it.Content
		}
		if it.EncryptedContent != nil {
			m["encrypted_content"] = *it.EncryptedContent
		}
	default:
		type plain Item // what parseInput does not know is refused before it is stored
		return json.Marshal((*plain)(it))
	}
	return json.Marshal(m)
}

// ContentItem is one part of a message's content: input_text,
// output_text, reasoning_text, refusal.
type ContentItem struct {
	Type        string `json:"type"`
	Text        string `json:"text"`
	Annotations *[]any `json:"annotations,omitempty"`
	Logprobs    *[]any `json:"logprobs,omitempty"`
}

// ReasoningPart is a summary or content part of a reasoning item.
type ReasoningPart struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// ResponseObject is a response, as returned, streamed and stored.
type ResponseObject struct {
	ID                 string            `json:"id"`
	Object             string            `json:"object"`
	CreatedAt          int64             `json:"created_at"`
	CompletedAt        *int64            `json:"completed_at"`
	Status             string            `json:"status"`
	Error              *ResponseError    `json:"error"`
	IncompleteDetails  *IncompleteReason `json:"incomplete_details"`
	Instructions       *string           `json:"instructions"`
	MaxOutputTokens    *int              `json:"max_output_tokens"`
	MaxToolCalls       *int              `json:"max_tool_calls"`
	Metadata           map[string]string `json:"metadata"`
	Model              string            `json:"model"`
	Output             []*Item           `json:"output"`
	ParallelToolCalls  bool              `json:"parallel_tool_calls"`
	PreviousResponseID *string           `json:"previous_response_id"`
	Reasoning          ReasoningConfig   `json:"reasoning"`
	Store              bool              `json:"store"`
	Background         bool              `json:"background"`
	Temperature        float64           `json:"temperature"`
	TopP               float64           `json:"top_p"`
	Text               TextConfig        `json:"text"`
	ToolChoice         json.RawMessage   `json:"tool_choice"`
	Tools              []ResponseTool    `json:"tools"`
	Truncation         string            `json:"truncation"`
	Usage              *ResponseUsage    `json:"usage"`
	User               *string           `json:"user"`
	ServiceTier        string            `json:"service_tier"`
	// OutputText is the SDKs' convenience field, filled by some servers;
	// the SDKs compute it themselves, so it is left out.
}

// ResponseError is a failed response's error.
type ResponseError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// IncompleteReason says why a response is incomplete.
type IncompleteReason struct {
	Reason string `json:"reason"`
}

// ResponseUsage counts a response's tokens.
type ResponseUsage struct {
	InputTokens         int                 `json:"input_tokens"`
	InputTokensDetails  InputTokensDetails  `json:"input_tokens_details"`
	OutputTokens        int                 `json:"output_tokens"`
	OutputTokensDetails OutputTokensDetails `json:"output_tokens_details"`
	TotalTokens         int                 `json:"total_tokens"`
}

// InputTokensDetails counts the prompt tokens served from the prefix
// cache, and those this request added to it.
type InputTokensDetails struct {
	CachedTokens     int `json:"cached_tokens"`
	CacheWriteTokens int `json:"cache_write_tokens"`
}

// OutputTokensDetails counts the reasoning tokens among the output.
type OutputTokensDetails struct {
	ReasoningTokens int `json:"reasoning_tokens"`
}

// storedResponse is what the store keeps per response: the response, its
// own input items (for input_items), and the conversation before it (for
// previous_response_id), so that continuing needs one read.
type storedResponse struct {
	Response *ResponseObject `json:"response"`
	Input    []*Item         `json:"input"`
	History  []*Item         `json:"history"`
}

// ItemList is GET /v1/responses/{id}/input_items.
type ItemList struct {
	Object  string  `json:"object"`
	Data    []*Item `json:"data"`
	FirstID *string `json:"first_id"`
	LastID  *string `json:"last_id"`
	HasMore bool    `json:"has_more"`
}

// DeletedResponse is DELETE /v1/responses/{id}.
type DeletedResponse struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Deleted bool   `json:"deleted"`
}
