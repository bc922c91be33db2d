package engine

import "math"

// The fast MXFP4 path (--cpu-kernels fast): each token's activations are
// quantized to int8 per 32-value block, as llama.cpp's Q8_0 does, and an
// expert row is multiplied in integers (VPDPBUSD), one float multiply-add
// per block pair. The exact kernels decode every nibble to float32 first,
// which bounds them at about 10 GB/s of weights on a Zen 4 core pair;
// integer products skip the decode. The price is the activations'
// rounding: about 2^-8 of a block's largest value per element, measured
// against the exact path in q8_test.go and docs/performance.md.
//
// The arithmetic of one (row, token), blocks b of 32:
//
//	weights  w = (u - 12) · 2^(s_b-128), u = 2·E2M1 + 12 in 0..24 (q8u)
//	x       ≈ q · d_b, q in -127..127, d_b = max|x_b| / 127
//	row·x   = Σ_b 2^(s_b-128)·d_b · (Σ u·q − 12·Σ q)
//
// The unsigned u is what VPDPBUSD multiplies; each block's −12·Σq, kept
// with the token, is where its integer sum starts, so the offset goes back
// out exactly.

// q8Acts holds tokens quantized for the int8 kernels. The kernels take
// blocks four at a time (a group), so a token's nb blocks are stored as g
// = ⌈nb/4⌉ groups of 192 bytes (q8Group: 128 int8 values in q8Layout's
// order, then sixteen int32 lanes whose first four hold each block's
// −12·Σq), and g·4 block scales d, all zero past block nb.
type q8Acts struct {
	nb, g int
	q     []int8
	d     []float32
}

// q8Group is the bytes of one block group of a quantized token.
const q8Group = 192

// q8Layout maps each of a block group's 128 kernel positions to the value
// it holds (block·32 + element). The kernel permutes the group's 64 bytes
// so that dword k holds dword k/4 of block k mod 4 (q8perm), then looks up
// the low nibbles (even elements) into positions 0..63 and the high ones
// (odd elements) into 64..127, in place; the activations are stored in
// that order instead of moving the weights.
var q8Layout = func() (l [128]int) {
	for p := range l {
		half, b := p/64, p%64
		k := b / 4                 // the int32 lane
		blk, j := k%4, 4*(k/4)+b%4 // its block, and the byte in that block
		l[p] = blk*32 + 2*j + half
	}
	return
}()

// q8 reports whether the int8 kernels run m: on a CPU with them, with
// scales the exact vector kernel takes too (normalScales) and rows of
// any number of blocks.
func (m *MXFP4) q8() bool { return useQ8 && m.vector && m.Cols%32 == 0 }

// reset sizes a for ntok tokens of nb blocks, reusing its memory.
func (a *q8Acts) reset(ntok, nb int) {
	a.nb, a.g = nb, (nb+3)/4
	a.q = grow(a.q, ntok*a.g*q8Group)
	a.d = grow(a.d, ntok*a.g*4)
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// quantize stores x (nb·32 values) as token t.
func (a *q8Acts) quantize(t int, x []float32) {
	nb, g := a.nb, a.g
	x = x[:nb*32]
	q := a.q[t*g*q8Group : (t+1)*g*q8Group]
	d := a.d[t*g*4 : (t+1)*g*4]
	var inv [4]float32
	var sum [4]int32
	for gi := range g {
		for h := range 4 {
			b := gi*4 + h
			inv[h], sum[h], d[b] = 0, 0, 0
			if b >= nb {
				continue
			}
			var amax float32
			for _, v := range x[b*32 : b*32+32] {
				amax = max(amax, float32(math.Abs(float64(v))))
			}
			switch {
			case amax == 0:
			case amax <= math.MaxFloat32:
				d[b] = amax / 127
				inv[h] = 127 / amax
			default: // Inf or NaN: the block's products are NaN, as exact ones would be
				d[b] = float32(math.NaN())
			}
		}
		qs := q[gi*q8Group : (gi+1)*q8Group]
		for i, src := range q8Layout {
			h, b := src/32, gi*4+src/32
			if b >= nb {
				qs[i] = 0
				continue
			}
			v := int32(math.RoundToEven(float64(x[gi*128+src] * inv[h])))
			v = min(max(v, -127), 127)
			qs[i] = int8(v)
			sum[h] += v
		}
		clear(qs[128:])
		for h := range 4 { // lane h: −12·Σq, little-endian int32
			z := uint32(-12 * sum[h])
			for k := range 4 {
				qs[128+4*h+k] = int8(uint8(z >> (8 * k)))
			}
		}
	}
}

// gather makes a's tokens the given tokens of src.
func (a *q8Acts) gather(src *q8Acts, toks []int) {
	a.reset(len(toks), src.nb)
	g := a.g
	for i, t := range toks {
		copy(a.q[i*g*q8Group:(i+1)*g*q8Group], src.q[t*g*q8Group:])
		copy(a.d[i*g*4:(i+1)*g*4], src.d[t*g*4:])
	}
}

// q8DotRef is the portable reference of one (row, token): the same
// integer sums and formula, accumulated in float64, for the tests.
func q8DotRef(blocks, scales []byte, a *q8Acts, t int) float64 {
	nb, g := a.nb, a.g
	q := a.q[t*g*q8Group:]
	var sum float64
	for b := range nb {
		gi, h := b/4, b%4
		blk := blocks[b*16 : b*16+16]
		var dot int64
		for i, src := range q8Layout {
			if src/32 != h {
				continue
			}
			e := src % 32
			nib := blk[e/2] >> (4 * (e % 2)) & 15
			u := int64(2*fp4[nib]) + 12
			dot += (u - 12) * int64(q[gi*q8Group+i])
		}
		ws := float64(e8m0[scales[b]]) / 2
		sum += ws * float64(a.d[t*g*4+b]) * float64(dot)
	}
	return sum
}

// q8RowChunk is how many rows one kernel call covers: their blocks (1.5 KB
// a row at 2880 columns) stay in the L2 cache while every group of four
// tokens passes over them.
const q8RowChunk = 32

// expertLinearQ8 is expertLinear on the int8 kernels: out[t] = W_e·x_t +
// bias for the ntok tokens of a (quantized). Tokens go four at a time,
// then two, then one (a decode step gives most experts one to three
// tokens); the kernels give a (row, token) the same operations, so
// results do not depend on batching.
func expertLinearQ8(w *MXFP4, e int, bias []float32, a *q8Acts, out [][]float32) {
	if len(out) == 0 || w.Rows == 0 {
		return
	}
	intoMatrix(out, w.Rows, func(res [][]float32) rowJob { return q8Job(w, e, bias, a, res) })
}

// q8Job is expertLinearQ8's product as a rowJob, for out (ntok > 0
// rows of w.Rows > 0) one matrix, so that MoE runs all of a step's experts
// in one parallel region.
func q8Job(w *MXFP4, e int, bias []float32, a *q8Acts, out [][]float32) rowJob {
	ntok := len(out)
	nb, rows := w.Cols/32, w.Rows
	g := a.g
	_ = a.q[ntok*g*q8Group-1]
	for t := range out {
		_ = out[t][rows-1]
	}
	os := rowStride(out)
	if os == 0 {
		panic("engine: q8Job: output rows are not one matrix")
	}
	oa := out[0][:cap(out[0])]
	base := w.expertBase(e, bias)
	return rowJob{rows: rows, run: func(lo, hi int) {
		ds := make([]float32, 4*g*4) // zero past each token's nb: never written
		for r := lo; r < hi; r += q8RowChunk {
			m := min(q8RowChunk, hi-r)
			o := base + r*nb
			var b *float32
			if bias != nil {
				b = &bias[r]
			}
			t := 0
			for ; t+4 <= ntok; t += 4 {
				q8MXFP4Rows4(&w.Blocks[o*16], &w.Scales[o], nb, m, &a.q[t*g*q8Group], &a.d[t*g*4], &ds[0], b, &oa[t*os+r], os)
			}
			for ; t+2 <= ntok; t += 2 {
				q8MXFP4Rows2(&w.Blocks[o*16], &w.Scales[o], nb, m, &a.q[t*g*q8Group], &a.d[t*g*4], &ds[0], b, &oa[t*os+r], os)
			}
			for ; t < ntok; t++ {
				q8MXFP4Rows1(&w.Blocks[o*16], &w.Scales[o], nb, m, &a.q[t*g*q8Group], &a.d[t*g*4], &ds[0], b, &oa[t*os+r], os)
			}
		}
	}}
}
