package sched

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gptoss/server/coordinator/profiles"
	"github.com/gptoss/server/shared/step"
)

// sleepExec samples token 1 for everyone and sleeps a fixed time per step
// like a GPU would, recording how long it really spent, so the benchmark
// can tell the scheduler's own time per step (batch building, delivery,
// waking the consumers) from the engine's.
type sleepExec struct {
	d       time.Duration
	steps   atomic.Int64
	inSteps atomic.Int64 // nanoseconds spent inside Step
}

func (*sleepExec) Capabilities() step.Capabilities { return step.Capabilities{} }
func (*sleepExec) Release([]uint64)                {}
func (e *sleepExec) Step(_ context.Context, b *step.Batch) error {
	t := time.Now()
	for i := range b.Seqs {
		if b.Seqs[i].Sample {
			b.Seqs[i].Out = step.Token{ID: 1}
		}
	}
	time.Sleep(e.d)
	e.inSteps.Add(int64(time.Since(t)))
	e.steps.Add(1)
	return nil
}

// BenchmarkStep reports the scheduler's overhead per step (wall time per
// step minus the time inside the executor) with n running sequences whose
// consumers drain every token. b.N is the number of 1 ms steps to run.
func BenchmarkStep(b *testing.B) {
	for _, n := range []int{1, 64, 512} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			p := testProfile("p", n, 64, n)
			exec := &sleepExec{d: time.Millisecond}
			s := New(exec, profiles.Set{"p": p}, Options{MaxRunning: n})
			defer s.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for range n {
				st, err := s.Submit(ctx, &Request{Profile: p, Prompt: []int{1}, MaxTokens: 1 << 30})
				if err != nil {
					b.Fatal(err)
				}
				go func() {
					var buf []step.Token
					for {
						var err error
						if buf, _, err = st.Recv(ctx, buf[:0]); err != nil {
							return
						}
					}
				}()
			}
			time.Sleep(50 * time.Millisecond)
			start, steps0, in0 := time.Now(), exec.steps.Load(), exec.inSteps.Load()
			time.Sleep(time.Duration(b.N) * time.Millisecond)
			elapsed, steps, in := time.Since(start), exec.steps.Load()-steps0, exec.inSteps.Load()-in0
			b.ReportMetric(float64(elapsed-time.Duration(in))/float64(time.Microsecond)/float64(max(steps, 1)), "µs-overhead/step")
			b.ReportMetric(0, "ns/op")
		})
	}
}
