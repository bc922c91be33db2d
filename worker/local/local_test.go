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
