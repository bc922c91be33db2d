package local

import (
	"context"
	"errors"
	"testing"

	"github.com/gptoss/server/shared/model"
	"github.com/gptoss/server/shared/step"
	"github.com/gptoss/server/worker/engine"
)

// One sequence's bad sampling parameters reject that sequence alone: its
// companions in the step run and sample, and the executor keeps no state
// for it.
func TestBadSamplingRejectsOneSequence(t *testing.T) {
	cfg := model.Presets["tiny"].Architecture()
	cfg.Vocab, cfg.Layers = 300, 2
	cache, err := engine.NewKVCache(&cfg, 16, 16, 8)
	if err != nil {
		t.Fatal(err)
	}
	m, err := engine.NewModel(engine.DummyWeights(cfg, 3, 0), cache)
	if err != nil {
		t.Fatal(err)
	}
	e := New(m, &cfg)
	good := &step.Sampling{TopP: 1}
	for _, bad := range []*step.Sampling{
		{TopP: 1, TopK: -5},
		{TopP: 1, Logprobs: true, TopLogprobs: 1 << 30},
		{TopP: 2},
	} {
		b := &step.Batch{Seqs: []step.Seq{
			{ID: 1, Tokens: []int{5, 6, 7}, Sample: true, Sampling: good, Blocks: []int{0}, SlidingBlocks: []int{1}},
			{ID: 2, Tokens: []int{8, 9}, Sample: true, Sampling: bad, Blocks: []int{2}, SlidingBlocks: []int{3}},
			{ID: 3, Tokens: []int{10}, Sample: true, Sampling: good, Blocks: []int{4}, SlidingBlocks: []int{5}},
		}}
		if err := e.Step(context.Background(), b); err != nil {
			t.Fatalf("%+v: the step failed: %v", bad, err)
		}
		if !errors.Is(b.Seqs[1].Err, step.ErrRejected) {
			t.Fatalf("%+v: sequence 2 not rejected: %v", bad, b.Seqs[1].Err)
		}
		if b.Seqs[0].Err != nil || b.Seqs[2].Err != nil {
			t.Fatalf("%+v: companions rejected: %v, %v", bad, b.Seqs[0].Err, b.Seqs[2].Err)
		}
		if e.Sequences() != 2 {
			t.Fatalf("%+v: the executor holds %d sequences, want 2", bad, e.Sequences())
		}
		// The companions go on decoding from where they are.
		b = &step.Batch{Seqs: []step.Seq{
			{ID: 1, Tokens: []int{b.Seqs[0].Out.ID}, Pos: 3, Sample: true, Sampling: good, Blocks: []int{0}, SlidingBlocks: []int{1}},
			{ID: 3, Tokens: []int{b.Seqs[2].Out.ID}, Pos: 1, Sample: true, Sampling: good, Blocks: []int{4}, SlidingBlocks: []int{5}},
		}}
		if err := e.Step(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		e.Release([]uint64{1, 2, 3})
		if e.Sequences() != 0 {
			t.Fatalf("after release: %d sequences", e.Sequences())
		}
	}
}

// A step whose sequences have different sets of allowed tokens: each draw
// keeps to its own sequence's set (or to none), over several decode steps
// sampled in parallel; a sequence whose set allows nothing is rejected
// alone.
func TestAllowPerSequence(t *testing.T) {
	cfg := model.Presets["tiny"].Architecture()
	cfg.Vocab, cfg.Layers = 300, 2
	newExec := func() *Executor {
		cache, err := engine.NewKVCache(&cfg, 16, 16, 8)
		if err != nil {
			t.Fatal(err)
		}
		m, err := engine.NewModel(engine.DummyWeights(cfg, 3, 0), cache)
		if err != nil {
			t.Fatal(err)
		}
		return New(m, &cfg)
	}
	only := func(ids ...int) []uint32 {
		a := make([]uint32, (cfg.Vocab+31)/32)
		for _, id := range ids {
			a[id/32] |= 1 << (id % 32)
		}
		return a
	}
	forced := only(123)
	few := only(7, 64, 65, 250, 299)
	greedy, hot := &step.Sampling{TopP: 1, Logprobs: true}, &step.Sampling{Temperature: 1, TopP: 1, Seed: 1, HasSeed: true}
	seqs := []step.Seq{
		{ID: 1, Tokens: []int{5, 6, 7}, Sample: true, Sampling: hot, Allow: forced},
		{ID: 2, Tokens: []int{8, 9}, Sample: true, Sampling: greedy},
		{ID: 3, Tokens: []int{10}, Sample: true, Sampling: hot, Allow: few},
		{ID: 4, Tokens: []int{11, 12}, Sample: true, Sampling: greedy, Allow: few},
	}
	for i := range seqs {
		seqs[i].Blocks, seqs[i].SlidingBlocks = []int{2 * i}, []int{2 * i}
	}
	// The reference: the unconstrained greedy sequence 2 alone.
	ref := newExec()
	alone := step.Batch{Seqs: []step.Seq{seqs[1]}}
	e := newExec()
	for range 4 {
		b := &step.Batch{Seqs: append([]step.Seq(nil), seqs...)}
		if err := e.Step(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		if err := ref.Step(context.Background(), &alone); err != nil {
			t.Fatal(err)
		}
		if out := b.Seqs[0].Out; out.ID != 123 || out.Logprob != 0 {
			t.Fatalf("forced sequence: %+v, want token 123", out)
		}
		if b.Seqs[1].Out.ID != alone.Seqs[0].Out.ID || b.Seqs[1].Out.Logprob != alone.Seqs[0].Out.Logprob {
			t.Fatalf("unconstrained sequence: %+v, alone %+v", b.Seqs[1].Out, alone.Seqs[0].Out)
		}
		for _, i := range []int{2, 3} {
			if !step.Allowed(few, b.Seqs[i].Out.ID) {
				t.Fatalf("sequence %d drew %d, outside its set", seqs[i].ID, b.Seqs[i].Out.ID)
			}
		}
		for i := range seqs {
			seqs[i].Pos += len(seqs[i].Tokens)
			seqs[i].Tokens = []int{b.Seqs[i].Out.ID}
		}
		alone.Seqs[0].Pos += len(alone.Seqs[0].Tokens)
		alone.Seqs[0].Tokens = []int{alone.Seqs[0].Out.ID}
	}
	// An empty set: that sequence alone is rejected, its state dropped.
	seqs[2].Allow = only()
	b := &step.Batch{Seqs: append([]step.Seq(nil), seqs...)}
	if err := e.Step(context.Background(), b); err != nil {
		t.Fatalf("the step failed: %v", err)
	}
	if !errors.Is(b.Seqs[2].Err, step.ErrRejected) || b.Seqs[0].Err != nil || b.Seqs[1].Err != nil || b.Seqs[3].Err != nil {
		t.Fatalf("errors %v %v %v %v", b.Seqs[0].Err, b.Seqs[1].Err, b.Seqs[2].Err, b.Seqs[3].Err)
	}
	if e.Sequences() != 3 {
		t.Fatalf("the executor holds %d sequences, want 3", e.Sequences())
	}
}
