package engine

import "math"

// This file is an opt-in fast path for the bf16 weight matrices
// (attention projections and unembedding; CPU.Linear keeps the router
// exact): each token's activations
// are rounded to bf16 once, and the products use the AVX-512 BF16
// instruction VDPBF16PS, which multiplies 32 bf16 pairs into 16 float32
// lanes per instruction, as llama.cpp does on CPUs that have it. That
// halves the bytes of x the kernel reads and removes the bf16→float32
// conversion of the weights from the inner loop, at the price of rounding
// x to 8 significant bits: at most 2^-8 of each element, about 1.6e-3
// rms, and the outputs err by about as much relative to their rms (the
// error is a random sum just like the output, so it is not averaged away;
// TestBF16DPErrorVsExact). linear, which converts the weights and keeps x
// in float32, stays the default and the reference; this path is for
// callers that choose speed over that exactness.
//
// What VDPBF16PS computes (Intel SDM, VDPBF16PS "Operation"): for each
// float32 lane i of the accumulator, with a and b the bf16 pairs
// (elements 2i and 2i+1) of its two sources,
//
//	acc[i] += a[2i+1]·b[2i+1]  // odd element first,
//	acc[i] += a[2i]·b[2i]      // then the even one
//
// each step a float32 FMA rounded to nearest even (the product itself is
// not rounded), with input denormals (bf16 and the accumulator) taken as
// zero and denormal results flushed to zero; MXCSR is neither read nor
// written. dotBF16DPRef reproduces that, and then the kernel's reduction
// of the 16 lanes, so it is the kernel's portable twin. On the AMD Zen 4
// this was written on, the two agree bit for bit in every test, the edge
// cases of TestBF16DPLaneSemantics included; but the SDM's pseudo-code is
// all that defines the instruction, so the random tests allow a few units
// in the last place.

// toBF16RNE rounds x to bf16 into dst (len(dst) ≥ len(x)) exactly as
// VCVTNEPS2BF16 does (Intel SDM, convert_fp32_to_bfloat16): round to
// nearest, ties to even; denormal inputs become a zero of the same sign
// (unlike ToBF16, which rounds them); NaN keeps its sign and top payload
// bits and becomes quiet; overflow gives infinity.
func toBF16RNE(x []float32, dst []uint16) {
	dst = dst[:len(x)]
	for i, v := range x {
		dst[i] = bf16RNE(math.Float32bits(v))
	}
}

// bf16RNE is toBF16RNE for one float32 bit pattern.
func bf16RNE(b uint32) uint16 {
	switch {
	case b&0x7f800000 == 0: // zero or denormal: signed zero
		return uint16(b>>16) & 0x8000
	case b&0x7fffffff > 0x7f800000: // NaN: truncated, made quiet
		return uint16(b>>16) | 0x40
	}
	// Normal or infinity (whose zero mantissa cannot carry).
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

// toBF16 is toBF16RNE, with the instruction itself if asm (the two agree
// bit for bit; TestBF16DPConvert checks).
func toBF16(x []float32, dst []uint16, asm bool) {
	n := 0
	if asm && len(x) >= 16 {
		n = len(x) &^ 15
		_ = dst[n-1]
		cvtBF16AVX512(&x[0], &dst[0], n)
	}
	toBF16RNE(x[n:], dst[n:len(x)])
}

// dotBF16DPRef is the dot product of a bf16 row w with a bf16 token x
// (len(w) = len(x), a multiple of 32) with the kernel's structure: 16
// float32 lanes, lane j taking the pairs (2j, 2j+1) of every 32-element
// block in order, each pair as VDPBF16PS does (dpStep, odd element
// first), then the lanes reduced as dotBF16DPRows reduces them: j + j+8,
// then j + j+4, then (0+1) + (2+3), in ordinary float32 additions.
func dotBF16DPRef(w, x []uint16) float32 {
	n := len(w)
	x = x[:n]
	var acc [16]float32
	for b := 0; b+32 <= n; b += 32 {
		wb, xb := w[b:b+32], x[b:b+32]
		for j := range acc {
			a := dpStep(acc[j], wb[2*j+1], xb[2*j+1])
			acc[j] = dpStep(a, wb[2*j], xb[2*j])
		}
	}
	var h [8]float32
	for j := range h {
		h[j] = acc[j] + acc[j+8]
	}
	var q [4]float32
	for j := range q {
		q[j] = h[j] + h[j+4]
	}
	return (q[0] + q[1]) + (q[2] + q[3])
}

// dpStep is one accumulation of VDPBF16PS: acc + a·b for bf16 a and b,
// rounded once to float32 (nearest even), denormal inputs read as zero
// and a denormal result flushed to zero. The product is exact in float64
// and so is the float64 sum's error (TwoSum); rounding the float64 sum to
// float32 is then correct except when it lands exactly halfway between two
// float32 values while the exact sum is not there, which the error
// settles.
func dpStep(acc float32, a, b uint16) float32 {
	c := float64(daz(acc))
	p := float64(daz(bf16(a))) * float64(daz(bf16(b)))
	s := c + p
	r := float32(s)
	if math.IsInf(s, 0) || math.IsNaN(s) {
		return ftz(r)
	}
	bb := s - c // TwoSum: e is the exact c + p − s
	e := (c - (s - bb)) + (p - bb)
	if e != 0 && float64(r) != s {
		// s is not a float32: r is one neighbour, o the other.
		o := math.Nextafter32(r, float32(math.Copysign(math.Inf(1), s-float64(r))))
		if s == (float64(r)+float64(o))/2 && (e > 0) == (float64(o) > float64(r)) {
			r = o // a tie for s, but the exact sum lies on o's side
		}
	}
	return ftz(r)
}

// daz reads a denormal as a zero of the same sign.
func daz(f float32) float32 {
	if b := math.Float32bits(f); b&0x7f800000 == 0 {
		return math.Float32frombits(b & 0x80000000)
	}
	return f
}

// ftz flushes a denormal result to a zero of the same sign.
func ftz(f float32) float32 { return daz(f) }

// linearBF16DP is linear's fast, inexact form for a bf16 Mat whose Cols
// is a multiple of 32: out[t] = W·x[t] + bias (bias may be nil) with each
// x[t] rounded to bf16 (toBF16RNE) and the products of dotBF16DPRows, or
// of dotBF16DPRef per (row, token) where that kernel is missing. Each
// (row, token) goes through the same operations whatever else is in the
// step, so a sequence gets the same logits alone or batched.
func linearBF16DP(w *Mat, bias []float32, x, out [][]float32) {
	linearBF16DPOn(useBF16DP, w, bias, x, out)
}

// linearBF16DPOn is linearBF16DP with the assembly (asm, which needs
// useBF16DP) or without, so tests run the portable path everywhere.
func linearBF16DPOn(asm bool, w *Mat, bias []float32, x, out [][]float32) {
	n, rows, ntok := w.Cols, w.Rows, len(x)
	if ntok == 0 || rows == 0 {
		return
	}
	if w.F32 != nil || n <= 0 || n%32 != 0 {
		panic("engine: linearBF16DP needs a bf16 matrix with a multiple of 32 columns")
	}
	for t := range x {
		_, _ = x[t][n-1], out[t][rows-1] // bounds, checked once
	}
	ws := w.stride()
	_ = w.BF16[(rows-1)*ws+n-1]
	if bias != nil {
		_ = bias[rows-1]
	}
	// The tokens in bf16, one contiguous matrix whatever x's layout.
	xb := make([]uint16, ntok*n)
	for t := range x {
		toBF16(x[t][:n], xb[t*n:(t+1)*n], asm)
	}
	if !asm {
		parallel(rows, func(lo, hi int) {
			for r := lo; r < hi; r++ {
				var b float32
				if bias != nil {
					b = bias[r]
				}
				row := w.bf16Row(r)
				for t := range ntok {
					out[t][r] = dotBF16DPRef(row, xb[t*n:(t+1)*n]) + b
				}
			}
		})
		return
	}
	// The kernel writes one matrix with a row stride: out's own rows when
	// they are one, else a scratch copied out afterwards.
	os := rowStride(out)
	var oa, tmp []float32
	if os == 0 {
		tmp = make([]float32, ntok*rows)
		oa, os = tmp, rows
	} else {
		oa = out[0][:cap(out[0])]
	}
	parallelChunks(rows, linearChunk(rows), func(lo, hi int) {
		for r := lo; r < hi; r += linearRowChunk {
			var b *float32
			if bias != nil {
				b = &bias[r]
			}
			dotBF16DPRows(&w.BF16[r*ws], ws, min(linearRowChunk, hi-r), n, &xb[0], n, ntok, b, &oa[r], os)
		}
	})
	if tmp != nil {
		for t := range out {
			copy(out[t][:rows], tmp[t*rows:(t+1)*rows])
		}
	}
}
