// Package harmony renders OpenAI-style conversations into gpt-oss's Harmony
// prompt format and parses the model's Harmony output stream back into
// reasoning and answer text. Prompts are built token by token: text from
// clients is always encoded as ordinary text and the Harmony control tokens
// are spliced in by id, so a "<|start|>" typed by a user can never become a
// control token (shared/reference/gpt-oss.md §5, peers.md §5.10).
//
// This is the first cut: plain conversations with system, developer, user,
// assistant (reasoning and answer) and tool-result messages. Function tool
// definitions, tool-call extraction and response formats come with the
// Harmony issue; the API layer refuses requests that need them.
package harmony

import (
	"strings"

	"github.com/gptoss/server/coordinator/tokenizer"
)

// KnowledgeCutoff is the date the gpt-oss system message states.
const KnowledgeCutoff = "2024-06"

// Message is one conversation turn, already normalised by the API layer.
type Message struct {
	// Role is system, developer, user, assistant or tool.
	Role string
	// Content is the text of the message (the answer, for assistant turns).
	Content string
	// Reasoning is an assistant turn's chain of thought (analysis channel).
	Reasoning string
	// ToolCalls are the function calls an assistant turn made.
	ToolCalls []ToolCall
	// ToolName names the function whose result a tool message carries.
	ToolName string
}

// ToolCall is one function call in an assistant turn's history.
type ToolCall struct {
	Name      string
	Arguments string
}

// Conversation is everything that goes into one prompt.
type Conversation struct {
	Messages []Message
	// ReasoningEffort is low, medium or high.
	ReasoningEffort string
	// Date is the "Current date" line (YYYY-MM-DD); empty leaves it out.
	Date string
}

// Render returns the prompt token ids, ending with the generation prompt
// <|start|>assistant. System and developer messages from the client become
// the instructions of the Harmony developer message; the Harmony system
// message itself is written by the server (identity, dates, effort,
// channels), as the gpt-oss model card prescribes.
func Render(tok *tokenizer.Tokenizer, c Conversation) []int {
	r := renderer{tok: tok}
	r.system(c)
	var instructions []string
	for _, m := range c.Messages {
		if (m.Role == "system" || m.Role == "developer") && m.Content != "" {
			instructions = append(instructions, m.Content)
		}
	}
	if len(instructions) > 0 {
		r.message("developer", "", "# Instructions\n\n"+strings.Join(instructions, "\n\n"), tokenizer.End)
	}
	lastUser := -1
	for i, m := range c.Messages {
		if m.Role == "user" {
			lastUser = i
		}
	}
	for i, m := range c.Messages {
		switch m.Role {
		case "user":
			r.message("user", "", m.Content, tokenizer.End)
		case "assistant":
			// Earlier turns' reasoning is dropped once they ended; the
			// current turn's (after the last user message, inside a tool
			// call chain) is kept so the model can continue its plan.
			if m.Reasoning != "" && i > lastUser {
				r.message("assistant", "analysis", m.Reasoning, tokenizer.End)
			}
			if m.Content != "" {
				ch := "final"
				if len(m.ToolCalls) > 0 {
					ch = "commentary" // a preamble before tool calls
				}
				r.message("assistant", ch, m.Content, tokenizer.End)
			}
			for _, tc := range m.ToolCalls {
				r.toolCall(tc)
			}
		case "tool":
			r.message("functions."+m.ToolName+" to=assistant", "commentary", m.Content, tokenizer.End)
		}
	}
	r.special(tokenizer.Start)
	r.text("assistant")
	return r.ids
}

type renderer struct {
	tok *tokenizer.Tokenizer
	ids []int
}

func (r *renderer) special(id int) { r.ids = append(r.ids, id) }
func (r *renderer) text(s string)  { r.ids = append(r.ids, r.tok.Encode(s)...) }

// message writes <|start|>HEADER[<|channel|>CH]<|message|>CONTENT<TERM>.
func (r *renderer) message(header, channel, content string, term int) {
	r.special(tokenizer.Start)
	r.text(header)
	if channel != "" {
		r.special(tokenizer.Channel)
		r.text(channel)
	}
	r.special(tokenizer.Message)
	r.text(content)
	r.special(term)
}

func (r *renderer) toolCall(tc ToolCall) {
	r.special(tokenizer.Start)
	r.text("assistant to=functions." + tc.Name)
	r.special(tokenizer.Channel)
	r.text("commentary ")
	r.special(tokenizer.Constrain)
	r.text("json")
	r.special(tokenizer.Message)
	r.text(tc.Arguments)
	r.special(tokenizer.Call)
}

func (r *renderer) system(c Conversation) {
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
	r.message("system", "", b.String(), tokenizer.End)
}
