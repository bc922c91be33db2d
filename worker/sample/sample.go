// Package sample draws the next token of a sequence from the logits of a
// forward step. On the workers, rank 0 holds the full-vocabulary logits of
// every sequence after the unembedding and calls Sample once per sequence
// per step; this package is that step's CPU side.
//
// # Processing order
//
// For each call, in this order:
//
//  1. Penalties, on a private copy of the logits (the caller's slice is never
//     written): for every token generated so far (see Accept),
//     logit −= PresencePenalty + FrequencyPenalty × count.
//  2. Temperature: 0 selects greedy decoding — the argmax of the penalized
//     logits, lowest id on ties — and skips every remaining step, including
//     the PRNG. Otherwise the logits are divided by the temperature.
//  3. Top-k: keep the TopK largest logits (ties broken towards lower ids).
//  4. Softmax over the kept tokens.
//  5. Min-p: drop tokens whose probability is below MinP × the largest
//     probability.
//  6. Top-p: order the remaining tokens by probability (ties: lower id
//     first), renormalized after min-p, and keep the smallest prefix whose
//     cumulative probability reaches TopP; at least one token is always kept.
//  7. Renormalize over the kept tokens and draw one with the sequence's PRNG.
//
// Logprobs are not affected by any of this: they are log_softmax of the raw
// logits the caller passed (vLLM's default "raw_logprobs").
//
// SampleAllowed adds a step 0: the logits of the tokens a set of allowed
// tokens (structured output) denies become −Inf, so that everything above,
// logprobs included, is over the allowed tokens alone.
//
// # Exactness
//
// The draw is exact inverse-CDF sampling of the distribution above,
// computed in float64: every token's probability is evaluated (nothing is
// approximated away), and the truncation sets are the ones defined above,
// ties included. Top-k and top-p never sort the vocabulary: they select
// with radix histograms (of logit bits for top-k, of probability bits for
// top-p) and sort only the few tokens that straddle the cut; the draw then
// locates its token through the same probability histogram. Two
// tolerances, both far below what float32 logits can express, are
// deliberate:
//
//   - Top-p counts the cumulative probability as reaching TopP when it is
//     within a relative 1e-6 of it, so that a cut that is exact in decimal
//     (0.5+0.3 with TopP 0.8) is not lost to the rounding of the logits.
//   - A token whose probability is below e^-708 (≈1e-308) times the largest
//     counts as impossible: that is beneath float64's normal range.
//
// # Reproducibility
//
// A seeded sampler (HasSeed) draws from math/rand/v2's PCG seeded with
// (Seed, pcgStream) and consumes exactly one 64-bit output per non-greedy
// Sample call, whatever the logits, so the stream position is simply the
// number of sampled steps. All arithmetic that decides the token uses only
// IEEE-754 operations that round individually and the package's own
// exponential (see expNeg), so the same Params, Seed and logits give the
// same tokens on every run and machine (TestGolden pins a few streams; PCG's
// output is fixed by its definition, not by the Go release).
//
// # Non-finite logits
//
// NaN logits are treated as −Inf (the token is never drawn). A logit of
// +Inf is taken as the limit of a very large logit: the distribution is
// uniform over the +Inf tokens (greedy takes the lowest such id). A call
// whose logits contain no finite value is an error, since it means the
// forward pass broke.
package sample

import (
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// MaxTopLogprobs is the largest TopLogprobs accepted, matching OpenAI's
// top_logprobs limit.
const MaxTopLogprobs = 20

// pcgStream is the second PCG seed word. It is part of the reproducibility
// contract: changing it changes every seeded sequence.
const pcgStream = 0x9E3779B97F4A7C15

// topPSlack is the relative tolerance of the top-p cut (see the package
// documentation, Exactness).
const topPSlack = 1e-6

// insertCap bounds the small sorted arrays used by topN.
const insertCap = 64

// Thresholds between the top-k strategies. Variables so that tests can force
// each path on small vocabularies.
var (
	// topKInsertMax (≤ insertCap): up to this k, top-k is one pass keeping a
	// small sorted array; above it, a radix select.
	topKInsertMax = 64
	// topKCompactMax: up to this k, the survivors of top-k are gathered and
	// everything after runs on that short list; above it, the dense path runs
	// over the whole vocabulary with a top-k predicate.
	topKCompactMax = 1024
	// refineMin: longer lists at a cut get a second histogram level before
	// the sort.
	refineMin = 64
)

// Params are the sampling parameters of one sequence, as in the OpenAI API
// (with vLLM's top_k and min_p). TopP has no valid zero value: greedy
// decoding without penalties is Params{TopP: 1}.
type Params struct {
	// Temperature divides the logits; 0 means greedy (argmax, lowest id on
	// ties), which ignores TopP, TopK, MinP and the PRNG. Must be finite and
	// ≥ 0.
	Temperature float64
	// TopP is the nucleus size in (0, 1]; 1 turns it off.
	TopP float64
	// TopK keeps the TopK most likely tokens; 0 turns it off. Must be ≥ 0.
	TopK int
	// MinP in [0, 1] drops tokens whose probability is below MinP × the
	// largest probability; 0 turns it off.
	MinP float64
	// PresencePenalty in [−2, 2] is subtracted once from the logit of every
	// token that appears in the generated output so far (OpenAI semantics;
	// the prompt does not count).
	PresencePenalty float64
	// FrequencyPenalty in [−2, 2] is subtracted from a token's logit once per
	// occurrence in the generated output so far.
	FrequencyPenalty float64
	// Seed seeds the sequence's PRNG when HasSeed is set.
	Seed uint64
	// HasSeed makes the draws reproducible from Seed; without it the PRNG is
	// seeded from crypto/rand.
	HasSeed bool
	// Logprobs asks for Result.Logprob (and Result.Top when TopLogprobs > 0).
	Logprobs bool
	// TopLogprobs in [0, MaxTopLogprobs] is how many of the most likely
	// tokens to report; it requires Logprobs, as in the OpenAI API.
	TopLogprobs int
}

// TokenLogprob is a token and its log-probability.
type TokenLogprob struct {
	ID      int
	Logprob float32
}

// Result is the outcome of one Sample call.
type Result struct {
	// Token is the sampled token id.
	Token int
	// Logprob is the log-probability of Token under the model's own
	// distribution: log_softmax of the raw logits, before penalties,
	// temperature and truncation (vLLM's default "raw_logprobs"), so that it
	// describes the model rather than the sampling settings. Set only when
	// Params.Logprobs. Under SampleAllowed, the raw logits are the allowed
	// tokens' (the others −Inf): the constrained distribution's.
	Logprob float32
	// Top holds the Params.TopLogprobs most likely tokens under the same raw
	// distribution, most likely first (ties: lower id first). The slice is
	// owned by the Sampler and overwritten by the next call; copy it to keep
	// it.
	Top []TokenLogprob
}

// Sampler samples one sequence. It holds the sequence's parameters, PRNG,
// generated-token history (for the penalties) and the scratch buffers that
// keep Sample free of allocations once warmed up. It is not safe for
// concurrent use; use one per sequence.
type Sampler struct {
	p    Params
	pcg  *rand.PCG
	invT float64 // 1/Temperature, clamped to MaxFloat64; 0 when greedy

	// Generated-token history: distinct tokens in first-seen order with
	// their counts, and an index into them.
	hTok   []int32
	hCnt   []int32
	hIndex map[int32]int32

	// Scratch.
	w      []float32 // penalized copy of the logits
	m      []float32 // SampleAllowed's masked copy of the logits
	list   []entry   // compact survivors, or the tokens of one bucket
	list2  []entry   // the sub-bucket of the top-p cut
	sub    [subBuckets]float64
	hist   [massBuckets]float64
	block  [passBlock]float64
	counts [keyBuckets]int32
	insID  [insertCap]int32
	insVal [insertCap]float32
	top    [MaxTopLogprobs]TokenLogprob
}

// entry is a token with a value (a logit or an unnormalized probability).
type entry struct {
	v  float64
	id int32
}

// New validates p and returns a sampler for one sequence. Errors name the
// offending field.
func New(p Params) (*Sampler, error) {
	switch {
	case math.IsNaN(p.Temperature) || math.IsInf(p.Temperature, 0) || p.Temperature < 0:
		return nil, fmt.Errorf("sample: Temperature %g out of range: must be finite and ≥ 0", p.Temperature)
	case !(p.TopP > 0 && p.TopP <= 1):
		return nil, fmt.Errorf("sample: TopP %g out of range (0, 1]", p.TopP)
	case p.TopK < 0:
		return nil, fmt.Errorf("sample: TopK %d out of range: must be ≥ 0 (0 = off)", p.TopK)
	case !(p.MinP >= 0 && p.MinP <= 1):
		return nil, fmt.Errorf("sample: MinP %g out of range [0, 1]", p.MinP)
	case !(p.PresencePenalty >= -2 && p.PresencePenalty <= 2):
		return nil, fmt.Errorf("sample: PresencePenalty %g out of range [-2, 2]", p.PresencePenalty)
	case !(p.FrequencyPenalty >= -2 && p.FrequencyPenalty <= 2):
		return nil, fmt.Errorf("sample: FrequencyPenalty %g out of range [-2, 2]", p.FrequencyPenalty)
	case p.TopLogprobs < 0 || p.TopLogprobs > MaxTopLogprobs:
		return nil, fmt.Errorf("sample: TopLogprobs %d out of range [0, %d]", p.TopLogprobs, MaxTopLogprobs)
	case p.TopLogprobs > 0 && !p.Logprobs:
		return nil, fmt.Errorf("sample: TopLogprobs %d requires Logprobs", p.TopLogprobs)
	}
	s := &Sampler{p: p}
	seed := p.Seed
	if !p.HasSeed {
		var b [8]byte
		if _, err := crand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("sample: seeding from crypto/rand: %w", err)
		}
		seed = binary.LittleEndian.Uint64(b[:])
	}
	s.pcg = rand.NewPCG(seed, pcgStream)
	if p.Temperature > 0 {
		s.invT = min(1/p.Temperature, math.MaxFloat64)
	}
	return s, nil
}

// Params returns the parameters the sampler was built with.
func (s *Sampler) Params() Params { return s.p }

// Accept records a token emitted for this sequence, for the presence and
// frequency penalties. The caller calls it once per step with the token it
// actually emitted (normally the one Sample returned). Negative ids are
// ignored; ids beyond the vocabulary of a later call are ignored by it.
func (s *Sampler) Accept(token int) {
	if s.p.PresencePenalty == 0 && s.p.FrequencyPenalty == 0 {
		return // nothing would ever read the history
	}
	if token < 0 || token > math.MaxInt32 {
		return
	}
	t := int32(token)
	if i, ok := s.hIndex[t]; ok {
		s.hCnt[i]++
		return
	}
	if s.hIndex == nil {
		s.hIndex = make(map[int32]int32)
	}
	s.hIndex[t] = int32(len(s.hTok))
	s.hTok = append(s.hTok, t)
	s.hCnt = append(s.hCnt, 1)
}

// Reset forgets the generated-token history, for preemption by recompute:
// the caller then replays the tokens generated so far through Accept. It
// does not rewind the PRNG, so the sequence continues with the random
// stream it would have used without the preemption.
func (s *Sampler) Reset() {
	s.hTok = s.hTok[:0]
	s.hCnt = s.hCnt[:0]
	clear(s.hIndex)
}

var (
	errEmpty     = errors.New("sample: empty logits")
	errNoFinite  = errors.New("sample: no finite logit")
	errVocabSize = errors.New("sample: vocabulary larger than 2^31-1")
)

// Sample draws the next token from logits, which it only reads. See the
// package documentation for the processing order. It errors on empty
// logits and on logits with no finite value. Its cost is dominated by one
// exponential per token (k of them for a top-k up to 1024, none for
// greedy), and it does not allocate once its scratch buffers have grown to
// the vocabulary size.
func (s *Sampler) Sample(logits []float32) (Result, error) {
	n := len(logits)
	if n == 0 {
		return Result{}, errEmpty
	}
	if n > math.MaxInt32 {
		return Result{}, errVocabSize
	}
	x := logits
	penalized := len(s.hTok) > 0 && (s.p.PresencePenalty != 0 || s.p.FrequencyPenalty != 0)
	if penalized {
		s.w = grow(s.w, n)
		copy(s.w, logits)
		s.applyPenalties(s.w)
		x = s.w
	}
	xm, am := scanMax(x)
	if am < 0 {
		return Result{}, errNoFinite
	}
	if math.IsInf(float64(xm), 1) {
		if !hasFinite(x) {
			return Result{}, errNoFinite
		}
	}
	var res Result
	z := -1.0 // Σ exp(x − xm) over the whole vocabulary, when the draw computed it
	switch {
	case s.p.Temperature == 0:
		res.Token = am
	case math.IsInf(float64(xm), 1):
		// Uniform over the +Inf tokens: map them to 0 and the rest to −Inf.
		s.w = grow(s.w, n)
		for i, v := range x {
			if math.IsInf(float64(v), 1) {
				s.w[i] = 0
			} else {
				s.w[i] = float32(math.Inf(-1))
			}
		}
		res.Token, _ = s.draw(s.w, 0)
	default:
		res.Token, z = s.draw(x, xm)
	}
	if s.p.Logprobs {
		lse := math.NaN()
		if !penalized && s.invT == 1 && z > 0 {
			lse = float64(xm) + math.Log(z)
		}
		s.logprobs(logits, &res, lse)
	}
	return res, nil
}

// applyPenalties subtracts the presence and frequency penalties from w.
func (s *Sampler) applyPenalties(w []float32) {
	for j, t := range s.hTok {
		if int(t) >= len(w) {
			continue
		}
		pen := s.p.PresencePenalty + float64(s.p.FrequencyPenalty*float64(s.hCnt[j]))
		w[t] = float32(float64(w[t]) - pen)
	}
}

// scanMax returns the largest logit and its lowest index, skipping NaN;
// the index is −1 when every value is NaN or −Inf. Interleaved lanes each
// keep their first maximum, which shortens the compare chain: sixteen in
// vector registers, then the rest.
func scanMax(x []float32) (float32, int) {
	if !useAVX2 || len(x) < 16 {
		return scanMaxScalar(x)
	}
	n := len(x) &^ 15
	var vals [16]float32
	var idx [16]int32
	scanMaxAVX2(&x[0], n, &vals, &idx)
	m, am := float32(math.Inf(-1)), -1
	for l, i := range idx {
		if i >= 0 && (vals[l] > m || vals[l] == m && int(i) < am) {
			m, am = vals[l], int(i)
		}
	}
	for i, v := range x[n:] { // later than every lane's index
		if v > m {
			m, am = v, n+i
		}
	}
	return m, am
}

// scanMaxScalar is the portable scanMax, and the reference its vector form
// is tested against: four lanes.
func scanMaxScalar(x []float32) (float32, int) {
	ninf := float32(math.Inf(-1))
	m0, m1, m2, m3 := ninf, ninf, ninf, ninf
	i0, i1, i2, i3 := -1, -1, -1, -1
	i := 0
	for ; i+4 <= len(x); i += 4 {
		v := x[i : i+4 : i+4]
		if v[0] > m0 {
			m0, i0 = v[0], i
		}
		if v[1] > m1 {
			m1, i1 = v[1], i+1
		}
		if v[2] > m2 {
			m2, i2 = v[2], i+2
		}
		if v[3] > m3 {
			m3, i3 = v[3], i+3
		}
	}
	for ; i < len(x); i++ {
		if x[i] > m0 {
			m0, i0 = x[i], i
		}
	}
	m, am := m0, i0
	for _, l := range [...]struct {
		m float32
		i int
	}{{m1, i1}, {m2, i2}, {m3, i3}} {
		if l.i >= 0 && (l.m > m || l.m == m && l.i < am) {
			m, am = l.m, l.i
		}
	}
	return m, am
}

// hasFinite reports whether x has a finite value.
func hasFinite(x []float32) bool {
	for _, v := range x {
		if v-v == 0 { // false for ±Inf and NaN
			return true
		}
	}
	return false
}

// rand01 is the next uniform number in [0, 1) from the top 53 bits of the
// PCG output (defined here rather than by rand.Float64 so that the mapping
// is part of this package's contract).
func (s *Sampler) rand01() float64 {
	return float64(s.pcg.Uint64()>>11) * 0x1p-53
}

// draw samples from x (already penalized, max xm finite). It returns the
// token and, when it computed it over the whole vocabulary, Σ exp((x−xm)/T);
// otherwise −1.
func (s *Sampler) draw(x []float32, xm float32) (int, float64) {
	n := len(x)
	k := s.p.TopK
	if k <= 0 || k >= n {
		return s.drawDense(x, xm, false, 0, 0)
	}
	if k <= min(topKInsertMax, insertCap) {
		cnt := topN(x, k, s.insID[:], s.insVal[:])
		s.list = s.list[:0]
		for j := range cnt {
			s.list = append(s.list, entry{float64(s.insVal[j]), s.insID[j]})
		}
		return s.drawCompact(xm), -1
	}
	compact := k <= topKCompactMax
	xc, ic, ok := s.topKCut(x, k, compact)
	switch {
	case !ok:
		return s.drawDense(x, xm, false, 0, 0)
	case compact:
		return s.drawCompact(xm), -1
	}
	t, _ := s.drawDense(x, xm, true, xc, ic)
	return t, -1
}

// drawCompact samples from the short list s.list of top-k survivors, whose
// values are logits; xm is the largest logit.
func (s *Sampler) drawCompact(xm float32) int {
	L := s.list
	xm64, invT, minP := float64(xm), s.invT, s.p.MinP
	// Softmax numerators, then min-p (the max has e = 1, so it survives).
	m := 0
	for _, en := range L {
		a := float64(en.v-xm64) * invT
		if !(a >= expFastMin) { // below float64's range, or −Inf
			continue
		}
		e := expNeg(a)
		if e < minP {
			continue
		}
		L[m] = entry{e, en.id}
		m++
	}
	L = L[:m]
	slices.SortFunc(L, byValueDesc)
	z := 0.0
	for _, en := range L {
		z += en.v
	}
	if s.p.TopP < 1 {
		target := float64(float64(s.p.TopP*z) * (1 - topPSlack))
		c := 0.0
		for j, en := range L {
			c += en.v
			if c >= target {
				L = L[:j+1]
				break
			}
		}
		z = 0
		for _, en := range L {
			z += en.v
		}
	}
	u := float64(s.rand01() * z)
	c := 0.0
	for _, en := range L {
		c += en.v
		if u < c {
			return int(en.id)
		}
	}
	return int(L[len(L)-1].id)
}

// byValueDesc orders entries by value, largest first, then by id.
func byValueDesc(a, b entry) int {
	switch {
	case a.v > b.v:
		return -1
	case a.v < b.v:
		return 1
	case a.id < b.id:
		return -1
	case a.id > b.id:
		return 1
	}
	return 0
}

func grow[T any](b []T, n int) []T {
	if cap(b) < n {
		return make([]T, n)
	}
	return b[:n]
}
