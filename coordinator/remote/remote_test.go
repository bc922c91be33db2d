package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/protobuf/proto"

	"github.com/gptoss/server/coordinator/profiles"
	"github.com/gptoss/server/coordinator/sched"
	"github.com/gptoss/server/shared/natsd"
	"github.com/gptoss/server/shared/step"
	"github.com/gptoss/server/shared/testkit"
	"github.com/gptoss/server/shared/wire"
)

// env is one embedded NATS server and the deployment's subjects.
type env struct {
	srv  *natsd.Server
	subj wire.Subjects
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := testkit.NATS(t)
	subj, err := wire.NewSubjects("test")
	if err != nil {
		t.Fatal(err)
	}
	return &env{srv: srv, subj: subj}
}

func (e *env) connect(t *testing.T) *nats.Conn {
	t.Helper()
	return testkit.Connect(t, e.srv)
}

// client starts a Client; tweak adjusts its options.
func (e *env) client(t *testing.T, world int, tweak func(*Options)) *Client {
	t.Helper()
	o := Options{Conn: e.connect(t), Subjects: e.subj, WorldSize: world,
		StepTimeout: 2 * time.Second, LoadTimeout: 2 * time.Second,
		HeartbeatEvery: 50 * time.Millisecond, WorkerTimeout: 300 * time.Millisecond, Logger: zap.NewNop()}
	if tweak != nil {
		tweak(&o)
	}
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Shutdown)
	return c
}

// fakeWorker answers the protocol from the test's process: Load succeeds
// (or fails with loadErr), and rank 0 replies to each Step with token =
// last input token + 1 for every sampled sequence. It records the steps and
// control commands it received.
type fakeWorker struct {
	t     *testing.T
	nc    *nats.Conn
	subj  wire.Subjects
	id    string
	rank  int
	world int

	mu        sync.Mutex
	loadErr   string
	stepErr   string
	noReply   bool
	dropToken bool // omit the first sampled sequence from the reply
	steps     []*wire.Step
	last      map[uint64]int32 // each sequence's last draw, which a Follow entry feeds
	controls  []string
	loads     []*wire.Load
	beating   bool
	stopBeat  chan struct{}
	beatDone  chan struct{}
}

func (e *env) worker(t *testing.T, rank, world int) *fakeWorker {
	t.Helper()
	w := &fakeWorker{t: t, nc: e.connect(t), subj: e.subj, id: fmt.Sprintf("w%d", rank), rank: rank, world: world}
	must := func(_ *nats.Subscription, err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.nc.Subscribe(e.subj.Load(rank), w.onLoad))
	must(w.nc.Subscribe(e.subj.Step(), w.onStep))
	must(w.nc.Subscribe(e.subj.Control(), w.onControl))
	if err := w.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *fakeWorker) send(subject string, m proto.Message) {
	b, err := wire.Marshal(m)
	if err != nil {
		w.t.Error(err)
		return
	}
	if err := w.nc.Publish(subject, b); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		w.t.Error(err)
	}
}

func (w *fakeWorker) register() {
	w.send(w.subj.Register(), &wire.Register{WorkerId: w.id, Rank: int32(w.rank), WorldSize: int32(w.world),
		Device: fmt.Sprintf("fake-gpu-%d", w.rank), MemoryTotal: 80 << 30, MemoryUsed: 1 << 30, Version: "test", Pid: 1000 + int32(w.rank)})
}

// startBeats heartbeats every 50ms until stopBeats.
func (w *fakeWorker) startBeats() {
	w.stopBeat, w.beatDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(w.beatDone)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			w.send(w.subj.Heartbeat(), &wire.Heartbeat{WorkerId: w.id, Rank: int32(w.rank), State: "ready", Steps: 7, UnixNanos: time.Now().UnixNano()})
			select {
			case <-w.stopBeat:
				return
			case <-t.C:
			}
		}
	}()
	w.t.Cleanup(w.stopBeats)
}

func (w *fakeWorker) stopBeats() {
	select {
	case <-w.stopBeat:
	default:
		close(w.stopBeat)
	}
	<-w.beatDone
}

// up registers and starts heartbeating.
func (w *fakeWorker) up() *fakeWorker {
	w.register()
	w.startBeats()
	return w
}

func (w *fakeWorker) onLoad(m *nats.Msg) {
	var l wire.Load
	if err := wire.Unmarshal(m.Data, &l); err != nil {
		w.t.Error(err)
		return
	}
	w.mu.Lock()
	w.loads = append(w.loads, &l)
	res := &wire.LoadResult{Rank: int32(w.rank), Error: w.loadErr, Model: "fake", Vocab: 1000}
	noReply := w.noReply
	w.mu.Unlock()
	if noReply {
		return
	}
	b, _ := wire.Marshal(res)
	_ = m.Respond(b)
}

func (w *fakeWorker) onStep(m *nats.Msg) {
	var s wire.Step
	if err := wire.Unmarshal(m.Data, &s); err != nil {
		w.t.Error(err)
		return
	}
	w.mu.Lock()
	w.steps = append(w.steps, &s)
	noReply, stepErr, drop := w.noReply, w.stepErr, w.dropToken
	w.mu.Unlock()
	if w.rank != 0 || noReply {
		return
	}
	res := &wire.StepResult{StepId: s.StepId, Rank: 0, Error: stepErr}
	if stepErr == "" {
		for _, q := range s.Seqs {
			if !q.Sample {
				continue
			}
			if drop {
				drop = false
				continue
			}
			last := q.Tokens[len(q.Tokens)-1]
			w.mu.Lock()
			if w.last == nil {
				w.last = map[uint64]int32{}
			}
			if q.Follow {
				last = w.last[q.Id]
			}
			w.last[q.Id] = last + 1
			w.mu.Unlock()
			res.Tokens = append(res.Tokens, &wire.SampledToken{SeqId: q.Id, Token: last + 1, Logprob: -0.5,
				TopIds: []int32{last + 1, last + 2}, TopLogprobs: []float32{-0.5, -1.5}})
		}
	}
	b, _ := wire.Marshal(res)
	_ = m.Respond(b)
}

func (w *fakeWorker) onControl(m *nats.Msg) {
	var c wire.Control
	if err := wire.Unmarshal(m.Data, &c); err != nil {
		w.t.Error(err)
		return
	}
	if c.Op == "announce" { // a coordinator (re)started: nothing to record
		return
	}
	w.mu.Lock()
	w.controls = append(w.controls, c.Op)
	w.mu.Unlock()
}

func (w *fakeWorker) set(f func(*fakeWorker)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f(w)
}

func (w *fakeWorker) received() []*wire.Step {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.steps)
}

func waitCtx(t *testing.T) context.Context { return testkit.Context(t, 3*time.Second) }

func TestWaitWorkers(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, 2, nil)
	done := make(chan error, 1)
	go func() { done <- c.WaitWorkers(waitCtx(t), 2) }()
	e.worker(t, 0, 2).up()
	select {
	case err := <-done:
		t.Fatalf("returned with rank 1 missing: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	e.worker(t, 1, 2).up()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// A context that ends first names the missing ranks.
	c3 := e.client(t, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := c3.WaitWorkers(ctx, 3)
	if err == nil || !strings.Contains(err.Error(), "[0 1 2]") {
		t.Fatalf("got %v", err)
	}
}

func TestWaitWorkersFailedState(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, 1, nil)
	w := e.worker(t, 0, 1)
	w.register()
	w.send(e.subj.Heartbeat(), &wire.Heartbeat{WorkerId: "w0", Rank: 0, State: "failed", Error: "CUDA out of memory"})
	err := c.WaitWorkers(waitCtx(t), 1)
	if err == nil || !strings.Contains(err.Error(), "CUDA out of memory") || !strings.Contains(err.Error(), "rank 0") {
		t.Fatalf("got %v", err)
	}
}

func TestLoad(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, 2, nil)
	w0, w1 := e.worker(t, 0, 2).up(), e.worker(t, 1, 2).up()
	if err := c.WaitWorkers(waitCtx(t), 2); err != nil {
		t.Fatal(err)
	}
	if err := c.Load(waitCtx(t), &wire.Load{ModelDir: "/models/x", Tp: 2, KvBlocks: 64}); err != nil {
		t.Fatal(err)
	}
	for _, w := range []*fakeWorker{w0, w1} {
		w.mu.Lock()
		if len(w.loads) != 1 || w.loads[0].ModelDir != "/models/x" || w.loads[0].Tp != 2 {
			t.Errorf("rank %d got %v", w.rank, w.loads)
		}
		w.mu.Unlock()
	}

	w1.set(func(w *fakeWorker) { w.loadErr = "shard 1: file missing" })
	err := c.Load(waitCtx(t), &wire.Load{ModelDir: "/models/x", Tp: 2})
	if err == nil || !strings.Contains(err.Error(), "rank 1") || !strings.Contains(err.Error(), "shard 1: file missing") {
		t.Fatalf("got %v", err)
	}
	if strings.Contains(err.Error(), "rank 0") {
		t.Fatalf("rank 0 blamed: %v", err)
	}
}

func TestLoadTimeout(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, 3, func(o *Options) { o.LoadTimeout = 200 * time.Millisecond })
	e.worker(t, 0, 3).up()
	e.worker(t, 1, 3).up().set(func(w *fakeWorker) { w.noReply = true })
	// Rank 2 never came: nobody is subscribed to load.2.
	t0 := time.Now()
	err := c.Load(waitCtx(t), &wire.Load{})
	if err == nil || !strings.Contains(err.Error(), "rank 1: no reply within 200ms (load timeout)") ||
		!strings.Contains(err.Error(), "rank 2: no worker is subscribed") || strings.Contains(err.Error(), "rank 0") {
		t.Fatalf("got %v", err)
	}
	if took := time.Since(t0); took < 200*time.Millisecond || took > 2*time.Second {
		t.Fatalf("took %s", took)
	}
}

func seq(id uint64, pos int, sample bool, s *step.Sampling, toks ...int) step.Seq {
	return step.Seq{ID: id, Tokens: toks, Pos: pos, Sample: sample, Sampling: s}
}

func TestStep(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, 2, nil)
	w0, w1 := e.worker(t, 0, 2).up(), e.worker(t, 1, 2).up()
	s1 := &step.Sampling{Temperature: 0.7, TopP: 0.9, TopK: 40, Seed: 5, HasSeed: true, Logprobs: true, TopLogprobs: 2}
	s2 := &step.Sampling{Temperature: 0}
	ctx := waitCtx(t)

	// Step 1: seq 1 prefills a chunk (no sample); seq 2 prefills fully.
	b := &step.Batch{Seqs: []step.Seq{seq(1, 0, false, s1, 10, 11, 12), seq(2, 0, true, s2, 20, 21)}}
	if err := c.Step(ctx, b); err != nil {
		t.Fatal(err)
	}
	if b.Seqs[0].Out.ID != 0 {
		t.Fatalf("unsampled sequence got %+v", b.Seqs[0].Out)
	}
	want := step.Token{ID: 22, Logprob: -0.5, TopLogprobs: []step.TokenLogprob{{ID: 22, Logprob: -0.5}, {ID: 23, Logprob: -1.5}}}
	if got := b.Seqs[1].Out; got.ID != want.ID || got.Logprob != want.Logprob || !slices.Equal(got.TopLogprobs, want.TopLogprobs) {
		t.Fatalf("got %+v, want %+v", got, want)
	}

	// Step 2: both sample; sampling is not sent again. Then release 2.
	b = &step.Batch{Seqs: []step.Seq{seq(1, 3, true, s1, 13), seq(2, 2, true, s2, 22)}}
	if err := c.Step(ctx, b); err != nil {
		t.Fatal(err)
	}
	if b.Seqs[0].Out.ID != 14 || b.Seqs[1].Out.ID != 23 {
		t.Fatalf("got %+v", b.Seqs)
	}
	c.Release([]uint64{2})
	c.Release([]uint64{9})

	// Step 3: the release list rides on it; seq 3 is new.
	b = &step.Batch{Seqs: []step.Seq{seq(1, 4, true, s1, 14), seq(3, 0, true, s2, 30)}}
	if err := c.Step(ctx, b); err != nil {
		t.Fatal(err)
	}
	// Step 4: nothing released since.
	b = &step.Batch{Seqs: []step.Seq{seq(1, 5, true, s1, 15)}}
	if err := c.Step(ctx, b); err != nil {
		t.Fatal(err)
	}

	// Every rank saw every step, identically.
	testkit.Eventually(t, 2*time.Second, "rank 1 to see 4 steps", func() bool { return len(w1.received()) == 4 })
	got0, got1 := w0.received(), w1.received()
	for i := range got0 {
		if !proto.Equal(got0[i], got1[i]) {
			t.Fatalf("step %d differs between ranks", i)
		}
	}
	steps := got0
	for i, s := range steps {
		if s.StepId != uint64(i+1) {
			t.Fatalf("step %d has id %d", i, s.StepId)
		}
	}
	hasSampling := func(s *wire.Step) []uint64 {
		var ids []uint64
		for _, q := range s.Seqs {
			if q.Sampling != nil {
				ids = append(ids, q.Id)
			}
		}
		return ids
	}
	for i, want := range [][]uint64{{1, 2}, nil, {3}, nil} {
		if got := hasSampling(steps[i]); !slices.Equal(got, want) {
			t.Errorf("step %d: sampling sent for %v, want %v", i+1, got, want)
		}
	}
	if sp := steps[0].Seqs[0].Sampling; sp.Temperature != 0.7 || sp.TopP != 0.9 || sp.TopK != 40 || sp.Seed != 5 || !sp.HasSeed || !sp.Logprobs || sp.TopLogprobs != 2 {
		t.Errorf("sampling %v", sp)
	}
	if q := steps[0].Seqs[0]; !slices.Equal(q.Tokens, []int32{10, 11, 12}) || q.Pos != 0 || q.Sample {
		t.Errorf("seq %v", q)
	}
	if q := steps[1].Seqs[0]; !slices.Equal(q.Tokens, []int32{13}) || q.Pos != 3 || !q.Sample {
		t.Errorf("seq %v", q)
	}
	for i, want := range [][]uint64{nil, nil, {2, 9}, nil} {
		if !slices.Equal(steps[i].Release, want) {
			t.Errorf("step %d: release %v, want %v", i+1, steps[i].Release, want)
		}
	}

	// A released id that comes back (ids are not reused by the
	// scheduler, but the set must forget) gets its sampling again.
	c.Release([]uint64{1})
	b = &step.Batch{Seqs: []step.Seq{seq(1, 0, true, s1, 1)}}
	if err := c.Step(ctx, b); err != nil {
		t.Fatal(err)
	}
	last := w0.received()[4]
	if last.Seqs[0].Sampling == nil || !slices.Equal(last.Release, []uint64{1}) {
		t.Fatalf("step 5: %v", last)
	}
}

func TestStepTimeout(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, 1, func(o *Options) { o.StepTimeout = 200 * time.Millisecond })
	w := e.worker(t, 0, 1).up()
	w.set(func(w *fakeWorker) { w.noReply = true })
	c.Release([]uint64{42})
	t0 := time.Now()
	err := c.Step(waitCtx(t), &step.Batch{Seqs: []step.Seq{seq(1, 0, true, &step.Sampling{}, 5)}})
	took := time.Since(t0)
	if err == nil || !strings.Contains(err.Error(), "step timeout") || !strings.Contains(err.Error(), "200ms") ||
		!errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	if took < 200*time.Millisecond || took > 2*time.Second {
		t.Fatalf("failed after %s", took)
	}
	// The release list was not lost with the failed step, and the
	// sampling of the failed sequence is sent again if it comes back.
	w.set(func(w *fakeWorker) { w.noReply = false })
	if err := c.Step(waitCtx(t), &step.Batch{Seqs: []step.Seq{seq(1, 0, true, &step.Sampling{}, 5)}}); err != nil {
		t.Fatal(err)
	}
	got := w.received()
	if len(got) != 2 || !slices.Equal(got[1].Release, []uint64{42}) || got[1].Seqs[0].Sampling == nil {
		t.Fatalf("got %v", got)
	}
}

func TestStepCancelled(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, 1, nil)
	w := e.worker(t, 0, 1).up()
	w.set(func(w *fakeWorker) { w.noReply = true })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := c.Step(ctx, &step.Batch{Seqs: []step.Seq{seq(1, 0, true, nil, 5)}})
	if !errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "step timeout") {
		t.Fatalf("got %v", err)
	}
}

func TestStepErrors(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, 1, nil)
	batch := func() *step.Batch {
		return &step.Batch{Seqs: []step.Seq{seq(1, 0, true, nil, 5), seq(2, 0, true, nil, 6)}}
	}

	// No worker subscribed: fails at once.
	t0 := time.Now()
	err := c.Step(waitCtx(t), batch())
	if err == nil || !strings.Contains(err.Error(), "no worker") || time.Since(t0) > time.Second {
		t.Fatalf("got %v after %s", err, time.Since(t0))
	}

	w := e.worker(t, 0, 1).up()
	w.set(func(w *fakeWorker) { w.stepErr = "CUDA error: illegal memory access" })
	err = c.Step(waitCtx(t), batch())
	if err == nil || !strings.Contains(err.Error(), "illegal memory access") || !strings.Contains(err.Error(), "rank 0") {
		t.Fatalf("got %v", err)
	}

	w.set(func(w *fakeWorker) { w.stepErr, w.dropToken = "", true })
	err = c.Step(waitCtx(t), batch())
	if err == nil || !strings.Contains(err.Error(), "no token for sequence 1") {
		t.Fatalf("got %v", err)
	}
}

func TestWorkersAndLost(t *testing.T) {
	e := newEnv(t)
	core, logs := observer.New(zapcore.InfoLevel)
	c := e.client(t, 2, func(o *Options) { o.Logger = zap.New(core) })
	w1 := e.worker(t, 1, 2).up()
	e.worker(t, 0, 2).up()
	if err := c.WaitWorkers(waitCtx(t), 2); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 2*time.Second, "heartbeats", func() bool {
		ws := c.Workers()
		return len(ws) == 2 && ws[0].State == "ready" && ws[1].State == "ready"
	})
	ws := c.Workers()
	for i, w := range ws {
		if w.Rank != i || w.ID != fmt.Sprintf("w%d", i) || w.Device != fmt.Sprintf("fake-gpu-%d", i) ||
			w.MemoryTotal != 80<<30 || w.MemoryUsed != 1<<30 || w.PID != 1000+i || w.Steps != 7 || w.Lost ||
			time.Since(w.LastHeartbeat) > time.Second {
			t.Errorf("worker %d: %+v", i, w)
		}
	}
	w1.stopBeats()
	testkit.Eventually(t, 2*time.Second, "rank 1 lost", func() bool { return c.Workers()[1].Lost })
	if c.Workers()[0].Lost {
		t.Fatal("rank 0 lost too")
	}
	testkit.Eventually(t, time.Second, "lost log", func() bool { return logs.FilterMessage("worker lost: no heartbeat").Len() == 1 })
	// A lost worker no longer counts as present.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := c.WaitWorkers(ctx, 2); err == nil || !strings.Contains(err.Error(), "[1]") {
		t.Fatalf("got %v", err)
	}
	// It comes back when it heartbeats again.
	w1.startBeats()
	testkit.Eventually(t, 2*time.Second, "rank 1 back", func() bool { return !c.Workers()[1].Lost })
}

func TestRegisterValidation(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, 2, nil)
	e.worker(t, 2, 2).up()      // rank out of range: register and heartbeats ignored
	e.worker(t, 0, 4).up()      // wrong world size: register refused
	w := e.worker(t, 1, 2).up() // fine
	testkit.Eventually(t, 2*time.Second, "rank 1", func() bool {
		ws := c.Workers()
		return len(ws) > 0 && ws[len(ws)-1].Rank == 1 && ws[len(ws)-1].Registered && ws[len(ws)-1].State == "ready"
	})
	// Heartbeats from a worker that is not the one registered for its
	// rank are ignored.
	w.send(e.subj.Heartbeat(), &wire.Heartbeat{WorkerId: "stranger", Rank: 1, State: "failed"})
	testkit.Eventually(t, 2*time.Second, "rank 0's heartbeats", func() bool { return len(c.Workers()) == 2 })
	time.Sleep(100 * time.Millisecond)
	ws := c.Workers()
	// Rank 0 heartbeats but its registration was refused: listed, not
	// registered, and not counted.
	if len(ws) != 2 || ws[0].Rank != 0 || ws[0].Registered || ws[0].Device != "" ||
		ws[1].ID != "w1" || ws[1].State != "ready" || ws[1].Device != "fake-gpu-1" {
		t.Fatalf("got %+v", ws)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := c.WaitWorkers(ctx, 2); err == nil || !strings.Contains(err.Error(), "[0]") {
		t.Fatalf("got %v", err)
	}
}

// TestHeartbeatBeforeRegister: register and heartbeat are handled on
// different goroutines, so the first heartbeat may overtake the register;
// the worker then counts as soon as the register arrives.
func TestHeartbeatBeforeRegister(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, 1, nil)
	w := e.worker(t, 0, 1)
	w.send(e.subj.Heartbeat(), &wire.Heartbeat{WorkerId: "w0", Rank: 0, State: "starting"})
	testkit.Eventually(t, 2*time.Second, "heartbeat", func() bool { return len(c.Workers()) == 1 })
	if ws := c.Workers(); ws[0].Registered || ws[0].State != "starting" {
		t.Fatalf("got %+v", ws)
	}
	w.register()
	if err := c.WaitWorkers(waitCtx(t), 1); err != nil {
		t.Fatal(err)
	}
	if ws := c.Workers(); !ws[0].Registered || ws[0].State != "starting" || ws[0].Device != "fake-gpu-0" {
		t.Fatalf("got %+v", ws)
	}
}

// A loading worker's progress shows in Workers() as its heartbeats
// report it, and is gone once it reports none (the load is over).
func TestHeartbeatLoadProgress(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, 1, nil)
	w := e.worker(t, 0, 1)
	w.register()
	const total = 13 << 30
	for _, done := range []int64{0, 1 << 30, total} {
		w.send(e.subj.Heartbeat(), &wire.Heartbeat{WorkerId: "w0", Rank: 0, State: "loading", LoadBytesDone: done, LoadBytesTotal: total})
		testkit.Eventually(t, 2*time.Second, fmt.Sprintf("%d of %d bytes loaded", done, total), func() bool {
			ws := c.Workers()
			return len(ws) == 1 && ws[0].State == "loading" && ws[0].LoadBytesDone == done && ws[0].LoadBytesTotal == total
		})
	}
	w.send(e.subj.Heartbeat(), &wire.Heartbeat{WorkerId: "w0", Rank: 0, State: "ready"})
	testkit.Eventually(t, 2*time.Second, "ready without progress", func() bool {
		ws := c.Workers()
		return len(ws) == 1 && ws[0].State == "ready" && ws[0].LoadBytesDone == 0 && ws[0].LoadBytesTotal == 0
	})
}

// The heartbeats' step time and device memory reach Workers() (the
// per-worker metrics); a heartbeat without memory keeps the register's.
func TestHeartbeatStepTimeAndMemory(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, 1, nil)
	w := e.worker(t, 0, 1)
	w.register()
	testkit.Eventually(t, 2*time.Second, "registered", func() bool { ws := c.Workers(); return len(ws) == 1 && ws[0].Registered })
	reg := c.Workers()[0]
	w.send(e.subj.Heartbeat(), &wire.Heartbeat{WorkerId: "w0", Rank: 0, State: "ready", Steps: 4,
		StepNanos: uint64(80 * time.Millisecond), LastStepNanos: uint64(15 * time.Millisecond)})
	testkit.Eventually(t, 2*time.Second, "step time", func() bool {
		ws := c.Workers()
		return len(ws) == 1 && ws[0].Steps == 4 && ws[0].StepTime == 80*time.Millisecond && ws[0].LastStep == 15*time.Millisecond
	})
	if ws := c.Workers(); ws[0].MemoryTotal != reg.MemoryTotal || ws[0].MemoryUsed != reg.MemoryUsed {
		t.Errorf("memory %d/%d, want the register's %d/%d", ws[0].MemoryUsed, ws[0].MemoryTotal, reg.MemoryUsed, reg.MemoryTotal)
	}
	w.send(e.subj.Heartbeat(), &wire.Heartbeat{WorkerId: "w0", Rank: 0, State: "ready", MemoryTotal: 81 << 30, MemoryUsed: 70 << 30})
	testkit.Eventually(t, 2*time.Second, "sampled memory", func() bool {
		ws := c.Workers()
		return len(ws) == 1 && ws[0].MemoryTotal == 81<<30 && ws[0].MemoryUsed == 70<<30
	})
}

// /health shows WorkerInfo as JSON: every field under its snake_case key.
func TestWorkerInfoJSON(t *testing.T) {
	b, err := json.Marshal(WorkerInfo{ID: "w0", Rank: 1, PID: 7, Sequences: 2, LoadBytesDone: 3, LoadBytesTotal: 4})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	want := []string{"id", "rank", "device", "memory_total", "memory_used", "state", "error", "last_heartbeat",
		"steps", "pid", "registered", "lost", "sequences", "load_bytes_done", "load_bytes_total", "step_time_ns", "last_step_ns", "idle_time_ns"}
	got := slices.Sorted(maps.Keys(m))
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("keys %v, want %v", got, want)
	}
	if m["id"] != "w0" || m["rank"] != 1.0 || m["pid"] != 7.0 || m["sequences"] != 2.0 ||
		m["load_bytes_done"] != 3.0 || m["load_bytes_total"] != 4.0 {
		t.Errorf("got %s", b)
	}
}

func TestCoordinatorHeartbeatDrainShutdown(t *testing.T) {
	e := newEnv(t)
	nc := e.connect(t)
	beats := make(chan *wire.Heartbeat, 100)
	if _, err := nc.Subscribe(e.subj.CoordinatorHeartbeat(), func(m *nats.Msg) {
		var h wire.Heartbeat
		if err := wire.Unmarshal(m.Data, &h); err != nil {
			t.Error(err)
			return
		}
		beats <- &h
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	c := e.client(t, 1, nil)
	w := e.worker(t, 0, 1).up()
	next := func() *wire.Heartbeat {
		select {
		case h := <-beats:
			return h
		case <-time.After(2 * time.Second):
			t.Fatal("no coordinator heartbeat")
			return nil
		}
	}
	h1, h2 := next(), next()
	if h1.WorkerId != CoordinatorID || h1.State != "ready" || h2.UnixNanos <= h1.UnixNanos {
		t.Fatalf("%v %v", h1, h2)
	}

	if err := c.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 2*time.Second, "draining heartbeat", func() bool { return next().State == "draining" })
	c.Shutdown()
	c.Shutdown()
	testkit.Eventually(t, 2*time.Second, "control commands", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return slices.Equal(w.controls, []string{"drain", "shutdown"})
	})
	// Heartbeats stop.
	for len(beats) > 0 {
		<-beats
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(beats); n != 0 {
		t.Fatalf("%d heartbeats after shutdown", n)
	}
}

// TestScheduler runs the real scheduler over the client and a fake worker:
// the fake's deterministic tokens come out of the stream.
func TestScheduler(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, 2, nil)
	w0, _ := e.worker(t, 0, 2).up(), e.worker(t, 1, 2).up()
	if err := c.WaitWorkers(waitCtx(t), 2); err != nil {
		t.Fatal(err)
	}
	if c.Ready() {
		t.Fatal("ready before the model is loaded")
	}
	if err := c.Load(waitCtx(t), &wire.Load{ModelDir: "/models/x", Tp: 2}); err != nil {
		t.Fatal(err)
	}
	if !c.Ready() {
		t.Fatal("not ready after loading")
	}
	p := &profiles.Profile{Name: "p",
		Generation: profiles.Generation{ReasoningEffort: "low", MaxTokens: 16, MaxTokensCap: 64, Temperature: 1, TopP: 1},
		Scheduling: profiles.Scheduling{MaxBatch: 4, PrefillChunk: 2, QueueLimit: 10, QueueTimeout: 5 * time.Second}}
	s := sched.New(c, profiles.Set{"p": p}, sched.Options{})
	defer s.Close()

	ctx := waitCtx(t)
	st, err := s.Submit(ctx, &sched.Request{Profile: p, Prompt: []int{1, 2, 3, 4, 5}, MaxTokens: 4,
		Sampling: step.Sampling{Temperature: 0.5}})
	if err != nil {
		t.Fatal(err)
	}
	var toks []step.Token
	for {
		got, fin, err := st.Recv(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, got...)
		if fin != nil {
			if fin.Reason != sched.FinishLength || fin.Err != nil {
				t.Fatalf("final %+v", fin)
			}
			break
		}
	}
	var ids []int
	for _, tk := range toks {
		ids = append(ids, tk.ID)
	}
	if !slices.Equal(ids, []int{6, 7, 8, 9}) {
		t.Fatalf("tokens %v", ids)
	}
	// 3 prefill steps (chunks of 2), then 3 decode steps; the sampling
	// went with the first. The release comes with the next step, or with
	// the scheduler's idle flush if that comes first (a step of no
	// sequences): the two race, and either is right.
	steps := w0.received()
	if len(steps) < 6 || steps[0].Seqs[0].Sampling.GetTemperature() != 0.5 || steps[1].Seqs[0].Sampling != nil {
		t.Fatalf("steps %v", steps)
	}
	for _, st := range steps[6:] {
		if len(st.Seqs) != 0 {
			t.Fatalf("a step after the last decode: %v", steps)
		}
	}
	st2, err := s.Submit(ctx, &sched.Request{Profile: p, Prompt: []int{100}, MaxTokens: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got, _, err := st2.Recv(ctx, nil); err != nil || len(got) != 1 || got[0].ID != 101 {
		t.Fatalf("%v %v", got, err)
	}
	released := 0
	for _, st := range w0.received()[6:] {
		released += len(st.Release)
	}
	if released != 1 {
		t.Fatalf("released %d sequences after the first request, want 1: %v", released, w0.received()[6:])
	}
}

// TestReadyAfterFailure: after a failed step the client is not ready until
// every rank has been heard from since (a dead worker never is); a worker
// that comes back as a new process needs a reload first.
func TestReadyAfterFailure(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, 2, nil)
	w0, w1 := e.worker(t, 0, 2).up(), e.worker(t, 1, 2).up()
	if err := c.WaitWorkers(waitCtx(t), 2); err != nil {
		t.Fatal(err)
	}
	if err := c.Load(waitCtx(t), &wire.Load{ModelDir: "/models/x", Tp: 2}); err != nil {
		t.Fatal(err)
	}
	w1.stopBeats() // rank 1 "dies"
	w0.mu.Lock()
	w0.stepErr = "collective: rank 1 did not answer"
	w0.mu.Unlock()
	b := &step.Batch{Seqs: []step.Seq{{ID: 1, Tokens: []int{1}, Sample: true}}}
	if err := c.Step(waitCtx(t), b); err == nil {
		t.Fatal("step succeeded")
	}
	time.Sleep(150 * time.Millisecond) // rank 0 heartbeats again; rank 1 does not
	if c.Ready() {
		t.Fatal("ready with a silent rank after a failed step")
	}
	// Rank 1 comes back as a new process: not ready until reloaded.
	back := e.worker(t, 1, 2)
	back.id = "w1-restarted"
	back.up()
	testkit.Eventually(t, 2*time.Second, "new rank 1", func() bool {
		for _, w := range c.Workers() {
			if w.Rank == 1 && w.ID == "w1-restarted" {
				return true
			}
		}
		return false
	})
	time.Sleep(100 * time.Millisecond)
	if c.Ready() {
		t.Fatal("ready before the restarted worker was loaded")
	}
	w0.mu.Lock()
	w0.stepErr = ""
	w0.mu.Unlock()
	if err := c.Load(waitCtx(t), &wire.Load{ModelDir: "/models/x", Tp: 2}); err != nil {
		t.Fatal(err)
	}
	if !c.Ready() {
		t.Fatal("not ready after the reload")
	}
	if err := c.Step(waitCtx(t), b); err != nil {
		t.Fatal(err)
	}
}

// TestFlushSendsReleases: releases queued after the last step go out in a
// release-only step when the scheduler flushes, so idle workers free them.
func TestFlushSendsReleases(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, 1, nil)
	w := e.worker(t, 0, 1).up()
	if err := c.WaitWorkers(waitCtx(t), 1); err != nil {
		t.Fatal(err)
	}
	if err := c.Load(waitCtx(t), &wire.Load{ModelDir: "/models/x", Tp: 1}); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(waitCtx(t)); err != nil || len(w.received()) != 0 {
		t.Fatalf("flush with nothing pending: %v, %d steps", err, len(w.received()))
	}
	c.Release([]uint64{7, 9})
	if err := c.Flush(waitCtx(t)); err != nil {
		t.Fatal(err)
	}
	steps := w.received()
	if len(steps) != 1 || len(steps[0].Seqs) != 0 || !slices.Equal(steps[0].Release, []uint64{7, 9}) {
		t.Fatalf("steps %v", steps)
	}
}
