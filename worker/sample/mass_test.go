package sample

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// The vector kernels build exactly the scalar histogram: every token's e is
// the scalar massExp value (expNeg's bits, or 0 for a dropped token), added
// in the same order. Checked on random exponents across the fast range,
// around aLow and minP, on zeros, NaN and −Inf, from logits (never +Inf:
// massPass subtracts the finite maximum) and from given exponents, and
// through massPass with tails and a top-k cut.
func TestMassPassVector(t *testing.T) {
	if !useAVX2 {
		t.Skip("no AVX2: only the scalar exponential runs")
	}
	r := rand.New(rand.NewPCG(5, 6))
	const n = 4096
	x := make([]float32, n)
	a := make([]float64, n)
	out := make([]float64, n)
	for _, c := range []struct{ xm, invT, aLow, minP float64 }{
		{3, 1, expFastMin, 0},
		{-2.5, 1 / 0.7, expFastMin, 0},
		{0, 1e6, expFastMin, 0},
		{10, 1, math.Log(0.05) - prefilterMargin, 0.05},
		{1, 3, -5, 1e-3},
		{0, math.MaxFloat64, expFastMin, 0},
	} {
		f := denseFilter{xm: c.xm, invT: c.invT, aLow: c.aLow, minP: c.minP}
		var k massConsts
		k.set(&f)
		for i := range x {
			var v float64
			switch i % 6 {
			case 0:
				v = c.xm - r.Float64()*800/c.invT
			case 1:
				v = c.xm - r.Float64()*20
			case 2:
				v = c.xm + c.aLow/c.invT*(1+1e-7*(r.Float64()-0.5)) // near aLow
			case 3:
				v = c.xm + math.Log(c.minP+1e-300)/c.invT*(1+1e-9*(r.Float64()-0.5)) // near minP
			case 4:
				v = c.xm - r.Float64()*1e-3
			default:
				v = []float64{math.NaN(), math.Inf(-1), math.Copysign(0, -1), c.xm, -1e38}[i/6%5]
			}
			x[i] = float32(v)
			a[i] = f.exponent(x[i])
			if i%11 == 0 {
				a[i] = -r.Float64() * 1e4
			}
		}
		ref := func(in func(i int) float64) *[massBuckets]float64 {
			var h [massBuckets]float64
			for i := range n {
				if e := massExp(in(i), &f); e != 0 {
					h[massBucket(e)] += e
				}
			}
			return &h
		}
		check := func(what string, got, want *[massBuckets]float64) {
			t.Helper()
			for b := range got {
				if math.Float64bits(got[b]) != math.Float64bits(want[b]) {
					t.Fatalf("%s %+v: bucket %d: vector %v, scalar %v", what, c, b, got[b], want[b])
				}
			}
		}
		var h [massBuckets]float64
		massHistF32AVX2(&x[0], n, &k, &expTable[0], &h, &out[0])
		check("logits", &h, ref(func(i int) float64 { return f.exponent(x[i]) }))
		clear(h[:])
		massHistF64AVX2(&a[0], n, &k, &expTable[0], &h, &out[0])
		check("exponents", &h, ref(func(i int) float64 { return a[i] }))
		// Whole passes, with a tail that is not a multiple of four, with
		// and without a top-k cut.
		for _, cut := range []bool{false, true} {
			g := f
			if cut {
				g.hasCut, g.xc, g.ic = true, float32(c.xm-2/c.invT), 2000
			}
			var buf [passBlock]float64
			var want [massBuckets]float64
			for i, v := range x[:n-1] {
				a := g.exponent(v)
				if !g.keep(v, i) {
					a = math.Inf(-1)
				}
				if e := massExp(a, &g); e != 0 {
					want[massBucket(e)] += e
				}
			}
			clear(h[:])
			massPass(x[:n-1], &g, &h, &buf)
			check(fmt.Sprintf("massPass (cut %v)", cut), &h, &want)
		}
	}
}

// scanMax's vector lanes find exactly the scalar maximum and lowest index:
// ties, signed zeros, NaN, −Inf, all-NaN and short inputs, tails.
func TestScanMaxVector(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for trial := range 3000 {
		n := r.IntN(200)
		if trial%100 == 0 {
			n = 201088
		}
		x := make([]float32, n)
		for i := range x {
			switch r.IntN(10) {
			case 0:
				x[i] = nan
			case 1:
				x[i] = ninf
			case 2:
				x[i] = float32(math.Copysign(0, -1))
			case 3:
				x[i] = 0
			case 4:
				x[i] = float32(r.IntN(3)) // ties
			default:
				x[i] = float32(r.NormFloat64())
			}
			if trial%7 == 0 { // no finite value
				x[i] = []float32{nan, ninf}[r.IntN(2)]
			}
			if trial%11 == 0 && r.IntN(50) == 0 {
				x[i] = inf
			}
		}
		m, am := scanMax(x)
		wm, wam := scanMaxScalar(x)
		if am != wam || math.Float32bits(m) != math.Float32bits(wm) {
			t.Fatalf("n=%d: scanMax (%v, %d), scalar (%v, %d)", n, m, am, wm, wam)
		}
	}
}
