package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/gptoss/server/worker/engine"
	"github.com/gptoss/server/worker/sample"
)

// refSample is worker/sample, one fresh sampler per row seeded from the
// row's uniform, with the row's history Accepted first: the CPU device's
// Sample, so the sampler checks run here.
func refSample(logits [][]float32, p []SampleParams) ([]Sampled, error) {
	out := make([]Sampled, len(logits))
	for i, row := range logits {
		q := p[i]
		sp := sample.Params{Temperature: q.Temperature, TopP: q.TopP, TopK: q.TopK, MinP: q.MinP,
			PresencePenalty: q.PresencePenalty, FrequencyPenalty: q.FrequencyPenalty,
			Seed: uint64(q.Uniform * (1 << 53)), HasSeed: true, Logprobs: true, TopLogprobs: q.TopLogprobs}
		if sp.TopP == 0 {
			sp.TopP = 1
		}
		s, err := sample.New(sp)
		if err != nil {
			return nil, fmt.Errorf("cpu sampler: %w", err)
		}
		for _, tok := range q.History {
			s.Accept(tok)
		}
		r, err := s.SampleAllowed(row, q.Allow)
		if err != nil {
			return nil, fmt.Errorf("cpu sampler: row %d: %w", i, err)
		}
		out[i] = Sampled{Token: r.Token, Logprob: r.Logprob, Top: slices.Clone(r.Top)}
	}
	return out, nil
}

// maskedRow is logits with the tokens allow denies at −Inf (allow nil:
// logits itself): the raw logits of the constrained distribution, which
// the reference formulas below then describe.
func maskedRow(logits []float32, allow []uint32) []float32 {
	if allow == nil {
		return logits
	}
	out := slices.Clone(logits)
	for t := range out {
		if t/32 >= len(allow) || allow[t/32]>>(t%32)&1 == 0 {
			out[t] = float32(math.Inf(-1))
		}
	}
	return out
}

// randomAllow allows each of n tokens with probability p (a bitset of
// ⌈n/32⌉ words).
func randomAllow(rng *rand.Rand, n int, p float64) []uint32 {
	a := make([]uint32, (n+31)/32)
	for t := range n {
		if rng.Float64() < p {
			a[t/32] |= 1 << (t % 32)
		}
	}
	return a
}

// penalised is worker/sample's penalised copy of logits, rounded as it
// rounds: float32(float64(x) − (presence + frequency × count)) for every
// token of the history.
func penalised(logits []float32, p SampleParams) []float32 {
	w := slices.Clone(logits)
	if p.PresencePenalty == 0 && p.FrequencyPenalty == 0 {
		return w
	}
	counts := map[int]int{}
	for _, tok := range p.History {
		counts[tok]++
	}
	for tok, c := range counts {
		if tok >= 0 && tok < len(w) {
			w[tok] = float32(float64(w[tok]) - (p.PresencePenalty + float64(p.FrequencyPenalty*float64(c))))
		}
	}
	return w
}

// rawLogprobs is log_softmax of the raw logits in float64 (NaN as −Inf;
// the rows here have finite maxima): what both samplers report.
func rawLogprobs(logits []float32) []float64 {
	m := math.Inf(-1)
	for _, v := range logits {
		if float64(v) > m {
			m = float64(v)
		}
	}
	var z float64
	for _, v := range logits {
		if v == v {
			z += math.Exp(float64(v) - m)
		}
	}
	lse := m + math.Log(z)
	out := make([]float64, len(logits))
	for i, v := range logits {
		out[i] = math.Inf(-1)
		if v == v {
			out[i] = float64(v) - lse
		}
	}
	return out
}

// lpClose says whether a logprob is within the tolerance of the float32
// pipelines (the device's log-sum-exp uses float32 exponentials; both round
// to float32): 1e-4 plus 1e-5 relative. −Inf must be matched exactly. A
// sampler that reports penalised or tempered logprobs is off by tenths.
func lpClose(got float32, want float64) bool {
	if math.IsInf(want, -1) {
		return math.IsInf(float64(got), -1)
	}
	return math.Abs(float64(got)-want) <= 1e-4+1e-5*math.Abs(want)
}

// exactProbs is the distribution sampling draws from, in float64, in
// worker/sample's order of operations: the penalties, softmax(logits /
// temp), cut to the topK most likely (0: all), min-p (drop tokens below
// MinP × the largest), then the smallest most-likely-first prefix of the
// rest whose mass reaches topP, renormalised. border is true when the
// min-p or top-p cut falls within 1e-4 of a token's mass, where float32
// and float64 arithmetic may cut differently.
func exactProbs(logits []float32, sp SampleParams) (p []float64, border bool) {
	x := penalised(logits, sp)
	n := len(x)
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		switch {
		case x[a] > x[b]:
			return -1
		case x[a] < x[b]:
			return 1
		}
		return 0
	})
	keep := n
	if sp.TopK > 0 {
		keep = min(sp.TopK, n)
	}
	mx := float64(x[idx[0]])
	p = make([]float64, n)
	var kept []int
	for _, i := range idx[:keep] {
		e := math.Exp((float64(x[i]) - mx) / sp.Temperature)
		if sp.MinP > 0 && math.Abs(e-sp.MinP) < 1e-4*sp.MinP {
			border = true
		}
		if e < sp.MinP {
			continue
		}
		p[i] = e
		kept = append(kept, i)
	}
	var sum float64
	for _, i := range kept {
		sum += p[i]
	}
	for _, i := range kept {
		p[i] /= sum
	}
	if topP := sp.TopP; topP > 0 && topP < 1 {
		var cum float64
		cut := len(kept)
		for j, i := range kept {
			cum += p[i]
			if math.Abs(cum-topP) < 1e-4 {
				border = true
			}
			if cum >= topP*(1-1e-6) {
				cut = j + 1
				break
			}
		}
		for _, i := range kept[cut:] {
			p[i] = 0
		}
		sum = 0
		for _, i := range kept[:cut] {
			sum += p[i]
		}
		for _, i := range kept[:cut] {
			p[i] /= sum
		}
	}
	return p, border
}

// tvTest compares the empirical distribution of tokens with p: the total
// variation distance ½Σ|count/N − p|, its bound, and how many draws fell
// on tokens of probability zero. Under the null hypothesis E[TV] ≈
// ½Σ√(2p(1−p)/(πN)) (the mean absolute deviation of each count); the
// bound is 2.5 times that plus 0.005: TV is a sum of many small
// independent deviations, so it rarely strays far above its mean, while a
// sampler with the wrong temperature or a shifted cut moves it by tenths.
func tvTest(tokens []int, p []float64) (tv, bound float64, outside int) {
	N := float64(len(tokens))
	counts := make([]float64, len(p))
	for _, t := range tokens {
		if t < 0 || t >= len(p) || p[t] == 0 {
			outside++
			continue
		}
		counts[t]++
	}
	var mean float64
	for i, pi := range p {
		tv += math.Abs(counts[i]/N - pi)
		mean += math.Sqrt(2 * pi * (1 - pi) / (math.Pi * N))
	}
	return tv / 2, 2.5*mean/2 + 0.005, outside
}

// The sampler checks compare the device's sampler with worker/sample, with
// its semantics (kernels/gptoss.h, gx_sample). They come in sets: each set
// is one device call (and worker/sample's draws for the same inputs), and
// the set's named checks each judge one behaviour of those draws, so each
// passes or fails on its own while the device time stays one call per set.
//
//   - greedy argmax: greedy rows over the full vocabulary without
//     penalties (random rows, a tie for the maximum, all logits equal, the
//     maximum at the last id, NaN and −Inf logits) give worker/sample's
//     token exactly: the argmax, ties to the lower id;
//   - greedy with penalties: rows whose presence and frequency penalties
//     make, break or reverse the order of the best tokens (one with
//     truncation parameters, which greedy decoding ignores) give
//     worker/sample's token exactly: the argmax of the penalised logits;
//   - greedy logprobs: on every greedy row, the logprob of the token drawn
//     is the raw one (log_softmax of the logits before penalties and
//     temperature) within lpClose of worker/sample's, and the top-logprob
//     ids equal worker/sample's, their logprobs within lpClose;
//   - for temperature 0.8, top-k 5, top-p 0.9, and min-p 0.2 with top-p
//     0.95 and penalties: "distribution", the draws follow the exact
//     distribution (total variation test) and none picks a token the
//     truncation removed; "logprobs", every draw reports the raw logprob
//     of its token and the raw top logprobs, most likely first;
//   - allowed tokens (structured output), over the full vocabulary: rows
//     with a set of allowed tokens (half at random, whole words allowed and
//     denied, a few tokens with NaN and −Inf among them, a tie, penalties,
//     the first and last ids) give worker/sample's SampleAllowed token
//     exactly, greedy or forced (one allowed token with a tiny logit at
//     temperature 1 under top-k and top-p), with the constrained
//     distribution's logprob and top list (allowed tokens only);
//   - temperature 1.2 with half the tokens allowed: the distribution and
//     logprobs checks above over the constrained distribution (a draw of a
//     denied token counts as outside it).
//
// worker/sample's own draws go through the same tests, so a harness error
// shows as an error of the reference, not as a failure of the device.

// samplerSet is one device call and the named checks that judge its
// draws. draw samples on the device and with worker/sample (an error
// wrapping ErrUnsupported: the device has no sampler); each judge reads
// what draw left in the closure they share.
type samplerSet struct {
	draw   func(e *samplerEnv) error
	checks []samplerCheck
}

// samplerCheck is one named sampler check.
type samplerCheck struct {
	name  string
	judge func() Check
}

// samplerEnv is what the sets draw with.
type samplerEnv struct {
	dev Device
	b   engine.Backend
	rng *rand.Rand
}

// The greedy set: greedyRows rows of the full vocabulary, greedyTop top
// logprobs each.
const greedyV, greedyRows, greedyTop = 201088, 16, 5

// The distribution sets: drawV tokens, drawTop top logprobs, drawCount
// draws (drawCountQuick with --quick).
const drawV, drawTop, drawCount, drawCountQuick = 256, 3, 8192, 4096

// drawCases are the distribution sets' parameters; hist is how many draws
// among the likely tokens make the history (the penalised tokens).
var drawCases = []struct {
	name string
	p    SampleParams
	hist int
}{
	{"temperature 0.8", SampleParams{Temperature: 0.8, TopP: 1}, 0},
	{"temperature 1, top-k 5", SampleParams{Temperature: 1, TopK: 5, TopP: 1}, 0},
	{"temperature 1, top-p 0.9", SampleParams{Temperature: 1, TopP: 0.9}, 0},
	{"temperature 0.7, min-p 0.2, top-p 0.95, penalties",
		SampleParams{Temperature: 0.7, TopP: 0.95, MinP: 0.2, PresencePenalty: 0.5, FrequencyPenalty: 0.25}, 6},
}

// samplerSets lists the sampler checks, in the order they run. Each set
// draws fresh inputs from e.rng (in the same order as before the checks
// were split, so --seed repeats earlier runs' inputs).
func samplerSets(quick bool) []samplerSet {
	g := &greedyDraws{}
	sets := []samplerSet{{
		draw: func(e *samplerEnv) error { return g.draw(e) },
		checks: []samplerCheck{
			{fmt.Sprintf("greedy argmax, vocabulary %d", greedyV), func() Check { return g.tokens(false) }},
			{fmt.Sprintf("greedy with penalties, vocabulary %d", greedyV), func() Check { return g.tokens(true) }},
			{fmt.Sprintf("greedy logprobs, %d top logprobs, vocabulary %d", greedyTop, greedyV), g.logprobs},
		},
	}}
	N := drawCount
	if quick {
		N = drawCountQuick
	}
	for _, tc := range drawCases {
		d := &sampledDraws{n: N, params: tc.p, hist: tc.hist}
		sets = append(sets, samplerSet{
			draw: d.draw,
			checks: []samplerCheck{
				{fmt.Sprintf("%s: distribution of %d draws", tc.name, N), d.distribution},
				{fmt.Sprintf("%s: logprobs of %d draws", tc.name, N), d.logprobs},
			},
		})
	}
	// The sets with allowed tokens come last, so that the sets above draw
	// the same inputs for a given --seed as before they were added.
	a := &greedyDraws{}
	sets = append(sets, samplerSet{
		draw: func(e *samplerEnv) error { return a.drawAllowed(e) },
		checks: []samplerCheck{
			{fmt.Sprintf("allowed tokens: greedy and forced draws, vocabulary %d", greedyV), func() Check {
				return a.tokensOf(func(SampleParams) bool { return true })
			}},
			{fmt.Sprintf("allowed tokens: logprobs, %d top logprobs, vocabulary %d", greedyTop, greedyV), a.logprobs},
		},
	})
	const allowedName = "temperature 1.2, half the tokens allowed"
	d := &sampledDraws{n: N, params: SampleParams{Temperature: 1.2, TopP: 1}, allow: 0.5}
	sets = append(sets, samplerSet{
		draw: d.draw,
		checks: []samplerCheck{
			{fmt.Sprintf("%s: distribution of %d draws", allowedName, N), d.distribution},
			{fmt.Sprintf("%s: logprobs of %d draws", allowedName, N), d.logprobs},
		},
	})
	return sets
}

// samplerCheckNames are the names of the sampler checks, in order.
func samplerCheckNames(quick bool) []string {
	var names []string
	for _, s := range samplerSets(quick) {
		for _, c := range s.checks {
			names = append(names, c.name)
		}
	}
	return names
}

// runSampler runs the sampler checks on dev's sampler (with b, the op
// checks' backend) and reports each. A set's draw time is counted in its
// first check's seconds.
func runSampler(ctx context.Context, dev Device, b engine.Backend, rng *rand.Rand, quick bool, report func(Check)) {
	e := &samplerEnv{dev: dev, b: b, rng: rng}
	for _, set := range samplerSets(quick) {
		if ctx.Err() != nil {
			for _, sc := range set.checks {
				report(Check{Group: "sampler", Name: sc.name, Status: Skip, Detail: "out of time"})
			}
			continue
		}
		start := now()
		err := func() (err error) {
			defer func() {
				if p := recover(); p != nil {
					err = fmt.Errorf("panic: %v", p)
				}
			}()
			return set.draw(e)
		}()
		drawn := since(start)
		for i, sc := range set.checks {
			start := now()
			var c Check
			switch {
			case errors.Is(err, ErrUnsupported):
				c = Check{Status: Skip, Detail: "the device has no sampler"}
			case err != nil:
				c = Check{Status: Error, Detail: err.Error()}
			default:
				c = func() (c Check) {
					defer func() {
						if p := recover(); p != nil {
							c = Check{Status: Error, Detail: fmt.Sprintf("panic: %v", p)}
						}
					}()
					return sc.judge()
				}()
			}
			c.Group, c.Name, c.Seconds = "sampler", sc.name, since(start)
			if i == 0 {
				c.Seconds += drawn
			}
			report(c)
		}
	}
}

// notes keeps the first of a check's notes as its detail.
type notes string

func (n *notes) add(f string, args ...any) {
	if *n == "" {
		*n = notes(fmt.Sprintf(f, args...))
	}
}

// greedyDraws is the greedy set: the rows, their parameters, the device's
// draws and worker/sample's.
type greedyDraws struct {
	logits    [][]float32
	params    []SampleParams
	got, want []Sampled
}

// penalisedRow says whether a row's penalties apply (the greedy with
// penalties check's rows; the argmax check has the others).
func penalisedRow(p SampleParams) bool {
	return (p.PresencePenalty != 0 || p.FrequencyPenalty != 0) && len(p.History) > 0
}

func (g *greedyDraws) draw(e *samplerEnv) error {
	const S, V, nTop = greedyRows, greedyV, greedyTop
	rng := e.rng
	logits := make([][]float32, S)
	params := make([]SampleParams, S)
	for i := range logits {
		logits[i] = make([]float32, V)
		for j := range logits[i] {
			logits[i][j] = float32(rng.NormFloat64() * 2)
		}
		params[i] = SampleParams{TopP: 1, TopLogprobs: nTop}
	}
	lo, hi := func() int { return rng.IntN(V / 2) }, func() int { return V/2 + rng.IntN(V/2) }
	// Row 3: a tie for the maximum (the lower id wins); row 5: all
	// equal (id 0); row 7: the maximum at the last id.
	i, j := lo(), hi()
	logits[3][i], logits[3][j] = 100, 100
	for k := range logits[5] {
		logits[5][k] = 0.25
	}
	logits[7][V-1] = 100
	// Row 9: the penalties (0.5 + 0.25 × 2 = 1, exact in float32) make
	// a tie: 100 − 1 against a 99 at a lower id, which wins. Raw
	// logprobs differ from penalised ones by about 0.3 here.
	a, d := hi(), lo()
	logits[9][a], logits[9][d] = 100, 99
	params[9] = SampleParams{TopP: 1, TopLogprobs: nTop, PresencePenalty: 0.5, FrequencyPenalty: 0.25, History: []int{a, a}}
	// Row 11: a negative presence penalty lifts an 8 over the 9, and
	// the truncation parameters are ignored by greedy decoding.
	a, d = lo(), hi()
	logits[11][a], logits[11][d] = 9, 8
	params[11] = SampleParams{TopP: 0.5, TopK: 3, MinP: 0.5, TopLogprobs: nTop, PresencePenalty: -2, History: []int{d, lo()}}
	// Row 13: NaN and −Inf logits (never chosen, ranked last).
	for range 64 {
		logits[13][rng.IntN(V)] = float32(math.NaN())
		logits[13][rng.IntN(V)] = float32(math.Inf(-1))
	}
	// Row 15: the frequency penalty on the two best tokens, repeated.
	a, d = lo(), hi()
	logits[15][a], logits[15][d] = 12, 11.5
	params[15] = SampleParams{TopP: 1, TopLogprobs: nTop, PresencePenalty: 0.25, FrequencyPenalty: 1.5,
		History: []int{a, d, a, lo(), a}}
	return g.run(e, logits, params)
}

// run draws the rows on the device and with worker/sample and keeps both.
func (g *greedyDraws) run(e *samplerEnv, logits [][]float32, params []SampleParams) error {
	got, err := e.dev.Sample(e.b, logits, params)
	if err != nil {
		return err
	}
	if len(got) != len(logits) {
		return fmt.Errorf("%s sampler: %d results for %d rows", e.dev.Name(), len(got), len(logits))
	}
	want, err := refSample(logits, params)
	if err != nil {
		return err
	}
	g.logits, g.params, g.got, g.want = logits, params, got, want
	return nil
}

// allowedRows is the allowed-tokens set's row count.
const allowedRows = 8

// drawAllowed is the allowed-tokens set: rows over the full vocabulary,
// each with a set of allowed tokens, whose draw is determined (greedy, or
// a single allowed token), so the device must give worker/sample's token.
func (g *greedyDraws) drawAllowed(e *samplerEnv) error {
	const S, V, nTop = allowedRows, greedyV, greedyTop
	rng := e.rng
	logits := make([][]float32, S)
	params := make([]SampleParams, S)
	for i := range logits {
		logits[i] = make([]float32, V)
		for j := range logits[i] {
			logits[i][j] = float32(rng.NormFloat64() * 2)
		}
		params[i] = SampleParams{TopP: 1, TopLogprobs: nTop, Allow: randomAllow(rng, V, 0.5)}
	}
	allow := func(ids ...int) []uint32 {
		a := make([]uint32, (V+31)/32)
		for _, id := range ids {
			a[id/32] |= 1 << (id % 32)
		}
		return a
	}
	deny := func(a []uint32, id int) { a[id/32] &^= 1 << (id % 32) }
	id := func() int { return rng.IntN(V) }
	// Row 0: half at random, the best token denied.
	best := id()
	logits[0][best] = 100
	deny(params[0].Allow, best)
	// Row 1: one allowed token with a tiny logit, drawn at temperature 1
	// under top-k and top-p: it is the whole distribution.
	forced := id()
	logits[1][forced] = -30
	params[1] = SampleParams{Temperature: 1, TopP: 0.9, TopK: 5, TopLogprobs: nTop, Uniform: rng.Float64(), Allow: allow(forced)}
	// Row 2: whole words allowed and denied (runs of 64 words), the best
	// token in a denied run.
	for w := range params[2].Allow {
		params[2].Allow[w] = 0
		if w/64%2 == 0 {
			params[2].Allow[w] = math.MaxUint32
		}
	}
	logits[2][64*32+id()%(64*32)] = 100
	// Row 3: five tokens, one NaN and one −Inf among them.
	few := []int{id(), id(), id(), id(), id()}
	params[3].Allow = allow(few...)
	logits[3][few[3]], logits[3][few[4]] = float32(math.NaN()), float32(math.Inf(-1))
	// Row 4: a tie for the best allowed token (the lower id wins), a
	// better denied one.
	i, j, k := id(), id(), id()
	logits[4][i], logits[4][j], logits[4][k] = 50, 50, 60
	params[4].Allow = allow(i, j, k, id())
	deny(params[4].Allow, k)
	// Row 5: the penalties demote the best allowed token below the next.
	i, j = id(), id()
	logits[5][i], logits[5][j] = 40, 39.5
	params[5].Allow = allow(i, j, id(), id())
	params[5].PresencePenalty, params[5].FrequencyPenalty, params[5].History = 0.5, 0.5, []int{i}
	// Row 6: the first and the last ids only.
	params[6].Allow = allow(0, V-1)
	// Row 7: nearly everything allowed (the denied few are the best).
	for w := range params[7].Allow {
		params[7].Allow[w] = math.MaxUint32
	}
	for range 8 {
		t := id()
		logits[7][t] = 70
		deny(params[7].Allow, t)
	}
	return g.run(e, logits, params)
}

// tokens checks the greedy tokens of the rows with penalties (or of those
// without) against worker/sample's.
func (g *greedyDraws) tokens(penalties bool) Check {
	return g.tokensOf(func(p SampleParams) bool { return penalisedRow(p) == penalties })
}

// tokensOf checks the tokens of the rows pick selects against
// worker/sample's.
func (g *greedyDraws) tokensOf(pick func(SampleParams) bool) Check {
	rows, bad := 0, 0
	var detail notes
	for r := range g.want {
		if !pick(g.params[r]) {
			continue
		}
		rows++
		if gt, wt := g.got[r].Token, g.want[r].Token; gt != wt {
			bad++
			detail.add("row %d: token %d, worker/sample %d", r, gt, wt)
		}
	}
	c := Check{Status: Pass, Detail: string(detail), Extra: map[string]float64{"rows": float64(rows), "mismatches": float64(bad)}}
	switch {
	case rows == 0:
		c.Status, c.Detail = Error, "no rows: the harness is wrong"
	case bad > 0:
		c.Status = Fail
	}
	return c
}

// logprobs checks the logprob of each greedy row's token and its top
// logprobs. Where the device drew another token than worker/sample (the
// token checks fail), its logprob must still be the raw one of the token
// it drew.
func (g *greedyDraws) logprobs() Check {
	badLP := 0
	var worst float64
	var detail notes
	for r := range g.want {
		gr, w := g.got[r], g.want[r]
		ok := true
		want := float64(w.Logprob)
		if gr.Token != w.Token {
			if gr.Token < 0 || gr.Token >= len(g.logits[r]) {
				ok = false
				detail.add("row %d: token %d out of range", r, gr.Token)
			} else {
				want = rawLogprobs(maskedRow(g.logits[r], g.params[r].Allow))[gr.Token]
			}
		}
		if ok {
			if !math.IsInf(want, -1) {
				// (Finite differences only: the report is JSON.)
				if d := math.Abs(float64(gr.Logprob) - want); !math.IsInf(d, 0) && !math.IsNaN(d) {
					worst = max(worst, d)
				}
			}
			if !lpClose(gr.Logprob, want) {
				ok = false
				detail.add("row %d: logprob of %d %g, worker/sample %g", r, gr.Token, gr.Logprob, want)
			}
		}
		if len(gr.Top) != len(w.Top) {
			ok = false
			detail.add("row %d: %d top logprobs, worker/sample %d", r, len(gr.Top), len(w.Top))
		} else {
			for k := range w.Top {
				if gr.Top[k].ID != w.Top[k].ID || !lpClose(gr.Top[k].Logprob, float64(w.Top[k].Logprob)) {
					ok = false
					detail.add("row %d: top %d is %d (%g), worker/sample %d (%g)", r, k, gr.Top[k].ID, gr.Top[k].Logprob,
						w.Top[k].ID, w.Top[k].Logprob)
					break
				}
			}
		}
		if !ok {
			badLP++
		}
	}
	c := Check{Status: Pass, Detail: string(detail), Extra: map[string]float64{"rows": float64(len(g.want)),
		"logprob_mismatches": float64(badLP), "logprob_max_abs": worst}}
	if badLP > 0 {
		c.Status = Fail
	}
	return c
}

// sampledDraws is one distribution set: n draws from one row with the
// same parameters and fresh uniforms, on the device and with worker/sample.
type sampledDraws struct {
	n      int
	params SampleParams
	hist   int
	// allow > 0: each token is allowed with this probability (one set for
	// every draw), and the distribution is the constrained one.
	allow float64

	p        []float64 // the exact distribution
	lp       []float64 // the raw logprobs
	got, ref []Sampled
}

func (s *sampledDraws) draw(e *samplerEnv) error {
	// 256 tokens: 16 likely ones, the rest far below, a realistic shape
	// for a next-token distribution.
	const V, nTop = drawV, drawTop
	N, rng := s.n, e.rng
	var row []float32
	var p []float64
	sp := s.params
	sp.TopLogprobs = nTop
	for try := 0; ; try++ {
		row = make([]float32, V)
		for j := range row {
			row[j] = float32(rng.NormFloat64() - 4)
		}
		likely := rng.Perm(V)[:16]
		for _, j := range likely {
			row[j] = float32(rng.NormFloat64() + 1)
		}
		sp.History = nil
		for range s.hist {
			sp.History = append(sp.History, likely[rng.IntN(4)])
		}
		sp.Allow = nil
		if s.allow > 0 {
			sp.Allow = randomAllow(rng, V, s.allow)
		}
		var border bool
		p, border = exactProbs(maskedRow(row, sp.Allow), sp)
		if !border || try > 20 {
			break
		}
	}
	logits := make([][]float32, N)
	params := make([]SampleParams, N)
	for i := range logits {
		logits[i] = row
		params[i] = sp
		params[i].Uniform = rng.Float64()
	}
	got, err := e.dev.Sample(e.b, logits, params)
	if err != nil {
		return err
	}
	if len(got) != N {
		return fmt.Errorf("%s sampler: %d results for %d rows", e.dev.Name(), len(got), N)
	}
	// The reference: one seeded sampler, N draws, with the row's history.
	rp := sp
	if rp.TopP == 0 {
		rp.TopP = 1
	}
	smp, err := sample.New(sample.Params{Temperature: rp.Temperature, TopK: rp.TopK, TopP: rp.TopP, MinP: rp.MinP,
		PresencePenalty: rp.PresencePenalty, FrequencyPenalty: rp.FrequencyPenalty, Seed: rng.Uint64(), HasSeed: true,
		Logprobs: true, TopLogprobs: nTop})
	if err != nil {
		return fmt.Errorf("cpu sampler: %w", err)
	}
	ref := make([]Sampled, N)
	for i := range ref {
		smp.Reset()
		for _, tok := range rp.History {
			smp.Accept(tok)
		}
		r, err := smp.SampleAllowed(row, rp.Allow)
		if err != nil {
			return fmt.Errorf("cpu sampler: %w", err)
		}
		ref[i] = Sampled{Token: r.Token, Logprob: r.Logprob, Top: slices.Clone(r.Top)}
	}
	s.p, s.lp, s.got, s.ref = p, rawLogprobs(maskedRow(row, sp.Allow)), got, ref
	return nil
}

func drawnTokens(res []Sampled) []int {
	out := make([]int, len(res))
	for i, r := range res {
		out[i] = r.Token
	}
	return out
}

// distribution: the device's draws follow the exact distribution and
// none falls outside the truncation.
func (s *sampledDraws) distribution() Check {
	tv, bound, outside := tvTest(drawnTokens(s.got), s.p)
	refTV, _, refOut := tvTest(drawnTokens(s.ref), s.p)
	c := Check{Status: Pass, Extra: map[string]float64{"draws": float64(s.n), "tv": tv, "tv_bound": bound,
		"outside": float64(outside), "ref_tv": refTV, "ref_outside": float64(refOut)}}
	switch {
	case refTV > bound || refOut > 0:
		c.Status, c.Detail = Error, "worker/sample itself fails the test: the harness is wrong"
	case outside > 0:
		c.Status, c.Detail = Fail, fmt.Sprintf("%d draws outside the truncated distribution", outside)
	case tv > bound:
		c.Status, c.Detail = Fail, fmt.Sprintf("total variation %.4f > %.4f", tv, bound)
	}
	return c
}

// badLogprobs counts the draws whose logprob (or top list) is not the raw
// one, and describes the first.
func (s *sampledDraws) badLogprobs(res []Sampled) (int, string) {
	const V, nTop = drawV, drawTop
	lp := s.lp
	n := 0
	var first notes
	for i, r := range res {
		ok := r.Token >= 0 && r.Token < V && lpClose(r.Logprob, lp[r.Token]) && len(r.Top) == nTop
		for k := 0; ok && k < nTop; k++ {
			ok = r.Top[k].ID >= 0 && r.Top[k].ID < V && lpClose(r.Top[k].Logprob, lp[r.Top[k].ID]) &&
				(k == 0 || lp[r.Top[k-1].ID] > lp[r.Top[k].ID] ||
					lp[r.Top[k-1].ID] == lp[r.Top[k].ID] && r.Top[k-1].ID < r.Top[k].ID)
		}
		if !ok {
			n++
			first.add("draw %d: token %d logprob %g, top %v", i, r.Token, r.Logprob, r.Top)
		}
	}
	return n, string(first)
}

// logprobs: every device draw reports the raw logprob of its token and
// the raw top logprobs, most likely first.
func (s *sampledDraws) logprobs() Check {
	gotBad, first := s.badLogprobs(s.got)
	refBad, _ := s.badLogprobs(s.ref)
	c := Check{Status: Pass, Extra: map[string]float64{"draws": float64(s.n), "logprob_mismatches": float64(gotBad),
		"ref_logprob_mismatches": float64(refBad)}}
	switch {
	case refBad > 0:
		c.Status, c.Detail = Error, "worker/sample itself fails the test: the harness is wrong"
	case gotBad > 0:
		c.Status, c.Detail = Fail, fmt.Sprintf("%d draws with logprobs that are not the raw log-softmax (first: %s)", gotBad, first)
	}
	return c
}
