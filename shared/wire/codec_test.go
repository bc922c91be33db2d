package wire

import (
	"errors"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"

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
		if g.ID != w.ID || !slices.Equal(g.Tokens, w.Tokens) || g.Pos != w.Pos || g.Sample != w.Sample ||
			!slices.Equal(g.Blocks, w.Blocks) || !slices.Equal(g.SlidingBlocks, w.SlidingBlocks) {
			t.Errorf("sequence %d: worker got %+v, want %+v", w.ID, g, w)
		}
		if (g.Sampling == nil) != (w.Sampling == nil) || (g.Sampling != nil && *g.Sampling != *w.Sampling) {
			t.Errorf("sequence %d: worker sampling %+v, want %+v", w.ID, g.Sampling, w.Sampling)
		}
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
