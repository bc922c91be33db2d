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
	// RepetitionPenalty is vLLM's multiplicative penalty (1 = off). The
	// sampler has none: only 1 is accepted.
	RepetitionPenalty *float64 `json:"repetition_penalty"`
}

// RefusedParams are parameters, OpenAI's or vLLM's common extensions,
// that this server does not implement and whose absence would change the
// answer. Each is accepted only at its neutral value (absent, null, or the
// value that means "off", listed in refusedParams); any other value is a
// 400 unsupported_parameter, never silently ignored. Both endpoints take
// them.
type RefusedParams struct {
	Store                  json.RawMessage `json:"store"`
	MinTokens              json.RawMessage `json:"min_tokens"`
	IgnoreEOS              json.RawMessage `json:"ignore_eos"`
	StopTokenIDs           json.RawMessage `json:"stop_token_ids"`
	BadWords               json.RawMessage `json:"bad_words"`
	AllowedTokenIDs        json.RawMessage `json:"allowed_token_ids"`
	IncludeStopStrInOutput json.RawMessage `json:"include_stop_str_in_output"`
	SkipSpecialTokens      json.RawMessage `json:"skip_special_tokens"`
	UseBeamSearch          json.RawMessage `json:"use_beam_search"`
	LengthPenalty          json.RawMessage `json:"length_penalty"`
	PromptLogprobs         json.RawMessage `json:"prompt_logprobs"`
	TruncatePromptTokens   json.RawMessage `json:"truncate_prompt_tokens"`
	LogitsProcessors       json.RawMessage `json:"logits_processors"`
	ReturnTokensAsTokenIDs json.RawMessage `json:"return_tokens_as_token_ids"`
}

// ChatRefusedParams are the chat-only parameters of the same kind.
type ChatRefusedParams struct {
	Modalities           json.RawMessage `json:"modalities"`
	Audio                json.RawMessage `json:"audio"`
	WebSearchOptions     json.RawMessage `json:"web_search_options"`
	Verbosity            json.RawMessage `json:"verbosity"`
	Echo                 json.RawMessage `json:"echo"`
	AddGenerationPrompt  json.RawMessage `json:"add_generation_prompt"`
	ContinueFinalMessage json.RawMessage `json:"continue_final_message"`
	ChatTemplate         json.RawMessage `json:"chat_template"`
	Documents            json.RawMessage `json:"documents"`
	BestOf               json.RawMessage `json:"best_of"`
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
	RefusedParams
	Logprobs    *bool           `json:"logprobs"`
	TopLogprobs *int            `json:"top_logprobs"`
	Tools       []Tool          `json:"tools"`
	ToolChoice  json.RawMessage `json:"tool_choice"`
	// Functions and FunctionCall are the deprecated spellings of tools and
	// tool_choice; they map onto them, and the answer comes back in their
	// shape (message.function_call, finish_reason "function_call").
	Functions    []FunctionSchema `json:"functions"`
	FunctionCall json.RawMessage  `json:"function_call"`
	// ParallelToolCalls is honoured whatever its value: a Harmony reply
	// ends at its first call (<|call|>), so there is never more than one.
	ParallelToolCalls *bool           `json:"parallel_tool_calls"`
	ResponseFormat    *ResponseFormat `json:"response_format"`
	StructuredParams
	// MaxReasoningTokens bounds the reasoning (the analysis channel); this
	// server's extension, defaulting to the profile's. At the bound the
	// reasoning is ended and the answer follows.
	MaxReasoningTokens *int    `json:"max_reasoning_tokens"`
	ReasoningEffort    *string `json:"reasoning_effort"`
	// ChatTemplateKwargs is vLLM's: only reasoning_effort is understood.
	ChatTemplateKwargs map[string]json.RawMessage `json:"chat_template_kwargs"`
	ChatRefusedParams
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
	// FunctionCall is the deprecated spelling of one tool call (assistant
	// messages); its result comes back in a message of role "function"
	// naming the function.
	FunctionCall *FunctionCall `json:"function_call"`
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
	Type       string            `json:"type"`
	JSONSchema *JSONSchemaFormat `json:"json_schema"`
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
	RefusedParams
	Logprobs *int    `json:"logprobs"`
	Echo     *bool   `json:"echo"`
	Suffix   *string `json:"suffix"`
	BestOf   *int    `json:"best_of"`
	User     *string `json:"user"`
	Profile  *string `json:"profile"`
	// ResponseFormat is vLLM's extension to completions: the whole text
	// follows it from the first token.
	ResponseFormat *ResponseFormat `json:"response_format"`
	StructuredParams
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
	// FunctionCall replaces ToolCalls when the request used the
	// deprecated functions.
	FunctionCall *FunctionCall `json:"function_call,omitempty"`
	Refusal      *string       `json:"refusal"`
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
	// FunctionCall replaces ToolCalls when the request used the
	// deprecated functions.
	FunctionCall *FunctionDelta `json:"function_call,omitempty"`
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
	// Root, Parent and Permission complete vLLM's card: the checkpoint
	// served (a Hub repository or a directory), the base model of an
	// adapter (always null: there are no adapters) and the legacy
	// permission list (empty).
	Root       string  `json:"root"`
	Parent     *string `json:"parent"`
	Permission []any   `json:"permission"`
}

var jsonNull = json.RawMessage("null")
