// Package parallel runs independent items on every core: the per-sequence
// work of a step, on both sides of the NATS boundary (the coordinator's
// token masks, the workers' samplers), where items are few (a batch) and
// uneven (a mask inside a JSON string costs microseconds, one at a new
// lexer state a millisecond).
package parallel

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// Each runs f(0..n-1) on up to GOMAXPROCS goroutines, each taking the next
// index as it finishes one, so uneven items balance; it returns when all
// are done. With one core or one item it runs them in the caller.
func Each(n int, f func(int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 {
		for i := range n {
			f(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				f(i)
			}
		})
	}
	wg.Wait()
}
