package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"go.uber.org/zap"

	"github.com/gptoss/server/coordinator/harmony"
	"github.com/gptoss/server/coordinator/sched"
	"github.com/gptoss/server/coordinator/stats"
	"github.com/gptoss/server/coordinator/tokenizer"
	"github.com/gptoss/server/shared/step"
)

func (s *Server) chatCompletions(c echo.Context) error {
	var req ChatRequest
	if err := decodeJSON(c.Request().Body, &req); err != nil {
		return err
	}
	s.noteProfile(c, req.Profile)
	g, err := s.parseChat(&req)
	if err != nil {
		return err
	}
	return s.generate(c, g, "chat")
}

func (s *Server) completions(c echo.Context) error {
	var req CompletionRequest
	if err := decodeJSON(c.Request().Body, &req); err != nil {
		return err
	}
	s.noteProfile(c, req.Profile)
	g, err := s.parseCompletion(&req)
	if err != nil {
		return err
	}
	return s.generate(c, g, "completions")
}

// noteProfile labels a request with its profile for logs and stats, only
// when the name is a known profile (client strings never become labels).
func (s *Server) noteProfile(c echo.Context, name *string) {
	p := s.opts.DefaultProfile
	if name != nil {
		if _, err := s.opts.Profiles.Get(*name); err == nil {
			p = *name
		}
	}
	setInfo(c, func(i *reqInfo) { i.profile = p })
}

// update is one step of progress of one choice.
type update struct {
	ch    *choice
	toks  []step.Token
	final *sched.Final
	err   error
}

// generate submits the request's sequences, n for each prompt, and writes
// the response.
func (s *Server) generate(c echo.Context, g *genParams, endpoint string) error {
	start := getInfo(c).start
	setInfo(c, func(i *reqInfo) {
		i.endpoint, i.stream, i.promptTokens, i.profile = endpoint, g.stream, g.promptTokens(), g.profile.Name
	})
	ctx, subCtx, cancel := runContexts(c, g)
	defer cancel()
	batch := g.batch()
	choices := make([]*choice, 0, len(batch)*g.n)
	for p, in := range batch {
		for j := range g.n {
			sampling := g.sampling
			if sampling.HasSeed {
				// Per choice of a prompt: the same prompt sent twice in a
				// batch gets the same answers, as it would alone.
				sampling.Seed = choiceSeed(sampling.Seed, j)
			}
			req := &sched.Request{
				ID: requestID(c), Profile: g.profile, Prompt: in.ids, MaxTokens: in.maxTokens,
				StopTokens: stopTokens(g.chat), Sampling: sampling,
			}
			st, err := s.submit(subCtx, g, req)
			if err != nil {
				for _, ch := range choices {
					ch.stream.Cancel()
				}
				return err
			}
			ch := newChoice(p*g.n+j, st, g, s.opts.Tokenizer)
			if g.echo {
				ch.echo = in.text
			}
			choices = append(choices, ch)
		}
	}
	r := &run{s: s, c: c, g: g, choices: choices, start: start, endpoint: endpoint,
		id: newID(endpoint), created: time.Now().Unix()}
	if len(choices) > 1 {
		// Several choices progress independently: fan them in.
		r.updates = make(chan update, len(choices))
		for _, ch := range choices {
			go receive(ctx, ch, r.updates)
		}
	}
	r.enc = newChunkEncoder(r)
	var err error
	if g.stream {
		err = r.stream(ctx)
	} else {
		err = r.collect(ctx)
	}
	r.record()
	return err
}

// runContexts are a generation's contexts: ctx ends when the client leaves
// or the handler returns; subCtx, the sequences', also at the profile's
// request_timeout. cancel ends both.
func runContexts(c echo.Context, g *genParams) (ctx, subCtx context.Context, cancel context.CancelFunc) {
	ctx, cancel = context.WithCancel(c.Request().Context())
	subCtx = ctx
	if t := g.profile.Scheduling.RequestTimeout; t > 0 {
		var cancelT context.CancelFunc
		subCtx, cancelT = context.WithTimeout(ctx, t)
		cancelCtx := cancel
		cancel = func() { cancelT(); cancelCtx() }
	}
	return ctx, subCtx, cancel
}

// submit queues one sequence, with its own Guide when the request
// constrains its output; errors are the API's.
func (s *Server) submit(ctx context.Context, g *genParams, req *sched.Request) (*sched.Stream, error) {
	gd, err := s.newGuide(g)
	if err != nil {
		return nil, err
	}
	if gd != nil {
		req.Guide = gd
	}
	st, err := s.opts.Engine.Submit(ctx, req)
	if err != nil {
		if gd != nil {
			gd.Close()
		}
		return nil, submitError(err)
	}
	return st, nil
}

// choiceSeed is the seed of choice i of a request seeded with seed: choice
// 0 keeps the request's seed (so n=1 answers as it always did), the others
// get a splitmix64 mix of the seed and their index, so that the n choices
// differ from each other while the whole response stays reproducible.
func choiceSeed(seed int64, i int) int64 {
	if i == 0 {
		return seed
	}
	// splitmix64 (Steele, Lea and Flood 2014) of the seed advanced by i
	// steps of the golden-ratio increment: a bijection for each i, and
	// neighbouring seeds or indices land far apart.
	z := uint64(seed) + uint64(i)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return int64(z ^ (z >> 31))
}

// stopTokens are the tokens that end generation: <|return|> and <|call|>
// end a Harmony reply (never <|end|>, which only ends one message), and
// <|endoftext|> ends raw text.
func stopTokens(chat bool) []int {
	if chat {
		return []int{tokenizer.Return, tokenizer.Call, tokenizer.EndOfText}
	}
	return []int{tokenizer.EndOfText, tokenizer.Return}
}

// receive forwards a choice's progress until it ends or ctx is done.
func receive(ctx context.Context, ch *choice, out chan<- update) {
	for {
		toks, f, err := ch.stream.Recv(ctx, nil)
		select {
		case out <- update{ch: ch, toks: toks, final: f, err: err}:
		case <-ctx.Done():
			return
		}
		if f != nil || err != nil {
			return
		}
	}
}

// run is one generation request in flight.
type run struct {
	s        *Server
	c        echo.Context
	g        *genParams
	choices  []*choice
	updates  chan update
	start    time.Time
	endpoint string
	id       string
	created  int64

	sse       *sseWriter
	enc       *chunkEncoder
	status    int
	cancelled bool // the client went away
	failed    bool // ended in a server-side error
}

// next waits for the next progress of any choice. A single choice is read
// directly, without the fan-in goroutine, which saves a goroutine hand-off
// per token on the common path.
func (r *run) next(ctx context.Context) update {
	if r.updates == nil {
		ch := r.choices[0]
		toks, f, err := ch.stream.Recv(ctx, ch.recvBuf[:0])
		ch.recvBuf = toks
		return update{ch: ch, toks: toks, final: f, err: err}
	}
	select {
	case u := <-r.updates:
		return u
	case <-ctx.Done():
		return update{err: ctx.Err()}
	}
}

// collect waits for every choice and writes one JSON response.
func (r *run) collect(ctx context.Context) error {
	for pending := len(r.choices); pending > 0; {
		u := r.next(ctx)
		if u.err != nil {
			return r.clientGone()
		}
		u.ch.feed(u.toks)
		for _, t := range u.toks {
			u.ch.mark(1, t.At)
		}
		if u.final != nil {
			u.ch.finish(u.final)
			pending--
			if err := finalError(u.final, u.ch.stopHit); err != nil {
				return r.refuse(err)
			}
		}
	}
	r.status = http.StatusOK
	usage := r.usage()
	if !r.g.chat {
		out := Completion{Envelope: r.envelope("text_completion"), Usage: usage}
		for _, ch := range r.choices {
			fr := ch.finishReason()
			out.Choices = append(out.Choices, CompletionChoice{Text: ch.echo + ch.content.String(), Index: ch.index, Logprobs: r.logprobsField(ch), FinishReason: &fr})
		}
		return r.c.JSON(http.StatusOK, out)
	}
	out := ChatCompletion{Envelope: r.envelope("chat.completion"), Usage: usage}
	for _, ch := range r.choices {
		content := ch.content.String()
		msg := ResponseMessage{Role: "assistant", Content: &content, ToolCalls: ch.toolCalls()}
		if r.g.legacyFunctions && len(msg.ToolCalls) > 0 {
			// A Harmony reply ends at its first call: there is one.
			msg.FunctionCall, msg.ToolCalls = &msg.ToolCalls[0].Function, nil
		}
		if content == "" && (len(msg.ToolCalls) > 0 || msg.FunctionCall != nil) {
			msg.Content = nil // OpenAI sends null content with tool calls
		}
		if rc := ch.reasoning.String(); rc != "" {
			switch r.g.reasoningField {
			case "reasoning_content":
				msg.ReasoningContent = &rc
			case "reasoning":
				msg.Reasoning = &rc
			case "both":
				msg.ReasoningContent, msg.Reasoning = &rc, &rc
			}
		}
		out.Choices = append(out.Choices, ChatChoice{Index: ch.index, Message: msg, Logprobs: r.logprobsField(ch), FinishReason: r.finishReason(ch)})
	}
	return r.c.JSON(http.StatusOK, out)
}

// stream writes server-sent events as tokens arrive. Nothing is written
// until the first progress arrives, so a request that fails while queued
// still gets a proper HTTP error status instead of a broken stream.
func (r *run) stream(ctx context.Context) error {
	for pending := len(r.choices); pending > 0; {
		u := r.next(ctx)
		if u.err != nil {
			return r.clientGone()
		}
		if r.sse == nil {
			if err := endedUnheard(u); err != nil {
				return r.refuse(err)
			}
			if err := r.begin(); err != nil {
				return r.clientGone()
			}
		}
		deltas := u.ch.feed(u.toks)
		if err := r.sendDeltas(u.ch, deltas); err != nil {
			return r.clientGone()
		}
		// Timing as the client sees it: when the event left the server.
		now := time.Now()
		u.ch.mark(len(u.toks), now)
		for _, t := range u.toks {
			u.ch.streamDelay = append(u.ch.streamDelay, now.Sub(t.At))
		}
		if u.final == nil {
			continue
		}
		pending--
		if err := r.sendDeltas(u.ch, u.ch.finish(u.final)); err != nil {
			return r.clientGone()
		}
		if u.final.Reason == sched.FinishError && !u.ch.stopHit {
			// The headers are out: report the failure in-band, as the
			// OpenAI SDKs expect ("error" key), and end the stream.
			e := finalError(u.final, false)
			e.RequestID = requestID(r.c)
			r.failed = true
			r.cancelAll()
			r.s.log.Warn("stream failed", zap.String("request_id", e.RequestID), zap.Error(u.final.Err))
			setInfo(r.c, func(i *reqInfo) { i.errCode, i.err = e.Code, e })
			_ = r.sse.send(e.body())
			return nil
		}
		fr := r.finishReason(u.ch)
		if err := r.sendFinish(u.ch, fr); err != nil {
			return r.clientGone()
		}
	}
	if r.g.includeUsage {
		if err := r.sendUsage(); err != nil {
			return r.clientGone()
		}
	}
	_ = r.sse.done()
	return nil
}

// endedUnheard is the error of a sequence that ended badly before any
// output (queued, or failed at its first step): the stream is not open
// yet, so it can still be answered with its HTTP status.
func endedUnheard(u update) *Error {
	if u.final != nil && len(u.toks) == 0 {
		return finalError(u.final, false)
	}
	return nil
}

// refuse answers a failed generation with its HTTP error (nothing was
// streamed): the other choices are cancelled, the status recorded.
func (r *run) refuse(e *Error) error {
	r.failed = e.Status >= 500
	r.status = e.Status
	r.cancelAll()
	return e
}

// openSSE starts the event stream (status 200, headers out).
func (r *run) openSSE() {
	r.sse = newSSEWriter(r.c, r.s.opts.SSEWriteTimeout)
	r.status = http.StatusOK
	r.sse.start()
}

func (r *run) begin() error {
	r.openSSE()
	if !r.g.chat {
		// An echoed prompt comes first, in its own chunk, so the stream's
		// text adds up to the non-streamed choice's.
		for _, ch := range r.choices {
			if ch.echo == "" {
				continue
			}
			if err := r.sse.send(r.textChunk(ch.index, ch.echo, nil)); err != nil {
				return err
			}
		}
		return nil
	}
	for _, ch := range r.choices {
		empty := ""
		if err := r.sse.send(r.chatChunk(ch.index, ChatDelta{Role: "assistant", Content: &empty}, nil)); err != nil {
			return err
		}
	}
	return nil
}

func (r *run) envelope(object string) Envelope {
	return Envelope{ID: r.id, Object: object, Created: r.created, Model: r.s.opts.Model.ID, SystemFingerprint: r.s.fingerprint}
}

func (r *run) usageField() any {
	if r.g.includeUsage {
		return jsonNull
	}
	return nil
}

func (r *run) chatChunk(index int, d ChatDelta, finish *string) *ChatChunk {
	return &ChatChunk{Envelope: r.envelope("chat.completion.chunk"), Usage: r.usageField(),
		Choices: []ChatChunkChoice{{Index: index, Delta: d, Logprobs: jsonNull, FinishReason: finish}}}
}

func (r *run) textChunk(index int, text string, finish *string) *Completion {
	return &Completion{Envelope: r.envelope("text_completion"), Usage: r.usageField(),
		Choices: []CompletionChoice{{Text: text, Index: index, Logprobs: jsonNull, FinishReason: finish}}}
}

// sendDeltas writes one event per text delta. This is the per-token hot
// path, so the chunk is appended from prebuilt pieces instead of going
// through reflection (chunkEncoder; its test checks it against the
// encoding/json form).
func (r *run) sendDeltas(ch *choice, deltas []harmony.Delta) error {
	for i, d := range deltas {
		var err error
		switch {
		case d.Kind == harmony.Function && r.g.legacyFunctions:
			// The deprecated shape: one function_call (a Harmony reply
			// ends at its first call), its name on the first delta.
			err = r.sse.send(r.chatChunk(ch.index, ChatDelta{FunctionCall: &FunctionDelta{Name: d.Name, Arguments: d.Text}}, nil))
		case d.Kind == harmony.Function:
			// Rarer than text: the reflective encoder is fine here.
			tc := ToolCallDelta{Index: d.Call, Function: FunctionDelta{Arguments: d.Text}}
			if d.Name != "" && d.Call < len(ch.calls) {
				tc.ID, tc.Type, tc.Function.Name = ch.calls[d.Call].id, "function", d.Name
			}
			err = r.sse.send(r.chatChunk(ch.index, ChatDelta{ToolCalls: []ToolCallDelta{tc}}, nil))
		case d.Text == "":
			continue
		case d.Kind == harmony.Reasoning && r.g.reasoningField == "none":
			continue
		case d.Kind == harmony.Content && ch.lp != nil:
			err = r.sendContentLogprobs(ch, d.Text, ch.lp.deltaEntries(i))
		default:
			err = r.sse.write(r.enc.delta(ch.index, d.Kind, d.Text))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// sendContentLogprobs writes a content delta with the logprobs of the
// tokens whose text it completes (possibly none, while a token's text is
// held back by stop-string matching).
func (r *run) sendContentLogprobs(ch *choice, text string, es []lpEntry) error {
	tok := r.s.opts.Tokenizer
	if r.g.chat {
		c := r.chatChunk(ch.index, ChatDelta{Content: &text}, nil)
		c.Choices[0].Logprobs = chatLogprobs(tok, es)
		return r.sse.send(c)
	}
	c := r.textChunk(ch.index, text, nil)
	c.Choices[0].Logprobs = completionLogprobs(tok, es)
	return r.sse.send(c)
}

// finishReason is the choice's finish_reason in the request's shape: a
// call ends with "function_call" when the request used the deprecated
// functions.
func (r *run) finishReason(ch *choice) string {
	fr := ch.finishReason()
	if fr == "tool_calls" && r.g.legacyFunctions {
		return "function_call"
	}
	return fr
}

func (r *run) sendFinish(ch *choice, fr string) error {
	if r.g.chat {
		return r.sse.send(r.chatChunk(ch.index, ChatDelta{}, &fr))
	}
	return r.sse.send(r.textChunk(ch.index, "", &fr))
}

func (r *run) sendUsage() error {
	u := r.usage()
	if r.g.chat {
		return r.sse.send(&ChatChunk{Envelope: r.envelope("chat.completion.chunk"), Choices: []ChatChunkChoice{}, Usage: u})
	}
	return r.sse.send(&Completion{Envelope: r.envelope("text_completion"), Choices: []CompletionChoice{}, Usage: u})
}

func (r *run) usage() *Usage {
	u := &Usage{PromptTokens: r.g.promptTokens()}
	reasoning := 0
	for _, ch := range r.choices {
		if ch.final != nil {
			u.CompletionTokens += ch.final.CompletionTokens
		} else {
			u.CompletionTokens += ch.tokens
		}
		reasoning += ch.reasoningTokens
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	if r.g.chat {
		u.CompletionTokensDetails = &CompletionTokensDetails{ReasoningTokens: reasoning}
	}
	return u
}

func (r *run) cancelAll() {
	for _, ch := range r.choices {
		ch.stream.Cancel()
	}
}

// clientGone handles a client that disconnected (or stopped reading): its
// sequences are cancelled so the scheduler frees them before the next step.
func (r *run) clientGone() error {
	r.cancelAll()
	r.cancelled = true
	if r.status == 0 {
		// Nothing was sent; nginx's 499 "client closed request" keeps the
		// log line honest.
		r.status = 499
	}
	return nil
}

// record reports the finished request to the stats and the log line.
func (r *run) record() {
	info := getInfo(r.c)
	info.recorded = true
	first := r.choices[0]
	rec := stats.Record{
		Profile: r.g.profile.Name, Endpoint: r.endpoint, Status: r.status, Stream: r.g.stream,
		PromptTokens: r.g.promptTokens(), E2E: time.Since(r.start),
	}
	for _, ch := range r.choices {
		rec.ITL = append(rec.ITL, ch.itl...)
		rec.StreamDelay = append(rec.StreamDelay, ch.streamDelay...)
		ch.recordMalformed(&rec)
		if ch.final != nil {
			rec.CompletionTokens += ch.final.CompletionTokens
		} else {
			rec.CompletionTokens += ch.tokens
		}
	}
	if !first.firstAt.IsZero() {
		rec.TTFT = first.firstAt.Sub(r.start)
	}
	if first.final != nil {
		rec.Queue = first.final.Queue
	}
	switch {
	case r.cancelled:
		rec.FinishReason = "cancelled"
		r.s.opts.Stats.ObserveCancel(r.g.profile.Name)
	case r.failed:
		rec.FinishReason = "error"
	default:
		rec.FinishReason = first.finishReason()
	}
	if r.status == 499 || r.status == 0 {
		rec.Status = 499
	}
	r.s.opts.Stats.Observe(rec)
	info.completionTokens, info.finish, info.ttft = rec.CompletionTokens, rec.FinishReason, rec.TTFT
}

// submitError maps an admission failure to its HTTP error; err is its
// cause.
func submitError(err error) *Error {
	var ae *Error
	switch {
	case errors.Is(err, sched.ErrQueueFull):
		ae = overloaded("The server is overloaded: too many requests are waiting. Please retry shortly.", 1)
	case errors.Is(err, sched.ErrDraining), errors.Is(err, sched.ErrClosed):
		ae = &Error{Status: 503, Type: "server_error", Code: "shutting_down", Message: "The server is shutting down and accepts no new requests.", RetryAfter: 5}
	default:
		ae = &Error{Status: 503, Type: "server_error", Code: "engine_unavailable", Message: fmt.Sprintf("The engine could not take the request: %v", err), RetryAfter: 1}
	}
	return ae.withCause(err)
}

// finalError maps a sequence that ended badly to its HTTP error, whose
// cause is the sequence's error; nil when it ended normally.
func finalError(f *sched.Final, stopHit bool) *Error {
	if stopHit {
		return nil
	}
	switch f.Reason {
	case sched.FinishStop, sched.FinishLength, sched.FinishCancelled:
		return nil
	}
	var ae *Error
	switch {
	case errors.Is(f.Err, sched.ErrQueueTimeout):
		ae = overloaded("The request timed out waiting in the queue; the server is overloaded. Please retry shortly.", 2)
	case errors.Is(f.Err, sched.ErrAborted):
		ae = &Error{Status: 503, Type: "server_error", Code: "shutting_down", Message: "The server shut down before the request finished.", RetryAfter: 5}
	case errors.Is(f.Err, sched.ErrEngineUnavailable):
		ae = &Error{Status: 503, Type: "server_error", Code: "engine_unavailable", Message: "The model workers are down and did not come back in time. Please retry later.", RetryAfter: 30}
	case errors.Is(f.Err, sched.ErrEngineFailed):
		// Retrying would likely fail the workers again: say so.
		ae = &Error{Status: 500, Type: "server_error", Code: "engine_error", Message: "The engine failed repeatedly while running this request, so it is not retried. Please report it if it persists.", NoRetry: true}
	case errors.Is(f.Err, sched.ErrEngineTimeout):
		// Slow, not broken: the same request may well pass later.
		ae = &Error{Status: 503, Type: "server_error", Code: "engine_timeout", Message: "The engine's steps with this request kept running past their deadline (the server is too busy or too slow for it now). Please retry later.", RetryAfter: 10}
	case errors.Is(f.Err, step.ErrRejected):
		// The workers refused the sequence's parameters, which the API
		// should have caught: the client's to fix, not a retry.
		ae = &Error{Status: 400, Type: "invalid_request_error", Code: "invalid_value", Message: "The engine refused this request's sampling parameters: " + strings.TrimPrefix(f.Err.Error(), step.ErrRejected.Error()+": ")}
	case errors.Is(f.Err, sched.ErrDeadline):
		ae = &Error{Status: 504, Type: "server_error", Code: "request_timeout", Message: "The request ran longer than this profile's request_timeout.", NoRetry: true}
	default:
		ae = &Error{Status: 503, Type: "server_error", Code: "engine_error", Message: "The engine failed while generating this response. Please retry.", RetryAfter: 1}
	}
	return ae.withCause(f.Err)
}

func newID(endpoint string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	if endpoint == "chat" {
		return "chatcmpl-" + hex.EncodeToString(b[:])
	}
	return "cmpl-" + hex.EncodeToString(b[:])
}

// sseWriter writes server-sent events: "data: <json>\n\n", flushed each time.
type sseWriter struct {
	c        echo.Context
	rc       *http.ResponseController
	timeout  time.Duration
	deadline time.Time // the write deadline currently set
	buf      bytes.Buffer
	enc      *json.Encoder
}

func newSSEWriter(c echo.Context, timeout time.Duration) *sseWriter {
	w := &sseWriter{c: c, rc: http.NewResponseController(c.Response().Writer), timeout: timeout}
	w.enc = json.NewEncoder(&w.buf)
	w.enc.SetEscapeHTML(false)
	return w
}

func (w *sseWriter) start() {
	h := w.c.Response().Header()
	h.Set(echo.HeaderContentType, "text/event-stream; charset=utf-8")
	h.Set(echo.HeaderCacheControl, "no-cache")
	h.Set(echo.HeaderConnection, "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	w.c.Response().WriteHeader(http.StatusOK)
}

func (w *sseWriter) send(v any) error {
	w.buf.Reset()
	w.buf.WriteString("data: ")
	if err := w.enc.Encode(v); err != nil {
		return fmt.Errorf("sse: encode: %w", err)
	}
	w.buf.WriteByte('\n') // Encode ended the line; a blank line ends the event
	return w.write(w.buf.Bytes())
}

func (w *sseWriter) done() error { return w.write([]byte("data: [DONE]\n\n")) }

// write sends one event and flushes it. The write deadline is pushed
// forward only when a quarter of it has been used, not on every token: a
// stuck client is still cut off within 1¼ timeouts, and the timer is not
// re-armed thousands of times a second.
func (w *sseWriter) write(b []byte) error {
	if w.timeout > 0 {
		if now := time.Now(); w.deadline.Sub(now) < w.timeout*3/4 {
			w.deadline = now.Add(w.timeout)
			_ = w.rc.SetWriteDeadline(w.deadline)
		}
	}
	if _, err := w.c.Response().Write(b); err != nil {
		return err
	}
	return w.rc.Flush()
}
