package sched

import (
	"container/list"
	"fmt"
	"hash/maphash"
	"slices"

	"github.com/gptoss/server/shared/step"
)

// blockPool is a free list of block ids with a reference count per block:
// a block is held by every sequence whose table has it and by the prefix
// cache, and is free when nobody holds it.
type blockPool struct {
	free []int
	refs []int32
}

func newBlockPool(n int) *blockPool {
	p := &blockPool{free: make([]int, n), refs: make([]int32, n)}
	for i := range p.free {
		p.free[i] = n - 1 - i // hand out low ids first
	}
	return p
}

func (p *blockPool) take() int {
	n := len(p.free) - 1
	b := p.free[n]
	p.free = p.free[:n]
	p.refs[b] = 1
	return b
}

func (p *blockPool) hold(b int) { p.refs[b]++ }

func (p *blockPool) drop(b int) {
	if p.refs[b]--; p.refs[b] == 0 {
		p.free = append(p.free, b)
	}
}

// cachedBlock is one full block of tokens whose keys and values are in the
// cache, findable by the hash of its tokens and every token before them.
type cachedBlock struct {
	hash    uint64
	tokens  []int // the block's own tokens, to rule out hash collisions
	parent  uint64
	full    int // block id in the full-attention pool
	sliding int // block id in the sliding pool
	lru     *list.Element
}

// kvManager keeps every running sequence's block tables: one for the
// full-attention layers, one for the sliding-window layers (entries for
// blocks wholly behind the window are released and set to -1). It also
// keeps a prefix cache: every block a sequence fills is remembered under
// the hash of its tokens and all before them, so a later sequence with the
// same prefix (a shared system prompt, a conversation's earlier turns, a
// preempted sequence coming back) maps those blocks instead of computing
// them again. The computation is batch-invariant, so shared blocks hold
// exactly the values the sequence would have computed itself. Cached blocks
// nobody uses are evicted, least recently used first, when a reservation
// needs room. Used from the scheduler's loop goroutine only.
type kvManager struct {
	geo           step.KVGeometry
	full, sliding *blockPool

	prefix  bool // the prefix cache is on
	seed    maphash.Seed
	cache   map[uint64]*cachedBlock
	lru     list.List // *cachedBlock, least recently used at the front
	hits    int64     // blocks mapped from the cache
	lookups int64     // blocks looked up
}

func newKVManager(g step.KVGeometry, prefix bool) *kvManager {
	return &kvManager{geo: g, full: newBlockPool(g.Blocks), sliding: newBlockPool(g.SlidingBlocks),
		prefix: prefix, seed: maphash.MakeSeed(), cache: map[uint64]*cachedBlock{}}
}

// blockHash chains the hash of a block's tokens to its parent's.
func (m *kvManager) blockHash(parent uint64, tokens []int) uint64 {
	var h maphash.Hash
	h.SetSeed(m.seed)
	var b [8]byte
	put := func(v uint64) {
		for i := range b {
			b[i] = byte(v >> (8 * i))
		}
		_, _ = h.Write(b[:])
	}
	put(parent)
	for _, t := range tokens {
		put(uint64(t))
	}
	return h.Sum64()
}

// match maps the longest cached prefix of q's tokens into q's (empty)
// tables, leaving at least one token to compute (its logits are needed),
// and returns the number of positions mapped. The sliding table gets only
// the blocks the first computed token can see.
func (m *kvManager) match(q *sequence) int {
	if !m.prefix || len(q.blocks) > 0 {
		return 0
	}
	bs := m.geo.BlockSize
	limit := (len(q.tokens) - 1) / bs
	var parent uint64
	var hits []*cachedBlock
	for i := range limit {
		blk := q.tokens[i*bs : (i+1)*bs]
		h := m.blockHash(parent, blk)
		c := m.cache[h]
		if c == nil || c.parent != parent || !slices.Equal(c.tokens, blk) {
			break
		}
		hits = append(hits, c)
		parent = h
	}
	m.lookups += int64(limit)
	if len(hits) == 0 {
		return 0
	}
	m.hits += int64(len(hits))
	next := len(hits) * bs
	first := m.firstVisible(next)
	for i, c := range hits {
		m.full.hold(c.full)
		q.blocks = append(q.blocks, c.full)
		if (i+1)*bs > first {
			m.sliding.hold(c.sliding)
			q.sliding = append(q.sliding, c.sliding)
		} else {
			q.sliding = append(q.sliding, -1)
		}
		m.lru.MoveToBack(c.lru)
	}
	q.chain, q.cachedBlocks = parent, len(hits)
	return next
}

// remember puts the blocks q has filled (positions below done) into the
// prefix cache, each holding a reference on its full and sliding block.
func (m *kvManager) remember(q *sequence, done int) {
	if !m.prefix {
		return
	}
	bs := m.geo.BlockSize
	for i := q.cachedBlocks; (i+1)*bs <= done && i < len(q.blocks); i++ {
		blk := q.tokens[i*bs : (i+1)*bs]
		h := m.blockHash(q.chain, blk)
		if _, ok := m.cache[h]; !ok && q.sliding[i] >= 0 {
			c := &cachedBlock{hash: h, tokens: slices.Clone(blk), parent: q.chain, full: q.blocks[i], sliding: q.sliding[i]}
			m.full.hold(c.full)
			m.sliding.hold(c.sliding)
			c.lru = m.lru.PushBack(c)
			m.cache[h] = c
			if (i+1)*bs <= len(q.req.Prompt) {
				q.written += bs
			}
		}
		q.chain, q.cachedBlocks = h, i+1
	}
}

// evict drops least recently used cache entries that no sequence holds
// until the pools have full and sliding free blocks, or nothing is left
// to drop. It reports whether the room is there.
func (m *kvManager) evict(full, sliding int) bool {
	for e := m.lru.Front(); e != nil && (len(m.full.free) < full || len(m.sliding.free) < sliding); {
		c := e.Value.(*cachedBlock)
		next := e.Next()
		// Drop an entry only when that frees a block of a pool that is
		// short: one a sequence still maps would not come free.
		if (len(m.full.free) < full && m.full.refs[c.full] == 1) ||
			(len(m.sliding.free) < sliding && m.sliding.refs[c.sliding] == 1) {
			m.lru.Remove(e)
			delete(m.cache, c.hash)
			m.full.drop(c.full)
			m.sliding.drop(c.sliding)
		}
		e = next
	}
	return len(m.full.free) >= full && len(m.sliding.free) >= sliding
}

// reserve grows q's tables to cover positions [0, end), all or nothing,
// first releasing the sliding blocks a token at position from can no
// longer see, then evicting unused cached blocks if it must. It reports
// whether the blocks were there. The scheduler passes the position its
// delivered steps reached, not where the new step starts: the blocks that
// a step still in flight fills must stay in q's tables until that step is
// delivered and remember puts them in the prefix cache.
func (m *kvManager) reserve(q *sequence, from, end int) bool {
	bs := m.geo.BlockSize
	m.trim(q, from)
	need := (end + bs - 1) / bs
	moreFull := max(0, need-len(q.blocks))
	moreSliding := max(0, need-len(q.sliding))
	if !m.evict(moreFull, moreSliding) {
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

// firstVisible is the oldest position a token at position next can see
// through the sliding window (conservative by one), 0 without a window.
func (m *kvManager) firstVisible(next int) int {
	if m.geo.SlidingWindow == 0 {
		return 0
	}
	return max(0, next-m.geo.SlidingWindow)
}

// trim releases the sliding blocks that lie wholly before the oldest
// position a token at position next can see.
func (m *kvManager) trim(q *sequence, next int) {
	if m.geo.SlidingWindow == 0 {
		return
	}
	first := m.firstVisible(next)
	bs := m.geo.BlockSize
	for b := 0; (b+1)*bs <= first && b < len(q.sliding); b++ {
		if q.sliding[b] >= 0 {
			m.sliding.drop(q.sliding[b])
			q.sliding[b] = -1
		}
	}
}

// release drops all of q's blocks (cached ones stay in the cache);
// calling it again is a no-op.
func (m *kvManager) release(q *sequence) {
	for _, b := range q.blocks {
		m.full.drop(b)
	}
	for _, b := range q.sliding {
		if b >= 0 {
			m.sliding.drop(b)
		}
	}
	q.blocks, q.sliding = nil, nil
	q.chain, q.cachedBlocks = 0, 0
}

// check verifies the reference counts and free lists against the tables
// of the running sequences and the cache (tests run it after every step).
func (m *kvManager) check(batch []*sequence) error {
	for _, pool := range []struct {
		name  string
		p     *blockPool
		table func(*sequence) []int
		entry func(*cachedBlock) int
	}{
		{"full", m.full, func(q *sequence) []int { return q.blocks }, func(c *cachedBlock) int { return c.full }},
		{"sliding", m.sliding, func(q *sequence) []int { return q.sliding }, func(c *cachedBlock) int { return c.sliding }},
	} {
		want := make([]int32, len(pool.p.refs))
		for _, q := range batch {
			for _, b := range pool.table(q) {
				if b >= 0 {
					want[b]++
				}
			}
		}
		for _, c := range m.cache {
			want[pool.entry(c)]++
		}
		free := make([]bool, len(want))
		for _, b := range pool.p.free {
			if free[b] {
				return fmt.Errorf("%s block %d is free twice", pool.name, b)
			}
			free[b] = true
		}
		for b := range want {
			if want[b] != pool.p.refs[b] || free[b] != (want[b] == 0) {
				return fmt.Errorf("%s block %d: %d references counted, %d held, free %v", pool.name, b, pool.p.refs[b], want[b], free[b])
			}
		}
	}
	if m.lru.Len() != len(m.cache) {
		return fmt.Errorf("%d cache entries, %d in the LRU list", len(m.cache), m.lru.Len())
	}
	return nil
}

// usage counts the pools: free, held by sequences, held only by the cache.
func (m *kvManager) usage() *KVUsage {
	u := &KVUsage{Geometry: m.geo, FreeBlocks: len(m.full.free), SlidingFree: len(m.sliding.free),
		PrefixHits: m.hits, PrefixLookups: m.lookups}
	for _, c := range m.cache {
		if m.full.refs[c.full] == 1 {
			u.CachedBlocks++
		}
		if m.sliding.refs[c.sliding] == 1 {
			u.SlidingCached++
		}
	}
	u.UsedBlocks = m.geo.Blocks - u.FreeBlocks - u.CachedBlocks
	u.SlidingUsed = m.geo.SlidingBlocks - u.SlidingFree - u.SlidingCached
	return u
}

// KVUsage is the block pools' occupancy.
type KVUsage struct {
	Geometry step.KVGeometry
	// Free blocks, blocks held by running sequences, and blocks held only
	// by the prefix cache (free for the taking when room is needed).
	FreeBlocks, UsedBlocks, CachedBlocks    int
	SlidingFree, SlidingUsed, SlidingCached int
	// Sequences is the running sequences holding blocks.
	Sequences int
	// PrefixHits of PrefixLookups prompt blocks were mapped from the cache.
	PrefixHits, PrefixLookups int64
}
