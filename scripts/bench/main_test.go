package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gptoss/server/coordinator/tokenizer"
)

// fake is an OpenAI-style server: /v1/chat/completions and /v1/completions,
// streamed (SSE, with the usage chunk when asked) or not. It counts prompt
// tokens by whitespace, the estimate the bench's word-list prompts are
// built to match.
type fake struct {
	*httptest.Server
	tokens int           // tokens per reply
	gap    time.Duration // between streamed tokens
	hold   time.Duration // before answering
	// status, when set, is the HTTP status of the n-th request (from 0);
	// 0 or 200 answers normally.
	status func(n int) int
	// broken, when set, makes the n-th request fail in the given way:
	// "stream_error" (an error event), "truncate" (no [DONE]), "hangup"
	// (the connection closed before any response).
	broken func(n int) string

	n        atomic.Int64 // requests received
	inflight atomic.Int64
	peak     atomic.Int64
	mu       sync.Mutex
	bodies   []map[string]any
}

func newFake(t *testing.T, f *fake) *fake {
	t.Helper()
	if f.tokens == 0 {
		f.tokens = 4
	}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fake) serve(w http.ResponseWriter, r *http.Request) {
	chat := r.URL.Path == "/v1/chat/completions"
	if r.Method != http.MethodPost || (!chat && r.URL.Path != "/v1/completions") {
		http.NotFound(w, r)
		return
	}
	n := int(f.n.Add(1) - 1)
	in := f.inflight.Add(1)
	defer f.inflight.Add(-1)
	for {
		p := f.peak.Load()
		if in <= p || f.peak.CompareAndSwap(p, in) {
			break
		}
	}
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.bodies = append(f.bodies, body)
	f.mu.Unlock()
	if f.hold > 0 {
		select {
		case <-time.After(f.hold):
		case <-r.Context().Done():
			return
		}
	}
	if f.status != nil {
		if s := f.status(n); s != 0 && s != http.StatusOK {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(s)
			fmt.Fprintf(w, `{"error":{"message":"fake %d","type":"test"}}`, s)
			return
		}
	}
	broken := ""
	if f.broken != nil {
		broken = f.broken(n)
	}
	if broken == "hangup" {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	}
	prompt := 0
	if msgs, ok := body["messages"].([]any); ok {
		for _, m := range msgs {
			prompt += len(strings.Fields(m.(map[string]any)["content"].(string)))
		}
	} else {
		prompt = len(strings.Fields(body["prompt"].(string)))
	}
	usage := fmt.Sprintf(`{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}`, prompt, f.tokens, prompt+f.tokens)
	if stream, _ := body["stream"].(bool); !stream {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"length"}],"usage":%s}`, usage)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	fl := w.(http.Flusher)
	send := func(s string) {
		fmt.Fprintf(w, "data: %s\n\n", s)
		fl.Flush()
	}
	if chat {
		send(`{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}`)
	}
	for i := range f.tokens {
		if i > 0 && f.gap > 0 {
			time.Sleep(f.gap)
		}
		if chat {
			send(`{"choices":[{"index":0,"delta":{"content":"tok"},"finish_reason":null}]}`)
		} else {
			send(`{"choices":[{"index":0,"text":"tok","finish_reason":null}]}`)
		}
	}
	switch broken {
	case "stream_error":
		send(`{"error":{"message":"engine failed","type":"server_error"}}`)
		return
	case "truncate":
		return
	}
	if so, _ := body["stream_options"].(map[string]any); so != nil && so["include_usage"] == true {
		send(`{"choices":[],"usage":` + usage + `}`)
	}
	send("[DONE]")
}

// runBench runs the command against f and returns its exit status, its
// output and, when it wrote one, its JSON.
func runBench(t *testing.T, f *fake, args ...string) (int, string, map[string]any) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out.json")
	args = append([]string{"--url", f.URL, "--json", out, "--server-stats=false"}, args...)
	var stdout, stderr bytes.Buffer
	code, err := run(args, &stdout, &stderr)
	if err != nil {
		t.Logf("bench: %v", err)
	}
	var doc map[string]any
	if b, err := os.ReadFile(out); err == nil {
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatalf("the JSON output does not parse: %v", err)
		}
	}
	return code, stdout.String() + stderr.String(), doc
}

// level returns the i-th level of a JSON result.
func level(t *testing.T, doc map[string]any, i int) map[string]any {
	t.Helper()
	lvs, ok := doc["levels"].([]any)
	if !ok || len(lvs) <= i {
		t.Fatalf("no level %d in %v", i, doc["levels"])
	}
	return lvs[i].(map[string]any)
}

func TestPercentiles(t *testing.T) {
	seq := func(n int) []time.Duration {
		var ds []time.Duration
		for i := n; i >= 1; i-- { // reversed: pcts must sort
			ds = append(ds, time.Duration(i)*time.Millisecond)
		}
		return ds
	}
	for _, tc := range []struct {
		n    int
		want Pcts
	}{
		{100, Pcts{P50: 50, P90: 90, P95: 95, P99: 99, Max: 100}},
		{10, Pcts{P50: 5, P90: 9, P95: 10, P99: 10, Max: 10}},
		// Nearest rank: 15 of 16 is the first with at least 90 % at or
		// below it; rounding the rank would give 14 (87.5 %).
		{16, Pcts{P50: 8, P90: 15, P95: 16, P99: 16, Max: 16}},
		{20, Pcts{P50: 10, P90: 18, P95: 19, P99: 20, Max: 20}},
		{1, Pcts{P50: 1, P90: 1, P95: 1, P99: 1, Max: 1}},
		{0, Pcts{}},
	} {
		ds := seq(tc.n)
		before := slices.Clone(ds)
		if got := pcts(ds); got != tc.want {
			t.Errorf("pcts(1..%d ms) = %+v, want %+v", tc.n, got, tc.want)
		}
		if !slices.Equal(ds, before) {
			t.Errorf("pcts reordered its input")
		}
	}
	if got := addedPcts([]time.Duration{21 * time.Millisecond, 25 * time.Millisecond}, 20*time.Millisecond); got.P50 != 1 || got.Max != 5 {
		t.Errorf("addedPcts = %+v, want p50 1, max 5", got)
	}
}

func TestSchedule(t *testing.T) {
	u := newSchedule(1, 0, 4, false)
	for k := 1; k <= 8; k++ {
		if got, want := u.next(), time.Duration(k)*250*time.Millisecond; got != want {
			t.Fatalf("uniform arrival %d at %v, want %v", k, got, want)
		}
	}
	const n, rate = 20000, 50.0
	gaps := func(seed uint64) []float64 {
		s := newSchedule(seed, 0, rate, true)
		var prev time.Duration
		out := make([]float64, n)
		for i := range out {
			at := s.next()
			out[i] = (at - prev).Seconds()
			prev = at
		}
		return out
	}
	a, b, c := gaps(7), gaps(7), gaps(8)
	if !slices.Equal(a, b) {
		t.Errorf("the same seed gave different Poisson arrivals")
	}
	if slices.Equal(a, c) {
		t.Errorf("different seeds gave the same Poisson arrivals")
	}
	var sum, sq float64
	for _, g := range a {
		sum += g
		sq += g * g
	}
	mean := sum / n
	sd := math.Sqrt(sq/n - mean*mean)
	if math.Abs(mean*rate-1) > 0.03 {
		t.Errorf("mean Poisson gap %.4f s, want %.4f", mean, 1/rate)
	}
	// Exponential gaps have a standard deviation equal to their mean;
	// evenly spaced ones would have none.
	if math.Abs(sd/mean-1) > 0.05 {
		t.Errorf("Poisson gaps: sd/mean %.3f, want about 1", sd/mean)
	}
}

func TestRateModeSendsExpectedCount(t *testing.T) {
	f := newFake(t, &fake{})
	start := time.Now()
	code, out, doc := runBench(t, f, "--rate", "200", "--duration", "300ms", "--arrival", "uniform", "--max-tokens", "4")
	elapsed := time.Since(start)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	// Evenly spaced arrivals at k/200 s for k = 1..60 fall within 300 ms.
	if got := f.n.Load(); got != 60 {
		t.Errorf("server got %d requests, want 60", got)
	}
	if elapsed < 250*time.Millisecond {
		t.Errorf("the run took %v: arrivals were not spread over --duration", elapsed)
	}
	rate := level(t, doc, 0)["rate"].(map[string]any)
	if rate["sent"] != 60.0 || rate["not_sent"] != 0.0 || rate["arrivals"] != 60.0 {
		t.Errorf("rate stats %v, want 60 arrivals, all sent", rate)
	}
	if a := rate["achieved_per_s"].(float64); math.Abs(a/200-1) > 0.15 {
		t.Errorf("achieved %.1f/s, want about 200", a)
	}
	if doc["mode"] != "rate" {
		t.Errorf("mode %v, want rate", doc["mode"])
	}

	// Poisson arrivals with --requests: exactly that many, at two rates.
	f2 := newFake(t, &fake{})
	// Rates a loaded 2-core machine keeps up with under -race (at 800/s
	// the sender's own lag under a parallel test run halved the achieved
	// rate).
	code, out, doc = runBench(t, f2, "--rate", "100,200", "--requests", "30", "--max-tokens", "4")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if got := f2.n.Load(); got != 60 {
		t.Errorf("server got %d requests over two rates of 30, want 60", got)
	}
	for i, want := range []float64{100, 200} {
		r := level(t, doc, i)["rate"].(map[string]any)
		if r["offered_per_s"] != want || r["sent"] != 30.0 || r["arrival"] != "poisson" {
			t.Errorf("point %d: %v, want 30 sent at %v/s, poisson", i, r, want)
		}
		// 30 exponential gaps: the estimate is within a factor of 2 with
		// overwhelming probability, and the seed fixes it anyway.
		if a := r["achieved_per_s"].(float64); a < want/2 || a > want*2 {
			t.Errorf("point %d: achieved %.1f/s, want near %v", i, a, want)
		}
	}
}

func TestInflightCapHolds(t *testing.T) {
	f := newFake(t, &fake{hold: 80 * time.Millisecond})
	code, out, doc := runBench(t, f, "--rate", "1000", "--requests", "100", "--arrival", "uniform", "--max-inflight", "4", "--max-tokens", "2")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if p := f.peak.Load(); p > 4 {
		t.Errorf("the server saw %d requests at once, above --max-inflight 4", p)
	}
	r := level(t, doc, 0)["rate"].(map[string]any)
	sent, notSent := r["sent"].(float64), r["not_sent"].(float64)
	if sent+notSent != 100 || notSent == 0 {
		t.Errorf("sent %v + not sent %v: want 100 arrivals with some refused by the cap", sent, notSent)
	}
	if int64(sent) != f.n.Load() {
		t.Errorf("reported %v sent, the server got %d", sent, f.n.Load())
	}
	if p := r["peak_inflight"].(float64); p < 1 || p > 4 {
		t.Errorf("peak in flight %v, want 1..4", p)
	}
	if !strings.Contains(out, "not sent (in-flight cap 4") {
		t.Errorf("the table does not report the cap:\n%s", out)
	}
}

func TestPromptLength(t *testing.T) {
	for _, n := range []int{1, 16, 128, 1000} {
		wl, err := newWorkload(3, n, 0, "")
		if err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			if got := len(strings.Fields(wl.request(stream(0, 0, i), "").prompt)); got != n {
				t.Errorf("--input-len %d: prompt of %d words", n, got)
			}
		}
	}
	const n, r, samples = 200, 50, 2000
	wl, err := newWorkload(3, n, r, "")
	if err != nil {
		t.Fatal(err)
	}
	lo, hi, sum := math.MaxInt, 0, 0
	for i := range samples {
		k := len(strings.Fields(wl.request(stream(0, 0, i), "").prompt))
		lo, hi, sum = min(lo, k), max(hi, k), sum+k
	}
	if lo < n-r || hi > n+r {
		t.Errorf("lengths in [%d, %d], want within [%d, %d]", lo, hi, n-r, n+r)
	}
	if lo > n-r+5 || hi < n+r-5 {
		t.Errorf("lengths in [%d, %d] do not spread over [%d, %d]", lo, hi, n-r, n+r)
	}
	if mean := float64(sum) / samples; math.Abs(mean/n-1) > 0.02 {
		t.Errorf("mean length %.1f, want about %d", mean, n)
	}

	// Reproducible from the seed and the position, different elsewhere.
	p := func(seed uint64, s uint64) string {
		wl, _ := newWorkload(seed, 64, 8, "")
		return wl.request(s, "").prompt
	}
	if p(1, 5) != p(1, 5) {
		t.Errorf("the same seed and position gave different prompts")
	}
	if p(1, 5) == p(1, 6) || p(1, 5) == p(2, 5) || p(1, stream(0, 0, 1)) == p(1, stream(1, 0, 1)) {
		t.Errorf("different positions, seeds or sweep points gave the same prompt")
	}
}

// TestWordsAreSingleTokens checks the word list against gpt-oss's own
// tokenizer: each word is one token at the start of a text and after a
// space, so a prompt of n words is n tokens and not only n by the
// whitespace estimate.
func TestWordsAreSingleTokens(t *testing.T) {
	tok := tokenizer.Default()
	seen := map[string]bool{}
	for _, w := range words {
		if seen[w] {
			t.Errorf("%q is listed twice", w)
		}
		seen[w] = true
		if n := tok.Count(w); n != 1 {
			t.Errorf("%q is %d tokens", w, n)
		}
		if n := tok.Count(" " + w); n != 1 {
			t.Errorf("%q is %d tokens", " "+w, n)
		}
	}
	wl, _ := newWorkload(1, 500, 0, "")
	if n := tok.Count(wl.request(0, "").prompt); n != 500 {
		t.Errorf("a 500-word prompt is %d tokens", n)
	}
}

func TestChatMix(t *testing.T) {
	wl, err := newWorkload(1, 0, 0, "chat")
	if err != nil {
		t.Fatal(err)
	}
	shortest, longest := math.MaxInt, 0
	total := 0.0
	for _, c := range chatMix {
		roles := ""
		size := 0
		for _, m := range c.Messages {
			roles += m.Role + " "
			size += len(m.Content)
		}
		if roles != "system user assistant user " {
			t.Errorf("%s: roles %q, want system user assistant user", c.Name, roles)
		}
		if c.Weight <= 0 {
			t.Errorf("%s: weight %v", c.Name, c.Weight)
		}
		shortest, longest = min(shortest, size), max(longest, size)
		total += c.Weight
	}
	if shortest > 500 || longest < 2000 {
		t.Errorf("conversations from %d to %d characters: want short exchanges and long documents", shortest, longest)
	}
	// Sampling follows the weights.
	const n = 20000
	count := map[string]int{}
	for i := range n {
		rq := wl.request(stream(0, 0, i), "")
		count[rq.messages[0].Content+rq.messages[1].Content]++
	}
	for _, c := range chatMix {
		got := float64(count[c.Messages[0].Content+c.Messages[1].Content]) / n
		if want := c.Weight / total; math.Abs(got/want-1) > 0.15 {
			t.Errorf("%s sampled %.3f of the time, want %.3f", c.Name, got, want)
		}
	}

	// On the wire: messages to chat, flattened text to completions.
	f := newFake(t, &fake{})
	if code, out, _ := runBench(t, f, "--mix", "chat", "--concurrency", "2", "--requests", "3", "--max-tokens", "4"); code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	f2 := newFake(t, &fake{})
	if code, out, _ := runBench(t, f2, "--mix", "chat", "--endpoint", "completions", "--concurrency", "1", "--requests", "2", "--max-tokens", "4"); code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if msgs, _ := f.bodies[0]["messages"].([]any); len(msgs) != 4 {
		t.Errorf("chat request sent %d messages, want 4", len(msgs))
	}
	if p, _ := f2.bodies[0]["prompt"].(string); !strings.HasPrefix(p, "System: ") || !strings.HasSuffix(p, "Assistant:") {
		t.Errorf("completions prompt %.60q... is not the flattened conversation", p)
	}
}

func TestMixFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mix.jsonl")
	lines := `# a comment, then a blank line

{"prompt": "one two three", "weight": 3}
{"name": "conv", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}], "max_tokens": 7}
`
	if err := os.WriteFile(path, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	wl, err := newWorkload(1, 0, 0, path)
	if err != nil {
		t.Fatal(err)
	}
	prompts, convs := 0, 0
	for i := range 400 {
		rq := wl.request(stream(0, 0, i), "")
		switch {
		case rq.prompt == "one two three" && rq.messages == nil && rq.maxTokens == 0:
			prompts++
		case rq.prompt == "" && len(rq.messages) == 2 && rq.maxTokens == 7:
			convs++
		default:
			t.Fatalf("unexpected request %+v", rq)
		}
	}
	if prompts < 250 || convs < 50 { // 3:1
		t.Errorf("%d prompts and %d conversations, want about 300 and 100", prompts, convs)
	}

	f := newFake(t, &fake{})
	code, out, doc := runBench(t, f, "--mix", path, "--concurrency", "1", "--requests", "20", "--max-tokens", "3")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	for _, b := range f.bodies {
		_, conv := b["messages"].([]any)
		if mt := b["max_tokens"].(float64); (conv && len(b["messages"].([]any)) == 2 && mt != 7) || (!conv && mt != 3) {
			t.Errorf("max_tokens %v for %v", mt, b)
		}
	}
	if m := level(t, doc, 0)["prompt_tokens_mean"].(float64); m < 3 || m > 4 {
		t.Errorf("mean prompt tokens %v, want between 3 (prompt) and 4 (conversation)", m)
	}

	for _, bad := range []string{
		`{"prompt": ""}`,
		`{"prompt": "a", "messages": [{"role": "user", "content": "b"}]}`,
		`{"messages": [{"content": "no role"}]}`,
		`{"prompt": "a", "wieght": 2}`,
		`not json`,
	} {
		p := filepath.Join(dir, "bad.jsonl")
		os.WriteFile(p, []byte("{\"prompt\": \"fine\"}\n"+bad+"\n"), 0o644)
		if _, err := newWorkload(1, 0, 0, p); err == nil || !strings.Contains(err.Error(), "line 2") {
			t.Errorf("%s: error %v, want one about line 2", bad, err)
		}
	}
	if _, err := newWorkload(1, 0, 0, filepath.Join(dir, "missing.jsonl")); err == nil {
		t.Errorf("a missing mix file is no error")
	}
}

func TestJSONOutputShape(t *testing.T) {
	f := newFake(t, &fake{tokens: 5})
	code, out, doc := runBench(t, f, "--concurrency", "1,2", "--requests", "2", "--max-tokens", "5", "--input-len", "32", "--api-key", "sk-secret")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if _, err := time.Parse(time.RFC3339, doc["date"].(string)); err != nil {
		t.Errorf("date: %v", err)
	}
	for _, k := range []string{"mode", "url", "endpoint", "model", "max_tokens", "requests_per_client", "params", "machine", "levels"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("no %q in the JSON", k)
		}
	}
	m := doc["machine"].(map[string]any)
	if m["hostname"] == "" || m["cpus"].(float64) < 1 || !strings.HasPrefix(m["go_version"].(string), "go") {
		t.Errorf("machine %v", m)
	}
	params := doc["params"].(map[string]any)
	if params["concurrency"] != "1,2" || params["input-len"] != "32" || params["seed"] != "1" {
		t.Errorf("params %v do not hold the flags", params)
	}
	if b, _ := json.Marshal(doc); bytes.Contains(b, []byte("sk-secret")) {
		t.Errorf("the API key is in the results file")
	}
	for i, conc := range []float64{1, 2} {
		lv := level(t, doc, i)
		if lv["concurrency"] != conc || lv["requests"] != 2*conc || lv["errors"] != 0.0 {
			t.Errorf("level %d: %v", i, lv)
		}
		for _, k := range []string{"ttft_ms", "itl_ms", "e2e_ms"} {
			p, ok := lv[k].(map[string]any)
			if !ok {
				t.Fatalf("level %d: no %s", i, k)
			}
			for _, q := range []string{"p50", "p90", "p95", "p99", "max"} {
				if _, ok := p[q].(float64); !ok {
					t.Errorf("level %d: no %s.%s", i, k, q)
				}
			}
		}
		for _, k := range []string{"requests_per_s", "output_tokens_per_s", "error_rate", "duration_s"} {
			if _, ok := lv[k].(float64); !ok {
				t.Errorf("level %d: no %s", i, k)
			}
		}
		if lv["prompt_tokens_mean"] != 32.0 || lv["completion_tokens_mean"] != 5.0 || lv["output_tokens"] != 10*conc {
			t.Errorf("level %d: prompt %v, completion %v, output %v tokens; want 32, 5, %v",
				i, lv["prompt_tokens_mean"], lv["completion_tokens_mean"], lv["output_tokens"], 10*conc)
		}
		if _, ok := lv["rate"]; ok {
			t.Errorf("level %d: a rate block in concurrency mode", i)
		}
	}
	if !strings.Contains(out, "== conc 2: 4 requests, 0 errors") || !strings.Contains(out, "p90") {
		t.Errorf("the table is missing:\n%s", out)
	}
}

func TestErrorAccounting(t *testing.T) {
	codes := []int{200, 429, 503, 500}
	f := newFake(t, &fake{status: func(n int) int { return codes[n%4] }})
	code, out, doc := runBench(t, f, "--concurrency", "1", "--requests", "8", "--max-tokens", "2")
	if code != 1 {
		t.Errorf("exit %d with failed requests, want 1", code)
	}
	lv := level(t, doc, 0)
	if lv["requests"] != 8.0 || lv["errors"] != 6.0 || lv["error_rate"] != 0.75 {
		t.Errorf("requests %v, errors %v, rate %v; want 8, 6, 0.75", lv["requests"], lv["errors"], lv["error_rate"])
	}
	want := map[string]any{"429": 2.0, "503": 2.0, "500": 2.0}
	if got := lv["errors_by_status"].(map[string]any); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("errors by status %v, want %v", got, want)
	}
	if !strings.Contains(out, "429 ×2, 500 ×2, 503 ×2") || !strings.Contains(out, "success 2/8") {
		t.Errorf("the table does not show the errors:\n%s", out)
	}
	// Only successes count towards throughput and latency.
	if e2e := lv["e2e_ms"].(map[string]any); lv["output_tokens"] != 8.0 || e2e["max"].(float64) <= 0 {
		t.Errorf("output tokens %v (want 8: 4 from each of 2 successes), e2e %v", lv["output_tokens"], e2e)
	}

	// The same accounting in rate mode.
	f2 := newFake(t, &fake{status: func(n int) int { return codes[n%4] }})
	_, _, doc = runBench(t, f2, "--rate", "500", "--requests", "12", "--arrival", "uniform", "--max-tokens", "2")
	if got := level(t, doc, 0)["errors_by_status"].(map[string]any); fmt.Sprint(got) != fmt.Sprint(map[string]any{"429": 3.0, "503": 3.0, "500": 3.0}) {
		t.Errorf("rate mode: errors by status %v", got)
	}

	// Failures without a status.
	f3 := newFake(t, &fake{broken: func(n int) string { return []string{"", "stream_error", "truncate", "hangup"}[n%4] }})
	_, _, doc = runBench(t, f3, "--concurrency", "1", "--requests", "4", "--max-tokens", "2")
	want = map[string]any{"stream_error": 1.0, "incomplete_stream": 1.0, "transport": 1.0}
	if got := level(t, doc, 0)["errors_by_status"].(map[string]any); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("errors by kind %v, want %v", got, want)
	}
	f4 := newFake(t, &fake{hold: time.Second})
	_, _, doc = runBench(t, f4, "--concurrency", "1", "--requests", "1", "--timeout", "50ms")
	if got := level(t, doc, 0)["errors_by_status"].(map[string]any); got["timeout"] != 1.0 {
		t.Errorf("a request past --timeout counted as %v, want timeout", got)
	}
}

func TestStreamingTimings(t *testing.T) {
	f := newFake(t, &fake{tokens: 5, gap: 15 * time.Millisecond})
	code, out, doc := runBench(t, f, "--endpoint", "completions", "--concurrency", "1", "--requests", "2", "--max-tokens", "5")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	lv := level(t, doc, 0)
	itl := lv["itl_ms"].(map[string]any)
	if p := itl["p50"].(float64); p < 12 || p > 60 {
		t.Errorf("ITL p50 %.1f ms, want about 15", p)
	}
	if lv["itl_samples"] != 8.0 {
		t.Errorf("%v gaps, want 8 (4 per request of 5 tokens)", lv["itl_samples"])
	}
	ttft, e2e := lv["ttft_ms"].(map[string]any)["p50"].(float64), lv["e2e_ms"].(map[string]any)["p50"].(float64)
	if ttft <= 0 || e2e < ttft+4*12 {
		t.Errorf("TTFT %.1f ms, E2E %.1f ms: want E2E at least 4 gaps after the first token", ttft, e2e)
	}
	if so, _ := f.bodies[0]["stream_options"].(map[string]any); so["include_usage"] != true {
		t.Errorf("streamed request without stream_options.include_usage: %v", f.bodies[0])
	}
	if lv["usage_reported"] != 2.0 {
		t.Errorf("usage reported by %v requests, want 2", lv["usage_reported"])
	}

	// Without usage, output tokens are the text events.
	f2 := newFake(t, &fake{tokens: 3})
	_, _, doc = runBench(t, f2, "--concurrency", "1", "--requests", "2", "--usage=false")
	if lv := level(t, doc, 0); lv["output_tokens"] != 6.0 || lv["usage_reported"] != 0.0 {
		t.Errorf("without usage: %v output tokens, %v usage; want 6 and 0", lv["output_tokens"], lv["usage_reported"])
	}
	if _, ok := f2.bodies[0]["stream_options"]; ok {
		t.Errorf("--usage=false still sent stream_options")
	}
}

// TestOriginalPlanCheck is the original test plan's benchmark.sh: 10
// sequential plain requests, success count and QPS.
func TestOriginalPlanCheck(t *testing.T) {
	f := newFake(t, &fake{})
	code, out, doc := runBench(t, f, "--concurrency", "1", "--requests", "10", "--max-tokens", "50", "--stream=false")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if !strings.Contains(out, "success 10/10 in ") || !strings.Contains(out, "QPS ") {
		t.Errorf("no success count and QPS:\n%s", out)
	}
	if f.n.Load() != 10 || f.peak.Load() != 1 {
		t.Errorf("%d requests, %d at once; want 10 sequential", f.n.Load(), f.peak.Load())
	}
	for _, b := range f.bodies {
		if b["stream"] != false || b["max_tokens"] != 50.0 {
			t.Fatalf("request %v, want stream false and max_tokens 50", b)
		}
	}
	if qps := level(t, doc, 0)["requests_per_s"].(float64); qps <= 0 {
		t.Errorf("QPS %v", qps)
	}
}

// TestBenchStreamFlags runs the flags scripts/bench-stream.sh passes, so the
// script keeps working.
func TestBenchStreamFlags(t *testing.T) {
	f := newFake(t, &fake{tokens: 3})
	out := filepath.Join(t.TempDir(), "x-completions.json")
	var stdout bytes.Buffer
	code, err := run([]string{"--url", f.URL, "--endpoint", "completions", "--concurrency", "1,2", "--requests", "1",
		"--max-tokens", "3", "--expected-itl", "20ms", "--out", out}, &stdout, io.Discard)
	if code != 0 || err != nil {
		t.Fatalf("exit %d, %v:\n%s", code, err, stdout.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	json.Unmarshal(b, &doc)
	if doc["expected_itl_ms"] != 20.0 || level(t, doc, 1)["added_itl_ms"] == nil {
		t.Errorf("expected ITL %v, added ITL %v", doc["expected_itl_ms"], level(t, doc, 1)["added_itl_ms"])
	}
}

func TestConcurrencyDuration(t *testing.T) {
	f := newFake(t, &fake{hold: 20 * time.Millisecond})
	start := time.Now()
	code, out, doc := runBench(t, f, "--concurrency", "2", "--duration", "150ms", "--max-tokens", "2")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("a 150 ms run took %v", el)
	}
	// About 2 clients × 150 ms / 20 ms.
	if n := level(t, doc, 0)["requests"].(float64); n < 6 || n > 20 {
		t.Errorf("%v requests, want about 15", n)
	}
	if _, ok := doc["requests_per_client"]; ok {
		t.Errorf("requests_per_client written for a run bounded by --duration")
	}
}

func TestFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--rate", "1"},
		{"--rate", "1", "--concurrency", "2", "--duration", "1s"},
		{"--rate", "0", "--duration", "1s"},
		{"--rate", "1,x", "--duration", "1s"},
		{"--rate", "1", "--duration", "1s", "--arrival", "burst"},
		{"--rate", "1", "--duration", "1s", "--max-inflight", "0"},
		{"--input-len", "10", "--mix", "chat"},
		{"--input-len-range", "5"},
		{"--input-len", "10", "--input-len-range", "10"},
		{"--concurrency", "0"},
		{"--endpoint", "responses"},
		{"--mix", "/nonexistent.jsonl"},
		{"stray"},
	} {
		code, err := run(append([]string{"--url", "http://127.0.0.1:1"}, args...), io.Discard, io.Discard)
		if code != 2 || err == nil {
			t.Errorf("%q: exit %d, %v; want 2 and an error", args, code, err)
		}
	}
}
