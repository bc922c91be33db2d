package sample

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

var (
	inf  = float32(math.Inf(1))
	ninf = float32(math.Inf(-1))
	nan  = float32(math.NaN())
)

func mustNew(t testing.TB, p Params) *Sampler {
	t.Helper()
	if p.TopP == 0 {
		p.TopP = 1
	}
	s, err := New(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustSample(t testing.TB, s *Sampler, logits []float32) Result {
	t.Helper()
	r, err := s.Sample(logits)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// logitsOf returns log(p) as float32 logits.
func logitsOf(p ...float64) []float32 {
	out := make([]float32, len(p))
	for i, v := range p {
		out[i] = float32(math.Log(v))
	}
	return out
}

// normalLogits returns n logits drawn from (nearly) normal(0, sigma),
// deterministic in seed and on every platform: a sum of 12 uniforms (Irwin–
// Hall) needs only additions, where NormFloat64 calls math.Exp.
func normalLogits(n int, sigma float64, seed uint64) []float32 {
	r := rand.NewPCG(seed, 7)
	out := make([]float32, n)
	for i := range out {
		g := -6.0
		for range 12 {
			g += float64(r.Uint64()>>11) * 0x1p-53
		}
		out[i] = float32(g * sigma)
	}
	return out
}

// realisticLogits is a vocabulary-sized logits row: normal(0, 2) with a few
// large values, like an LLM's next-token logits.
func realisticLogits(n int) []float32 {
	x := normalLogits(n, 2, 42)
	for i, v := range []float32{22, 20.5, 19, 18, 17.5, 16} {
		x[(i*7919+13)%n] = v
	}
	return x
}

// refDist is a straightforward reference of the whole pipeline (math.Exp,
// full sorts) returning the probability of every token.
func refDist(logits []float32, p Params, hist map[int]int) []float64 {
	n := len(logits)
	w := make([]float64, n)
	for i, v := range logits {
		w[i] = float64(v)
		if v != v {
			w[i] = math.Inf(-1)
		}
	}
	for tok, c := range hist {
		if tok < n {
			w[tok] = float64(float32(w[tok] - (p.PresencePenalty + p.FrequencyPenalty*float64(c))))
		}
	}
	if slices.Contains(w, math.Inf(1)) {
		for i := range w {
			if math.IsInf(w[i], 1) {
				w[i] = 0
			} else {
				w[i] = math.Inf(-1)
			}
		}
	}
	out := make([]float64, n)
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(w[b], w[a]) })
	if p.Temperature == 0 {
		out[order[0]] = 1
		return out
	}
	if p.TopK > 0 && p.TopK < n {
		order = order[:p.TopK]
	}
	m := w[order[0]]
	e := make([]float64, n)
	for _, i := range order {
		e[i] = math.Exp((w[i] - m) / p.Temperature)
	}
	if p.MinP > 0 {
		for i := range e {
			if e[i] < p.MinP {
				e[i] = 0
			}
		}
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(e[b], e[a]) })
	if p.TopP < 1 {
		z := 0.0
		for _, i := range order {
			z += e[i]
		}
		target, c := p.TopP*z*(1-topPSlack), 0.0
		for j, i := range order {
			c += e[i]
			if c >= target {
				for _, k := range order[j+1:] {
					e[k] = 0
				}
				break
			}
		}
	}
	z := 0.0
	for _, v := range e {
		z += v
	}
	for i := range out {
		out[i] = e[i] / z
	}
	return out
}

// drawCounts samples draws times (a fifth under the race detector) and
// counts the tokens.
func drawCounts(t testing.TB, s *Sampler, logits []float32, draws int) []int {
	t.Helper()
	if raceEnabled {
		draws /= 5
	}
	counts := make([]int, len(logits))
	for range draws {
		counts[mustSample(t, s, logits).Token]++
	}
	return counts
}

// checkFreq compares counts with the probabilities want: tokens with
// probability 0 must never be drawn, the others must be within k standard
// errors.
func checkFreq(t *testing.T, name string, counts []int, want []float64, k float64) {
	t.Helper()
	draws := 0
	for _, c := range counts {
		draws += c
	}
	n := float64(draws)
	for i, p := range want {
		f := float64(counts[i]) / n
		if p == 0 {
			if counts[i] != 0 {
				t.Errorf("%s: token %d has probability 0 but was drawn %d times", name, i, counts[i])
			}
			continue
		}
		se := math.Sqrt(p * (1 - p) / n)
		if math.Abs(f-p) > k*se+1e-12 {
			t.Errorf("%s: token %d frequency %.5f, want %.5f ± %.5f (%.1f SE)", name, i, f, p, k*se, math.Abs(f-p)/se)
		}
	}
}

func TestGreedy(t *testing.T) {
	logits := []float32{0.5, 3, -1, 3, 2.9, nan}
	for _, p := range []Params{
		{},
		{TopP: 0.1, TopK: 2, MinP: 0.9},
		{TopP: 0.5, TopK: 1, Seed: 3, HasSeed: true},
	} {
		s := mustNew(t, p)
		for range 3 {
			if got := mustSample(t, s, logits).Token; got != 1 {
				t.Fatalf("%+v: greedy token %d, want 1 (argmax, lowest id on ties)", p, got)
			}
		}
	}
	// NaN never wins, even first.
	s := mustNew(t, Params{})
	if got := mustSample(t, s, []float32{nan, -5, ninf, -4}).Token; got != 3 {
		t.Fatalf("greedy with NaN: %d, want 3", got)
	}
	// Greedy leaves the PRNG untouched.
	s = mustNew(t, Params{TopP: 1, Seed: 99, HasSeed: true})
	for range 10 {
		mustSample(t, s, logits)
	}
	if got, want := s.pcg.Uint64(), rand.NewPCG(99, pcgStream).Uint64(); got != want {
		t.Fatal("greedy sampling consumed the PRNG")
	}
}

func TestSeedReproducible(t *testing.T) {
	logits := normalLogits(1000, 1, 1)
	seq := func(seed uint64, p Params) []int {
		p.Seed, p.HasSeed = seed, true
		s := mustNew(t, p)
		out := make([]int, 1000)
		for i := range out {
			out[i] = mustSample(t, s, logits).Token
			s.Accept(out[i])
		}
		return out
	}
	for _, p := range []Params{
		{Temperature: 1, TopP: 1},
		{Temperature: 0.8, TopP: 0.9, TopK: 40, MinP: 0.05},
		{Temperature: 1.3, TopP: 0.95, TopK: 500, PresencePenalty: 0.5, FrequencyPenalty: 0.3},
		{Temperature: 0.7, TopP: 0.99, TopK: 2000, MinP: 0.01},
	} {
		a, b := seq(12345, p), seq(12345, p)
		if !slices.Equal(a, b) {
			t.Fatalf("%+v: same seed gave different sequences", p)
		}
		c := seq(54321, p)
		diff := 0
		for i := range a {
			if a[i] != c[i] {
				diff++
			}
		}
		if diff < 100 {
			t.Fatalf("%+v: different seeds agree on %d of 1000 draws", p, 1000-diff)
		}
	}
	// Unseeded samplers differ from each other.
	s1, s2 := mustNew(t, Params{Temperature: 1}), mustNew(t, Params{Temperature: 1})
	same := 0
	for range 200 {
		if mustSample(t, s1, logits).Token == mustSample(t, s2, logits).Token {
			same++
		}
	}
	if same > 100 {
		t.Fatalf("unseeded samplers agree on %d of 200 draws", same)
	}
}

// TestGolden pins the token stream of seeded samplers on every path, so that
// a change of platform, Go version or implementation that would change what
// users get for a seed is caught. A deliberate change (of the arithmetic, or
// of which path handles which parameters) must update these values, and
// changes the tokens of seeded requests.
func TestGolden(t *testing.T) {
	logits := realisticLogits(201088)
	flat := normalLogits(201088, 2, 3)
	for _, c := range []struct {
		p      Params
		logits []float32
		want   []int
	}{
		{Params{Temperature: 1, TopP: 1, Seed: 7, HasSeed: true}, flat,
			[]int{163717, 154056, 189698, 165474, 195741, 9277, 120118, 100542, 114811, 70399, 191130, 74054}},
		{Params{Temperature: 0.9, TopP: 0.9, Seed: 7, HasSeed: true}, flat,
			[]int{100983, 52913, 114834, 191375, 187976, 96596, 106784, 186630, 162634, 38855, 42460, 40164}},
		{Params{Temperature: 2, TopP: 0.95, MinP: 0.01, Seed: 8, HasSeed: true}, logits,
			[]int{15851, 13, 13, 13, 13, 13, 15851, 13, 15851, 13, 7932, 7932}},
		{Params{Temperature: 1, TopP: 0.8, TopK: 50, Seed: 9, HasSeed: true, PresencePenalty: 1, FrequencyPenalty: 0.5}, flat,
			[]int{43365, 169920, 52946, 102113, 106905, 61824, 193167, 44505, 43982, 170876, 80898, 27837}},
		{Params{Temperature: 1, TopP: 0.9, TopK: 3000, Seed: 10, HasSeed: true}, flat,
			[]int{50577, 69323, 90813, 153782, 48768, 142446, 15547, 73909, 74859, 668, 34863, 37471}},
		{Params{Temperature: 0.7, TopP: 1, TopK: 500, MinP: 0.02, Seed: 11, HasSeed: true}, flat,
			[]int{22976, 54113, 106905, 193167, 165773, 31574, 102841, 66306, 97963, 72457, 70239, 174275}},
		{Params{Temperature: 1.1, TopP: 0.97, Seed: 12, HasSeed: true, FrequencyPenalty: 2}, logits,
			[]int{13, 31689, 7932, 23770, 23770, 15851, 13, 15851, 7932, 13, 7932, 15851}},
	} {
		s := mustNew(t, c.p)
		got := make([]int, 12)
		for i := range got {
			got[i] = mustSample(t, s, c.logits).Token
			s.Accept(got[i])
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%+v: tokens %#v, want %v", c.p, got, c.want)
		}
	}
}

func TestDistribution(t *testing.T) {
	logits := []float32{1.5, 0.2, -0.7, 2.1, 0, -2.5, 1.1, 0.9}
	const draws = 200000
	for i, temp := range []float64{1, 0.5, 1.7} {
		s := mustNew(t, Params{Temperature: temp, TopP: 1, Seed: uint64(i + 1), HasSeed: true})
		want := make([]float64, len(logits))
		z := 0.0
		for j, v := range logits {
			want[j] = math.Exp(float64(v) / temp)
			z += want[j]
		}
		for j := range want {
			want[j] /= z
		}
		checkFreq(t, "temperature", drawCounts(t, s, logits, draws), want, 4)
	}
}

// forcePath sets the strategy thresholds for one test.
func forcePath(t *testing.T, insertMax, compactMax, refine int) {
	oi, oc, or := topKInsertMax, topKCompactMax, refineMin
	topKInsertMax, topKCompactMax, refineMin = insertMax, compactMax, refine
	t.Cleanup(func() { topKInsertMax, topKCompactMax, refineMin = oi, oc, or })
}

// paths force each top-k strategy, and the second histogram level at the
// cuts on every list or on none.
var paths = []struct {
	name                          string
	insertMax, compactMax, refine int
}{
	{"insert", 64, 1024, 64},
	{"radix-compact", 0, 1 << 30, 1 << 30},
	{"radix-compact-refine", 0, 1 << 30, 0},
	{"radix-dense", 0, 0, 1 << 30},
	{"radix-dense-refine", 0, 0, 0},
}

// TestFilters checks the distribution after every combination of filters,
// on every top-k path, against the reference pipeline.
func TestFilters(t *testing.T) {
	logits := []float32{1.5, 0.2, -0.7, 2.1, 0, -2.5, 1.1, 0.9, 2.1, -1, nan, ninf, 0.3}
	cases := []Params{
		{Temperature: 1, TopK: 3, TopP: 1},
		{Temperature: 0.8, TopK: 4, TopP: 1},
		{Temperature: 1, TopP: 0.6},
		{Temperature: 1.2, TopP: 0.9},
		{Temperature: 1, MinP: 0.3, TopP: 1},
		{Temperature: 0.7, TopK: 6, MinP: 0.1, TopP: 0.8},
		{Temperature: 1.5, TopK: 12, TopP: 0.95, MinP: 0.02},
		{Temperature: 1, TopK: 2, TopP: 1}, // tie at the cut: 3 and 8 both 2.1
		{Temperature: 1, TopK: 1, TopP: 1},
	}
	for _, path := range paths {
		t.Run(path.name, func(t *testing.T) {
			forcePath(t, path.insertMax, path.compactMax, path.refine)
			for i, p := range cases {
				p.Seed, p.HasSeed = uint64(100+i), true
				s := mustNew(t, p)
				checkFreq(t, strings.TrimSpace(path.name), drawCounts(t, s, logits, 30000), refDist(logits, p, nil), 4.5)
			}
		})
	}
}

// TestFiltersLarge runs the dense machinery on a vocabulary that spans many
// histogram buckets, with many tied logits so that the cuts fall inside
// ties, against the reference.
func TestFiltersLarge(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	logits := make([]float32, 1000)
	for i := range logits {
		logits[i] = float32(math.Round(r.NormFloat64()*20) / 10) // ties on a 0.1 grid
	}
	cases := []Params{
		{Temperature: 1, TopP: 0.5},
		{Temperature: 0.6, TopP: 0.93, MinP: 0.001},
		{Temperature: 1, TopK: 500, TopP: 0.9},
		{Temperature: 2, TopK: 300, TopP: 1},
		{Temperature: 1, TopK: 37, TopP: 0.97},
	}
	for _, path := range paths {
		t.Run(path.name, func(t *testing.T) {
			forcePath(t, path.insertMax, path.compactMax, path.refine)
			for i, p := range cases {
				p.Seed, p.HasSeed = uint64(200+i), true
				s := mustNew(t, p)
				checkFreq(t, path.name, drawCounts(t, s, logits, 20000), refDist(logits, p, nil), 5)
			}
		})
	}
}

func support(counts []int) []int {
	var out []int
	for i, c := range counts {
		if c > 0 {
			out = append(out, i)
		}
	}
	return out
}

func TestTopK(t *testing.T) {
	logits := []float32{0.1, 3, 0.2, 2, 5, 1, 1, 4}
	for _, path := range paths {
		forcePath(t, path.insertMax, path.compactMax, path.refine)
		for k, want := range map[int][]int{1: {4}, 2: {4, 7}, 3: {1, 4, 7}, 5: {1, 3, 4, 5, 7}, 6: {1, 3, 4, 5, 6, 7}} {
			s := mustNew(t, Params{Temperature: 5, TopK: k, Seed: 1, HasSeed: true})
			if got := support(drawCounts(t, s, logits, 5000)); !slices.Equal(got, want) {
				t.Errorf("%s: top_k %d drew %v, want %v", path.name, k, got, want)
			}
		}
	}
}

func TestTopP(t *testing.T) {
	probs := []float64{0.5, 0.3, 0.15, 0.05}
	for _, c := range []struct {
		topP float64
		want []int
	}{
		{0.8, []int{0, 1}},
		{0.81, []int{0, 1, 2}},
		{0.5, []int{0}},
		{0.49, []int{0}},
		{0.96, []int{0, 1, 2, 3}},
		{1e-9, []int{0}},
	} {
		// Dense path, and the compact path (top_k below the vocabulary size
		// thanks to a padding −Inf token).
		for _, logits := range [][]float32{logitsOf(probs...), append(logitsOf(probs...), ninf)} {
			s := mustNew(t, Params{Temperature: 1, TopP: c.topP, TopK: 4, Seed: 2, HasSeed: true})
			counts := drawCounts(t, s, logits, 20000)
			if got := support(counts); !slices.Equal(got, c.want) {
				t.Errorf("top_p %g (vocab %d): drew %v, want %v", c.topP, len(logits), got, c.want)
			}
		}
	}
	// Renormalized: with top_p 0.8 tokens 0 and 1 are drawn 5:3.
	s := mustNew(t, Params{Temperature: 1, TopP: 0.8, Seed: 3, HasSeed: true})
	checkFreq(t, "top_p renormalized", drawCounts(t, s, logitsOf(probs...), 100000), []float64{0.625, 0.375, 0, 0}, 4)
}

func TestMinP(t *testing.T) {
	logits := logitsOf(0.4, 0.3, 0.2, 0.1)
	for _, c := range []struct {
		minP float64
		want []int
	}{
		{0.6, []int{0, 1}},     // threshold 0.24
		{0.45, []int{0, 1, 2}}, // threshold 0.18
		{0.2, []int{0, 1, 2, 3}},
		{0.8, []int{0}},
		{1, []int{0}},
	} {
		for _, path := range paths {
			forcePath(t, path.insertMax, path.compactMax, path.refine)
			for _, k := range []int{0, 3} {
				s := mustNew(t, Params{Temperature: 1, MinP: c.minP, TopK: k, Seed: 4, HasSeed: true})
				want := c.want
				if k > 0 && len(want) > k {
					want = want[:k]
				}
				if got := support(drawCounts(t, s, logits, 5000)); !slices.Equal(got, want) {
					t.Errorf("%s: min_p %g top_k %d: drew %v, want %v", path.name, c.minP, k, got, want)
				}
			}
		}
	}
}

func TestPenalties(t *testing.T) {
	logits := []float32{2.0, 1.7, 0, -1}
	// Presence: once, however many times.
	s := mustNew(t, Params{PresencePenalty: 0.5})
	if got := mustSample(t, s, logits).Token; got != 0 {
		t.Fatalf("no history: %d, want 0", got)
	}
	s.Accept(0)
	if got := mustSample(t, s, logits).Token; got != 1 {
		t.Fatalf("presence after one 0: %d, want 1", got)
	}
	s.Accept(1)
	if got := mustSample(t, s, logits).Token; got != 0 {
		t.Fatalf("presence after 0 and 1: %d, want 0", got)
	}
	s.Accept(0)
	s.Accept(0)
	if got := mustSample(t, s, logits).Token; got != 0 {
		t.Fatalf("presence counts once: %d, want 0", got)
	}
	s.Reset()
	s.Accept(1)
	if got := mustSample(t, s, logits).Token; got != 0 {
		t.Fatalf("after Reset: %d, want 0", got)
	}
	s.Reset()
	s.Accept(0)
	if got := mustSample(t, s, logits).Token; got != 1 {
		t.Fatalf("after Reset and replay: %d, want 1", got)
	}

	// Frequency: per occurrence. 2.0 − 0.2·n against 1.7.
	s = mustNew(t, Params{FrequencyPenalty: 0.2})
	for n, want := range []int{0, 0, 1, 1} {
		if got := mustSample(t, s, logits).Token; got != want {
			t.Fatalf("frequency after %d × token 0: %d, want %d", n, got, want)
		}
		s.Accept(0)
	}
	s.Reset()
	if got := mustSample(t, s, logits).Token; got != 0 {
		t.Fatalf("frequency after Reset: %d, want 0", got)
	}

	// Negative penalties favour repeats; presence and frequency add up.
	s = mustNew(t, Params{PresencePenalty: -2, FrequencyPenalty: -1})
	s.Accept(3)
	if got := mustSample(t, s, logits).Token; got != 0 {
		t.Fatalf("-1 + 2 + 1 ties with 2: %d, want 0", got)
	}
	s.Accept(3)
	if got := mustSample(t, s, logits).Token; got != 3 {
		t.Fatalf("-1 + 2 + 2 > 2: %d, want 3", got)
	}

	// With sampling: a heavy presence penalty on the two best tokens at a
	// low temperature moves the draws to token 2; tokens outside the
	// vocabulary and negative ids are ignored.
	s = mustNew(t, Params{Temperature: 0.05, TopP: 1, PresencePenalty: 2, FrequencyPenalty: 2, Seed: 1, HasSeed: true})
	s.Accept(0)
	s.Accept(1)
	s.Accept(-3)
	s.Accept(1 << 40)
	s.Accept(500)
	if got := support(drawCounts(t, s, logits, 1000)); !slices.Equal(got, []int{2}) {
		t.Fatalf("penalized sampling drew %v, want [2]", got)
	}
	// And the distribution matches the reference with penalties.
	p := Params{Temperature: 1, TopP: 0.9, PresencePenalty: 0.4, FrequencyPenalty: 0.3, Seed: 5, HasSeed: true}
	s = mustNew(t, p)
	hist := map[int]int{0: 3, 2: 1}
	for tok, c := range hist {
		for range c {
			s.Accept(tok)
		}
	}
	checkFreq(t, "penalized distribution", drawCounts(t, s, logits, 100000), refDist(logits, p, hist), 4)
}

func TestResetKeepsPRNG(t *testing.T) {
	logits := normalLogits(100, 1, 9)
	p := Params{Temperature: 1, TopP: 1, PresencePenalty: 0.5, Seed: 77, HasSeed: true}
	a, b := mustNew(t, p), mustNew(t, p)
	for range 5 {
		ta, tb := mustSample(t, a, logits).Token, mustSample(t, b, logits).Token
		a.Accept(ta)
		b.Accept(tb)
	}
	// b is preempted: Reset and replay its history.
	b.Reset()
	for _, tok := range a.hTok {
		for range a.hCnt[a.hIndex[tok]] {
			b.Accept(int(tok))
		}
	}
	for range 20 {
		ta, tb := mustSample(t, a, logits).Token, mustSample(t, b, logits).Token
		if ta != tb {
			t.Fatal("preempted sequence diverged after Reset and replay")
		}
		a.Accept(ta)
		b.Accept(tb)
	}
}

// rawLogSoftmax is the float64 reference log_softmax.
func rawLogSoftmax(x []float32) []float64 {
	m := math.Inf(-1)
	for _, v := range x {
		if v == v {
			m = max(m, float64(v))
		}
	}
	z := 0.0
	for _, v := range x {
		if v == v {
			z += math.Exp(float64(v) - m)
		}
	}
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v) - m - math.Log(z)
		if v != v {
			out[i] = math.Inf(-1)
		}
	}
	return out
}

func TestLogprobs(t *testing.T) {
	logits := normalLogits(1000, 1, 11)
	logits[17] = nan
	logits[100], logits[200] = 3.5, 3.5 // a tie inside Top
	want := rawLogSoftmax(logits)
	for _, p := range []Params{
		{Logprobs: true},
		{Logprobs: true, TopLogprobs: 20},
		{Logprobs: true, TopLogprobs: 5, Temperature: 1, TopP: 1},
		{Logprobs: true, TopLogprobs: 3, Temperature: 0.3, TopP: 0.9, TopK: 10},
		{Logprobs: true, TopLogprobs: 7, Temperature: 1.5, MinP: 0.1, PresencePenalty: 2, FrequencyPenalty: 1},
		{Logprobs: true, TopLogprobs: 1, Temperature: 1, TopK: 100, TopP: 0.5, PresencePenalty: -2},
	} {
		p.Seed, p.HasSeed = 3, true
		s := mustNew(t, p)
		for range 50 {
			r := mustSample(t, s, logits)
			s.Accept(r.Token)
			if d := math.Abs(float64(r.Logprob) - want[r.Token]); !(d <= 1e-6) {
				t.Fatalf("%+v: logprob of %d = %v, want %v", p, r.Token, r.Logprob, want[r.Token])
			}
			if len(r.Top) != p.TopLogprobs {
				t.Fatalf("%+v: %d top logprobs, want %d", p, len(r.Top), p.TopLogprobs)
			}
			for j, tl := range r.Top {
				if d := math.Abs(float64(tl.Logprob) - want[tl.ID]); !(d <= 1e-6) {
					t.Fatalf("%+v: top logprob of %d = %v, want %v", p, tl.ID, tl.Logprob, want[tl.ID])
				}
				if j > 0 {
					prev := r.Top[j-1]
					if want[prev.ID] < want[tl.ID] || want[prev.ID] == want[tl.ID] && prev.ID > tl.ID {
						t.Fatalf("%+v: Top not sorted: %v", p, r.Top)
					}
				}
			}
			// The reference's best tokens, ties by id.
			ids := make([]int, len(logits))
			for i := range ids {
				ids[i] = i
			}
			slices.SortStableFunc(ids, func(a, b int) int { return cmp.Compare(want[b], want[a]) })
			for j, tl := range r.Top {
				if tl.ID != ids[j] {
					t.Fatalf("%+v: Top[%d] = %d, want %d", p, j, tl.ID, ids[j])
				}
			}
		}
	}
	// Without Logprobs nothing is reported.
	s := mustNew(t, Params{Temperature: 1})
	if r := mustSample(t, s, logits); r.Logprob != 0 || r.Top != nil {
		t.Fatalf("logprobs reported without Logprobs: %+v", r)
	}
	// Fewer tokens than TopLogprobs.
	s = mustNew(t, Params{Logprobs: true, TopLogprobs: 20})
	r := mustSample(t, s, []float32{1, 2, nan})
	if len(r.Top) != 3 || r.Top[0].ID != 1 || r.Top[1].ID != 0 || r.Top[2].ID != 2 || !math.IsInf(float64(r.Top[2].Logprob), -1) {
		t.Fatalf("small vocabulary Top: %+v", r.Top)
	}
}

func TestValidation(t *testing.T) {
	for _, c := range []struct {
		p     Params
		field string
	}{
		{Params{Temperature: -0.1, TopP: 1}, "Temperature"},
		{Params{Temperature: math.NaN(), TopP: 1}, "Temperature"},
		{Params{Temperature: math.Inf(1), TopP: 1}, "Temperature"},
		{Params{TopP: 0}, "TopP"},
		{Params{TopP: 1.01}, "TopP"},
		{Params{TopP: -0.5}, "TopP"},
		{Params{TopP: math.NaN()}, "TopP"},
		{Params{TopP: 1, TopK: -1}, "TopK"},
		{Params{TopP: 1, MinP: -0.01}, "MinP"},
		{Params{TopP: 1, MinP: 1.5}, "MinP"},
		{Params{TopP: 1, MinP: math.NaN()}, "MinP"},
		{Params{TopP: 1, PresencePenalty: 2.5}, "PresencePenalty"},
		{Params{TopP: 1, PresencePenalty: -2.01}, "PresencePenalty"},
		{Params{TopP: 1, FrequencyPenalty: 3}, "FrequencyPenalty"},
		{Params{TopP: 1, FrequencyPenalty: math.NaN()}, "FrequencyPenalty"},
		{Params{TopP: 1, Logprobs: true, TopLogprobs: 21}, "TopLogprobs"},
		{Params{TopP: 1, Logprobs: true, TopLogprobs: -1}, "TopLogprobs"},
		{Params{TopP: 1, TopLogprobs: 2}, "TopLogprobs"},
	} {
		_, err := New(c.p)
		if err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%+v: error %v, want one naming %s", c.p, err, c.field)
		}
	}
	for _, p := range []Params{
		{TopP: 1},
		{Temperature: 2, TopP: 1e-9, TopK: 1 << 30, MinP: 1, PresencePenalty: -2, FrequencyPenalty: 2, Logprobs: true, TopLogprobs: 20},
	} {
		if _, err := New(p); err != nil {
			t.Errorf("%+v: %v", p, err)
		}
	}
}

func TestNonFinite(t *testing.T) {
	for _, p := range []Params{{TopP: 1}, {Temperature: 1, TopP: 0.9, Logprobs: true}, {Temperature: 1, TopP: 1, TopK: 2}} {
		s := mustNew(t, p)
		for _, logits := range [][]float32{nil, {}, {ninf}, {ninf, ninf}, {nan, nan}, {nan, ninf}, {inf, inf}, {inf, nan, ninf}} {
			if _, err := s.Sample(logits); err == nil {
				t.Errorf("%+v: %v: no error", p, logits)
			}
		}
	}
	// Some NaN and −Inf: ignored.
	logits := []float32{nan, 1, ninf, 0.5, nan, 0.2}
	for _, path := range paths {
		forcePath(t, path.insertMax, path.compactMax, path.refine)
		for i, p := range []Params{{Temperature: 1, TopP: 1}, {Temperature: 1, TopP: 0.95}, {Temperature: 1, TopP: 1, TopK: 4}, {Temperature: 1, TopP: 0.99, TopK: 5, MinP: 0.01}} {
			p.Seed, p.HasSeed = uint64(i), true
			s := mustNew(t, p)
			checkFreq(t, path.name+" NaN", drawCounts(t, s, logits, 30000), refDist(logits, p, nil), 4.5)
		}
	}
	// +Inf: uniform over the +Inf tokens; logprobs −ln 2 for them.
	logits = []float32{1, inf, nan, inf, 5}
	s := mustNew(t, Params{Temperature: 1, TopP: 1, Seed: 1, HasSeed: true, Logprobs: true, TopLogprobs: 3})
	checkFreq(t, "+Inf", drawCounts(t, s, logits, 20000), []float64{0, 0.5, 0, 0.5, 0}, 4)
	r := mustSample(t, s, logits)
	if math.Abs(float64(r.Logprob)+math.Ln2) > 1e-6 || r.Top[0].ID != 1 || r.Top[1].ID != 3 || r.Top[2].ID != 4 || !math.IsInf(float64(r.Top[2].Logprob), -1) {
		t.Fatalf("+Inf logprobs: %+v", r)
	}
	if got := mustSample(t, mustNew(t, Params{}), logits).Token; got != 1 {
		t.Fatalf("greedy with +Inf: %d, want 1", got)
	}
}

func TestLogitsUnchanged(t *testing.T) {
	logits := normalLogits(5000, 2, 4)
	logits[3], logits[4], logits[5] = nan, inf, ninf
	orig := slices.Clone(logits)
	for _, p := range []Params{
		{Temperature: 1, TopP: 0.9, PresencePenalty: 1, FrequencyPenalty: 1, Logprobs: true, TopLogprobs: 5},
		{Temperature: 0.5, TopP: 1, TopK: 100, MinP: 0.1, PresencePenalty: -1},
		{TopP: 1, FrequencyPenalty: 2},
	} {
		s := mustNew(t, p)
		for i := range 20 {
			s.Accept(i)
			s.Accept(4)
			mustSample(t, s, logits)
		}
		for i := range logits {
			if math.Float32bits(logits[i]) != math.Float32bits(orig[i]) {
				t.Fatalf("%+v: logits[%d] changed from %v to %v", p, i, orig[i], logits[i])
			}
		}
	}
}

// TestRealistic checks, on a full-size vocabulary, that every drawn token
// is in the reference's support and that the most likely tokens come out
// at the reference's rates.
func TestRealistic(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	for _, logits := range [][]float32{realisticLogits(201088), normalLogits(201088, 2, 8)} {
		for i, p := range []Params{
			{Temperature: 1, TopP: 0.9},
			{Temperature: 0.7, TopP: 1, TopK: 5000},
			{Temperature: 1.2, TopP: 0.95, MinP: 0.001},
		} {
			p.Seed, p.HasSeed = uint64(i), true
			s := mustNew(t, p)
			want := refDist(logits, p, nil)
			counts := drawCounts(t, s, logits, 300)
			for tok, c := range counts {
				if c > 0 && want[tok] == 0 {
					t.Fatalf("%+v: drew token %d outside the reference support", p, tok)
				}
			}
			// Aggregate the reference's top 20 tokens and the rest.
			ids := make([]int, len(want))
			for j := range ids {
				ids[j] = j
			}
			slices.SortFunc(ids, func(a, b int) int { return cmp.Compare(want[b], want[a]) })
			agg, aggWant := make([]int, 21), make([]float64, 21)
			for j, tok := range ids {
				b := min(j, 20)
				agg[b] += counts[tok]
				aggWant[b] += want[tok]
			}
			checkFreq(t, "realistic", agg, aggWant, 5)
		}
	}
}

func TestZeroAllocs(t *testing.T) {
	logits := realisticLogits(201088)
	for _, p := range []Params{
		{TopP: 1},
		{Temperature: 1, TopP: 0.9},
		{Temperature: 1, TopP: 1, Logprobs: true, TopLogprobs: 20},
		{Temperature: 0.8, TopP: 0.95, TopK: 40, MinP: 0.05, PresencePenalty: 0.5, FrequencyPenalty: 0.5},
		{Temperature: 0.8, TopP: 0.95, TopK: 500},
		{Temperature: 0.8, TopP: 0.95, TopK: 50000, Logprobs: true, TopLogprobs: 3},
	} {
		p.Seed, p.HasSeed = 1, true
		s := mustNew(t, p)
		for i := range 30 {
			s.Accept(i * 1000)
		}
		mustSample(t, s, logits) // warm up the scratch buffers
		mustSample(t, s, logits)
		if a := testing.AllocsPerRun(5, func() { mustSample(t, s, logits) }); a != 0 {
			t.Errorf("%+v: %v allocations per Sample", p, a)
		}
	}
}

func TestExp(t *testing.T) {
	if expNeg(0) != 1 || expNeg(math.Copysign(0, -1)) != 1 || expNeg(math.Inf(-1)) != 0 || expNeg(-746) != 0 {
		t.Fatal("expNeg special values")
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2000000 {
		var x float64
		switch i % 4 {
		case 0:
			x = -r.Float64() * 746
		case 1:
			x = -r.Float64() * 40
		case 2:
			x = -r.Float64() * 1e-3
		default:
			x = -708 - r.Float64()*40 // the gradual underflow
		}
		got, want := expNeg(x), math.Exp(x)
		if want == 0 {
			if got != 0 {
				t.Fatalf("expNeg(%v) = %v, want 0", x, got)
			}
			continue
		}
		ulp := math.Nextafter(want, math.Inf(1)) - want
		if math.Abs(got-want) > 2*ulp {
			t.Fatalf("expNeg(%v) = %v, math.Exp = %v (%.1f ulp)", x, got, want, math.Abs(got-want)/ulp)
		}
	}
	// Pin a few exact bit patterns: the function must be identical on every
	// platform.
	sum := uint64(0)
	for i := range 10000 {
		sum = sum*31 + math.Float64bits(expNeg(-float64(i)*0.0731))
	}
	if sum != 0x59feb8f212abb2d7 {
		t.Fatalf("expNeg checksum %#x: the exponential changed", sum)
	}
}

func benchSampler(b *testing.B, p Params, logits []float32) {
	p.Seed, p.HasSeed = 1, true
	if p.TopP == 0 {
		p.TopP = 1
	}
	s, err := New(p)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.Sample(logits); err != nil { // size the scratch buffers
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Sample(logits); err != nil {
			b.Fatal(err)
		}
	}
}

const vocab = 201088

func BenchmarkGreedy(b *testing.B) {
	benchSampler(b, Params{}, realisticLogits(vocab))
}

func BenchmarkTopP(b *testing.B) {
	benchSampler(b, Params{Temperature: 1, TopP: 0.9}, realisticLogits(vocab))
}

func BenchmarkTopLogprobs(b *testing.B) {
	benchSampler(b, Params{Temperature: 1, TopP: 0.9, Logprobs: true, TopLogprobs: 20}, realisticLogits(vocab))
}

// The variants below show the other paths' costs.

func BenchmarkTopPFlat(b *testing.B) {
	benchSampler(b, Params{Temperature: 1, TopP: 0.9}, normalLogits(vocab, 2, 3))
}

func BenchmarkPlain(b *testing.B) {
	benchSampler(b, Params{Temperature: 1, TopP: 1}, realisticLogits(vocab))
}

func BenchmarkTopK50(b *testing.B) {
	benchSampler(b, Params{Temperature: 0.8, TopP: 0.95, TopK: 50}, realisticLogits(vocab))
}

func BenchmarkTopK1000(b *testing.B) {
	benchSampler(b, Params{Temperature: 0.8, TopP: 0.95, TopK: 1000}, realisticLogits(vocab))
}

func BenchmarkTopK20000(b *testing.B) {
	benchSampler(b, Params{Temperature: 0.8, TopP: 0.95, TopK: 20000}, realisticLogits(vocab))
}

func BenchmarkMinP(b *testing.B) {
	benchSampler(b, Params{Temperature: 1, TopP: 1, MinP: 0.05}, realisticLogits(vocab))
}

func BenchmarkGreedyLogprobs(b *testing.B) {
	benchSampler(b, Params{Logprobs: true, TopLogprobs: 5}, realisticLogits(vocab))
}

func BenchmarkPenalties(b *testing.B) {
	logits := realisticLogits(vocab)
	s, err := New(Params{Temperature: 1, TopP: 0.9, PresencePenalty: 0.5, FrequencyPenalty: 0.5, Seed: 1, HasSeed: true})
	if err != nil {
		b.Fatal(err)
	}
	for i := range 500 {
		s.Accept(i * 397 % vocab)
	}
	if _, err := s.Sample(logits); err != nil { // size the scratch buffers
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Sample(logits); err != nil {
			b.Fatal(err)
		}
	}
}

// TestMassPassMatchesExpNeg checks the invariant the dense path relies on:
// massPass (with its hand-inlined exponential) and the revisiting passes
// (with expNeg and the logit windows) see exactly the same tokens and
// values, so every bucket gathered again sums to its histogram entry, bit
// for bit.
func TestMassPassMatchesExpNeg(t *testing.T) {
	for _, c := range []struct {
		temp, minP float64
		sigma      float64
	}{
		{1, 0, 2}, {0.3, 0, 3}, {7, 0, 1}, {1, 0.001, 2}, {1e-30, 0, 1}, {1e6, 0, 5}, {0.05, 0.2, 10}, {1e-310, 0, 1},
	} {
		x := normalLogits(20000, c.sigma, 3)
		x[5], x[6], x[7] = nan, ninf, float32(math.Copysign(0, -1))
		s := mustNew(t, Params{Temperature: c.temp, TopP: 1, MinP: c.minP})
		xm, _ := scanMax(x)
		f := denseFilter{xm: float64(xm), invT: s.invT, temp: c.temp, aLow: expFastMin, minP: c.minP}
		if c.minP > 0 {
			f.aLow = max(f.aLow, math.Log(c.minP)-prefilterMargin)
		}
		clear(s.hist[:])
		massPass(x, &f, &s.hist, &s.block)
		// Reference: expNeg on every token.
		var ref [massBuckets]float64
		for _, v := range x {
			a := f.exponent(v)
			if !(a >= f.aLow) {
				continue
			}
			if e := expNeg(a); e >= c.minP {
				ref[massBucket(e)] += e
			}
		}
		for b := range ref {
			if ref[b] != s.hist[b] {
				t.Fatalf("%+v: bucket %d: massPass %v, expNeg %v", c, b, s.hist[b], ref[b])
			}
			if ref[b] == 0 {
				continue
			}
			sum := 0.0
			for _, en := range s.gatherBucket(x, &f, b) {
				sum += en.v
			}
			if sum != ref[b] {
				t.Fatalf("%+v: bucket %d gathered %v, histogram %v", c, b, sum, ref[b])
			}
		}
	}
}

func TestKeys(t *testing.T) {
	vals := []float32{ninf, -math.MaxFloat32, -3, -1e-40, float32(math.Copysign(0, -1)), 0, 1e-40, 2.5, math.MaxFloat32, inf}
	for i, v := range vals {
		if keyFloat(sortKey(v)) != v || math.Signbit(float64(keyFloat(sortKey(v)))) != math.Signbit(float64(v)) {
			t.Fatalf("keyFloat(sortKey(%v)) = %v", v, keyFloat(sortKey(v)))
		}
		if i > 0 && !(sortKey(vals[i-1]) < sortKey(v)) {
			t.Fatalf("sortKey not increasing at %v", v)
		}
	}
	if key32(float32(math.Copysign(0, -1))) != key32(0) || key32(nan) != key32(ninf) || key32(-nan) != key32(ninf) {
		t.Fatal("key32 does not merge the zeros, or NaN with −Inf")
	}
	klo, span := keyRange(0, 1)
	for _, v := range []float32{float32(math.Copysign(0, -1)), 0, 1} {
		if sortKey(v)-klo > span {
			t.Fatalf("keyRange(0, 1) misses %v", v)
		}
	}
	klo, span = keyRange(-1, 0)
	if sortKey(0)-klo > span || sortKey(nan)-klo <= span || sortKey(-nan)-klo <= span {
		t.Fatal("keyRange(-1, 0)")
	}
}

// TestTopKEdges: ties across −0 and +0, and cuts that fall among −Inf and
// NaN logits.
func TestTopKEdges(t *testing.T) {
	negZero := float32(math.Copysign(0, -1))
	for _, path := range paths {
		forcePath(t, path.insertMax, path.compactMax, path.refine)
		for _, c := range []struct {
			logits []float32
			k      int
			want   []int
		}{
			{[]float32{-1, negZero, 0, -2}, 1, []int{1}},
			{[]float32{-1, 0, negZero, -2}, 1, []int{1}},
			{[]float32{-1, 0, negZero, -2}, 2, []int{1, 2}},
			{[]float32{1, ninf, nan, ninf, 2}, 3, []int{0, 4}},
			{[]float32{nan, ninf, 1, nan, 2}, 4, []int{2, 4}},
			{[]float32{5, 5, 5, 5, 5, 1}, 3, []int{0, 1, 2}},
		} {
			s := mustNew(t, Params{Temperature: 3, TopK: c.k, Seed: 1, HasSeed: true})
			if got := support(drawCounts(t, s, c.logits, 3000)); !slices.Equal(got, c.want) {
				t.Errorf("%s: %v top_k %d: drew %v, want %v", path.name, c.logits, c.k, got, c.want)
			}
		}
	}
}

func TestExtremeTemperatures(t *testing.T) {
	logits := []float32{1, 3, 3, 2}
	for _, temp := range []float64{1e-30, 1e-310} {
		s := mustNew(t, Params{Temperature: temp, TopP: 1, Seed: 1, HasSeed: true})
		checkFreq(t, "tiny temperature", drawCounts(t, s, logits, 20000), []float64{0, 0.5, 0.5, 0}, 4)
	}
	s := mustNew(t, Params{Temperature: 1e9, TopP: 1, Seed: 1, HasSeed: true})
	checkFreq(t, "huge temperature", drawCounts(t, s, logits, 40000), []float64{0.25, 0.25, 0.25, 0.25}, 4)
}
