package cuda

import (
	"slices"
	"testing"

	"github.com/gptoss/server/worker/engine"
)

func TestMetaBuild(t *testing.T) {
	p := pools{blockSize: 4, blocks: 10, sliding: 6, hasFull: true, hasSliding: true, window: 8}
	lim := limits{maxTokens: 16, maxSeqs: 4, maxBlocks: 8, vocab: 100}

	// Sequence 0: a 5-token prefill at 0..4; sequence 1: a decode at 13,
	// whose sliding table has released block 0 (positions 0..3 are
	// before its window 6..13).
	lay := &engine.StepLayout{
		IDs: []int{1, 2, 3, 4, 5, 99}, Pos: []int{0, 1, 2, 3, 4, 13}, Seq: []int{0, 0, 0, 0, 0, 1},
		Tables: [][]int{{3, 7}, {0, 1, 2, 9}}, Sliding: [][]int{{1, 2}, {-1, 4, 5, 0}}, MaxPos: 13,
	}
	var m meta
	if err := m.build(lay, p, plan{}, lim); err != nil {
		t.Fatal(err)
	}
	if m.T != 6 || m.S != 2 || m.maxBlocks != 4 || m.maxPos != 13 {
		t.Fatalf("shape T %d S %d width %d max_pos %d", m.T, m.S, m.maxBlocks, m.maxPos)
	}
	if len(m.host) != metaLen(6, 2, 4) || metaLen(6, 2, 4) != 128 {
		t.Fatalf("length %d, metaLen %d", len(m.host), metaLen(6, 2, 4))
	}
	got := func(off, n int) []int32 { return m.host[off : off+n] }
	for _, c := range []struct {
		name string
		off  int
		want []int32
	}{
		{"ids", m.ids, []int32{1, 2, 3, 4, 5, 99}},
		{"pos", m.pos, []int32{0, 1, 2, 3, 4, 13}},
		{"seq", m.seq, []int32{0, 0, 0, 0, 0, 1}},
		// block·4 + offset: blocks 3 then 7; block 9 offset 1.
		{"full slots", m.slotF, []int32{12, 13, 14, 15, 28, 37}},
		// blocks 1 then 2; block 0 offset 1 (the sliding pool has its own ids).
		{"sliding slots", m.slotS, []int32{4, 5, 6, 7, 8, 1}},
		{"last rows", m.rows, []int32{4, 5}},
		{"full tables", m.tabF, []int32{3, 7, -1, -1, 0, 1, 2, 9}},
		{"sliding tables", m.tabS, []int32{1, 2, -1, -1, -1, 4, 5, 0}},
	} {
		if g := got(c.off, len(c.want)); !slices.Equal(g, c.want) {
			t.Errorf("%s: %v, want %v", c.name, g, c.want)
		}
		if c.off%metaAlign != 0 {
			t.Errorf("%s at %d: not aligned", c.name, c.off)
		}
	}
	if !m.isLastRows([]int{4, 5}) || m.isLastRows([]int{0, 1, 2, 3, 4, 5}) || m.isLastRows([]int{5, 4}) {
		t.Fatal("isLastRows")
	}

	// A graph step: padded to 2 sequences (the second is padding, with the
	// engine's placeholder tables), tables 8 wide, max_pos at the bucket's
	// end.
	lay = &engine.StepLayout{IDs: []int{7, 0}, Pos: []int{5, 0}, Seq: []int{0, 1},
		Tables: [][]int{{3, 7}, {0}}, Sliding: [][]int{{1, 2}, {0}}, MaxPos: 5}
	if err := m.build(lay, p, plan{pad: 1, ctxBlocks: 8}, lim); err != nil {
		t.Fatal(err)
	}
	if m.maxBlocks != 8 || m.maxPos != 31 {
		t.Fatalf("graph layout: width %d, max_pos %d", m.maxBlocks, m.maxPos)
	}
	for _, c := range []struct {
		name string
		off  int
		want []int32
	}{
		{"full slots", m.slotF, []int32{29, -1}},
		{"sliding slots", m.slotS, []int32{9, -1}},
		// The padding reads the pools' scratch blocks (10 and 6), only.
		{"full tables", m.tabF, []int32{3, 7, -1, -1, -1, -1, -1, -1, 10, -1, -1, -1, -1, -1, -1, -1}},
		{"sliding tables", m.tabS, []int32{1, 2, -1, -1, -1, -1, -1, -1, 6, -1, -1, -1, -1, -1, -1, -1}},
	} {
		if g := got(c.off, len(c.want)); !slices.Equal(g, c.want) {
			t.Errorf("graph %s: %v, want %v", c.name, g, c.want)
		}
	}

	// A model without sliding layers neither checks nor fills their slots.
	q := p
	q.hasSliding = false
	lay = &engine.StepLayout{IDs: []int{1}, Pos: []int{5}, Seq: []int{0}, Tables: [][]int{{3, 7}}, Sliding: [][]int{{-1, -1}}}
	if err := m.build(lay, q, plan{}, lim); err != nil || m.host[m.slotS] != -1 || m.host[m.slotF] != 29 {
		t.Fatalf("no sliding layers: %v, slots %d %d", err, m.host[m.slotF], m.host[m.slotS])
	}
}

func TestMetaBuildErrors(t *testing.T) {
	p := pools{blockSize: 4, blocks: 10, sliding: 6, hasFull: true, hasSliding: true, window: 8}
	lim := limits{maxTokens: 4, maxSeqs: 2, maxBlocks: 8, vocab: 100}
	one := func(pos int, full, sliding []int) *engine.StepLayout {
		return &engine.StepLayout{IDs: []int{1}, Pos: []int{pos}, Seq: []int{0}, Tables: [][]int{full}, Sliding: [][]int{sliding}}
	}
	for _, tc := range []struct {
		name string
		lay  *engine.StepLayout
		pl   plan
		want string
	}{
		{"empty", &engine.StepLayout{}, plan{}, "a step of 0 tokens"},
		{"lengths", &engine.StepLayout{IDs: []int{1}, Pos: []int{1, 2}, Seq: []int{0}, Tables: [][]int{{0}}}, plan{}, "1 ids, 2 positions"},
		{"table count", &engine.StepLayout{IDs: []int{1}, Pos: []int{1}, Seq: []int{0}, Tables: [][]int{{0}}, Sliding: [][]int{{0}, {0}}}, plan{}, "1 full and 2 sliding"},
		{"too many tokens", &engine.StepLayout{IDs: make([]int, 5), Pos: make([]int, 5), Seq: make([]int, 5), Tables: [][]int{{0}}}, plan{}, "Options.MaxTokens"},
		{"too many sequences", &engine.StepLayout{IDs: []int{1}, Pos: []int{0}, Seq: []int{0}, Tables: [][]int{{0}, {0}, {0}}}, plan{}, "Options.MaxSeqs"},
		{"bad sequence", &engine.StepLayout{IDs: []int{1}, Pos: []int{0}, Seq: []int{1}, Tables: [][]int{{0}}}, plan{}, "token 0 of sequence 1 of 1"},
		{"no tokens", &engine.StepLayout{IDs: []int{1}, Pos: []int{0}, Seq: []int{0}, Tables: [][]int{{0}, {0}}}, plan{}, "sequence 1 has no tokens"},
		{"vocabulary", &engine.StepLayout{IDs: []int{100}, Pos: []int{0}, Seq: []int{0}, Tables: [][]int{{0}}}, plan{}, "token id 100 outside"},
		{"negative position", one(-1, []int{0}, []int{0}), plan{}, "position -1"},
		{"short table", one(8, []int{3, 7}, []int{1, 2, 3}), plan{}, "position 8 beyond the block table"},
		{"full block outside the pool", one(5, []int{3, 10}, []int{1, 2}), plan{}, "block 10 for position 4 outside the pool of 10"},
		// Position 13 sees 6..13: block 1 (positions 4..7) must be there.
		{"released block in the window", one(13, []int{0, 1, 2, 3}, []int{-1, -1, 4, 5}), plan{}, "sliding table: block -1 for position 6"},
		{"sliding block outside its pool", one(1, []int{0}, []int{6}), plan{}, "outside the pool of 6"},
		{"past the limits", one(40, make([]int, 11), make([]int, 11)), plan{}, "Options.MaxContext"},
		{"past the graph's context", one(40, make([]int, 11), make([]int, 11)), plan{ctxBlocks: 8}, "beyond the graph's 8 blocks"},
		{"bad padding", one(1, []int{0}, []int{0}), plan{pad: 3}, "padding from sequence 3 of 1"},
	} {
		var m meta
		err := m.build(tc.lay, p, tc.pl, lim)
		if err == nil {
			t.Errorf("%s: no error, want %q", tc.name, tc.want)
			continue
		}
		wantErr(t, err, tc.want)
	}
}

func TestCtxBucket(t *testing.T) {
	for _, tc := range []struct{ need, limit, want int }{
		{1, 8192, 16}, {16, 8192, 16}, {17, 8192, 32}, {1000, 8192, 1024}, {5000, 8192, 8192}, {20, 24, 24}, {30, 24, 24},
	} {
		if got := ctxBucket(tc.need, tc.limit); got != tc.want {
			t.Errorf("ctxBucket(%d, %d) = %d, want %d", tc.need, tc.limit, got, tc.want)
		}
	}
}
