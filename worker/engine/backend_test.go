package engine

import (
	"fmt"
	"strings"
	"testing"
)

// opaque hides the CPU backend's type from the model, so the forward pass
// takes the path every other backend takes: logits computed in backend
// tensors and read back, the collective bound when the backend is made.
type opaque struct{ Backend }

// The forward pass gives bit-identical logits through NewModelOn with a
// backend of unknown type as through NewModel, whole and split two ways.
func TestModelOnBackend(t *testing.T) {
	cfg := tinyConfig()
	w := DummyWeights(cfg, 1, 0)
	seqs := []Seq{
		{Tokens: []int{1, 2, 3, 4, 5, 6, 7, 8, 9}, Blocks: []int{0, 1}, AllLogits: true},
		{Tokens: []int{200, 201}, Blocks: []int{2}},
	}
	for _, tp := range []int{1, 2} {
		t.Run(fmt.Sprintf("tp%d", tp), func(t *testing.T) {
			ref := newTPGroup(t, w, tp, 8)
			colls := NewLocalGroup(tp)
			g := &tpGroup{}
			for r := range tp {
				sw, err := w.Shard(r, tp)
				if err != nil {
					t.Fatal(err)
				}
				cc := sw.CacheConfig()
				cache, err := NewKVCache(&cc, 8, 0, 16)
				if err != nil {
					t.Fatal(err)
				}
				m, err := NewModelOn(opaque{NewCPU(sw, cache, colls[r])})
				if err != nil {
					t.Fatal(err)
				}
				if m.Cache != nil {
					t.Error("a backend of unknown type exposes a CPU cache")
				}
				if got, want := m.Geometry(), cache.Geometry(); got != want {
					t.Errorf("geometry %+v, want %+v", got, want)
				}
				g.ranks = append(g.ranks, m)
			}
			for step := range 3 {
				want, err := ref.step(seqs)
				if err != nil {
					t.Fatal(err)
				}
				got, err := g.step(seqs)
				if err != nil {
					t.Fatal(err)
				}
				for s := range want {
					if len(got[s]) != len(want[s]) {
						t.Fatalf("step %d, sequence %d: %d rows, want %d", step, s, len(got[s]), len(want[s]))
					}
					for i := range want[s] {
						if d := maxDiff(got[s][i], want[s][i]); d != 0 {
							t.Fatalf("step %d, sequence %d, row %d differs by %g", step, s, i, d)
						}
					}
				}
				// The next step decodes one token more in each sequence.
				seqs = []Seq{
					{Tokens: []int{argmax(want[0][len(want[0])-1])}, Pos: 9 + step, Blocks: []int{0, 1}},
					{Tokens: []int{argmax(want[1][0])}, Pos: 2 + step, Blocks: []int{2}},
				}
			}
		})
	}
}

func TestModelOnChecks(t *testing.T) {
	cfg := tinyConfig()
	w := DummyWeights(cfg, 1, 0)
	other := cfg
	other.KVHeads = 2
	bad, _ := NewKVCache(&other, 4, 0, 16)
	if _, err := NewModel(w, bad); err == nil || !strings.Contains(err.Error(), "geometry") {
		t.Errorf("a cache of another geometry: %v", err)
	}
	if _, err := NewModelOn(NewCPU(w, nil, nil)); err == nil {
		t.Error("a CPU backend without a cache ran")
	}

	// One table for both kinds of layers must fit the smaller sliding pool.
	cache, _ := NewKVCache(&cfg, 8, 2, 4)
	m, err := NewModel(w, cache)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Step([]Seq{{Tokens: []int{1, 2}, Blocks: []int{1}}}); err != nil {
		t.Fatalf("a table inside both pools: %v", err)
	}
	if _, err := m.Step([]Seq{{Tokens: []int{1, 2}, Blocks: []int{5}}}); err == nil || !strings.Contains(err.Error(), "sliding") {
		t.Fatalf("block 5 of a sliding pool of 2: %v", err)
	}
}

// Ops refuse tensors of the wrong shape instead of reading past them.
func TestCPUShapes(t *testing.T) {
	cfg := tinyConfig()
	w := DummyWeights(cfg, 1, 0)
	cache, _ := NewKVCache(&cfg, 4, 0, 16)
	b := NewCPU(w, cache, nil)
	if err := b.Begin(&StepLayout{IDs: []int{1}, Pos: []int{0}, Seq: []int{0}, Tables: [][]int{{0}}, Sliding: [][]int{{0}}}); err != nil {
		t.Fatal(err)
	}
	defer b.EndStep()
	x, _ := b.Tensor(1, cfg.Hidden)
	small, _ := b.Tensor(1, 3)
	two, _ := b.Tensor(2, cfg.Hidden)
	for name, err := range map[string]error{
		"embed":        b.Embed(two),
		"norm":         b.RMSNorm(x, Param{Layer: 0, Name: ParamAttnNorm}, small),
		"norm param":   b.RMSNorm(x, Param{Layer: 0, Name: ParamQ}, x),
		"linear":       b.Linear(Param{Layer: 0, Name: ParamQ}, x, true, small),
		"unembed bias": b.Linear(Param{Layer: -1, Name: ParamUnembed}, x, true, small),
		"attention":    b.Attention(cfg.Layers, x, x),
		"gather":       b.GatherRows(x, []int{1}, x),
		"read":         b.Read(x, make([]float32, 3)),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
