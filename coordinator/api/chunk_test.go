package api

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/gptoss/server/coordinator/harmony"
)

// The fast chunk encoder must produce exactly what encoding/json produces
// for the same chunk, for any text.
func TestChunkEncoderMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", " ", "\"", "\\", "\n", "\t", "\x00", "\x1f", "\x7f", "é", "한", "🙂", "\u2028", "\u2029", "<", ">", "&", "\xff", "\xe2\x82"}
	for _, mode := range []string{"completion", "reasoning_content", "reasoning", "both"} {
		chat := mode != "completion"
		for _, usage := range []bool{true, false} {
			r := &run{s: &Server{opts: Options{}, fingerprint: "fp_x"}, g: &genParams{chat: chat, includeUsage: usage, reasoningField: mode},
				id: "chatcmpl-1", created: 1700000000}
			r.s.opts.Model.ID = "gpt-oss-20b"
			enc := newChunkEncoder(r)
			for i := range 500 {
				var sb strings.Builder
				for range rng.IntN(12) {
					sb.WriteString(alphabet[rng.IntN(len(alphabet))])
				}
				text := sb.String()
				kind := harmony.Content
				if i%3 == 0 {
					kind = harmony.Reasoning
				}
				got := string(enc.delta(i%4, kind, text))
				var want any
				if chat {
					d := ChatDelta{Content: &text}
					if kind == harmony.Reasoning {
						switch mode {
						case "reasoning_content":
							d = ChatDelta{ReasoningContent: &text}
						case "reasoning":
							d = ChatDelta{Reasoning: &text}
						case "both":
							d = ChatDelta{ReasoningContent: &text, Reasoning: &text}
						}
					}
					want = r.chatChunk(i%4, d, nil)
				} else {
					want = r.textChunk(i%4, text, nil)
				}
				wb, _ := json.Marshal(want)
				if !strings.HasPrefix(got, "data: ") || !strings.HasSuffix(got, "\n\n") {
					t.Fatalf("framing %q", got)
				}
				var g, w any
				if err := json.Unmarshal([]byte(strings.TrimSuffix(strings.TrimPrefix(got, "data: "), "\n\n")), &g); err != nil {
					t.Fatalf("invalid JSON %q: %v", got, err)
				}
				_ = json.Unmarshal(wb, &w)
				if !reflect.DeepEqual(g, w) {
					t.Fatalf("text %q:\n got %s\nwant %s", text, got, wb)
				}
			}
		}
	}
}

func BenchmarkChunkEncoder(b *testing.B) {
	r := &run{s: &Server{fingerprint: "fp_x"}, g: &genParams{chat: true}, id: "chatcmpl-1", created: 1700000000}
	enc := newChunkEncoder(r)
	for b.Loop() {
		enc.delta(0, harmony.Content, " token")
	}
}
