// Package engine is the gpt-oss forward pass on the CPU: embedding,
// RMSNorm, attention with learned sinks over a paged KV cache (sliding
// window on the layers that slide, YaRN RoPE), the MXFP4 mixture of experts
// with the clamped SwiGLU, the final norm and the unembedding. One Step
// carries several sequences, each with a chunk of prompt or one decode
// token. It computes in float32 and is the reference the CUDA backend is
// tested against (shared/reference/gpt-oss.md §2).
package engine

import (
	"fmt"
	"math"
	"slices"
)

// Model runs steps over a weight set and a KV cache.
type Model struct {
	W     *Weights
	Cache *KVCache
	rope  *rope
	// Coll joins the ranks of a tensor-parallel model; nil when whole.
	Coll Collective
}

// NewModel binds weights and a cache whose geometry must match them.
func NewModel(w *Weights, cache *KVCache) (*Model, error) {
	c := &w.Config
	if len(cache.k) != c.Layers || cache.kvDim != w.Part.KVHeads*c.HeadDim {
		return nil, fmt.Errorf("engine: cache geometry (%d layers × %d) does not match the model (%d × %d)",
			len(cache.k), cache.kvDim, c.Layers, w.Part.KVHeads*c.HeadDim)
	}
	if c.HeadDim > 512 {
		return nil, fmt.Errorf("engine: head_dim %d too large", c.HeadDim)
	}
	return &Model{W: w, Cache: cache, rope: newRope(c)}, nil
}

// Seq is one sequence's part of a step.
type Seq struct {
	// Tokens are the inputs: a prompt chunk, or the last sampled token.
	Tokens []int
	// Pos is the position of Tokens[0]; earlier positions are in the cache.
	Pos int
	// Blocks is the full-attention layers' block table, covering positions
	// [0, Pos+len(Tokens)).
	Blocks []int
	// SlidingBlocks is the sliding-window layers' table, in their own pool;
	// entries for blocks wholly before the window may be -1 (released).
	// Nil means Blocks serves both (one pool size for all layers).
	SlidingBlocks []int
	// AllLogits asks for logits at every input position (tests, prompt
	// logprobs); otherwise only the last position's are returned.
	AllLogits bool
}

// table returns the block table and pool size for layer l.
func (m *Model) table(s *Seq, l int) ([]int, int) {
	if m.Cache.sliding[l] {
		if s.SlidingBlocks != nil {
			return s.SlidingBlocks, m.Cache.SlidingBlocks
		}
		return s.Blocks, m.Cache.SlidingBlocks
	}
	return s.Blocks, m.Cache.Blocks
}

// tok is one token row of a step.
type tok struct {
	seq, pos int
}

// Step runs one forward pass and returns, per sequence, the logits rows
// asked for.
func (m *Model) Step(seqs []Seq) ([][][]float32, error) {
	c := &m.W.Config
	var toks []tok
	for i, s := range seqs {
		if len(s.Tokens) == 0 {
			return nil, fmt.Errorf("engine: sequence %d has no tokens", i)
		}
		for j, id := range s.Tokens {
			if id < 0 || id >= c.Vocab {
				return nil, fmt.Errorf("engine: token %d outside the vocabulary (%d)", id, c.Vocab)
			}
			toks = append(toks, tok{seq: i, pos: s.Pos + j})
		}
		// Every block the step reads or writes must be in the tables: the
		// whole history for full layers, the window for sliding ones.
		end := s.Pos + len(s.Tokens) - 1
		if err := m.Cache.check(s.Blocks, 0, end, m.Cache.Blocks); err != nil {
			return nil, fmt.Errorf("engine: sequence %d: %w", i, err)
		}
		if s.SlidingBlocks != nil {
			from := max(0, s.Pos-c.SlidingWindow+1)
			if err := m.Cache.check(s.SlidingBlocks, from, end, m.Cache.SlidingBlocks); err != nil {
				return nil, fmt.Errorf("engine: sequence %d: sliding table: %w", i, err)
			}
		}
	}
	T := len(toks)
	x := matrix(T, c.Hidden)
	t := 0
	for _, s := range seqs {
		for _, id := range s.Tokens {
			m.W.Embed.row(id, x[t])
			t++
		}
	}
	h := matrix(T, c.Hidden)
	if m.W.Part.TP > 1 && m.Coll == nil {
		return nil, fmt.Errorf("engine: rank %d of %d has no collective", m.W.Part.Rank, m.W.Part.TP)
	}
	for l := range m.W.Layers {
		if err := m.attention(l, seqs, toks, x, h); err != nil {
			return nil, err
		}
		if err := m.moe(l, x, h); err != nil {
			return nil, err
		}
	}
	// Final norm and unembedding for the rows asked for.
	var rows [][]float32
	var owner []int
	t = 0
	for i, s := range seqs {
		for j := range s.Tokens {
			if s.AllLogits || j == len(s.Tokens)-1 {
				rmsNorm(x[t], m.W.Norm, h[t], float32(c.RMSNormEps))
				rows = append(rows, h[t])
				owner = append(owner, i)
			}
			t++
		}
	}
	logits := matrix(len(rows), c.Vocab)
	if p := m.W.Part; p.TP > 1 {
		// This rank's vocabulary slice, then every rank's, in order.
		local := matrix(len(rows), p.VocabHi-p.VocabLo)
		linear(&m.W.Unembed, nil, rows, local)
		full := make([]float32, p.TP*len(rows)*(p.VocabHi-p.VocabLo))
		if err := m.Coll.AllGather(local[0][:len(rows)*(p.VocabHi-p.VocabLo)], full); err != nil {
			return nil, err
		}
		n := p.VocabHi - p.VocabLo
		for rank := range p.TP {
			for r := range rows {
				copy(logits[r][rank*n:(rank+1)*n], full[(rank*len(rows)+r)*n:])
			}
		}
	} else {
		linear(&m.W.Unembed, nil, rows, logits)
	}
	out := make([][][]float32, len(seqs))
	for r, i := range owner {
		out[i] = append(out[i], logits[r])
	}
	return out, nil
}

// attention runs layer l's attention block and adds it to the residual x.
// A tensor-parallel rank computes its own heads; the partial o_proj
// outputs are summed across ranks and the bias added once.
func (m *Model) attention(l int, seqs []Seq, toks []tok, x, h [][]float32) error {
	c := &m.W.Config
	p := &m.W.Part
	L := &m.W.Layers[l]
	eps := float32(c.RMSNormEps)
	for t := range x {
		rmsNorm(x[t], L.AttnNorm, h[t], eps)
	}
	T := len(x)
	heads, kvHeads := p.Heads, p.KVHeads
	qd, kvd := heads*c.HeadDim, kvHeads*c.HeadDim
	q, k, v := matrix(T, qd), matrix(T, kvd), matrix(T, kvd)
	linear(&L.Q, L.QB, h, q)
	linear(&L.K, L.KB, h, k)
	linear(&L.V, L.VB, h, v)
	for t, tk := range toks {
		m.rope.apply(q[t], heads, c.HeadDim, tk.pos)
		m.rope.apply(k[t], kvHeads, c.HeadDim, tk.pos)
		table, pool := m.table(&seqs[tk.seq], l)
		off, _ := m.Cache.slot(table, tk.pos, pool) // checked in Step
		copy(m.Cache.key(l, off), k[t])
		copy(m.Cache.value(l, off), v[t])
	}
	window := math.MaxInt
	if c.Sliding(l) {
		window = c.SlidingWindow
	}
	attn := matrix(T, qd)
	scale := float32(1 / math.Sqrt(float64(c.HeadDim)))
	group := heads / kvHeads
	parallel(T*heads, func(lo, hi int) {
		var scores []float32
		for i := lo; i < hi; i++ {
			t, head := i/heads, i%heads
			tk := toks[t]
			table, pool := m.table(&seqs[tk.seq], l)
			first := max(0, tk.pos-window+1)
			qv := q[t][head*c.HeadDim : (head+1)*c.HeadDim]
			kvOff := (head / group) * c.HeadDim
			scores = scores[:0]
			// The learned sink joins the softmax as one more logit.
			mx := L.Sinks[head]
			for j := first; j <= tk.pos; j++ {
				off, _ := m.Cache.slot(table, j, pool)
				s := dot(qv, m.Cache.key(l, off)[kvOff:kvOff+c.HeadDim]) * scale
				scores = append(scores, s)
				mx = max(mx, s)
			}
			sum := float32(math.Exp(float64(L.Sinks[head] - mx)))
			for j, s := range scores {
				e := float32(math.Exp(float64(s - mx)))
				scores[j] = e
				sum += e
			}
			out := attn[t][head*c.HeadDim : (head+1)*c.HeadDim]
			for j, p := range scores {
				off, _ := m.Cache.slot(table, first+j, pool)
				vv := m.Cache.value(l, off)[kvOff : kvOff+c.HeadDim]
				w := p / sum
				for d := range out {
					out[d] += w * vv[d]
				}
			}
		}
	})
	o := matrix(T, c.Hidden)
	if p.TP > 1 {
		linear(&L.O, nil, attn, o)
		if err := m.Coll.AllReduce(o[0][:T*c.Hidden]); err != nil {
			return err
		}
		for t := range o {
			for i, b := range L.OB {
				o[t][i] += b
			}
		}
	} else {
		linear(&L.O, L.OB, attn, o)
	}
	for t := range x {
		for i := range x[t] {
			x[t][i] += o[t][i]
		}
	}
	return nil
}

// moe runs layer l's mixture of experts and adds it to the residual x. The
// router is replicated; a tensor-parallel rank runs only its own experts
// and the weighted outputs are summed across ranks.
func (m *Model) moe(l int, x, h [][]float32) error {
	c := &m.W.Config
	p := &m.W.Part
	L := &m.W.Layers[l]
	eps := float32(c.RMSNormEps)
	for t := range x {
		rmsNorm(x[t], L.MLPNorm, h[t], eps)
	}
	T := len(x)
	logits := matrix(T, c.Experts)
	linear(&L.Router, L.RouterB, h, logits)
	// Route: top-k raw logits, softmax over the chosen k.
	type pick struct {
		tok    int
		weight float32
	}
	byExpert := make([][]pick, c.Experts)
	idx := make([]int, c.Experts)
	for t := range T {
		for e := range idx {
			idx[e] = e
		}
		lg := logits[t]
		slices.SortStableFunc(idx, func(a, b int) int {
			switch {
			case lg[a] > lg[b]:
				return -1
			case lg[a] < lg[b]:
				return 1
			}
			return 0
		})
		top := idx[:c.ExpertsPerToken]
		mx := lg[top[0]]
		var sum float32
		ws := make([]float32, len(top))
		for i, e := range top {
			ws[i] = float32(math.Exp(float64(lg[e] - mx)))
			sum += ws[i]
		}
		for i, e := range top {
			byExpert[e] = append(byExpert[e], pick{tok: t, weight: ws[i] / sum})
		}
	}
	limit := float32(c.SwigluLimit)
	inter := c.Intermediate
	out := matrix(T, c.Hidden)
	for e, picks := range byExpert {
		if len(picks) == 0 || e < p.ExpertLo || e >= p.ExpertHi {
			continue
		}
		le := e - p.ExpertLo // index among this rank's experts
		in := make([][]float32, len(picks))
		for i, p := range picks {
			in[i] = h[p.tok]
		}
		// gate_up: rows interleaved gate (even) / up (odd).
		gu := matrix(len(picks), 2*inter)
		expertLinear(&L.GateUp, le, L.GateUpB[le*2*inter:(le+1)*2*inter], in, gu)
		act := matrix(len(picks), inter)
		for i := range picks {
			for k := range inter {
				g := min(gu[i][2*k], limit)
				u := min(max(gu[i][2*k+1], -limit), limit)
				act[i][k] = g * sigmoid(1.702*g) * (u + 1)
			}
		}
		y := matrix(len(picks), c.Hidden)
		expertLinear(&L.Down, le, L.DownB[le*c.Hidden:(le+1)*c.Hidden], act, y)
		for i, p := range picks {
			for d := range y[i] {
				out[p.tok][d] += p.weight * y[i][d]
			}
		}
	}
	if p.TP > 1 {
		if err := m.Coll.AllReduce(out[0][:T*c.Hidden]); err != nil {
			return err
		}
	}
	for t := range x {
		for i := range x[t] {
			x[t][i] += out[t][i]
		}
	}
	return nil
}

// expertLinear is linear for one MXFP4 expert matrix, decoding in
// registers per token (batch-invariant, like linear).
func expertLinear(w *MXFP4, e int, bias []float32, x, out [][]float32) {
	parallel(w.Rows, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			for t := range x {
				out[t][r] = w.dot(e, r, x[t]) + bias[r]
			}
		}
	})
}
