package wire

import (
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/gptoss/server/shared/step"
)

// roundTrip sends b from the coordinator's encoder to the worker's decoder
// through the bytes NATS would carry, runs exec on the worker's batch, and
// brings the result back into b. It returns the message as the worker saw
// it and the batch the worker's executor ran.
func roundTrip(t *testing.T, enc *StepEncoder, dec *StepDecoder, b *step.Batch, exec func(*step.Batch)) (*Step, step.Batch) {
	t.Helper()
	msg, _ := enc.Encode(b)
	data, err := Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	var got Step
	if err := Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	wb, err := dec.Decode(&got)
	if err != nil {
		t.Fatal(err)
	}
	exec(wb)
	seen := step.Batch{Seqs: slices.Clone(wb.Seqs)}
	data, err = Marshal(dec.Result(got.StepId, 0, wb))
	if err != nil {
		t.Fatal(err)
	}
	var res StepResult
	if err := Unmarshal(data, &res); err != nil {
		t.Fatal(err)
	}
	if err := enc.Decode(b, msg, &res); err != nil {
		t.Fatal(err)
	}
	return &got, seen
}

// sampleAll is a fake executor: every sampling sequence gets a token
// derived from its id and position, with top logprobs when asked.
func sampleAll(b *step.Batch) {
	for i := range b.Seqs {
		st := &b.Seqs[i]
		if !st.Sample {
			continue
		}
		id := int(st.ID)*1000 + st.Pos + len(st.Tokens)
		st.Out = step.Token{ID: id, Logprob: -float32(id % 7)}
		if st.Sampling != nil && st.Sampling.Logprobs {
			for k := range st.Sampling.TopLogprobs {
				st.Out.TopLogprobs = append(st.Out.TopLogprobs, step.TokenLogprob{ID: id + k, Logprob: -float32(k) - 0.25})
			}
		}
	}
}

// sameInput reports whether the worker's batch has the coordinator's
// inputs: ids, tokens, positions, sampling flags and values, block tables.
func sameInput(t *testing.T, want *step.Batch, got step.Batch) {
	t.Helper()
	if len(got.Seqs) != len(want.Seqs) {
		t.Fatalf("worker got %d sequences, want %d", len(got.Seqs), len(want.Seqs))
	}
	for i := range want.Seqs {
		w, g := want.Seqs[i], got.Seqs[i]
		if g.ID != w.ID || !slices.Equal(g.Tokens, w.Tokens) || g.Pos != w.Pos || g.Sample != w.Sample || g.Follow != w.Follow ||
			!slices.Equal(g.Blocks, w.Blocks) || !slices.Equal(g.SlidingBlocks, w.SlidingBlocks) {
			t.Errorf("sequence %d: worker got %+v, want %+v", w.ID, g, w)
		}
		ws := w.Sampling
		if ws != nil && !ws.HasSeed && g.Sampling != nil {
			// Unseeded sequences get their random seed from the encoder,
			// the same for every rank.
			seeded := *ws
			seeded.Seed, seeded.HasSeed = g.Sampling.Seed, true
			ws = &seeded
		}
		if (g.Sampling == nil) != (ws == nil) || (g.Sampling != nil && *g.Sampling != *ws) {
			t.Errorf("sequence %d: worker sampling %+v, want %+v", w.ID, g.Sampling, w.Sampling)
		}
		// The allowed tokens reach the worker exactly (nil stays nil, empty
		// stays empty) when the sequence samples, and not at all otherwise.
		wantAllow := w.Allow
		if !w.Sample {
			wantAllow = nil
		}
		if (g.Allow == nil) != (wantAllow == nil) || !slices.Equal(g.Allow, wantAllow) {
			t.Errorf("sequence %d: worker allow of %d words (nil %v), want %d (nil %v)", w.ID, len(g.Allow), g.Allow == nil,
				len(wantAllow), wantAllow == nil)
		}
	}
}

// A pipelined step's Follow entries reach the worker as such, and an
// unseeded sequence is seeded once, in its first step, with a seed that
// differs between sequences (every rank decodes the same message, so every
// rank draws from the same seed).
func TestFollowAndSeed(t *testing.T) {
	enc, dec := NewStepEncoder(), NewStepDecoder()
	b := &step.Batch{Seqs: []step.Seq{
		{ID: 1, Tokens: []int{5, 6}, Sample: true, Sampling: &step.Sampling{Temperature: 1}, Blocks: []int{0}},
		{ID: 2, Tokens: []int{7}, Sample: true, Sampling: &step.Sampling{Temperature: 1}, Blocks: []int{1}},
	}}
	_, seen := roundTrip(t, enc, dec, b, sampleAll)
	sameInput(t, b, seen)
	s1, s2 := *seen.Seqs[0].Sampling, *seen.Seqs[1].Sampling
	if !s1.HasSeed || !s2.HasSeed || s1.Seed == s2.Seed {
		t.Fatalf("unseeded sequences arrived as %+v and %+v: want a seed each, different", s1, s2)
	}
	b = &step.Batch{Seqs: []step.Seq{
		{ID: 1, Tokens: []int{step.FollowToken}, Pos: 2, Sample: true, Follow: true, Sampling: b.Seqs[0].Sampling, Blocks: []int{0}},
		{ID: 2, Tokens: []int{8}, Pos: 1, Sample: true, Sampling: b.Seqs[1].Sampling, Blocks: []int{1}},
	}}
	msg, seen := roundTrip(t, enc, dec, b, sampleAll)
	if msg.Seqs[0].Sampling != nil || msg.Seqs[1].Sampling != nil {
		t.Fatal("sampling sent twice")
	}
	if !seen.Seqs[0].Follow || seen.Seqs[1].Follow {
		t.Fatalf("follow flags arrived as %v, %v", seen.Seqs[0].Follow, seen.Seqs[1].Follow)
	}
	if *seen.Seqs[0].Sampling != s1 {
		t.Fatalf("the seed changed between steps: %+v, then %+v", s1, *seen.Seqs[0].Sampling)
	}
}

func TestStepCodecRoundTrip(t *testing.T) {
	enc, dec := NewStepEncoder(), NewStepDecoder()
	s1 := &step.Sampling{Temperature: 0.7, TopP: 0.9, TopK: 40, MinP: 0.05, Seed: -5, HasSeed: true,
		PresencePenalty: 0.5, FrequencyPenalty: -0.25, Logprobs: true, TopLogprobs: 3}
	s2 := &step.Sampling{}
	seq := func(id uint64, pos int, sample bool, s *step.Sampling, toks ...int) step.Seq {
		return step.Seq{ID: id, Tokens: toks, Pos: pos, Sample: sample, Sampling: s,
			Blocks: []int{int(id), int(id) + 1}, SlidingBlocks: []int{-1, int(id)}}
	}

	// Step 1: a prefill chunk that does not sample and a whole prompt that
	// does; both send their sampling.
	b := &step.Batch{Seqs: []step.Seq{seq(1, 0, false, s1, 10, 11, 12), seq(2, 0, true, s2, 20, 21)}}
	msg, seen := roundTrip(t, enc, dec, b, sampleAll)
	sameInput(t, b, seen)
	if msg.StepId != 1 || msg.Seqs[0].Sampling == nil || msg.Seqs[1].Sampling == nil {
		t.Fatalf("step 1: id %d, sampling sent %v %v", msg.StepId, msg.Seqs[0].Sampling != nil, msg.Seqs[1].Sampling != nil)
	}
	if b.Seqs[1].Out.ID != 2002 || b.Seqs[1].Out.Logprob != -float32(2002%7) || b.Seqs[0].Out.ID != 0 {
		t.Fatalf("step 1 outputs: %+v %+v", b.Seqs[0].Out, b.Seqs[1].Out)
	}

	// Step 2: both sample; the sampling is not sent again but the worker
	// still has it, with logprobs and top logprobs coming back.
	b = &step.Batch{Seqs: []step.Seq{seq(1, 3, true, s1, 13), seq(2, 2, true, s2, 2002)}}
	msg, seen = roundTrip(t, enc, dec, b, sampleAll)
	sameInput(t, b, seen)
	if msg.StepId != 2 || msg.Seqs[0].Sampling != nil || msg.Seqs[1].Sampling != nil {
		t.Fatalf("step 2: id %d, sampling resent", msg.StepId)
	}
	want := step.Token{ID: 1004, Logprob: -float32(1004 % 7), TopLogprobs: []step.TokenLogprob{
		{ID: 1004, Logprob: -0.25}, {ID: 1005, Logprob: -1.25}, {ID: 1006, Logprob: -2.25}}}
	if !reflect.DeepEqual(b.Seqs[0].Out, want) {
		t.Fatalf("step 2 sequence 1: %+v, want %+v", b.Seqs[0].Out, want)
	}

	// Release 2: it rides on the next step, and the worker forgets it.
	enc.Release([]uint64{2})
	if !enc.Pending() || dec.Known() != 2 {
		t.Fatalf("before step 3: pending %v, worker knows %d", enc.Pending(), dec.Known())
	}
	b = &step.Batch{Seqs: []step.Seq{seq(1, 4, true, s1, 1004), seq(3, 0, true, s2, 30)}}
	msg, seen = roundTrip(t, enc, dec, b, func(b *step.Batch) {
		sampleAll(b)
		b.Seqs[1].Preempted = true // no room for 3
	})
	sameInput(t, b, seen)
	if !slices.Equal(msg.Release, []uint64{2}) || enc.Pending() {
		t.Fatalf("step 3 released %v (pending after: %v)", msg.Release, enc.Pending())
	}
	if !b.Seqs[1].Preempted || b.Seqs[0].Preempted || dec.Known() != 1 {
		t.Fatalf("step 3: preempted %v %v, worker knows %d sequences", b.Seqs[0].Preempted, b.Seqs[1].Preempted, dec.Known())
	}

	// A preempted sequence sends its sampling again when it comes back.
	b = &step.Batch{Seqs: []step.Seq{seq(3, 0, true, s2, 30)}}
	msg, seen = roundTrip(t, enc, dec, b, sampleAll)
	sameInput(t, b, seen)
	if msg.Seqs[0].Sampling == nil {
		t.Fatal("a preempted sequence's sampling was not sent again")
	}

	// A failed step is undone: its releases and fresh sampling go again.
	enc.Release([]uint64{1})
	b = &step.Batch{Seqs: []step.Seq{seq(4, 0, true, s1, 40)}}
	lost, fresh := enc.Encode(b)
	if !slices.Equal(fresh, []uint64{4}) || !slices.Equal(lost.Release, []uint64{1}) {
		t.Fatalf("encode: fresh %v release %v", fresh, lost.Release)
	}
	enc.Undo(lost, fresh)
	enc.Release([]uint64{3})
	msg, seen = roundTrip(t, enc, dec, b, sampleAll)
	sameInput(t, b, seen)
	if !slices.Equal(msg.Release, []uint64{1, 3}) || msg.Seqs[0].Sampling == nil || msg.StepId != lost.StepId+1 {
		t.Fatalf("after undo: step %d release %v, sampling sent %v", msg.StepId, msg.Release, msg.Seqs[0].Sampling != nil)
	}
	if dec.Known() != 1 { // only 4 is left
		t.Fatalf("worker knows %d sequences, want 1", dec.Known())
	}
	dec.Reset()
	if dec.Known() != 0 {
		t.Fatal("Reset kept sequences")
	}
}

func TestStepDecoderRejects(t *testing.T) {
	dec := NewStepDecoder()
	for name, msg := range map[string]*Step{
		"appears twice": {Seqs: []*SeqStep{{Id: 1}, {Id: 1}}, Release: []uint64{9}},
		"empty":         {Seqs: []*SeqStep{nil}, Release: []uint64{9}},
	} {
		dec.sampling[9] = &step.Sampling{}
		if _, err := dec.Decode(msg); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: error %v", name, err)
		}
		if dec.Known() != 0 {
			t.Errorf("%s: the release list was not applied", name)
		}
	}
}

func TestStepEncoderRejectsReplies(t *testing.T) {
	enc := NewStepEncoder()
	b := &step.Batch{Seqs: []step.Seq{{ID: 1, Tokens: []int{5}, Sample: true}, {ID: 2, Tokens: []int{6}}}}
	msg, _ := enc.Encode(b)
	for want, res := range map[string]*StepResult{
		"rank 1: boom":            {StepId: msg.StepId, Rank: 1, Error: "boom"},
		"reply is for step 7":     {StepId: 7},
		"no token for sequence 1": {StepId: msg.StepId, Tokens: []*SampledToken{{SeqId: 2}}},
		"2 top ids but 1 top":     {StepId: msg.StepId, Tokens: []*SampledToken{{SeqId: 1, TopIds: []int32{1, 2}, TopLogprobs: []float32{0}}}},
	} {
		if err := enc.Decode(b, msg, res); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v", want, err)
		}
	}
}

// A sequence the worker's executor rejects comes back as that sequence's
// error (wrapping step.ErrRejected) with the rest of the step intact, and
// both sides forget its sampling.
func TestStepCodecRejected(t *testing.T) {
	enc, dec := NewStepEncoder(), NewStepDecoder()
	b := &step.Batch{Seqs: []step.Seq{
		{ID: 1, Tokens: []int{1}, Sample: true, Sampling: &step.Sampling{}},
		{ID: 2, Tokens: []int{2}, Sample: true, Sampling: &step.Sampling{TopK: -3}},
	}}
	roundTrip(t, enc, dec, b, func(b *step.Batch) {
		sampleAll(b)
		b.Seqs[1].Err = errors.New("sample: TopK -3 out of range")
	})
	if b.Seqs[0].Err != nil || b.Seqs[0].Out.ID != 1001 {
		t.Fatalf("companion: %+v", b.Seqs[0])
	}
	if !errors.Is(b.Seqs[1].Err, step.ErrRejected) || !strings.Contains(b.Seqs[1].Err.Error(), "TopK -3") {
		t.Fatalf("rejected: %v", b.Seqs[1].Err)
	}
	if dec.Known() != 1 {
		t.Fatalf("worker knows %d sequences, want 1", dec.Known())
	}
	// Sequence 2 comes back (a new request would have a new id, but the
	// encoder must not believe its sampling is still known).
	msg, _ := enc.Encode(&step.Batch{Seqs: []step.Seq{{ID: 2, Tokens: []int{2}, Sampling: &step.Sampling{}}}})
	if msg.Seqs[0].Sampling == nil {
		t.Fatal("a rejected sequence's sampling is still marked sent")
	}
}

// A watchdog's reply is a timeout (step.ErrTimeout), which the scheduler
// treats as nobody's fault; other errors are not.
func TestStepCodecTimedOut(t *testing.T) {
	enc := NewStepEncoder()
	b := &step.Batch{Seqs: []step.Seq{{ID: 1, Tokens: []int{1}, Sample: true}}}
	msg, _ := enc.Encode(b)
	err := enc.Decode(b, msg, &StepResult{StepId: msg.StepId, Rank: 1, Error: "step 1 ran 2m, over its deadline 1m", TimedOut: true})
	if !errors.Is(err, step.ErrTimeout) || !strings.Contains(err.Error(), "rank 1") {
		t.Fatalf("timed out: %v", err)
	}
	if err := enc.Decode(b, msg, &StepResult{StepId: msg.StepId, Error: "boom"}); errors.Is(err, step.ErrTimeout) {
		t.Fatalf("a plain error is a timeout: %v", err)
	}
}

// Integers beyond int32 saturate on the wire instead of wrapping: top_k
// 4294967301 wrapped to 5 (a different distribution), 2147483648 to a
// negative value (a failed step).
func TestSamplingSaturates(t *testing.T) {
	for in, want := range map[int]int32{4294967301: math.MaxInt32, 2147483648: math.MaxInt32, -1 << 40: math.MinInt32, 40: 40} {
		w := SamplingToWire(&step.Sampling{TopK: in, TopLogprobs: in})
		if w.TopK != want || w.TopLogprobs != want {
			t.Errorf("%d: top_k %d, top_logprobs %d on the wire, want %d", in, w.TopK, w.TopLogprobs, want)
		}
	}
}

// vocabWords is the bitset of the gpt-oss vocabulary: 201088 tokens.
const vocabWords = 201088 / 32

// allowOnly is a vocabulary bitset that allows ids alone.
func allowOnly(words int, ids ...int) []uint32 {
	a := make([]uint32, words)
	for _, id := range ids {
		a[id/32] |= 1 << (id % 32)
	}
	return a
}

// allowAllBut is a vocabulary bitset that allows everything but ids.
func allowAllBut(words int, ids ...int) []uint32 {
	a := make([]uint32, words)
	for w := range a {
		a[w] = math.MaxUint32
	}
	for _, id := range ids {
		a[id/32] &^= 1 << (id % 32)
	}
	return a
}

// allowRandom allows each token with probability p.
func allowRandom(words int, p float64, seed uint64) []uint32 {
	r := rand.New(rand.NewPCG(seed, 1))
	a := make([]uint32, words)
	for t := range words * 32 {
		if r.Float64() < p {
			a[t/32] |= 1 << (t % 32)
		}
	}
	return a
}

// allowCases are sets of allowed tokens and the form each travels in.
var allowCases = []struct {
	name  string
	allow []uint32
	kind  AllowKind
}{
	{"forced token", allowOnly(vocabWords, 200012), AllowKind_ALLOW_KIND_IDS},
	{"a few tokens", allowOnly(vocabWords, 0, 31, 32, 125, 16000, 201087), AllowKind_ALLOW_KIND_IDS},
	{"nothing", allowOnly(vocabWords), AllowKind_ALLOW_KIND_IDS},
	{"empty bitset", []uint32{}, AllowKind_ALLOW_KIND_IDS},
	{"all but the specials", allowAllBut(vocabWords, 199998, 199999, 200002, 200012, 201087), AllowKind_ALLOW_KIND_DENY},
	{"everything", allowAllBut(vocabWords), AllowKind_ALLOW_KIND_DENY},
	{"half, at random", allowRandom(vocabWords, 0.5, 1), AllowKind_ALLOW_KIND_BITS},
	{"a short bitset", []uint32{0xdeadbeef, 0x12345678, 0xffff0000}, AllowKind_ALLOW_KIND_BITS},
}

// The three forms of the allowed tokens, and their absence, survive the
// trip to the worker exactly, in the form the test expects; the decoder's
// reused buffers never leak one step's set into the next.
func TestAllowRoundTrip(t *testing.T) {
	enc, dec := NewStepEncoder(), NewStepDecoder()
	seq := func(id uint64, sample bool, allow []uint32) step.Seq {
		return step.Seq{ID: id, Tokens: []int{int(id)}, Pos: 0, Sample: sample, Sampling: &step.Sampling{}, Allow: allow}
	}
	for i, c := range allowCases {
		other := allowCases[(i+1)%len(allowCases)].allow
		b := &step.Batch{Seqs: []step.Seq{
			seq(uint64(4*i+1), true, c.allow),
			seq(uint64(4*i+2), true, nil),
			seq(uint64(4*i+3), false, other), // not sent: nothing would read it
			seq(uint64(4*i+4), true, other),
		}}
		msg, seen := roundTrip(t, enc, dec, b, sampleAll)
		sameInput(t, b, seen)
		if k := msg.Seqs[0].AllowKind; k != c.kind {
			t.Errorf("%s: sent as %v, want %v", c.name, k, c.kind)
		}
		if msg.Seqs[1].AllowKind != AllowKind_ALLOW_KIND_NONE || msg.Seqs[2].AllowKind != AllowKind_ALLOW_KIND_NONE {
			t.Errorf("%s: a set was sent for a sequence without one, or one that does not sample", c.name)
		}
	}
}

// The encoder picks the smallest of the three forms: each case encoded in
// every form is at least as large as in the chosen one, and decodes to the
// same set.
func TestAllowSmallest(t *testing.T) {
	cases := slices.Clone(allowCases)
	for _, p := range []float64{0.001, 0.01, 0.05, 0.1, 0.9, 0.95, 0.99, 0.999} {
		cases = append(cases, struct {
			name  string
			allow []uint32
			kind  AllowKind
		}{name: "random", allow: allowRandom(vocabWords, p, uint64(p*1000))})
	}
	for _, c := range cases {
		chosen := chooseAllow(c.allow)
		sizes := map[AllowKind]int{}
		for _, kind := range []AllowKind{AllowKind_ALLOW_KIND_IDS, AllowKind_ALLOW_KIND_DENY, AllowKind_ALLOW_KIND_BITS} {
			ws := &SeqStep{Id: 7, Sample: true}
			encodeAllow(ws, c.allow, kind)
			sizes[kind] = proto.Size(ws)
			data, err := Marshal(ws)
			if err != nil {
				t.Fatal(err)
			}
			var got SeqStep
			if err := Unmarshal(data, &got); err != nil {
				t.Fatal(err)
			}
			allow, err := decodeAllow(&got, nil)
			if err != nil || allow == nil || !slices.Equal(allow, c.allow) {
				t.Errorf("%s as %v: decoded %d words (%v), want %d", c.name, kind, len(allow), err, len(c.allow))
			}
		}
		for kind, n := range sizes {
			if n < sizes[chosen] {
				t.Errorf("%s: chose %v (%d bytes), but %v takes %d", c.name, chosen, sizes[chosen], kind, n)
			}
		}
	}
}

// A malformed set of allowed tokens fails the decode, naming the sequence.
func TestAllowMalformed(t *testing.T) {
	const ids, deny, bitset = AllowKind_ALLOW_KIND_IDS, AllowKind_ALLOW_KIND_DENY, AllowKind_ALLOW_KIND_BITS
	for want, q := range map[string]*SeqStep{
		"id -1 outside [0, 64)":                      {AllowKind: ids, AllowBound: 64, AllowIds: []int32{3, -1}},
		"id 64 outside [0, 64)":                      {AllowKind: ids, AllowBound: 64, AllowIds: []int32{64}},
		"id 0 outside [0, 0)":                        {AllowKind: ids, AllowIds: []int32{0}},
		"denied id 100 outside [0, 96)":              {AllowKind: deny, AllowBound: 96, DenyIds: []int32{100}},
		"denied id -5 outside":                       {AllowKind: deny, AllowBound: 96, DenyIds: []int32{-5}},
		"bound 33 is not a whole number":             {AllowKind: ids, AllowBound: 33},
		"bound -32 is not":                           {AllowKind: deny, AllowBound: -32},
		"a set of 4194336 tokens exceeds 4194304":    {AllowKind: deny, AllowBound: MaxAllowTokens + 32},
		"a set of 4194336 tokens exceeds":            {AllowKind: bitset, AllowBits: make([]byte, (MaxAllowTokens+32)/8)},
		"a bitset of 7 bytes":                        {AllowKind: bitset, AllowBits: make([]byte, 7)},
		"fields of another form than ALLOW_KIND_IDS": {AllowKind: ids, AllowBound: 64, DenyIds: []int32{1}},
		"another form than ALLOW_KIND_NONE":          {AllowIds: []int32{1}},
		"another form than ALLOW_KIND_BITS":          {AllowKind: bitset, AllowBits: make([]byte, 8), AllowBound: 64},
		"unknown form 9":                             {AllowKind: 9},
	} {
		q.Id, q.Sample = 42, true
		dec := NewStepDecoder()
		_, err := dec.Decode(&Step{Seqs: []*SeqStep{{Id: 1}, q}})
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "sequence 42") {
			t.Errorf("%s: error %v", want, err)
		}
	}
}

// Decoding a step's sets reuses the decoder's buffers once they have
// grown: a constrained decode step costs no allocation for its set.
func TestAllowDecodeReuses(t *testing.T) {
	enc, dec := NewStepEncoder(), NewStepDecoder()
	b := &step.Batch{Seqs: []step.Seq{{ID: 1, Tokens: []int{1}, Sample: true, Allow: allowRandom(vocabWords, 0.5, 3)}}}
	msg, _ := enc.Encode(b)
	if _, err := dec.Decode(msg); err != nil {
		t.Fatal(err)
	}
	q := msg.Seqs[0]
	first := dec.allow[0]
	if a := testing.AllocsPerRun(10, func() {
		if _, err := decodeAllow(q, dec.allow[0]); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Errorf("%v allocations per set decoded into a grown buffer", a)
	}
	if _, err := dec.Decode(msg); err != nil || &dec.allow[0][0] != &first[0] {
		t.Errorf("the second decode did not reuse the buffer (%v)", err)
	}
}

func BenchmarkAllowEncode(b *testing.B) {
	allow := allowRandom(vocabWords, 0.5, 1)
	for b.Loop() {
		ws := &SeqStep{}
		encodeAllow(ws, allow, chooseAllow(allow))
	}
}
