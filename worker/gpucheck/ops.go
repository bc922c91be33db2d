package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/gptoss/server/shared/model"
	"github.com/gptoss/server/worker/engine"
)

// opConfig is the small model the op checks run: the real head size,
// window, RoPE and GQA shape of gpt-oss (so the kernels' head-dim and
// window paths are the production ones) at a width where the CPU
// reference takes milliseconds. Hidden 320 and intermediate 192 are, like
// 2880, multiples of 64 but not of 128; the vocabulary 3001 is odd.
func opConfig() model.Config {
	c := model.Presets["20b"].Architecture()
	c.Layers, c.Hidden, c.Heads, c.KVHeads, c.HeadDim = 2, 320, 8, 2, 64
	c.Experts, c.ExpertsPerToken, c.Intermediate, c.Vocab = 8, 4, 192, 3001
	c.LayerTypes = nil // layer 0 slides, layer 1 is full
	return c
}

// opKV is the op checks' backend: a cache with room for the long-context
// sequences, steps of up to 4096 tokens, the model's whole context (the
// RoPE check goes to position 131071).
var opKV = Spec{BlockSize: 16, Blocks: 1024, SlidingBlocks: 1024, MaxTokens: 4096, MaxSeqs: 64}

// tolAcc is for matrix products whose inputs are already bf16-exact: the
// device's rounding to bf16 changes nothing, and only the fp32 summation
// order differs (relative error near √K·2⁻²⁴, a few 1e-6).
var tolAcc = Tolerance{RelL2: 1e-4, AbsOfMax: 1e-3,
	Why: "bf16-exact inputs: only the fp32 summation order differs"}

// opEnv runs one op on the reference and on the device under test with
// the same inputs.
type opEnv struct {
	ref, dut engine.Backend
	cfg      model.Config
	rng      *rand.Rand
	kv       *kvState
	quick    bool
	// scratchSeq is the one sequence whose tables the KV-free ops' steps
	// use (−1 until made).
	scratchSeq int
}

// both runs f on the reference, then on the device under test.
func (e *opEnv) both(f func(b engine.Backend) error) error {
	if err := f(e.ref); err != nil {
		return fmt.Errorf("reference %s: %w", e.ref.Name(), err)
	}
	if err := f(e.dut); err != nil {
		return fmt.Errorf("%s: %w", e.dut.Name(), err)
	}
	return nil
}

func (e *opEnv) begin(lay *engine.StepLayout) error {
	return e.both(func(b engine.Backend) error { return b.Begin(lay) })
}

func (e *opEnv) end() {
	e.ref.EndStep()
	e.dut.EndStep()
}

// tpair is one tensor on each backend.
type tpair struct {
	r, d       engine.Tensor
	rows, cols int
}

// in makes a tensor on each side holding data.
func (e *opEnv) in(rows, cols int, data []float32) (tpair, error) {
	p := tpair{rows: rows, cols: cols}
	err := e.both(func(b engine.Backend) error {
		t, err := b.Tensor(rows, cols)
		if err != nil {
			return err
		}
		if b == e.ref {
			p.r = t
		} else {
			p.d = t
		}
		return b.Write(t, data)
	})
	return p, err
}

// out makes an output tensor on each side, poisoned with NaN so that an
// element the op does not write shows up in the comparison.
func (e *opEnv) out(rows, cols int) (tpair, error) {
	return e.in(rows, cols, nans(rows*cols))
}

// diff reads both sides and measures the device's against the reference.
func (e *opEnv) diff(p tpair) (Diff, error) {
	ref := make([]float32, p.rows*p.cols)
	got := make([]float32, p.rows*p.cols)
	if err := e.ref.Read(p.r, ref); err != nil {
		return Diff{}, fmt.Errorf("reference read: %w", err)
	}
	if err := e.dut.Read(p.d, got); err != nil {
		return Diff{}, fmt.Errorf("%s read: %w", e.dut.Name(), err)
	}
	return compare(got, ref), nil
}

func nans(n int) []float32 {
	v := make([]float32, n)
	nan := float32(math.NaN())
	for i := range v {
		v[i] = nan
	}
	return v
}

// randn draws n values ~ N(0, std²).
func (e *opEnv) randn(n int, std float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(e.rng.NormFloat64() * std)
	}
	return v
}

// scratch is a step of T tokens of one sequence, for ops that do not
// touch the KV cache (the backends still want a step around their
// tensors).
func (e *opEnv) scratch(T int) (*engine.StepLayout, error) {
	if e.scratchSeq < 0 {
		e.scratchSeq = e.kv.newSeq()
	}
	return e.kv.layout([]part{{seq: e.scratchSeq, pos: 0, n: T}}, e.cfg.Vocab, e.rng)
}

// opCheck is one named check: run returns the worst difference over its
// cases and, when there are several, which case it was.
type opCheck struct {
	name string
	tol  Tolerance
	run  func(e *opEnv) (Diff, string, error)
}

// worst folds the cases of one check and remembers the one furthest
// beyond (or closest to) its bound.
type worst struct {
	d     Diff
	tol   Tolerance
	name  string
	score float64
}

// score is how far d is from passing t: above 1 fails.
func score(d Diff, t Tolerance) float64 {
	if d.N == 0 || d.NaN > 0 || d.Inf > 0 || d.RefBad > 0 {
		return math.Inf(1)
	}
	ratio := func(err, bound float64) float64 {
		switch {
		case err == 0:
			return 0
		case bound == 0:
			return math.Inf(1)
		}
		return err / bound
	}
	return math.Max(ratio(d.RelL2, t.RelL2), ratio(d.MaxAbs, t.AbsOfMax*d.RefMax))
}

func (w *worst) add(name string, d Diff) {
	if s := score(d, w.tol); w.name == "" || s > w.score {
		w.name, w.score = name, s
	}
	w.d = w.d.merge(d)
}

func (w *worst) result() (Diff, string, error) {
	if w.name == "" || w.score == 0 {
		return w.d, "", nil
	}
	return w.d, "worst case: " + w.name, nil
}

// opChecks lists the op checks. Each draws fresh inputs from e.rng.
func opChecks(quick bool) []opCheck {
	Ts := []int{1, 7, 64, 300}
	if quick {
		Ts = []int{1, 64}
	}
	var cs []opCheck
	cs = append(cs,
		opCheck{"tensor write/read", tolExact, checkRoundTrip},
		opCheck{"embed", tolExact, checkEmbed},
		opCheck{"rmsnorm", tolFP32, checkRMSNorm},
		opCheck{"add+rmsnorm", tolFP32, checkAddRMSNorm},
	)
	for _, T := range Ts {
		cs = append(cs, opCheck{fmt.Sprintf("linear T=%d", T), tolBF16, func(e *opEnv) (Diff, string, error) {
			return checkLinear(e, T, false)
		}})
	}
	for _, T := range []int{7, 300} {
		cs = append(cs, opCheck{fmt.Sprintf("linear T=%d bf16-exact inputs", T), tolAcc, func(e *opEnv) (Diff, string, error) {
			return checkLinear(e, T, true)
		}})
	}
	cs = append(cs,
		opCheck{"rope (positions to 131071)", tolFP32, checkRope},
		opCheck{"attention (writekv; prefill, mix, long context)", tolBF16, checkAttention},
		opCheck{"moe T=1,4 (GEMV path)", tolBF16x2, func(e *opEnv) (Diff, string, error) {
			return checkMoE(e, []int{1, 4}, false)
		}},
	)
	big := []int{64, 300}
	if quick {
		big = []int{64}
	}
	cs = append(cs,
		opCheck{fmt.Sprintf("moe T=%s (grouped path)", joinInts(big)), tolBF16x2, func(e *opEnv) (Diff, string, error) {
			return checkMoE(e, big, false)
		}},
		opCheck{"moe T=64 skewed routing", tolBF16x2, func(e *opEnv) (Diff, string, error) {
			return checkMoE(e, []int{64}, true)
		}},
		opCheck{"gather rows", tolExact, checkGather},
		opCheck{"all-reduce, all-gather (one rank)", tolExact, checkCollectives},
	)
	return cs
}

// runOps runs the op checks between ref and dut (made over the same
// weights and geometry) and reports each.
func runOps(ctx context.Context, ref, dut engine.Backend, rng *rand.Rand, quick bool, report func(Check)) {
	e := &opEnv{ref: ref, dut: dut, cfg: ref.Weights().Config, rng: rng, quick: quick, scratchSeq: -1,
		kv: newKVState(ref.Geometry(), ref.Weights().Config.SlidingWindow, rng)}
	for _, oc := range opChecks(quick) {
		if ctx.Err() != nil {
			report(Check{Group: "op", Name: oc.name, Status: Skip, Detail: "out of time"})
			continue
		}
		c := Check{Group: "op", Name: oc.name}
		tol := oc.tol
		c.Tol = &tol
		start := now()
		d, detail, err := safeRun(func() (Diff, string, error) { return oc.run(e) })
		c.Seconds = since(start)
		c.Detail = detail
		if err != nil {
			c.Status, c.Detail = Error, err.Error()
		} else {
			c.Diff = &d
			if ok, why := d.within(tol); ok {
				c.Status = Pass
			} else {
				c.Status = Fail
				c.Detail = joinDetail(why, detail)
			}
		}
		report(c)
	}
}

func joinDetail(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}

// safeRun turns a panic in a backend into an error, so one broken op does
// not end the run.
func safeRun(f func() (Diff, string, error)) (d Diff, detail string, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return f()
}

func checkRoundTrip(e *opEnv) (Diff, string, error) {
	lay, err := e.scratch(3)
	if err != nil {
		return Diff{}, "", err
	}
	if err := e.begin(lay); err != nil {
		return Diff{}, "", err
	}
	defer e.end()
	data := e.randn(37*129, 1)
	p, err := e.in(37, 129, data)
	if err != nil {
		return Diff{}, "", err
	}
	got := make([]float32, len(data))
	if err := e.dut.Read(p.d, got); err != nil {
		return Diff{}, "", err
	}
	return compare(got, data), "", nil
}

func checkEmbed(e *opEnv) (Diff, string, error) {
	lay, err := e.scratch(64)
	if err != nil {
		return Diff{}, "", err
	}
	lay.IDs[0], lay.IDs[1] = 0, e.cfg.Vocab-1 // the table's ends
	if err := e.begin(lay); err != nil {
		return Diff{}, "", err
	}
	defer e.end()
	x, err := e.out(64, e.cfg.Hidden)
	if err != nil {
		return Diff{}, "", err
	}
	if err := e.both(func(b engine.Backend) error { return b.Embed(pick(b, e, x)) }); err != nil {
		return Diff{}, "", err
	}
	d, err := e.diff(x)
	return d, "", err
}

// pick is p's tensor on backend b.
func pick(b engine.Backend, e *opEnv, p tpair) engine.Tensor {
	if b == e.ref {
		return p.r
	}
	return p.d
}

// scaledRows draws T rows of width n whose magnitudes span 1e-3 to 1e2, so
// that the norms' epsilon and large values are both exercised.
func (e *opEnv) scaledRows(T, n int) []float32 {
	v := e.randn(T*n, 1)
	scales := []float64{1, 1e-3, 1e2, 0.3, 3}
	for t := range T {
		s := float32(scales[t%len(scales)])
		for i := range n {
			v[t*n+i] *= s
		}
	}
	return v
}

func checkRMSNorm(e *opEnv) (Diff, string, error) {
	w := worst{tol: tolFP32}
	H := e.cfg.Hidden
	for _, g := range []engine.Param{{Layer: 0, Name: engine.ParamAttnNorm}, {Layer: 1, Name: engine.ParamMLPNorm}, {Layer: -1, Name: engine.ParamNorm}} {
		T := 7
		lay, err := e.scratch(T)
		if err != nil {
			return Diff{}, "", err
		}
		d, err := func() (Diff, error) {
			if err := e.begin(lay); err != nil {
				return Diff{}, err
			}
			defer e.end()
			x, err := e.in(T, H, e.scaledRows(T, H))
			if err != nil {
				return Diff{}, err
			}
			out, err := e.out(T, H)
			if err != nil {
				return Diff{}, err
			}
			if err := e.both(func(b engine.Backend) error { return b.RMSNorm(pick(b, e, x), g, pick(b, e, out)) }); err != nil {
				return Diff{}, err
			}
			return e.diff(out)
		}()
		if err != nil {
			return Diff{}, "", fmt.Errorf("gain %v: %w", g, err)
		}
		w.add(fmt.Sprintf("gain layer %d", g.Layer), d)
	}
	return w.result()
}

func checkAddRMSNorm(e *opEnv) (Diff, string, error) {
	w := worst{tol: tolFP32}
	H := e.cfg.Hidden
	for _, bias := range []engine.Param{{Layer: 1, Name: engine.ParamO}, engine.NoBias()} {
		T := 9
		lay, err := e.scratch(T)
		if err != nil {
			return Diff{}, "", err
		}
		dx, dout, err := func() (Diff, Diff, error) {
			if err := e.begin(lay); err != nil {
				return Diff{}, Diff{}, err
			}
			defer e.end()
			x, err := e.in(T, H, e.scaledRows(T, H))
			if err != nil {
				return Diff{}, Diff{}, err
			}
			delta, err := e.in(T, H, e.randn(T*H, 1))
			if err != nil {
				return Diff{}, Diff{}, err
			}
			out, err := e.out(T, H)
			if err != nil {
				return Diff{}, Diff{}, err
			}
			gain := engine.Param{Layer: 1, Name: engine.ParamMLPNorm}
			if err := e.both(func(b engine.Backend) error {
				return b.AddRMSNorm(pick(b, e, x), pick(b, e, delta), bias, gain, pick(b, e, out))
			}); err != nil {
				return Diff{}, Diff{}, err
			}
			dx, err := e.diff(x)
			if err != nil {
				return Diff{}, Diff{}, err
			}
			dout, err := e.diff(out)
			return dx, dout, err
		}()
		if err != nil {
			return Diff{}, "", err
		}
		name := "no bias"
		if bias != engine.NoBias() {
			name = "o_proj bias"
		}
		w.add(name+": residual", dx)
		w.add(name+": normed", dout)
	}
	return w.result()
}

// denseParams are the dense weights: input width, and whether they have a
// bias.
func denseParams(c *model.Config) []struct {
	p    engine.Param
	name string
	cols int
	bias bool
} {
	q := c.Heads * c.HeadDim
	return []struct {
		p    engine.Param
		name string
		cols int
		bias bool
	}{
		{engine.Param{Layer: 0, Name: engine.ParamQ}, "q", c.Hidden, true},
		{engine.Param{Layer: 1, Name: engine.ParamK}, "k", c.Hidden, true},
		{engine.Param{Layer: 0, Name: engine.ParamV}, "v", c.Hidden, true},
		{engine.Param{Layer: 1, Name: engine.ParamO}, "o (no bias: the tensor-parallel form)", q, false},
		{engine.Param{Layer: 0, Name: engine.ParamO}, "o", q, true},
		{engine.Param{Layer: 1, Name: engine.ParamRouter}, "router", c.Hidden, true},
		{engine.Param{Layer: -1, Name: engine.ParamUnembed}, "unembed", c.Hidden, false},
	}
}

// outRows is the output width of a dense param.
func outRows(w *engine.Weights, p engine.Param) int {
	c := &w.Config
	switch p.Name {
	case engine.ParamQ:
		return w.Part.Heads * c.HeadDim
	case engine.ParamK, engine.ParamV:
		return w.Part.KVHeads * c.HeadDim
	case engine.ParamO:
		return c.Hidden
	case engine.ParamRouter:
		return c.Experts
	case engine.ParamUnembed:
		return w.Part.VocabHi - w.Part.VocabLo
	}
	return 0
}

func checkLinear(e *opEnv, T int, exact bool) (Diff, string, error) {
	tol := tolBF16
	if exact {
		tol = tolAcc
	}
	w := worst{tol: tol}
	for _, dp := range denseParams(&e.cfg) {
		lay, err := e.scratch(T)
		if err != nil {
			return Diff{}, "", err
		}
		d, err := func() (Diff, error) {
			if err := e.begin(lay); err != nil {
				return Diff{}, err
			}
			defer e.end()
			data := e.randn(T*dp.cols, 1)
			if exact {
				roundBF16(data)
			}
			x, err := e.in(T, dp.cols, data)
			if err != nil {
				return Diff{}, err
			}
			out, err := e.out(T, outRows(e.ref.Weights(), dp.p))
			if err != nil {
				return Diff{}, err
			}
			if err := e.both(func(b engine.Backend) error {
				return b.Linear(dp.p, pick(b, e, x), dp.bias, pick(b, e, out))
			}); err != nil {
				return Diff{}, err
			}
			return e.diff(out)
		}()
		if err != nil {
			return Diff{}, "", fmt.Errorf("%s: %w", dp.name, err)
		}
		w.add(dp.name, d)
	}
	return w.result()
}

// checkRope rotates q and k at positions from 0 to the end of the
// 131072-token context: YaRN's angles reach 1.3e5 radians there, where a
// fast-math sine or cosine loses every digit.
func checkRope(e *opEnv) (Diff, string, error) {
	c := &e.cfg
	positions := []int{0, 1, 2, 3, 15, 16, 127, 128, 1000, 4095, 4096, 4097, 8191, 32767, 65536, 100003, 131071}
	// Rope reads only the positions; the tables need only be valid block
	// ids (they alias), since nothing touches the cache.
	lay := &engine.StepLayout{}
	pool := e.ref.Geometry().Blocks
	for i, p := range positions {
		table := make([]int, p/e.kv.bs+1)
		for b := range table {
			table[b] = (b * 7) % pool
		}
		lay.IDs = append(lay.IDs, e.rng.IntN(c.Vocab))
		lay.Pos = append(lay.Pos, p)
		lay.Seq = append(lay.Seq, i)
		lay.Tables = append(lay.Tables, table)
		lay.Sliding = append(lay.Sliding, table)
		lay.MaxPos = max(lay.MaxPos, p)
	}
	T := len(positions)
	if err := e.begin(lay); err != nil {
		return Diff{}, "", err
	}
	defer e.end()
	p := e.ref.Weights().Part
	q, err := e.in(T, p.Heads*c.HeadDim, e.randn(T*p.Heads*c.HeadDim, 1))
	if err != nil {
		return Diff{}, "", err
	}
	k, err := e.in(T, p.KVHeads*c.HeadDim, e.randn(T*p.KVHeads*c.HeadDim, 1))
	if err != nil {
		return Diff{}, "", err
	}
	if err := e.both(func(b engine.Backend) error { return b.Rope(pick(b, e, q), pick(b, e, k)) }); err != nil {
		return Diff{}, "", err
	}
	w := worst{tol: tolFP32}
	for _, t := range []struct {
		name string
		p    tpair
	}{{"q", q}, {"k", k}} {
		d, err := e.diff(t.p)
		if err != nil {
			return Diff{}, "", err
		}
		w.add(t.name, d)
	}
	return w.result()
}

// checkAttention writes keys and values through WriteKV and compares the
// attention of both layers (0 slides, 1 is full) over three steps that
// share one cache:
//
//  1. prefill of four sequences from position 0: 1, 37, 200 (past the
//     128-token window) and 64 (a block multiple) tokens;
//  2. a mixed step: three decodes (one right after the window drops its
//     first blocks, which are released, −1, in its sliding table), a
//     7-token chunk continuing a prompt, a new 20-token prompt;
//  3. long context for the split-along-the-context path: histories of
//     3000 and 8000 tokens written by WriteKV-only steps, then one decode
//     at 3000 and a 16-token chunk at 8000, beside a short decode.
//
// Queries, keys and values are drawn bf16-exact, so the device's bf16 KV
// cache stores them without rounding and the comparison sees the
// attention arithmetic; the tolerance is tolBF16 for kernels that round
// the probabilities to bf16 before P·V.
func checkAttention(e *opEnv) (Diff, string, error) {
	c := &e.cfg
	w := worst{tol: tolBF16}
	seq := func() int { return e.kv.newSeq() }
	a, b, s200, s64, s20 := seq(), seq(), seq(), seq(), seq()
	long1, long2 := seq(), seq()
	longLen := []int{3000, 8000}
	if e.quick {
		longLen = []int{1500, 2500}
	}
	steps := []struct {
		name  string
		parts []part
		fill  bool // WriteKV only
	}{
		{"prefill", []part{{a, 0, 1}, {b, 0, 37}, {s200, 0, 200}, {s64, 0, 64}}, false},
		{"mix", []part{{a, 1, 1}, {b, 37, 7}, {s200, 200, 1}, {s64, 64, 1}, {s20, 0, 20}}, false},
	}
	for i, n := range longLen {
		s := []int{long1, long2}[i]
		for lo := 0; lo < n; lo += 1024 {
			steps = append(steps, struct {
				name  string
				parts []part
				fill  bool
			}{"fill", []part{{s, lo, min(1024, n-lo)}}, true})
		}
	}
	steps = append(steps, struct {
		name  string
		parts []part
		fill  bool
	}{fmt.Sprintf("long context (%d, %d)", longLen[0], longLen[1]),
		[]part{{long1, longLen[0], 1}, {long2, longLen[1], 16}, {a, 2, 1}}, false})

	p := e.ref.Weights().Part
	qd, kvd := p.Heads*c.HeadDim, p.KVHeads*c.HeadDim
	for _, st := range steps {
		lay, err := e.kv.layout(st.parts, c.Vocab, e.rng)
		if err != nil {
			return Diff{}, "", err
		}
		T := len(lay.IDs)
		err = func() error {
			if err := e.begin(lay); err != nil {
				return err
			}
			defer e.end()
			for l := range c.Layers {
				kd, vd := e.randn(T*kvd, 1.5), e.randn(T*kvd, 1)
				roundBF16(kd)
				roundBF16(vd)
				k, err := e.in(T, kvd, kd)
				if err != nil {
					return err
				}
				v, err := e.in(T, kvd, vd)
				if err != nil {
					return err
				}
				if err := e.both(func(b engine.Backend) error { return b.WriteKV(l, pick(b, e, k), pick(b, e, v)) }); err != nil {
					return fmt.Errorf("%s: layer %d: write kv: %w", st.name, l, err)
				}
				if st.fill {
					continue
				}
				qv := e.randn(T*qd, 1.5)
				roundBF16(qv)
				q, err := e.in(T, qd, qv)
				if err != nil {
					return err
				}
				out, err := e.out(T, qd)
				if err != nil {
					return err
				}
				if err := e.both(func(b engine.Backend) error { return b.Attention(l, pick(b, e, q), pick(b, e, out)) }); err != nil {
					return fmt.Errorf("%s: layer %d: attention: %w", st.name, l, err)
				}
				d, err := e.diff(out)
				if err != nil {
					return err
				}
				kind := "full"
				if c.Sliding(l) {
					kind = "sliding"
				}
				w.add(fmt.Sprintf("%s, %s layer", st.name, kind), d)
			}
			return nil
		}()
		if err != nil {
			return Diff{}, "", err
		}
	}
	return w.result()
}

// checkMoE compares the experts on random hidden states and router
// logits for each T, on both layers. skew adds a large logit to one
// expert so that every token picks it: one expert's group holds the
// whole step.
func checkMoE(e *opEnv, Ts []int, skew bool) (Diff, string, error) {
	c := &e.cfg
	w := worst{tol: tolBF16x2}
	for _, T := range Ts {
		for l := range c.Layers {
			lay, err := e.scratch(T)
			if err != nil {
				return Diff{}, "", err
			}
			d, err := func() (Diff, error) {
				if err := e.begin(lay); err != nil {
					return Diff{}, err
				}
				defer e.end()
				h, err := e.in(T, c.Hidden, e.randn(T*c.Hidden, 1))
				if err != nil {
					return Diff{}, err
				}
				lg := e.randn(T*c.Experts, 1)
				if skew {
					hot := e.rng.IntN(c.Experts)
					for t := range T {
						lg[t*c.Experts+hot] += 6
					}
				}
				logits, err := e.in(T, c.Experts, lg)
				if err != nil {
					return Diff{}, err
				}
				out, err := e.out(T, c.Hidden)
				if err != nil {
					return Diff{}, err
				}
				if err := e.both(func(b engine.Backend) error {
					return b.MoE(l, pick(b, e, h), pick(b, e, logits), pick(b, e, out))
				}); err != nil {
					return Diff{}, err
				}
				return e.diff(out)
			}()
			if err != nil {
				return Diff{}, "", fmt.Errorf("T=%d layer %d: %w", T, l, err)
			}
			w.add(fmt.Sprintf("T=%d layer %d", T, l), d)
		}
	}
	return w.result()
}

func checkGather(e *opEnv) (Diff, string, error) {
	lay, err := e.scratch(50)
	if err != nil {
		return Diff{}, "", err
	}
	if err := e.begin(lay); err != nil {
		return Diff{}, "", err
	}
	defer e.end()
	H := e.cfg.Hidden
	x, err := e.in(50, H, e.randn(50*H, 1))
	if err != nil {
		return Diff{}, "", err
	}
	rows := []int{49, 0, 7, 7, 3, 48, 25}
	out, err := e.out(len(rows), H)
	if err != nil {
		return Diff{}, "", err
	}
	if err := e.both(func(b engine.Backend) error { return b.GatherRows(pick(b, e, x), rows, pick(b, e, out)) }); err != nil {
		return Diff{}, "", err
	}
	d, err := e.diff(out)
	return d, "", err
}

// checkCollectives runs the collectives on a one-rank communicator: the
// all-reduce must leave the tensor as it was, the all-gather copy it.
func checkCollectives(e *opEnv) (Diff, string, error) {
	lay, err := e.scratch(7)
	if err != nil {
		return Diff{}, "", err
	}
	if err := e.begin(lay); err != nil {
		return Diff{}, "", err
	}
	defer e.end()
	H := e.cfg.Hidden
	w := worst{tol: tolExact}
	t, err := e.in(7, H, e.randn(7*H, 1))
	if err != nil {
		return Diff{}, "", err
	}
	if err := e.both(func(b engine.Backend) error { return b.AllReduce(pick(b, e, t)) }); err != nil {
		return Diff{}, "", err
	}
	d, err := e.diff(t)
	if err != nil {
		return Diff{}, "", err
	}
	w.add("all-reduce", d)
	local, err := e.in(7, H, e.randn(7*H, 1))
	if err != nil {
		return Diff{}, "", err
	}
	out, err := e.out(7, H)
	if err != nil {
		return Diff{}, "", err
	}
	if err := e.both(func(b engine.Backend) error { return b.AllGather(pick(b, e, local), pick(b, e, out)) }); err != nil {
		return Diff{}, "", err
	}
	if d, err = e.diff(out); err != nil {
		return Diff{}, "", err
	}
	w.add("all-gather", d)
	return w.result()
}

func joinInts(v []int) string {
	s := ""
	for i, x := range v {
		if i > 0 {
			s += ","
		}
		s += fmt.Sprint(x)
	}
	return s
}
