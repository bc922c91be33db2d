package api

import "encoding/json"

// The request and response types follow OpenAI's API reference. Fields are
// pointers where "absent" and "zero" must be told apart. Unknown fields are
// ignored, as OpenAI does: rejecting them broke clients of other servers.

// SamplingParams are the sampling fields that chat and completions share,
// listed here once: both request types embed this struct, and
// SamplingParams.resolve validates them and turns them into the
// step.Sampling the scheduler carries to the executor. Logprobs are not
// here because the two endpoints spell them differently (chat: logprobs
// true and top_logprobs; completions: logprobs N); each sets them on the
// step.Sampling itself.
type SamplingParams struct {
	Temperature      *float64       `json:"temperature"`
	TopP             *float64       `json:"top_p"`
	TopK             *int           `json:"top_k"`
	MinP             *float64       `json:"min_p"`
	Seed             *int64         `json:"seed"`
	PresencePenalty  *float64       `json:"presence_penalty"`
	FrequencyPenalty *float64       `json:"frequency_penalty"`
	LogitBias        map[string]any `json:"logit_bias"`
}

// OutputParams are the other fields chat and completions share: how many
// choices, where they stop and whether they are streamed.
type OutputParams struct {
	N             *int            `json:"n"`
	Stop          json.RawMessage `json:"stop"`
	Stream        *bool           `json:"stream"`
	StreamOptions *StreamOptions  `json:"stream_options"`
}

// ChatRequest is the body of POST /v1/chat/completions.
type ChatRequest struct {
	Model               string        `json:"model"`
	Messages            []ChatMessage `json:"messages"`
	MaxTokens           *int          `json:"max_tokens"`
	MaxCompletionTokens *int          `json:"max_completion_tokens"`
	SamplingParams
	OutputParams
	Logprobs          *bool           `json:"logprobs"`
	TopLogprobs       *int            `json:"top_logprobs"`
	Tools             []Tool          `json:"tools"`
	ToolChoice        json.RawMessage `json:"tool_choice"`
	ParallelToolCalls *bool           `json:"parallel_tool_calls"`
	ResponseFormat    *ResponseFormat `json:"response_format"`
	ReasoningEffort   *string         `json:"reasoning_effort"`
	// ReasoningField picks where reasoning goes in the response:
	// "reasoning_content" (default), "reasoning" (vLLM and Ollama's name)
	// or "both". IncludeReasoning false (vLLM's field) leaves it out.
	ReasoningField   *string `json:"reasoning_field"`
	IncludeReasoning *bool   `json:"include_reasoning"`
	User             *string `json:"user"`
	// Profile is this server's extension: which serving profile to use.
	Profile *string `json:"profile"`
}

// ChatMessage is one message of the conversation. Content is a string, an
// array of content parts, or null.
type ChatMessage struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content"`
	Name       *string         `json:"name"`
	ToolCalls  []ToolCall      `json:"tool_calls"`
	ToolCallID *string         `json:"tool_call_id"`
	// Earlier assistant reasoning, under either name peers use.
	ReasoningContent *string `json:"reasoning_content"`
	Reasoning        *string `json:"reasoning"`
}

// ContentPart is one element of an array content.
type ContentPart struct {
	Type string  `json:"type"`
	Text *string `json:"text"`
}

// ToolCall is a function call made by the assistant.
type ToolCall struct {
	ID       string       `json:"id"`
	Type     string       `json:"type"`
	Function FunctionCall `json:"function"`
}

// FunctionCall names the function and carries its JSON arguments.
type FunctionCall struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// Tool is a tool the model may call.
type Tool struct {
	Type     string          `json:"type"`
	Function *FunctionSchema `json:"function"`
}

// FunctionSchema describes a callable function.
type FunctionSchema struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	Parameters  json.RawMessage `json:"parameters"`
	Strict      *bool           `json:"strict"`
}

// StreamOptions are the options of a streamed response.
type StreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// ResponseFormat asks for a structured output format.
type ResponseFormat struct {
	Type string `json:"type"`
}

// CompletionRequest is the body of POST /v1/completions. Prompt is a
// string, an array of strings, an array of token ids, or an array of
// token-id arrays.
type CompletionRequest struct {
	Model     string          `json:"model"`
	Prompt    json.RawMessage `json:"prompt"`
	MaxTokens *int            `json:"max_tokens"`
	SamplingParams
	OutputParams
	Logprobs *int    `json:"logprobs"`
	Echo     *bool   `json:"echo"`
	Suffix   *string `json:"suffix"`
	BestOf   *int    `json:"best_of"`
	User     *string `json:"user"`
	Profile  *string `json:"profile"`
}

// Usage counts tokens. Reasoning tokens are part of completion tokens.
type Usage struct {
	PromptTokens            int                      `json:"prompt_tokens"`
	CompletionTokens        int                      `json:"completion_tokens"`
	TotalTokens             int                      `json:"total_tokens"`
	CompletionTokensDetails *CompletionTokensDetails `json:"completion_tokens_details,omitempty"`
}

// CompletionTokensDetails breaks completion tokens down.
type CompletionTokensDetails struct {
	ReasoningTokens int `json:"reasoning_tokens"`
}

// Envelope is the part every response object and stream chunk shares.
type Envelope struct {
	ID                string `json:"id"`
	Object            string `json:"object"`
	Created           int64  `json:"created"`
	Model             string `json:"model"`
	SystemFingerprint string `json:"system_fingerprint"`
}

// ChatCompletion is a non-streamed chat response.
type ChatCompletion struct {
	Envelope
	Choices []ChatChoice `json:"choices"`
	Usage   *Usage       `json:"usage"`
}

// ChatChoice is one choice of a chat response.
type ChatChoice struct {
	Index        int             `json:"index"`
	Message      ResponseMessage `json:"message"`
	Logprobs     any             `json:"logprobs"`
	FinishReason string          `json:"finish_reason"`
}

// ResponseMessage is the assistant message of a chat response.
type ResponseMessage struct {
	Role             string     `json:"role"`
	Content          *string    `json:"content"`
	ReasoningContent *string    `json:"reasoning_content,omitempty"`
	Reasoning        *string    `json:"reasoning,omitempty"`
	ToolCalls        []ToolCall `json:"tool_calls,omitempty"`
	Refusal          *string    `json:"refusal"`
}

// ChatChunk is one streamed chat event.
type ChatChunk struct {
	Envelope
	Choices []ChatChunkChoice `json:"choices"`
	// Usage is JSON null on every chunk but the last when the client asked
	// for usage, and absent otherwise.
	Usage any `json:"usage,omitempty"`
}

// ChatChunkChoice is one choice's delta.
type ChatChunkChoice struct {
	Index        int       `json:"index"`
	Delta        ChatDelta `json:"delta"`
	Logprobs     any       `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

// ChatDelta is the incremental message.
type ChatDelta struct {
	Role             string          `json:"role,omitempty"`
	Content          *string         `json:"content,omitempty"`
	ReasoningContent *string         `json:"reasoning_content,omitempty"`
	Reasoning        *string         `json:"reasoning,omitempty"`
	ToolCalls        []ToolCallDelta `json:"tool_calls,omitempty"`
}

// ToolCallDelta is a piece of a streamed tool call: the first one of a
// call carries its id, type and name; the following ones argument text.
type ToolCallDelta struct {
	Index    int           `json:"index"`
	ID       string        `json:"id,omitempty"`
	Type     string        `json:"type,omitempty"`
	Function FunctionDelta `json:"function"`
}

// FunctionDelta is the function part of a ToolCallDelta.
type FunctionDelta struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"`
}

// Completion is a /v1/completions response or stream chunk.
type Completion struct {
	Envelope
	Choices []CompletionChoice `json:"choices"`
	Usage   any                `json:"usage,omitempty"`
}

// CompletionChoice is one choice of a completion.
type CompletionChoice struct {
	Text         string  `json:"text"`
	Index        int     `json:"index"`
	Logprobs     any     `json:"logprobs"`
	FinishReason *string `json:"finish_reason"`
}

// ModelList is the body of GET /v1/models.
type ModelList struct {
	Object string      `json:"object"`
	Data   []ModelCard `json:"data"`
}

// ModelCard describes one served model.
type ModelCard struct {
	ID            string `json:"id"`
	Object        string `json:"object"`
	Created       int64  `json:"created"`
	OwnedBy       string `json:"owned_by"`
	ContextLength int    `json:"context_length"`
	// MaxModelLen repeats the context length under vLLM's name, which
	// several clients read.
	MaxModelLen int `json:"max_model_len"`
}

var jsonNull = json.RawMessage("null")
