package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/gptoss/server/shared/step"
)

// The step codec: both halves of the conversion between the executor
// contract (shared/step) and the Step and StepResult messages, kept in one
// file so that one round-trip test ties the coordinator's encoder to the
// worker's decoder.
//
// Two pieces of protocol state live on each side:
//   - a sequence's Sampling travels with its first step only (it is the
//     same for every later step, and steps are the hot path); the encoder
//     remembers what it sent, the decoder what it received;
//   - releases are not sent on their own: they ride on the next step's
//     release list, and the decoder forgets their Sampling before it runs
//     the step.
//
// A preempted or rejected sequence's Sampling is forgotten on both sides
// (the scheduler recomputes a preempted sequence as a new one, which sends
// it again), as is every sequence's when a step fails on the coordinator's
// side.
//
// Integers that do not fit the wire's int32 are saturated, never wrapped:
// a top_k or top_logprobs beyond int32 means the same to the sampler as
// int32's largest value (more than the vocabulary), which it then
// accepts or refuses for that sequence alone.
//
// A sampling sequence's set of allowed tokens (step.Seq.Allow) travels with
// every step, in the smallest of three forms (see SeqStep in wire.proto and
// encodeAllow); a non-sampling sequence's is not sent, since nothing reads
// it.

// StepEncoder is the coordinator's half: it turns the scheduler's batches
// into Step messages and fills the batches from the StepResults. Not safe
// for concurrent use; the caller serialises it (the scheduler's loop calls
// it, under the remote client's lock).
type StepEncoder struct {
	sent    map[uint64]struct{} // sequences whose Sampling was sent
	release []uint64            // released since the last step
	id      uint64              // last step id
}

// NewStepEncoder returns an encoder that has sent nothing yet.
func NewStepEncoder() *StepEncoder { return &StepEncoder{sent: map[uint64]struct{}{}} }

// Encode builds the Step message of b with a fresh step id, the pending
// releases and the Sampling of every sequence that has not sent it yet.
// fresh lists those sequences, for Undo.
func (e *StepEncoder) Encode(b *step.Batch) (msg *Step, fresh []uint64) {
	e.id++
	msg = &Step{StepId: e.id, Seqs: make([]*SeqStep, len(b.Seqs))}
	msg.Release, e.release = e.release, nil
	for i := range b.Seqs {
		st := &b.Seqs[i]
		ws := &SeqStep{Id: st.ID, Tokens: Int32s(st.Tokens), Pos: sat32(st.Pos), Sample: st.Sample, Follow: st.Follow,
			Blocks: Int32s(st.Blocks), SlidingBlocks: Int32s(st.SlidingBlocks)}
		if st.Sample && st.Allow != nil {
			encodeAllow(ws, st.Allow, chooseAllow(st.Allow))
		}
		if _, ok := e.sent[st.ID]; !ok && st.Sampling != nil {
			ws.Sampling = SamplingToWire(st.Sampling)
			if !ws.Sampling.HasSeed {
				// Every rank draws the sequence's tokens and must draw the
				// same (a pipelined step's Follow input is each rank's own
				// draw): an unseeded sequence gets its random seed here,
				// once for all ranks, instead of one per rank.
				ws.Sampling.Seed, ws.Sampling.HasSeed = int64(rand.Uint64()), true
			}
			e.sent[st.ID] = struct{}{}
			fresh = append(fresh, st.ID)
		}
		msg.Seqs[i] = ws
	}
	return msg, fresh
}

// Undo takes back an Encode whose step may not have reached the workers:
// its releases go back to the front of the pending list (a repeated release
// is a no-op for the workers: ids are never reused) and its fresh
// sequences will send their Sampling again.
func (e *StepEncoder) Undo(msg *Step, fresh []uint64) {
	e.release = append(msg.Release, e.release...)
	for _, id := range fresh {
		delete(e.sent, id)
	}
}

// Release queues ids for the next step's release list and forgets that
// their Sampling was sent.
func (e *StepEncoder) Release(ids []uint64) {
	e.release = append(e.release, ids...)
	for _, id := range ids {
		delete(e.sent, id)
	}
}

// Pending reports whether releases wait for a step.
func (e *StepEncoder) Pending() bool { return len(e.release) > 0 }

// Decode checks rank 0's reply to msg and copies its sampled tokens and
// preemptions into b, the batch msg was encoded from. A preempted
// sequence's Sampling is forgotten: it is sent again when the sequence is
// recomputed.
func (e *StepEncoder) Decode(b *step.Batch, msg *Step, res *StepResult) error {
	if res.Error != "" {
		if res.TimedOut {
			return fmt.Errorf("rank %d: %w: %s", res.Rank, step.ErrTimeout, res.Error)
		}
		return fmt.Errorf("rank %d: %s", res.Rank, res.Error)
	}
	if res.StepId != msg.StepId {
		return fmt.Errorf("reply is for step %d", res.StepId)
	}
	byID := make(map[uint64]*SampledToken, len(res.Tokens))
	for _, t := range res.Tokens {
		byID[t.SeqId] = t
	}
	preempted := make(map[uint64]bool, len(res.Preempted))
	for _, id := range res.Preempted {
		preempted[id] = true
	}
	rejected := make(map[uint64]string, len(res.Rejected))
	for _, r := range res.Rejected {
		rejected[r.SeqId] = r.Error
	}
	for i := range b.Seqs {
		st := &b.Seqs[i]
		if preempted[st.ID] {
			st.Preempted = true
			delete(e.sent, st.ID)
			continue
		}
		if msg, ok := rejected[st.ID]; ok {
			st.Err = fmt.Errorf("%w: %s", step.ErrRejected, msg)
			delete(e.sent, st.ID)
			continue
		}
		if !st.Sample {
			continue
		}
		t := byID[st.ID]
		if t == nil {
			return fmt.Errorf("no token for sequence %d in the reply", st.ID)
		}
		if len(t.TopIds) != len(t.TopLogprobs) {
			return fmt.Errorf("sequence %d: %d top ids but %d top logprobs", st.ID, len(t.TopIds), len(t.TopLogprobs))
		}
		st.Out = step.Token{ID: int(t.Token), Logprob: t.Logprob}
		if len(t.TopIds) > 0 {
			st.Out.TopLogprobs = make([]step.TokenLogprob, len(t.TopIds))
			for j, id := range t.TopIds {
				st.Out.TopLogprobs[j] = step.TokenLogprob{ID: int(id), Logprob: t.TopLogprobs[j]}
			}
		}
	}
	return nil
}

// StepDecoder is the worker's half: it turns Step messages back into
// batches for its executor and the executor's output into StepResults.
// Not safe for concurrent use (the worker's model goroutine owns it).
type StepDecoder struct {
	sampling map[uint64]*step.Sampling // received with each sequence's first step
	seen     map[uint64]bool           // ids of the step being decoded
	batch    step.Batch                // reused from step to step
	allow    [][]uint32                // the batch entries' Allow buffers, reused likewise
}

// NewStepDecoder returns a decoder that knows no sequence yet.
func NewStepDecoder() *StepDecoder {
	return &StepDecoder{sampling: map[uint64]*step.Sampling{}, seen: map[uint64]bool{}}
}

// Decode applies msg's release list (forgetting those sequences'
// Sampling) and returns msg's batch. The batch and its slices are valid
// until the next Decode (the Allow bitsets reuse their memory from step to
// step). A malformed message (an empty or repeated sequence, a set of
// allowed tokens that is inconsistent, out of range or larger than
// MaxAllowTokens) is an error; its releases are applied all the same,
// since the caller releases them from its executor too.
func (d *StepDecoder) Decode(msg *Step) (*step.Batch, error) {
	for _, id := range msg.Release {
		delete(d.sampling, id)
	}
	clear(d.seen)
	b := &d.batch
	b.Seqs = b.Seqs[:0]
	for _, q := range msg.Seqs {
		if q == nil {
			return nil, errors.New("step: empty sequence entry")
		}
		if d.seen[q.Id] {
			return nil, fmt.Errorf("step: sequence %d appears twice", q.Id)
		}
		d.seen[q.Id] = true
		if q.Sampling != nil {
			d.sampling[q.Id] = SamplingFromWire(q.Sampling)
		}
		i := len(b.Seqs)
		if i == len(d.allow) {
			d.allow = append(d.allow, nil)
		}
		allow, err := decodeAllow(q, d.allow[i])
		if err != nil {
			return nil, fmt.Errorf("step: sequence %d: %w", q.Id, err)
		}
		if allow != nil {
			d.allow[i] = allow
		}
		b.Seqs = append(b.Seqs, step.Seq{ID: q.Id, Tokens: Ints(q.Tokens), Pos: int(q.Pos), Sample: q.Sample, Follow: q.Follow,
			Sampling: d.sampling[q.Id], Blocks: Ints(q.Blocks), SlidingBlocks: Ints(q.SlidingBlocks), Allow: allow})
	}
	return b, nil
}

// MaxAllowTokens bounds the set of allowed tokens a decoder accepts, in
// tokens of its bitset (the vocabulary is 201088): a larger one is a
// malformed message, refused before anything is allocated for it.
const MaxAllowTokens = 1 << 22

// chooseAllow returns the smallest form of allow on the wire. The sizes
// are exact and cost one pass over the words: every id of one word has the
// same varint length, since the lengths change at 2^7, 2^14 and 2^21,
// multiples of 32. Ties go to the ids, then the denied ids.
func chooseAllow(allow []uint32) AllowKind {
	var idBytes, denyBytes int
	for w, word := range allow {
		n := bits.OnesCount32(word)
		size := protowire.SizeVarint(uint64(w) * 32)
		idBytes += n * size
		denyBytes += (32 - n) * size
	}
	packed := func(n int) int { // a packed repeated field of n payload bytes
		if n == 0 {
			return 0
		}
		return 1 + protowire.SizeVarint(uint64(n)) + n
	}
	bound := 0
	if len(allow) > 0 {
		bound = 1 + protowire.SizeVarint(uint64(len(allow))*32)
	}
	ids, deny, raw := packed(idBytes)+bound, packed(denyBytes)+bound, packed(4*len(allow))
	switch {
	case ids <= deny && ids <= raw:
		return AllowKind_ALLOW_KIND_IDS
	case deny <= raw:
		return AllowKind_ALLOW_KIND_DENY
	}
	return AllowKind_ALLOW_KIND_BITS
}

// encodeAllow sets ws's allowed-token fields to allow in the given form.
// The bound saturates at int32 (a set that large is refused by every
// decoder: see MaxAllowTokens).
func encodeAllow(ws *SeqStep, allow []uint32, kind AllowKind) {
	ws.AllowKind = kind
	switch kind {
	case AllowKind_ALLOW_KIND_IDS, AllowKind_ALLOW_KIND_DENY:
		ws.AllowBound = sat32(len(allow) * 32)
		deny := kind == AllowKind_ALLOW_KIND_DENY
		var ids []int32
		for w, word := range allow {
			if deny {
				word = ^word // the ids listed are the clear bits
			}
			for word != 0 {
				ids = append(ids, int32(w*32+bits.TrailingZeros32(word)))
				word &= word - 1
			}
		}
		if !deny {
			ws.AllowIds = ids
		} else {
			ws.DenyIds = ids
		}
	case AllowKind_ALLOW_KIND_BITS:
		ws.AllowBits = make([]byte, 4*len(allow))
		for w, word := range allow {
			binary.LittleEndian.PutUint32(ws.AllowBits[4*w:], word)
		}
	}
}

// decodeAllow rebuilds q's set of allowed tokens into buf (grown as
// needed; nil when q has no set), checking that the fields agree with
// the form and that every id is in range.
func decodeAllow(q *SeqStep, buf []uint32) ([]uint32, error) {
	kind, bound := q.AllowKind, int(q.AllowBound)
	if kind != AllowKind_ALLOW_KIND_IDS && len(q.AllowIds) > 0 ||
		kind != AllowKind_ALLOW_KIND_DENY && len(q.DenyIds) > 0 ||
		kind != AllowKind_ALLOW_KIND_BITS && len(q.AllowBits) > 0 ||
		(kind == AllowKind_ALLOW_KIND_NONE || kind == AllowKind_ALLOW_KIND_BITS) && bound != 0 {
		return nil, fmt.Errorf("allowed tokens: fields of another form than %v", kind)
	}
	switch kind {
	case AllowKind_ALLOW_KIND_NONE:
		return nil, nil
	case AllowKind_ALLOW_KIND_BITS:
		bound = len(q.AllowBits) * 8
		if len(q.AllowBits)%4 != 0 {
			return nil, fmt.Errorf("allowed tokens: a bitset of %d bytes, not whole uint32 words", len(q.AllowBits))
		}
	case AllowKind_ALLOW_KIND_IDS, AllowKind_ALLOW_KIND_DENY:
		if bound < 0 || bound%32 != 0 {
			return nil, fmt.Errorf("allowed tokens: bound %d is not a whole number of uint32 words", bound)
		}
	default:
		return nil, fmt.Errorf("allowed tokens: unknown form %d", kind)
	}
	if bound > MaxAllowTokens {
		return nil, fmt.Errorf("allowed tokens: a set of %d tokens exceeds %d", bound, MaxAllowTokens)
	}
	n := bound / 32
	if buf == nil || cap(buf) < n {
		buf = make([]uint32, n) // non-nil even when empty: an empty set allows nothing
	}
	allow := buf[:n]
	switch kind {
	case AllowKind_ALLOW_KIND_BITS:
		for w := range allow {
			allow[w] = binary.LittleEndian.Uint32(q.AllowBits[4*w:])
		}
	case AllowKind_ALLOW_KIND_IDS:
		clear(allow)
		for _, id := range q.AllowIds {
			if id < 0 || int(id) >= bound {
				return nil, fmt.Errorf("allowed tokens: id %d outside [0, %d)", id, bound)
			}
			allow[id/32] |= 1 << (uint32(id) % 32)
		}
	case AllowKind_ALLOW_KIND_DENY:
		for w := range allow {
			allow[w] = math.MaxUint32
		}
		for _, id := range q.DenyIds {
			if id < 0 || int(id) >= bound {
				return nil, fmt.Errorf("allowed tokens: denied id %d outside [0, %d)", id, bound)
			}
			allow[id/32] &^= 1 << (uint32(id) % 32)
		}
	}
	return allow, nil
}

// Result is the StepResult of b after the executor ran it: the sampled
// tokens (rank 0 sends them) and the preempted and rejected sequences,
// whose Sampling is forgotten (the coordinator sends it again when it
// recomputes a preempted one).
func (d *StepDecoder) Result(stepID uint64, rank int, b *step.Batch) *StepResult {
	res := &StepResult{StepId: stepID, Rank: int32(rank)}
	for i := range b.Seqs {
		st := &b.Seqs[i]
		if st.Preempted {
			res.Preempted = append(res.Preempted, st.ID)
			delete(d.sampling, st.ID)
			continue
		}
		if st.Err != nil {
			res.Rejected = append(res.Rejected, &SeqError{SeqId: st.ID, Error: st.Err.Error()})
			delete(d.sampling, st.ID)
			continue
		}
		if !st.Sample {
			continue
		}
		t := &SampledToken{SeqId: st.ID, Token: int32(st.Out.ID), Logprob: st.Out.Logprob}
		for _, tl := range st.Out.TopLogprobs {
			t.TopIds = append(t.TopIds, int32(tl.ID))
			t.TopLogprobs = append(t.TopLogprobs, tl.Logprob)
		}
		res.Tokens = append(res.Tokens, t)
	}
	return res
}

// Reset forgets every sequence (the model was unloaded).
func (d *StepDecoder) Reset() { clear(d.sampling) }

// Known is how many sequences' Sampling the decoder holds.
func (d *StepDecoder) Known() int { return len(d.sampling) }

// SamplingToWire is the message form of s.
func SamplingToWire(s *step.Sampling) *Sampling {
	return &Sampling{
		Temperature: s.Temperature, TopP: s.TopP, TopK: sat32(s.TopK), MinP: s.MinP,
		Seed: s.Seed, HasSeed: s.HasSeed, PresencePenalty: s.PresencePenalty, FrequencyPenalty: s.FrequencyPenalty,
		Logprobs: s.Logprobs, TopLogprobs: sat32(s.TopLogprobs),
	}
}

// sat32 converts v to int32, saturating at int32's bounds.
func sat32(v int) int32 {
	return int32(max(min(v, math.MaxInt32), math.MinInt32))
}

// SamplingFromWire is the contract form of p.
func SamplingFromWire(p *Sampling) *step.Sampling {
	return &step.Sampling{Temperature: p.Temperature, TopP: p.TopP, TopK: int(p.TopK), MinP: p.MinP,
		Seed: p.Seed, HasSeed: p.HasSeed, PresencePenalty: p.PresencePenalty, FrequencyPenalty: p.FrequencyPenalty,
		Logprobs: p.Logprobs, TopLogprobs: int(p.TopLogprobs)}
}
