package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/gptoss/server/shared/model"
	"github.com/gptoss/server/shared/natsd"
	"github.com/gptoss/server/shared/testkit"
	"github.com/gptoss/server/shared/wire"
	"github.com/gptoss/server/worker/engine"
	"github.com/gptoss/server/worker/safetensors"
)

const testToken = "worker-test-token"

var (
	workerBin string // the worker binary, built once
	ckptDir   string // the tiny checkpoint (vocab 512, 2 layers)
	natsURL   string
)

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "gptoss-worker-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	workerBin = filepath.Join(dir, "worker")
	build := exec.Command("go", "build", "-o", workerBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the worker:", err)
		return 1
	}
	cfg := model.Presets["tiny"].Architecture()
	cfg.Vocab, cfg.Layers = 512, 2
	ckptDir = filepath.Join(dir, "tiny-512")
	if err := engine.WriteCheckpoint(ckptDir, engine.DummyWeights(cfg, 42, 0)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// The bus as the coordinator runs it (shared/natsd), with a known
	// token for the workers' environment.
	srv, err := natsd.Start(natsd.Options{Token: testToken})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer srv.Shutdown()
	natsURL = srv.ClientURL()
	return m.Run()
}

// syncBuffer is a bytes.Buffer safe for a writer and readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a running worker process.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr syncBuffer
	done           chan struct{}
	err            error // from Wait, once done is closed
}

// startWorker runs the worker binary in deployment with the NATS URL and
// token from the environment (as a launcher would pass them).
func startWorker(t *testing.T, deployment string, args ...string) *proc {
	t.Helper()
	p := &proc{done: make(chan struct{})}
	p.cmd = exec.Command(workerBin, append([]string{"--heartbeat", "100ms", "--log-format", "json", "--log-level", "debug"}, args...)...)
	p.cmd.Env = append(os.Environ(), "GPTOSS_WORKER_NATS_URL="+natsURL, "GPTOSS_NATS_TOKEN="+testToken,
		"GPTOSS_WORKER_DEPLOYMENT="+deployment, fmt.Sprintf("GPTOSS_WORKER_PARENT_PID=%d", os.Getpid()))
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("worker %s stderr:\n%s", deployment, p.stderr.String())
		}
	})
	return p
}

// waitExit waits for the process to end within d and returns its status.
func (p *proc) waitExit(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		t.Fatalf("worker still running after %s", d)
	}
	if out := p.stdout.String(); out != "" {
		t.Errorf("worker wrote to stdout: %q", out)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatal(p.err)
	}
	return 0
}

// coord plays the coordinator of one deployment.
type coord struct {
	nc   *nats.Conn
	subj wire.Subjects
	regs chan *wire.Register

	// The block tables, as the coordinator's scheduler keeps them: the
	// loaded geometry, free lists and each sequence's tables.
	kv *kvTables

	mu       sync.Mutex
	last     map[string]*wire.Heartbeat // by worker id
	beats    map[string]int
	stopOnce sync.Once
	stop     chan struct{}
	stopped  chan struct{}
}

// newCoord connects as the coordinator of deployment; beat makes it
// publish its heartbeat every 100ms until stopBeats.
func newCoord(t *testing.T, deployment string, beat bool) *coord {
	t.Helper()
	nc, err := nats.Connect(natsURL, nats.Token(testToken))
	if err != nil {
		t.Fatal(err)
	}
	subj, err := wire.NewSubjects(deployment)
	if err != nil {
		t.Fatal(err)
	}
	c := &coord{nc: nc, subj: subj, regs: make(chan *wire.Register, 16), last: map[string]*wire.Heartbeat{},
		beats: map[string]int{}, stop: make(chan struct{}), stopped: make(chan struct{})}
	if _, err := nc.Subscribe(subj.Register(), func(m *nats.Msg) {
		var r wire.Register
		if err := wire.Unmarshal(m.Data, &r); err == nil {
			c.regs <- &r
		}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe(subj.Heartbeat(), func(m *nats.Msg) {
		var h wire.Heartbeat
		if err := wire.Unmarshal(m.Data, &h); err == nil {
			c.mu.Lock()
			c.last[h.WorkerId] = &h
			c.beats[h.WorkerId]++
			c.mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if beat {
		go func() {
			defer close(c.stopped)
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				c.publish(t, subj.CoordinatorHeartbeat(), &wire.Heartbeat{WorkerId: "coordinator", Rank: -1, State: "ready",
					UnixNanos: time.Now().UnixNano()})
				select {
				case <-c.stop:
					return
				case <-tick.C:
				}
			}
		}()
	} else {
		close(c.stopped)
	}
	t.Cleanup(func() {
		c.stopBeats()
		nc.Close()
	})
	return c
}

func (c *coord) stopBeats() {
	c.stopOnce.Do(func() { close(c.stop) })
	<-c.stopped
}

func (c *coord) publish(t *testing.T, subject string, m proto.Message) {
	b, err := wire.Marshal(m)
	if err != nil {
		t.Error(err)
		return
	}
	if err := c.nc.Publish(subject, b); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		t.Error(err)
	}
}

func (c *coord) waitRegister(t *testing.T) *wire.Register {
	t.Helper()
	select {
	case r := <-c.regs:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no Register from the worker")
		return nil
	}
}

// waitHeartbeat waits until the worker's latest heartbeat satisfies ok.
func (c *coord) waitHeartbeat(t *testing.T, id string, what string, ok func(h *wire.Heartbeat, n int) bool) *wire.Heartbeat {
	t.Helper()
	var h *wire.Heartbeat
	if !testkit.Within(5*time.Second, func() bool {
		c.mu.Lock()
		var n int
		h, n = c.last[id], c.beats[id]
		c.mu.Unlock()
		return h != nil && ok(h, n)
	}) {
		t.Fatalf("worker %s: no heartbeat with %s (last %v)", id, what, h)
	}
	return h
}

func (c *coord) waitState(t *testing.T, id, state string) *wire.Heartbeat {
	t.Helper()
	return c.waitHeartbeat(t, id, "state "+state, func(h *wire.Heartbeat, _ int) bool { return h.State == state })
}

func (c *coord) beatCount(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.beats[id]
}

func (c *coord) request(t *testing.T, subject string, data []byte, out proto.Message) {
	t.Helper()
	m, err := c.nc.Request(subject, data, 10*time.Second)
	if err != nil {
		t.Fatalf("request %s: %v", subject, err)
	}
	if err := wire.Unmarshal(m.Data, out); err != nil {
		t.Fatal(err)
	}
}

func (c *coord) load(t *testing.T, rank int, l *wire.Load) *wire.LoadResult {
	t.Helper()
	b, err := wire.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	var r wire.LoadResult
	c.request(t, c.subj.Load(rank), b, &r)
	if r.Error == "" && r.BlockSize > 0 {
		c.kv = newKVTables(&r)
	}
	return &r
}

// kvTables hands out blocks like the coordinator's scheduler: the steps of
// these tests carry tables for every sequence that has none.
type kvTables struct {
	bs            int
	free, sfree   []int32
	full, sliding map[uint64][]int32
}

func newKVTables(r *wire.LoadResult) *kvTables {
	k := &kvTables{bs: int(r.BlockSize), full: map[uint64][]int32{}, sliding: map[uint64][]int32{}}
	for b := r.KvBlocks - 1; b >= 0; b-- {
		k.free = append(k.free, b)
	}
	for b := r.SlidingBlocks - 1; b >= 0; b-- {
		k.sfree = append(k.sfree, b)
	}
	return k
}

// fill releases what the step releases and gives every sequence without
// tables ones covering its positions (no trimming: the pools are ample).
func (k *kvTables) fill(s *wire.Step) {
	for _, id := range s.Release {
		k.free = append(k.free, k.full[id]...)
		k.sfree = append(k.sfree, k.sliding[id]...)
		delete(k.full, id)
		delete(k.sliding, id)
	}
	for _, q := range s.Seqs {
		if q == nil || q.Blocks != nil {
			continue
		}
		need := (int(q.Pos) + len(q.Tokens) + k.bs - 1) / k.bs
		for len(k.full[q.Id]) < need && len(k.free) > 0 {
			k.full[q.Id] = append(k.full[q.Id], k.free[len(k.free)-1])
			k.free = k.free[:len(k.free)-1]
		}
		for len(k.sliding[q.Id]) < need && len(k.sfree) > 0 {
			k.sliding[q.Id] = append(k.sliding[q.Id], k.sfree[len(k.sfree)-1])
			k.sfree = k.sfree[:len(k.sfree)-1]
		}
		q.Blocks, q.SlidingBlocks = k.full[q.Id], k.sliding[q.Id]
	}
}

func (c *coord) step(t *testing.T, s *wire.Step) *wire.StepResult {
	t.Helper()
	if c.kv != nil {
		c.kv.fill(s)
	}
	b, err := wire.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var r wire.StepResult
	c.request(t, c.subj.Step(), b, &r)
	if r.StepId != s.StepId || r.Rank != 0 {
		t.Fatalf("step %d answered as step %d by rank %d", s.StepId, r.StepId, r.Rank)
	}
	return &r
}

// mustStep runs a step that must succeed and returns its tokens by sequence.
func (c *coord) mustStep(t *testing.T, s *wire.Step) map[uint64]*wire.SampledToken {
	t.Helper()
	r := c.step(t, s)
	if r.Error != "" {
		t.Fatalf("step %d: %s", s.StepId, r.Error)
	}
	out := map[uint64]*wire.SampledToken{}
	for _, tk := range r.Tokens {
		out[tk.SeqId] = tk
	}
	return out
}

func (c *coord) control(t *testing.T, op string) {
	t.Helper()
	c.publish(t, c.subj.Control(), &wire.Control{Op: op})
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// greedy generates n tokens directly on an in-process engine over the same
// checkpoint, one sequence alone (as worker/local's tests do).
func greedy(t *testing.T, prompt []int, n int) []int {
	t.Helper()
	cfg, err := model.LoadConfig(ckptDir)
	if err != nil {
		t.Fatal(err)
	}
	set, err := safetensors.OpenDir(ckptDir)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	w, err := engine.LoadWeights(cfg, set)
	if err != nil {
		t.Fatal(err)
	}
	cache, err := engine.NewKVCache(&cfg, 64, 0, 8)
	if err != nil {
		t.Fatal(err)
	}
	m, err := engine.NewModel(w, cache)
	if err != nil {
		t.Fatal(err)
	}
	table, err := engine.NewAllocator(cache.Blocks).Grow(nil, len(prompt)+n, cache.BlockSize)
	if err != nil {
		t.Fatal(err)
	}
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

func wantError(t *testing.T, what, got, want string) {
	t.Helper()
	if got == "" || !strings.Contains(got, want) {
		t.Fatalf("%s: error %q, want one containing %q", what, got, want)
	}
}

// The whole life of a worker: register, heartbeats, errors before and
// during loading, greedy generation equal to the engine's, release, drain
// and shutdown.
func TestWorkerServes(t *testing.T) {
	t.Parallel()
	const id = "w-serve"
	c := newCoord(t, "serve", true)
	p := startWorker(t, "serve", "--worker-id", id)

	reg := c.waitRegister(t)
	if reg.WorkerId != id || reg.Rank != 0 || reg.WorldSize != 1 || reg.Device != "cpu" ||
		int(reg.Pid) != p.cmd.Process.Pid || reg.MemoryTotal == 0 || reg.Version == "" {
		t.Fatalf("register %v", reg)
	}
	c.waitState(t, id, "starting")

	// Errors before any model: a step, a malformed step.
	r := c.step(t, &wire.Step{StepId: 1, Seqs: []*wire.SeqStep{{Id: 1, Tokens: []int32{1}, Sample: true}}})
	wantError(t, "step before load", r.Error, "no model loaded")
	var bad wire.StepResult
	c.request(t, c.subj.Step(), []byte{0xff, 0xff, 0xff}, &bad)
	wantError(t, "malformed step", bad.Error, "wire: decode")

	// A missing directory: an error result, and the worker lives on.
	lr := c.load(t, 0, &wire.Load{ModelDir: filepath.Join(t.TempDir(), "missing")})
	if lr.Rank != 0 {
		t.Fatalf("load result %v", lr)
	}
	wantError(t, "missing model dir", lr.Error, "missing")
	n := c.beatCount(id)
	h := c.waitHeartbeat(t, id, "two more beats", func(_ *wire.Heartbeat, m int) bool { return m >= n+2 })
	if h.State != "starting" || !strings.Contains(h.Error, "missing") {
		t.Fatalf("heartbeat after a failed load: %v", h)
	}
	// A load for another tensor-parallel degree than the worker's world
	// size is refused.
	lr = c.load(t, 0, &wire.Load{ModelDir: ckptDir, Tp: 2})
	wantError(t, "tp 2", lr.Error, "does not match this worker's world size 1")

	// 8 blocks of 8 tokens: room for the two sequences below and no more.
	lr = c.load(t, 0, &wire.Load{ModelDir: ckptDir, KvBlocks: 8, SlidingBlocks: 8, BlockSize: 8})
	if lr.Error != "" || lr.Model != "tiny-512" || lr.Vocab != 512 || lr.Rank != 0 {
		t.Fatalf("load: %v", lr)
	}
	c.waitState(t, id, "ready")

	promptA := []int{1, 17, 300, 42, 5, 99, 511, 0, 250, 7}
	promptB := []int{3, 141, 59, 26, 5, 358, 97}
	const decode = 20
	wantA, wantB := greedy(t, promptA, decode+1), greedy(t, promptB, decode+1)

	// A: a 10-token prefill that samples, then 20 decode steps; its
	// Sampling (with 3 top logprobs) only on the first step. B: a prefill
	// in two chunks, Sampling (2 top logprobs) on the first, which does not
	// sample: the worker must keep it for the second.
	var gotA, gotB []int
	check := func(toks map[uint64]*wire.SampledToken, step uint64) {
		t.Helper()
		a, b := toks[1], toks[2]
		if a == nil || b == nil || len(toks) != 2 {
			t.Fatalf("step %d: tokens %v", step, toks)
		}
		if len(a.TopIds) != 3 || len(a.TopLogprobs) != 3 || a.TopIds[0] != a.Token || len(b.TopIds) != 2 || b.TopIds[0] != b.Token {
			t.Fatalf("step %d: top logprobs A %v B %v", step, a, b)
		}
		if a.Logprob > 0 || math.IsNaN(float64(a.Logprob)) || a.TopLogprobs[0] < a.TopLogprobs[1] {
			t.Fatalf("step %d: logprobs %v", step, a)
		}
		gotA, gotB = append(gotA, int(a.Token)), append(gotB, int(b.Token))
	}
	toks := c.mustStep(t, &wire.Step{StepId: 2, Seqs: []*wire.SeqStep{
		{Id: 1, Tokens: wire.Int32s(promptA), Sample: true, Sampling: &wire.Sampling{TopP: 1, Logprobs: true, TopLogprobs: 3}},
		{Id: 2, Tokens: wire.Int32s(promptB[:4]), Sampling: &wire.Sampling{TopP: 1, Logprobs: true, TopLogprobs: 2}},
	}})
	if len(toks) != 1 || toks[1] == nil {
		t.Fatalf("first step: %v", toks)
	}
	gotA = append(gotA, int(toks[1].Token))
	toks = c.mustStep(t, &wire.Step{StepId: 3, Seqs: []*wire.SeqStep{
		{Id: 1, Tokens: []int32{int32(gotA[0])}, Pos: int32(len(promptA)), Sample: true},
		{Id: 2, Tokens: wire.Int32s(promptB[4:]), Pos: 4, Sample: true},
	}})
	check(toks, 3)
	for i := 2; i <= decode; i++ {
		step := uint64(2 + i)
		toks = c.mustStep(t, &wire.Step{StepId: step, Seqs: []*wire.SeqStep{
			{Id: 1, Tokens: []int32{int32(gotA[len(gotA)-1])}, Pos: int32(len(promptA) + len(gotA) - 1), Sample: true},
			{Id: 2, Tokens: []int32{int32(gotB[len(gotB)-1])}, Pos: int32(len(promptB) + len(gotB) - 1), Sample: true},
		}})
		check(toks, step)
	}
	for i, w := range wantA {
		if gotA[i] != w {
			t.Fatalf("sequence A token %d: worker %d, engine %d (worker %v, engine %v)", i, gotA[i], w, gotA, wantA)
		}
	}
	// B sampled one token fewer (its prefill took two steps).
	for i := range gotB {
		if gotB[i] != wantB[i] {
			t.Fatalf("sequence B token %d: worker %d, engine %d (worker %v, engine %v)", i, gotB[i], wantB[i], gotB, wantB)
		}
	}
	c.waitHeartbeat(t, id, "the step count", func(h *wire.Heartbeat, _ int) bool { return h.Steps >= decode+1 })

	// A table must cover the step's positions with blocks of the pool
	// (the coordinator allocates; the worker checks).
	r = c.step(t, &wire.Step{StepId: 100, Seqs: []*wire.SeqStep{{Id: 3, Tokens: []int32{1}, Sample: true, Blocks: []int32{8}, SlidingBlocks: []int32{0}}}})
	wantError(t, "block out of the pool", r.Error, "out of range")
	r = c.step(t, &wire.Step{StepId: 100, Seqs: []*wire.SeqStep{{Id: 3, Tokens: []int32{1}, Pos: 0, Sample: true, Blocks: []int32{}, SlidingBlocks: []int32{}}}})
	wantError(t, "empty table", r.Error, "no block table")
	// A sequence cannot restart without a release.
	r = c.step(t, &wire.Step{StepId: 101, Seqs: []*wire.SeqStep{{Id: 1, Tokens: wire.Int32s(promptA), Sample: true}}})
	wantError(t, "restart without release", r.Error, "position 0")
	// Released, its blocks serve a new sequence with the same id.
	toks = c.mustStep(t, &wire.Step{StepId: 102, Release: []uint64{1, 3}, Seqs: []*wire.SeqStep{
		{Id: 1, Tokens: wire.Int32s(promptA), Sample: true, Sampling: &wire.Sampling{TopP: 1}}}})
	if toks[1] == nil || int(toks[1].Token) != wantA[0] || len(toks[1].TopIds) != 0 {
		t.Fatalf("restarted sequence: %v, want token %d", toks, wantA[0])
	}
	// A sequence appearing twice in one step is refused.
	r = c.step(t, &wire.Step{StepId: 103, Seqs: []*wire.SeqStep{
		{Id: 1, Tokens: []int32{1}, Pos: 10}, {Id: 1, Tokens: []int32{1}, Pos: 10}}})
	wantError(t, "duplicate sequence", r.Error, "twice")
	// A release-only step.
	if toks := c.mustStep(t, &wire.Step{StepId: 104, Release: []uint64{1, 2}}); len(toks) != 0 {
		t.Fatalf("release-only step: %v", toks)
	}

	// Drain: no more steps; then shutdown.
	c.control(t, "drain")
	c.waitState(t, id, "draining")
	r = c.step(t, &wire.Step{StepId: 105, Seqs: []*wire.SeqStep{{Id: 5, Tokens: []int32{1}, Sample: true}}})
	wantError(t, "step while draining", r.Error, "draining")
	t0 := time.Now()
	c.control(t, "shutdown")
	if code := p.waitExit(t, 5*time.Second); code != 0 {
		t.Fatalf("exit status %d after shutdown", code)
	}
	t.Logf("shutdown took %s", time.Since(t0).Round(time.Millisecond))
}

// A rank of a world of 2 registers as such and refuses to load (the
// collective is not built); SIGTERM ends it with status 0.
func TestShardLoadAndSIGTERM(t *testing.T) {
	t.Parallel()
	c := newCoord(t, "tp2", true)
	p := startWorker(t, "tp2", "--world-size", "2", "--rank", "1")
	reg := c.waitRegister(t)
	if reg.Rank != 1 || reg.WorldSize != 2 || !strings.HasSuffix(reg.WorkerId, "-1") {
		t.Fatalf("register %v", reg)
	}
	// Rank 1 of 2 loads its shard (half the heads, experts and
	// vocabulary) and joins the collective of this load.
	lr := c.load(t, 1, &wire.Load{ModelDir: ckptDir, Tp: 2, Epoch: 7})
	if lr.Rank != 1 || lr.Error != "" {
		t.Fatalf("load result %v", lr)
	}
	c.waitHeartbeat(t, reg.WorkerId, "a heartbeat", func(*wire.Heartbeat, int) bool { return true })
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.waitExit(t, 5*time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM", code)
	}
}

// When the coordinator's heartbeats stop, the worker exits by itself
// (status 0) within the coordinator timeout and a little.
func TestCoordinatorGone(t *testing.T) {
	t.Parallel()
	const id = "w-gone"
	c := newCoord(t, "gone", true)
	p := startWorker(t, "gone", "--worker-id", id, "--coordinator-timeout", "1s")
	c.waitRegister(t)
	// Two worker heartbeats: the worker has been subscribed while the
	// coordinator beat.
	c.waitHeartbeat(t, id, "two beats", func(_ *wire.Heartbeat, n int) bool { return n >= 2 })
	c.stopBeats()
	t0 := time.Now()
	if code := p.waitExit(t, 4*time.Second); code != 0 {
		t.Fatalf("exit status %d when the coordinator went away", code)
	}
	if d := time.Since(t0); d < 700*time.Millisecond {
		t.Fatalf("exited %s after the last coordinator heartbeat, before the 1s timeout", d)
	}
	if !strings.Contains(p.stderr.String(), "coordinator heartbeat silent") {
		t.Fatalf("no reason logged:\n%s", p.stderr.String())
	}
}

// A worker that never hears a coordinator gives up after 3x the timeout,
// with status 1.
func TestCoordinatorNeverSeen(t *testing.T) {
	t.Parallel()
	t0 := time.Now()
	p := startWorker(t, "never", "--coordinator-timeout", "300ms")
	if code := p.waitExit(t, 5*time.Second); code != 1 {
		t.Fatalf("exit status %d, want 1", code)
	}
	if d := time.Since(t0); d < 900*time.Millisecond {
		t.Fatalf("exited after %s, before 3x the 300ms timeout", d)
	}
}

// A step over --step-timeout is reported failed, and the worker exits 1.
func TestStepWatchdog(t *testing.T) {
	t.Parallel()
	const id = "w-hang"
	c := newCoord(t, "hang", true)
	p := startWorker(t, "hang", "--worker-id", id, "--step-timeout", "1ns")
	c.waitRegister(t)
	if lr := c.load(t, 0, &wire.Load{ModelDir: ckptDir, KvBlocks: 8, BlockSize: 8}); lr.Error != "" {
		t.Fatal(lr.Error)
	}
	r := c.step(t, &wire.Step{StepId: 9, Seqs: []*wire.SeqStep{{Id: 1, Tokens: []int32{1, 2, 3}, Sample: true}}})
	wantError(t, "watchdog", r.Error, "over its deadline")
	if code := p.waitExit(t, 5*time.Second); code != 1 {
		t.Fatalf("exit status %d after the watchdog, want 1", code)
	}
	c.waitState(t, id, "failed")
}

// With GPTOSS_WORKER_PARENT_PID, the worker exits when its parent dies.
func TestParentDeath(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pidFile, logFile := filepath.Join(dir, "pid"), filepath.Join(dir, "log")
	// sh starts the worker in the background, says its pid and exits a
	// moment later: the worker is orphaned.
	sh := exec.Command("sh", "-c", `GPTOSS_WORKER_PARENT_PID=$$ "$0" "$@" </dev/null >/dev/null 2>"$LOG" & echo $! >"$PIDFILE"; sleep 0.3`,
		workerBin, "--coordinator-timeout", "30s", "--deployment", "orphan", "--log-format", "json")
	sh.Env = append(os.Environ(), "GPTOSS_WORKER_NATS_URL="+natsURL, "GPTOSS_NATS_TOKEN="+testToken,
		"PIDFILE="+pidFile, "LOG="+logFile)
	if out, err := sh.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmt.Sscan(string(b), &pid); err != nil {
		t.Fatal(err)
	}
	if !testkit.Within(4*time.Second, func() bool {
		// Gone, or a zombie that init has not reaped yet.
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		return err != nil || procState(st) == "Z"
	}) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		t.Fatal("the orphaned worker is still running")
	}
	log, _ := os.ReadFile(logFile)
	if !bytes.Contains(log, []byte("parent process")) {
		t.Fatalf("no reason logged:\n%s", log)
	}
}

// procState is the state field of /proc/<pid>/stat.
func procState(stat []byte) string {
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return ""
	}
	return s[i+2 : i+3]
}

func TestParseConfig(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	c, err := parseConfig(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	if c.NATSURL != "nats://127.0.0.1:4222" || c.Deployment != "default" || c.Rank != 0 || c.WorldSize != 1 ||
		c.Heartbeat != time.Second || c.CoordinatorTimeout != 10*time.Second || c.StepTimeout != time.Minute ||
		c.WorkerID != fmt.Sprintf("%s-%d-0", host, os.Getpid()) || c.ParentPID != 0 {
		t.Fatalf("defaults %+v", c)
	}
	c, err = parseConfig([]string{"--rank", "1", "--nats-url", "nats://flag:4222"}, env(map[string]string{
		"GPTOSS_WORKER_NATS_URL": "nats://env:4222", "GPTOSS_WORKER_WORLD_SIZE": "4", "GPTOSS_NATS_TOKEN": "shared",
		"GPTOSS_WORKER_STEP_TIMEOUT": "5s", "GPTOSS_WORKER_PARENT_PID": "77",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.NATSURL != "nats://flag:4222" || c.WorldSize != 4 || c.Rank != 1 || c.NATSToken != "shared" ||
		c.StepTimeout != 5*time.Second || c.ParentPID != 77 || !strings.HasSuffix(c.WorkerID, "-1") {
		t.Fatalf("env and flags %+v", c)
	}
	c, err = parseConfig(nil, env(map[string]string{"GPTOSS_WORKER_NATS_TOKEN": "own", "GPTOSS_NATS_TOKEN": "shared"}), io.Discard)
	if err != nil || c.NATSToken != "own" {
		t.Fatalf("token %q, %v", c.NATSToken, err)
	}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--rank", "1"}, nil, "--rank"},
		{[]string{"--world-size", "0"}, nil, "--world-size"},
		{[]string{"--deployment", "a.b"}, nil, "--deployment"},
		{[]string{"--heartbeat", "0s"}, nil, "--heartbeat"},
		{[]string{"--step-timeout", "-1s"}, nil, "--step-timeout"},
		{[]string{"extra"}, nil, "unexpected"},
		{nil, map[string]string{"GPTOSS_WORKER_RANK": "x"}, "GPTOSS_WORKER_RANK"},
		{nil, map[string]string{"GPTOSS_WORKER_PARENT_PID": "0"}, "PARENT_PID"},
	} {
		if _, err := parseConfig(tc.args, env(tc.env), io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: error %v, want %q", tc.args, tc.env, err, tc.want)
		}
	}
}

// gate is a TCP proxy to the NATS server that can be shut (refusing
// connections and cutting those it carries) and opened again: NATS going
// away and coming back, as the worker sees it.
type gate struct {
	l     net.Listener
	mu    sync.Mutex
	open  bool
	conns []net.Conn
}

func newGate(t *testing.T, target string) *gate {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{l: l}
	t.Cleanup(func() { l.Close(); g.set(false) })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			g.mu.Lock()
			if !g.open {
				g.mu.Unlock()
				c.Close()
				continue
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				g.mu.Unlock()
				c.Close()
				continue
			}
			g.conns = append(g.conns, c, up)
			g.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
	return g
}

func (g *gate) url() string { return "nats://" + g.l.Addr().String() }

// set opens or shuts the gate; shutting cuts every connection.
func (g *gate) set(open bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open = open
	if !open {
		for _, c := range g.conns {
			c.Close()
		}
		g.conns = nil
	}
}

// A worker started before NATS is reachable registers once it is, and
// registers again after losing NATS and getting it back.
func TestNATSLateAndBack(t *testing.T) {
	t.Parallel()
	const id = "w-late"
	c := newCoord(t, "late", true)
	g := newGate(t, strings.TrimPrefix(natsURL, "nats://"))
	p := startWorker(t, "late", "--worker-id", id, "--nats-url", g.url())
	for round := range 2 {
		// First the worker's failed connection, then its disconnection.
		want := []string{"NATS connection attempt failed", "disconnected from NATS"}[round]
		testkit.Eventually(t, 5*time.Second, fmt.Sprintf("round %d: %q in the worker's log", round, want),
			func() bool { return strings.Contains(p.stderr.String(), want) })
		g.set(true)
		if r := c.waitRegister(t); r.WorkerId != id {
			t.Fatalf("round %d: register %v", round, r)
		}
		// Subscribed: a load gets an answer.
		if lr := c.load(t, 0, &wire.Load{ModelDir: ckptDir, Tp: 2}); !strings.Contains(lr.Error, "does not match") {
			t.Fatalf("round %d: load result %v", round, lr)
		}
		g.set(false)
	}
	select {
	case <-p.done:
		t.Fatal("the worker exited")
	default:
	}
}
