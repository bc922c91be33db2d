package main

import (
	"fmt"
	"math/rand/v2"

	"github.com/gptoss/server/worker/engine"
)

// kvState owns the block tables of the sequences a check runs, in the
// backends' two pools. Blocks are handed out from shuffled free lists, so
// a sequence's blocks are scattered through the pool as a busy server's
// are: a kernel that assumed contiguous tables, or indexed the pool with
// the position instead of the table, reads the wrong keys.
type kvState struct {
	bs, window      int
	freeFull        []int
	freeSlide       []int
	tables, sliding [][]int
	// slideLo[s] is the first position sequence s's sliding table still
	// needs: blocks wholly before it are −1, and grow does not allocate
	// them.
	slideLo []int
}

func newKVState(geo engine.KVGeometry, window int, rng *rand.Rand) *kvState {
	k := &kvState{bs: geo.BlockSize, window: window}
	k.freeFull = rng.Perm(geo.Blocks)
	slide := geo.SlidingBlocks
	if slide == 0 {
		slide = geo.Blocks
	}
	k.freeSlide = rng.Perm(slide)
	return k
}

// newSeq adds an empty sequence and returns its index.
func (k *kvState) newSeq() int {
	k.tables = append(k.tables, nil)
	k.sliding = append(k.sliding, nil)
	k.slideLo = append(k.slideLo, 0)
	return len(k.tables) - 1
}

// grow makes sequence s's tables cover positions [0, n).
func (k *kvState) grow(s, n int) error {
	need := (n + k.bs - 1) / k.bs
	for len(k.tables[s]) < need {
		b := len(k.tables[s])
		released := (b+1)*k.bs <= k.slideLo[s]
		if len(k.freeFull) == 0 || (len(k.freeSlide) == 0 && !released) {
			return fmt.Errorf("kv pools exhausted growing sequence %d to %d positions", s, n)
		}
		k.tables[s] = append(k.tables[s], pop(&k.freeFull))
		if released {
			k.sliding[s] = append(k.sliding[s], -1)
		} else {
			k.sliding[s] = append(k.sliding[s], pop(&k.freeSlide))
		}
	}
	return nil
}

func pop(list *[]int) int {
	n := len(*list) - 1
	b := (*list)[n]
	*list = (*list)[:n]
	return b
}

// trim releases (sets to −1) sequence s's sliding-window blocks that lie
// wholly before position first, as the scheduler does: a sliding-layer
// kernel that reads them reads a released block.
func (k *kvState) trim(s, first int) {
	k.slideLo[s] = max(k.slideLo[s], first)
	t := k.sliding[s]
	for b := 0; (b+1)*k.bs <= first && b < len(t); b++ {
		if t[b] >= 0 {
			k.freeSlide = append(k.freeSlide, t[b])
			t[b] = -1
		}
	}
}

// part is one sequence's tokens in a step: positions [pos, pos+n).
type part struct{ seq, pos, n int }

// layout builds a step over parts with random token ids, growing the
// tables as needed and trimming each sliding table to its window.
func (k *kvState) layout(parts []part, vocab int, rng *rand.Rand) (*engine.StepLayout, error) {
	lay := &engine.StepLayout{}
	for i, p := range parts {
		k.trim(p.seq, p.pos-k.window+1)
		if err := k.grow(p.seq, p.pos+p.n); err != nil {
			return nil, err
		}
		for j := range p.n {
			lay.IDs = append(lay.IDs, rng.IntN(vocab))
			lay.Pos = append(lay.Pos, p.pos+j)
			lay.Seq = append(lay.Seq, i)
		}
		lay.Tables = append(lay.Tables, k.tables[p.seq])
		lay.Sliding = append(lay.Sliding, k.sliding[p.seq])
		lay.MaxPos = max(lay.MaxPos, p.pos+p.n-1)
	}
	return lay, nil
}
