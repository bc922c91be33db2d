package startup

import (
	"context"
	"sync/atomic"

	"github.com/gptoss/server/shared/step"
)

// Executor is the scheduler's executor while the engine starts: not
// ready, with no capabilities, until Attach hands it the real one, to
// which it then forwards everything (Readier and Flusher included). The
// scheduler and the API are built before the port opens; the workers come
// minutes later.
type Executor struct {
	real atomic.Pointer[box]
}

type box struct{ step.Executor }

// Attach makes x the executor. Call it once, when the model is loaded.
func (e *Executor) Attach(x step.Executor) { e.real.Store(&box{x}) }

func (e *Executor) get() step.Executor {
	if b := e.real.Load(); b != nil {
		return b.Executor
	}
	return nil
}

// Step runs on the real executor; before it is attached, it fails (the
// scheduler does not step an unready executor, and the API admits no
// request before the start-up is over).
func (e *Executor) Step(ctx context.Context, b *step.Batch) error {
	x := e.get()
	if x == nil {
		return errNotReady
	}
	return x.Step(ctx, b)
}

// Submit forwards to the real executor: without waiting when it pipelines
// (step.Pipeliner), else running the step at once.
func (e *Executor) Submit(ctx context.Context, b *step.Batch) func() error {
	if p, ok := e.get().(step.Pipeliner); ok {
		return p.Submit(ctx, b)
	}
	err := e.Step(ctx, b)
	return func() error { return err }
}

// Release forwards to the real executor (nothing is held before it).
func (e *Executor) Release(ids []uint64) {
	if x := e.get(); x != nil {
		x.Release(ids)
	}
}

// Capabilities are the real executor's, none before it.
func (e *Executor) Capabilities() step.Capabilities {
	if x := e.get(); x != nil {
		return x.Capabilities()
	}
	return step.Capabilities{}
}

// Ready is false until attached, then the real executor's readiness.
func (e *Executor) Ready() bool {
	x := e.get()
	if x == nil {
		return false
	}
	if r, ok := x.(step.Readier); ok {
		return r.Ready()
	}
	return true
}

// Flush forwards to a real executor that batches its releases.
func (e *Executor) Flush(ctx context.Context) error {
	if f, ok := e.get().(step.Flusher); ok {
		return f.Flush(ctx)
	}
	return nil
}
