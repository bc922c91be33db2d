package engine

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// bf16dpData is n bf16 weights ~N(0, 0.02) and n activations ~N(0, 1).
func bf16dpData(rng *rand.Rand, w []uint16, x []float32) {
	for i := range w {
		w[i] = ToBF16(float32(0.02 * rng.NormFloat64()))
	}
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
}

// absDot is Σ|w_i·x_i| in float64, the scale of a dot product's rounding.
func absDot(w, x []uint16) float64 {
	var s float64
	for i := range w {
		s += math.Abs(float64(bf16(w[i])) * float64(bf16(x[i])))
	}
	return s
}

// The kernel gives, for every row and token, dotBF16DPRef's result plus
// the bias, over random shapes, strides, numbers of tokens and with and
// without a bias, and writes nothing else. The tolerance is 2^-20 of
// Σ|w·x| (a few units in the last place of the larger partial sums),
// since only the SDM's pseudo-code defines VDPBF16PS; how many agree bit
// for bit is logged.
func TestBF16DPKernel(t *testing.T) {
	if !useBF16DP {
		t.Skip("no AVX-512 BF16 on this CPU: only the portable reference runs")
	}
	rng := rand.New(rand.NewPCG(11, 12))
	var total, exact int
	for trial := range 60 {
		n := 32 * (1 + rng.IntN(128))
		if trial < 3 {
			n = []int{32, 2880, 4096}[trial]
		}
		rows, ntok := 1+rng.IntN(300), 1+rng.IntN(9)
		ws, xs, os := n+rng.IntN(40), n+1+rng.IntN(40), rows+rng.IntN(8)
		w := make([]uint16, (rows-1)*ws+n)
		bf16dpData(rng, w, nil)
		x := make([]uint16, (ntok-1)*xs+n)
		for i := range x {
			x[i] = bf16RNE(math.Float32bits(float32(rng.NormFloat64())))
		}
		for i := range n { // a zero dot product: −0 + 0 must give +0
			x[i] = 0x8000
		}
		bias := make([]float32, rows)
		for i := range bias {
			bias[i] = float32(rng.NormFloat64())
		}
		for _, b := range [][]float32{nil, bias} {
			// out has a guard after its end; all it holds but the
			// outputs must keep the sentinel.
			sentinel := float32(math.Inf(-1))
			out := make([]float32, (ntok-1)*os+rows+16)
			for i := range out {
				out[i] = sentinel
			}
			var bp *float32
			if b != nil {
				bp = &b[0]
			}
			dotBF16DPRows(&w[0], ws, rows, n, &x[0], xs, ntok, bp, &out[0], os)
			for i, v := range out {
				if k, r := i/os, i%os; (k >= ntok || r >= rows) && v != sentinel {
					t.Fatalf("n=%d rows=%d tokens=%d: out[%d] (not an output) written", n, rows, ntok, i)
				}
			}
			for r := range rows {
				wr := w[r*ws : r*ws+n]
				for k := range ntok {
					xk := x[k*xs : k*xs+n]
					want := dotBF16DPRef(wr, xk)
					if b != nil {
						want += b[r]
					} else {
						want += 0
					}
					got := out[k*os+r]
					total++
					if math.Float32bits(got) == math.Float32bits(want) {
						exact++
						continue
					}
					if d := math.Abs(float64(got - want)); d > 0x1p-20*absDot(wr, xk) || k == 0 && b == nil {
						t.Fatalf("n=%d rows=%d tokens=%d bias=%v row %d token %d: kernel %g, reference %g", n, rows, ntok, b != nil, r, k, got, want)
					}
				}
			}
		}
	}
	t.Logf("kernel = dotBF16DPRef bit for bit in %d of %d (row, token)s", exact, total)
}

// The edge cases of VDPBF16PS's definition, one block (or two) of one row
// and token: the reference follows the SDM's pseudo-code (checked against
// the values it prescribes) and the kernel agrees with it bit for bit.
func TestBF16DPLaneSemantics(t *testing.T) {
	one, m1 := ToBF16(1), ToBF16(-1)
	p := func(e int) uint16 { return ToBF16(float32(math.Ldexp(1, e))) }
	cases := []struct {
		name string
		w, x map[int]uint16 // element: value (the rest zero)
		want float32
	}{
		{"plain pair", map[int]uint16{0: ToBF16(3), 1: ToBF16(0.5)}, map[int]uint16{0: ToBF16(2), 1: ToBF16(-4)}, 4},
		{"bf16 denormal input read as zero", map[int]uint16{1: 0x0001, 3: one}, map[int]uint16{1: p(127), 3: p(-20)}, float32(math.Ldexp(1, -20))},
		{"denormal result flushed", map[int]uint16{1: p(-70)}, map[int]uint16{1: p(-70)}, 0},
		{"each accumulation rounded (ties to even)", map[int]uint16{0: one, 33: p(-24), 32: p(-24)}, map[int]uint16{0: one, 33: one, 32: one}, 1},
		{"odd element first", map[int]uint16{0: one, 33: m1, 32: p(-30)}, map[int]uint16{0: one, 33: one, 32: one}, float32(math.Ldexp(1, -30))},
		{"lanes reduced j+8, j+4, (0+1)+(2+3)", map[int]uint16{0: p(24), 16: m1, 2: p(-1), 4: p(-1), 6: p(-1)}, map[int]uint16{0: one, 16: one, 2: one, 4: one, 6: one}, 1 << 24},
	}
	for _, c := range cases {
		w, x := make([]uint16, 64), make([]uint16, 64)
		for i, v := range c.w {
			w[i] = v
		}
		for i, v := range c.x {
			x[i] = v
		}
		ref := dotBF16DPRef(w, x)
		if math.Float32bits(ref) != math.Float32bits(c.want) {
			t.Errorf("%s: reference %g, want %g", c.name, ref, c.want)
		}
		if useBF16DP {
			var got [1]float32
			dotBF16DPRows(&w[0], 64, 1, 64, &x[0], 64, 1, nil, &got[0], 1)
			if math.Float32bits(got[0]) != math.Float32bits(ref) {
				t.Errorf("%s: kernel %g, reference %g", c.name, got[0], ref)
			}
		}
	}
}

// linearBF16DP gives every (row, token) the same bits whatever else is in
// the call: each token alone, then inside batches of 1 to 9 at a random
// place, with x and out one matrix or scattered rows, a row stride, row
// chunks of odd sizes and of more than linearRowChunk, and with and
// without a bias. Alone, its results are dotBF16DPRef's: exactly on the
// portable path (run on every CPU), within the kernel test's tolerance
// with the assembly, and how many of those agree bit for bit is logged.
func TestBF16DPBatchInvariance(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	paths := []bool{false}
	if useBF16DP {
		paths = append(paths, true)
	}
	var total, same int
	for _, shape := range []struct{ rows, cols, stride int }{{130, 2880, 0}, {77, 64, 96}, {1, 32, 0}, {513, 256, 288}, {2200, 64, 0}} {
		m := Mat{Rows: shape.rows, Cols: shape.cols, Stride: shape.stride}
		m.BF16 = make([]uint16, (m.Rows-1)*m.stride()+m.Cols)
		bf16dpData(rng, m.BF16, nil)
		bias := make([]float32, m.Rows)
		for i := range bias {
			bias[i] = float32(rng.NormFloat64())
		}
		const pool = 9
		xs := matrix(pool, m.Cols)
		bf16dpData(rng, nil, xs[0][:cap(xs[0])])
		for _, b := range [][]float32{nil, bias} {
			for _, asm := range paths {
				alone := matrix(pool, m.Rows)
				for k := range pool {
					linearBF16DPOn(asm, &m, b, xs[k:k+1], alone[k:k+1])
					xb := make([]uint16, m.Cols)
					toBF16RNE(xs[k], xb)
					for r := range m.Rows {
						want := dotBF16DPRef(m.bf16Row(r), xb)
						if b != nil {
							want += b[r]
						} else {
							want += 0
						}
						got := alone[k][r]
						if asm {
							total++
						}
						if math.Float32bits(got) == math.Float32bits(want) {
							if asm {
								same++
							}
							continue
						}
						if !asm || math.Abs(float64(got-want)) > 0x1p-20*absDot(m.bf16Row(r), xb) {
							t.Fatalf("asm=%v rows=%d cols=%d row %d token %d: %g, reference %g", asm, m.Rows, m.Cols, r, k, got, want)
						}
					}
				}
				for ntok := 1; ntok <= pool; ntok++ {
					for _, scattered := range []bool{false, true} {
						pick := rng.Perm(pool)[:ntok]
						var x, out [][]float32
						if scattered { // rows of no single matrix (rowStride 0)
							x, out = make([][]float32, ntok), make([][]float32, ntok)
							for i, k := range pick {
								x[i] = append([]float32(nil), xs[k]...)
								out[i] = make([]float32, m.Rows+i)
							}
						} else {
							x, out = matrix(ntok, m.Cols), matrix(ntok, m.Rows)
							for i, k := range pick {
								copy(x[i], xs[k])
							}
						}
						linearBF16DPOn(asm, &m, b, x, out)
						for i, k := range pick {
							for r := range m.Rows {
								if got, want := out[i][r], alone[k][r]; math.Float32bits(got) != math.Float32bits(want) {
									t.Fatalf("asm=%v rows=%d cols=%d tokens=%d scattered=%v bias=%v: row %d of token %d is %g in the batch, %g alone",
										asm, m.Rows, m.Cols, ntok, scattered, b != nil, r, k, got, want)
								}
							}
						}
					}
				}
			}
		}
	}
	if useBF16DP {
		t.Logf("assembly = dotBF16DPRef bit for bit in %d of %d (row, token)s", same, total)
	}
}

// toBF16RNE follows VCVTNEPS2BF16's definition on the edge cases (zeros,
// denormals, ties either way, overflow, infinities, NaNs), and agrees with
// the instruction bit for bit on those and on random bit patterns.
func TestBF16DPConvert(t *testing.T) {
	edges := []struct {
		in   uint32
		want uint16
	}{
		{0x00000000, 0x0000}, {0x80000000, 0x8000}, // zeros
		{0x00000001, 0x0000}, {0x807fffff, 0x8000}, {0x007fffff, 0x0000}, // denormals: signed zero
		{0x00800000, 0x0080}, {0x80ffffff, 0x8100}, // smallest normal; rounds up
		{0x3f800000, 0x3f80}, {0x3f808000, 0x3f80}, {0x3f818000, 0x3f82}, // 1; ties to even
		{0x3f807fff, 0x3f80}, {0x3f808001, 0x3f81}, {0xbf818000, 0xbf82},
		{0x3f7fffff, 0x3f80},                                                                   // carries into the exponent
		{0x7f7f7fff, 0x7f7f}, {0x7f7f8000, 0x7f80}, {0x7f7fffff, 0x7f80}, {0xff7fffff, 0xff80}, // overflow
		{0x7f800000, 0x7f80}, {0xff800000, 0xff80}, // infinities
		{0x7fc00000, 0x7fc0}, {0x7f800001, 0x7fc0}, {0x7f80ffff, 0x7fc0}, {0x7fbfffff, 0x7fff}, // NaN: quiet, truncated
		{0xffffffff, 0xffff}, {0xff812345, 0xffc1},
	}
	in := make([]float32, 0, 1<<16)
	for _, e := range edges {
		if got := bf16RNE(e.in); got != e.want {
			t.Errorf("bf16RNE(%#08x) = %#04x, want %#04x", e.in, got, e.want)
		}
		in = append(in, math.Float32frombits(e.in))
	}
	// toBF16's split between the instruction and the Go tail, and its Go
	// path.
	for _, asm := range []bool{false, useBF16DP} {
		got := make([]uint16, len(in))
		toBF16(in, got, asm)
		for i, v := range in {
			if want := bf16RNE(math.Float32bits(v)); got[i] != want {
				t.Fatalf("toBF16 (asm %v) element %d: %#04x, want %#04x", asm, i, got[i], want)
			}
		}
	}
	if !useBF16DP {
		t.Skip("no AVX-512 BF16 on this CPU: the instruction is not checked")
	}
	rng := rand.New(rand.NewPCG(15, 16))
	for len(in) < cap(in) {
		b := rng.Uint32()
		switch rng.IntN(4) {
		case 0: // near a tie or the exponent's ends
			b = b&^0xffff | []uint32{0x8000, 0x7fff, 0x8001, 0x0000, 0xffff}[rng.IntN(5)]
		case 1:
			b = b&0x807fffff | []uint32{0, 0xff, 0x01, 0xfe}[rng.IntN(4)]<<23
		}
		in = append(in, math.Float32frombits(b))
	}
	want, got := make([]uint16, len(in)), make([]uint16, len(in))
	toBF16RNE(in, want)
	cvtBF16AVX512(&in[0], &got[0], len(in))
	for i := range in {
		if got[i] != want[i] {
			t.Fatalf("%#08x: VCVTNEPS2BF16 gives %#04x, toBF16RNE %#04x", math.Float32bits(in[i]), got[i], want[i])
		}
	}
}

// The error of linearBF16DP against the exact linear at a 20b-like shape
// (2880 columns, weights ~N(0, 0.02), activations ~N(0, 1)), relative to
// the outputs' rms. Rounding x to bf16 (8 significant bits) errs by at
// most 2^-8 of each element, about 2^-7/√24 ≈ 1.6e-3 rms for values spread
// over a binade; each output's error Σ w_i·x_i·δ_i is a sum of independent
// terms just as the output Σ w_i·x_i is, so it keeps that relative size
// (it is not averaged away: both grow like √n), and the max of 8192 nearly
// Gaussian errors is about 4 rms ≈ 6.5e-3. The bounds, rms < 2^-8 and max
// < 2^-6, leave a factor of about 2.4 over those estimates. The exact
// kernel's own error against float64 is logged for scale.
func TestBF16DPErrorVsExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	const rows, cols, ntok = 1024, 2880, 8
	m := Mat{Rows: rows, Cols: cols, BF16: make([]uint16, rows*cols)}
	x := matrix(ntok, cols)
	bf16dpData(rng, m.BF16, x[0][:cap(x[0])])
	exact, fast := matrix(ntok, rows), matrix(ntok, rows)
	linear(&m, nil, x, exact)
	linearBF16DP(&m, nil, x, fast)
	var ss, se, s64, maxe float64
	for k := range ntok {
		for r := range rows {
			var d64 float64
			for i, wb := range m.bf16Row(r) {
				d64 += float64(bf16(wb)) * float64(x[k][i])
			}
			e := float64(fast[k][r]) - float64(exact[k][r])
			ss += float64(exact[k][r]) * float64(exact[k][r])
			se += e * e
			s64 += (float64(exact[k][r]) - d64) * (float64(exact[k][r]) - d64)
			maxe = max(maxe, math.Abs(e))
		}
	}
	rms := math.Sqrt(ss / (rows * ntok))
	relRMS, relMax := math.Sqrt(se/(rows*ntok))/rms, maxe/rms
	t.Logf("linearBF16DP vs linear, %d×%d, %d tokens (kernel %v): error rms %.3g, max %.3g of the outputs' rms %.3g; linear vs float64: rms %.3g",
		rows, cols, ntok, useBF16DP, relRMS, relMax, rms, math.Sqrt(s64/(rows*ntok))/rms)
	if relRMS > 0x1p-8 || relMax > 0x1p-6 {
		t.Fatalf("error rms %.3g (bound %.3g), max %.3g (bound %.3g)", relRMS, 0x1p-8, relMax, 0x1p-6)
	}
}

// BenchmarkLinearBF16DP times linearBF16DP against the exact linear at
// the 20b's bf16 shapes: q/k/v (2880 → 5120), o (4096 → 2880) and a 16384-row
// slice of the unembedding, for a decode step of one token and a batch of
// eight. MB/s is weight bytes.
func BenchmarkLinearBF16DP(b *testing.B) {
	rng := rand.New(rand.NewPCG(19, 20))
	for _, s := range []struct {
		name       string
		rows, cols int
	}{{"2880x5120", 5120, 2880}, {"4096x2880", 2880, 4096}, {"unembed16384x2880", 16384, 2880}} {
		m := Mat{Rows: s.rows, Cols: s.cols, BF16: make([]uint16, s.rows*s.cols)}
		bf16dpData(rng, m.BF16, nil)
		for _, ntok := range []int{1, 8} {
			x, out := matrix(ntok, s.cols), matrix(ntok, s.rows)
			bf16dpData(rng, nil, x[0][:cap(x[0])])
			for _, k := range []struct {
				name string
				f    func(w *Mat, bias []float32, x, out [][]float32)
			}{{"exact", linear}, {"bf16dp", linearBF16DP}} {
				b.Run(fmt.Sprintf("%s/tokens=%d/%s", s.name, ntok, k.name), func(b *testing.B) {
					if k.name == "bf16dp" && !useBF16DP {
						b.Skip("no AVX-512 BF16 on this CPU")
					}
					b.SetBytes(int64(2 * s.rows * s.cols))
					for b.Loop() {
						k.f(&m, nil, x, out)
					}
				})
			}
		}
	}
}
