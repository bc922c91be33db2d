package cuda

import (
	"testing"

	"github.com/gptoss/server/shared/model"
	"github.com/gptoss/server/worker/engine"
)

// testConfig is a small gpt-oss: two layers (the first slides), GQA, a
// window of 8, a vocabulary that is no power of two.
func testConfig() model.Config {
	c := model.Presets["tiny"].Architecture()
	c.Layers, c.Hidden, c.Heads, c.KVHeads, c.HeadDim = 2, 64, 4, 2, 16
	c.Experts, c.ExpertsPerToken, c.Intermediate, c.Vocab = 4, 2, 64, 302
	c.SlidingWindow, c.MaxPositions = 8, 512
	return c
}

func TestOptionsResolve(t *testing.T) {
	w := engine.DummyWeights(testConfig(), 1, 0)
	o, err := Options{}.resolve(w)
	if err != nil {
		t.Fatal(err)
	}
	if o.BlockSize != 16 || o.MemoryUtilization != 0.9 || o.MaxTokens != 8192 || o.MaxSeqs != 1024 ||
		o.MaxContext != 512 || o.Graphs {
		t.Fatalf("defaults %+v", o)
	}
	if o, _ := (Options{MaxTokens: 100}).resolve(w); o.MaxSeqs != 100 {
		t.Fatalf("max seqs %d with 100 tokens", o.MaxSeqs)
	}
	shard, err := w.Shard(1, 2)
	if err != nil {
		t.Fatal(err)
	}
	id := make([]byte, NCCLIDBytes)
	if _, err := (Options{NCCL: &NCCL{ID: id, Ranks: 2, Rank: 1}}).resolve(shard); err != nil {
		t.Fatal(err)
	}
	if _, err := (Options{NCCL: &NCCL{ID: id, Ranks: 1, Rank: 0}}).resolve(w); err != nil {
		t.Fatalf("a one-rank communicator for whole weights: %v", err)
	}
	big := testConfig()
	big.HeadDim = 512
	for _, tc := range []struct {
		o    Options
		w    *engine.Weights
		want string
	}{
		{Options{}, nil, "no weights"},
		{Options{Device: -1}, w, "device -1"},
		{Options{BlockSize: -4}, w, "block size -4"},
		{Options{Blocks: -1}, w, "must not be negative"},
		{Options{SlidingBlocks: -1}, w, "must not be negative"},
		{Options{MemoryUtilization: 1.5}, w, "memory utilization 1.5"},
		{Options{MemoryUtilization: -0.1}, w, "memory utilization"},
		{Options{MaxTokens: -1}, w, "must be positive"},
		{Options{MaxTokens: 8, MaxSeqs: 9}, w, "max sequences 9 above max tokens 8"},
		{Options{MaxContext: -5}, w, "max context"},
		{Options{}, shard, "needs an NCCL communicator"},
		{Options{NCCL: &NCCL{ID: id[:5], Ranks: 2, Rank: 1}}, shard, "NCCL id of 5 bytes"},
		{Options{NCCL: &NCCL{ID: id, Ranks: 2, Rank: 0}}, shard, "NCCL rank 0 of 2 for weights of rank 1 of 2"},
		{Options{}, &engine.Weights{Config: big, Part: w.Part}, "head_dim 512"},
	} {
		_, err := tc.o.resolve(tc.w)
		wantErr(t, err, tc.want)
	}
}

func TestPoolSizes(t *testing.T) {
	c := testConfig() // one full, one sliding layer
	kvDim := c.KVHeads * c.HeadDim
	bb := kvBlockBytes(4, kvDim) // 4 tokens × 32 × K,V × bf16 = 512 bytes
	if bb != 512 {
		t.Fatalf("block bytes %d", bb)
	}
	for _, tc := range []struct {
		name                 string
		budget               int64
		blocks, sliding, seq int
		full, slide          int
		err                  string
	}{
		// Explicit sizes are taken as they are; sliding 0 means as many.
		{name: "explicit", budget: 0, blocks: 10, sliding: 3, full: 10, slide: 3},
		{name: "explicit shared", blocks: 10, full: 10, slide: 10},
		// From memory: the window of 4×2 sequences is 8 × (8/4+1) = 24
		// sliding blocks (+1 scratch); the full pool the rest, less its
		// scratch block: 100 blocks' worth → 100-25-1 = 74.
		{name: "from memory", budget: 100 * bb, seq: 2, full: 74, slide: 24},
		{name: "sliding given", budget: 100 * bb, sliding: 9, seq: 2, full: 89, slide: 9},
		{name: "too small", budget: 26 * bb, seq: 2, err: "no room for the KV cache"},
	} {
		f, s, err := poolSizes(&c, kvDim, 4, tc.budget, tc.blocks, tc.sliding, tc.seq)
		if tc.err != "" {
			wantErr(t, err, tc.err)
			continue
		}
		if err != nil || f != tc.full || s != tc.slide {
			t.Errorf("%s: %d full, %d sliding, %v; want %d, %d", tc.name, f, s, err, tc.full, tc.slide)
		}
	}
	// All layers sliding: one pool size for both.
	c.LayerTypes = []string{"sliding_attention", "sliding_attention"}
	if f, s, err := poolSizes(&c, kvDim, 4, 1000*bb, 0, 0, 2); err != nil || f != 24 || s != 24 {
		t.Fatalf("all sliding: %d %d %v", f, s, err)
	}
}

func TestArena(t *testing.T) {
	var grown []int64
	next := uintptr(1 << 20)
	a := arena{min: 1024, grow: func(n int64) (uintptr, error) {
		grown = append(grown, n)
		p := next
		next += uintptr(n) + 4096
		return p, nil
	}}
	seq := func() []uintptr {
		var out []uintptr
		for _, n := range []int64{10, 300, 700, 2000, 1} {
			p, err := a.alloc(n)
			if err != nil {
				t.Fatal(err)
			}
			if p%arenaAlign != 0 {
				t.Fatalf("piece at %#x not aligned", p)
			}
			out = append(out, p)
		}
		return out
	}
	first := seq()
	a.reset()
	a.frozen = true // no growth allowed: the same requests fit
	second := seq()
	if len(first) != len(second) {
		t.Fatal("lengths")
	}
	for i := range first {
		if first[i] != second[i] {
			t.Fatalf("request %d: %#x then %#x", i, first[i], second[i])
		}
	}
	// 10 and 300 (256+512) fit the first 1024-byte chunk; 700 does not
	// (768 more), so a second chunk; 2000 a third of its own size (2048,
	// full), so 1 a fourth.
	if len(grown) != 4 || grown[0] != 1024 || grown[1] != 1024 || grown[2] != 2048 || grown[3] != 1024 {
		t.Fatalf("grew %v", grown)
	}
	if _, err := a.alloc(1 << 20); err == nil {
		t.Fatal("a frozen arena grew")
	}
	if a.size() != 5120 {
		t.Fatalf("size %d", a.size())
	}
}
