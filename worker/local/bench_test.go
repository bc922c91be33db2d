package local

import (
	"context"
	"fmt"
	"testing"

	"github.com/gptoss/server/shared/model"
	"github.com/gptoss/server/shared/step"
	"github.com/gptoss/server/worker/engine"
)

// BenchmarkDecodeStepTiny times one decode step of the tiny model (full
// 201 088-token vocabulary) through Executor.Step: the forward pass, the
// unembedding and sampling, for 1 and 32 sequences, at temperature 1
// (top-p 1: one exponential per vocabulary entry) and greedy (what
// scripts/bench asks for). The per-token costs that batching does not
// amortise (the unembedding's rows and the sampler's pass over the
// vocabulary) dominate. tok/s is sequences × steps per second.
func BenchmarkDecodeStepTiny(b *testing.B) {
	for _, temp := range []float64{1, 0} {
		for _, n := range []int{1, 32} {
			b.Run(fmt.Sprintf("temp=%g/seqs=%d", temp, n), func(b *testing.B) { benchDecodeStep(b, n, temp) })
		}
	}
}

func benchDecodeStep(b *testing.B, n int, temp float64) {
	const prompt, span = 16, 48 // decode positions [prompt, prompt+span), then restart
	cfg := model.Presets["tiny"].Architecture()
	w := engine.DummyWeights(cfg, 3, 0)
	blockSize := 16
	perSeq := (prompt + span + blockSize - 1) / blockSize
	cache, err := engine.NewKVCache(&w.Config, n*perSeq, 0, blockSize)
	if err != nil {
		b.Fatal(err)
	}
	m, err := engine.NewModel(w, cache)
	if err != nil {
		b.Fatal(err)
	}
	m.ReuseLogits = true // as the worker runs it
	e := New(m, &w.Config)
	alloc := engine.NewAllocator(n * perSeq)
	sampling := &step.Sampling{Temperature: temp, TopP: 1, Seed: 1, HasSeed: true}
	batch := &step.Batch{Seqs: make([]step.Seq, n)}
	ids := make([]uint64, n)
	gen := uint64(0)
	start := func() { // fresh sequences with their prompts prefilled
		e.Release(ids)
		for i := range batch.Seqs {
			st := &batch.Seqs[i]
			if st.Blocks == nil {
				if st.Blocks, err = alloc.Grow(nil, prompt+span, blockSize); err != nil {
					b.Fatal(err)
				}
			}
			gen++
			ids[i] = gen
			toks := make([]int, prompt)
			for j := range toks {
				toks[j] = (i*7919 + j*104729) % cfg.Vocab
			}
			st.ID, st.Tokens, st.Pos, st.Sample, st.Sampling = gen, toks, 0, true, sampling
		}
		if err := e.Step(context.Background(), batch); err != nil {
			b.Fatal(err)
		}
		for i := range batch.Seqs {
			st := &batch.Seqs[i]
			st.Pos, st.Tokens = prompt, []int{st.Out.ID}
		}
	}
	start()
	for b.Loop() {
		if batch.Seqs[0].Pos == prompt+span {
			b.StopTimer()
			start()
			b.StartTimer()
		}
		if err := e.Step(context.Background(), batch); err != nil {
			b.Fatal(err)
		}
		for i := range batch.Seqs {
			st := &batch.Seqs[i]
			st.Pos, st.Tokens = st.Pos+1, []int{st.Out.ID}
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "tok/s")
}
