package cuda

import (
	"fmt"

	"github.com/gptoss/server/worker/engine"
)

// The step metadata is built on the host and uploaded by Begin in one copy
// into one device buffer: token ids, positions, sequence index, the KV slot
// of every token in the full and in the sliding pool, the row of each
// sequence's last token (for GatherRows) and both pools' block tables padded
// to a common width with -1. Every array starts at an offset that depends
// only on (tokens, sequences, table width), so a CUDA graph captured for one
// such shape reads the next step's metadata at the same addresses.

// pools is what the metadata needs to know of the KV cache.
type pools struct {
	blockSize       int
	blocks, sliding int  // usable blocks; block `blocks` (`sliding`) is the pool's scratch block
	hasFull         bool // the model has full-attention layers
	hasSliding      bool // … and sliding-window ones
	window          int
}

// limits are the capacities the backend was built for.
type limits struct {
	maxTokens, maxSeqs, maxBlocks int
	vocab                         int
}

// plan is how a step is laid out beyond what the engine asks: set by
// GraphModel for graph steps.
type plan struct {
	// pad: sequences from this index on are padding (0: none). Their tokens
	// write no KV (slot -1) and their tables read the scratch block only.
	pad int
	// ctxBlocks fixes the table width, and max_pos at ctxBlocks·blockSize-1,
	// so that every step of a graph has the same layout (0: from the step).
	ctxBlocks int
}

// meta is one step's metadata: host array and offsets (in int32 elements).
type meta struct {
	T, S, maxBlocks, maxPos int
	host                    []int32
	ids, pos, seq           int
	slotF, slotS            int
	rows                    int
	tabF, tabS              int
	// lastRows[s] is the row of sequence s's last token.
	lastRows []int
}

// metaAlign keeps every array 64-byte aligned for vector loads.
const metaAlign = 16

func alignUp(n, a int) int { return (n + a - 1) / a * a }

// metaLen is the number of int32s of the metadata of a step of T tokens, S
// sequences and tables maxBlocks wide (the device buffer holds metaLen of
// the limits).
func metaLen(T, S, maxBlocks int) int {
	return 5*alignUp(T, metaAlign) + alignUp(S, metaAlign) + 2*alignUp(S*maxBlocks, metaAlign)
}

// slot returns the KV slot of position pos under table, in a pool of pool
// blocks.
func slot(table []int, pos, blockSize, pool int) (int32, error) {
	b := pos / blockSize
	if b >= len(table) {
		return -1, fmt.Errorf("position %d beyond the block table (%d blocks of %d)", pos, len(table), blockSize)
	}
	blk := table[b]
	if blk < 0 || blk >= pool {
		return -1, fmt.Errorf("block %d for position %d outside the pool of %d", blk, pos, pool)
	}
	return int32(blk*blockSize + pos%blockSize), nil
}

// checkTable verifies that table maps every position in [from, to] into a
// pool of pool blocks: what attention will read.
func checkTable(table []int, from, to, blockSize, pool int) error {
	for b := from / blockSize; b <= to/blockSize; b++ {
		if _, err := slot(table, max(from, b*blockSize), blockSize, pool); err != nil {
			return err
		}
	}
	return nil
}

// build fills m for lay. It checks what the kernels would otherwise read
// out of bounds: every token's sequence, every block attention reads, the
// capacities.
func (m *meta) build(lay *engine.StepLayout, p pools, pl plan, lim limits) error {
	T, S := len(lay.IDs), len(lay.Tables)
	switch {
	case T == 0 || S == 0:
		return fmt.Errorf("cuda: a step of %d tokens in %d sequences", T, S)
	case len(lay.Pos) != T || len(lay.Seq) != T:
		return fmt.Errorf("cuda: step layout of %d ids, %d positions, %d sequence indices", T, len(lay.Pos), len(lay.Seq))
	case lay.Sliding != nil && len(lay.Sliding) != S:
		return fmt.Errorf("cuda: %d full and %d sliding block tables", S, len(lay.Sliding))
	case T > lim.maxTokens:
		return fmt.Errorf("cuda: a step of %d tokens, the backend was sized for %d (Options.MaxTokens)", T, lim.maxTokens)
	case S > lim.maxSeqs:
		return fmt.Errorf("cuda: a step of %d sequences, the backend was sized for %d (Options.MaxSeqs)", S, lim.maxSeqs)
	case pl.pad < 0 || pl.pad > S:
		return fmt.Errorf("cuda: padding from sequence %d of %d", pl.pad, S)
	}
	sliding := lay.Sliding
	if sliding == nil {
		sliding = lay.Tables
	}
	padding := func(s int) bool { return pl.pad > 0 && s >= pl.pad }
	bs := p.blockSize

	// Each sequence's first and last position and last row.
	m.lastRows = m.lastRows[:0]
	first := make([]int, S)
	last := make([]int, S)
	for s := range S {
		first[s], last[s] = -1, -1
		m.lastRows = append(m.lastRows, -1)
	}
	maxPos := 0
	for t := range T {
		s, pos, id := lay.Seq[t], lay.Pos[t], lay.IDs[t]
		switch {
		case s < 0 || s >= S:
			return fmt.Errorf("cuda: token %d of sequence %d of %d", t, s, S)
		case pos < 0:
			return fmt.Errorf("cuda: token %d at position %d", t, pos)
		case id < 0 || id >= lim.vocab:
			return fmt.Errorf("cuda: token id %d outside the vocabulary (%d)", id, lim.vocab)
		}
		if first[s] < 0 {
			first[s] = pos
		}
		last[s] = pos
		m.lastRows[s] = t
		maxPos = max(maxPos, pos)
	}
	for s := range S {
		if m.lastRows[s] < 0 {
			return fmt.Errorf("cuda: sequence %d has no tokens", s)
		}
	}
	mb := maxPos/bs + 1
	if pl.ctxBlocks > 0 {
		if mb > pl.ctxBlocks {
			return fmt.Errorf("cuda: position %d beyond the graph's %d blocks", maxPos, pl.ctxBlocks)
		}
		mb = pl.ctxBlocks
		maxPos = mb*bs - 1
	}
	if mb > lim.maxBlocks {
		return fmt.Errorf("cuda: position %d beyond the context the backend was sized for (%d blocks of %d, Options.MaxContext)",
			maxPos, lim.maxBlocks, bs)
	}
	// What attention reads must be in the tables.
	for s := range S {
		if padding(s) {
			continue
		}
		if p.hasFull {
			if err := checkTable(lay.Tables[s], 0, last[s], bs, p.blocks); err != nil {
				return fmt.Errorf("cuda: sequence %d: %w", s, err)
			}
		}
		if p.hasSliding {
			if err := checkTable(sliding[s], max(0, first[s]-p.window+1), last[s], bs, p.sliding); err != nil {
				return fmt.Errorf("cuda: sequence %d: sliding table: %w", s, err)
			}
		}
	}

	m.T, m.S, m.maxBlocks, m.maxPos = T, S, mb, maxPos
	off := 0
	next := func(n int) int { o := off; off += alignUp(n, metaAlign); return o }
	m.ids, m.pos, m.seq, m.slotF, m.slotS = next(T), next(T), next(T), next(T), next(T)
	m.rows, m.tabF, m.tabS = next(S), next(S*mb), next(S*mb)
	if cap(m.host) < off {
		m.host = make([]int32, off)
	}
	m.host = m.host[:off]
	clear(m.host)
	h := m.host
	for t := range T {
		s, pos := lay.Seq[t], lay.Pos[t]
		h[m.ids+t], h[m.pos+t], h[m.seq+t] = int32(lay.IDs[t]), int32(pos), int32(s)
		h[m.slotF+t], h[m.slotS+t] = -1, -1
		if padding(s) {
			continue
		}
		var err error
		if p.hasFull {
			if h[m.slotF+t], err = slot(lay.Tables[s], pos, bs, p.blocks); err != nil {
				return fmt.Errorf("cuda: sequence %d: %w", s, err)
			}
		}
		if p.hasSliding {
			if h[m.slotS+t], err = slot(sliding[s], pos, bs, p.sliding); err != nil {
				return fmt.Errorf("cuda: sequence %d: sliding table: %w", s, err)
			}
		}
	}
	for s := range S {
		h[m.rows+s] = int32(m.lastRows[s])
		rf, rs := h[m.tabF+s*mb:m.tabF+(s+1)*mb], h[m.tabS+s*mb:m.tabS+(s+1)*mb]
		for j := range mb {
			rf[j], rs[j] = -1, -1
		}
		if padding(s) {
			// The scratch block: finite (zeroed) keys for the padding's
			// one position, never written, never anyone's.
			rf[0], rs[0] = int32(p.blocks), int32(p.sliding)
			continue
		}
		for j, b := range lay.Tables[s][:min(mb, len(lay.Tables[s]))] {
			rf[j] = int32(b)
		}
		for j, b := range sliding[s][:min(mb, len(sliding[s]))] {
			rs[j] = int32(b)
		}
	}
	return nil
}

// isLastRows reports whether rows are the step's last-token rows (the
// metadata already holds them on the device).
func (m *meta) isLastRows(rows []int) bool {
	if len(rows) != len(m.lastRows) {
		return false
	}
	for i, r := range rows {
		if r != m.lastRows[i] {
			return false
		}
	}
	return true
}
