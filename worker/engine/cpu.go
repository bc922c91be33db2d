package engine

import (
	"fmt"
	"math"
	"slices"
)

// CPU is the reference Backend: float32 activations, bf16 and MXFP4
// weights decoded in registers (kernels.go), work split over every core
// with parallel. Its ops run synchronously, so an error comes back from
// the op that failed. Every op writes all of its output, so a tensor's
// memory may be recycled from an earlier step without clearing.
type CPU struct {
	w     *Weights
	cache *KVCache
	coll  Collective
	rope  *rope
	lay   *StepLayout

	// used holds the buffers the current step's tensors took; free those
	// the previous step left, for reuse (decode steps repeat their shapes).
	used, free [][]float32

	// fast selects the kernels that round activations (CPUOptions);
	// q8h and q8e are MoE's quantized hidden state and experts' inputs,
	// kept for the next layer's and step's reuse.
	fast bool
	q8h  q8Acts
	q8e  []q8Acts
}

// CPUOptions configures the CPU backend.
type CPUOptions struct {
	// Fast selects, where the CPU has them, kernels that round the
	// activations before the products, as llama.cpp's CPU backend does:
	// MXFP4 experts against int8 activations (q8.go) and bf16 matrices
	// against bf16 activations (bf16dp.go). Their error is measured
	// against the exact kernels, which stay the default and the tests'
	// reference. FastKernels tells which of them this CPU runs.
	Fast bool
}

// FastKernels reports which fast kernels CPUOptions.Fast gets on this
// CPU: the int8 MXFP4 ones (AVX-512 VNNI) and the bf16 ones (AVX-512
// BF16). Where one is missing, that part runs the exact kernels.
func FastKernels() (mxfp4, bf16 bool) { return useQ8, useBF16DP }

// NewCPU returns the CPU backend over weights w and a cache made for them
// (NewKVCache with w.CacheConfig()); coll joins the ranks of a
// tensor-parallel model and may be nil when w is whole. NewModelOn checks
// that the cache matches the weights.
func NewCPU(w *Weights, cache *KVCache, coll Collective) Backend {
	return newCPU(w, cache, coll)
}

// NewCPUWith is NewCPU with options.
func NewCPUWith(w *Weights, cache *KVCache, coll Collective, o CPUOptions) Backend {
	c := newCPU(w, cache, coll)
	c.fast = o.Fast
	return c
}

func newCPU(w *Weights, cache *KVCache, coll Collective) *CPU {
	return &CPU{w: w, cache: cache, coll: coll, rope: newRope(&w.Config)}
}

// check verifies what the CPU ops assume without checking per call: a
// cache with the weights' layers and KV width, and heads that fit rope's
// fixed-size tables.
func (c *CPU) check() error {
	cfg := &c.w.Config
	if c.cache == nil {
		return fmt.Errorf("engine: cpu: no KV cache")
	}
	if len(c.cache.k) != cfg.Layers || c.cache.kvDim != c.w.Part.KVHeads*cfg.HeadDim {
		return fmt.Errorf("engine: cache geometry (%d layers × %d) does not match the model (%d × %d)",
			len(c.cache.k), c.cache.kvDim, cfg.Layers, c.w.Part.KVHeads*cfg.HeadDim)
	}
	if cfg.HeadDim > 512 {
		return fmt.Errorf("engine: head_dim %d too large", cfg.HeadDim)
	}
	return nil
}

// cpuTensor is a CPU activation matrix: rows sharing one backing slice,
// so a whole tensor can be handed to the collective in one piece.
type cpuTensor struct {
	buf  []float32   // Rows × Cols, row-major
	rows [][]float32 // rows[i] = buf[i·cols : (i+1)·cols]
	cols int
}

func (t *cpuTensor) Rows() int { return len(t.rows) }
func (t *cpuTensor) Cols() int { return t.cols }

// Name implements Backend.
func (c *CPU) Name() string { return "cpu" }

// Weights implements Backend.
func (c *CPU) Weights() *Weights { return c.w }

// Geometry implements Backend.
func (c *CPU) Geometry() KVGeometry {
	if c.cache == nil {
		return KVGeometry{}
	}
	return c.cache.Geometry()
}

// Tensor implements Backend. The memory is not cleared: it may be a
// buffer of the previous step.
func (c *CPU) Tensor(rows, cols int) (Tensor, error) {
	if rows < 0 || cols < 0 {
		return nil, fmt.Errorf("engine: cpu: tensor of %d × %d", rows, cols)
	}
	return c.wrap(c.take(rows*cols), rows, cols), nil
}

// wrap makes a tensor over buf (len rows × cols), which stays the
// caller's: it is not recycled at EndStep.
func (c *CPU) wrap(buf []float32, rows, cols int) *cpuTensor {
	t := &cpuTensor{buf: buf[:rows*cols], rows: make([][]float32, rows), cols: cols}
	for i := range t.rows {
		t.rows[i] = buf[i*cols : (i+1)*cols]
	}
	return t
}

// take returns a buffer of n float32s: the smallest free one that holds n
// without wasting more than half of it, else a new one.
func (c *CPU) take(n int) []float32 {
	best := -1
	for i, b := range c.free {
		if cap(b) >= n && cap(b) <= 2*n && (best < 0 || cap(b) < cap(c.free[best])) {
			best = i
		}
	}
	var buf []float32
	if best >= 0 {
		buf = c.free[best][:n]
		last := len(c.free) - 1
		c.free[best] = c.free[last]
		c.free[last] = nil
		c.free = c.free[:last]
	} else {
		buf = make([]float32, n)
	}
	c.used = append(c.used, buf)
	return buf
}

// Read implements Backend.
func (c *CPU) Read(t Tensor, dst []float32) error {
	m, err := c.mat(t)
	if err != nil {
		return fmt.Errorf("engine: cpu: read: %w", err)
	}
	if len(dst) != len(m.buf) {
		return fmt.Errorf("engine: cpu: read: %d × %d tensor into %d floats", m.Rows(), m.cols, len(dst))
	}
	copy(dst, m.buf)
	return nil
}

// Write implements Backend.
func (c *CPU) Write(t Tensor, src []float32) error {
	m, err := c.mat(t)
	if err != nil {
		return fmt.Errorf("engine: cpu: write: %w", err)
	}
	if len(src) != len(m.buf) {
		return fmt.Errorf("engine: cpu: write: %d floats into a %d × %d tensor", len(src), m.Rows(), m.cols)
	}
	copy(m.buf, src)
	return nil
}

// Begin implements Backend. The layout is used, not copied, until EndStep.
func (c *CPU) Begin(lay *StepLayout) error {
	if p := c.w.Part; p.TP > 1 && c.coll == nil {
		return fmt.Errorf("engine: rank %d of %d has no collective", p.Rank, p.TP)
	}
	T := len(lay.IDs)
	if len(lay.Pos) != T || len(lay.Seq) != T || len(lay.Sliding) != len(lay.Tables) {
		return fmt.Errorf("engine: cpu: step layout of %d ids, %d positions, %d sequence indexes, %d and %d tables",
			T, len(lay.Pos), len(lay.Seq), len(lay.Tables), len(lay.Sliding))
	}
	for t, s := range lay.Seq {
		if s < 0 || s >= len(lay.Tables) {
			return fmt.Errorf("engine: cpu: token %d of sequence %d, of %d", t, s, len(lay.Tables))
		}
	}
	c.lay = lay
	return nil
}

// EndStep implements Backend: the step's buffers become the next step's
// free ones, and whatever the step did not reuse goes to the collector.
func (c *CPU) EndStep() {
	c.lay = nil
	clear(c.free)
	c.free, c.used = c.used, c.free[:0]
}

// Embed implements Backend.
func (c *CPU) Embed(x Tensor) error {
	xm, err := c.mat(x)
	if err == nil {
		err = c.shape(xm, c.tokens(), c.w.Config.Hidden)
	}
	if err != nil {
		return fmt.Errorf("engine: cpu: embed: %w", err)
	}
	for t, id := range c.lay.IDs {
		c.w.Embed.row(id, xm.rows[t])
	}
	return nil
}

// RMSNorm implements Backend.
func (c *CPU) RMSNorm(x Tensor, gain Param, out Tensor) error {
	xm, om, g, err := c.normArgs(x, gain, out)
	if err != nil {
		return fmt.Errorf("engine: cpu: rms norm: %w", err)
	}
	eps := float32(c.w.Config.RMSNormEps)
	for t := range xm.rows {
		rmsNorm(xm.rows[t], g, om.rows[t], eps)
	}
	return nil
}

// AddRMSNorm implements Backend. With a bias, x += (delta + bias): the sum
// of the ranks' partial outputs gets the bias once, as before the add.
func (c *CPU) AddRMSNorm(x, delta Tensor, bias Param, gain Param, out Tensor) error {
	xm, om, g, err := c.normArgs(x, gain, out)
	var dm *cpuTensor
	if err == nil {
		if dm, err = c.mat(delta); err == nil {
			err = c.shape(dm, xm.Rows(), xm.cols)
		}
	}
	var b []float32
	if err == nil && bias.Layer != noBias.Layer {
		if _, b, err = c.dense(bias); err == nil && len(b) != xm.cols {
			err = fmt.Errorf("%s has no bias of %d", paramString(bias), xm.cols)
		}
	}
	if err != nil {
		return fmt.Errorf("engine: cpu: add rms norm: %w", err)
	}
	eps := float32(c.w.Config.RMSNormEps)
	for t := range xm.rows {
		xt, dt := xm.rows[t], dm.rows[t]
		if b != nil {
			for i := range xt {
				xt[i] += dt[i] + b[i]
			}
		} else {
			for i := range xt {
				xt[i] += dt[i]
			}
		}
		rmsNorm(xt, g, om.rows[t], eps)
	}
	return nil
}

// normArgs resolves and checks the operands every norm takes.
func (c *CPU) normArgs(x Tensor, gain Param, out Tensor) (xm, om *cpuTensor, g []float32, err error) {
	if xm, err = c.mat(x); err != nil {
		return
	}
	if om, err = c.mat(out); err != nil {
		return
	}
	if g, err = c.vector(gain); err != nil {
		return
	}
	if err = c.shape(xm, xm.Rows(), len(g)); err != nil {
		return
	}
	err = c.shape(om, xm.Rows(), len(g))
	return
}

// Linear implements Backend.
func (c *CPU) Linear(w Param, in Tensor, withBias bool, out Tensor) error {
	mat, bias, err := c.dense(w)
	var im, om *cpuTensor
	if err == nil {
		im, err = c.mat(in)
	}
	if err == nil {
		om, err = c.mat(out)
	}
	if err == nil {
		err = c.shape(im, im.Rows(), mat.Cols)
	}
	if err == nil {
		err = c.shape(om, im.Rows(), mat.Rows)
	}
	if err == nil && withBias && bias == nil {
		err = fmt.Errorf("%s has no bias", paramString(w))
	}
	if err != nil {
		return fmt.Errorf("engine: cpu: linear: %w", err)
	}
	if !withBias {
		bias = nil
	}
	// The router stays exact under fast kernels: it is small, and a
	// rounded logit near a tie would pick another expert.
	if c.fast && useBF16DP && w.Name != ParamRouter && mat.F32 == nil && mat.Cols%32 == 0 {
		linearBF16DP(mat, bias, im.rows, om.rows)
		return nil
	}
	linear(mat, bias, im.rows, om.rows)
	return nil
}

// Rope implements Backend.
func (c *CPU) Rope(q, k Tensor) error {
	hd := c.w.Config.HeadDim
	p := &c.w.Part
	qm, err := c.mat(q)
	var km *cpuTensor
	if err == nil {
		km, err = c.mat(k)
	}
	if err == nil {
		err = c.shape(qm, c.tokens(), p.Heads*hd)
	}
	if err == nil {
		err = c.shape(km, c.tokens(), p.KVHeads*hd)
	}
	if err != nil {
		return fmt.Errorf("engine: cpu: rope: %w", err)
	}
	for t, pos := range c.lay.Pos {
		c.rope.apply(qm.rows[t], p.Heads, hd, pos)
		c.rope.apply(km.rows[t], p.KVHeads, hd, pos)
	}
	return nil
}

// table returns token t's block table and pool size for layer l.
func (c *CPU) table(t, l int) ([]int, int) {
	s := c.lay.Seq[t]
	if c.cache.sliding[l] {
		return c.lay.Sliding[s], c.cache.SlidingBlocks
	}
	return c.lay.Tables[s], c.cache.Blocks
}

// WriteKV implements Backend.
func (c *CPU) WriteKV(l int, k, v Tensor) error {
	km, err := c.mat(k)
	var vm *cpuTensor
	if err == nil {
		vm, err = c.mat(v)
	}
	if err == nil {
		err = c.layer(l)
	}
	if err == nil {
		err = c.shape(km, c.tokens(), c.cache.kvDim)
	}
	if err == nil {
		err = c.shape(vm, c.tokens(), c.cache.kvDim)
	}
	if err != nil {
		return fmt.Errorf("engine: cpu: write kv: %w", err)
	}
	for t, pos := range c.lay.Pos {
		table, pool := c.table(t, l)
		off, err := c.cache.slot(table, pos, pool)
		if err != nil {
			return fmt.Errorf("engine: cpu: write kv: layer %d, token %d: %w", l, t, err)
		}
		copy(c.cache.key(l, off), km.rows[t])
		copy(c.cache.value(l, off), vm.rows[t])
	}
	return nil
}

// Attention implements Backend: per token and query head, the softmax of
// the scaled scores over the visible positions with the learned sink as
// one more logit, applied to the values. The tables were validated with
// the step, so slot errors cannot occur here.
func (c *CPU) Attention(l int, q, out Tensor) error {
	cfg := &c.w.Config
	p := &c.w.Part
	qm, err := c.mat(q)
	var om *cpuTensor
	if err == nil {
		om, err = c.mat(out)
	}
	if err == nil {
		err = c.layer(l)
	}
	if err == nil {
		err = c.shape(qm, c.tokens(), p.Heads*cfg.HeadDim)
	}
	if err == nil {
		err = c.shape(om, c.tokens(), p.Heads*cfg.HeadDim)
	}
	if err != nil {
		return fmt.Errorf("engine: cpu: attention: %w", err)
	}
	L := &c.w.Layers[l]
	window := math.MaxInt
	if cfg.Sliding(l) {
		window = cfg.SlidingWindow
	}
	hd := cfg.HeadDim
	heads, kvHeads := p.Heads, p.KVHeads
	scale := float32(1 / math.Sqrt(float64(hd)))
	group := heads / kvHeads
	// The vector loops compute exactly what the scalar ones do
	// (attn_amd64.s), so either gives the same bits.
	vec := attnVector && hd%8 == 0
	clear(om.buf) // the values are summed into it
	parallel(len(qm.rows)*heads, func(lo, hi int) {
		var scores []float32
		for i := lo; i < hi; i++ {
			t, head := i/heads, i%heads
			pos := c.lay.Pos[t]
			table, pool := c.table(t, l)
			first := max(0, pos-window+1)
			qv := qm.rows[t][head*hd : (head+1)*hd]
			kvOff := (head / group) * hd
			scores = scores[:0]
			// The learned sink joins the softmax as one more logit.
			mx := L.Sinks[head]
			j := first
			for ; vec && j+3 <= pos; j += 4 { // four keys at a time, each exactly dot
				var k [4]*float32
				for i := range k {
					off, _ := c.cache.slot(table, j+i, pool)
					k[i] = &c.cache.key(l, off)[kvOff]
				}
				var d [4]float32
				dot4Keys(&qv[0], k[0], k[1], k[2], k[3], hd, &d)
				for _, v := range d {
					s := v * scale
					scores = append(scores, s)
					mx = max(mx, s)
				}
			}
			for ; j <= pos; j++ {
				off, _ := c.cache.slot(table, j, pool)
				s := dot(qv, c.cache.key(l, off)[kvOff:kvOff+hd]) * scale
				scores = append(scores, s)
				mx = max(mx, s)
			}
			sum := float32(math.Exp(float64(L.Sinks[head] - mx)))
			for j, s := range scores {
				e := float32(math.Exp(float64(s - mx)))
				scores[j] = e
				sum += e
			}
			o := om.rows[t][head*hd : (head+1)*hd]
			for j, p := range scores {
				off, _ := c.cache.slot(table, first+j, pool)
				vv := c.cache.value(l, off)[kvOff : kvOff+hd]
				w := p / sum
				if vec {
					axpyAVX(w, &vv[0], &o[0], hd)
					continue
				}
				for d := range o {
					o[d] += w * vv[d]
				}
			}
		}
	})
	return nil
}

// MoE implements Backend. Routing takes the top-k raw logits (a stable
// sort, so ties go to the lower expert id) and a softmax over those k;
// this rank then runs its own experts on the tokens routed to them, and
// the weighted outputs are summed per token in expert order.
func (c *CPU) MoE(l int, h, routerLogits, out Tensor) error {
	cfg := &c.w.Config
	p := &c.w.Part
	hm, err := c.mat(h)
	var lm, om *cpuTensor
	if err == nil {
		lm, err = c.mat(routerLogits)
	}
	if err == nil {
		om, err = c.mat(out)
	}
	if err == nil {
		err = c.layer(l)
	}
	if err == nil {
		err = c.shape(hm, hm.Rows(), cfg.Hidden)
	}
	if err == nil {
		err = c.shape(lm, hm.Rows(), cfg.Experts)
	}
	if err == nil {
		err = c.shape(om, hm.Rows(), cfg.Hidden)
	}
	if err == nil && (cfg.ExpertsPerToken < 1 || cfg.ExpertsPerToken > cfg.Experts) {
		err = fmt.Errorf("%d experts per token of %d", cfg.ExpertsPerToken, cfg.Experts)
	}
	if err != nil {
		return fmt.Errorf("engine: cpu: moe: %w", err)
	}
	L := &c.w.Layers[l]
	type pick struct {
		tok    int
		weight float32
	}
	byExpert := make([][]pick, cfg.Experts)
	idx := make([]int, cfg.Experts)
	ws := make([]float32, cfg.ExpertsPerToken)
	for t, lg := range lm.rows {
		for e := range idx {
			idx[e] = e
		}
		slices.SortStableFunc(idx, func(a, b int) int {
			switch {
			case lg[a] > lg[b]:
				return -1
			case lg[a] < lg[b]:
				return 1
			}
			return 0
		})
		top := idx[:cfg.ExpertsPerToken]
		mx := lg[top[0]]
		var sum float32
		for i, e := range top {
			ws[i] = float32(math.Exp(float64(lg[e] - mx)))
			sum += ws[i]
		}
		for i, e := range top {
			byExpert[e] = append(byExpert[e], pick{tok: t, weight: ws[i] / sum})
		}
	}
	limit := float32(cfg.SwigluLimit)
	inter := cfg.Intermediate
	type expertWork struct {
		le         int // index among this rank's experts
		picks      []pick
		gu, act, y [][]float32
	}
	var work []expertWork
	for e, picks := range byExpert {
		if len(picks) > 0 && e >= p.ExpertLo && e < p.ExpertHi {
			work = append(work, expertWork{le: e - p.ExpertLo, picks: picks})
		}
	}
	// The vector kernels run every expert's product as one parallel
	// region per matrix (parallelJobs); the portable ones one at a time.
	fast := c.fast && L.GateUp.q8() && L.Down.q8()
	vec := L.GateUp.vector && L.Down.vector
	if fast { // each token quantized once, for all of its experts
		c.q8h.reset(len(hm.rows), cfg.Hidden/32)
		for t, r := range hm.rows {
			c.q8h.quantize(t, r)
		}
		if len(c.q8e) < len(work) {
			c.q8e = make([]q8Acts, len(work))
		}
	}
	var jobs []rowJob
	var toks []int
	for k := range work {
		w := &work[k]
		// gate_up: rows interleaved gate (even) / up (odd).
		w.gu = matrix(len(w.picks), 2*inter)
		guB := L.GateUpB[w.le*2*inter : (w.le+1)*2*inter]
		switch {
		case fast:
			toks = toks[:0]
			for _, p := range w.picks {
				toks = append(toks, p.tok)
			}
			c.q8e[k].gather(&c.q8h, toks)
			jobs = append(jobs, q8Job(&L.GateUp, w.le, guB, &c.q8e[k], w.gu))
		case vec:
			in := matrix(len(w.picks), cfg.Hidden)
			for i, p := range w.picks {
				copy(in[i], hm.rows[p.tok])
			}
			jobs = append(jobs, mxfp4Job(&L.GateUp, w.le, guB, in, w.gu))
		default:
			in := make([][]float32, len(w.picks))
			for i, p := range w.picks {
				in[i] = hm.rows[p.tok]
			}
			expertLinear(&L.GateUp, w.le, guB, in, w.gu)
		}
	}
	parallelJobs(jobs)
	jobs = jobs[:0]
	for k := range work {
		w := &work[k]
		w.act = matrix(len(w.picks), inter)
		for i := range w.picks {
			for k := range inter {
				g := min(w.gu[i][2*k], limit)
				u := min(max(w.gu[i][2*k+1], -limit), limit)
				w.act[i][k] = g * sigmoid(1.702*g) * (u + 1)
			}
		}
		w.y = matrix(len(w.picks), cfg.Hidden)
		downB := L.DownB[w.le*cfg.Hidden : (w.le+1)*cfg.Hidden]
		switch {
		case fast:
			c.q8e[k].reset(len(w.picks), inter/32)
			for i, a := range w.act {
				c.q8e[k].quantize(i, a)
			}
			jobs = append(jobs, q8Job(&L.Down, w.le, downB, &c.q8e[k], w.y))
		case vec:
			jobs = append(jobs, mxfp4Job(&L.Down, w.le, downB, w.act, w.y))
		default:
			expertLinear(&L.Down, w.le, downB, w.act, w.y)
		}
	}
	parallelJobs(jobs)
	clear(om.buf) // the experts' outputs are summed into it, in expert order
	for _, w := range work {
		for i, p := range w.picks {
			o := om.rows[p.tok]
			for d := range w.y[i] {
				o[d] += p.weight * w.y[i][d]
			}
		}
	}
	return nil
}

// expertLinear is linear for one MXFP4 expert matrix: out[t] = W_e·x[t]
// + bias for the tokens routed to expert e. The vector kernel decodes each
// block once for several tokens and still gives every (row, token) the
// single-token kernel's exact operations, so results stay batch-invariant
// (like linear's); the portable path decodes per token.
func expertLinear(w *MXFP4, e int, bias []float32, x, out [][]float32) {
	if len(x) == 0 {
		return
	}
	if w.vector {
		expertLinearAVX2(w, e, bias, x, out)
		return
	}
	parallel(w.Rows, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			for t := range x {
				out[t][r] = w.dot(e, r, x[t]) + bias[r]
			}
		}
	})
}

// expertRowChunk is how many rows one MXFP4 kernel call covers: at 32
// tokens a call still lasts well under a millisecond (assembly cannot be
// preempted). (An AVX-512 VL form that decodes each block once for eight
// tokens, keeping the products in the upper registers, measured no faster
// on Zen 4: the four-token kernel is no longer bound by the decoding.)
const expertRowChunk = 64

// expertLinearAVX2 is expertLinear with dotMXFP4RowsAVX2. The kernel
// wants the tokens as the rows of one matrix: the picked tokens of the
// hidden state are not, so they are copied together first (a few KB per
// token, against megabytes of weights).
func expertLinearAVX2(w *MXFP4, e int, bias []float32, x, out [][]float32) {
	n, rows := w.Cols, w.Rows
	if rows == 0 {
		return
	}
	if rowStride(x) == 0 {
		g := matrix(len(x), n)
		for t := range x {
			copy(g[t], x[t])
		}
		x = g
	}
	intoMatrix(out, rows, func(res [][]float32) rowJob { return mxfp4Job(w, e, bias, x, res) })
}

// mxfp4Job is expertLinearAVX2's product as a rowJob, for x and out
// (len(x) > 0 tokens) each one matrix, so that MoE runs all of a step's
// experts in one parallel region.
func mxfp4Job(w *MXFP4, e int, bias []float32, x, out [][]float32) rowJob {
	n, rows, nb := w.Cols, w.Rows, w.Cols/32
	for t := range x {
		_, _ = x[t][n-1], out[t][rows-1] // bounds, checked once
	}
	xs, os := rowStride(x), rowStride(out)
	if xs == 0 || os == 0 {
		panic("engine: mxfp4Job: tokens or outputs are not one matrix")
	}
	xa, oa := x[0][:cap(x[0])], out[0][:cap(out[0])]
	base := w.expertBase(e, bias)
	return rowJob{rows: rows, run: func(lo, hi int) {
		for r := lo; r < hi; r += expertRowChunk {
			m := min(expertRowChunk, hi-r)
			o := base + r*nb
			var b *float32
			if bias != nil {
				b = &bias[r]
			}
			dotMXFP4RowsAVX2(&w.Blocks[o*16], &w.Scales[o], nb, m, &xa[0], xs, len(x), b, &oa[r], os)
		}
	}}
}

// GatherRows implements Backend.
func (c *CPU) GatherRows(x Tensor, rows []int, out Tensor) error {
	xm, err := c.mat(x)
	var om *cpuTensor
	if err == nil {
		om, err = c.mat(out)
	}
	if err == nil {
		err = c.shape(om, len(rows), xm.cols)
	}
	if err != nil {
		return fmt.Errorf("engine: cpu: gather rows: %w", err)
	}
	for i, r := range rows {
		if r < 0 || r >= xm.Rows() {
			return fmt.Errorf("engine: cpu: gather rows: row %d of %d", r, xm.Rows())
		}
		copy(om.rows[i], xm.rows[r])
	}
	return nil
}

// AllReduce implements Backend.
func (c *CPU) AllReduce(t Tensor) error {
	m, err := c.mat(t)
	if err != nil {
		return fmt.Errorf("engine: cpu: all-reduce: %w", err)
	}
	if c.w.Part.TP <= 1 {
		return nil
	}
	if c.coll == nil {
		return fmt.Errorf("engine: cpu: all-reduce: rank %d of %d has no collective", c.w.Part.Rank, c.w.Part.TP)
	}
	return c.coll.AllReduce(m.buf)
}

// AllGather implements Backend.
func (c *CPU) AllGather(local, out Tensor) error {
	lm, err := c.mat(local)
	var om *cpuTensor
	if err == nil {
		om, err = c.mat(out)
	}
	tp := max(c.w.Part.TP, 1)
	if err == nil {
		err = c.shape(om, tp*lm.Rows(), lm.cols)
	}
	if err != nil {
		return fmt.Errorf("engine: cpu: all-gather: %w", err)
	}
	if tp == 1 {
		copy(om.buf, lm.buf)
		return nil
	}
	if c.coll == nil {
		return fmt.Errorf("engine: cpu: all-gather: rank %d of %d has no collective", c.w.Part.Rank, tp)
	}
	return c.coll.AllGather(lm.buf, om.buf)
}

// mat unwraps a tensor this backend made.
func (c *CPU) mat(t Tensor) (*cpuTensor, error) {
	m, ok := t.(*cpuTensor)
	if !ok || m == nil {
		return nil, fmt.Errorf("a %T is not a CPU tensor", t)
	}
	return m, nil
}

// shape checks that m is rows × cols.
func (c *CPU) shape(m *cpuTensor, rows, cols int) error {
	if m.Rows() != rows || m.cols != cols {
		return fmt.Errorf("tensor is %d × %d, want %d × %d", m.Rows(), m.cols, rows, cols)
	}
	return nil
}

// tokens is the current step's token count (-1 outside a step, which no
// tensor matches).
func (c *CPU) tokens() int {
	if c.lay == nil {
		return -1
	}
	return len(c.lay.IDs)
}

// layer checks a layer index for the ops that read the cache.
func (c *CPU) layer(l int) error {
	if c.lay == nil {
		return fmt.Errorf("no step begun")
	}
	if l < 0 || l >= len(c.w.Layers) {
		return fmt.Errorf("layer %d of %d", l, len(c.w.Layers))
	}
	return nil
}

// vector resolves a norm gain.
func (c *CPU) vector(p Param) ([]float32, error) {
	switch {
	case p.Layer == -1 && p.Name == ParamNorm:
		return c.w.Norm, nil
	case p.Layer >= 0 && p.Layer < len(c.w.Layers) && p.Name == ParamAttnNorm:
		return c.w.Layers[p.Layer].AttnNorm, nil
	case p.Layer >= 0 && p.Layer < len(c.w.Layers) && p.Name == ParamMLPNorm:
		return c.w.Layers[p.Layer].MLPNorm, nil
	}
	return nil, fmt.Errorf("%s is not a norm gain", paramString(p))
}

// dense resolves a matrix and its bias (nil for the unembedding).
func (c *CPU) dense(p Param) (*Mat, []float32, error) {
	if p.Layer == -1 && p.Name == ParamUnembed {
		return &c.w.Unembed, nil, nil
	}
	if p.Layer >= 0 && p.Layer < len(c.w.Layers) {
		L := &c.w.Layers[p.Layer]
		switch p.Name {
		case ParamQ:
			return &L.Q, L.QB, nil
		case ParamK:
			return &L.K, L.KB, nil
		case ParamV:
			return &L.V, L.VB, nil
		case ParamO:
			return &L.O, L.OB, nil
		case ParamRouter:
			return &L.Router, L.RouterB, nil
		}
	}
	return nil, nil, fmt.Errorf("%s is not a dense weight", paramString(p))
}

// paramString names a Param in errors.
func paramString(p Param) string {
	names := [...]string{ParamAttnNorm: "attn_norm", ParamMLPNorm: "mlp_norm", ParamQ: "q", ParamK: "k", ParamV: "v",
		ParamO: "o", ParamRouter: "router", ParamNorm: "norm", ParamUnembed: "unembed"}
	name := fmt.Sprintf("param %d", p.Name)
	if p.Name >= 0 && int(p.Name) < len(names) {
		name = names[p.Name]
	}
	if p.Layer < 0 {
		return fmt.Sprintf("%s (layer %d)", name, p.Layer)
	}
	return fmt.Sprintf("layer %d %s", p.Layer, name)
}
