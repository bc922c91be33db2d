package engine

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestQ8Layout(t *testing.T) {
	var seen [128]bool
	for _, v := range q8Layout {
		if seen[v] {
			t.Fatalf("value %d placed twice: %v", v, q8Layout)
		}
		seen[v] = true
	}
	// The kernel's int32 lane i sums positions 4i..4i+3 of each half:
	// each lane must hold one block only, block i mod 4, so that one
	// broadcast of four scales serves them; the first half holds the even
	// elements (low nibbles), the second the odd ones.
	for p, v := range q8Layout {
		if lane := p % 64 / 4; v/32 != lane%4 || v%2 != p/64 {
			t.Fatalf("position %d (lane %d) holds block %d element %d", p, lane, v/32, v%32)
		}
	}
}

// randomMXFP4 is an expert stack with random nibbles and scales in lo..hi.
func randomMXFP4(rng *rand.Rand, experts, rows, cols int, lo, hi byte) *MXFP4 {
	m := &MXFP4{Experts: experts, Rows: rows, Cols: cols,
		Blocks: make([]byte, experts*rows*cols/2), Scales: make([]byte, experts*rows*cols/32)}
	for i := range m.Blocks {
		m.Blocks[i] = byte(rng.IntN(256))
	}
	for i := range m.Scales {
		m.Scales[i] = lo + byte(rng.IntN(int(hi-lo)+1))
	}
	m.prepare()
	return m
}

func TestQ8Quantize(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const nb = 6 // a partial group
	x := make([]float32, nb*32)
	for i := range x {
		x[i] = float32(rng.NormFloat64()) * float32(i%7+1)
	}
	clear(x[64:96]) // an all-zero block
	var a q8Acts
	a.reset(1, nb)
	a.quantize(0, x)
	for b := range nb {
		var sum int32
		for p, src := range q8Layout {
			if src/32 != b%4 {
				continue
			}
			i := (b/4)*128 + src
			q := a.q[(b/4)*q8Group+p]
			sum += int32(q)
			if got, want := float64(q)*float64(a.d[b]), float64(x[i]); math.Abs(got-want) > float64(a.d[b])/2*1.0001 {
				t.Fatalf("block %d element %d: %v·%v = %v, want %v within half a step", b, src%32, q, a.d[b], got, want)
			}
		}
		z := a.q[(b/4)*q8Group+128+4*(b%4):]
		if got := int32(uint32(uint8(z[0])) | uint32(uint8(z[1]))<<8 | uint32(uint8(z[2]))<<16 | uint32(uint8(z[3]))<<24); got != -12*sum {
			t.Fatalf("block %d: offset lane %d, want %d", b, got, -12*sum)
		}
	}
	if a.d[2] != 0 || a.d[3] == 0 {
		t.Fatalf("zero block's scale %v, next %v", a.d[2], a.d[3])
	}
	for i := nb; i < 8; i++ { // past nb: zero, as the kernel needs
		if a.d[i] != 0 {
			t.Fatalf("padding block %d: d %v", i, a.d[i])
		}
	}
	for p, src := range q8Layout {
		if src/32 >= nb%4 && a.q[q8Group+p] != 0 {
			t.Fatalf("padding value at %d: %d", p, a.q[q8Group+p])
		}
	}
}

// TestQ8Kernel checks the int8 kernels against the portable reference of
// the same arithmetic, and that a (row, token) gives the same bits alone
// or with any number of other tokens.
func TestQ8Kernel(t *testing.T) {
	if !useQ8 {
		t.Skip("no AVX-512 VNNI on this CPU: the fast MXFP4 path is not used")
	}
	rng := rand.New(rand.NewPCG(3, 4))
	// 90 blocks is 20b's rows (5 groups of 16 scales and a tail of 10;
	// 22 block groups and a partial one of 2); 16 blocks have no tail, 1
	// to 3 only a partial group; 150 rows span several chunks.
	for _, size := range []struct{ cols, rows int }{{32, 3}, {64, 5}, {96, 4}, {512, 150}, {2880, 40}, {1344, 3}, {1376, 2}} {
		const experts = 2
		cols, rows := size.cols, size.rows
		nb := cols / 32
		m := randomMXFP4(rng, experts, rows, cols, 110, 130)
		m.Scales[0], m.Scales[1] = 2, 254 // the extremes normalScales admits
		bias := make([]float32, rows)
		for i := range bias {
			bias[i] = float32(rng.NormFloat64())
		}
		const maxTok = 9
		var all q8Acts
		all.reset(maxTok, nb)
		x := matrix(maxTok, cols)
		for k := range x {
			for i := range x[k] {
				x[k][i] = float32(rng.NormFloat64())
			}
			all.quantize(k, x[k])
		}
		for e := range experts {
			o := e * rows * nb
			for _, b := range [][]float32{nil, bias} {
				alone := matrix(maxTok, rows)
				for k := range maxTok {
					var one q8Acts
					one.gather(&all, []int{k})
					expertLinearQ8(m, e, b, &one, alone[k:k+1])
					for r := range rows {
						want := q8DotRef(m.Blocks[(o+r*nb)*16:], m.Scales[o+r*nb:], &all, k)
						var scale float64
						for _, v := range x[k] {
							scale += math.Abs(float64(v))
						}
						scale *= 6 * float64(e8m0[130]) // a bound on Σ|w·x|
						if b != nil {
							want += float64(b[r])
						}
						if got := float64(alone[k][r]); math.Abs(got-want) > 1e-6*scale {
							t.Fatalf("%dx%d expert %d row %d token %d: %v, want %v", rows, cols, e, r, k, got, want)
						}
					}
				}
				for ntok := 1; ntok <= maxTok; ntok++ {
					toks := rng.Perm(maxTok)[:ntok]
					var batch q8Acts
					batch.gather(&all, toks)
					out := matrix(ntok, rows)
					expertLinearQ8(m, e, b, &batch, out)
					for i, k := range toks {
						for r := range rows {
							if math.Float32bits(out[i][r]) != math.Float32bits(alone[k][r]) {
								t.Fatalf("%dx%d: token %d row %d in a batch of %d: %v, alone %v", rows, cols, k, r, ntok, out[i][r], alone[k][r])
							}
						}
					}
				}
			}
		}
	}
}

// TestQ8Error measures the fast path's error against the exact kernel on
// 20b's expert shape, with activations shaped like a hidden state (a few
// large values among small ones). With weights independent of the
// activations, a sum's relative error is the activations' own relative
// rounding error (each value moves by at most half a step, 1/254 of its
// block's largest): the kernel must add nothing to that.
func TestQ8Error(t *testing.T) {
	if !useQ8 {
		t.Skip("no AVX-512 VNNI on this CPU")
	}
	rng := rand.New(rand.NewPCG(7, 8))
	const rows, cols, ntok = 256, 2880, 8
	m := randomMXFP4(rng, 1, rows, cols, 118, 124)
	x := matrix(ntok, cols)
	for k := range x {
		for i := range x[k] {
			x[k][i] = float32(rng.NormFloat64())
			if rng.IntN(100) == 0 {
				x[k][i] *= 20 // outliers, as real hidden states have
			}
		}
	}
	var a q8Acts
	a.reset(ntok, cols/32)
	for k := range x {
		a.quantize(k, x[k])
	}
	exact, fast := matrix(ntok, rows), matrix(ntok, rows)
	expertLinear(m, 0, nil, x, exact)
	expertLinearQ8(m, 0, nil, &a, fast)
	var se, ss, worst float64
	for k := range exact {
		for r := range exact[k] {
			d := float64(fast[k][r] - exact[k][r])
			se += d * d
			ss += float64(exact[k][r]) * float64(exact[k][r])
			worst = max(worst, math.Abs(d))
		}
	}
	rms := math.Sqrt(ss / (rows * ntok))
	rel := math.Sqrt(se/(rows*ntok)) / rms
	var xe, xs float64 // the activations' own rounding
	for k := range x {
		for p, src := range q8Layout {
			for gi := range a.g {
				b := 4*gi + src/32
				if b >= a.nb {
					continue
				}
				v := float64(x[k][gi*128+src])
				d := float64(a.q[(k*a.g+gi)*q8Group+p])*float64(a.d[k*a.g*4+b]) - v
				xe += d * d
				xs += v * v
			}
		}
	}
	want := math.Sqrt(xe / xs)
	t.Logf("int8 MXFP4 vs exact: rms error %.2e of the outputs' rms (the activations' rounding: %.2e), worst %.2e", rel, want, worst/rms)
	if rel > 1.3*want || rel < want/1.3 || worst/rms > 10*want {
		t.Fatalf("error %.2e rms, %.2e worst: the activations' rounding accounts for %.2e", rel, worst/rms, want)
	}
}
