package engine

import (
	"fmt"
	"sync"

	"github.com/gptoss/server/shared/model"
)

// Part says which slice of the model a tensor-parallel rank holds
// (shared/reference design: attention split by heads, sinks following
// their query heads; MoE split by experts with the router replicated;
// unembedding split by vocabulary). Two all-reduces per layer join the
// partial attention and MoE outputs; an all-gather joins the logits.
type Part struct {
	Rank, TP           int
	Heads, KVHeads     int // local counts
	ExpertLo, ExpertHi int // global expert ids [lo, hi)
	VocabLo, VocabHi   int // global vocabulary rows [lo, hi)
}

// whole is the Part of an unsharded model.
func whole(c *Weights) Part {
	cfg := &c.Config
	return Part{Rank: 0, TP: 1, Heads: cfg.Heads, KVHeads: cfg.KVHeads, ExpertHi: cfg.Experts, VocabHi: cfg.Vocab}
}

// Shard returns rank's part of w for tensor parallelism of degree tp. The
// large matrices are views into w (no copy); the small vectors are sliced.
func (w *Weights) Shard(rank, tp int) (*Weights, error) {
	c := &w.Config
	switch {
	case tp < 1 || rank < 0 || rank >= tp:
		return nil, fmt.Errorf("engine: shard: rank %d of %d", rank, tp)
	case w.Part.TP > 1:
		return nil, fmt.Errorf("engine: shard: already a shard")
	case c.KVHeads%tp != 0 || c.Heads%tp != 0:
		return nil, fmt.Errorf("engine: shard: %d query and %d KV heads do not split %d ways", c.Heads, c.KVHeads, tp)
	case c.Experts%tp != 0:
		return nil, fmt.Errorf("engine: shard: %d experts do not split %d ways", c.Experts, tp)
	case c.Vocab%tp != 0:
		return nil, fmt.Errorf("engine: shard: a vocabulary of %d does not split %d ways", c.Vocab, tp)
	}
	hd := c.HeadDim
	p := Part{Rank: rank, TP: tp, Heads: c.Heads / tp, KVHeads: c.KVHeads / tp}
	p.ExpertLo, p.ExpertHi = rank*c.Experts/tp, (rank+1)*c.Experts/tp
	p.VocabLo, p.VocabHi = rank*c.Vocab/tp, (rank+1)*c.Vocab/tp
	q0, q1 := rank*p.Heads*hd, (rank+1)*p.Heads*hd
	k0, k1 := rank*p.KVHeads*hd, (rank+1)*p.KVHeads*hd
	out := &Weights{Config: w.Config, Part: p, Embed: w.Embed, Norm: w.Norm,
		Unembed: rowSlice(w.Unembed, p.VocabLo, p.VocabHi)}
	ne := p.ExpertHi - p.ExpertLo
	for _, L := range w.Layers {
		out.Layers = append(out.Layers, Layer{
			AttnNorm: L.AttnNorm, MLPNorm: L.MLPNorm,
			Q: rowSlice(L.Q, q0, q1), QB: L.QB[q0:q1],
			K: rowSlice(L.K, k0, k1), KB: L.KB[k0:k1],
			V: rowSlice(L.V, k0, k1), VB: L.VB[k0:k1],
			O: colSlice(L.O, q0, q1), OB: L.OB,
			Sinks:  L.Sinks[rank*p.Heads : (rank+1)*p.Heads],
			Router: L.Router, RouterB: L.RouterB,
			GateUp:  expertSlice(L.GateUp, p.ExpertLo, ne),
			GateUpB: L.GateUpB[p.ExpertLo*2*c.Intermediate : p.ExpertHi*2*c.Intermediate],
			Down:    expertSlice(L.Down, p.ExpertLo, ne),
			DownB:   L.DownB[p.ExpertLo*c.Hidden : p.ExpertHi*c.Hidden],
		})
	}
	return out, nil
}

func rowSlice(m Mat, lo, hi int) Mat {
	s := m.stride()
	out := Mat{Rows: hi - lo, Cols: m.Cols, Stride: s}
	if m.BF16 != nil {
		out.BF16 = m.BF16[lo*s : (hi-1)*s+m.Cols]
	} else {
		out.F32 = m.F32[lo*s : (hi-1)*s+m.Cols]
	}
	return out
}

func colSlice(m Mat, lo, hi int) Mat {
	s := m.stride()
	out := Mat{Rows: m.Rows, Cols: hi - lo, Stride: s}
	end := (m.Rows-1)*s + hi
	if m.BF16 != nil {
		out.BF16 = m.BF16[lo:end]
	} else {
		out.F32 = m.F32[lo:end]
	}
	return out
}

func expertSlice(m MXFP4, lo, n int) MXFP4 {
	per := m.Rows * m.Cols
	out := MXFP4{Experts: n, Rows: m.Rows, Cols: m.Cols,
		Blocks: m.Blocks[lo*per/2 : (lo+n)*per/2], Scales: m.Scales[lo*per/32 : (lo+n)*per/32]}
	out.prepare()
	return out
}

// CacheConfig is the configuration a KV cache for these weights needs: a
// shard stores only its own KV heads.
func (w *Weights) CacheConfig() model.Config {
	c := w.Config
	c.KVHeads = w.Part.KVHeads
	return c
}

// Collective joins the partial results of the ranks of one model. Every
// rank calls the same operations in the same order.
type Collective interface {
	// AllReduce replaces buf with the element-wise sum over all ranks.
	AllReduce(buf []float32) error
	// AllGather writes every rank's local slice (equal lengths) into out,
	// in rank order.
	AllGather(local, out []float32) error
}

// LocalGroup is a Collective among goroutines of one process: the
// in-process stand-in for NCCL and the inter-process CPU collective, for
// tests and single-host development. Sums run in rank order on every rank,
// so all ranks hold bit-identical results.
type LocalGroup struct {
	n       int
	mu      sync.Mutex
	cond    *sync.Cond
	bufs    [][]float32
	arrived int
	gen     int
}

// NewLocalGroup returns one Collective per rank.
func NewLocalGroup(n int) []Collective {
	g := &LocalGroup{n: n, bufs: make([][]float32, n)}
	g.cond = sync.NewCond(&g.mu)
	out := make([]Collective, n)
	for r := range out {
		out[r] = &localRank{g: g, rank: r}
	}
	return out
}

// barrier waits until all ranks have arrived.
func (g *LocalGroup) barrier() {
	g.mu.Lock()
	gen := g.gen
	g.arrived++
	if g.arrived == g.n {
		g.arrived = 0
		g.gen++
		g.cond.Broadcast()
	} else {
		for gen == g.gen {
			g.cond.Wait()
		}
	}
	g.mu.Unlock()
}

type localRank struct {
	g       *LocalGroup
	rank    int
	scratch []float32
}

func (l *localRank) AllReduce(buf []float32) error {
	g := l.g
	g.mu.Lock()
	g.bufs[l.rank] = buf
	g.mu.Unlock()
	g.barrier() // everyone's buffer is posted
	if cap(l.scratch) < len(buf) {
		l.scratch = make([]float32, len(buf))
	}
	sum := l.scratch[:len(buf)]
	var err error
	for r := range g.n {
		if len(g.bufs[r]) != len(buf) {
			err = fmt.Errorf("engine: all-reduce: rank %d has %d elements, rank %d has %d", r, len(g.bufs[r]), l.rank, len(buf))
			break
		}
		if r == 0 {
			copy(sum, g.bufs[0])
			continue
		}
		for i, v := range g.bufs[r] {
			sum[i] += v
		}
	}
	g.barrier() // everyone has read every buffer (also on error: no rank may hang)
	if err != nil {
		return err
	}
	copy(buf, sum)
	return nil
}

func (l *localRank) AllGather(local, out []float32) error {
	g := l.g
	g.mu.Lock()
	g.bufs[l.rank] = local
	g.mu.Unlock()
	g.barrier()
	var err error
	if len(out) != len(local)*g.n {
		err = fmt.Errorf("engine: all-gather: %d elements into %d", len(local), len(out))
	} else {
		for r := range g.n {
			copy(out[r*len(local):], g.bufs[r])
		}
	}
	g.barrier()
	return err
}
