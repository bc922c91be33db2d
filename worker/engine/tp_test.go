package engine

import (
	"fmt"
	"sync"
	"testing"
)

// tpGroup runs tp ranks of one model in lockstep, as worker processes
// would, joined by a LocalGroup.
type tpGroup struct {
	ranks []*Model
}

func newTPGroup(t testing.TB, w *Weights, tp, blocks int) *tpGroup {
	t.Helper()
	colls := NewLocalGroup(tp)
	g := &tpGroup{}
	for r := range tp {
		sw, err := w.Shard(r, tp)
		if err != nil {
			t.Fatal(err)
		}
		cc := sw.CacheConfig()
		cache, err := NewKVCache(&cc, blocks, 0, 16)
		if err != nil {
			t.Fatal(err)
		}
		m, err := NewModel(sw, cache)
		if err != nil {
			t.Fatal(err)
		}
		m.Coll = colls[r]
		g.ranks = append(g.ranks, m)
	}
	return g
}

// step runs the same step on every rank and checks they agree exactly.
func (g *tpGroup) step(seqs []Seq) ([][][]float32, error) {
	outs := make([][][][]float32, len(g.ranks))
	errs := make([]error, len(g.ranks))
	var wg sync.WaitGroup
	for r, m := range g.ranks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[r], errs[r] = m.Step(seqs)
		}()
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("rank %d: %w", r, err)
		}
	}
	for r := 1; r < len(outs); r++ {
		for s := range outs[0] {
			for i := range outs[0][s] {
				if d := maxDiff(outs[0][s][i], outs[r][s][i]); d != 0 {
					return nil, fmt.Errorf("rank %d's logits differ from rank 0's by %g", r, d)
				}
			}
		}
	}
	return outs[0], nil
}

// Tensor parallelism of degree 2 and 4 reproduces transformers' logits and
// greedy tokens on every golden model whose heads, experts and vocabulary
// split that many ways.
func TestTensorParallelGolden(t *testing.T) {
	for _, gm := range loadGoldens(t) {
		for _, tp := range []int{2, 4} {
			c := gm.cfg
			if c.KVHeads%tp != 0 || c.Heads%tp != 0 || c.Experts%tp != 0 || c.Vocab%tp != 0 {
				continue
			}
			t.Run(fmt.Sprintf("%s/tp%d", gm.name, tp), func(t *testing.T) {
				g := newTPGroup(t, gm.m.W, tp, 64)
				e := gm.exp
				table := make([]int, 0, 64)
				for b := range (len(e.Prompt)+len(e.DecodeTokens))/16 + 1 {
					table = append(table, b)
				}
				worst := 0.0
				out, err := g.step([]Seq{{Tokens: e.Prompt, Blocks: table, AllLogits: true}})
				if err != nil {
					t.Fatal(err)
				}
				for i := range e.PrefillLogits {
					check(t, "prefill", out[0][i], e.PrefillLogits[i], &worst)
				}
				next, pos := argmax(out[0][len(e.Prompt)-1]), len(e.Prompt)
				for i, want := range e.DecodeTokens {
					if next != want {
						t.Fatalf("greedy token %d: %d, transformers %d", i, next, want)
					}
					if out, err = g.step([]Seq{{Tokens: []int{next}, Pos: pos, Blocks: table}}); err != nil {
						t.Fatal(err)
					}
					check(t, "decode", out[0][0], e.DecodeLogits[i], &worst)
					next, pos = argmax(out[0][0]), pos+1
				}
				t.Logf("tp=%d: max |Δlogit| vs transformers %.3g", tp, worst)
			})
		}
	}
}

func TestShardErrors(t *testing.T) {
	w := DummyWeights(tinyConfig(), 1, 0) // 8 heads, 4 KV heads, 8 experts, vocab 300
	for _, tc := range []struct{ rank, tp int }{{0, 3}, {2, 2}, {-1, 2}, {0, 8}} {
		if _, err := w.Shard(tc.rank, tc.tp); err == nil {
			t.Errorf("rank %d of %d: no error", tc.rank, tc.tp)
		}
	}
	s, err := w.Shard(1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Shard(0, 2); err == nil {
		t.Error("sharding a shard")
	}
	cc := s.CacheConfig()
	cache, _ := NewKVCache(&cc, 4, 0, 16)
	m, _ := NewModel(s, cache)
	if _, err := m.Step([]Seq{{Tokens: []int{1}, Blocks: []int{0}}}); err == nil {
		t.Error("a shard without a collective ran")
	}
}
