package engine

import (
	"errors"
	"fmt"
	"sync"
)

// KVCache is the paged key/value memory of one worker: per layer, a pool of
// fixed-size blocks of BlockSize token slots. Which blocks hold which
// sequence's positions is decided outside (block tables come with each
// step), so the scheduler can share, free and reuse blocks without the
// cache knowing about sequences. Keys are stored after RoPE.
type KVCache struct {
	BlockSize int
	Blocks    int
	kvDim     int         // KV heads × head dim
	k, v      [][]float32 // per layer: Blocks × BlockSize × kvDim
}

// NewKVCache allocates blocks blocks of blockSize tokens for every layer.
func NewKVCache(layers, kvHeads, headDim, blocks, blockSize int) (*KVCache, error) {
	if blocks < 1 || blockSize < 1 {
		return nil, fmt.Errorf("engine: kv cache of %d blocks of %d tokens", blocks, blockSize)
	}
	c := &KVCache{BlockSize: blockSize, Blocks: blocks, kvDim: kvHeads * headDim}
	c.k = make([][]float32, layers)
	c.v = make([][]float32, layers)
	for l := range layers {
		c.k[l] = make([]float32, blocks*blockSize*c.kvDim)
		c.v[l] = make([]float32, blocks*blockSize*c.kvDim)
	}
	return c, nil
}

// slot returns the offset of position pos under a block table.
func (c *KVCache) slot(table []int, pos int) (int, error) {
	b := pos / c.BlockSize
	if b >= len(table) {
		return 0, fmt.Errorf("engine: position %d beyond the block table (%d blocks of %d)", pos, len(table), c.BlockSize)
	}
	blk := table[b]
	if blk < 0 || blk >= c.Blocks {
		return 0, fmt.Errorf("engine: block %d out of range (cache has %d)", blk, c.Blocks)
	}
	return (blk*c.BlockSize + pos%c.BlockSize) * c.kvDim, nil
}

func (c *KVCache) key(l, off int) []float32   { return c.k[l][off : off+c.kvDim] }
func (c *KVCache) value(l, off int) []float32 { return c.v[l][off : off+c.kvDim] }

// ErrNoBlocks is returned by Allocator.Alloc when the pool is exhausted.
var ErrNoBlocks = errors.New("engine: no free KV blocks")

// Allocator hands out KV blocks. It is the simple free list that tests and
// in-process use need until the coordinator's scheduler owns block tables.
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
		return table, ErrNoBlocks
	}
	for len(table) < need {
		n := len(a.free) - 1
		table = append(table, a.free[n])
		a.free = a.free[:n]
	}
	return table, nil
}

// Free returns a table's blocks to the pool.
func (a *Allocator) Free(table []int) {
	a.mu.Lock()
	a.free = append(a.free, table...)
	a.mu.Unlock()
}

// Available reports the free blocks.
func (a *Allocator) Available() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.free)
}
