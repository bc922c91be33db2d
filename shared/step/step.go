// Package step is the executor contract: what the coordinator's scheduler
// hands to whatever runs the model for one forward step, and what comes
// back. The scheduler (coordinator/sched) produces Batches; executors
// consume them: the mock engine and the worker client over NATS in the
// coordinator (coordinator/mock, coordinator/remote), the in-process engine
// executor in the worker (worker/local). It lives in shared/ because both
// sides of the NATS boundary speak it: shared/wire encodes a Batch into a
// Step message on the coordinator and decodes it back on the worker, so the
// worker binary never links the coordinator's scheduler, profiles or
// configuration.
//
// The package holds only types and their invariants; no behaviour beyond
// what a value can check about itself.
package step

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Sampling carries a sequence's sampling parameters to the executor, which
// samples (on the workers, rank 0 does).
type Sampling struct {
	Temperature      float64
	TopP             float64
	TopK             int
	MinP             float64
	Seed             int64
	HasSeed          bool
	PresencePenalty  float64
	FrequencyPenalty float64
	Logprobs         bool
	TopLogprobs      int
}

// Allowed reports whether the bitset allow admits token t (nil admits
// every token).
func Allowed(allow []uint32, t int) bool {
	if allow == nil {
		return true
	}
	return t >= 0 && t/32 < len(allow) && allow[t/32]>>(uint(t)%32)&1 == 1
}

// Token is one generated token as delivered to the caller.
type Token struct {
	ID int
	// Logprob of ID, and the most likely alternatives when requested.
	Logprob     float32
	TopLogprobs []TokenLogprob
	// At is when the scheduler delivered the token (set by the scheduler,
	// not by executors).
	At time.Time
}

// TokenLogprob is one alternative token and its log probability.
type TokenLogprob struct {
	ID      int
	Logprob float32
}

// Batch is one step: the sequences that run in it.
type Batch struct {
	Seqs []Seq
}

// Seq is one sequence's part of a step.
type Seq struct {
	// ID identifies the sequence across steps (its KV state). IDs are
	// never reused within a coordinator's life.
	ID uint64
	// Tokens are this step's input: a chunk of the prompt, or the previous
	// generated token when decoding.
	Tokens []int
	// Pos is the position of Tokens[0] in the sequence.
	Pos int
	// Sample asks for a next token (last prefill chunk, or decode).
	Sample   bool
	Sampling *Sampling
	// Blocks and SlidingBlocks are the sequence's block tables (when the
	// executor's Capabilities has KV): the full-attention table covers
	// positions [0, Pos+len(Tokens)); the sliding table too, with -1 for
	// blocks wholly behind the window. Valid until the next step.
	Blocks, SlidingBlocks []int
	// Allow, when not nil, is the set of tokens the sampler may draw
	// (structured output, forced calls, the reasoning budget: see
	// coordinator/guide): a bitset over the vocabulary, token t allowed when
	// Allow[t/32]>>(t%32)&1 is set; tokens past len(Allow)*32 are not.
	// Executors apply it before sampling (the logits of every other token
	// become -Inf), so the draw, its logprob and the top alternatives are
	// those of the constrained distribution. Only meaningful with Sample;
	// valid until the next step.
	Allow []uint32
	// Follow marks a decode entry of a pipelined step (Pipeliner), sent
	// before the results of the step ahead of it were back: its one input
	// token is the token the executor drew for this sequence in that step,
	// which the sender did not know yet, and Tokens holds a placeholder
	// (FollowToken). An executor that no longer holds the sequence (it
	// dropped it in that step: a rejection or preemption) refuses the
	// entry alone (Err, wrapping ErrRejected), since the sender has
	// already retired it. Follow entries always sample.
	Follow bool
	// Out is filled by the executor when Sample is set.
	Out Token
	// Preempted is set by the executor when it could not make room for
	// this sequence (KV cache full): it ran nothing for it and dropped its
	// state. The scheduler requeues it to be recomputed from its tokens.
	Preempted bool
	// Err is set by the executor when it refused this sequence alone (for
	// sampling parameters it cannot honour): it ran nothing for it and
	// dropped its state, and the rest of the step ran. It wraps
	// ErrRejected. The scheduler ends the sequence with it: one
	// sequence's parameters never fail its companions.
	Err error
}

// FollowToken is the placeholder input of a Follow entry.
const FollowToken = -1

// Errors executors report.
var (
	// ErrRejected: the executor refused one sequence (Seq.Err).
	ErrRejected = errors.New("step: sequence rejected")
	// ErrTimeout: the step ran past its deadline. A slow step is not the
	// fault of its sequences: the scheduler retries them and answers a
	// retryable 503 if it keeps happening, never a 500.
	ErrTimeout = errors.New("step: ran past its deadline")
)

// Capabilities tells the API layer and the scheduler what the executor can
// honour, so that they refuse what it cannot instead of silently ignoring
// it.
type Capabilities struct {
	Logprobs bool
	// KVTokens is the most tokens one sequence can hold in the KV cache
	// (0: unknown); a request that could never fit is refused at admission.
	KVTokens int
	// KV, when set, is the geometry of a paged KV cache whose block tables
	// the scheduler owns: every Seq then carries its tables. Nil for
	// executors that keep their own memory (the mock).
	KV *KVGeometry
}

// KVGeometry describes the workers' paged KV cache. The scheduler owns the
// block tables: it decides which blocks hold which sequence's positions and
// sends the tables with every step; the workers own only the memory.
type KVGeometry struct {
	// BlockSize is the number of token positions per block.
	BlockSize int
	// Blocks is the full-attention pool's size.
	Blocks int
	// SlidingBlocks is the sliding-window layers' pool size (their tables
	// only need the blocks that overlap the window).
	SlidingBlocks int
	// SlidingWindow is the window of the sliding layers (0: none).
	SlidingWindow int
}

// MaxTokens is the most positions one sequence can hold.
func (g KVGeometry) MaxTokens() int { return g.Blocks * g.BlockSize }

// Validate checks that the geometry can hold at least one token.
func (g KVGeometry) Validate() error {
	if g.BlockSize < 1 || g.Blocks < 1 || g.SlidingBlocks < 1 || g.SlidingWindow < 0 {
		return fmt.Errorf("step: kv geometry %+v", g)
	}
	// A sliding table spans the window plus the block being filled, and
	// one more when the window straddles a block boundary.
	if g.SlidingWindow > 0 && g.SlidingBlocks < g.SlidingWindow/g.BlockSize+2 {
		return fmt.Errorf("step: %d sliding blocks of %d cannot hold a window of %d", g.SlidingBlocks, g.BlockSize, g.SlidingWindow)
	}
	return nil
}

// Executor runs forward passes. Step and Release are only ever called from
// one goroutine at a time (the scheduler's loop, or the worker's model
// goroutine). An executor that keeps per-sequence state and draws tokens
// also honours Seq.Follow (the worker's engine executor, the mock), so
// that a Pipeliner can run its steps back to back.
type Executor interface {
	// Step runs one forward pass over the batch and fills Out for every
	// entry with Sample set. An error fails every sequence in the batch.
	Step(ctx context.Context, b *Batch) error
	// Release frees the executor-side state (KV cache) of sequences that
	// will not be stepped again.
	Release(ids []uint64)
	// Capabilities reports what the executor supports.
	Capabilities() Capabilities
}

// Pipeliner is implemented by executors that take the next step before
// the previous one's results are back, so that the model never waits for
// the scheduler to turn a step around (deliver its tokens, admit, plan):
// the scheduler submits step k+1, whose continuing sequences Follow their
// draws of step k, and only then delivers step k. Steps run in the order
// submitted, and a Release takes effect after every step submitted before
// it (a sequence retired while a step holding it is in flight is released
// after that step). Submit, Step and Release are called from one
// goroutine.
type Pipeliner interface {
	Executor
	// Submit hands b to the executor and returns at once. wait, called
	// once from the same goroutine, blocks until b ran and returns what
	// Step would have, with b's outputs filled. Neither b nor the slices
	// it refers to are read after Submit returns (the executor keeps its
	// own copy), and b's outputs are written only inside wait. Cancelling
	// ctx abandons the step: wait returns at once with an error, and the
	// sequences of b must be released.
	Submit(ctx context.Context, b *Batch) (wait func() error)
}

// Clone returns a deep copy of b: its entries and every slice they refer
// to, so that an executor can run it on another goroutine while the caller
// reuses its own (Pipeliner.Submit).
func (b *Batch) Clone() *Batch {
	c := &Batch{Seqs: make([]Seq, len(b.Seqs))}
	for i, s := range b.Seqs {
		s.Tokens = slices.Clone(s.Tokens)
		s.Blocks = slices.Clone(s.Blocks)
		s.SlidingBlocks = slices.Clone(s.SlidingBlocks)
		s.Allow = slices.Clone(s.Allow)
		if s.Sampling != nil {
			sp := *s.Sampling
			s.Sampling = &sp
		}
		c.Seqs[i] = s
	}
	return c
}

// CopyOut copies the executor's outputs (Out, Preempted, Err) of c, a
// Clone of b, back into b.
func (b *Batch) CopyOut(c *Batch) {
	for i := range b.Seqs {
		b.Seqs[i].Out, b.Seqs[i].Preempted, b.Seqs[i].Err = c.Seqs[i].Out, c.Seqs[i].Preempted, c.Seqs[i].Err
	}
}

// Readier is implemented by executors that can be unable to step for a
// while (workers restarting and reloading after a crash). The scheduler
// does not step while Ready is false; queued and running requests keep
// their timeouts and cancellations meanwhile.
type Readier interface {
	Ready() bool
}

// Flusher is implemented by executors that batch releases into the next
// step (the workers' release list): the scheduler flushes them when it has
// nothing to run, so an idle server holds no KV blocks for finished
// requests.
type Flusher interface {
	Flush(ctx context.Context) error
}
