package engine

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/gptoss/server/shared/model"
	"github.com/gptoss/server/worker/safetensors"
)

func tinyConfig() model.Config {
	c := model.Presets["tiny"].Architecture()
	c.Vocab, c.Layers, c.SlidingWindow = 300, 3, 6
	return c
}

func newTestModel(t testing.TB, cfg model.Config, blocks, blockSize int) (*Model, *Allocator) {
	t.Helper()
	w := DummyWeights(cfg, 1, 0)
	cache, err := NewKVCache(&cfg, blocks, 0, blockSize)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewModel(w, cache)
	if err != nil {
		t.Fatal(err)
	}
	return m, NewAllocator(blocks)
}

func maxDiff(a, b []float32) float64 {
	d := 0.0
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

func argmax(v []float32) int {
	best := 0
	for i := range v {
		if v[i] > v[best] {
			best = i
		}
	}
	return best
}

// Decoding token by token over the paged cache gives the same logits as
// recomputing the whole sequence at once, including past the sliding
// window, with blocks scattered in the pool.
func TestPagedDecodeEqualsRecompute(t *testing.T) {
	cfg := tinyConfig()
	m, alloc := newTestModel(t, cfg, 64, 4)
	prompt := []int{5, 17, 99, 3, 250, 42, 7, 8, 9, 10, 11}
	// Scatter: take some blocks first so the sequence's are not contiguous.
	hole, _ := alloc.Grow(nil, 12, 4)
	table, err := alloc.Grow(nil, len(prompt), 4)
	if err != nil {
		t.Fatal(err)
	}
	alloc.Free(hole)
	out, err := m.Step([]Seq{{Tokens: prompt, Pos: 0, Blocks: table}})
	if err != nil {
		t.Fatal(err)
	}
	seq := append([]int(nil), prompt...)
	last := out[0][0]
	for range 12 {
		next := argmax(last)
		seq = append(seq, next)
		if table, err = alloc.Grow(table, len(seq), 4); err != nil {
			t.Fatal(err)
		}
		out, err = m.Step([]Seq{{Tokens: []int{next}, Pos: len(seq) - 1, Blocks: table}})
		if err != nil {
			t.Fatal(err)
		}
		last = out[0][0]
	}
	// Full recompute in a fresh table.
	fresh, _ := alloc.Grow(nil, len(seq), 4)
	full, err := m.Step([]Seq{{Tokens: seq, Pos: 0, Blocks: fresh}})
	if err != nil {
		t.Fatal(err)
	}
	if d := maxDiff(last, full[0][0]); d != 0 {
		t.Fatalf("decode vs recompute: max |Δlogit| = %g", d)
	}
}

// Several sequences in one step (a prefill chunk and decodes) give the same
// logits as each alone.
func TestBatchedStepMatchesSingle(t *testing.T) {
	cfg := tinyConfig()
	m, alloc := newTestModel(t, cfg, 64, 4)
	a := []int{1, 2, 3, 4, 5, 6, 7, 8, 9}
	b := []int{200, 201, 202}
	ta, _ := alloc.Grow(nil, len(a), 4)
	tb, _ := alloc.Grow(nil, len(b), 4)
	alone, err := m.Step([]Seq{{Tokens: a, Blocks: ta, AllLogits: true}})
	if err != nil {
		t.Fatal(err)
	}
	aloneB, _ := m.Step([]Seq{{Tokens: b, Blocks: tb}})
	// Now b decodes one more token while a is recomputed in new blocks.
	ta2, _ := alloc.Grow(nil, len(a), 4)
	tb, _ = alloc.Grow(tb, len(b)+1, 4)
	next := argmax(aloneB[0][0])
	both, err := m.Step([]Seq{{Tokens: a, Blocks: ta2, AllLogits: true}, {Tokens: []int{next}, Pos: len(b), Blocks: tb}})
	if err != nil {
		t.Fatal(err)
	}
	// The kernels are batch-invariant: bit-identical, not just close.
	for i := range alone[0] {
		if d := maxDiff(alone[0][i], both[0][i]); d != 0 {
			t.Fatalf("row %d differs by %g in a batch", i, d)
		}
	}
	tb2, _ := alloc.Grow(nil, len(b)+1, 4)
	ref, _ := m.Step([]Seq{{Tokens: append(append([]int(nil), b...), next), Blocks: tb2}})
	if d := maxDiff(ref[0][0], both[1][0]); d != 0 {
		t.Fatalf("decode in a batch differs from recompute by %g", d)
	}
}

// With ReuseLogits a model returns the same logits as without, in one
// buffer it keeps (grown when a step needs more rows) and overwrites at the
// next step.
func TestReuseLogits(t *testing.T) {
	cfg := tinyConfig()
	fresh, alloc := newTestModel(t, cfg, 64, 4)
	reuse, _ := newTestModel(t, cfg, 64, 4)
	reuse.ReuseLogits = true
	var first *float32
	for step, batch := range [][]int{{3}, {1, 2, 3, 4, 5}, {7, 7}, {1, 2, 3, 4, 5, 6, 7}, {9}} {
		var seqs []Seq
		for i, n := range batch {
			table, _ := alloc.Grow(nil, n, 4)
			toks := make([]int, n)
			for j := range toks {
				toks[j] = (step*37 + i*11 + j*5) % cfg.Vocab
			}
			seqs = append(seqs, Seq{Tokens: toks, Blocks: table, AllLogits: i == 0})
		}
		want, err := fresh.Step(seqs)
		if err != nil {
			t.Fatal(err)
		}
		got, err := reuse.Step(seqs)
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			for r := range want[i] {
				if d := maxDiff(want[i][r], got[i][r]); d != 0 || len(got[i][r]) != cfg.Vocab {
					t.Fatalf("step %d sequence %d row %d: reused logits differ by %g", step, i, r, d)
				}
			}
		}
		switch { // rows: 3, 5, 8, 7, 9
		case step == 2:
			first = &got[0][0][0]
		case step == 3 && &got[0][0][0] != first:
			t.Fatal("a step that fits the buffer did not reuse it")
		}
		for _, s := range seqs {
			alloc.Free(s.Blocks)
		}
	}
}

func TestStepErrors(t *testing.T) {
	cfg := tinyConfig()
	m, alloc := newTestModel(t, cfg, 8, 4)
	table, _ := alloc.Grow(nil, 4, 4)
	for name, s := range map[string]Seq{
		"no tokens":          {Blocks: table},
		"bad token":          {Tokens: []int{cfg.Vocab}, Blocks: table},
		"short table":        {Tokens: []int{1, 2, 3, 4, 5}, Blocks: table},
		"block out of range": {Tokens: []int{1}, Blocks: []int{99}},
	} {
		if _, err := m.Step([]Seq{s}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestBF16RoundTrip(t *testing.T) {
	for _, f := range []float32{0, 1, -2.5, 3.140625, 1e-20, 65280, float32(math.Inf(1))} {
		if got := bf16(ToBF16(f)); got != f && !(f == 1e-20 && math.Abs(float64(got-f)) < 1e-22) {
			t.Errorf("%g → %g", f, got)
		}
	}
	// Round to nearest even: 1 + 2^-8 is halfway between 1 and 1+2^-7.
	if got := bf16(ToBF16(1 + 1.0/256)); got != 1 {
		t.Errorf("tie rounding: %g", got)
	}
}

func TestMXFP4Decode(t *testing.T) {
	m := MXFP4{Experts: 1, Rows: 1, Cols: 32, Blocks: make([]byte, 16), Scales: []byte{128}}
	m.Blocks[0] = 0x9 << 4 // element 0 = +0 (low nibble), element 1 = -0.5
	m.Blocks[1] = 0x07     // element 2 = +6
	row := make([]float32, 32)
	m.row(0, 0, row)
	if row[0] != 0 || row[1] != -1 || row[2] != 12 {
		t.Fatalf("decoded %v", row[:3])
	}
	// Scale bytes outside 2..254 fall back to the portable kernel.
	m.Scales[0] = 255
	m.prepare()
	if m.vector {
		t.Fatal("scale 255 must not take the vector kernel")
	}
	x := make([]float32, 32)
	x[2] = 1
	if got := m.dot(0, 0, x); !math.IsInf(float64(got), 1) {
		t.Fatalf("scale 255 (2^128 = +Inf in float32): %g", got)
	}
}

// Sliding-window layers in their own small pool, with blocks released as
// they fall behind the window, give the same logits as keeping everything.
func TestSlidingPoolTrimmed(t *testing.T) {
	cfg := tinyConfig() // window 6
	w := DummyWeights(cfg, 1, 0)
	const bs = 4
	full, _ := NewKVCache(&cfg, 64, 0, bs)
	small, _ := NewKVCache(&cfg, 64, 3, bs) // the window needs at most 3 blocks of 4
	mFull, _ := NewModel(w, full)
	mSmall, _ := NewModel(w, small)
	aFull, aBig, aSliding := NewAllocator(64), NewAllocator(64), NewAllocator(3)

	prompt := []int{5, 17, 99, 3}
	var tFull, tBig, tSliding []int
	var err error
	seq := append([]int(nil), prompt...)
	step := func(tokens []int, pos int) ([]float32, []float32) {
		n := pos + len(tokens)
		tFull, _ = aFull.Grow(tFull, n, bs)
		tBig, _ = aBig.Grow(tBig, n, bs)
		if tSliding, err = aSliding.Grow(tSliding, n, bs); err != nil {
			t.Fatalf("position %d: %v", pos, err)
		}
		a, err := mFull.Step([]Seq{{Tokens: tokens, Pos: pos, Blocks: tFull}})
		if err != nil {
			t.Fatal(err)
		}
		b, err := mSmall.Step([]Seq{{Tokens: tokens, Pos: pos, Blocks: tBig, SlidingBlocks: tSliding}})
		if err != nil {
			t.Fatal(err)
		}
		aSliding.Trim(tSliding, n, cfg.SlidingWindow, bs)
		return a[0][0], b[0][0]
	}
	a, b := step(prompt, 0)
	for i := range 30 {
		if d := maxDiff(a, b); d > 1e-5 {
			t.Fatalf("step %d: trimmed sliding pool differs by %g", i, d)
		}
		next := argmax(a)
		seq = append(seq, next)
		a, b = step([]int{next}, len(seq)-1)
	}
	// A released block that the window still needs is an error, not a
	// silent read of another sequence's memory.
	tBig, _ = aBig.Grow(tBig, len(seq)+1, bs)
	tSliding, _ = aSliding.Grow(tSliding, len(seq)+1, bs)
	if _, err := mSmall.Step([]Seq{{Tokens: []int{1}, Pos: len(seq), Blocks: tBig, SlidingBlocks: tSliding}}); err != nil {
		t.Fatalf("valid tables refused: %v", err)
	}
	tSliding[(len(seq)-2)/bs] = -1 // inside the window
	_, err = mSmall.Step([]Seq{{Tokens: []int{1}, Pos: len(seq), Blocks: tBig, SlidingBlocks: tSliding}})
	if err == nil || !strings.Contains(err.Error(), "sliding table") {
		t.Fatalf("a missing block inside the window: %v", err)
	}
}

// A written checkpoint loads back into exactly the same model.
func TestCheckpointRoundTrip(t *testing.T) {
	cfg := tinyConfig()
	w := DummyWeights(cfg, 3, 0)
	dir := t.TempDir()
	if err := WriteCheckpoint(dir, w); err != nil {
		t.Fatal(err)
	}
	back, err := model.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	set, err := safetensors.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	w2, err := LoadWeights(back, set)
	if err != nil {
		t.Fatal(err)
	}
	run := func(w *Weights) []float32 {
		cache, _ := NewKVCache(&w.Config, 8, 0, 16)
		m, err := NewModel(w, cache)
		if err != nil {
			t.Fatal(err)
		}
		out, err := m.Step([]Seq{{Tokens: []int{1, 2, 3, 4, 5}, Blocks: []int{0}}})
		if err != nil {
			t.Fatal(err)
		}
		return out[0][0]
	}
	if d := maxDiff(run(w), run(w2)); d != 0 {
		t.Fatalf("reloaded checkpoint differs by %g", d)
	}
	// A checkpoint missing a tensor is a clear error.
	if _, err := LoadWeights(back, missing{set, "model.layers.1.mlp.experts.down_proj_scales"}); err == nil ||
		!strings.Contains(err.Error(), "down_proj_scales") {
		t.Fatalf("missing tensor: %v", err)
	}
}

type missing struct {
	*safetensors.Set
	name string
}

func (m missing) Tensor(name string) (safetensors.Tensor, error) {
	if name == m.name {
		return safetensors.Tensor{}, fmt.Errorf("tensor %q not found", name)
	}
	return m.Set.Tensor(name)
}

// The vector kernels agree with the portable ones (and so with the
// decoded-row path) on random data, including every nibble and extreme
// scales.
func TestVectorKernels(t *testing.T) {
	if !useAVX2 {
		t.Skip("no AVX2+FMA on this CPU: only the portable kernels run")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{16, 64, 2880, 4096} {
		w := make([]uint16, n)
		x := make([]float32, n)
		for i := range w {
			w[i] = ToBF16(float32(rng.NormFloat64()))
			x[i] = float32(rng.NormFloat64())
		}
		a, b := dotBF16(w, x), dotBF16Scalar(w, x)
		if math.Abs(float64(a-b)) > 1e-4*math.Max(1, math.Abs(float64(b))) {
			t.Fatalf("bf16 n=%d: vector %g, scalar %g", n, a, b)
		}
	}
	// The many-row kernel (linear's) gives, for every row and token,
	// exactly dotBF16's result plus the bias (bit for bit, the sign of a
	// zero included), whatever the number of tokens (groups of four and the
	// rest), strides and bias.
	for _, n := range []int{16, 64, 2880} {
		const rows = 7
		wstride := n + 16
		w := make([]uint16, rows*wstride)
		for i := range w {
			w[i] = ToBF16(float32(rng.NormFloat64()))
		}
		bias := make([]float32, rows)
		for i := range bias {
			bias[i] = float32(rng.NormFloat64())
		}
		bias[2] = 0
		for ntok := 1; ntok <= 21; ntok++ {
			xs, os := n+8, rows+3
			x := make([]float32, ntok*xs)
			for i := range x {
				x[i] = float32(rng.NormFloat64())
			}
			for i := range n { // a zero dot product: −0 + 0 must give +0
				x[i] = 0
			}
			for _, b := range [][]float32{nil, bias} {
				out := make([]float32, ntok*os)
				var bp *float32
				if b != nil {
					bp = &b[0]
				}
				kernels := map[string]func(){
					"general": func() { dotBF16RowsAVX2(&w[0], wstride, rows, n, &x[0], xs, ntok, bp, &out[0], os) },
				}
				m := Mat{Rows: rows, Cols: n, Stride: wstride, BF16: w}
				kernels["linear's choice"] = func() { bf16Rows(&m, b, 0, rows, x, xs, ntok, out, os) }
				if n == 64 {
					kernels["64"] = func() { dotBF16Rows64AVX2(&w[0], wstride, rows, &x[0], xs, ntok, bp, &out[0], os) }
					if useAVX512 {
						kernels["64, AVX-512"] = func() { dotBF16Rows64AVX512(&w[0], wstride, rows, &x[0], xs, ntok, bp, &out[0], os) }
						if ntok%4 == 0 { // even rows only: all but the last
							var blast *float32
							if b != nil {
								blast = &b[rows-1]
							}
							kernels["64, AVX-512, pairs of rows, four tokens"] = func() {
								dotBF16Rows64x4AVX512(&w[0], wstride, rows-1, &x[0], xs, ntok, bp, &out[0], os)
								dotBF16Rows64AVX512(&w[(rows-1)*wstride], wstride, 1, &x[0], xs, ntok, blast, &out[rows-1], os)
							}
						}
					}
				}
				for name, kernel := range kernels {
					clear(out)
					kernel()
					for r := range rows {
						for k := range ntok {
							want := dotBF16(w[r*wstride:r*wstride+n], x[k*xs:k*xs+n])
							if b != nil {
								want += b[r]
							} else {
								want += 0
							}
							if got := out[k*os+r]; math.Float32bits(got) != math.Float32bits(want) {
								t.Fatalf("bf16 rows (%s) n=%d tokens=%d bias=%v row %d token %d: %g, alone %g", name, n, ntok, b != nil, r, k, got, want)
							}
						}
					}
				}
			}
		}
	}
	for _, cols := range []int{32, 2880} {
		m := MXFP4{Experts: 2, Rows: 3, Cols: cols, Blocks: make([]byte, 2*3*cols/2), Scales: make([]byte, 2*3*cols/32)}
		for i := range m.Blocks {
			m.Blocks[i] = byte(rng.IntN(256))
		}
		for i := range m.Scales {
			m.Scales[i] = byte(100 + rng.IntN(40))
		}
		m.Scales[0], m.Scales[1] = 2, 140 // the smallest scale the vector path takes
		m.prepare()
		if !m.vector {
			t.Fatal("vector kernel not selected")
		}
		x := make([]float32, cols)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		row := make([]float32, cols)
		for e := range 2 {
			for r := range 3 {
				m.row(e, r, row)
				want := dot(row, x)
				for _, got := range []float32{m.dot(e, r, x), m.dotScalar(e, r, x)} {
					if math.Abs(float64(got-want)) > 1e-4*math.Max(1, math.Abs(float64(want))) {
						t.Fatalf("mxfp4 cols=%d e=%d r=%d: %g, decoded row gives %g", cols, e, r, got, want)
					}
				}
			}
		}
	}
}

// The multi-token MXFP4 kernel gives, for every row and token, exactly the
// single-token kernel's result plus the bias (bit for bit, the sign of a
// zero included), whatever the number of tokens (groups of four, two,
// three with one repeated, a single one), strides and bias;
// expertLinear, which picks it, agrees with the per-token path.
func TestMXFP4RowsKernel(t *testing.T) {
	if !useAVX2 {
		t.Skip("no AVX2+FMA on this CPU: only the portable kernels run")
	}
	rng := rand.New(rand.NewPCG(3, 4))
	// 150 rows: expertLinear splits them over the CPUs and kernel calls.
	for _, size := range []struct{ cols, rows int }{{32, 7}, {64, 150}, {2880, 7}} {
		const experts = 2
		cols, rows := size.cols, size.rows
		nb := cols / 32
		m := MXFP4{Experts: experts, Rows: rows, Cols: cols, Blocks: make([]byte, experts*rows*nb*16), Scales: make([]byte, experts*rows*nb)}
		for i := range m.Blocks {
			m.Blocks[i] = byte(rng.IntN(256))
		}
		for i := range m.Scales {
			m.Scales[i] = byte(110 + rng.IntN(20))
		}
		m.Scales[0] = 2 // the smallest scale the vector path takes
		m.prepare()
		if !m.vector {
			t.Fatal("vector kernel not selected")
		}
		bias := make([]float32, rows)
		for i := range bias {
			bias[i] = float32(rng.NormFloat64())
		}
		bias[2] = 0
		for ntok := 1; ntok <= 17; ntok++ {
			xs, os := cols+8, rows+3
			x := make([]float32, ntok*xs)
			for i := range x {
				x[i] = float32(rng.NormFloat64())
			}
			for i := range cols { // a zero dot product: −0 + 0 must give +0
				x[(ntok-1)*xs+i] = 0
			}
			for e := range experts {
				for _, b := range [][]float32{nil, bias} {
					out := make([]float32, ntok*os)
					var bp *float32
					if b != nil {
						bp = &b[0]
					}
					o := e * rows * nb
					kernels := map[string]func(){
						"AVX2": func() {
							dotMXFP4RowsAVX2(&m.Blocks[o*16], &m.Scales[o], nb, rows, &x[0], xs, ntok, bp, &out[0], os)
						},
					}
					for name, kernel := range kernels {
						clear(out)
						kernel()
						for r := range rows {
							for k := range ntok {
								want := m.dot(e, r, x[k*xs:k*xs+cols])
								if b != nil {
									want += b[r]
								} else {
									want += 0
								}
								if got := out[k*os+r]; math.Float32bits(got) != math.Float32bits(want) {
									t.Fatalf("mxfp4 rows (%s) cols=%d tokens=%d e=%d bias=%v row %d token %d: %g, alone %g", name, cols, ntok, e, b != nil, r, k, got, want)
								}
							}
						}
					}
				}
				// expertLinear: tokens scattered over a larger matrix (as
				// MoE picks them) and written to one.
				h := matrix(2*ntok+1, cols)
				in := make([][]float32, ntok)
				for k := range in {
					in[k] = h[2*k+1]
					copy(in[k], x[k*xs:k*xs+cols])
				}
				got := matrix(ntok, rows)
				expertLinear(&m, e, bias, in, got)
				for r := range rows {
					for k := range ntok {
						want := m.dot(e, r, in[k]) + bias[r]
						if math.Float32bits(got[k][r]) != math.Float32bits(want) {
							t.Fatalf("expertLinear cols=%d tokens=%d e=%d row %d token %d: %g, alone %g", cols, ntok, e, r, k, got[k][r], want)
						}
					}
				}
			}
		}
	}
}
