package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gptoss/server/coordinator/api"
	"github.com/gptoss/server/coordinator/profiles"
	"github.com/gptoss/server/coordinator/sched"
	"github.com/gptoss/server/coordinator/stats"
	"github.com/gptoss/server/coordinator/tokenizer"
	"github.com/gptoss/server/shared/model"
	"github.com/gptoss/server/shared/pipeline"
	"github.com/gptoss/server/shared/step"
	"github.com/gptoss/server/shared/testkit"
	"github.com/gptoss/server/worker/engine"
	"github.com/gptoss/server/worker/local"
)

func newModel(t testing.TB, cfg model.Config, w *engine.Weights, blocks, sliding int) *engine.Model {
	t.Helper()
	cache, err := engine.NewKVCache(&cfg, blocks, sliding, 8)
	if err != nil {
		t.Fatal(err)
	}
	m, err := engine.NewModel(w, cache)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// greedy generates n tokens directly on the engine, one sequence alone.
func greedy(t *testing.T, m *engine.Model, prompt []int, n int) []int {
	alloc := engine.NewAllocator(m.Cache.Blocks)
	table, _ := alloc.Grow(nil, len(prompt)+n, m.Cache.BlockSize)
	out, err := m.Step([]engine.Seq{{Tokens: prompt, Blocks: table}})
	if err != nil {
		t.Fatal(err)
	}
	var toks []int
	pos := len(prompt)
	for range n {
		best := 0
		for i, v := range out[0][0] {
			if v > out[0][0][best] {
				best = i
			}
		}
		toks = append(toks, best)
		if out, err = m.Step([]engine.Seq{{Tokens: []int{best}, Pos: pos, Blocks: table}}); err != nil {
			t.Fatal(err)
		}
		pos++
	}
	return toks
}

// generateAll submits every prompt at once and returns each sequence's
// tokens, checking they all end by length.
func generateAll(t *testing.T, s *sched.Scheduler, p *profiles.Profile, prompts [][]int, maxTokens int) [][]int {
	t.Helper()
	got := make([][]int, len(prompts))
	var wg sync.WaitGroup
	for i := range prompts {
		st, err := s.Submit(context.Background(), &sched.Request{Profile: p, Prompt: prompts[i], MaxTokens: maxTokens})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				toks, fin, err := st.Recv(context.Background(), nil)
				if err != nil {
					t.Error(err)
					return
				}
				for _, tk := range toks {
					got[i] = append(got[i], tk.ID)
				}
				if fin != nil {
					if fin.Reason != sched.FinishLength {
						t.Errorf("sequence %d: %+v", i, fin)
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	return got
}

// matchAlone checks every sequence's tokens against the engine generating
// it alone.
func matchAlone(t *testing.T, ref *engine.Model, prompts, got [][]int, n int) {
	t.Helper()
	for i := range prompts {
		want := greedy(t, ref, prompts[i], n)
		if len(got[i]) != len(want) {
			t.Fatalf("sequence %d: %d tokens, want %d", i, len(got[i]), len(want))
		}
		for j := range want {
			if got[i][j] != want[j] {
				t.Fatalf("sequence %d token %d: %d, alone %d", i, j, got[i][j], want[j])
			}
		}
	}
}

// waitAllFree waits until every KV block is back in the scheduler's pools
// and the executor holds no sequence.
func waitAllFree(t *testing.T, s *sched.Scheduler, exec *local.Executor) {
	t.Helper()
	if !testkit.Within(2*time.Second, func() bool {
		u := s.KV()
		return u != nil && u.UsedBlocks == 0 && u.SlidingUsed == 0 && exec.Sequences() == 0
	}) {
		t.Fatalf("leaked: %+v, executor holds %d sequences", s.KV(), exec.Sequences())
	}
}

// modes runs f with the scheduler stepping the executor one step at a
// time, then pipelined (shared/pipeline: step k+1 submitted while step k
// runs, its continuing sequences following their draws on the engine).
func modes(t *testing.T, f func(t *testing.T, wrap func(*local.Executor) step.Executor)) {
	t.Run("sync", func(t *testing.T) {
		f(t, func(e *local.Executor) step.Executor { return e })
	})
	t.Run("pipelined", func(t *testing.T) {
		f(t, func(e *local.Executor) step.Executor {
			p := pipeline.New(e)
			t.Cleanup(p.Close)
			return p
		})
	})
}

func testProfiles(t testing.TB) profiles.Set {
	s, err := profiles.Default()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Sequences batched by the real scheduler (with chunked prefill) generate
// exactly what each generates alone on the engine, and leave no blocks
// behind.
func TestSchedulerOverEngine(t *testing.T) {
	modes(t, func(t *testing.T, wrap func(*local.Executor) step.Executor) {
		cfg := model.Presets["tiny"].Architecture()
		cfg.Vocab, cfg.SlidingWindow = 400, 8
		w := engine.DummyWeights(cfg, 11, 0)
		ref := newModel(t, cfg, w, 64, 0)
		exec := local.New(newModel(t, cfg, w, 256, 64), &cfg)
		profs := testProfiles(t)
		p := profs["balanced"]
		s := sched.New(wrap(exec), profs, sched.Options{MaxStepTokens: 24})
		defer s.Close()
		const n = 6
		prompts := make([][]int, n)
		for i := range prompts {
			for j := range 5 + 7*i {
				prompts[i] = append(prompts[i], (i*31+j*17)%cfg.Vocab)
			}
		}
		got := generateAll(t, s, p, prompts, 20)
		matchAlone(t, ref, prompts, got, 20)
		waitAllFree(t, s, exec)
	})
}

// The whole API over a real (tiny, random-weight) model: a streamed chat
// completion is well-formed whatever the model emits.
func TestChatAPIOverEngine(t *testing.T) {
	cfg := model.Presets["tiny"].Architecture()
	w := engine.DummyWeights(cfg, 5, 0)
	exec := local.New(newModel(t, cfg, w, 256, 64), &cfg)
	profs := testProfiles(t)
	reg := prometheus.NewRegistry()
	rec, err := stats.New(profs.Names(), reg)
	if err != nil {
		t.Fatal(err)
	}
	s := sched.New(exec, profs, sched.Options{})
	defer s.Close()
	srv, err := api.New(api.Options{Model: model.Presets["tiny"], Mode: "real", Profiles: profs, DefaultProfile: "balanced",
		EnableStreaming: true, Tokenizer: tokenizer.Default(), Engine: s, Stats: rec, Gatherer: reg})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	// The cache holds 256 × 8 tokens per sequence: a request that could
	// never fit is refused at admission rather than preempted forever.
	big, err := http.Post(hs.URL+"/v1/chat/completions", "application/json", strings.NewReader(
		`{"model":"gpt-oss-tiny","messages":[{"role":"user","content":"Hello"}],"max_tokens":4000}`))
	if err != nil {
		t.Fatal(err)
	}
	big.Body.Close()
	if big.StatusCode != 400 {
		t.Fatalf("a request larger than the KV cache: %d", big.StatusCode)
	}
	resp, err := http.Post(hs.URL+"/v1/chat/completions", "application/json", strings.NewReader(
		`{"model":"gpt-oss-tiny","messages":[{"role":"user","content":"Hello"}],"max_tokens":24,"stream":true,"stream_options":{"include_usage":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	var last string
	var usage map[string]any
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("bad SSE line %q", line)
		}
		last = data
		if data == "[DONE]" {
			break
		}
		var ch map[string]any
		if err := json.Unmarshal([]byte(data), &ch); err != nil {
			t.Fatalf("chunk %q: %v", data, err)
		}
		if ch["error"] != nil {
			t.Fatalf("error event %s", data)
		}
		if strings.Contains(data, `<|`) {
			t.Fatalf("markup in a chunk: %s", data)
		}
		if u, ok := ch["usage"].(map[string]any); ok {
			usage = u
		}
	}
	if last != "[DONE]" || usage == nil || usage["completion_tokens"].(float64) < 1 {
		t.Fatalf("last %q usage %v", last, usage)
	}
}

// With a KV cache too small for every sequence at once, the scheduler
// preempts and recomputes, and every request still completes with the
// tokens it generates alone; no block is left allocated.
func TestKVExhaustionPreempts(t *testing.T) {
	modes(t, func(t *testing.T, wrap func(*local.Executor) step.Executor) {
		cfg := model.Presets["tiny"].Architecture()
		cfg.Vocab, cfg.SlidingWindow = 400, 8
		w := engine.DummyWeights(cfg, 11, 0)
		ref := newModel(t, cfg, w, 64, 0)
		// 12 blocks of 8 tokens: each sequence needs 4 (≤ 32 tokens), so at
		// most three run at once out of eight.
		exec := local.New(newModel(t, cfg, w, 12, 12), &cfg)
		profs := testProfiles(t)
		p := profs["balanced"]
		preemptions := 0
		var mu sync.Mutex
		s := sched.New(wrap(exec), profs, sched.Options{OnPreempt: func(string) { mu.Lock(); preemptions++; mu.Unlock() }})
		defer s.Close()
		const n = 8
		prompts := make([][]int, n)
		for i := range prompts {
			for j := range 10 {
				prompts[i] = append(prompts[i], (i*37+j*11)%cfg.Vocab)
			}
		}
		got := generateAll(t, s, p, prompts, 20)
		mu.Lock()
		if preemptions == 0 {
			t.Fatal("the cache never ran out: the test does not exercise preemption")
		}
		mu.Unlock()
		matchAlone(t, ref, prompts, got, 20)
		waitAllFree(t, s, exec)
		t.Logf("%d preemptions", preemptions)
	})
}

// Sequences sharing a long prompt prefix (a system prompt) map its cached
// blocks, computed once, and still generate exactly what each generates
// alone on the engine: the KV the prefix cache shares is bit-identical to
// what a sequence computes for itself.
func TestPrefixCacheOverEngine(t *testing.T) {
	modes(t, func(t *testing.T, wrap func(*local.Executor) step.Executor) {
		cfg := model.Presets["tiny"].Architecture()
		cfg.Vocab, cfg.SlidingWindow = 400, 8
		w := engine.DummyWeights(cfg, 11, 0)
		ref := newModel(t, cfg, w, 64, 0)
		exec := local.New(newModel(t, cfg, w, 256, 64), &cfg)
		profs := testProfiles(t)
		p := profs["balanced"]
		s := sched.New(wrap(exec), profs, sched.Options{})
		defer s.Close()
		system := make([]int, 37) // four full blocks of 8 and then some
		for j := range system {
			system[j] = (j*13 + 5) % cfg.Vocab
		}
		var prompts [][]int
		for i := range 6 {
			prompts = append(prompts, append(slices.Clone(system), (i*37+3)%cfg.Vocab, (i*11+7)%cfg.Vocab))
		}
		// The first alone fills the cache; then the rest together, twice.
		matchAlone(t, ref, prompts[:1], generateAll(t, s, p, prompts[:1], 12), 12)
		got := generateAll(t, s, p, prompts, 12)
		matchAlone(t, ref, prompts, got, 12)
		matchAlone(t, ref, prompts, generateAll(t, s, p, prompts, 12), 12)
		u := s.KV()
		if u == nil || u.PrefixHits < 4*11 {
			t.Fatalf("prefix cache hits: %+v", u)
		}
		waitAllFree(t, s, exec)
	})
}
