package engine

import (
	"math"
	"testing"
)

// TestGoldenFastKernels measures the fast kernels (CPUOptions.Fast)
// against transformers on the golden models: the logits' error relative
// to their spread, and how often the greedy token changes. The exact
// kernels meet goldenTolerance; the fast ones round the activations (int8
// per 32-value block for the experts, bf16 for the dense matrices), an
// error of about 2^-9 of each product's inputs (their own tests bound it
// per operation). Through a model, that error is continuous only while
// every token keeps its experts: where two router logits are within it of
// each other, the token takes another expert, and through attention every
// later position differs. So the bound that holds for any kernel doing
// what it should is asserted on the model that routes every token to all
// of its experts (l2_mha_topall_w8); the others are logged (l4, top 2 of
// 8 over 4 layers, flips a pick at token 4 of layer 0 and then differs by
// a third of the logits' spread) and only checked against a kernel that
// mixed up blocks or scales, which would be off by the spread itself.
func TestGoldenFastKernels(t *testing.T) {
	mx, bf := FastKernels()
	if !mx && !bf {
		t.Skip("no fast kernels on this CPU")
	}
	ran := false
	for _, g := range loadGoldens(t) {
		t.Run(g.name, func(t *testing.T) {
			cache, err := NewKVCache(&g.cfg, 256, 0, 16)
			if err != nil {
				t.Fatal(err)
			}
			c := NewCPUWith(g.m.Backend().Weights(), cache, nil, CPUOptions{Fast: true}).(*CPU)
			m, err := NewModelOn(c)
			if err != nil {
				t.Fatal(err)
			}
			L := &c.w.Layers[0]
			if L.GateUp.q8() && L.Down.q8() {
				ran = true
			}
			e := g.exp
			a := NewAllocator(256)
			table, err := a.Grow(nil, len(e.Prompt)+len(e.DecodeTokens), 16)
			if err != nil {
				t.Fatal(err)
			}
			out, err := m.Step([]Seq{{Tokens: e.Prompt, Blocks: table, AllLogits: true}})
			if err != nil {
				t.Fatal(err)
			}
			var worst, sq, spread float64
			n, agree := 0, 0
			for i, want := range e.PrefillLogits {
				got := out[0][i]
				var mean, ss float64
				for j := range want {
					mean += float64(want[j])
				}
				mean /= float64(len(want))
				for j := range want {
					d := float64(got[j] - want[j])
					worst = math.Max(worst, math.Abs(d))
					sq += d * d
					ss += (float64(want[j]) - mean) * (float64(want[j]) - mean)
				}
				spread += ss / float64(len(want))
				n += len(want)
				if argmax(got) == argmax(want) {
					agree++
				}
			}
			rms := math.Sqrt(sq / float64(n))
			std := math.Sqrt(spread / float64(len(e.PrefillLogits)))
			t.Logf("%s: |Δlogit| max %.3g, rms %.3g (%.2g%% of the logits' std %.3g); greedy agrees at %d of %d positions",
				g.name, worst, rms, 100*rms/std, std, agree, len(e.PrefillLogits))
			continuous := g.cfg.ExpertsPerToken == g.cfg.Experts
			if continuous && (rms > 0.03*std || worst > 0.15*std || agree < len(e.PrefillLogits)*19/20) {
				t.Fatalf("fast kernels too far from transformers on a model without routing choices")
			}
			if rms > 0.6*std {
				t.Fatalf("fast kernels' logits unrelated to transformers'")
			}
		})
	}
	if mx && !ran {
		t.Fatal("no golden model ran the int8 MXFP4 kernels")
	}
}
