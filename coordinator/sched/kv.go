package sched

import "fmt"

// KVGeometry describes the workers' paged KV cache. The scheduler owns the
// block tables: it decides which blocks hold which sequence's positions and
// sends the tables with every step; the workers own only the memory.
type KVGeometry struct {
	// BlockSize is the number of token positions per block.
	BlockSize int
	// Blocks is the full-attention pool's size.
	Blocks int
	// SlidingBlocks is the sliding-window layers' pool size (their tables
	// only need the blocks that overlap the window).
	SlidingBlocks int
	// SlidingWindow is the window of the sliding layers (0: none).
	SlidingWindow int
}

// MaxTokens is the most positions one sequence can hold.
func (g KVGeometry) MaxTokens() int { return g.Blocks * g.BlockSize }

// Validate checks that the geometry can hold at least one token.
func (g KVGeometry) Validate() error {
	if g.BlockSize < 1 || g.Blocks < 1 || g.SlidingBlocks < 1 || g.SlidingWindow < 0 {
		return fmt.Errorf("sched: kv geometry %+v", g)
	}
	// A sliding table spans the window plus the block being filled, and
	// one more when the window straddles a block boundary.
	if g.SlidingWindow > 0 && g.SlidingBlocks < g.SlidingWindow/g.BlockSize+2 {
		return fmt.Errorf("sched: %d sliding blocks of %d cannot hold a window of %d", g.SlidingBlocks, g.BlockSize, g.SlidingWindow)
	}
	return nil
}

// blockPool is a free list of block ids.
type blockPool struct {
	free []int
}

func newBlockPool(n int) *blockPool {
	p := &blockPool{free: make([]int, n)}
	for i := range p.free {
		p.free[i] = n - 1 - i // hand out low ids first
	}
	return p
}

func (p *blockPool) take() int {
	n := len(p.free) - 1
	b := p.free[n]
	p.free = p.free[:n]
	return b
}

// kvManager keeps every running sequence's block tables: one for the
// full-attention layers, one for the sliding-window layers (entries for
// blocks wholly behind the window are released and set to -1). It is used
// from the scheduler's loop goroutine only.
type kvManager struct {
	geo           KVGeometry
	full, sliding *blockPool
}

func newKVManager(g KVGeometry) *kvManager {
	return &kvManager{geo: g, full: newBlockPool(g.Blocks), sliding: newBlockPool(g.SlidingBlocks)}
}

// reserve grows q's tables to cover positions [0, end), all or nothing,
// first releasing the sliding blocks its next token (at position from) can
// no longer see. It reports whether the blocks were there.
func (m *kvManager) reserve(q *sequence, from, end int) bool {
	bs := m.geo.BlockSize
	m.trim(q, from)
	need := (end + bs - 1) / bs
	moreFull := max(0, need-len(q.blocks))
	moreSliding := max(0, need-len(q.sliding))
	if moreFull > len(m.full.free) || moreSliding > len(m.sliding.free) {
		return false
	}
	for range moreFull {
		q.blocks = append(q.blocks, m.full.take())
	}
	for range moreSliding {
		q.sliding = append(q.sliding, m.sliding.take())
	}
	return true
}

// trim releases the sliding blocks that lie wholly before the oldest
// position a token at position next can see.
func (m *kvManager) trim(q *sequence, next int) {
	w := m.geo.SlidingWindow
	if w == 0 {
		return
	}
	first := max(0, next-w) // conservative by one position
	bs := m.geo.BlockSize
	for b := 0; (b+1)*bs <= first && b < len(q.sliding); b++ {
		if q.sliding[b] >= 0 {
			m.sliding.free = append(m.sliding.free, q.sliding[b])
			q.sliding[b] = -1
		}
	}
}

// release returns all of q's blocks; calling it again is a no-op.
func (m *kvManager) release(q *sequence) {
	m.full.free = append(m.full.free, q.blocks...)
	for _, b := range q.sliding {
		if b >= 0 {
			m.sliding.free = append(m.sliding.free, b)
		}
	}
	q.blocks, q.sliding = nil, nil
}

// KVUsage is the block pools' occupancy.
type KVUsage struct {
	Geometry                KVGeometry
	FreeBlocks, SlidingFree int
	UsedBlocks, SlidingUsed int
	Sequences               int // running sequences holding blocks
}
