package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"

	"github.com/gptoss/server/shared/model"
	"github.com/gptoss/server/worker/engine"
)

// fastDummy makes dummy weights with cfg's exact shapes, like
// engine.DummyWeights, but fast enough for full-size models inside the
// device check's time budget: engine.DummyWeights draws a Gaussian per
// weight on one core (about 13 s for one 20b layer and the two vocabulary
// matrices on the development machine, minutes for 120b), while this draws
// four 16-bit uniforms per 64-bit random word on every core.
//
// Values: dense weights are a sum of four uniforms scaled to variance
// 1/fan_in (a bounded, nearly Gaussian shape: the same magnitudes as
// DummyWeights), rounded to bf16; vectors as DummyWeights's; MXFP4 blocks
// uniform random bytes with scales that give rows of unit gain.
//
// distinct is how many layers get their own host memory; the others alias
// them in turn. A benchmark uploads every layer to its own device memory
// anyway, so aliasing only saves host memory and generation time (about
// 65 GB and a minute for 120b): the device reads as many distinct bytes as
// with distinct host layers. Checks that compare numbers use distinct
// layers (distinct ≥ cfg.Layers).
//
// The result depends only on (cfg, seed, distinct), not on the number of
// cores: each chunk has its own generator seeded by its index.
func fastDummy(cfg model.Config, seed uint64, distinct int) (*engine.Weights, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("dummy weights: %w", err)
	}
	c := &cfg
	g := &gen{seed: seed}
	q, kv := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	w := &engine.Weights{Config: cfg}
	w.Embed = g.mat(c.Vocab, c.Hidden)
	w.Unembed = g.mat(c.Vocab, c.Hidden)
	w.Norm = g.vec(c.Hidden, 1, 0.05)
	distinct = max(1, min(distinct, c.Layers))
	for l := range c.Layers {
		if l >= distinct {
			w.Layers = append(w.Layers, w.Layers[l%distinct])
			continue
		}
		w.Layers = append(w.Layers, engine.Layer{
			AttnNorm: g.vec(c.Hidden, 1, 0.05), MLPNorm: g.vec(c.Hidden, 1, 0.05),
			Q: g.mat(q, c.Hidden), QB: g.vec(q, 0, 0.02),
			K: g.mat(kv, c.Hidden), KB: g.vec(kv, 0, 0.02),
			V: g.mat(kv, c.Hidden), VB: g.vec(kv, 0, 0.02),
			O: g.mat(c.Hidden, q), OB: g.vec(c.Hidden, 0, 0.02),
			Sinks:  g.vec(c.Heads, 0, 1),
			Router: g.mat(c.Experts, c.Hidden), RouterB: g.vec(c.Experts, 0, 0.1),
			GateUp: g.mxfp4(c.Experts, 2*c.Intermediate, c.Hidden), GateUpB: g.vec(c.Experts*2*c.Intermediate, 0, 0.02),
			Down: g.mxfp4(c.Experts, c.Hidden, c.Intermediate), DownB: g.vec(c.Experts*c.Hidden, 0, 0.02),
		})
	}
	w.Part = engine.Part{Rank: 0, TP: 1, Heads: c.Heads, KVHeads: c.KVHeads, ExpertHi: c.Experts, VocabHi: c.Vocab}
	return w, nil
}

// cpuReady returns w as the CPU backend wants it: a one-way "shard" runs
// the engine's per-matrix preparation of the MXFP4 experts (the choice of
// its vector kernel), which weights built outside the engine lack. The
// large matrices stay shared.
func cpuReady(w *engine.Weights) (*engine.Weights, error) {
	s, err := w.Shard(0, 1)
	if err != nil {
		return nil, fmt.Errorf("dummy weights: prepare for the CPU: %w", err)
	}
	return s, nil
}

// gen hands out seeded chunks of random data.
type gen struct {
	seed  uint64
	calls uint64
}

// chunk is the unit of parallel generation (elements or bytes).
const chunk = 1 << 20

// fill runs f over [0, n) in chunks, in parallel, each chunk with its own
// generator derived from the call and chunk index.
func (g *gen) fill(n int, f func(r *rand.Rand, lo, hi int)) {
	g.calls++
	call := g.calls
	chunks := (n + chunk - 1) / chunk
	workers := min(runtime.GOMAXPROCS(0), chunks)
	var wg sync.WaitGroup
	next := make(chan int, chunks)
	for i := range chunks {
		next <- i
	}
	close(next)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				r := rand.New(rand.NewPCG(g.seed^call*0x9e3779b97f4a7c15, uint64(i)))
				f(r, i*chunk, min(n, (i+1)*chunk))
			}
		}()
	}
	wg.Wait()
}

// approxNormal turns one 64-bit word into a value of mean 0, variance 1:
// the sum of its four 16-bit uniforms, centred and scaled.
func approxNormal(u uint64) float32 {
	const inv = 1.0 / 65536
	s := float32(u&0xffff) + float32(u>>16&0xffff) + float32(u>>32&0xffff) + float32(u>>48)
	return (s*inv - 2) * 1.7320508 // variance of 4 U(0,1) is 1/3
}

func (g *gen) mat(rows, cols int) engine.Mat {
	m := engine.Mat{Rows: rows, Cols: cols, BF16: make([]uint16, rows*cols)}
	std := float32(1 / math.Sqrt(float64(cols)))
	g.fill(len(m.BF16), func(r *rand.Rand, lo, hi int) {
		for i := lo; i < hi; i++ {
			m.BF16[i] = engine.ToBF16(approxNormal(r.Uint64()) * std)
		}
	})
	return m
}

func (g *gen) vec(n int, mean, std float64) []float32 {
	v := make([]float32, n)
	g.fill(n, func(r *rand.Rand, lo, hi int) {
		for i := lo; i < hi; i++ {
			v[i] = fromBF16(engine.ToBF16(float32(mean + r.NormFloat64()*std)))
		}
	})
	return v
}

func (g *gen) mxfp4(experts, rows, cols int) engine.MXFP4 {
	m := engine.MXFP4{Experts: experts, Rows: rows, Cols: cols,
		Blocks: make([]byte, experts*rows*cols/2), Scales: make([]byte, experts*rows*cols/32)}
	g.fill(len(m.Blocks)/8, func(r *rand.Rand, lo, hi int) {
		for i := lo; i < hi; i++ {
			u := r.Uint64()
			for j := range 8 {
				m.Blocks[8*i+j] = byte(u >> (8 * j))
			}
		}
	})
	for i := len(m.Blocks) / 8 * 8; i < len(m.Blocks); i++ {
		m.Blocks[i] = byte(i * 131)
	}
	// E2M1 values have mean square ~8.3; a scale of 2^(s−127) with s near
	// 127 − log2(√(8.3·cols)) gives rows of roughly unit gain.
	base := 127 - int(math.Round(math.Log2(math.Sqrt(8.3*float64(cols)))))
	g.fill(len(m.Scales), func(r *rand.Rand, lo, hi int) {
		for i := lo; i < hi; i++ {
			m.Scales[i] = byte(base + r.IntN(3) - 1)
		}
	})
	return m
}

// fromBF16 widens a bfloat16 bit pattern (exact).
func fromBF16(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

// roundBF16 rounds every value to the nearest bf16, in place: inputs the
// checks draw are made bf16-representable where the device would store
// them in bf16 anyway (the KV cache), so that what is compared is the
// arithmetic, not the storage rounding.
func roundBF16(v []float32) {
	for i, x := range v {
		v[i] = fromBF16(engine.ToBF16(x))
	}
}
