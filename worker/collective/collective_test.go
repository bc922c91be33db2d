package collective

import (
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/gptoss/server/shared/testkit"
	"github.com/gptoss/server/shared/wire"
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
