package engine

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/gptoss/server/shared/model"
)

// The decode benchmarks report weight bytes read per second (MB/s via
// b.SetBytes) next to BenchmarkMemoryRead, this machine's plain read
// bandwidth with the same number of threads, so the ratio is the kernel's
// efficiency. Batch-1 decode is bandwidth-bound: every weight is read once
// per token.

var (
	benchOnce  sync.Once
	benchModel *Model
)

// fullLayer is gpt-oss-20b with one full-size layer (dummy weights).
func fullLayer(b *testing.B) *Model {
	benchOnce.Do(func() {
		cfg := model.Presets["20b"].Architecture()
		w := DummyWeights(cfg, 7, 1)
		cache, err := NewKVCache(&w.Config, 64, 0, 16)
		if err != nil {
			b.Fatal(err)
		}
		if benchModel, err = NewModel(w, cache); err != nil {
			b.Fatal(err)
		}
	})
	return benchModel
}

// layerBytes is what one decode token reads in layer 0: the attention
// matrices and the chosen experts (the router picks ExpertsPerToken).
func layerBytes(w *Weights) int64 {
	L := &w.Layers[0]
	c := &w.Config
	att := 2 * int64(L.Q.Rows*L.Q.Cols+L.K.Rows*L.K.Cols+L.V.Rows*L.V.Cols+L.O.Rows*L.O.Cols+L.Router.Rows*L.Router.Cols)
	perExpert := int64(len(L.GateUp.Blocks)+len(L.GateUp.Scales)+len(L.Down.Blocks)+len(L.Down.Scales)) / int64(c.Experts)
	return att + perExpert*int64(c.ExpertsPerToken)
}

// BenchmarkDecodeLayer20b times the attention and MoE blocks of one
// full-size 20b layer for one decode token (no unembedding; the embedding
// and the first norm are a few microseconds), through the backend.
func BenchmarkDecodeLayer20b(b *testing.B) {
	m := fullLayer(b)
	lay := &StepLayout{IDs: []int{123}, Pos: []int{0}, Seq: []int{0}, Tables: [][]int{{0}}, Sliding: [][]int{{0}}}
	b.SetBytes(layerBytes(m.W))
	b.ResetTimer()
	for b.Loop() {
		if err := m.b.Begin(lay); err != nil {
			b.Fatal(err)
		}
		st, err := m.tensors(1)
		if err == nil {
			err = m.b.Embed(st.x)
		}
		if err == nil {
			err = m.b.RMSNorm(st.x, Param{Layer: 0, Name: ParamAttnNorm}, st.h)
		}
		if err == nil {
			err = m.layer(0, st)
		}
		if err != nil {
			b.Fatal(err)
		}
		m.b.EndStep()
	}
}

// BenchmarkUnembed times the 201088 × 2880 bf16 unembedding for one token.
func BenchmarkUnembed(b *testing.B) {
	m := fullLayer(b)
	c := &m.W.Config
	x := matrix(1, c.Hidden)
	m.W.Embed.row(5, x[0])
	out := matrix(1, c.Vocab)
	b.SetBytes(int64(2 * c.Vocab * c.Hidden))
	b.ResetTimer()
	for b.Loop() {
		linear(&m.W.Unembed, nil, x, out)
	}
}

// BenchmarkMemoryRead sums a 1 GiB buffer with every CPU: the machine's
// read bandwidth for the same access pattern as the kernels.
func BenchmarkMemoryRead(b *testing.B) {
	buf := make([]uint64, 1<<27)
	for i := range buf {
		buf[i] = uint64(i)
	}
	b.SetBytes(int64(len(buf) * 8))
	b.ResetTimer()
	var sink uint64
	for b.Loop() {
		var mu sync.Mutex
		parallel(len(buf), func(lo, hi int) {
			var s0, s1, s2, s3 uint64
			i := lo
			for ; i+4 <= hi; i += 4 {
				s0 += buf[i]
				s1 += buf[i+1]
				s2 += buf[i+2]
				s3 += buf[i+3]
			}
			mu.Lock()
			sink += s0 + s1 + s2 + s3
			mu.Unlock()
		})
	}
	_ = sink
}

// BenchmarkExpert20b times one 20b expert's matrices (gate_up 5760 × 2880
// and down 2880 × 2880, MXFP4, random) for the tokens routed to it, with
// the multi-token kernel (rows) and with the single-token kernel per
// (row, token) as expertLinear ran before it (per-token). Four experts
// take turns, 50 MB in all, so the weights come from memory as in a real
// step rather than from the last-level cache. MB/s is weight bytes.
func BenchmarkExpert20b(b *testing.B) {
	cfg := model.Presets["20b"].Architecture()
	const experts = 4
	hidden, inter := cfg.Hidden, cfg.Intermediate
	rng := rand.New(rand.NewPCG(5, 6))
	mx := func(rows, cols int) *MXFP4 {
		m := &MXFP4{Experts: experts, Rows: rows, Cols: cols,
			Blocks: make([]byte, experts*rows*cols/2), Scales: make([]byte, experts*rows*cols/32)}
		for i := range m.Blocks {
			m.Blocks[i] = byte(rng.IntN(256))
		}
		for i := range m.Scales {
			m.Scales[i] = byte(118 + rng.IntN(7))
		}
		m.prepare()
		return m
	}
	gateUp, down := mx(2*inter, hidden), mx(hidden, inter)
	if !gateUp.vector || !down.vector {
		b.Skip("no vector MXFP4 kernel on this CPU")
	}
	bytes := int64(len(gateUp.Blocks)+len(gateUp.Scales)+len(down.Blocks)+len(down.Scales)) / experts
	guB, downB := make([]float32, 2*inter), make([]float32, hidden)
	for _, ntok := range []int{1, 2, 3, 4, 8, 32} {
		x := matrix(ntok, hidden)
		for _, r := range x {
			for i := range r {
				r[i] = float32(rng.NormFloat64())
			}
		}
		act := matrix(ntok, inter)
		for t := range act {
			copy(act[t], x[t][:inter])
		}
		gu, y := matrix(ntok, 2*inter), matrix(ntok, hidden)
		for _, k := range []struct {
			name string
			f    func(w *MXFP4, e int, bias []float32, x, out [][]float32)
		}{{"per-token", expertLinearPerToken}, {"rows", expertLinear}, {"q8", expertLinearQ8Floats}} {
			if k.name == "q8" && !useQ8 {
				continue
			}
			b.Run(fmt.Sprintf("%s/tokens=%d", k.name, ntok), func(b *testing.B) {
				b.SetBytes(bytes)
				e := 0
				for b.Loop() {
					k.f(gateUp, e, guB, x, gu)
					k.f(down, e, downB, act, y)
					e = (e + 1) % experts
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(ntok)/1e3, "µs/token")
			})
		}
	}
}

// expertLinearQ8Floats is the fast path with its quantization, as MoE
// runs it: the tokens quantized, then the int8 kernel.
func expertLinearQ8Floats(w *MXFP4, e int, bias []float32, x, out [][]float32) {
	var a q8Acts
	a.reset(len(x), w.Cols/32)
	for t := range x {
		a.quantize(t, x[t])
	}
	expertLinearQ8(w, e, bias, &a, out)
}

// expertLinearPerToken is expertLinear before the multi-token kernel: the
// single-token kernel for every (row, token), each block decoded again
// for every token.
func expertLinearPerToken(w *MXFP4, e int, bias []float32, x, out [][]float32) {
	parallel(w.Rows, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			for t := range x {
				out[t][r] = w.dot(e, r, x[t]) + bias[r]
			}
		}
	})
}
