package collective

import (
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/gptoss/server/shared/testkit"
	"github.com/gptoss/server/shared/wire"
	"github.com/nats-io/nats.go"
)

func group(t *testing.T, world int, timeout time.Duration) []*NATS {
	t.Helper()
	srv := testkit.NATS(t)
	subjects, _ := wire.NewSubjects("test")
	var out []*NATS
	for r := range world {
		nc := testkit.Connect(t, srv)
		c, err := New(nc, subjects, 42, r, world, timeout)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		out = append(out, c)
	}
	return out
}

func TestAllReduceAndGatherAcrossConnections(t *testing.T) {
	old := chunkElems
	chunkElems = 7 // force several messages per part
	defer func() { chunkElems = old }()
	const world = 3
	cs := group(t, world, 5*time.Second)
	rng := rand.New(rand.NewPCG(1, 1))
	inputs := make([][]float32, world)
	want := make([]float32, 50)
	for r := range inputs {
		inputs[r] = make([]float32, 50)
		for i := range inputs[r] {
			inputs[r][i] = float32(rng.NormFloat64())
		}
	}
	for i := range want { // rank order, as every rank sums
		want[i] = inputs[0][i]
		for r := 1; r < world; r++ {
			want[i] += inputs[r][i]
		}
	}
	results := make([][]float32, world)
	gathered := make([][]float32, world)
	var wg sync.WaitGroup
	for r, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 { // several ops in a row, sequence numbers advance
				buf := append([]float32(nil), inputs[r]...)
				if err := c.AllReduce(buf); err != nil {
					t.Error(err)
					return
				}
				results[r] = buf
			}
			out := make([]float32, world*4)
			if err := c.AllGather([]float32{float32(r), float32(r), float32(r), float32(r)}, out); err != nil {
				t.Error(err)
			}
			gathered[r] = out
		}()
	}
	wg.Wait()
	for r := range world {
		for i := range want {
			if results[r][i] != want[i] {
				t.Fatalf("rank %d element %d: %g, want %g (bit-identical)", r, i, results[r][i], want[i])
			}
		}
		for i, v := range gathered[r] {
			if v != float32(i/4) {
				t.Fatalf("rank %d all-gather: %v", r, gathered[r])
			}
		}
	}
}

func TestMissingRankTimesOut(t *testing.T) {
	cs := group(t, 2, 200*time.Millisecond)
	start := time.Now()
	err := cs[0].AllReduce([]float32{1, 2})
	if !errors.Is(err, ErrTimeout) || time.Since(start) > 2*time.Second {
		t.Fatalf("err %v after %s", err, time.Since(start))
	}
}

// A rank that gives a step up aborts it: the other ranks' wait in that
// step ends at once with ErrAborted, not at the timeout; the next step
// pairs up again.
func TestAbortEndsTheStepAtOnce(t *testing.T) {
	cs := group(t, 2, 30*time.Second)
	for _, c := range cs {
		c.Begin(7)
	}
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- cs[0].AllReduce([]float32{1, 2}) }()
	time.Sleep(20 * time.Millisecond)
	if err := cs[1].Abort(7); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrAborted) || time.Since(start) > 5*time.Second {
			t.Fatalf("err %v after %s", err, time.Since(start))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the wait did not end on the abort")
	}
	sameSums(t, cs, 8)
}

// A step that failed halfway on one rank (it ran fewer operations than
// the others) does not shift the pairing of the next step's operations:
// they are numbered per step, and the abandoned parts are dropped.
func TestFailedStepDoesNotShiftTheNext(t *testing.T) {
	cs := group(t, 2, 300*time.Millisecond)
	for _, c := range cs {
		c.Begin(1)
	}
	// Rank 1 runs two operations of step 1 before failing; rank 0 one,
	// then times out on the second (rank 1's part of it never comes).
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = cs[1].AllReduce([]float32{1})
		_ = cs[1].AllReduce([]float32{100}) // its part of an op rank 0 pairs
	}()
	if err := cs[0].AllReduce([]float32{1}); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	_ = cs[1].AllReduce([]float32{1000}) // an op rank 0 never runs
	sameSums(t, cs, 2)
}

// sameSums runs step on every rank: three all-reduces whose sums must be
// those of this step's inputs alone.
func sameSums(t *testing.T, cs []*NATS, step uint64) {
	t.Helper()
	for _, c := range cs {
		c.Begin(step)
	}
	got := make([][]float32, len(cs))
	var wg sync.WaitGroup
	for r, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 3 {
				buf := []float32{float32(10*i + r)}
				if err := c.AllReduce(buf); err != nil {
					t.Errorf("rank %d, step %d: %v", r, step, err)
					return
				}
				got[r] = append(got[r], buf[0])
			}
		}()
	}
	wg.Wait()
	for r := range cs {
		for i, v := range got[r] {
			if want := float32(20*i + 1); v != want {
				t.Fatalf("rank %d, step %d, op %d: sum %g, want %g", r, step, i, v, want)
			}
		}
	}
}

// The largest collective operation of a tensor-parallel CPU step, the
// vocabulary-split logits of many sampled sequences (here 160 sequences of
// a 201088-token vocabulary at tp 2, 64 MB a rank), goes through the bus
// as the workers use it: NATS's default 64 MiB per-client buffer cut a
// worker off as a slow consumer at about 128 sequences.
func TestLargeGatherFitsTheBus(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 128 MB through NATS")
	}
	srv := testkit.NATS(t)
	subjects, _ := wire.NewSubjects("test")
	const world, n = 2, 100544 * 160
	cs := make([]*NATS, world)
	for r := range world {
		nc := testkit.Connect(t, srv, nats.NoEcho()) // as worker/service connects
		c, err := New(nc, subjects, 1, r, world, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		c.Begin(1)
		cs[r] = c
	}
	var wg sync.WaitGroup
	for r, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]float32, n)
			for i := range local {
				local[i] = float32(r)
			}
			out := make([]float32, world*n)
			if err := c.AllGather(local, out); err != nil {
				t.Errorf("rank %d: %v", r, err)
				return
			}
			if out[n-1] != 0 || out[n] != 1 || out[2*n-1] != 1 {
				t.Errorf("rank %d: gathered %g %g %g", r, out[n-1], out[n], out[2*n-1])
			}
		}()
	}
	wg.Wait()
}
