package sched

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gptoss/server/shared/step"
)

// sequence is one request inside the scheduler. Fields above mu are fixed at
// Submit (enqueued is reset by a preemption, on the loop goroutine); fields
// below belong to the loop goroutine.
type sequence struct {
	id       uint64
	req      *Request
	ctx      context.Context
	enqueued time.Time
	notify   chan struct{}
	stopped  atomic.Bool // Stream.Cancel was called

	mu      sync.Mutex
	pending []step.Token // delivered, not yet received; guarded by mu
	final   *Final       // guarded by mu

	admitted  time.Time
	tokens    []int // prompt, then every generated token
	prefilled int   // leading tokens held in the executor's KV cache
	generated int
	stepIdx   int // index in the step.Batch being built, -1 when not in it
	// In submitted steps not yet delivered (the pipelined loop): ahead
	// positions fed, aheadDraws tokens drawn, inFlight entries. The
	// sequence's next step starts at prefilled+ahead, and the draws
	// are inputs its next step Follows.
	ahead, aheadDraws, inFlight int
	// running: in the batch (admitted and not retired); with id, it tells
	// a submitted step's entry still stands for this sequence.
	running bool
	// leave marks a sequence that a delivered step ended (finished, or
	// preempted: requeue), for deliver's retire.
	leave, requeue bool
	// group is the suspect group of a sequence that was in a failed step
	// (0: clean), and good the steps it has run since without failure
	// (failBatch, build).
	group uint64
	good  int
	// Block tables (when the scheduler manages the KV cache): full
	// attention, and sliding window with -1 behind the window.
	blocks, sliding []int
	// The prefix cache's view: the chain hash of the first cachedBlocks
	// blocks, which are in the cache (or were looked for).
	chain        uint64
	cachedBlocks int
	// reused is how many prompt tokens the prefix cache supplied at the
	// sequence's first admission (usage's cached tokens).
	reused  int
	matched bool // the prefix cache was asked once
	// written is how many prompt tokens this sequence put into the
	// prefix cache (usage's cache writes).
	written int
	// guideErr is the Guide's failure to compute this step's mask.
	guideErr error
}

// dead reports whether the sequence must be dropped and why.
func (q *sequence) dead() (FinishReason, error, bool) {
	if q.stopped.Load() {
		return FinishCancelled, nil, true
	}
	if err := q.ctx.Err(); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return FinishError, ErrDeadline, true
		}
		return FinishCancelled, nil, true
	}
	return "", nil, false
}

// ErrDeadline: the request ran past its deadline (the profile's
// request_timeout).
var ErrDeadline = errors.New("sched: request deadline exceeded")

func (q *sequence) push(t step.Token) {
	q.mu.Lock()
	q.pending = append(q.pending, t)
	q.mu.Unlock()
	q.signal()
}

// close ends the sequence with f (the first close wins) and frees its
// Guide. Called on the loop goroutine only.
func (q *sequence) close(f *Final) {
	if q.req.Guide != nil {
		q.req.Guide.Close()
	}
	q.mu.Lock()
	if q.final == nil {
		q.final = f
	}
	q.mu.Unlock()
	q.signal()
}

func (q *sequence) signal() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// Stream is the caller's end of a submitted sequence. Recv and Cancel may be
// called from different goroutines; Recv from one at a time.
type Stream struct {
	seq *sequence
}

// Recv waits for the next tokens. It appends every token delivered since the
// last call to buf and returns it, with the Final once the sequence ended
// (tokens delivered before the end come in the same call). It returns
// ctx.Err() if ctx ends first.
func (s *Stream) Recv(ctx context.Context, buf []step.Token) ([]step.Token, *Final, error) {
	q := s.seq
	for {
		q.mu.Lock()
		if len(q.pending) > 0 || q.final != nil {
			buf = append(buf, q.pending...)
			clear(q.pending)
			q.pending = q.pending[:0]
			f := q.final
			q.mu.Unlock()
			return buf, f, nil
		}
		q.mu.Unlock()
		select {
		case <-q.notify:
		case <-ctx.Done():
			return buf, nil, ctx.Err()
		}
	}
}

// Cancel stops generation (for example when a stop string matched or the
// client left). The scheduler drops the sequence and frees its state before
// the next step; Recv then returns a Final with FinishCancelled.
func (s *Stream) Cancel() {
	s.seq.stopped.Store(true)
}

// PromptTokens is the length of the submitted prompt.
func (s *Stream) PromptTokens() int { return len(s.seq.req.Prompt) }
