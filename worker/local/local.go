// Package local runs the engine in-process behind the executor contract
// (step.Executor, shared/step): it keeps a sampler per sequence and turns
// each scheduler step, with the scheduler's block tables, into one engine
// step. Worker processes run it behind NATS (worker/service);
// scripts/integration runs it in process under the real scheduler and API.
package local

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/gptoss/server/shared/model"
	"github.com/gptoss/server/shared/parallel"
	"github.com/gptoss/server/shared/step"
	"github.com/gptoss/server/worker/engine"
	"github.com/gptoss/server/worker/sample"
)

// Model is what the executor steps: an engine.Model, or the CUDA
// backend's graph-replaying wrapper of one (cuda.GraphModel).
type Model interface {
	Step(seqs []engine.Seq) ([][][]float32, error)
	Geometry() engine.KVGeometry
}

// Executor is an in-process step.Executor over a Model. The
// scheduler owns the KV block tables (they come with every step); the
// executor keeps a sampler and the cached length per sequence.
type Executor struct {
	m      Model
	window int // the sliding layers' window, 0 if none
	seqs   map[uint64]*seqState
	// gone holds the sequences rejected in a step, until their release:
	// a pipelined step sent behind that one may still name them.
	gone   map[uint64]bool
	steps  []engine.Seq
	owners []*seqState  // the state of each entry of steps
	index  []int        // the batch entry of each entry of steps
	live   atomic.Int64 // len(seqs), readable from any goroutine
	sample []int        // indices of this step's sequences that sample
}

type seqState struct {
	sampler *sample.Sampler
	next    int // positions in the cache
	// last is the token drawn in the sequence's latest sampling step
	// (drew: there was one), the input of a Follow entry.
	last  int
	drew  bool
	input [1]int
}

// New returns an executor over m, a model of configuration cfg.
func New(m Model, cfg *model.Config) *Executor {
	return &Executor{m: m, window: slidingWindow(cfg), seqs: map[uint64]*seqState{}, gone: map[uint64]bool{}}
}

// Capabilities: logprobs (the sampler computes them and Step passes them
// on) and the KV geometry the scheduler allocates in.
func (e *Executor) Capabilities() step.Capabilities {
	g := e.m.Geometry()
	return step.Capabilities{Logprobs: true, KVTokens: g.Blocks * g.BlockSize, KV: &step.KVGeometry{
		BlockSize: g.BlockSize, Blocks: g.Blocks, SlidingBlocks: g.SlidingBlocks, SlidingWindow: e.window}}
}

// slidingWindow is the window of the model's sliding layers, 0 if none.
func slidingWindow(c *model.Config) int {
	for l := range c.Layers {
		if c.Sliding(l) {
			return c.SlidingWindow
		}
	}
	return 0
}

// Step runs one engine step for the batch and samples where asked. A
// sequence whose sampling parameters the sampler refuses is rejected alone
// (Seq.Err, wrapping step.ErrRejected): it runs nothing and keeps no state,
// and the rest of the batch runs.
//
// A sequence's Seq.Allow restricts its draw to those tokens
// (sample.SampleAllowed). One whose allowed tokens all have −Inf or NaN
// logits is rejected alone the same way, after the forward pass: its set
// is at fault, not the step (the other ranks forget it when the scheduler
// releases it).
func (e *Executor) Step(_ context.Context, b *step.Batch) error {
	e.steps, e.owners, e.index = e.steps[:0], e.owners[:0], e.index[:0]
	for i := range b.Seqs {
		st := &b.Seqs[i]
		if st.Blocks == nil {
			return fmt.Errorf("local: sequence %d has no block table (the scheduler allocates the KV cache)", st.ID)
		}
		s := e.seqs[st.ID]
		if e.gone[st.ID] || (s == nil && st.Follow) {
			// Rejected in the step before, which this one was sent behind
			// (step.Seq.Follow): the scheduler has retired it already.
			st.Err = fmt.Errorf("%w: sequence %d was dropped in the step before", step.ErrRejected, st.ID)
			continue
		}
		if s == nil {
			// A sequence may start past 0: the scheduler mapped blocks of
			// a cached prefix into its tables.
			s = &seqState{next: st.Pos}
		}
		if st.Pos != s.next {
			return fmt.Errorf("local: sequence %d: step at position %d, cache holds %d", st.ID, st.Pos, s.next)
		}
		if s.sampler == nil && (st.Sample || st.Sampling != nil) {
			sp, err := newSampler(st.Sampling)
			if err != nil {
				st.Err = fmt.Errorf("%w: sequence %d: %w", step.ErrRejected, st.ID, err)
				e.reject(st.ID)
				continue
			}
			s.sampler = sp
		}
		if _, ok := e.seqs[st.ID]; !ok {
			e.seqs[st.ID] = s
			e.live.Add(1)
		}
		tokens := st.Tokens
		if st.Follow {
			if !s.drew || len(tokens) != 1 {
				return fmt.Errorf("local: sequence %d follows a step that drew no token for it", st.ID)
			}
			s.input[0] = s.last
			tokens = s.input[:]
		}
		e.steps = append(e.steps, engine.Seq{Tokens: tokens, Pos: st.Pos, Blocks: st.Blocks, SlidingBlocks: st.SlidingBlocks})
		e.owners = append(e.owners, s)
		e.index = append(e.index, i)
	}
	if len(e.steps) == 0 {
		return nil
	}
	logits, err := e.m.Step(e.steps)
	if err != nil {
		return err
	}
	e.sample = e.sample[:0]
	for k, i := range e.index {
		st := &b.Seqs[i]
		e.owners[k].next = st.Pos + len(st.Tokens)
		if st.Sample {
			e.sample = append(e.sample, k)
		}
	}
	// Each sequence has its own sampler (and random generator), so they
	// run in parallel: over a 201 088-token vocabulary, sampling a batch
	// one sequence at a time costs more than the small models' forward
	// pass. Each goroutine writes only its own sequence's entry (Out, Err)
	// and reads the others' nothing; the executor's map is touched after.
	errs := make([]error, len(e.sample))
	rejected := make([]bool, len(e.sample))
	parallel.Each(len(e.sample), func(j int) {
		k := e.sample[j]
		st := &b.Seqs[e.index[k]]
		sp := e.owners[k].sampler
		r, err := sp.SampleAllowed(logits[k][0], st.Allow)
		if errors.Is(err, sample.ErrNoneAllowed) {
			st.Err = fmt.Errorf("%w: sequence %d: %w", step.ErrRejected, st.ID, err)
			rejected[j] = true
			return
		}
		if err != nil {
			errs[j] = fmt.Errorf("local: sequence %d: %w", st.ID, err)
			return
		}
		sp.Accept(r.Token)
		e.owners[k].last, e.owners[k].drew = r.Token, true
		out := step.Token{ID: r.Token, Logprob: r.Logprob}
		for _, t := range r.Top {
			out.TopLogprobs = append(out.TopLogprobs, step.TokenLogprob{ID: t.ID, Logprob: t.Logprob})
		}
		st.Out = out
	})
	for j, k := range e.sample {
		if rejected[j] {
			e.reject(b.Seqs[e.index[k]].ID)
		}
	}
	return errors.Join(errs...)
}

// reject drops a sequence the executor refused, and remembers it until
// its release: a pipelined step sent behind this one may still name it.
func (e *Executor) reject(id uint64) {
	e.drop(id)
	e.gone[id] = true
}

// drop forgets one sequence's state, if it has any.
func (e *Executor) drop(id uint64) {
	if _, ok := e.seqs[id]; ok {
		delete(e.seqs, id)
		e.live.Add(-1)
	}
}

func newSampler(p *step.Sampling) (*sample.Sampler, error) {
	sp := sample.Params{TopP: 1}
	if p != nil {
		sp = sample.Params{Temperature: p.Temperature, TopP: p.TopP, TopK: p.TopK, MinP: p.MinP,
			PresencePenalty: p.PresencePenalty, FrequencyPenalty: p.FrequencyPenalty,
			Seed: uint64(p.Seed), HasSeed: p.HasSeed, Logprobs: p.Logprobs, TopLogprobs: p.TopLogprobs}
		if sp.TopP == 0 {
			// OpenAI accepts top_p 0: only the most likely token survives.
			sp.TopP, sp.Temperature = 1, 0
		}
	}
	return sample.New(sp)
}

// Release forgets finished sequences (their blocks are the scheduler's).
func (e *Executor) Release(ids []uint64) {
	for _, id := range ids {
		e.drop(id)
		delete(e.gone, id)
	}
}

// Sequences reports how many sequences the executor holds state for, for
// leak checks.
// Safe from any goroutine.
func (e *Executor) Sequences() int { return int(e.live.Load()) }
