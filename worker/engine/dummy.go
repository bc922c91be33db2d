package engine

import (
	"math"
	"math/rand/v2"

	"github.com/gptoss/server/shared/model"
)

// DummyWeights makes weights with the exact shapes of cfg and random but
// well-scaled values (--load-format dummy): linear weights ~ N(0, 1/fan_in)
// in bf16, norms near 1, small biases, MXFP4 experts with random nibbles
// and scales that give the same magnitudes. Logits stay finite, so
// benchmarks and tests on machines without the real files exercise every
// code path with realistic numbers. layers, when positive, caps the
// number of layers built (a full-size single layer for benchmarks).
func DummyWeights(cfg model.Config, seed uint64, layers int) *Weights {
	if layers > 0 && layers < cfg.Layers {
		cfg.Layers = layers
		cfg.LayerTypes = nil
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	c := &cfg
	mat := func(rows, cols int) Mat {
		m := Mat{Rows: rows, Cols: cols, BF16: make([]uint16, rows*cols)}
		std := 1 / math.Sqrt(float64(cols))
		for i := range m.BF16 {
			m.BF16[i] = ToBF16(float32(rng.NormFloat64() * std))
		}
		return m
	}
	vec := func(n int, mean, std float64) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = bf16(ToBF16(float32(mean + rng.NormFloat64()*std)))
		}
		return v
	}
	mx := func(experts, rows, cols int) MXFP4 {
		m := MXFP4{Experts: experts, Rows: rows, Cols: cols,
			Blocks: make([]byte, experts*rows*cols/2), Scales: make([]byte, experts*rows*cols/32)}
		for i := range m.Blocks {
			m.Blocks[i] = byte(rng.IntN(256))
		}
		// E2M1 values have mean square ~8.3; scale 2^(s-127) with s near
		// 127 - log2(sqrt(8.3·cols)) gives rows of roughly unit gain.
		base := 127 - int(math.Round(math.Log2(math.Sqrt(8.3*float64(cols)))))
		for i := range m.Scales {
			m.Scales[i] = byte(base + rng.IntN(3) - 1)
		}
		m.prepare()
		return m
	}
	q, kv := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	w := &Weights{Config: cfg, Embed: mat(c.Vocab, c.Hidden), Norm: vec(c.Hidden, 1, 0.05), Unembed: mat(c.Vocab, c.Hidden)}
	for range c.Layers {
		w.Layers = append(w.Layers, Layer{
			AttnNorm: vec(c.Hidden, 1, 0.05), MLPNorm: vec(c.Hidden, 1, 0.05),
			Q: mat(q, c.Hidden), QB: vec(q, 0, 0.02),
			K: mat(kv, c.Hidden), KB: vec(kv, 0, 0.02),
			V: mat(kv, c.Hidden), VB: vec(kv, 0, 0.02),
			O: mat(c.Hidden, q), OB: vec(c.Hidden, 0, 0.02),
			Sinks:  vec(c.Heads, 0, 1),
			Router: mat(c.Experts, c.Hidden), RouterB: vec(c.Experts, 0, 0.1),
			GateUp: mx(c.Experts, 2*c.Intermediate, c.Hidden), GateUpB: vec(c.Experts*2*c.Intermediate, 0, 0.02),
			Down: mx(c.Experts, c.Hidden, c.Intermediate), DownB: vec(c.Experts*c.Hidden, 0, 0.02),
		})
	}
	w.Part = whole(w)
	return w
}

// ToBF16 rounds to the nearest bfloat16, ties to even (NaN stays NaN):
// the one conversion dummy weights, checkpoints and the GPU backends use.
func ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if f != f { // NaN stays NaN
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}
