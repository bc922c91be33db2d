package sample

import (
	"math"
	"math/big"
)

// The sampler computes its own exponential instead of calling math.Exp.
// math.Exp is implemented in assembly on amd64 (with a different code path
// when the CPU has FMA), arm64, loong64 and s390x, and the pure Go fallback
// may be compiled with fused multiply-adds on some architectures, so its last
// bit differs between machines. A one-ulp difference in one probability can,
// on rare draws, move the sampled token across a boundary, which would break
// the promise that a seeded request returns the same tokens on every machine.
// expNeg uses only IEEE-754 additions and multiplications, each forced to
// round on its own (an explicit float64 conversion forbids the compiler from
// fusing it into an FMA), and a table built with math/big, so it returns
// bit-identical results everywhere. It is also faster than math.Exp because
// it only handles the arguments the sampler produces (x ≤ 0, never NaN).
// massPass's vector form (mass_amd64.s) runs the same operations, each
// rounded on its own (no FMA), four lanes at a time, so it too returns
// expNeg's bits.

const (
	expTableBits = 8
	expTableSize = 1 << expTableBits
	// expInvLn2N is N/ln 2; it only chooses k, so its own rounding does not
	// affect accuracy (the reduction below is exact with respect to k).
	expInvLn2N = expTableSize / math.Ln2
	// ln 2 / N split so that k*expLn2HiN is exact for |k| < 2^21 (the high
	// part has 32 significant bits); these are fdlibm's Ln2Hi and Ln2Lo.
	expLn2HiN = 6.93147180369123816490e-01 / expTableSize
	expLn2LoN = 1.90821492927058770002e-10 / expTableSize
	// expShift rounds to an integer by addition: adding 1.5×2^52 leaves
	// round-to-nearest(v) in the low mantissa bits.
	expShift = 0x1.8p52
	// Below expFastMin the scale 2^(k/N) is no longer a normal number and
	// the slow path with math.Ldexp handles the gradual underflow.
	expFastMin = -708.0
	// Below expZeroMin the result rounds to zero.
	expZeroMin = -745.2
)

// expTable[j] holds the bits of 2^(j/N), correctly rounded.
var expTable = func() (t [expTableSize]uint64) {
	const prec = 256
	// roots[b] = 2^(2^b / N), from repeated square roots of 2.
	var roots [expTableBits]*big.Float
	r := new(big.Float).SetPrec(prec).SetInt64(2)
	for b := expTableBits - 1; b >= 0; b-- {
		r = new(big.Float).SetPrec(prec).Sqrt(r)
		roots[b] = r
	}
	for j := range expTableSize {
		v := new(big.Float).SetPrec(prec).SetInt64(1)
		for b := range expTableBits {
			if j>>b&1 != 0 {
				v.Mul(v, roots[b])
			}
		}
		f, _ := v.Float64()
		t[j] = math.Float64bits(f)
	}
	return t
}()

// expNeg returns e^x for x ≤ 0 (−Inf gives 0), with an error below 1.5 ulp,
// bit-identically on every platform. x must not be NaN.
func expNeg(x float64) float64 {
	if x < expFastMin {
		return expTiny(x)
	}
	kd := float64(x*expInvLn2N) + expShift
	k := int64(math.Float64bits(kd)<<32) >> 32
	kd -= expShift
	// r = x − k·ln2/N, |r| ≤ ln2/(2N) ≈ 0.00136.
	r := x - float64(kd*expLn2HiN)
	r -= float64(kd * expLn2LoN)
	scale := math.Float64frombits(expTable[k&(expTableSize-1)] + uint64(k>>expTableBits)<<52)
	// e^r − 1 = r + r²(1/2 + r/6 + r²/24); the next term r⁵/120 is below
	// 2^-54.
	r2 := float64(r * r)
	p := 0.5 + float64(r*(1.0/6))
	t := r + float64(r2*(p+float64(r2*(1.0/24))))
	return scale + float64(scale*t)
}

// expTiny is expNeg's slow path for x < expFastMin.
//
//go:noinline
func expTiny(x float64) float64 {
	if !(x >= expZeroMin) {
		return 0
	}
	kd := float64(x*expInvLn2N) + expShift
	k := int64(math.Float64bits(kd)<<32) >> 32
	kd -= expShift
	r := x - float64(kd*expLn2HiN)
	r -= float64(kd * expLn2LoN)
	scale := math.Float64frombits(expTable[k&(expTableSize-1)])
	r2 := float64(r * r)
	p := 0.5 + float64(r*(1.0/6))
	t := r + float64(r2*(p+float64(r2*(1.0/24))))
	return math.Ldexp(scale+float64(scale*t), int(k>>expTableBits))
}
