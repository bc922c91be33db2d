package console_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/gptoss/server/coordinator/api"
	"github.com/gptoss/server/coordinator/mock"
	"github.com/gptoss/server/coordinator/profiles"
	"github.com/gptoss/server/coordinator/sched"
	"github.com/gptoss/server/coordinator/stats"
	"github.com/gptoss/server/coordinator/tokenizer"
	"github.com/gptoss/server/shared/model"
	"github.com/gptoss/server/shared/step"
)

// envConfig shapes a test server: the coordinator's HTTP API on the mock
// engine, in process.
type envConfig struct {
	timing   mock.Timing
	minReply int
	keys     []string
	// noConsole leaves the console out (Options.Console false).
	noConsole bool
	// workers simulates a tensor-parallel deployment of this many worker
	// processes in /health (the mock engine has none).
	workers int
	// paged puts the mock behind a paged KV cache (pagedMock), so /health
	// shows the KV cache and the prefix cache.
	paged   bool
	startup api.Startup
	// noStreaming is --enable-streaming=false.
	noStreaming bool
}

type env struct {
	url   string
	exec  *mock.Executor
	stats *stats.Recorder
	// steps and stepTime count the engine's steps, for the simulated
	// workers.
	steps    atomic.Uint64
	stepTime atomic.Int64
	started  time.Time
}

func newEnv(t *testing.T, cfg envConfig) *env {
	t.Helper()
	profs, err := profiles.Default()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.timing == (mock.Timing{}) {
		cfg.timing = mock.Timing{Step: 10 * time.Millisecond}
	}
	preset := model.Presets["20b"]
	tok := tokenizer.Default()
	m := mock.New(tok, preset.ID, cfg.timing)
	m.SetMinReply(cfg.minReply)
	var exec step.Executor = m
	if cfg.paged {
		exec = newPagedMock(m)
	}
	reg := prometheus.NewRegistry()
	rec, err := stats.New(profs.Names(), reg, stats.WithModel(preset.ID, preset.ContextLength))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{exec: m, stats: rec, started: time.Now()}
	onStep := func(seqs, tokens int, took time.Duration) {
		e.steps.Add(1)
		e.stepTime.Add(int64(took))
		rec.ObserveStep(seqs, tokens, took)
	}
	sch := sched.New(exec, profs, sched.Options{OnStep: onStep})
	opts := api.Options{
		Model: preset, Mode: "mock", ModeReason: "test", Profiles: profs, DefaultProfile: "balanced",
		APIKeys: cfg.keys, EnableStreaming: !cfg.noStreaming, SSEWriteTimeout: 5 * time.Second, Version: "test",
		Tokenizer: tok, Engine: sch, Stats: rec, Gatherer: reg, Logger: zaptest.NewLogger(t),
		Console: !cfg.noConsole, Startup: cfg.startup,
	}
	if cfg.workers > 0 {
		n := cfg.workers
		opts.Workers = func() any { return e.simulatedWorkers(n) }
	}
	srv, err := api.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		hs.Close()
		sch.Close()
	})
	e.url = hs.URL
	return e
}

// worker has the JSON shape of /health's workers (cluster.WorkerStatus).
type worker struct {
	ID          string `json:"id"`
	Rank        int    `json:"rank"`
	Device      string `json:"device"`
	MemoryTotal uint64 `json:"memory_total"`
	MemoryUsed  uint64 `json:"memory_used"`
	State       string `json:"state"`
	Error       string `json:"error"`
	Steps       uint64 `json:"steps"`
	PID         int    `json:"pid"`
	Registered  bool   `json:"registered"`
	Lost        bool   `json:"lost"`
	Sequences   int    `json:"sequences"`
	StepTime    int64  `json:"step_time_ns"`
	LastStep    int64  `json:"last_step_ns"`
	Restarts    int    `json:"restarts"`
}

// simulatedWorkers are n ranks on simulated GPUs that follow the mock's
// steps (the mock engine itself runs in process, without workers).
func (e *env) simulatedWorkers(n int) []worker {
	steps, took := e.steps.Load(), e.stepTime.Load()
	var last int64
	if steps > 0 {
		last = took / int64(steps)
	}
	ws := make([]worker, n)
	for r := range ws {
		ws[r] = worker{
			ID: "sim-" + string(rune('0'+r)), Rank: r, Device: "GPU " + string(rune('0'+r)) + " (simulated)",
			MemoryTotal: 80 << 30, MemoryUsed: (61 << 30) + uint64(r)<<29, State: "ready", Registered: true,
			Steps: steps, StepTime: took, LastStep: last, PID: 4242 + r,
		}
	}
	if n > 1 {
		ws[n-1].Restarts = 1
	}
	return ws
}

// pagedMock is the mock engine behind a paged KV cache of its own: it
// reports a KV geometry, so the scheduler owns block tables and the prefix
// cache as it does with the real workers, and it keeps every block's tokens,
// so a sequence that starts after a cached prefix reaches the mock whole.
type pagedMock struct {
	*mock.Executor
	geo    step.KVGeometry
	blocks map[int][]int
	known  map[uint64]bool
}

func newPagedMock(m *mock.Executor) *pagedMock {
	return &pagedMock{Executor: m, geo: step.KVGeometry{BlockSize: 16, Blocks: 2048, SlidingBlocks: 1024, SlidingWindow: 128},
		blocks: map[int][]int{}, known: map[uint64]bool{}}
}

func (p *pagedMock) Capabilities() step.Capabilities {
	return step.Capabilities{KVTokens: p.geo.MaxTokens(), KV: &p.geo}
}

func (p *pagedMock) Step(ctx context.Context, b *step.Batch) error {
	type saved struct {
		i, pos int
		toks   []int
	}
	var restore []saved
	bs := p.geo.BlockSize
	for i := range b.Seqs {
		s := &b.Seqs[i]
		for j, tok := range s.Tokens {
			pos := s.Pos + j
			blk := s.Blocks[pos/bs]
			if p.blocks[blk] == nil {
				p.blocks[blk] = make([]int, bs)
			}
			p.blocks[blk][pos%bs] = tok
		}
		if !p.known[s.ID] && s.Pos > 0 {
			// A cached prefix: the mock needs the whole prompt.
			prefix := make([]int, 0, s.Pos+len(s.Tokens))
			for pos := range s.Pos {
				prefix = append(prefix, p.blocks[s.Blocks[pos/bs]][pos%bs])
			}
			restore = append(restore, saved{i, s.Pos, s.Tokens})
			s.Tokens, s.Pos = append(prefix, s.Tokens...), 0
		}
		p.known[s.ID] = true
	}
	err := p.Executor.Step(ctx, b)
	for _, r := range restore {
		b.Seqs[r.i].Pos, b.Seqs[r.i].Tokens = r.pos, r.toks
	}
	return err
}

func (p *pagedMock) Release(ids []uint64) {
	for _, id := range ids {
		delete(p.known, id)
	}
	p.Executor.Release(ids)
}

// fakeStartup is a start-up caught downloading: two files on their way.
type fakeStartup struct {
	mu    sync.Mutex
	phase string
}

func (f *fakeStartup) setPhase(p string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.phase = p
}

func (f *fakeStartup) Phase() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.phase
}

func (f *fakeStartup) Pending() string {
	if f.Phase() == "ready" {
		return ""
	}
	return "The model is downloading (40% of 12.8 GiB); requests are served once it is loaded."
}

func (f *fakeStartup) RetryAfter() int { return 30 }

func (f *fakeStartup) Status() any {
	gib := func(f float64) int64 { return int64(f * (1 << 30)) }
	return map[string]any{
		"phase": f.Phase(), "source": "hub", "reason": "openai/gpt-oss-20b is not in the cache",
		"repo": "openai/gpt-oss-20b", "revision": "main", "elapsed_seconds": 42.5,
		"download": map[string]any{
			"bytes_done": gib(5.12), "bytes_total": gib(12.8), "bytes_per_second": 180 << 20, "eta_seconds": 43.7,
			"files": []map[string]any{
				{"name": "model-00000-of-00002.safetensors", "bytes_done": gib(4.6), "bytes_total": gib(4.6)},
				{"name": "model-00001-of-00002.safetensors", "bytes_done": gib(0.52), "bytes_total": gib(8.2)},
			},
		},
	}
}

// get fetches path from the test server.
func (e *env) get(t *testing.T, path string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.url+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// statsTotal reads /stats' totals.
func (e *env) statsTotal(t *testing.T) map[string]any {
	t.Helper()
	_, b := e.get(t, "/stats")
	var s struct {
		Stats struct {
			Total map[string]any `json:"total"`
		} `json:"stats"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("/stats: %v: %s", err, b)
	}
	return s.Stats.Total
}

// stream starts a streamed chat request that runs until it ends or ctx
// does; done is closed when it has.
func (e *env) stream(ctx context.Context, maxTokens int) (done chan struct{}) {
	done = make(chan struct{})
	go func() {
		defer close(done)
		body := `{"model":"gpt-oss-20b","stream":true,"max_tokens":` + itoa(maxTokens) +
			`,"messages":[{"role":"user","content":"Tell me about tensor parallelism on a multi-GPU box"}]}`
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url+"/v1/chat/completions", strings.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
	}()
	return done
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
