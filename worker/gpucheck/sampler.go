package gpucheck

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
		r, err := s.Sample(row)
		if err != nil {
			return nil, fmt.Errorf("cpu sampler: row %d: %w", i, err)
		}
		out[i] = Sampled{Token: r.Token, Logprob: r.Logprob, Top: slices.Clone(r.Top)}
	}
	return out, nil
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

// runSampler checks the device's sampler against worker/sample, with its
// semantics (kernels/gptoss.h, gx_sample): greedy rows over the full
// vocabulary must give the same tokens exactly (the argmax of the
// penalised logits, ties to the lower id; top-k, min-p and top-p ignored),
// the same top-logprob ids, and logprobs of the raw logits (before
// penalties and temperature) within lpClose of worker/sample's;
// temperature, top-k, min-p, top-p and penalised draws must follow the
// exact distribution (total variation test), never pick a token the
// truncation removed, and report the raw logprob of the token drawn.
// worker/sample's own draws go through the same tests, so a harness error
// shows as an error of the reference.
func runSampler(ctx context.Context, dev Device, b engine.Backend, rng *rand.Rand, quick bool, report func(Check)) {
	run := func(name string, f func() Check) {
		if ctx.Err() != nil {
			report(Check{Group: "sampler", Name: name, Status: Skip, Detail: "out of time"})
			return
		}
		start := now()
		c := func() (c Check) {
			defer func() {
				if p := recover(); p != nil {
					c = Check{Status: Error, Detail: fmt.Sprintf("panic: %v", p)}
				}
			}()
			return f()
		}()
		c.Group, c.Name, c.Seconds = "sampler", name, since(start)
		report(c)
	}
	unsupported := func(err error) bool { return errors.Is(err, ErrUnsupported) }

	run("greedy, vocabulary 201088", func() Check {
		const S, V, nTop = 16, 201088, 5
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
		got, err := dev.Sample(b, logits, params)
		if unsupported(err) {
			return Check{Status: Skip, Detail: "the device has no sampler"}
		}
		if err != nil {
			return Check{Status: Error, Detail: err.Error()}
		}
		want, err := refSample(logits, params)
		if err != nil {
			return Check{Status: Error, Detail: err.Error()}
		}
		bad, badLP := 0, 0
		var worst float64
		detail := ""
		note := func(f string, args ...any) {
			if detail == "" {
				detail = fmt.Sprintf(f, args...)
			}
		}
		for r := range want {
			g, w := got[r], want[r]
			if g.Token != w.Token {
				bad++
				note("row %d: token %d, worker/sample %d", r, g.Token, w.Token)
				continue
			}
			lpOK := lpClose(g.Logprob, float64(w.Logprob))
			if !math.IsInf(float64(w.Logprob), -1) {
				worst = max(worst, math.Abs(float64(g.Logprob-w.Logprob)))
			}
			if !lpOK {
				note("row %d: logprob of %d %g, worker/sample %g", r, g.Token, g.Logprob, w.Logprob)
			}
			if len(g.Top) != len(w.Top) {
				lpOK = false
				note("row %d: %d top logprobs, worker/sample %d", r, len(g.Top), len(w.Top))
			} else {
				for k := range w.Top {
					if g.Top[k].ID != w.Top[k].ID || !lpClose(g.Top[k].Logprob, float64(w.Top[k].Logprob)) {
						lpOK = false
						note("row %d: top %d is %d (%g), worker/sample %d (%g)", r, k, g.Top[k].ID, g.Top[k].Logprob,
							w.Top[k].ID, w.Top[k].Logprob)
						break
					}
				}
			}
			if !lpOK {
				badLP++
			}
		}
		c := Check{Status: Pass, Detail: detail, Extra: map[string]float64{"rows": S, "mismatches": float64(bad),
			"logprob_mismatches": float64(badLP), "logprob_max_abs": worst}}
		if bad+badLP > 0 {
			c.Status = Fail
		}
		return c
	})

	N := 8192
	if quick {
		N = 4096
	}
	for _, tc := range []struct {
		name string
		p    SampleParams
		hist int // this many draws among the likely tokens make the history
	}{
		{"temperature 0.8", SampleParams{Temperature: 0.8, TopP: 1}, 0},
		{"temperature 1, top-k 5", SampleParams{Temperature: 1, TopK: 5, TopP: 1}, 0},
		{"temperature 1, top-p 0.9", SampleParams{Temperature: 1, TopP: 0.9}, 0},
		{"temperature 0.7, min-p 0.2, top-p 0.95, penalties",
			SampleParams{Temperature: 0.7, TopP: 0.95, MinP: 0.2, PresencePenalty: 0.5, FrequencyPenalty: 0.25}, 6},
	} {
		run(fmt.Sprintf("%s, %d draws", tc.name, N), func() Check {
			// 256 tokens: 16 likely ones, the rest far below, a realistic
			// shape for a next-token distribution.
			const V, nTop = 256, 3
			var row []float32
			var p []float64
			sp := tc.p
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
				for range tc.hist {
					sp.History = append(sp.History, likely[rng.IntN(4)])
				}
				var border bool
				p, border = exactProbs(row, sp)
				if !border || try > 20 {
					break
				}
			}
			lp := rawLogprobs(row)
			logits := make([][]float32, N)
			params := make([]SampleParams, N)
			for i := range logits {
				logits[i] = row
				params[i] = sp
				params[i].Uniform = rng.Float64()
			}
			got, err := dev.Sample(b, logits, params)
			if unsupported(err) {
				return Check{Status: Skip, Detail: "the device has no sampler"}
			}
			if err != nil {
				return Check{Status: Error, Detail: err.Error()}
			}
			// badLP counts draws whose logprob (or top list) is not the
			// raw one.
			badLP := func(res []Sampled) int {
				n := 0
				for _, r := range res {
					ok := r.Token >= 0 && r.Token < V && lpClose(r.Logprob, lp[r.Token]) && len(r.Top) == nTop
					for k := 0; ok && k < nTop; k++ {
						ok = r.Top[k].ID >= 0 && r.Top[k].ID < V && lpClose(r.Top[k].Logprob, lp[r.Top[k].ID]) &&
							(k == 0 || lp[r.Top[k-1].ID] > lp[r.Top[k].ID] ||
								lp[r.Top[k-1].ID] == lp[r.Top[k].ID] && r.Top[k-1].ID < r.Top[k].ID)
					}
					if !ok {
						n++
					}
				}
				return n
			}
			tokens := func(res []Sampled) []int {
				out := make([]int, len(res))
				for i, r := range res {
					out[i] = r.Token
				}
				return out
			}
			tv, bound, outside := tvTest(tokens(got), p)
			gotBad := badLP(got)
			// The reference through the same tests: one seeded sampler, N
			// draws, with the row's history.
			rp := sp
			if rp.TopP == 0 {
				rp.TopP = 1
			}
			s, err := sample.New(sample.Params{Temperature: rp.Temperature, TopK: rp.TopK, TopP: rp.TopP, MinP: rp.MinP,
				PresencePenalty: rp.PresencePenalty, FrequencyPenalty: rp.FrequencyPenalty, Seed: rng.Uint64(), HasSeed: true,
				Logprobs: true, TopLogprobs: nTop})
			if err != nil {
				return Check{Status: Error, Detail: err.Error()}
			}
			ref := make([]Sampled, N)
			for i := range ref {
				s.Reset()
				for _, tok := range rp.History {
					s.Accept(tok)
				}
				r, err := s.Sample(row)
				if err != nil {
					return Check{Status: Error, Detail: err.Error()}
				}
				ref[i] = Sampled{Token: r.Token, Logprob: r.Logprob, Top: slices.Clone(r.Top)}
			}
			refTV, _, refOut := tvTest(tokens(ref), p)
			refBad := badLP(ref)
			c := Check{Status: Pass, Extra: map[string]float64{"tv": tv, "tv_bound": bound, "outside": float64(outside),
				"logprob_mismatches": float64(gotBad), "ref_tv": refTV, "ref_outside": float64(refOut)}}
			switch {
			case refTV > bound || refOut > 0 || refBad > 0:
				c.Status, c.Detail = Error, "worker/sample itself fails the test: the harness is wrong"
			case outside > 0:
				c.Status, c.Detail = Fail, fmt.Sprintf("%d draws outside the truncated distribution", outside)
			case tv > bound:
				c.Status, c.Detail = Fail, fmt.Sprintf("total variation %.4f > %.4f", tv, bound)
			case gotBad > 0:
				c.Status, c.Detail = Fail, fmt.Sprintf("%d draws with logprobs that are not the raw log-softmax", gotBad)
			}
			return c
		})
	}
}
