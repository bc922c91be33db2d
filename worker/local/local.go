// Package local runs the CPU engine in-process behind the coordinator's
// scheduler boundary (sched.Executor): it owns the KV block tables and a
// sampler per sequence, and turns each scheduler step into one engine
// step. It exists so that tests (and development) can drive a real model
// through the real scheduler and API before the worker processes, which
// will implement the same contract over NATS, land.
package local

import (
	"context"
	"errors"
	"fmt"

	"github.com/gptoss/server/coordinator/sched"
	"github.com/gptoss/server/worker/engine"
	"github.com/gptoss/server/worker/sample"
)

// Executor is an in-process sched.Executor over an engine.Model.
type Executor struct {
	m             *engine.Model
	full, sliding *engine.Allocator
	seqs          map[uint64]*seqState
	steps         []engine.Seq
	owners        []*seqState
}

type seqState struct {
	blocks, sliding []int
	sampler         *sample.Sampler
	next            int // positions in the cache
}

// New returns an executor over m; the allocators own its backend's full
// and sliding block pools.
func New(m *engine.Model) *Executor {
	g := m.Geometry()
	return &Executor{m: m, full: engine.NewAllocator(g.Blocks), sliding: engine.NewAllocator(g.SlidingBlocks),
		seqs: map[uint64]*seqState{}}
}

// Capabilities: the sampler computes logprobs and they reach the scheduler's
// tokens, but the API does not write them into responses yet, so they are
// not offered (a logprobs request is refused rather than answered without).
func (e *Executor) Capabilities() sched.Capabilities {
	g := e.m.Geometry()
	return sched.Capabilities{KVTokens: g.Blocks * g.BlockSize}
}

// Step runs one engine step for the batch and samples where asked.
func (e *Executor) Step(_ context.Context, b *sched.Batch) error {
	bs := e.m.Geometry().BlockSize
	window := e.m.W.Config.SlidingWindow
	e.steps, e.owners = e.steps[:0], e.owners[:0]
	for i := range b.Seqs {
		st := &b.Seqs[i]
		s := e.seqs[st.ID]
		if s == nil {
			if st.Pos != 0 {
				return fmt.Errorf("local: sequence %d starts at position %d without state", st.ID, st.Pos)
			}
			s = &seqState{}
			e.seqs[st.ID] = s
		}
		if st.Pos != s.next {
			return fmt.Errorf("local: sequence %d: step at position %d, cache holds %d", st.ID, st.Pos, s.next)
		}
		end := st.Pos + len(st.Tokens)
		var err error
		if s.blocks, err = e.full.Grow(s.blocks, end, bs); err == nil {
			s.sliding, err = e.sliding.Grow(s.sliding, end, bs)
		}
		if errors.Is(err, engine.ErrNoBlocks) {
			// The cache is full: drop this sequence (its blocks go back to
			// the pool at once) and let the scheduler recompute it later.
			st.Preempted = true
			e.Release([]uint64{st.ID})
			e.owners = append(e.owners, nil)
			continue
		}
		if err != nil {
			return fmt.Errorf("local: sequence %d: %w", st.ID, err)
		}
		e.steps = append(e.steps, engine.Seq{Tokens: st.Tokens, Pos: st.Pos, Blocks: s.blocks, SlidingBlocks: s.sliding})
		e.owners = append(e.owners, s)
	}
	if len(e.steps) == 0 {
		return nil // everything was preempted
	}
	logits, err := e.m.Step(e.steps)
	if err != nil {
		return err
	}
	k := 0 // index among the sequences that ran
	for i := range b.Seqs {
		st := &b.Seqs[i]
		s := e.owners[i]
		if s == nil {
			continue // preempted
		}
		row := logits[k][0]
		k++
		s.next = st.Pos + len(st.Tokens)
		e.sliding.Trim(s.sliding, s.next, window, bs)
		if !st.Sample {
			continue
		}
		if s.sampler == nil {
			if s.sampler, err = newSampler(st.Sampling); err != nil {
				return fmt.Errorf("local: sequence %d: %w", st.ID, err)
			}
		}
		r, err := s.sampler.Sample(row)
		if err != nil {
			return fmt.Errorf("local: sequence %d: %w", st.ID, err)
		}
		s.sampler.Accept(r.Token)
		out := sched.Token{ID: r.Token, Logprob: r.Logprob}
		for _, t := range r.Top {
			out.TopLogprobs = append(out.TopLogprobs, sched.TokenLogprob{ID: t.ID, Logprob: t.Logprob})
		}
		st.Out = out
	}
	return nil
}

func newSampler(p *sched.Sampling) (*sample.Sampler, error) {
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

// Release frees finished sequences' blocks.
func (e *Executor) Release(ids []uint64) {
	for _, id := range ids {
		if s := e.seqs[id]; s != nil {
			e.full.Free(s.blocks)
			e.sliding.Free(s.sliding)
			delete(e.seqs, id)
		}
	}
}

// TotalBlocks reports the sizes of the full and sliding block pools.
func (e *Executor) TotalBlocks() (full, sliding int) {
	g := e.m.Geometry()
	return g.Blocks, g.SlidingBlocks
}

// FreeBlocks reports the free full and sliding blocks, for leak tests.
func (e *Executor) FreeBlocks() (full, sliding int) { return e.full.Available(), e.sliding.Available() }
