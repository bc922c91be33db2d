package main

import (
	"errors"
	"fmt"
	"math/rand/v2"

	"github.com/gptoss/server/shared/model"
)

// layer20b is gpt-oss-20b cut to its first layer.
func layer20b() model.Config {
	c := model.Presets["20b"].Architecture()
	c.Layers = 1
	return c
}

// runFullLayer compares one full-size gpt-oss-20b layer (cfg: layer20b) (dummy weights,
// the 20b preset's shapes: hidden 2880, 64/8 heads, 32 MXFP4 experts, the
// 201088-row embedding and unembedding) on the CPU and on dev: a step
// with a 40-token prompt (every position's logits) and a 5-token one,
// then decode steps of both, judged against the bf16 twin like the
// goldens (a dummy router's near-ties flip experts under bf16 rounding). The op checks' small config cannot see a kernel
// that breaks at the real sizes (tiles over 2880 = 45·64 columns, the
// 201088-row GEMV, 32 experts' grouping); this can.
func runFullLayer(dev Device, cfg model.Config, seed uint64, steps int, graphs bool) Check {
	start := now()
	w, err := fastDummy(cfg, seed, 1)
	if err != nil {
		return Check{Status: Error, Detail: err.Error()}
	}
	cw, err := cpuReady(w)
	if err != nil {
		return Check{Status: Error, Detail: err.Error()}
	}
	gen := since(start)
	kv := Spec{BlockSize: 16, Blocks: 64, SlidingBlocks: 64, MaxTokens: 256, MaxSeqs: 8, MaxContext: 256}
	ref, err := (cpuDevice{}).Backend(cw, kv)
	if err != nil {
		return Check{Status: Error, Detail: err.Error()}
	}
	refM, err := (cpuDevice{}).Model(ref)
	if err != nil {
		return Check{Status: Error, Detail: err.Error()}
	}
	twin, err := newTwin(cw, kv)
	if err != nil {
		return Check{Status: Error, Detail: err.Error()}
	}
	start = now()
	spec := kv
	spec.Graphs = graphs
	b, err := dev.Backend(w, spec)
	if errors.Is(err, ErrUnsupported) {
		spec.Graphs = false
		b, err = dev.Backend(w, spec)
	}
	if err != nil {
		return Check{Status: Error, Detail: fmt.Sprintf("load: %v", err)}
	}
	defer closeBackend(b)
	upload := since(start)
	m, err := dev.Model(b)
	if err != nil {
		return Check{Status: Error, Detail: err.Error()}
	}
	if c, ok := m.(interface{ Close() }); ok {
		defer c.Close()
	}
	rng := rand.New(rand.NewPCG(seed, 20))
	p1 := make([]int, 40)
	p2 := make([]int, 5)
	for i := range p1 {
		p1[i] = rng.IntN(cfg.Vocab)
	}
	for i := range p2 {
		p2[i] = rng.IntN(cfg.Vocab)
	}
	// The first prompt's every position: the batched unembedding, and
	// rows enough for the medians of modelVerdict.
	prompts := [][]int{p1, p2}
	st, err := seqRun{prompts: prompts, steps: steps, allLogits: true}.run(refM, twin, m, ref.Geometry(), cfg.SlidingWindow, rng)
	if err != nil {
		return Check{Status: Error, Detail: err.Error()}
	}
	c := st.check()
	graphCheck(&c, m, spec.Graphs)
	c.Extra["weights_gen_s"] = gen
	c.Extra["upload_s"] = upload
	return c
}
