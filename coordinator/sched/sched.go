// Package sched is the coordinator's scheduler: it admits generation
// requests into bounded per-profile queues, batches the running sequences
// step by step (iteration-level, continuous batching: a sequence joins and
// leaves the batch between any two steps), hands each step to an Executor
// and delivers the sampled tokens to the waiting HTTP handlers.
//
// The executor (step.Executor, the contract in shared/step) is the boundary
// behind which the model runs: the mock engine (coordinator/mock) or the
// tensor-parallel worker processes over NATS (coordinator/remote). The API
// layer only sees Submit and Stream, so swapping the executor changes
// nothing above.
//
// The loop is pipelined when the executor can take a step ahead
// (step.Pipeliner): with step k in flight it submits step k+1, whose
// continuing sequences Follow their draws of step k, and only then delivers
// step k, so the engine never waits for the turnaround (see pipeline for
// when it goes one step at a time instead).
//
// Concurrency: one goroutine (the loop) owns the running batch and calls the
// Executor; Submit and the Stream methods are safe from any goroutine. Lock
// order: Scheduler.mu before sequence.mu; neither is held across Step or a
// step's wait.
package sched

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/gptoss/server/coordinator/profiles"
	"github.com/gptoss/server/shared/parallel"
	"github.com/gptoss/server/shared/step"
)

// Errors returned by Submit and carried in Final.Err. The API layer maps
// them to HTTP statuses.
var (
	// ErrQueueFull: the profile's admission queue is at its limit (503).
	ErrQueueFull = errors.New("sched: queue full")
	// ErrDraining: the server is shutting down and admits nothing (503).
	ErrDraining = errors.New("sched: server is shutting down")
	// ErrQueueTimeout: the request waited longer than queue_timeout (503).
	ErrQueueTimeout = errors.New("sched: timed out waiting in the queue")
	// ErrAborted: the server ended the request during shutdown.
	ErrAborted = errors.New("sched: aborted by server shutdown")
	// ErrClosed: the scheduler has stopped.
	ErrClosed = errors.New("sched: closed")
	// ErrEngineFailed: the sequence was in failed steps until it was the
	// only suspect of one that failed (failBatch), and is not retried
	// again, so a request that crashes workers cannot crash them forever.
	ErrEngineFailed = errors.New("sched: the engine failed repeatedly while running this request")
	// ErrEngineTimeout: as ErrEngineFailed, but the failures were steps
	// that ran past their deadline: the engine is too slow or too busy for
	// the request, which may succeed later (the API answers a retryable
	// 503, never a 500).
	ErrEngineTimeout = errors.New("sched: the engine's steps with this request kept running past their deadline")
	// ErrEngineUnavailable: the executor stayed unready (workers down and
	// not coming back) longer than Options.ReadyTimeout.
	ErrEngineUnavailable = errors.New("sched: the engine is unavailable")
	// ErrKVCapacity: the sequence outgrew the whole KV cache.
	ErrKVCapacity = errors.New("sched: the sequence does not fit the KV cache")
	// ErrGuide: the sequence's Guide failed (a grammar llguidance gave up
	// on, or a token the executor drew outside the mask).
	ErrGuide = errors.New("sched: constrained decoding failed")
)

// FinishReason says why a sequence stopped, in OpenAI's vocabulary plus
// "abort" (server shutdown), "cancelled" (client left) and "error".
type FinishReason string

// Finish reasons.
const (
	FinishStop      FinishReason = "stop"
	FinishLength    FinishReason = "length"
	FinishAbort     FinishReason = "abort"
	FinishCancelled FinishReason = "cancelled"
	FinishError     FinishReason = "error"
)

// Request is one sequence to generate.
type Request struct {
	// ID is the caller's request id, for logs.
	ID string
	// Profile supplies the queue and batching policy.
	Profile *profiles.Profile
	// Prompt is the fully rendered prompt.
	Prompt []int
	// MaxTokens bounds the generated tokens (reasoning included).
	MaxTokens int
	// StopTokens end generation when sampled; the stop token is delivered
	// (so the caller can tell <|call|> from <|return|>) and counted.
	StopTokens []int
	Sampling   step.Sampling
	// Guide, when set, constrains every sampled token (structured output,
	// forced calls, the reasoning budget). The scheduler owns it once
	// Submit succeeds and closes it when the sequence ends; when Submit
	// fails, the caller still does.
	Guide Guide
}

// Guide constrains a sequence's tokens (coordinator/guide implements it).
// Its methods are called on the scheduler's loop, Mask of different
// sequences in parallel.
type Guide interface {
	// Mask returns the tokens allowed next as a step.Seq.Allow bitset, or
	// nil when any token may follow. The slice is the Guide's and stays
	// valid until the next Accept.
	Mask() ([]uint32, error)
	// Accept advances past the token drawn.
	Accept(tok int) error
	// Close frees the Guide; called once the sequence ended.
	Close()
}

// FreeGuide is implemented by Guides that can tell, before the token they
// are waiting for is known, that whatever it is the mask after it is nil
// (the reasoning budget's Guide while the budget lasts). The pipelined loop
// submits a guided sequence's next step before its draw is delivered only
// when FreeNext says so; otherwise it waits for the draw.
type FreeGuide interface {
	Guide
	FreeNext() bool
}

// Final is the end of a sequence.
type Final struct {
	Reason FinishReason
	// Err is set for FinishError and FinishAbort, and for queue errors.
	Err error
	// PromptTokens and CompletionTokens are the usage counts.
	PromptTokens     int
	CompletionTokens int
	// CachedTokens is how many prompt tokens the prefix cache supplied,
	// CacheWriteTokens how many it took in from this sequence (usage's
	// cached and cache-write tokens).
	CachedTokens, CacheWriteTokens int
	// Queue is the time from Submit to admission into the batch.
	Queue time.Duration
}

// Options configures a Scheduler.
type Options struct {
	// MaxRunning bounds the running sequences over all profiles.
	MaxRunning int
	// MaxStepTokens bounds the tokens processed in one step (prefill
	// chunks plus one per decoding sequence), so one long prompt cannot
	// stall every stream.
	MaxStepTokens int
	Logger        *zap.Logger
	// OnStep, when set, is told about every successful step: sequences,
	// tokens and the executor's time. Called on the loop goroutine. In the
	// pipelined loop the time runs from when the executor could start the
	// step (its submission, or the end of the step before) to when the
	// loop saw it end: a step that ended while the loop was delivering the
	// one before counts until the loop looked (the workers' own step
	// times are gptoss_worker_step_seconds_total).
	OnStep func(seqs, tokens int, took time.Duration)
	// OnPreempt, when set, is told about every preemption.
	OnPreempt func(profile string)
	// ReadyTimeout bounds how long running sequences wait for an unready
	// executor (workers restarting and reloading) before they fail with
	// ErrEngineUnavailable (default 10 minutes).
	ReadyTimeout time.Duration
	// NoPrefixCache turns off the sharing of cached prompt blocks between
	// sequences (on by default when the executor reports a KV geometry).
	NoPrefixCache bool
	// checkKV makes the loop verify the block accounting after every step
	// (tests).
	checkKV bool
	// OnGuide, when set, is told about every step that constrained some
	// of its sequences: how many masks and the time the step waited for
	// the guides. Called on the loop goroutine.
	OnGuide func(masks int, took time.Duration)
	// NoPipeline turns off the pipelined loop: every step is delivered
	// before the next is built, as with an executor that cannot take a
	// step ahead (the before-and-after of docs/performance.md).
	NoPipeline bool
	// OnStepFailure, when set, is told about every failed step: how many of
	// its sequences were requeued to be recomputed and how many were
	// refused (ErrEngineFailed).
	OnStepFailure func(retried, refused int)
}

// Load is a profile's current occupancy.
type Load struct {
	Active, Queued int
}

// Scheduler batches sequences over an Executor.
type Scheduler struct {
	exec step.Executor
	opts Options
	log  *zap.Logger

	mu       sync.Mutex
	waiting  map[string][]*sequence // per profile, FIFO; guarded by mu
	order    []string               // profile names, for fair admission
	running  map[string]int         // per-profile running count; guarded by mu
	draining bool
	closed   bool

	nextID   atomic.Uint64
	wake     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
	stop     chan struct{}

	// loop-owned
	batch   []*sequence
	rr      int
	kv      *kvManager // nil until the executor reports a KV geometry
	kvNoted time.Time  // when usage was last published
	kvErr   bool       // a bad geometry was logged
	// nextGroup numbers suspect groups (failBatch).
	nextGroup uint64
	guided    []*sequence // this step's guided sequences (guide)
	// piped is the executor when it takes steps ahead (step.Pipeliner)
	// and the loop may use that; lastDone is when the last step ended.
	piped    step.Pipeliner
	lastDone time.Time

	usage atomic.Pointer[KVUsage] // the pools after the last step
}

// New starts a scheduler over exec for the given profiles.
func New(exec step.Executor, set profiles.Set, opts Options) *Scheduler {
	if opts.MaxRunning <= 0 {
		opts.MaxRunning = 1024
	}
	if opts.MaxStepTokens <= 0 {
		opts.MaxStepTokens = 8192
	}
	// Every running sequence decodes one token a step; the budget must
	// leave room for at least one prompt token on top.
	opts.MaxStepTokens = max(opts.MaxStepTokens, opts.MaxRunning+1)
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = 10 * time.Minute
	}
	s := &Scheduler{
		exec:    exec,
		opts:    opts,
		log:     opts.Logger,
		waiting: map[string][]*sequence{},
		running: map[string]int{},
		order:   set.Names(),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		stop:    make(chan struct{}),
	}
	if p, ok := exec.(step.Pipeliner); ok && !opts.NoPipeline {
		s.piped = p
	}
	go s.loop()
	return s
}

// Capabilities reports what the executor supports.
func (s *Scheduler) Capabilities() step.Capabilities { return s.exec.Capabilities() }

// EngineReady reports whether the executor can step now: false while the
// workers are lost, restarting or reloading (step.Readier), when requests
// wait instead of running. Executors that are always ready report true.
// Safe from any goroutine.
func (s *Scheduler) EngineReady() bool {
	if r, ok := s.exec.(step.Readier); ok {
		return r.Ready()
	}
	return true
}

// Submit queues a request. It fails fast, before any output, when the
// profile's queue is full or the server is draining, so the API can answer
// 503 with Retry-After before the first byte. ctx is the request's context:
// when it ends, the sequence is dropped and its state released.
func (s *Scheduler) Submit(ctx context.Context, req *Request) (*Stream, error) {
	if req.Profile == nil {
		return nil, errors.New("sched: request without profile")
	}
	if len(req.Prompt) == 0 {
		return nil, errors.New("sched: empty prompt")
	}
	seq := &sequence{
		id:       s.nextID.Add(1),
		req:      req,
		tokens:   slices.Clip(req.Prompt),
		ctx:      ctx,
		notify:   make(chan struct{}, 1),
		enqueued: time.Now(),
	}
	name := req.Profile.Name
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return nil, ErrClosed
	case s.draining:
		s.mu.Unlock()
		return nil, ErrDraining
	case len(s.waiting[name]) >= req.Profile.Scheduling.QueueLimit:
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: profile %s has %d requests waiting", ErrQueueFull, name, req.Profile.Scheduling.QueueLimit)
	}
	if !slices.Contains(s.order, name) {
		s.order = append(s.order, name)
	}
	s.waiting[name] = append(s.waiting[name], seq)
	s.mu.Unlock()
	s.poke()
	return &Stream{seq: seq}, nil
}

// Load reports per-profile running and waiting counts.
func (s *Scheduler) Load() map[string]Load {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Load, len(s.order))
	for _, n := range s.order {
		out[n] = Load{Active: s.running[n], Queued: len(s.waiting[n])}
	}
	return out
}

// Drain stops admission: every later Submit fails with ErrDraining, while
// queued and running sequences go on.
func (s *Scheduler) Drain() {
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
}

// Draining reports whether Drain was called.
func (s *Scheduler) Draining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

// Idle reports whether nothing is queued or running.
func (s *Scheduler) Idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.order {
		if s.running[n] > 0 || len(s.waiting[n]) > 0 {
			return false
		}
	}
	return true
}

// Close ends every queued and running sequence with FinishAbort and stops
// the loop. It waits for the loop to exit.
func (s *Scheduler) Close() {
	s.mu.Lock()
	s.draining, s.closed = true, true
	s.mu.Unlock()
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
}

func (s *Scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Scheduler) loop() {
	defer close(s.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var flights [2]flight // double-buffered: one in flight, one being built
	var cur *flight       // the step submitted and not yet delivered
	var unready time.Time // since when the executor has not been ready with work waiting
	for {
		select {
		case <-s.stop:
			if cur != nil {
				s.abandon(cur)
			}
			s.abortAll()
			return
		default:
		}
		s.reap()
		s.admit()
		if len(s.batch) == 0 && cur == nil {
			s.noteKV(true)
			if f, ok := s.exec.(step.Flusher); ok {
				if err := f.Flush(ctx); err != nil {
					s.log.Warn("flushing releases failed", zap.Error(err))
				}
			}
			// Nothing to run. Wake on a submit, or periodically to expire
			// queued requests that can never be admitted.
			t := time.NewTimer(100 * time.Millisecond)
			select {
			case <-s.wake:
			case <-s.stop:
			case <-t.C:
			}
			t.Stop()
			continue
		}
		if r, ok := s.exec.(step.Readier); ok && cur == nil && !r.Ready() {
			// Workers are coming back: hold the batch (reap above still
			// ends cancelled and expired requests), but not forever.
			if unready.IsZero() {
				unready = time.Now()
			} else if time.Since(unready) > s.opts.ReadyTimeout {
				s.log.Error("the engine stayed unavailable; failing the running requests",
					zap.Duration("waited", time.Since(unready)), zap.Int("running", len(s.batch)))
				s.retire(func(q *sequence) bool {
					s.finish(q, FinishError, ErrEngineUnavailable)
					return true
				})
				unready = time.Time{}
				continue
			}
			t := time.NewTimer(20 * time.Millisecond)
			select {
			case <-s.stop:
			case <-t.C:
			}
			t.Stop()
			continue
		}
		unready = time.Time{}
		s.setupKV()
		// With a step in flight, the next one is built and submitted
		// before the step in flight is delivered (when nothing forbids
		// it: pipeline), so that the executor runs them back to back.
		var next *flight
		if len(s.batch) > 0 && (cur == nil || s.pipeline()) {
			f := &flights[0]
			if f == cur {
				f = &flights[1]
			}
			s.build(f)
			if len(f.b.Seqs) > 0 {
				s.guide(&f.b)
				s.submit(ctx, f)
				next = f
			}
		}
		switch {
		case cur != nil:
			if !s.collect(cur, next) {
				next = nil // failed with cur, and recomputed
			}
			cur = next
		case next != nil && s.piped == nil:
			// A synchronous executor ran the step in submit: deliver it now.
			s.collect(next, nil)
		default:
			cur = next
		}
	}
}

// flight is a submitted step: its batch, the sequence of each entry (with
// the id it had: a requeued sequence's entries no longer stand for it), and
// the wait for its outcome.
type flight struct {
	b       step.Batch
	entries []entry
	wait    func() error
	cancel  context.CancelFunc
	sent    time.Time
}

type entry struct {
	q     *sequence
	id    uint64
	chunk int // positions fed
}

// pipeline reports whether the next step may be submitted before the one
// in flight is delivered. Not when the executor cannot take it, nor while
// suspects run (failBatch isolates them one step at a time), nor when a
// guided sequence drawing in the step in flight may be constrained in the
// next: its mask needs the token not yet known (a Guide that can tell the
// next mask is free whatever that token, the reasoning budget's while it
// lasts, lets the step go on).
func (s *Scheduler) pipeline() bool {
	if s.piped == nil {
		return false
	}
	if r, ok := s.exec.(step.Readier); ok && !r.Ready() {
		return false
	}
	for _, q := range s.batch {
		if q.group != 0 {
			return false
		}
		if q.aheadDraws > 0 && q.req.Guide != nil {
			if f, ok := q.req.Guide.(FreeGuide); !ok || !f.FreeNext() {
				return false
			}
		}
	}
	return true
}

// submit hands f to the executor: without waiting for it when the executor
// pipelines, else running it.
func (s *Scheduler) submit(ctx context.Context, f *flight) {
	f.sent = time.Now()
	if s.piped != nil {
		var fctx context.Context
		fctx, f.cancel = context.WithCancel(ctx)
		f.wait = s.piped.Submit(fctx, &f.b)
		return
	}
	err := s.exec.Step(ctx, &f.b)
	f.cancel = func() {}
	f.wait = func() error { return err }
}

// collect waits for f and delivers it. When f failed, next (submitted
// behind it, or nil) is abandoned, and the sequences of both are
// recomputed (failBatch); collect then reports false.
func (s *Scheduler) collect(f, next *flight) bool {
	err := f.wait()
	f.cancel()
	done := time.Now()
	if err != nil {
		s.log.Error("step failed", zap.Int("batch", len(f.b.Seqs)), zap.Error(err))
		if next != nil {
			s.abandon(next)
		}
		s.failBatch(fmt.Errorf("sched: step: %w", err))
		s.noteKV(false)
		s.lastDone = done
		return false
	}
	if s.opts.OnStep != nil {
		tokens := 0
		for i := range f.b.Seqs {
			tokens += len(f.b.Seqs[i].Tokens)
		}
		// The executor's time: from when it could start this step (sent,
		// or the step before it ended) to its end.
		s.opts.OnStep(len(f.b.Seqs), tokens, done.Sub(later(f.sent, s.lastDone)))
	}
	s.lastDone = done
	s.deliver(f)
	s.noteKV(false)
	if s.opts.checkKV && s.kv != nil {
		if err := s.kv.check(s.batch); err != nil {
			panic(err)
		}
	}
	return true
}

// abandon cancels a submitted step and waits for it to let go; its
// sequences are retired or recomputed by the caller (their entries still
// count as in flight, which failBatch reads).
func (s *Scheduler) abandon(f *flight) {
	f.cancel()
	_ = f.wait()
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// reap drops cancelled or expired sequences, queued and running.
func (s *Scheduler) reap() {
	now := time.Now()
	s.retire(func(q *sequence) bool {
		r, err, dead := q.dead()
		if dead {
			s.finish(q, r, err)
		}
		return dead
	})

	s.mu.Lock()
	var expired []*sequence
	for name, qs := range s.waiting {
		kept := qs[:0]
		for _, q := range qs {
			if _, _, dead := q.dead(); dead || now.Sub(q.enqueued) > q.req.Profile.Scheduling.QueueTimeout {
				expired = append(expired, q)
				continue
			}
			kept = append(kept, q)
		}
		clear(qs[len(kept):])
		s.waiting[name] = kept
	}
	s.mu.Unlock()
	for _, q := range expired {
		if r, err, dead := q.dead(); dead {
			q.close(&Final{Reason: r, Err: err, PromptTokens: len(q.req.Prompt)})
			continue
		}
		q.close(&Final{Reason: FinishError, Err: ErrQueueTimeout, PromptTokens: len(q.req.Prompt), Queue: now.Sub(q.enqueued)})
	}
}

// admit moves waiting sequences into the batch, rotating over profiles so a
// busy profile cannot starve the others, within the global and per-profile
// caps.
func (s *Scheduler) admit() {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.order)
	for progress := true; progress && len(s.batch) < s.opts.MaxRunning; {
		progress = false
		for i := 0; i < n && len(s.batch) < s.opts.MaxRunning; i++ {
			name := s.order[(s.rr+i)%n]
			qs := s.waiting[name]
			if len(qs) == 0 {
				continue
			}
			q := qs[0]
			if s.running[name] >= q.req.Profile.Scheduling.MaxBatch {
				continue
			}
			qs[0] = nil
			s.waiting[name] = qs[1:]
			s.running[name]++
			q.admitted = now
			q.running = true
			s.batch = append(s.batch, q)
			progress = true
		}
		s.rr++
	}
}

// build fills f with this step's work: one token for every decoding
// sequence, then prompt chunks in admission order within the step budget.
// A sequence feeds the part of its tokens not yet in the KV cache (all of
// them after a preemption) and samples when the chunk reaches the end.
// Positions and draws of a step in flight count as done: a sequence that
// draws there Follows that draw here, and one whose draw there reaches
// max_tokens sits this step out (the draw ends it).
func (s *Scheduler) build(f *flight) {
	b := &f.b
	b.Seqs = b.Seqs[:0]
	clear(f.entries)
	f.entries = f.entries[:0]
	budget := s.opts.MaxStepTokens
	for _, q := range s.batch {
		if q.left() == 1 {
			budget--
		}
	}
	var active uint64 // the one suspect group this step runs (failBatch)
	var victims, tooBig []*sequence
	end := len(s.batch) // sequences from end on were preempted for room
	for i, q := range s.batch {
		q.stepIdx = -1
		if i >= end {
			continue
		}
		if s.kv != nil && q.prefilled == 0 && q.inFlight == 0 {
			// A new (or recomputed) sequence maps the blocks of its prefix
			// that are cached and starts computing after them.
			q.prefilled = s.kv.match(q)
			if !q.matched {
				q.reused, q.matched = min(q.prefilled, len(q.req.Prompt)), true
			}
		}
		if q.group != 0 {
			// Sequences of a failed step run with at most one suspect
			// group per step, so that a failure is blamed on one group.
			if active == 0 {
				active = q.group
			} else if q.group != active {
				continue
			}
		}
		if q.generated+q.aheadDraws >= q.req.MaxTokens {
			continue
		}
		from, left := q.prefilled+q.ahead, q.left()
		n := 1
		if left > 1 {
			if budget <= 0 {
				continue
			}
			n = min(left, q.req.Profile.Scheduling.PrefillChunk, budget)
			budget -= n
		}
		if s.kv != nil {
			// Room for this chunk: take it from the most recently admitted
			// sequences not yet placed in this step (they are recomputed
			// later), or let this one wait if there are none. A sequence
			// with a step in flight waits for it instead (its delivery
			// frees the sliding blocks behind the window, see reserve):
			// under pressure the loop falls back to one step at a time.
			for !s.kv.reserve(q, q.prefilled, from+n) && q.inFlight == 0 && end-1 > i {
				end--
				v := s.batch[end]
				s.kv.release(v)
				victims = append(victims, v)
			}
			if len(q.blocks)*s.kv.geo.BlockSize < from+n {
				if i == 0 && q.inFlight == 0 {
					// Every other sequence gave up its blocks and this one
					// still does not fit: it never will (admission bounds
					// requests by the pool, so this is a safety net).
					tooBig = append(tooBig, q)
				}
				if left > 1 {
					budget += n
				}
				continue
			}
		}
		follow := from >= len(q.tokens)
		input := followInput
		if !follow {
			input = q.tokens[from : from+n]
		}
		sample := n == left
		q.stepIdx = len(b.Seqs)
		b.Seqs = append(b.Seqs, step.Seq{
			ID: q.id, Tokens: input, Pos: from, Sample: sample, Follow: follow, Sampling: &q.req.Sampling,
			Blocks: q.blocks, SlidingBlocks: q.sliding,
		})
		f.entries = append(f.entries, entry{q: q, id: q.id, chunk: n})
		q.ahead += n
		q.inFlight++
		if sample {
			q.aheadDraws++
		}
	}
	if len(victims)+len(tooBig) > 0 {
		s.retire(func(q *sequence) bool {
			switch {
			case slices.Contains(victims, q):
				s.preempt(q)
			case slices.Contains(tooBig, q):
				s.finish(q, FinishError, fmt.Errorf("%w: %d positions", ErrKVCapacity, len(q.tokens)))
			default:
				return false
			}
			return true
		})
	}
}

// followInput is the input of every Follow entry: a placeholder (the
// executor feeds the sequence's own draw).
var followInput = []int{step.FollowToken}

// left is how many of q's tokens its next step has to feed: those not in
// the KV cache nor in a step in flight, counting that step's draw.
func (q *sequence) left() int { return len(q.tokens) + q.aheadDraws - q.prefilled - q.ahead }

// guide fills the allowed tokens of every guided sequence that samples in
// b, computing the masks in parallel (each Guide is independent). A Guide
// that fails leaves its sequence unconstrained for this step and the
// sequence fails when the step delivers.
func (s *Scheduler) guide(b *step.Batch) {
	guided := s.guided[:0]
	for _, q := range s.batch {
		// A Follow entry's mask would need the token it follows; the loop
		// pipelines only when that mask is free (pipeline).
		if q.stepIdx >= 0 && q.req.Guide != nil && b.Seqs[q.stepIdx].Sample && !b.Seqs[q.stepIdx].Follow {
			guided = append(guided, q)
		}
	}
	s.guided = guided // reused from step to step; cleared below
	defer clear(guided)
	if len(guided) == 0 {
		return
	}
	t0 := time.Now()
	var masks atomic.Int64
	parallel.Each(len(guided), func(i int) {
		q := guided[i]
		q.guideErr = nil
		mask, err := q.req.Guide.Mask()
		if err != nil {
			q.guideErr = err
			return
		}
		if mask != nil {
			masks.Add(1)
		}
		b.Seqs[q.stepIdx].Allow = mask
	})
	if n := int(masks.Load()); n > 0 && s.opts.OnGuide != nil {
		s.opts.OnGuide(n, time.Since(t0))
	}
}

// setupKV starts managing block tables once the executor reports a KV
// geometry (remote workers report theirs when the model is loaded).
func (s *Scheduler) setupKV() {
	if s.kv != nil || s.kvErr {
		return
	}
	g := s.exec.Capabilities().KV
	if g == nil {
		return
	}
	if err := g.Validate(); err != nil {
		s.log.Error("executor reported an unusable KV geometry; block tables stay with the executor", zap.Error(err))
		s.kvErr = true
		return
	}
	s.kv = newKVManager(*g, !s.opts.NoPrefixCache)
	s.log.Info("managing KV block tables", zap.Int("blocks", g.Blocks), zap.Int("sliding_blocks", g.SlidingBlocks),
		zap.Int("block_size", g.BlockSize), zap.Int("sliding_window", g.SlidingWindow))
}

// kvNoteEvery bounds how often a busy loop publishes the pools' occupancy.
const kvNoteEvery = 100 * time.Millisecond

// KV reports the block pools' occupancy (nil when the executor keeps its
// own memory), as of the last step at most kvNoteEvery ago, or of the
// last idle moment.
func (s *Scheduler) KV() *KVUsage { return s.usage.Load() }

// noteKV publishes the pools' occupancy (loop goroutine). Counting the
// blocks only the prefix cache holds walks the cache, so between steps it
// runs at most every kvNoteEvery; idle, always.
func (s *Scheduler) noteKV(idle bool) {
	if s.kv == nil || (!idle && time.Since(s.kvNoted) < kvNoteEvery) {
		return
	}
	s.kvNoted = time.Now()
	u := s.kv.usage()
	for _, q := range s.batch {
		if len(q.blocks) > 0 {
			u.Sequences++
		}
	}
	s.usage.Store(u)
}

// deliver hands the sampled tokens of a step to their streams and retires
// sequences that hit a stop token or their budget. Entries of sequences
// that left the batch since the step was submitted (finished, cancelled,
// preempted) are dropped: a draw past a stop is never sent.
func (s *Scheduler) deliver(f *flight) {
	now := time.Now()
	leaving := false
	for i, e := range f.entries {
		q := e.q
		if !q.running || q.id != e.id {
			continue
		}
		st := &f.b.Seqs[i]
		q.ahead -= e.chunk
		q.inFlight--
		if st.Sample {
			q.aheadDraws--
		}
		if st.Preempted {
			// Leaves the batch; its (already dropped) state is released.
			q.leave, q.requeue, leaving = true, true, true
			continue
		}
		if st.Err != nil {
			// The executor refused this sequence alone (its sampling
			// parameters); the rest of the step ran.
			s.finish(q, FinishError, st.Err)
			q.leave, leaving = true, true
			continue
		}
		if q.group != 0 {
			if q.good++; q.good >= clearAfter {
				q.group, q.good = 0, 0
			}
		}
		q.prefilled += e.chunk
		if s.kv != nil {
			s.kv.remember(q, q.prefilled)
		}
		if !st.Sample {
			continue
		}
		tok := st.Out
		tok.At = now
		if g := q.req.Guide; g != nil {
			err := q.guideErr
			if err == nil {
				err = g.Accept(tok.ID)
			}
			if err != nil {
				s.finish(q, FinishError, fmt.Errorf("%w: %w", ErrGuide, err))
				q.leave, leaving = true, true
				continue
			}
		}
		q.generated++
		q.tokens = append(q.tokens, tok.ID)
		q.push(tok)
		switch {
		case slices.Contains(q.req.StopTokens, tok.ID):
			s.finish(q, FinishStop, nil)
		case q.generated >= q.req.MaxTokens:
			s.finish(q, FinishLength, nil)
		default:
			continue
		}
		q.leave, leaving = true, true
	}
	if !leaving {
		return
	}
	s.retire(func(q *sequence) bool {
		if !q.leave {
			return false
		}
		if q.requeue {
			s.preempt(q)
		}
		q.leave, q.requeue = false, false
		return true
	})
}

// preempt puts a running sequence back at the front of its queue; it will
// be recomputed from its prompt and the tokens it generated so far. A
// sequence that had nothing cached yet (its first chunk found no room) is
// only deferred, and not counted as a preemption.
func (s *Scheduler) preempt(q *sequence) {
	lost := q.prefilled > 0
	s.requeue(q)
	if lost {
		s.log.Debug("preempted", zap.String("request_id", q.req.ID), zap.Int("tokens", len(q.tokens)))
		if s.opts.OnPreempt != nil {
			s.opts.OnPreempt(q.req.Profile.Name)
		}
	}
}

// requeue puts a running sequence back at the front of its queue, to be
// recomputed from its prompt and generated tokens. It gets a new id: the
// executor's state for the old one is released (retire), and ids are never
// reused, so a late release can never hit the recomputed sequence.
func (s *Scheduler) requeue(q *sequence) {
	q.prefilled, q.ahead, q.aheadDraws, q.inFlight = 0, 0, 0, 0
	q.running = false
	q.id = s.nextID.Add(1)
	q.enqueued = time.Now() // its queue timeout starts again
	name := q.req.Profile.Name
	s.mu.Lock()
	s.running[name]--
	s.waiting[name] = append([]*sequence{q}, s.waiting[name]...)
	s.mu.Unlock()
}

// failBatch handles a failed step (a worker died or hung, or the engine
// returned an error). The step's sequences are recomputed rather than
// failed, since a failure is usually not their fault (a worker killed, a
// busy machine): when the step had no suspects, they all become one
// suspect group and are retried together, so an infrastructure failure
// costs one recomputation. A step runs at most one suspect group (build);
// when it fails again, the group is split in halves, and a suspect that
// fails as the only one of its step is refused (ErrEngineFailed, or
// ErrEngineTimeout when the step ran past its deadline): a request that
// crashes the workers is found in a few bisections without blaming its
// companions, and the clean sequences of a suspect's step are not blamed
// either. Suspects that run clearAfter steps without failing are clean
// again.
func (s *Scheduler) failBatch(err error) {
	var suspects []*sequence // of the step's one suspect group
	for _, q := range s.batch {
		if q.inFlight > 0 && q.group != 0 {
			suspects = append(suspects, q)
		}
	}
	group := s.nextGroup + 1 // a clean step's sequences all become suspects
	halves := [2]uint64{s.nextGroup + 2, s.nextGroup + 3}
	s.nextGroup += 3
	retried, refused := 0, 0
	s.retire(func(q *sequence) bool {
		if q.inFlight == 0 {
			return false
		}
		switch i := slices.Index(suspects, q); {
		case len(suspects) == 1 && i == 0:
			s.finish(q, FinishError, refusal(err))
			refused++
			return true
		case i >= 0:
			q.group = halves[2*i/len(suspects)]
		case len(suspects) == 0:
			q.group = group
		}
		// Clean companions of suspects are not blamed: they stay clean.
		q.good = 0
		s.requeue(q)
		retried++
		return true
	})
	if s.opts.OnStepFailure != nil {
		s.opts.OnStepFailure(retried, refused)
	}
}

// clearAfter is how many steps a suspect must run without a failure to be
// clean again. A request that crashes the engine at some point of its
// generation crashes it again right after its recomputation (a few prompt
// chunks), long before; an innocent one is cleared, so that one crash of a
// worker does not isolate its companions for the rest of their lives.
const clearAfter = 16

// refusal is the error of a sequence refused after failed steps: a
// retryable timeout when the last failure was the step's deadline.
func refusal(err error) error {
	if errors.Is(err, step.ErrTimeout) {
		return fmt.Errorf("%w: %w", ErrEngineTimeout, err)
	}
	return fmt.Errorf("%w: %w", ErrEngineFailed, err)
}

// retire removes the running sequences for which drop returns true (drop
// has already finished them) and releases their executor state.
func (s *Scheduler) retire(drop func(*sequence) bool) {
	var released []uint64
	keep := s.batch[:0]
	for _, q := range s.batch {
		id := q.id // drop may requeue q under a new id
		if drop(q) {
			q.running = false
			if s.kv != nil {
				s.kv.release(q)
			}
			released = append(released, id)
			continue
		}
		keep = append(keep, q)
	}
	clear(s.batch[len(keep):])
	s.batch = keep
	if len(released) > 0 {
		s.exec.Release(released)
	}
}

func (s *Scheduler) abortAll() {
	s.retire(func(q *sequence) bool {
		s.finish(q, FinishAbort, ErrAborted)
		return true
	})
	s.mu.Lock()
	var queued []*sequence
	for name, qs := range s.waiting {
		queued = append(queued, qs...)
		delete(s.waiting, name)
	}
	s.mu.Unlock()
	for _, q := range queued {
		q.close(&Final{Reason: FinishAbort, Err: ErrAborted, PromptTokens: len(q.req.Prompt)})
	}
}

// finish retires a running sequence.
func (s *Scheduler) finish(q *sequence, r FinishReason, err error) {
	s.mu.Lock()
	s.running[q.req.Profile.Name]--
	s.mu.Unlock()
	q.close(&Final{
		Reason: r, Err: err,
		PromptTokens: len(q.req.Prompt), CompletionTokens: q.generated, CachedTokens: q.reused, CacheWriteTokens: q.written,
		Queue: q.admitted.Sub(q.enqueued),
	})
}
