package pipeline

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gptoss/server/shared/step"
)

// recorder logs the operations it runs, and draws token 100+position.
type recorder struct {
	mu    sync.Mutex
	log   []string
	gate  chan struct{} // when set, each step waits for it
	input [][]int
}

func (r *recorder) Step(ctx context.Context, b *step.Batch) error {
	if r.gate != nil {
		select {
		case <-r.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range b.Seqs {
		st := &b.Seqs[i]
		r.log = append(r.log, "step")
		r.input = append(r.input, slices.Clone(st.Tokens))
		st.Out = step.Token{ID: 100 + st.Pos}
	}
	return nil
}

func (r *recorder) Release(ids []uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, "release")
}

func (r *recorder) Capabilities() step.Capabilities { return step.Capabilities{} }

// Steps and releases run in submission order, each step on its own copy:
// the caller may reuse its batch and slices at once, and sees the outputs
// only through wait.
func TestOrderAndCopies(t *testing.T) {
	r := &recorder{gate: make(chan struct{})}
	p := New(r)
	defer p.Close()
	toks := []int{1, 2}
	b1 := &step.Batch{Seqs: []step.Seq{{ID: 1, Tokens: toks, Sample: true}}}
	w1 := p.Submit(context.Background(), b1)
	p.Release([]uint64{9})
	toks[0] = 77 // reused by the caller while the step waits
	b2 := &step.Batch{Seqs: []step.Seq{{ID: 1, Tokens: []int{3}, Pos: 2, Sample: true}}}
	w2 := p.Submit(context.Background(), b2)
	if b1.Seqs[0].Out.ID != 0 {
		t.Fatal("outputs written before wait")
	}
	close(r.gate)
	if err := w1(); err != nil || b1.Seqs[0].Out.ID != 100 {
		t.Fatalf("step 1: %v, out %+v", err, b1.Seqs[0].Out)
	}
	if err := w2(); err != nil || b2.Seqs[0].Out.ID != 102 {
		t.Fatalf("step 2: %v, out %+v", err, b2.Seqs[0].Out)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !slices.Equal(r.log, []string{"step", "release", "step"}) || !slices.Equal(r.input[0], []int{1, 2}) {
		t.Fatalf("ran %v on %v", r.log, r.input)
	}
}

// A cancelled step's wait returns at once, without touching the batch.
func TestAbandon(t *testing.T) {
	r := &recorder{gate: make(chan struct{})}
	p := New(r)
	defer p.Close()
	ctx, cancel := context.WithCancel(context.Background())
	b := &step.Batch{Seqs: []step.Seq{{ID: 1, Tokens: []int{1}, Sample: true}}}
	wait := p.Submit(ctx, b)
	cancel()
	done := make(chan error, 1)
	go func() { done <- wait() }()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("wait: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("an abandoned step's wait blocked")
	}
	if b.Seqs[0].Out.ID != 0 {
		t.Fatal("an abandoned step wrote its outputs")
	}
	close(r.gate)
}
