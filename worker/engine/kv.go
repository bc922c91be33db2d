package engine

import (
	"errors"
	"fmt"
	"sync"

	"github.com/gptoss/server/shared/model"
)

// KVCache is the paged key/value memory of one worker: per layer, a pool of
// fixed-size blocks of BlockSize token slots. Which blocks hold which
// sequence's positions is decided outside (block tables come with each
// step), so the scheduler can share, free and reuse blocks without the
// cache knowing about sequences. Keys are stored after RoPE.
//
// Full-attention layers and sliding-window layers have separate pools with
// separate block ids: a sequence's sliding table only needs blocks that
// still overlap the window, so the owner may free (mark -1) entries that
// fell behind it and long contexts cost sliding layers a constant amount.
type KVCache struct {
	BlockSize     int
	Blocks        int // full-attention pool size
	SlidingBlocks int // sliding-window pool size
	kvDim         int // KV heads × head dim
	sliding       []bool
	k, v          [][]float32 // per layer: pool blocks × BlockSize × kvDim
}

// NewKVCache allocates the pools: blocks blocks for each full-attention
// layer and slidingBlocks for each sliding-window layer (0 means the same
// as blocks), each of blockSize tokens.
func NewKVCache(cfg *model.Config, blocks, slidingBlocks, blockSize int) (*KVCache, error) {
	if slidingBlocks == 0 {
		slidingBlocks = blocks
	}
	if blocks < 1 || slidingBlocks < 1 || blockSize < 1 {
		return nil, fmt.Errorf("engine: kv cache of %d (sliding %d) blocks of %d tokens", blocks, slidingBlocks, blockSize)
	}
	c := &KVCache{BlockSize: blockSize, Blocks: blocks, SlidingBlocks: slidingBlocks, kvDim: cfg.KVHeads * cfg.HeadDim}
	for l := range cfg.Layers {
		n := blocks
		if cfg.Sliding(l) {
			n = slidingBlocks
		}
		c.sliding = append(c.sliding, cfg.Sliding(l))
		c.k = append(c.k, make([]float32, n*blockSize*c.kvDim))
		c.v = append(c.v, make([]float32, n*blockSize*c.kvDim))
	}
	return c, nil
}

// slot returns the offset of position pos under a block table, in a pool
// of pool blocks.
func (c *KVCache) slot(table []int, pos, pool int) (int, error) {
	b := pos / c.BlockSize
	if b >= len(table) {
		return 0, fmt.Errorf("engine: position %d beyond the block table (%d blocks of %d)", pos, len(table), c.BlockSize)
	}
	blk := table[b]
	if blk < 0 || blk >= pool {
		return 0, fmt.Errorf("engine: block %d for position %d out of range (pool of %d)", blk, pos, pool)
	}
	return (blk*c.BlockSize + pos%c.BlockSize) * c.kvDim, nil
}

// Geometry is the cache's block size and pool sizes.
func (c *KVCache) Geometry() KVGeometry {
	return KVGeometry{BlockSize: c.BlockSize, Blocks: c.Blocks, SlidingBlocks: c.SlidingBlocks}
}

// check verifies that table maps every position in [from, to] to a block
// of a pool of pool blocks. The forward pass checks every table against
// its backend's geometry before a step, so no backend reads or writes
// outside its pools.
func (g KVGeometry) check(table []int, from, to, pool int) error {
	if g.BlockSize < 1 {
		return fmt.Errorf("engine: kv cache blocks of %d tokens", g.BlockSize)
	}
	for b := from / g.BlockSize; b <= to/g.BlockSize; b++ {
		if b >= len(table) {
			return fmt.Errorf("engine: position %d beyond the block table (%d blocks of %d)", max(from, b*g.BlockSize), len(table), g.BlockSize)
		}
		if blk := table[b]; blk < 0 || blk >= pool {
			return fmt.Errorf("engine: block %d for position %d out of range (pool of %d)", blk, max(from, b*g.BlockSize), pool)
		}
	}
	return nil
}

func (c *KVCache) key(l, off int) []float32   { return c.k[l][off : off+c.kvDim] }
func (c *KVCache) value(l, off int) []float32 { return c.v[l][off : off+c.kvDim] }

// ErrNoBlocks is returned by Allocator.Grow when the pool is exhausted.
var ErrNoBlocks = errors.New("engine: no free KV blocks")

// Allocator hands out KV blocks: a simple free list for tests and tools
// that drive the engine directly. In serving, the coordinator's scheduler
// owns the block tables (coordinator/sched/kv.go) and sends them with each
// step.
type Allocator struct {
	mu   sync.Mutex
	free []int
}

// NewAllocator manages blocks 0..n-1.
func NewAllocator(n int) *Allocator {
	a := &Allocator{free: make([]int, n)}
	for i := range a.free {
		a.free[i] = n - 1 - i
	}
	return a
}

// Grow extends table so it covers tokens positions.
func (a *Allocator) Grow(table []int, tokens, blockSize int) ([]int, error) {
	need := (tokens + blockSize - 1) / blockSize
	a.mu.Lock()
	defer a.mu.Unlock()
	if need-len(table) > len(a.free) {
		return table, fmt.Errorf("%w: %d more needed, %d free", ErrNoBlocks, need-len(table), len(a.free))
	}
	for len(table) < need {
		n := len(a.free) - 1
		table = append(table, a.free[n])
		a.free = a.free[:n]
	}
	return table, nil
}

// Free returns a table's blocks to the pool (entries of -1 were already
// released).
func (a *Allocator) Free(table []int) {
	a.mu.Lock()
	for _, b := range table {
		if b >= 0 {
			a.free = append(a.free, b)
		}
	}
	a.mu.Unlock()
}

// Trim releases the blocks of a sliding-window table that lie entirely
// before the window of a sequence whose next position is next; their
// entries become -1.
func (a *Allocator) Trim(table []int, next, window, blockSize int) {
	first := max(0, next-window) // the oldest position the next token can see
	a.mu.Lock()
	defer a.mu.Unlock()
	for b := 0; (b+1)*blockSize <= first && b < len(table); b++ {
		if table[b] >= 0 {
			a.free = append(a.free, table[b])
			table[b] = -1
		}
	}
}

// Available reports the free blocks.
func (a *Allocator) Available() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.free)
}
