package sample

import (
	"math"
	"slices"
)

// The dense path (no top-k, or a large one) never sorts the vocabulary. One
// pass computes every kept token's unnormalized probability e = exp((x−xm)/T)
// ∈ (0, 1] and adds it to a histogram of probability mass indexed by the top
// bits of e (16 buckets per octave, largest first). The buckets give the
// normalizer, locate the top-p cut to one bucket, and locate the draw to one
// bucket; only the tokens of those (at most two) buckets are revisited, by a
// cheap pass that filters on the logit before recomputing e. Because e is
// recomputed bit-identically and summed in the same order, the revisited
// bucket's sum equals its histogram entry exactly.

const (
	massBuckets = 2048
	// massTop is the top 16 bits of 1.0; bucket b holds the e whose top 16
	// bits are massTop−b, and the last bucket everything below 2^-127.
	massTop = 0x3FF0

	keyBits    = 12
	keyBuckets = 1 << keyBits
	keyShift   = 32 - keyBits

	// Lists longer than refineMin (a variable, for the tests) get a second
	// histogram level of subBuckets before they are sorted.
	subBits    = 10
	subBuckets = 1 << subBits

	// passBlock is the block size of massPass's conversion buffer.
	passBlock = 1024

	// prefilterMargin widens, in units of a = (x−xm)/T, the bounds used to
	// skip tokens before computing e; it dwarfs every rounding error
	// involved, and the exact test on e follows.
	prefilterMargin = 1e-6
)

// massBucket is the histogram bucket of e ∈ [0, 1].
func massBucket(e float64) uint {
	return min(massTop-uint(math.Float64bits(e)>>48), massBuckets-1)
}

// denseFilter describes which tokens survive top-k and min-p on the dense
// path, and how to compute a token's exponent a = (x−xm)/T.
type denseFilter struct {
	xm, invT, temp float64
	aLow           float64 // tokens with a below this are certainly dropped
	minP           float64
	hasCut         bool    // top-k: keep v > xc, or v == xc with id ≤ ic
	xc             float32 //
	ic             int     //
}

// keep reports whether token i with logit v passes the top-k cut.
func (f *denseFilter) keep(v float32, i int) bool {
	return !f.hasCut || v > f.xc || v == f.xc && i <= f.ic
}

// window returns float32 logits bounds that contain every token whose e
// falls in bucket b; they are widened by prefilterMargin (in units of a)
// and by a relative 1e-9 for the rounding of the bounds themselves.
func (f *denseFilter) window(b int) (lo, hi float32) {
	lo, hi = float32(math.Inf(-1)), float32(math.Inf(1))
	if b < massBuckets-1 {
		aLo := max(math.Log(math.Float64frombits(uint64(massTop-b)<<48))-prefilterMargin, f.aLow)
		d := f.temp * aLo
		v := f.xm + d - 1e-9*(math.Abs(f.xm)+math.Abs(d))
		lo = float32(v)
		if float64(lo) > v {
			lo = math.Nextafter32(lo, lo-1)
		}
	}
	if b > 0 {
		aHi := math.Log(math.Float64frombits(uint64(massTop-b+1)<<48)) + prefilterMargin
		d := f.temp * aHi
		v := f.xm + d + 1e-9*(math.Abs(f.xm)+math.Abs(d))
		hi = float32(v)
		if float64(hi) < v {
			hi = math.Nextafter32(hi, hi+1)
		}
	}
	return lo, hi
}

// exponent is a = (x−xm)/T exactly as massPass computes it.
func (f *denseFilter) exponent(v float32) float64 {
	return float64(float64(v)-f.xm) * f.invT
}

// drawDense samples over the whole vocabulary x (max xm), optionally
// restricted by a top-k cut. It returns the token and, when no token was
// filtered before top-p, the normalizer Σ e (else −1).
func (s *Sampler) drawDense(x []float32, xm float32, hasCut bool, xc float32, ic int) (int, float64) {
	f := denseFilter{
		xm: float64(xm), invT: s.invT, temp: s.p.Temperature,
		aLow: expFastMin, minP: s.p.MinP, hasCut: hasCut, xc: xc, ic: ic,
	}
	if f.minP > 0 {
		f.aLow = max(f.aLow, math.Log(f.minP)-prefilterMargin)
	}
	if hasCut {
		// a is monotone in the logit, so every kept token has a ≥ this.
		f.aLow = max(f.aLow, f.exponent(xc))
	}

	// Pass 1: the mass histogram.
	hist := &s.hist
	clear(hist[:])
	massPass(x, &f, hist, &s.block)
	z, last := 0.0, 0
	for b, h := range hist {
		if h != 0 {
			z += h
			last = b
		}
	}
	full := -1.0
	if !hasCut && f.minP == 0 {
		full = z
	}

	// Top-p: find the bucket where the cumulative mass reaches the target,
	// then sort just that bucket's tokens to place the cut exactly.
	cutBucket, below, zk := -1, 0.0, z
	var kept []entry
	if s.p.TopP < 1 {
		target := float64(float64(s.p.TopP*z) * (1 - topPSlack))
		c := 0.0
		for b := 0; b <= last; b++ {
			nc := c + hist[b]
			if nc >= target {
				cutBucket = b
				break
			}
			c = nc
		}
		if cutBucket < 0 { // unreachable: the full sum exceeds target
			cutBucket = last
		}
		below = c
		kept = s.gatherBucket(x, &f, cutBucket)
		nFull := 0
		kept, nFull = s.refineMass(kept, c, target)
		// kept[:nFull] are kept whole; the rest is sorted and cut.
		zk = c
		for _, en := range kept[:nFull] {
			zk += en.v
		}
		for j := nFull; j < len(kept); j++ {
			zk += kept[j].v
			if zk >= target {
				kept = kept[:j+1]
				break
			}
		}
	}

	u := float64(s.rand01() * zk)
	if cutBucket >= 0 && u >= below {
		c := below
		for _, en := range kept {
			c += en.v
			if u < c {
				return int(en.id), full
			}
		}
		return int(kept[len(kept)-1].id), full
	}
	limit := last
	if cutBucket >= 0 {
		limit = cutBucket - 1
	}
	b, before, c := -1, 0.0, 0.0
	for j := 0; j <= limit; j++ {
		if hist[j] == 0 {
			continue
		}
		b, before = j, c
		c += hist[j]
		if u < c {
			break
		}
	}
	return walkBucket(x, &f, b, float64(u-before)), full
}

// massPass adds the e of every kept token of x to its bucket of hist. It is
// the one loop over the whole vocabulary that computes exponentials, so
// expNeg is inlined by hand (the compiler will not: it is too large); the
// code must stay identical to expNeg, which gatherBucket and walkBucket use
// to recompute the same values. f.aLow ≥ expFastMin, so expNeg's slow path
// is never needed. With AVX2 (amd64), massPassAVX2 does the same work with
// the exponentials four at a time, value for value.
func massPass(x []float32, f *denseFilter, hist *[massBuckets]float64, buf *[passBlock]float64) {
	if useAVX2 {
		massPassAVX2(x, f, hist, buf)
		return
	}
	xm, invT, aLow, minP := f.xm, f.invT, f.aLow, f.minP
	const (
		c6    = 1.0 / 6
		c24   = 1.0 / 24
		shift = expShift
		invN  = expInvLn2N
		hiN   = expLn2HiN
		loN   = expLn2LoN
	)
	for base := 0; base < len(x); base += passBlock {
		blk := x[base:min(base+passBlock, len(x))]
		// The exponents are computed in a loop of their own: there,
		// CVTSS2SD's false dependency on its destination register is
		// harmless, whereas in the loop below it would chain each iteration
		// to the previous one's long exp computation. The top-k cut is
		// applied here too, by sending dropped tokens to −Inf.
		aa := buf[:len(blk)]
		if f.hasCut {
			for j, v := range blk {
				a := float64(float64(v)-xm) * invT
				if !f.keep(v, base+j) {
					a = math.Inf(-1)
				}
				aa[j] = a
			}
		} else {
			for j, v := range blk {
				aa[j] = float64(float64(v)-xm) * invT
			}
		}
		for _, a := range aa {
			if !(a >= aLow) { // also NaN
				continue
			}
			// e := expNeg(a), inlined.
			kd := float64(a*invN) + shift
			k := int64(math.Float64bits(kd)<<32) >> 32
			kd -= shift
			r := a - float64(kd*hiN)
			r -= float64(kd * loN)
			scale := math.Float64frombits(expTable[k&(expTableSize-1)] + uint64(k>>expTableBits)<<52)
			r2 := float64(r * r)
			p := 0.5 + float64(r*c6)
			t := r + float64(r2*(p+float64(r2*c24)))
			e := scale + float64(scale*t)
			if e < minP {
				continue
			}
			hist[massBucket(e)] += e
		}
	}
}

// massConsts holds the vector kernel's operands, each repeated in the
// four lanes of a register (the assembly reads them as memory operands):
// the filter's xm, 1/T, aLow and minP; expNeg's constants, rounded to
// float64 exactly as the scalar code's constant expressions are; and, as
// integers, the table index mask.
type massConsts [12][4]float64

func (k *massConsts) set(f *denseFilter) {
	vals := [12]float64{f.xm, f.invT, f.aLow, f.minP, expInvLn2N, expShift, expLn2HiN, expLn2LoN,
		0.5, 1.0 / 6, 1.0 / 24, math.Float64frombits(expTableSize - 1)}
	for i, v := range vals {
		k[i] = [4]float64{v, v, v, v}
	}
}

// massPassAVX2 is massPass with the exponentials computed four at a time;
// the kept ones are still added to hist one by one in token order, the
// order gatherBucket and walkBucket sum them in.
func massPassAVX2(x []float32, f *denseFilter, hist *[massBuckets]float64, buf *[passBlock]float64) {
	var k massConsts
	k.set(f)
	tbl := &expTable[0]
	for base := 0; base < len(x); base += passBlock {
		blk := x[base:min(base+passBlock, len(x))]
		m := len(blk) &^ 3
		if f.hasCut {
			// The exponents, with −Inf for the tokens top-k drops.
			aa := buf[:len(blk)]
			for j, v := range blk {
				a := f.exponent(v)
				if !f.keep(v, base+j) {
					a = math.Inf(-1)
				}
				aa[j] = a
			}
			if m > 0 {
				massHistF64AVX2(&aa[0], m, &k, tbl, hist, &aa[0])
			}
			for _, a := range aa[m:] {
				if e := massExp(a, f); e != 0 {
					hist[massBucket(e)] += e
				}
			}
			continue
		}
		if m > 0 {
			massHistF32AVX2(&blk[0], m, &k, tbl, hist, &buf[0])
		}
		for _, v := range blk[m:] {
			if e := massExp(f.exponent(v), f); e != 0 {
				hist[massBucket(e)] += e
			}
		}
	}
}

// massExp is the vector kernel's value for one exponent a: e = expNeg(a),
// or 0 when the token is dropped (a < aLow or NaN, or e < minP).
func massExp(a float64, f *denseFilter) float64 {
	if !(a >= f.aLow) {
		return 0
	}
	if e := expNeg(a); !(e < f.minP) {
		return e
	}
	return 0
}

// refineMass orders the tokens of the top-p cut bucket (L, in id order)
// for the cut: it returns them rearranged with n such that L[:n] are
// certainly kept (in id order) and L[n:] are sorted by e, largest first,
// with the cut among them. c is the mass of the buckets above. For short
// lists that is just a sort; for long ones a second histogram level on
// the next 10 bits of e narrows the sort to one sub-bucket.
func (s *Sampler) refineMass(L []entry, c, target float64) ([]entry, int) {
	if len(L) <= refineMin {
		slices.SortFunc(L, byValueDesc)
		return L, 0
	}
	sub := &s.sub
	clear(sub[:])
	for _, en := range L {
		sub[subBucket(en.v)] += en.v
	}
	sb := subBuckets - 1
	for j := range sub {
		nc := c + sub[j]
		if nc >= target {
			sb = j
			break
		}
		c = nc
	}
	full, tail := L[:0], s.list2[:0]
	for _, en := range L { // writes never overtake reads
		switch j := subBucket(en.v); {
		case j < uint(sb):
			full = append(full, en)
		case j == uint(sb):
			tail = append(tail, en)
		}
	}
	s.list2 = tail
	slices.SortFunc(tail, byValueDesc)
	n := len(full)
	return append(full, tail...), n
}

// subBucket is the second-level bucket of e within its massBucket, largest
// e first.
func subBucket(e float64) uint {
	return subBuckets - 1 - uint(math.Float64bits(e)>>(48-subBits))&(subBuckets-1)
}

// gatherBucket returns the kept tokens of bucket b with their e, in id
// order, in s.list.
func (s *Sampler) gatherBucket(x []float32, f *denseFilter, b int) []entry {
	klo, span := keyRange(f.window(b))
	L := s.list[:0]
	for i, v := range x {
		// One unsigned comparison, mostly false: a two-sided float test
		// here mispredicts on half the vocabulary.
		if sortKey(v)-klo > span || !f.keep(v, i) {
			continue
		}
		a := f.exponent(v)
		if !(a >= f.aLow) {
			continue
		}
		e := expNeg(a)
		if e < f.minP || massBucket(e) != uint(b) {
			continue
		}
		L = append(L, entry{e, int32(i)})
	}
	s.list = L
	return L
}

// walkBucket walks the kept tokens of bucket b in id order and returns the
// one at which their running sum of e exceeds u (the same sum, in the same
// order, that built hist[b]).
func walkBucket(x []float32, f *denseFilter, b int, u float64) int {
	klo, span := keyRange(f.window(b))
	c, lastTok := 0.0, -1
	for i, v := range x {
		if sortKey(v)-klo > span || !f.keep(v, i) {
			continue
		}
		a := f.exponent(v)
		if !(a >= f.aLow) {
			continue
		}
		e := expNeg(a)
		if e < f.minP || e == 0 || massBucket(e) != uint(b) {
			continue
		}
		c += e
		lastTok = i
		if u < c {
			return i
		}
	}
	return lastTok // rounding left u at the very end of the bucket
}

// sortKey maps a float32 to a uint32 in the same order (−0 just below +0;
// NaNs beyond ±Inf).
func sortKey(v float32) uint32 {
	b := math.Float32bits(v)
	return b ^ (uint32(int32(b)>>31) | 0x80000000)
}

// keyRange returns the sortKey range of [lo, hi] (lo ≤ hi, not NaN) as a
// start and a span, so that v is in it iff sortKey(v)−start ≤ span; both
// zeros are inside whenever zero is.
func keyRange(lo, hi float32) (start, span uint32) {
	if lo == 0 {
		lo = float32(math.Copysign(0, -1))
	}
	if hi == 0 {
		hi = 0
	}
	start = sortKey(lo)
	return start, sortKey(hi) - start
}

// key32 is sortKey with −0 equal to +0 and NaN equal to −Inf, the order
// top-k uses.
func key32(v float32) uint32 {
	k := sortKey(v + 0)                  // −0 + 0 = +0
	if k > 0xFF800000 || k < negInfKey { // NaN, beyond ±Inf
		k = negInfKey
	}
	return k
}

// negInfKey is sortKey(−Inf).
const negInfKey = 0x007FFFFF

// keyFloat is the inverse of sortKey.
func keyFloat(k uint32) float32 {
	if k&0x80000000 != 0 {
		return math.Float32frombits(k ^ 0x80000000)
	}
	return math.Float32frombits(^k)
}

// topKCut finds the k-th largest logit of x by a radix select (counts of
// the top key bits, then a second level and a sort on the one bucket that
// holds the cut) and returns it with its id: top-k keeps v > xc, and
// v == xc with id ≤ ic. With gather it also leaves exactly the k kept
// tokens, with their logits, in s.list (in id order); the same pass that
// finds the boundary bucket's tokens collects them. ok is false when the
// cut falls among the −Inf and NaN logits: then top-k keeps every token of
// nonzero probability and changes nothing.
func (s *Sampler) topKCut(x []float32, k int, gather bool) (xc float32, ic int, ok bool) {
	counts := &s.counts
	clear(counts[:])
	for _, v := range x {
		counts[key32(v)>>keyShift]++
	}
	above, bb := 0, uint32(0)
	for b := keyBuckets - 1; b >= 0; b-- {
		if above+int(counts[b]) >= k {
			bb = uint32(b)
			break
		}
		above += int(counts[b])
	}
	if bb <= negInfKey>>keyShift {
		return 0, 0, false
	}
	// Bucket bb as a range of logits, so that the passes below compare
	// floats instead of recomputing keys: [lo, hi], never NaN (bb is above
	// the −Inf bucket), and the bucket just below zero stops short of −0,
	// which key32 counts as +0.
	lo := keyFloat(bb << keyShift)
	hi := keyFloat(bb<<keyShift | (1<<keyShift - 1))
	if hi != hi {
		hi = float32(math.Inf(1))
	}
	if hi == 0 {
		hi = -math.SmallestNonzeroFloat32
	}
	L := s.list[:0]
	if gather {
		for i, v := range x {
			if v >= lo {
				L = append(L, entry{float64(v), int32(i)})
			}
		}
	} else {
		klo, span := keyRange(lo, hi)
		for i, v := range x {
			if sortKey(v)-klo <= span {
				L = append(L, entry{float64(v), int32(i)})
			}
		}
	}
	s.list = L
	B := L // the boundary bucket's tokens
	if gather {
		B = s.list2[:0]
		for _, en := range L {
			if key32(float32(en.v))>>keyShift == bb {
				B = append(B, en)
			}
		}
		s.list2 = B
	}
	need := k - above
	if len(B) > refineMin {
		// Second level on the next 10 key bits, then sort one sub-bucket.
		sc := counts[:subBuckets]
		clear(sc)
		for _, en := range B {
			sc[key32(float32(en.v))>>(keyShift-subBits)&(subBuckets-1)]++
		}
		above, sb := 0, uint32(0)
		for b := subBuckets - 1; b >= 0; b-- {
			if above+int(sc[b]) >= need {
				sb = uint32(b)
				break
			}
			above += int(sc[b])
		}
		need -= above
		M := B[:0]
		for _, en := range B {
			if key32(float32(en.v))>>(keyShift-subBits)&(subBuckets-1) == sb {
				M = append(M, en)
			}
		}
		B = M
	}
	slices.SortFunc(B, byValueDesc)
	c := B[need-1]
	if gather {
		K := L[:0]
		for _, en := range L {
			if en.v > c.v || en.v == c.v && en.id <= c.id {
				K = append(K, en)
			}
		}
		s.list = K
	}
	return float32(c.v), int(c.id), true
}

// topN writes the n largest values of x (NaN as −Inf) and their ids to
// vals and ids, largest first, ties by lower id, and returns how many it
// wrote (min(n, len(x))). One pass; insertions are rare after the first
// few thousand elements.
func topN(x []float32, n int, ids []int32, vals []float32) int {
	ids, vals = ids[:n], vals[:n]
	cnt, i := 0, 0
	for ; i < len(x) && cnt < n; i++ {
		v := x[i]
		if v != v {
			v = float32(math.Inf(-1))
		}
		j := cnt
		for j > 0 && vals[j-1] < v {
			vals[j], ids[j] = vals[j-1], ids[j-1]
			j--
		}
		vals[j], ids[j] = v, int32(i)
		cnt++
	}
	if cnt < n {
		return cnt
	}
	thr := vals[n-1]
	for ; i < len(x); i++ {
		v := x[i]
		if !(v > thr) { // equal values rank below: their ids are higher
			continue
		}
		j := n - 1
		for j > 0 && vals[j-1] < v {
			vals[j], ids[j] = vals[j-1], ids[j-1]
			j--
		}
		vals[j], ids[j] = v, int32(i)
		thr = vals[n-1]
	}
	return n
}

// logprobs fills res.Logprob and res.Top from the raw logits. lse is
// log Σ exp(raw) when the caller already has it, else NaN.
func (s *Sampler) logprobs(raw []float32, res *Result, lse float64) {
	nInf := 0
	if math.IsNaN(lse) {
		lse, nInf = s.logSumExp(raw)
	}
	lp := func(v float32) float32 {
		switch {
		case nInf > 0 && math.IsInf(float64(v), 1):
			return float32(-math.Log(float64(nInf)))
		case nInf > 0 || v != v:
			return float32(math.Inf(-1))
		}
		return float32(float64(v) - lse)
	}
	res.Logprob = lp(raw[res.Token])
	if n := s.p.TopLogprobs; n > 0 {
		cnt := topN(raw, n, s.insID[:], s.insVal[:])
		top := s.top[:cnt]
		for j := range top {
			top[j] = TokenLogprob{ID: int(s.insID[j]), Logprob: lp(s.insVal[j])}
		}
		res.Top = top
	}
}

// logSumExp returns log Σ exp(x) over the non-NaN values of x, and the
// number of +Inf values when there are any (then the sum is meaningless).
// It reuses massPass (and s.hist), whose scattered additions avoid the
// dependency chain of a single running sum; terms below e^-708 relative to
// the largest are left out, which cannot change the float64 result.
func (s *Sampler) logSumExp(x []float32) (float64, int) {
	m, _ := scanMax(x)
	if math.IsInf(float64(m), 1) {
		n := 0
		for _, v := range x {
			if math.IsInf(float64(v), 1) {
				n++
			}
		}
		return math.Inf(1), n
	}
	f := denseFilter{xm: float64(m), invT: 1, temp: 1, aLow: expFastMin}
	clear(s.hist[:])
	massPass(x, &f, &s.hist, &s.block)
	z := 0.0
	for _, h := range s.hist {
		z += h
	}
	return float64(m) + math.Log(z), 0
}
