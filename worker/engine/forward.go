// Package engine is the gpt-oss forward pass: embedding, RMSNorm,
// attention with learned sinks over a paged KV cache (sliding window on the
// layers that slide, YaRN RoPE), the MXFP4 mixture of experts with the
// clamped SwiGLU, the final norm and the unembedding. One Step carries
// several sequences, each with a chunk of prompt or one decode token.
//
// The forward pass (this file) is written once against the op interface
// Backend (backend.go), so the model's flow lives in one place whatever
// runs it. The CPU backend (cpu.go, kernels.go, rope.go) computes in
// float32 and is the reference the CUDA backend is tested against
// (shared/reference/gpt-oss.md §2).
package engine

import (
	"fmt"
)

// Model runs steps over a backend: its weights and its KV cache.
type Model struct {
	W *Weights
	// Cache is the CPU backend's KV cache; nil on other backends (use
	// Geometry for the block size and pool sizes).
	Cache *KVCache
	// Coll joins the ranks of a tensor-parallel model on the CPU backend
	// and, when set, replaces the collective the backend was made with; it
	// may be set after NewModel, before the first Step. Other backends
	// bind their collective when they are made.
	Coll Collective
	// ReuseLogits makes Step return its logits in a buffer the model keeps
	// and overwrites at the next Step, instead of a fresh allocation the
	// caller keeps. For a caller done with them by then (the executor
	// samples inside its step) it saves allocating and zeroing a
	// vocabulary of floats per sequence per step: 26 MB for 32 sequences.
	ReuseLogits bool

	b   Backend
	cpu *CPU // b, when it is the CPU backend, to hand it Coll
	// Per-step scratch kept across steps (a model runs one step at a time).
	lay        StepLayout
	rows, owns []int
	logits     []float32 // with ReuseLogits
}

// NewModel binds weights and a cache whose geometry must match them, on
// the CPU backend.
func NewModel(w *Weights, cache *KVCache) (*Model, error) {
	return NewModelOn(newCPU(w, cache, nil))
}

// NewModelOn runs the model on backend b, with the weights it serves.
func NewModelOn(b Backend) (*Model, error) {
	w := b.Weights()
	if w == nil {
		return nil, fmt.Errorf("engine: %s backend has no weights", b.Name())
	}
	c := &w.Config
	if len(w.Layers) != c.Layers {
		return nil, fmt.Errorf("engine: %d layers of weights for a %d-layer model", len(w.Layers), c.Layers)
	}
	m := &Model{W: w, b: b}
	if cpu, ok := b.(*CPU); ok {
		if err := cpu.check(); err != nil {
			return nil, err
		}
		m.cpu, m.Cache = cpu, cpu.cache
	}
	return m, nil
}

// Backend is the backend the model runs on.
func (m *Model) Backend() Backend { return m.b }

// Geometry is the KV cache's block size and pool sizes, whatever the
// backend: what an owner of block tables needs to know.
func (m *Model) Geometry() KVGeometry { return m.b.Geometry() }

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

// Step runs one forward pass and returns, per sequence, the logits rows
// asked for, in memory the caller keeps (with ReuseLogits, until the next
// Step). A model runs one step at a time.
func (m *Model) Step(seqs []Seq) ([][][]float32, error) {
	c := &m.W.Config
	geo := m.b.Geometry()
	slides := false
	for l := range c.Layers {
		slides = slides || c.Sliding(l)
	}
	lay := &m.lay
	lay.IDs, lay.Pos, lay.Seq = lay.IDs[:0], lay.Pos[:0], lay.Seq[:0]
	lay.Tables, lay.Sliding, lay.MaxPos = lay.Tables[:0], lay.Sliding[:0], 0
	// The layout refers to the callers' tables: let them go after the step.
	defer func() { clear(lay.Tables); clear(lay.Sliding) }()
	for i, s := range seqs {
		if len(s.Tokens) == 0 {
			return nil, fmt.Errorf("engine: sequence %d has no tokens", i)
		}
		if s.Pos < 0 {
			return nil, fmt.Errorf("engine: sequence %d at position %d", i, s.Pos)
		}
		for j, id := range s.Tokens {
			if id < 0 || id >= c.Vocab {
				return nil, fmt.Errorf("engine: token %d outside the vocabulary (%d)", id, c.Vocab)
			}
			lay.IDs = append(lay.IDs, id)
			lay.Pos = append(lay.Pos, s.Pos+j)
			lay.Seq = append(lay.Seq, i)
		}
		// Every block the step reads or writes must be in the tables: the
		// whole history for full layers, the window for sliding ones.
		end := s.Pos + len(s.Tokens) - 1
		lay.MaxPos = max(lay.MaxPos, end)
		if err := geo.check(s.Blocks, 0, end, geo.Blocks); err != nil {
			return nil, fmt.Errorf("engine: sequence %d: %w", i, err)
		}
		from := max(0, s.Pos-c.SlidingWindow+1)
		sliding := s.SlidingBlocks
		if sliding != nil {
			if err := geo.check(sliding, from, end, geo.SlidingBlocks); err != nil {
				return nil, fmt.Errorf("engine: sequence %d: sliding table: %w", i, err)
			}
		} else {
			sliding = s.Blocks
			// One table for both: its window must fit the sliding pool too.
			if slides && geo.SlidingBlocks != geo.Blocks {
				if err := geo.check(sliding, from, end, geo.SlidingBlocks); err != nil {
					return nil, fmt.Errorf("engine: sequence %d: sliding layers: %w", i, err)
				}
			}
		}
		lay.Tables = append(lay.Tables, s.Blocks)
		lay.Sliding = append(lay.Sliding, sliding)
	}
	if m.cpu != nil && m.Coll != nil {
		m.cpu.coll = m.Coll
	}
	if err := m.b.Begin(lay); err != nil {
		return nil, err
	}
	defer m.b.EndStep()
	st, err := m.tensors(len(lay.IDs))
	if err != nil {
		return nil, err
	}
	if err := m.b.Embed(st.x); err != nil {
		return nil, err
	}
	// Each layer ends with the next one's input norm (the final norm
	// after the last), fused with the residual add.
	first := Param{Layer: -1, Name: ParamNorm}
	if len(m.W.Layers) > 0 {
		first = Param{Layer: 0, Name: ParamAttnNorm}
	}
	if err := m.b.RMSNorm(st.x, first, st.h); err != nil {
		return nil, err
	}
	for l := range m.W.Layers {
		if err := m.layer(l, st); err != nil {
			return nil, fmt.Errorf("engine: layer %d: %w", l, err)
		}
	}

	// Unembedding for the rows asked for.
	m.rows, m.owns = m.rows[:0], m.owns[:0]
	t := 0
	for i, s := range seqs {
		for j := range s.Tokens {
			if s.AllLogits || j == len(s.Tokens)-1 {
				m.rows = append(m.rows, t)
				m.owns = append(m.owns, i)
			}
			t++
		}
	}
	logits, err := m.unembed(st.h, m.rows)
	if err != nil {
		return nil, err
	}
	out := make([][][]float32, len(seqs))
	for r, i := range m.owns {
		out[i] = append(out[i], logits[r])
	}
	return out, nil
}

// stepTensors are the activations of one step, reused by every layer.
type stepTensors struct {
	x      Tensor // residual stream [T × Hidden]
	h      Tensor // normed input of the next block [T × Hidden]
	q      Tensor // [T × heads·D]
	k, v   Tensor // [T × kvHeads·D]
	attn   Tensor // attention output [T × heads·D]
	delta  Tensor // o_proj, then MoE output, before the residual add [T × Hidden]
	router Tensor // router logits [T × Experts]
}

// tensors makes a step's activations for T tokens.
func (m *Model) tensors(T int) (*stepTensors, error) {
	c := &m.W.Config
	p := &m.W.Part
	qd, kvd := p.Heads*c.HeadDim, p.KVHeads*c.HeadDim
	st := &stepTensors{}
	for _, a := range []struct {
		t    *Tensor
		cols int
	}{{&st.x, c.Hidden}, {&st.h, c.Hidden}, {&st.q, qd}, {&st.k, kvd}, {&st.v, kvd},
		{&st.attn, qd}, {&st.delta, c.Hidden}, {&st.router, c.Experts}} {
		var err error
		if *a.t, err = m.b.Tensor(T, a.cols); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// layer runs transformer block l: st.h holds its normed input, and it
// leaves the next block's (or the final norm's) in st.h. A tensor-parallel
// rank computes its own heads and experts; the partial o_proj and MoE
// outputs are summed across ranks, and the o_proj bias added once, after
// the sum.
func (m *Model) layer(l int, st *stepTensors) error {
	b := m.b
	at := func(n ParamName) Param { return Param{Layer: l, Name: n} }
	tp := m.W.Part.TP > 1
	if err := b.Linear(at(ParamQ), st.h, true, st.q); err != nil {
		return err
	}
	if err := b.Linear(at(ParamK), st.h, true, st.k); err != nil {
		return err
	}
	if err := b.Linear(at(ParamV), st.h, true, st.v); err != nil {
		return err
	}
	if err := b.Rope(st.q, st.k); err != nil {
		return err
	}
	if err := b.WriteKV(l, st.k, st.v); err != nil {
		return err
	}
	if err := b.Attention(l, st.q, st.attn); err != nil {
		return err
	}
	if err := b.Linear(at(ParamO), st.attn, !tp, st.delta); err != nil {
		return err
	}
	bias := NoBias()
	if tp {
		if err := b.AllReduce(st.delta); err != nil {
			return err
		}
		bias = at(ParamO)
	}
	if err := b.AddRMSNorm(st.x, st.delta, bias, at(ParamMLPNorm), st.h); err != nil {
		return err
	}
	// Mixture of experts: the router is replicated, the experts split.
	if err := b.Linear(at(ParamRouter), st.h, true, st.router); err != nil {
		return err
	}
	if err := b.MoE(l, st.h, st.router, st.delta); err != nil {
		return err
	}
	if tp {
		if err := b.AllReduce(st.delta); err != nil {
			return err
		}
	}
	next := Param{Layer: -1, Name: ParamNorm}
	if l+1 < len(m.W.Layers) {
		next = Param{Layer: l + 1, Name: ParamAttnNorm}
	}
	return b.AddRMSNorm(st.x, st.delta, NoBias(), next, st.h)
}

// unembed returns the logits [len(rows) × Vocab] of the given rows of h
// (the final norm's output), in host memory the caller keeps (unless
// ReuseLogits). A tensor-parallel rank computes its vocabulary slice; the
// slices of every rank are gathered and put side by side.
func (m *Model) unembed(h Tensor, rows []int) ([][]float32, error) {
	c := &m.W.Config
	p := &m.W.Part
	b := m.b
	n, nv := len(rows), p.VocabHi-p.VocabLo
	g, err := b.Tensor(n, c.Hidden)
	if err != nil {
		return nil, err
	}
	if err := b.GatherRows(h, rows, g); err != nil {
		return nil, err
	}
	unembed := func(out Tensor) error { return b.Linear(Param{Layer: -1, Name: ParamUnembed}, g, false, out) }
	var logits [][]float32
	if m.ReuseLogits {
		if cap(m.logits) < n*c.Vocab {
			m.logits = make([]float32, n*c.Vocab)
		}
		logits = make([][]float32, n)
		for i := range logits {
			logits[i] = m.logits[i*c.Vocab : (i+1)*c.Vocab]
		}
	} else {
		logits = matrix(n, c.Vocab)
	}
	if p.TP <= 1 {
		if err := m.intoHost(logits[0][:n*c.Vocab], n, c.Vocab, unembed); err != nil {
			return nil, err
		}
		return logits, nil
	}
	local, err := b.Tensor(n, nv)
	if err != nil {
		return nil, err
	}
	if err := unembed(local); err != nil {
		return nil, err
	}
	// Every rank's slice, in rank order: rank r's rows are the gathered
	// rows r·n .. (r+1)·n-1.
	gathered := make([]float32, p.TP*n*nv)
	gather := func(out Tensor) error { return b.AllGather(local, out) }
	if err := m.intoHost(gathered, p.TP*n, nv, gather); err != nil {
		return nil, err
	}
	for rank := range p.TP {
		for r := range n {
			copy(logits[r][rank*nv:(rank+1)*nv], gathered[(rank*n+r)*nv:])
		}
	}
	return logits, nil
}

// intoHost runs op, which writes a rows × cols tensor, and leaves the
// result in host (len rows × cols). On the CPU, whose tensors are host
// memory, op writes into host directly: reading the logits out of a
// tensor would copy n × vocab floats, a visible part of a small model's
// batched step. Elsewhere op writes a backend tensor that is read back.
func (m *Model) intoHost(host []float32, rows, cols int, op func(out Tensor) error) error {
	if m.cpu != nil {
		return op(m.cpu.wrap(host, rows, cols))
	}
	t, err := m.b.Tensor(rows, cols)
	if err != nil {
		return err
	}
	if err := op(t); err != nil {
		return err
	}
	return m.b.Read(t, host)
}
