package main

import (
	"fmt"
	"math"
)

// Diff summarises how far a device's output is from the reference's.
//
// Three error measures, because each alone misleads:
//   - RelL2 = ‖got − ref‖₂ / ‖ref‖₂ is the normwise relative error, the
//     number bf16 arithmetic is judged by (METHOD.md: float32 lands far
//     under 1e-3, bf16 operands between 1e-3 and 1e-2).
//   - MaxAbs = max |got − ref| catches a few wrong elements that a norm
//     over millions would hide (a wrong row, a missed block).
//   - MaxRel = max |got − ref| / max(|ref|, floor), with floor a hundredth
//     of the reference's RMS, is reported for reading only: elementwise
//     relative error is meaningless near zero, so it never decides.
//
// NaN and Inf are counted separately; outputs are poisoned with NaN before
// every op, so an element the op never wrote shows up as NaN.
type Diff struct {
	N      int     `json:"n"`
	MaxAbs float64 `json:"max_abs"`
	MaxRel float64 `json:"max_rel"`
	RelL2  float64 `json:"rel_l2"`
	RefMax float64 `json:"ref_max_abs"` // max |ref|, the scale MaxAbs is judged against
	RefRMS float64 `json:"ref_rms"`
	NaN    int     `json:"nan,omitempty"` // NaN in got (unwritten or computed)
	Inf    int     `json:"inf,omitempty"` // ±Inf in got
	// RefBad counts non-finite reference values: the reference itself is
	// broken (or was not written), which fails the check too.
	RefBad int `json:"ref_bad,omitempty"`
	// Worst is the index of the element with the largest |got − ref|.
	Worst int `json:"worst"`
}

// Tolerance is a pass bound. Zero values mean exact: the op moves or
// converts values without arithmetic that could round differently.
type Tolerance struct {
	// RelL2 bounds Diff.RelL2.
	RelL2 float64 `json:"rel_l2"`
	// AbsOfMax bounds Diff.MaxAbs as a fraction of Diff.RefMax.
	AbsOfMax float64 `json:"abs_of_max"`
	// Why says where the bound comes from.
	Why string `json:"why,omitempty"`
}

// The tolerances of the op checks. The CUDA backend keeps activations in
// float32 but rounds matrix inputs to bf16 before cuBLAS and the MoE
// kernels (one rounding, relative error up to 2⁻⁹, RMS 2⁻⁹/√3 ≈ 1.1e-3)
// and accumulates in float32; the KV cache is bf16. The CPU reference keeps
// float32 everywhere. So a product of K terms with independent rounding
// errors has a normwise relative error near 1.1e-3 whatever K is; the
// bounds leave about 4× for the second rounding some ops have (the MoE
// rounds its input and the SwiGLU output) and for unlucky draws, and stay
// far below what any indexing or layout bug gives (errors of order 1).
var (
	// tolExact: copies and bf16→float32 conversions are exact.
	tolExact = Tolerance{Why: "a copy or an exact bf16→fp32 conversion: bit-equal"}
	// tolFP32 is for ops that stay in float32 (norms, RoPE): only the
	// summation order and libm (rsqrt, sin, cos) differ.
	tolFP32 = Tolerance{RelL2: 2e-5, AbsOfMax: 1e-4,
		Why: "fp32 in and out: summation order and libm rounding only"}
	// tolBF16 is for one bf16 rounding of the inputs, fp32 accumulation.
	tolBF16 = Tolerance{RelL2: 5e-3, AbsOfMax: 2e-2,
		Why: "inputs rounded to bf16 (RMS rel. 1.1e-3), fp32 accumulation"}
	// tolBF16x2 is for two roundings in a row (MoE: input and SwiGLU
	// output; attention: bf16 K and V cache, scores through exp).
	tolBF16x2 = Tolerance{RelL2: 1e-2, AbsOfMax: 3e-2,
		Why: "two bf16 roundings (inputs and an intermediate, or the bf16 KV cache), fp32 accumulation"}
)

// compare measures got against ref (equal lengths).
func compare(got, ref []float32) Diff {
	d := Diff{N: len(ref), Worst: -1}
	if len(got) != len(ref) {
		d.NaN = len(ref)
		return d
	}
	var num, den float64
	for _, r := range ref {
		rf := float64(r)
		if math.IsNaN(rf) || math.IsInf(rf, 0) {
			d.RefBad++
			continue
		}
		d.RefMax = math.Max(d.RefMax, math.Abs(rf))
		den += rf * rf
	}
	if n := len(ref) - d.RefBad; n > 0 {
		d.RefRMS = math.Sqrt(den / float64(n))
	}
	floor := math.Max(d.RefRMS*1e-2, math.SmallestNonzeroFloat32)
	for i, g := range got {
		gf, rf := float64(g), float64(ref[i])
		switch {
		case math.IsNaN(gf):
			d.NaN++
			continue
		case math.IsInf(gf, 0):
			d.Inf++
			continue
		case math.IsNaN(rf) || math.IsInf(rf, 0):
			continue
		}
		e := math.Abs(gf - rf)
		if e > d.MaxAbs || d.Worst < 0 {
			d.MaxAbs, d.Worst = math.Max(e, d.MaxAbs), i
		}
		d.MaxRel = math.Max(d.MaxRel, e/math.Max(math.Abs(rf), floor))
		num += e * e
	}
	switch {
	case den > 0:
		d.RelL2 = math.Sqrt(num / den)
	case num > 0:
		d.RelL2 = math.Inf(1)
	}
	return d
}

// merge folds e into d (the worst of both; RelL2 is the worse of the two,
// not a pooled norm, so one bad case is never averaged away).
func (d Diff) merge(e Diff) Diff {
	if d.N == 0 {
		return e
	}
	out := d
	out.N += e.N
	if e.MaxAbs > d.MaxAbs {
		out.MaxAbs, out.Worst = e.MaxAbs, e.Worst // an index within e's case
	}
	out.MaxRel = math.Max(d.MaxRel, e.MaxRel)
	out.RelL2 = math.Max(d.RelL2, e.RelL2)
	out.RefMax = math.Max(d.RefMax, e.RefMax)
	out.RefRMS = math.Max(d.RefRMS, e.RefRMS)
	out.NaN += e.NaN
	out.Inf += e.Inf
	out.RefBad += e.RefBad
	return out
}

// within reports whether d passes t, and if not, why.
func (d Diff) within(t Tolerance) (bool, string) {
	switch {
	case d.N == 0:
		return false, "no elements compared"
	case d.RefBad > 0:
		return false, fmt.Sprintf("reference has %d non-finite values", d.RefBad)
	case d.NaN > 0:
		return false, fmt.Sprintf("%d NaN (unwritten outputs stay NaN from the poison)", d.NaN)
	case d.Inf > 0:
		return false, fmt.Sprintf("%d Inf", d.Inf)
	case d.RelL2 > t.RelL2:
		return false, fmt.Sprintf("rel L2 error %.3g > %.3g", d.RelL2, t.RelL2)
	case d.MaxAbs > t.AbsOfMax*d.RefMax:
		return false, fmt.Sprintf("max abs error %.3g > %.3g (= %.3g × max|ref| %.3g) at element %d",
			d.MaxAbs, t.AbsOfMax*d.RefMax, t.AbsOfMax, d.RefMax, d.Worst)
	}
	return true, ""
}

// argmax is the index of the largest value, the lowest on ties (NaN never
// wins), as greedy decoding picks.
func argmax(v []float32) int {
	best := -1
	for i, x := range v {
		if x != x {
			continue
		}
		if best < 0 || x > v[best] {
			best = i
		}
	}
	return max(best, 0)
}

// margin is the gap between the largest and the second largest value.
func margin(v []float32) float64 {
	a, b := math.Inf(-1), math.Inf(-1)
	for _, x := range v {
		f := float64(x)
		switch {
		case f > a:
			a, b = f, a
		case f > b:
			b = f
		}
	}
	return a - b
}
