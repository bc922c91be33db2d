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
// row's uniform: the CPU device's Sample, so the sampler checks run here.
func refSample(logits [][]float32, p []SampleParams) ([]int, error) {
	out := make([]int, len(logits))
	for i, row := range logits {
		sp := sample.Params{Temperature: p[i].Temperature, TopP: p[i].TopP, TopK: p[i].TopK,
			Seed: uint64(p[i].Uniform * (1 << 53)), HasSeed: true}
		if sp.TopP == 0 {
			sp.TopP = 1
		}
		s, err := sample.New(sp)
		if err != nil {
			return nil, fmt.Errorf("cpu sampler: %w", err)
		}
		r, err := s.Sample(row)
		if err != nil {
			return nil, fmt.Errorf("cpu sampler: row %d: %w", i, err)
		}
		out[i] = r.Token
	}
	return out, nil
}

// exactProbs is the distribution sampling draws from, in float64:
// softmax(logits / temp), cut to the topK most likely (0: all), then to
// the smallest most-likely-first prefix whose mass reaches topP, and
// renormalised (worker/sample's order of operations, without min-p and
// penalties). border is true when the top-p cut falls within 1e-4 of a
// token's mass, where float32 and float64 arithmetic may cut differently.
func exactProbs(logits []float32, temp float64, topK int, topP float64) (p []float64, border bool) {
	n := len(logits)
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		switch {
		case logits[a] > logits[b]:
			return -1
		case logits[a] < logits[b]:
			return 1
		}
		return 0
	})
	keep := n
	if topK > 0 {
		keep = min(topK, n)
	}
	mx := float64(logits[idx[0]]) / temp
	p = make([]float64, n)
	var sum float64
	for _, i := range idx[:keep] {
		p[i] = math.Exp(float64(logits[i])/temp - mx)
		sum += p[i]
	}
	for _, i := range idx[:keep] {
		p[i] /= sum
	}
	if topP > 0 && topP < 1 {
		var cum float64
		cut := keep
		for j, i := range idx[:keep] {
			cum += p[i]
			if math.Abs(cum-topP) < 1e-4 {
				border = true
			}
			if cum >= topP*(1-1e-6) {
				cut = j + 1
				break
			}
		}
		sum = 0
		for j, i := range idx[:keep] {
			if j >= cut {
				p[i] = 0
			}
			sum += p[i]
		}
		for _, i := range idx[:cut] {
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

// runSampler checks the device's sampler against worker/sample: greedy
// rows over the full vocabulary must give the same tokens exactly (ties
// to the lower id); temperature, top-k and top-p draws must follow the
// exact distribution (total variation test), and never pick a token the
// truncation removed. worker/sample's own draws go through the same test,
// so a harness error shows as an error of the reference.
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
		const S, V = 16, 201088
		logits := make([][]float32, S)
		params := make([]SampleParams, S)
		for i := range logits {
			logits[i] = make([]float32, V)
			for j := range logits[i] {
				logits[i][j] = float32(rng.NormFloat64() * 2)
			}
			params[i] = SampleParams{TopP: 1}
		}
		// Row 3: a tie for the maximum (the lower id wins); row 5: all
		// equal (id 0); row 7: the maximum at the last id.
		i, j := rng.IntN(V/2), V/2+rng.IntN(V/2)
		logits[3][i], logits[3][j] = 100, 100
		for k := range logits[5] {
			logits[5][k] = 0.25
		}
		logits[7][V-1] = 100
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
		bad := 0
		detail := ""
		for r := range want {
			if got[r] != want[r] {
				bad++
				if detail == "" {
					detail = fmt.Sprintf("row %d: token %d, worker/sample %d", r, got[r], want[r])
				}
			}
		}
		c := Check{Status: Pass, Detail: detail, Extra: map[string]float64{"rows": S, "mismatches": float64(bad)}}
		if bad > 0 {
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
		temp float64
		topK int
		topP float64
	}{
		{"temperature 0.8", 0.8, 0, 1},
		{"temperature 1, top-k 5", 1, 5, 1},
		{"temperature 1, top-p 0.9", 1, 0, 0.9},
	} {
		run(fmt.Sprintf("%s, %d draws", tc.name, N), func() Check {
			// 256 tokens: 16 likely ones, the rest far below, a realistic
			// shape for a next-token distribution.
			const V = 256
			var row []float32
			var p []float64
			for try := 0; ; try++ {
				row = make([]float32, V)
				for j := range row {
					row[j] = float32(rng.NormFloat64() - 4)
				}
				for _, j := range rng.Perm(V)[:16] {
					row[j] = float32(rng.NormFloat64() + 1)
				}
				var border bool
				p, border = exactProbs(row, tc.temp, tc.topK, tc.topP)
				if !border || try > 20 {
					break
				}
			}
			logits := make([][]float32, N)
			params := make([]SampleParams, N)
			for i := range logits {
				logits[i] = row
				params[i] = SampleParams{Temperature: tc.temp, TopK: tc.topK, TopP: tc.topP, Uniform: rng.Float64()}
			}
			got, err := dev.Sample(b, logits, params)
			if unsupported(err) {
				return Check{Status: Skip, Detail: "the device has no sampler"}
			}
			if err != nil {
				return Check{Status: Error, Detail: err.Error()}
			}
			tv, bound, outside := tvTest(got, p)
			// The reference through the same test: one seeded sampler, N
			// draws.
			s, err := sample.New(sample.Params{Temperature: tc.temp, TopK: tc.topK, TopP: tc.topP, Seed: rng.Uint64(), HasSeed: true})
			if err != nil {
				return Check{Status: Error, Detail: err.Error()}
			}
			ref := make([]int, N)
			for i := range ref {
				r, err := s.Sample(row)
				if err != nil {
					return Check{Status: Error, Detail: err.Error()}
				}
				ref[i] = r.Token
			}
			refTV, _, refOut := tvTest(ref, p)
			c := Check{Status: Pass, Extra: map[string]float64{"tv": tv, "tv_bound": bound, "outside": float64(outside),
				"ref_tv": refTV, "ref_outside": float64(refOut)}}
			switch {
			case refTV > bound || refOut > 0:
				c.Status, c.Detail = Error, "worker/sample itself fails the test: the harness is wrong"
			case outside > 0:
				c.Status, c.Detail = Fail, fmt.Sprintf("%d draws outside the truncated distribution", outside)
			case tv > bound:
				c.Status, c.Detail = Fail, fmt.Sprintf("total variation %.4f > %.4f", tv, bound)
			}
			return c
		})
	}
}
