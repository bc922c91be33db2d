package sample

import (
	"cmp"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// randomAllow allows each of n tokens with probability p, and tokens
// past n in the last word too (they do not exist; the sampler must not
// care).
func randomAllow(n int, p float64, seed uint64) []uint32 {
	r := rand.New(rand.NewPCG(seed, 3))
	a := make([]uint32, (n+31)/32)
	for t := range len(a) * 32 {
		if r.Float64() < p {
			a[t/32] |= 1 << (t % 32)
		}
	}
	return a
}

// only is the bitset of ids over n tokens.
func only(n int, ids ...int) []uint32 {
	a := make([]uint32, (n+31)/32)
	for _, id := range ids {
		a[id/32] |= 1 << (id % 32)
	}
	return a
}

// masked is logits with the tokens allow denies at −Inf: the reference
// of what SampleAllowed samples from.
func masked(logits []float32, allow []uint32) []float32 {
	out := slices.Clone(logits)
	for t := range out {
		if !allowed(allow, t) {
			out[t] = ninf
		}
	}
	return out
}

func mustSampleAllowed(t testing.TB, s *Sampler, logits []float32, allow []uint32) Result {
	t.Helper()
	r, err := s.SampleAllowed(logits, allow)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// The word-at-a-time mask, vector and portable, equals the per-token
// definition bit for bit (NaN payloads, −0 and infinities pass through
// allowed tokens unchanged), for every kind of word, vocabularies that end
// inside a word, and bitsets shorter and longer than the vocabulary.
func TestMaskLogits(t *testing.T) {
	for _, n := range []int{1, 31, 32, 33, 100, 1000, 1024, 4099} {
		logits := normalLogits(n, 1, uint64(n))
		for i, v := range []float32{math.Float32frombits(0x7fc00123), float32(math.Copysign(0, -1)), inf, ninf, nan} {
			if j := 7 * i; j < n {
				logits[j] = v
			}
		}
		for _, words := range []int{0, 1, (n + 31) / 32, (n+31)/32 + 2, n/32 - 1} {
			if words < 0 {
				continue
			}
			allow := randomAllow(words*32, 0.5, uint64(words))
			if len(allow) > 3 { // an all-allowed and an all-denied word
				allow[1], allow[2] = math.MaxUint32, 0
			}
			got := make([]float32, n)
			maskLogits(got, logits, allow)
			want := masked(logits, allow)
			whole := min(n/32, len(allow))
			portable := slices.Clone(want)
			maskWords(portable, logits, allow[:whole])
			for i := range got {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("n %d, %d words: token %d is %v, want %v", n, words, i, got[i], want[i])
				}
				if math.Float32bits(portable[i]) != math.Float32bits(want[i]) {
					t.Fatalf("n %d, %d words: maskWords gives token %d %v, want %v", n, words, i, portable[i], want[i])
				}
			}
		}
	}
}

// Greedy takes the best allowed token, lowest id on ties, whatever the
// best disallowed ones are.
func TestAllowedGreedy(t *testing.T) {
	logits := normalLogits(5000, 2, 1)
	logits[10], logits[20] = 50, 40 // the best two, denied below
	allow := randomAllow(len(logits), 0.3, 2)
	allow[0] &^= 1<<10 | 1<<20
	want, wantV := -1, ninf
	for i, v := range logits {
		if allowed(allow, i) && v > wantV {
			want, wantV = i, v
		}
	}
	s := mustNew(t, Params{})
	if r := mustSampleAllowed(t, s, logits, allow); r.Token != want {
		t.Fatalf("greedy drew %d, want %d", r.Token, want)
	}
	// A tie among allowed tokens: the lower id; a higher denied logit
	// elsewhere does not count.
	logits = []float32{9, 3, 5, 5, 1, 5}
	if r := mustSampleAllowed(t, s, logits, only(6, 1, 3, 5)); r.Token != 3 {
		t.Fatalf("greedy tie drew %d, want 3", r.Token)
	}
	// Penalties apply to the allowed tokens: 3 penalised below 5.
	s = mustNew(t, Params{TopP: 1, PresencePenalty: 1})
	s.Accept(3)
	if r := mustSampleAllowed(t, s, logits, only(6, 1, 3, 5)); r.Token != 5 {
		t.Fatalf("greedy with a penalty drew %d, want 5", r.Token)
	}
}

// A single allowed token is drawn every time, with logprob 0, however
// unlikely the model finds it and whatever the truncation parameters.
func TestAllowedSingle(t *testing.T) {
	logits := realisticLogits(20000)
	const forced = 12345
	logits[forced] = -80
	allow := only(len(logits), forced)
	for i, p := range []Params{
		{Temperature: 1, TopP: 1},
		{Temperature: 1, TopP: 0.5},
		{Temperature: 1.5, TopP: 0.9, TopK: 5, MinP: 0.2},
		{Temperature: 0.3, TopP: 1, TopK: 100, PresencePenalty: -2, FrequencyPenalty: 2},
		{TopP: 1},
	} {
		p.Seed, p.HasSeed, p.Logprobs, p.TopLogprobs = uint64(i), true, true, 5
		s := mustNew(t, p)
		for range 200 {
			r := mustSampleAllowed(t, s, logits, allow)
			if r.Token != forced || r.Logprob != 0 || len(r.Top) != 1 || r.Top[0] != (TokenLogprob{forced, 0}) {
				t.Fatalf("%+v: drew %+v, want the forced token %d with logprob 0 alone in Top", p, r, forced)
			}
			s.Accept(r.Token)
		}
	}
}

// Seeded draws only ever return allowed tokens, at the rates of the
// distribution restricted to them (the same filters over the masked
// logits), on every path of the sampler.
func TestAllowedDraws(t *testing.T) {
	logits := normalLogits(3000, 1.5, 5)
	allow := randomAllow(len(logits), 0.5, 6)
	want0 := masked(logits, allow)
	draws := 8000
	if raceEnabled {
		draws = 1600
	}
	for _, path := range paths {
		forcePath(t, path.insertMax, path.compactMax, path.refine)
		for i, p := range []Params{
			{Temperature: 1, TopP: 1},
			{Temperature: 0.7, TopP: 0.9},
			{Temperature: 1, TopP: 1, TopK: 20},
			{Temperature: 1.2, TopP: 0.95, TopK: 2000, MinP: 0.01},
		} {
			p.Seed, p.HasSeed = uint64(i), true
			s := mustNew(t, p)
			counts := make([]int, len(logits))
			for range draws {
				r := mustSampleAllowed(t, s, logits, allow)
				if !allowed(allow, r.Token) {
					t.Fatalf("%s %+v: drew the denied token %d", path.name, p, r.Token)
				}
				counts[r.Token]++
			}
			// The most likely tokens at their rates, the rest together.
			want := refDist(want0, p, nil)
			ids := make([]int, len(want))
			for j := range ids {
				ids[j] = j
			}
			slices.SortFunc(ids, func(a, b int) int { return cmp.Compare(want[b], want[a]) })
			agg, aggWant := make([]int, 11), make([]float64, 11)
			for j, tok := range ids {
				agg[min(j, 10)] += counts[tok]
				aggWant[min(j, 10)] += want[tok]
			}
			checkFreq(t, path.name+" allowed", agg, aggWant, 4.5)
		}
	}
}

// Logprobs are those of the constrained distribution: the log-softmax of
// the allowed tokens' raw logits, so they sum to 1 over the allowed set,
// and Top lists allowed tokens only.
func TestAllowedLogprobs(t *testing.T) {
	logits := normalLogits(2000, 2, 7)
	ids := []int{3, 64, 65, 700, 1999, 1500, 1200, 1000}
	allow := only(len(logits), ids...)
	want := rawLogSoftmax(masked(logits, allow))
	for i, p := range []Params{
		{Logprobs: true, TopLogprobs: 20},
		{Temperature: 1, TopP: 0.8, Logprobs: true, TopLogprobs: 20, FrequencyPenalty: 1},
	} {
		p.Seed, p.HasSeed = uint64(i), true
		s := mustNew(t, p)
		for range 50 {
			r := mustSampleAllowed(t, s, logits, allow)
			s.Accept(r.Token)
			if d := math.Abs(float64(r.Logprob) - want[r.Token]); !(d <= 1e-6) {
				t.Fatalf("%+v: logprob of %d = %v, want %v", p, r.Token, r.Logprob, want[r.Token])
			}
			if len(r.Top) != len(ids) {
				t.Fatalf("%+v: %d top logprobs, want the %d allowed tokens", p, len(r.Top), len(ids))
			}
			sum := 0.0
			for j, tl := range r.Top {
				if !allowed(allow, tl.ID) || math.Abs(float64(tl.Logprob)-want[tl.ID]) > 1e-6 {
					t.Fatalf("%+v: top %d is %+v, want an allowed token with logprob %v", p, j, tl, want[tl.ID])
				}
				if j > 0 && r.Top[j-1].Logprob < tl.Logprob {
					t.Fatalf("%+v: Top not sorted: %v", p, r.Top)
				}
				sum += math.Exp(float64(tl.Logprob))
			}
			if math.Abs(sum-1) > 1e-5 {
				t.Fatalf("%+v: the allowed tokens' probabilities sum to %v", p, sum)
			}
		}
	}
	// Fewer allowed tokens than TopLogprobs, one of them −Inf: it is
	// still listed (allowed, with probability 0), the denied ones never.
	s := mustNew(t, Params{Logprobs: true, TopLogprobs: 4})
	r := mustSampleAllowed(t, s, []float32{1, 2, ninf, 3, 0}, only(5, 0, 2))
	if r.Token != 0 || r.Logprob != 0 || len(r.Top) != 2 || r.Top[0].ID != 0 || r.Top[1].ID != 2 || !math.IsInf(float64(r.Top[1].Logprob), -1) {
		t.Fatalf("small set: %+v", r)
	}
}

// A nil set is Sample, bit for bit, and so is a set that allows
// everything: the same tokens, logprobs and random stream.
func TestAllowedNilIsSample(t *testing.T) {
	logits := realisticLogits(201088)
	all := make([]uint32, 201088/32)
	for i := range all {
		all[i] = math.MaxUint32
	}
	for _, allow := range [][]uint32{nil, all} {
		for i, p := range []Params{
			{TopP: 1, Logprobs: true, TopLogprobs: 5},
			{Temperature: 1, TopP: 0.9, Logprobs: true, TopLogprobs: 3},
			{Temperature: 0.8, TopP: 0.95, TopK: 40, MinP: 0.05, PresencePenalty: 0.5, FrequencyPenalty: 0.5},
		} {
			p.Seed, p.HasSeed = uint64(i), true
			a, b := mustNew(t, p), mustNew(t, p)
			for range 20 {
				ra := mustSample(t, a, logits)
				rb := mustSampleAllowed(t, b, logits, allow)
				if ra.Token != rb.Token || math.Float32bits(ra.Logprob) != math.Float32bits(rb.Logprob) || !slices.Equal(ra.Top, rb.Top) {
					t.Fatalf("%+v, allow nil %v: Sample %+v, SampleAllowed %+v", p, allow == nil, ra, rb)
				}
				a.Accept(ra.Token)
				b.Accept(rb.Token)
			}
		}
	}
}

// Sets with no allowed finite logit are errors; tokens past a short set
// are denied, bits past the vocabulary in a long one are ignored; the
// caller's logits are never written.
func TestAllowedEdges(t *testing.T) {
	logits := []float32{1, 2, nan, ninf, 5, inf}
	orig := slices.Clone(logits)
	for _, p := range []Params{{TopP: 1}, {Temperature: 1, TopP: 0.9, Logprobs: true}} {
		s := mustNew(t, p)
		for _, allow := range [][]uint32{{}, {0}, only(6, 2, 3), {1 << 2}} {
			if _, err := s.SampleAllowed(logits, allow); !errors.Is(err, ErrNoneAllowed) {
				t.Errorf("%+v: allow %b: error %v, want ErrNoneAllowed", p, allow, err)
			}
		}
		// No finite logit at all is the forward pass's fault, not the set's.
		if _, err := s.SampleAllowed([]float32{nan, ninf}, []uint32{3}); err == nil || errors.Is(err, ErrNoneAllowed) {
			t.Errorf("%+v: no finite logit: error %v", p, err)
		}
		if _, err := s.SampleAllowed(nil, []uint32{1}); err == nil {
			t.Errorf("%+v: empty logits: no error", p)
		}
	}
	s := mustNew(t, Params{})
	// Token 33 is past a one-word set: the best allowed is 1.
	long := []float32{0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9}
	if r := mustSampleAllowed(t, s, long, []uint32{math.MaxUint32}); r.Token != 1 {
		t.Errorf("a short set: drew %d, want 1", r.Token)
	}
	if r := mustSampleAllowed(t, s, logits[:2], []uint32{math.MaxUint32, math.MaxUint32}); r.Token != 1 {
		t.Errorf("a long set: drew %d, want 1", r.Token)
	}
	// +Inf allowed: the limit, as in Sample.
	if r := mustSampleAllowed(t, s, logits, only(6, 0, 5)); r.Token != 5 {
		t.Errorf("+Inf allowed: drew %d, want 5", r.Token)
	}
	for i := range logits {
		if math.Float32bits(logits[i]) != math.Float32bits(orig[i]) {
			t.Fatalf("logits[%d] changed from %v to %v", i, orig[i], logits[i])
		}
	}
}

func TestAllowedZeroAllocs(t *testing.T) {
	logits := realisticLogits(201088)
	allow := randomAllow(len(logits), 0.5, 9)
	for _, p := range []Params{
		{TopP: 1, Logprobs: true, TopLogprobs: 20},
		{Temperature: 1, TopP: 0.9, PresencePenalty: 0.5},
	} {
		p.Seed, p.HasSeed = 1, true
		s := mustNew(t, p)
		s.Accept(5)
		mustSampleAllowed(t, s, logits, allow) // warm up the scratch buffers
		if a := testing.AllocsPerRun(5, func() { mustSampleAllowed(t, s, logits, allow) }); a != 0 {
			t.Errorf("%+v: %v allocations per SampleAllowed", p, a)
		}
	}
}

// benchAllowed is benchSampler through SampleAllowed with allow.
func benchAllowed(b *testing.B, p Params, logits []float32, allow []uint32) {
	p.Seed, p.HasSeed = 1, true
	if p.TopP == 0 {
		p.TopP = 1
	}
	s, err := New(p)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.SampleAllowed(logits, allow); err != nil { // size the scratch buffers
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.SampleAllowed(logits, allow); err != nil {
			b.Fatal(err)
		}
	}
}

// The cost of a set of allowed tokens, against BenchmarkGreedy and
// BenchmarkTopP on the same logits: half the vocabulary allowed at random
// (every word mixed: the mask's slowest case), and half allowed in runs
// (whole words: copies and fills).

func BenchmarkAllowedGreedy(b *testing.B) {
	benchAllowed(b, Params{}, realisticLogits(vocab), randomAllow(vocab, 0.5, 1))
}

func BenchmarkAllowedTopP(b *testing.B) {
	benchAllowed(b, Params{Temperature: 1, TopP: 0.9}, realisticLogits(vocab), randomAllow(vocab, 0.5, 1))
}

func BenchmarkAllowedTopPRuns(b *testing.B) {
	allow := make([]uint32, vocab/32)
	for w := range allow {
		if w/64%2 == 0 {
			allow[w] = math.MaxUint32
		}
	}
	benchAllowed(b, Params{Temperature: 1, TopP: 0.9}, realisticLogits(vocab), allow)
}

func BenchmarkMaskLogits(b *testing.B) {
	logits := realisticLogits(vocab)
	allow := randomAllow(vocab, 0.5, 1)
	dst := make([]float32, vocab)
	for b.Loop() {
		maskLogits(dst, logits, allow)
	}
}
