package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/gptoss/server/coordinator/tokenizer"
	"github.com/gptoss/server/shared/step"
)

// lpEngine is an executor that generates a fixed script with known
// logprobs: the token at generated position n has logprob lpAt(n), and its
// k-th alternative is (id+k) with lpAt(n)-k (k = 0 is the token itself).
type lpEngine struct {
	script []int
	mu     sync.Mutex
	seqs   map[uint64]int
}

func lpAt(n int) float32 { return -float32(n+1) / 8 }

func (f *lpEngine) Capabilities() step.Capabilities { return step.Capabilities{Logprobs: true} }

func (f *lpEngine) Release(ids []uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		delete(f.seqs, id)
	}
}

func (f *lpEngine) Step(_ context.Context, b *step.Batch) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range b.Seqs {
		st := &b.Seqs[i]
		if !st.Sample {
			continue
		}
		n := f.seqs[st.ID]
		f.seqs[st.ID] = n + 1
		id := tokenizer.EndOfText
		if n < len(f.script) {
			id = f.script[n]
		}
		st.Out = step.Token{ID: id}
		if sp := st.Sampling; sp != nil && sp.Logprobs {
			st.Out.Logprob = lpAt(n)
			for k := range sp.TopLogprobs {
				st.Out.TopLogprobs = append(st.Out.TopLogprobs,
					step.TokenLogprob{ID: (id + k) % tokenizer.NumOrdinary, Logprob: lpAt(n) - float32(k)})
			}
		}
	}
	return nil
}

// lpScript builds a script from pieces; it remembers the positions of the
// tokens that make up the content.
type lpScript struct {
	tok        *tokenizer.Tokenizer
	ids        []int
	contentPos []int // positions in ids
}

func newScript() *lpScript { return &lpScript{tok: tokenizer.Default()} }

func (s *lpScript) ctl(ids ...int) *lpScript { s.ids = append(s.ids, ids...); return s }

func (s *lpScript) text(t string) *lpScript { return s.ctl(s.tok.Encode(t)...) }

func (s *lpScript) content(t string) *lpScript { return s.contentIDs(s.tok.Encode(t)...) }

func (s *lpScript) contentIDs(ids ...int) *lpScript {
	for _, id := range ids {
		s.contentPos = append(s.contentPos, len(s.ids))
		s.ids = append(s.ids, id)
	}
	return s
}

// byteTokens are the single-byte tokens spelling t, as a model may
// generate a character it has no token for.
func byteTokens(t testing.TB, tok *tokenizer.Tokenizer, text string) []int {
	t.Helper()
	var out []int
	for _, c := range []byte(text) {
		id, ok := tok.ByteToken(c)
		if !ok {
			t.Fatalf("no token for byte %x", c)
		}
		out = append(out, id)
	}
	return out
}

func lpEnv(t *testing.T, script []int) *testEnv {
	return newEnv(t, func(c *testConfig) { c.engine = &lpEngine{script: script, seqs: map[uint64]int{}} })
}

// Response shapes as a client decodes them.
type lpChatResp struct {
	Choices []struct {
		Message struct {
			Content          *string `json:"content"`
			ReasoningContent *string `json:"reasoning_content"`
		} `json:"message"`
		Delta struct {
			Content          *string `json:"content"`
			ReasoningContent *string `json:"reasoning_content"`
		} `json:"delta"`
		Logprobs json.RawMessage `json:"logprobs"`
	} `json:"choices"`
}

type lpChatLogprobs struct {
	Content []ChatTokenLogprob `json:"content"`
	Refusal json.RawMessage    `json:"refusal"`
}

type lpTextResp struct {
	Choices []struct {
		Text     string          `json:"text"`
		Logprobs json.RawMessage `json:"logprobs"`
	} `json:"choices"`
}

type lpTextLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float32            `json:"token_logprobs"`
	TopLogprobs   []map[string]float32 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

func decodeChatLogprobs(t *testing.T, raw json.RawMessage) *lpChatLogprobs {
	t.Helper()
	if string(raw) == "null" || len(raw) == 0 {
		return nil
	}
	var lp lpChatLogprobs
	if err := json.Unmarshal(raw, &lp); err != nil {
		t.Fatalf("logprobs %s: %v", raw, err)
	}
	if string(lp.Refusal) != "null" || lp.Content == nil {
		t.Fatalf("logprobs shape %s", raw)
	}
	return &lp
}

// chatLP runs a chat request, streamed or not, and returns the content and
// the content logprobs (for streams: concatenated over the chunks, and
// each chunk's entries checked against its text when aligned is set).
func chatLP(t *testing.T, e *testEnv, extra string, stream, aligned bool) (string, []ChatTokenLogprob) {
	t.Helper()
	body := `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"max_tokens":200,"logprobs":true` + extra
	if !stream {
		resp, b := e.post(t, "/v1/chat/completions", body+`}`)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
		var r lpChatResp
		if err := json.Unmarshal(b, &r); err != nil || len(r.Choices) != 1 {
			t.Fatalf("response %s: %v", b, err)
		}
		lp := decodeChatLogprobs(t, r.Choices[0].Logprobs)
		if lp == nil {
			t.Fatalf("no logprobs: %s", b)
		}
		content := ""
		if c := r.Choices[0].Message.Content; c != nil {
			content = *c
		}
		return content, lp.Content
	}
	resp, b := e.post(t, "/v1/chat/completions", body+`,"stream":true}`)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	var content strings.Builder
	all := []ChatTokenLogprob{}
	for _, ev := range sseEvents(t, bytes.NewReader(b)) {
		if ev == "[DONE]" {
			break
		}
		var r lpChatResp
		if err := json.Unmarshal([]byte(ev), &r); err != nil {
			t.Fatalf("chunk %s: %v", ev, err)
		}
		if len(r.Choices) == 0 {
			continue
		}
		ch := r.Choices[0]
		lp := decodeChatLogprobs(t, ch.Logprobs)
		text := ""
		if ch.Delta.Content != nil {
			text = *ch.Delta.Content
		}
		if text == "" {
			if lp != nil {
				t.Fatalf("logprobs on a chunk without content: %s", ev)
			}
			continue
		}
		if lp == nil {
			t.Fatalf("content chunk without logprobs: %s", ev)
		}
		content.WriteString(text)
		all = append(all, lp.Content...)
		if aligned {
			var got []byte
			for _, c := range lp.Content {
				got = append(got, intsToBytes(c.Bytes)...)
			}
			if string(got) != text {
				t.Fatalf("chunk %q carries tokens %q", text, got)
			}
		}
	}
	return content.String(), all
}

func intsToBytes(v []int) []byte {
	b := make([]byte, len(v))
	for i, c := range v {
		b[i] = byte(c)
	}
	return b
}

// checkChatEntries checks the entries against the script's content tokens
// (the first want of them).
func checkChatEntries(t *testing.T, s *lpScript, got []ChatTokenLogprob, want, top int) {
	t.Helper()
	if len(got) != want {
		t.Fatalf("%d logprob entries, want %d: %+v", len(got), want, got)
	}
	for i, g := range got {
		pos := s.contentPos[i]
		id := s.ids[pos]
		raw, _ := s.tok.TokenBytes(id)
		if g.Token != s.tok.TokenText(id) || !bytes.Equal(intsToBytes(g.Bytes), raw) || g.Logprob != lpAt(pos) {
			t.Fatalf("entry %d = %+v, want token %q bytes %v logprob %v", i, g, s.tok.TokenText(id), raw, lpAt(pos))
		}
		if len(g.TopLogprobs) != top {
			t.Fatalf("entry %d has %d top logprobs, want %d", i, len(g.TopLogprobs), top)
		}
		for k, a := range g.TopLogprobs {
			alt := (id + k) % tokenizer.NumOrdinary
			ab, _ := s.tok.TokenBytes(alt)
			if a.Token != s.tok.TokenText(alt) || a.Logprob != lpAt(pos)-float32(k) || !bytes.Equal(intsToBytes(a.Bytes), ab) {
				t.Fatalf("entry %d top %d = %+v", i, k, a)
			}
		}
	}
}

func joinBytes(es []ChatTokenLogprob) string {
	var b []byte
	for _, e := range es {
		b = append(b, intsToBytes(e.Bytes)...)
	}
	return string(b)
}

// A reasoning message, then a final answer with a character split over
// byte tokens: only the answer's tokens are listed, with their own
// logprobs, streamed or not.
func TestChatLogprobs(t *testing.T) {
	s := newScript()
	s.ctl(tokenizer.Channel).text("analysis").ctl(tokenizer.Message).text("Let me think.").
		ctl(tokenizer.End, tokenizer.Start).text("assistant").ctl(tokenizer.Channel).text("final").ctl(tokenizer.Message).
		content("Hello world").contentIDs(byteTokens(t, s.tok, "😀")...).content("!").ctl(tokenizer.Return)
	e := lpEnv(t, s.ids)
	const want = "Hello world😀!"
	for _, stream := range []bool{false, true} {
		for _, top := range []int{0, 3} {
			t.Run(fmt.Sprintf("stream=%v,top=%d", stream, top), func(t *testing.T) {
				content, got := chatLP(t, e, fmt.Sprintf(`,"top_logprobs":%d`, top), stream, true)
				if content != want {
					t.Fatalf("content %q", content)
				}
				checkChatEntries(t, s, got, len(s.contentPos), top)
				if joinBytes(got) != content {
					t.Fatalf("tokens %q != content %q", joinBytes(got), content)
				}
				if got[len(got)-2].Token != "\uFFFD" || len(got[len(got)-2].Bytes) != 1 {
					t.Fatalf("a byte token of a split character: %+v", got[len(got)-2])
				}
			})
		}
	}
	// Without logprobs the field stays null.
	_, b := e.post(t, "/v1/chat/completions", `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}]}`)
	if !strings.Contains(string(b), `"logprobs":null`) {
		t.Fatalf("logprobs not null: %s", b)
	}
}

// Stop strings: tokens whose text was held back are listed once released;
// tokens whose text was cut (even in part) are not.
func TestChatLogprobsStopStrings(t *testing.T) {
	s := newScript()
	s.ctl(tokenizer.Channel).text("final").ctl(tokenizer.Message).content("Hello world, how are you").ctl(tokenizer.Return)
	toks := s.tok.Encode("Hello world, how are you")
	if s.tok.TokenText(toks[0]) != "Hello" || s.tok.TokenText(toks[1]) != " world" {
		t.Fatalf("unexpected tokens %v", toks)
	}
	e := lpEnv(t, s.ids)
	for _, tc := range []struct {
		stop, content string
		entries       int
	}{
		{" world", "Hello", 1},                                 // cut at a token boundary
		{"orl", "Hello w", 1},                                  // " world" is cut in two: dropped
		{", how", "Hello world", 2},                            // held back, then released
		{"zzz", "Hello world, how are you", len(s.contentPos)}, // no match: all held text flushed at the end
	} {
		for _, stream := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/stream=%v", tc.stop, stream), func(t *testing.T) {
				content, got := chatLP(t, e, `,"top_logprobs":1,"stop":["`+tc.stop+`"]`, stream, false)
				if content != tc.content {
					t.Fatalf("content %q, want %q", content, tc.content)
				}
				checkChatEntries(t, s, got, tc.entries, 1)
				if j := joinBytes(got); !strings.HasPrefix(content, j) {
					t.Fatalf("tokens %q are not a prefix of %q", j, content)
				}
			})
		}
	}
}

// Tool-call arguments and headers are not listed; a preamble is content.
func TestChatLogprobsToolCall(t *testing.T) {
	s := newScript()
	s.ctl(tokenizer.Channel).text("commentary").ctl(tokenizer.Message).content("Checking.").ctl(tokenizer.End, tokenizer.Start).
		text("assistant").ctl(tokenizer.Channel).text("commentary to=functions.get_weather ").ctl(tokenizer.Constrain).text("json").
		ctl(tokenizer.Message).text(`{"city":"Paris"}`).ctl(tokenizer.Call)
	e := lpEnv(t, s.ids)
	tools := `,"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]`
	for _, stream := range []bool{false, true} {
		content, got := chatLP(t, e, tools, stream, true)
		if content != "Checking." {
			t.Fatalf("content %q", content)
		}
		checkChatEntries(t, s, got, len(s.contentPos), 0)
	}
	// A call with no preamble: content is null, the list empty.
	s = newScript()
	s.ctl(tokenizer.Channel).text("commentary to=functions.get_weather ").ctl(tokenizer.Constrain).text("json").
		ctl(tokenizer.Message).text(`{"city":"Paris"}`).ctl(tokenizer.Call)
	e = lpEnv(t, s.ids)
	_, b := e.post(t, "/v1/chat/completions", `{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"logprobs":true`+tools+`}`)
	if !strings.Contains(string(b), `"logprobs":{"content":[],"refusal":null}`) || !strings.Contains(string(b), `"tool_calls"`) {
		t.Fatalf("response %s", b)
	}
}

// Output without Harmony structure is salvaged as content (a header that
// never ends); its tokens are listed with their own logprobs, also when
// the header outgrew the parser's limit.
func TestChatLogprobsSalvagedHeader(t *testing.T) {
	for _, text := range []string{"Hello world", strings.Repeat(" hi", 100)} {
		s := newScript()
		s.content(text).ctl(tokenizer.Return)
		e := lpEnv(t, s.ids)
		for _, stream := range []bool{false, true} {
			content, got := chatLP(t, e, `,"top_logprobs":2`, stream, false)
			if content != text {
				t.Fatalf("content %q", content)
			}
			checkChatEntries(t, s, got, len(s.contentPos), 2)
			if joinBytes(got) != content {
				t.Fatalf("tokens %q != content %q", joinBytes(got), content)
			}
		}
	}
}

// textLP runs a completions request and returns the text and logprobs.
func textLP(t *testing.T, e *testEnv, extra string, stream bool) (string, lpTextLogprobs) {
	t.Helper()
	body := `{"model":"gpt-oss-20b","prompt":"Hi","max_tokens":200` + extra
	if stream {
		body += `,"stream":true`
	}
	resp, b := e.post(t, "/v1/completions", body+`}`)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	events := []string{string(b)}
	if stream {
		events = sseEvents(t, bytes.NewReader(b))
	}
	var text strings.Builder
	var all lpTextLogprobs
	for _, ev := range events {
		if ev == "[DONE]" {
			break
		}
		var r lpTextResp
		if err := json.Unmarshal([]byte(ev), &r); err != nil {
			t.Fatalf("%s: %v", ev, err)
		}
		if len(r.Choices) == 0 {
			continue
		}
		ch := r.Choices[0]
		if string(ch.Logprobs) == "null" {
			if ch.Text != "" {
				t.Fatalf("text without logprobs: %s", ev)
			}
			continue
		}
		var lp lpTextLogprobs
		if err := json.Unmarshal(ch.Logprobs, &lp); err != nil {
			t.Fatalf("%s: %v", ev, err)
		}
		if lp.Tokens == nil || lp.TokenLogprobs == nil || lp.TopLogprobs == nil || lp.TextOffset == nil {
			t.Fatalf("logprobs shape %s", ch.Logprobs)
		}
		text.WriteString(ch.Text)
		all.Tokens = append(all.Tokens, lp.Tokens...)
		all.TokenLogprobs = append(all.TokenLogprobs, lp.TokenLogprobs...)
		all.TopLogprobs = append(all.TopLogprobs, lp.TopLogprobs...)
		all.TextOffset = append(all.TextOffset, lp.TextOffset...)
	}
	return text.String(), all
}

func TestCompletionLogprobs(t *testing.T) {
	s := newScript()
	s.content("Hello world").contentIDs(byteTokens(t, s.tok, "é")...).content("!").ctl(tokenizer.EndOfText)
	e := lpEnv(t, s.ids)
	for _, stream := range []bool{false, true} {
		for _, n := range []int{0, 2} {
			t.Run(fmt.Sprintf("stream=%v,n=%d", stream, n), func(t *testing.T) {
				text, lp := textLP(t, e, fmt.Sprintf(`,"logprobs":%d`, n), stream)
				if text != "Hello worldé!" {
					t.Fatalf("text %q", text)
				}
				if len(lp.Tokens) != len(s.contentPos) || len(lp.TokenLogprobs) != len(s.contentPos) ||
					len(lp.TopLogprobs) != len(s.contentPos) || len(lp.TextOffset) != len(s.contentPos) {
					t.Fatalf("lengths %+v", lp)
				}
				for i, pos := range s.contentPos {
					id := s.ids[pos]
					if lp.Tokens[i] != s.tok.TokenText(id) || lp.TokenLogprobs[i] != lpAt(pos) {
						t.Fatalf("token %d = %q %v", i, lp.Tokens[i], lp.TokenLogprobs[i])
					}
					wantTop := map[string]float32{lp.Tokens[i]: lpAt(pos)}
					for k := 1; k < n; k++ {
						if alt := s.tok.TokenText((id + k) % tokenizer.NumOrdinary); wantTop[alt] == 0 {
							wantTop[alt] = lpAt(pos) - float32(k) // a text seen twice keeps the first
						}
					}
					if fmt.Sprint(lp.TopLogprobs[i]) != fmt.Sprint(wantTop) {
						t.Fatalf("top %d = %v, want %v", i, lp.TopLogprobs[i], wantTop)
					}
				}
				// "Hello", " world", then the two bytes of é at 11, "!" at 12 (characters).
				if want := []int{0, 5, 11, 11, 12}; !slices.Equal(lp.TextOffset, want) {
					t.Fatalf("text_offset %v, want %v", lp.TextOffset, want)
				}
			})
		}
	}
	// Stop string: " world" is cut, so only "Hello" is listed.
	for _, stream := range []bool{false, true} {
		text, lp := textLP(t, e, `,"logprobs":1,"stop":["orl"]`, stream)
		if text != "Hello w" || !slices.Equal(lp.Tokens, []string{"Hello"}) || !slices.Equal(lp.TextOffset, []int{0}) {
			t.Fatalf("stream=%v: %q %+v", stream, text, lp)
		}
	}
	// The top object is written most likely first.
	_, b := e.post(t, "/v1/completions", `{"model":"gpt-oss-20b","prompt":"Hi","max_tokens":1,"logprobs":2}`)
	if !strings.Contains(string(b), `"top_logprobs":[{"Hello":-0.125,`) {
		t.Fatalf("response %s", b)
	}
}

func TestLogprobsValidation(t *testing.T) {
	mockEnv := newEnv(t)
	resp, b := mockEnv.post(t, "/v1/completions", `{"model":"gpt-oss-20b","prompt":"Hi","logprobs":0}`)
	if resp.StatusCode != 400 || errorOf(t, b)["code"] != "unsupported_parameter" {
		t.Fatalf("mock engine, logprobs 0: %d %s", resp.StatusCode, b)
	}
	e := lpEnv(t, newScript().content("Hi").ids)
	for _, body := range []string{
		`{"model":"gpt-oss-20b","prompt":"Hi","logprobs":21}`,
		`{"model":"gpt-oss-20b","prompt":"Hi","logprobs":-1}`,
		`{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"logprobs":true,"top_logprobs":21}`,
		`{"model":"gpt-oss-20b","messages":[{"role":"user","content":"Hi"}],"top_logprobs":2}`,
	} {
		path := "/v1/completions"
		if strings.Contains(body, "messages") {
			path = "/v1/chat/completions"
		}
		resp, b := e.post(t, path, body)
		if resp.StatusCode != 400 || errorOf(t, b)["code"] != "invalid_value" {
			t.Fatalf("%s: %d %s", body, resp.StatusCode, b)
		}
	}
	resp, b = e.post(t, "/v1/completions", `{"model":"gpt-oss-20b","prompt":"Hi","logprobs":1,"echo":true}`)
	if resp.StatusCode != 400 || errorOf(t, b)["param"] != "echo" {
		t.Fatalf("echo: %d %s", resp.StatusCode, b)
	}
}
