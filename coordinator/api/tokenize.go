package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	"github.com/labstack/echo/v4"

	"github.com/gptoss/server/coordinator/profiles"
	"github.com/gptoss/server/coordinator/tokenizer"
)

// vLLM's utility endpoints, in vLLM's shapes: scripts that count tokens
// before sending a prompt, or turn logged ids back into text, work against
// this server unchanged. They use the server's own tokenizer and renderer,
// so the counts are the ones generation requests are charged.

// TokenizeRequest is the body of POST /tokenize, in either of vLLM's forms:
// a prompt, encoded as /v1/completions encodes a text prompt, or chat
// messages, rendered as /v1/chat/completions renders them, with every
// field of a chat request that shapes the prompt (tools or functions,
// tool_choice, reasoning_effort, chat_template_kwargs, profile). Model is
// optional; when given it must name this model.
type TokenizeRequest struct {
	ChatRequest
	Prompt *string `json:"prompt"`
	// AddSpecialTokens is accepted and changes nothing: the o200k_harmony
	// tokenizer adds no BOS or EOS token, and a Harmony prompt's control
	// tokens come from the rendering, not from the tokenizer.
	AddSpecialTokens *bool `json:"add_special_tokens"`
	// ReturnTokenStrs adds each token's text (token_strs).
	ReturnTokenStrs *bool `json:"return_token_strs"`
}

// TokenizeResponse is /tokenize's answer.
type TokenizeResponse struct {
	Count       int   `json:"count"`
	MaxModelLen int   `json:"max_model_len"`
	Tokens      []int `json:"tokens"`
	// TokenStrs are the tokens' texts, when asked for: an ordinary
	// token's bytes (U+FFFD for a piece of a multi-byte character), a
	// special token's name. vLLM's Hugging Face tokenizers write
	// byte-level BPE symbols ("Ġ" for a space) instead.
	TokenStrs []string `json:"token_strs,omitempty"`
}

// DetokenizeRequest is the body of POST /detokenize.
type DetokenizeRequest struct {
	Model  string `json:"model"`
	Tokens []int  `json:"tokens"`
}

// DetokenizeResponse is /detokenize's answer.
type DetokenizeResponse struct {
	Prompt string `json:"prompt"`
}

// maxDetokenizeTokens caps the ids of one /detokenize request (the body
// limit bounds them too): eight times the largest context, so any
// sequence this model can hold, with room to spare.
const maxDetokenizeTokens = 1 << 20

// tokenizeModel checks an optional model id (vLLM's tokenize and
// detokenize make it optional) and picks the profile, whose reasoning
// effort is the rendered prompt's default.
func (s *Server) tokenizeModel(modelName string, profileName *string) (*profiles.Profile, error) {
	if modelName == "" {
		modelName = s.opts.Model.ID
	}
	return s.resolveProfile(modelName, profileName)
}

func (s *Server) tokenize(c echo.Context) error {
	var req TokenizeRequest
	if err := decodeJSON(c.Request().Body, &req); err != nil {
		return err
	}
	p, err := s.tokenizeModel(req.Model, req.Profile)
	if err != nil {
		return err
	}
	var ids []int
	switch {
	case req.Prompt != nil && req.Messages != nil:
		return invalid("messages", "invalid_value", "Give either 'prompt' or 'messages', not both.")
	case req.Prompt != nil:
		ids = s.opts.Tokenizer.Encode(*req.Prompt)
	case req.Messages != nil:
		if ids, err = s.tokenizeChat(&req.ChatRequest, p); err != nil {
			return err
		}
	default:
		return invalid("prompt", "missing_required_parameter", "Missing required parameter: 'prompt' (a text) or 'messages' (a chat conversation).")
	}
	out := TokenizeResponse{Count: len(ids), MaxModelLen: s.opts.Model.ContextLength, Tokens: ids}
	if out.Tokens == nil {
		out.Tokens = []int{}
	}
	if req.ReturnTokenStrs != nil && *req.ReturnTokenStrs {
		out.TokenStrs = make([]string, len(ids))
		for i, id := range ids {
			out.TokenStrs[i] = s.opts.Tokenizer.TokenText(id)
		}
	}
	return c.JSON(http.StatusOK, out)
}

// tokenizeChat renders /tokenize's messages form: renderChat, as for a
// chat request, and without the generation prompt when
// add_generation_prompt is false. Chat parameters that would change the
// rendering and that /v1/chat/completions refuses are refused here too.
func (s *Server) tokenizeChat(req *ChatRequest, p *profiles.Profile) ([]int, error) {
	var shaping []refusable
	for _, r := range req.ChatRefusedParams.refusables() {
		switch r.name {
		case "continue_final_message", "chat_template", "documents":
			shaping = append(shaping, r)
		}
	}
	if err := refuseUnsupported(shaping); err != nil {
		return nil, err
	}
	addGen := true
	if raw := bytes.TrimSpace(req.AddGenerationPrompt); present(raw) {
		if err := json.Unmarshal(raw, &addGen); err != nil {
			return nil, invalid("add_generation_prompt", "invalid_type", "Invalid type for 'add_generation_prompt': expected a boolean.").withCause(err)
		}
	}
	rc, err := s.renderChat(req, p)
	if err != nil {
		return nil, err
	}
	ids := rc.prompt
	if !addGen {
		// The rendering always ends with the generation prompt,
		// <|start|>assistant; without it the prompt ends with the last
		// message.
		gen := append([]int{tokenizer.Start}, s.opts.Tokenizer.Encode("assistant")...)
		if len(ids) >= len(gen) && slices.Equal(ids[len(ids)-len(gen):], gen) {
			ids = ids[:len(ids)-len(gen)]
		}
	}
	return ids, nil
}

func (s *Server) detokenize(c echo.Context) error {
	var req DetokenizeRequest
	if err := decodeJSON(c.Request().Body, &req); err != nil {
		return err
	}
	if _, err := s.tokenizeModel(req.Model, nil); err != nil {
		return err
	}
	if req.Tokens == nil {
		return invalid("tokens", "missing_required_parameter", "Missing required parameter: 'tokens'.")
	}
	if len(req.Tokens) > maxDetokenizeTokens {
		return invalid("tokens", "invalid_value", "Invalid 'tokens': at most %d token ids are allowed, got %d.", maxDetokenizeTokens, len(req.Tokens))
	}
	for i, id := range req.Tokens {
		if id < 0 || id >= tokenizer.VocabSize {
			return invalid("tokens", "invalid_value", "Invalid 'tokens': token id %d (index %d) is outside the vocabulary (0..%d).", id, i, tokenizer.VocabSize-1)
		}
	}
	text, err := s.opts.Tokenizer.Decode(req.Tokens)
	if err != nil {
		// The ids were checked: only a broken tokenizer gets here (a 500).
		return fmt.Errorf("detokenize: %w", err)
	}
	return c.JSON(http.StatusOK, DetokenizeResponse{Prompt: text})
}

// version answers GET /version as vLLM does, with the coordinator's build
// version.
func (s *Server) version(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"version": s.opts.Version})
}
