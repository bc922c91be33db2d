// Package pipeline runs an in-process executor's steps on a goroutine of
// their own, so that the scheduler can submit step k+1 while step k runs
// (step.Pipeliner): the mock engine in the coordinator, and the engine
// executor where tests run it in process. The workers need none of it: the
// remote client pipelines over NATS, where the worker's job queue holds the
// next step while the model runs the current one.
//
// The wrapped executor must honour step.Seq.Follow. It sees every step
// and release in the order they were submitted, one at a time, on the
// pipeline's goroutine, with its own copy of each batch (step.Batch.Clone),
// so nothing the scheduler reuses is read behind its back.
package pipeline

import (
	"context"
	"errors"
	"sync"

	"github.com/gptoss/server/shared/step"
)

// Executor is a step.Pipeliner over an executor that runs steps
// synchronously.
type Executor struct {
	inner step.Executor
	ops   chan op
	done  chan struct{}
	once  sync.Once
}

// op is one step or one release, in submission order.
type op struct {
	ctx     context.Context
	batch   *step.Batch // nil for a release
	release []uint64
	result  chan error // a step's outcome (buffered)
}

// depth bounds the operations queued ahead of the goroutine; the scheduler
// keeps at most two steps in flight, and releases between them.
const depth = 64

// New starts the goroutine that runs inner's steps. Close stops it.
func New(inner step.Executor) *Executor {
	e := &Executor{inner: inner, ops: make(chan op, depth), done: make(chan struct{})}
	go e.run()
	return e
}

// Inner is the wrapped executor.
func (e *Executor) Inner() step.Executor { return e.inner }

func (e *Executor) run() {
	defer close(e.done)
	for o := range e.ops {
		if o.batch == nil {
			e.inner.Release(o.release)
			continue
		}
		o.result <- e.inner.Step(o.ctx, o.batch)
	}
}

// Submit queues a copy of b and returns the wait for its outcome.
func (e *Executor) Submit(ctx context.Context, b *step.Batch) func() error {
	c := b.Clone()
	result := make(chan error, 1)
	e.ops <- op{ctx: ctx, batch: c, result: result}
	return func() error {
		select {
		case err := <-result:
			b.CopyOut(c)
			return err
		case <-ctx.Done():
			// The step may still run: its outputs stay in the copy.
			return errors.Join(errors.New("pipeline: step abandoned"), ctx.Err())
		}
	}
}

// Step runs b and waits for it.
func (e *Executor) Step(ctx context.Context, b *step.Batch) error { return e.Submit(ctx, b)() }

// Release queues the release behind the steps submitted so far.
func (e *Executor) Release(ids []uint64) {
	e.ops <- op{release: append([]uint64(nil), ids...)}
}

// Ready is the wrapped executor's readiness (step.Readier), true when it
// does not report one.
func (e *Executor) Ready() bool {
	if r, ok := e.inner.(step.Readier); ok {
		return r.Ready()
	}
	return true
}

// Capabilities are the wrapped executor's.
func (e *Executor) Capabilities() step.Capabilities { return e.inner.Capabilities() }

// Close stops the goroutine after the operations already queued. No
// method may be called after it.
func (e *Executor) Close() {
	e.once.Do(func() { close(e.ops) })
	<-e.done
}
