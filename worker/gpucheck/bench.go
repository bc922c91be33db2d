package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/gptoss/server/shared/model"
	"github.com/gptoss/server/worker/engine"
)

// Bench is the benchmark part of the report.
type Bench struct {
	// CopyGBps is the device-to-device copy bandwidth measured in this
	// run, counting bytes read plus bytes written: the roofline's
	// denominator (the datasheet's 3.35 TB/s for an H100 is not reached
	// by any kernel; the copy is what a streaming kernel can reach).
	CopyGBps  float64   `json:"copy_gbps"`
	CopyRuns  []float64 `json:"copy_gbps_runs"`
	CopyBytes int64     `json:"copy_bytes"`
	CopyIters int       `json:"copy_iters"`
	CopyError string    `json:"copy_error,omitempty"`

	Models []*ModelBench `json:"models"`
}

// ModelBench is one model's benchmark.
type ModelBench struct {
	Model  string `json:"model"`
	Status string `json:"status"` // pass (ran), skip, error, timeout
	Detail string `json:"detail,omitempty"`

	Layers      int     `json:"layers"`
	WeightBytes int64   `json:"weight_bytes"` // on the device
	KV          Spec    `json:"kv"`
	GenSeconds  float64 `json:"weights_gen_seconds"` // host-side dummy weights
	LoadSeconds float64 `json:"load_seconds"`        // upload to the device
	FillSeconds float64 `json:"kv_fill_seconds"`
	Graphs      bool    `json:"cuda_graphs"`
	// GraphStats says how the decode steps ran (replayed graphs, or
	// eagerly where a capture failed).
	GraphStats *GraphStats `json:"graph_stats,omitempty"`

	Decode  []DecodeBench `json:"decode"`
	Prefill *PrefillBench `json:"prefill,omitempty"`
}

// DecodeBench is steady-state decode at one batch size.
type DecodeBench struct {
	Batch   int `json:"batch"`
	Context int `json:"context"` // positions attended at the first timed step
	Steps   int `json:"steps"`   // timed steps (after the warm-up)
	// Step times in milliseconds: median, fastest, slowest. A step is
	// engine.Model.Step as the worker calls it: the host's preparation,
	// the device's forward pass and the logits copied back to the host.
	StepMs    float64 `json:"step_ms"`
	StepMsMin float64 `json:"step_ms_min"`
	StepMsMax float64 `json:"step_ms_max"`
	TokPerSec float64 `json:"tokens_per_s"` // Batch / median step

	Traffic Traffic `json:"traffic"`
	// GBps is Traffic.Total over the median step; PctRoofline its share of
	// CopyGBps (with the bound on distinct experts: PctRooflineMax).
	GBps           float64 `json:"achieved_gbps"`
	PctRoofline    float64 `json:"pct_of_copy_roofline"`
	PctRooflineMax float64 `json:"pct_of_copy_roofline_expert_bound"`
	// CeilingTokPerSec is what the copy bandwidth allows: Batch ×
	// CopyGBps / Traffic.Total.
	CeilingTokPerSec float64 `json:"roofline_tokens_per_s"`
}

// PrefillBench is one long prompt's forward step.
type PrefillBench struct {
	Tokens    int     `json:"tokens"`
	Reps      int     `json:"reps"`
	Ms        float64 `json:"ms"` // median
	MsMin     float64 `json:"ms_min"`
	TokPerSec float64 `json:"tokens_per_s"`
	// TFLOPs is prefillFLOPs over the median time: the arithmetic rate
	// the step achieved (compare with a bf16 matrix product on the same
	// card, about 800 TFLOP/s on an H100 here; not measured by this run).
	TFLOPs float64 `json:"tflops"`
}

// benchPlan is what the benchmark runs.
type benchPlan struct {
	batches   []int
	context   int
	warm      int
	maxSteps  int
	stepTime  time.Duration // stop timing a batch after this much, with at least minSteps
	minSteps  int
	prefill   int
	prefReps  int
	models    []string
	copyBytes int64
	copyIters int
	seed      uint64
}

func defaultPlan(quick bool, seed uint64) benchPlan {
	p := benchPlan{batches: []int{1, 8, 64}, context: 1024, warm: 3, maxSteps: 48, stepTime: 1500 * time.Millisecond,
		minSteps: 8, prefill: 2048, prefReps: 3, models: []string{"20b", "120b"}, copyBytes: 1 << 30, copyIters: 20, seed: seed}
	if quick {
		p.maxSteps, p.stepTime, p.prefReps, p.models = 16, 500*time.Millisecond, 2, []string{"20b"}
	}
	return p
}

// benchKV sizes the cache and the step limits for the plan (steps of at
// most 4096 tokens, 64 sequences: the device's activation buffers and
// workspaces stay a few hundred megabytes beside 120b's 61 GiB): every batch sequence's context
// plus the timed steps in the full pool, and in the sliding pool only what
// each sequence still needs (the fill's 256-position chunk and the window
// before it, then the timed steps); both hold the prefill's sequence.
func benchKV(c *model.Config, p benchPlan) Spec {
	bs := 16
	seqs := slices.Max(p.batches)
	perSeq := (p.context+p.warm+p.maxSteps+1+bs-1)/bs + 1
	pre := (p.prefill + bs - 1) / bs
	slidePerSeq := (256+c.SlidingWindow+p.warm+p.maxSteps+1+bs-1)/bs + 2 // the fill's chunk, the window, the steps
	return Spec{BlockSize: bs, Blocks: seqs*perSeq + pre + 8, SlidingBlocks: seqs*slidePerSeq + pre + 8,
		MaxTokens: max(4096, p.prefill), MaxSeqs: seqs, MaxContext: max(p.prefill, p.context+p.warm+p.maxSteps+1) + bs}
}

// kvBytes is the device memory of a cache of geometry kv (bf16 K and V).
func kvBytes(c *model.Config, kv Spec) int64 {
	row := int64(kv.BlockSize) * int64(c.KVHeads*c.HeadDim) * 2 * 2
	var n int64
	for l := range c.Layers {
		if c.Sliding(l) {
			n += int64(kv.SlidingBlocks + 1)
		} else {
			n += int64(kv.Blocks + 1)
		}
	}
	return n * row
}

// headroom is device memory left for activations, workspaces, cuBLAS
// and CUDA graphs beside the weights and the cache.
const headroom = 3 << 30

// copyBench measures the copy bandwidth into b: the median of five runs.
func copyBench(dev Device, p benchPlan, b *Bench) error {
	b.CopyBytes, b.CopyIters = p.copyBytes, p.copyIters
	for range 5 {
		g, err := dev.CopyBandwidth(p.copyBytes, p.copyIters)
		if err != nil {
			b.CopyError = err.Error()
			return err
		}
		b.CopyRuns = append(b.CopyRuns, g)
	}
	s := slices.Clone(b.CopyRuns)
	slices.Sort(s)
	b.CopyGBps = s[len(s)/2]
	return nil
}

// benchModel runs one model's decode and prefill benchmarks.
func benchModel(ctx context.Context, dev Device, name string, p benchPlan, copyGBps float64, log io.Writer) *ModelBench {
	mb := &ModelBench{Model: name}
	preset, ok := model.Presets[name]
	if !ok {
		mb.Status, mb.Detail = Error, "no preset "+name
		return mb
	}
	cfg := preset.Architecture()
	mb.Layers = cfg.Layers
	mb.WeightBytes = weightBytes(cfg)
	mb.KV = benchKV(&cfg, p)
	need := mb.WeightBytes + kvBytes(&cfg, mb.KV) + headroom
	if free, _, err := dev.MemInfo(); err == nil && free < need {
		mb.Status = Skip
		mb.Detail = fmt.Sprintf("needs %.1f GiB of device memory (weights %.1f, KV %.1f, headroom %.1f), %.1f GiB free",
			gibf(need), gibf(mb.WeightBytes), gibf(kvBytes(&cfg, mb.KV)), gibf(headroom), gibf(free))
		return mb
	}
	start := now()
	w, err := fastDummy(cfg, p.seed, 1)
	if err != nil {
		mb.Status, mb.Detail = Error, err.Error()
		return mb
	}
	mb.GenSeconds = since(start)
	fmt.Fprintf(log, "bench %s: dummy weights in %.1f s; loading %.1f GiB\n", name, mb.GenSeconds, gibf(mb.WeightBytes))
	start = now()
	spec := mb.KV
	spec.Graphs = true
	b, err := dev.Backend(w, spec)
	if errors.Is(err, ErrUnsupported) {
		spec.Graphs = false
		b, err = dev.Backend(w, spec)
	}
	if err != nil {
		mb.Status, mb.Detail = Error, fmt.Sprintf("load: %v", err)
		return mb
	}
	mb.KV, mb.Graphs = spec, spec.Graphs
	defer func() {
		closeBackend(b)
		runtime.GC()
		debug.FreeOSMemory()
	}()
	mb.LoadSeconds = since(start)
	m, err := dev.Model(b)
	if err != nil {
		mb.Status, mb.Detail = Error, err.Error()
		return mb
	}
	if c, ok := m.(interface{ Close() }); ok {
		defer c.Close()
	}
	rng := rand.New(rand.NewPCG(p.seed, 7))
	kv := newKVState(b.Geometry(), cfg.SlidingWindow, rng)
	start = now()
	seqs, err := fillKV(b, kv, &cfg, p, rng)
	if err != nil {
		mb.Status, mb.Detail = Error, fmt.Sprintf("kv fill: %v", err)
		return mb
	}
	mb.FillSeconds = since(start)
	fmt.Fprintf(log, "bench %s: loaded in %.1f s, KV filled in %.1f s\n", name, mb.LoadSeconds, mb.FillSeconds)
	for _, B := range p.batches {
		if ctx.Err() != nil {
			mb.Status, mb.Detail = Timeout, "out of time before batch "+fmt.Sprint(B)
			return mb
		}
		d, err := benchDecode(m, kv, seqs[:B], &cfg, p, rng)
		if err != nil {
			mb.Status, mb.Detail = Error, fmt.Sprintf("decode batch %d: %v", B, err)
			return mb
		}
		d.Traffic = decodeTraffic(cfg, B, d.Context)
		d.GBps = d.Traffic.Total / (d.StepMs * 1e-3) / 1e9
		if copyGBps > 0 {
			d.PctRoofline = 100 * d.GBps / copyGBps
			d.PctRooflineMax = 100 * d.Traffic.TotalMax / (d.StepMs * 1e-3) / 1e9 / copyGBps
			d.CeilingTokPerSec = float64(B) * copyGBps * 1e9 / d.Traffic.Total
		}
		fmt.Fprintf(log, "bench %s: batch %d: %.3f ms/step, %.0f tok/s, %.0f GB/s (%.0f%% of copy)\n",
			name, B, d.StepMs, d.TokPerSec, d.GBps, d.PctRoofline)
		mb.Decode = append(mb.Decode, d)
	}
	if g, ok := m.(graphReporter); ok {
		st := g.GraphStats()
		mb.GraphStats = &st
	}
	if ctx.Err() != nil {
		mb.Status, mb.Detail = Timeout, "out of time before the prefill"
		return mb
	}
	pf, err := benchPrefill(m, kv, &cfg, p, rng)
	if err != nil {
		mb.Status, mb.Detail = Error, fmt.Sprintf("prefill: %v", err)
		return mb
	}
	mb.Prefill = pf
	fmt.Fprintf(log, "bench %s: prefill %d tokens: %.1f ms, %.0f tok/s\n", name, pf.Tokens, pf.Ms, pf.TokPerSec)
	mb.Status = Pass
	return mb
}

func gibf(b int64) float64 { return float64(b) / (1 << 30) }

// fillKV gives each of the batch sequences a context of p.context
// positions by writing random (bf16-exact) keys and values straight into
// the cache through WriteKV, without running the model: decode reads the
// same bytes whatever they hold, and the fill costs a fraction of a second
// where a prefill of 64 × 1024 tokens would take seconds of the budget.
// Positions go in chunks of 256, sixteen sequences a step, so that each
// sliding table is trimmed to its window as it goes (released blocks, −1,
// before it, as the scheduler leaves them) and the sliding pool stays
// small.
func fillKV(b engine.Backend, kv *kvState, c *model.Config, p benchPlan, rng *rand.Rand) ([]int, error) {
	n := slices.Max(p.batches)
	seqs := make([]int, n)
	for i := range seqs {
		seqs[i] = kv.newSeq()
	}
	const chunkLen, perStep = 256, 16
	for from := 0; from < p.context; from += chunkLen {
		for lo := 0; lo < n; lo += perStep {
			var parts []part
			for _, s := range seqs[lo:min(n, lo+perStep)] {
				parts = append(parts, part{seq: s, pos: from, n: min(chunkLen, p.context-from)})
			}
			lay, err := kv.layout(parts, c.Vocab, rng)
			if err != nil {
				return nil, err
			}
			if err := fillStep(b, lay, c, rng); err != nil {
				return nil, err
			}
		}
	}
	// Room for the timed steps.
	for _, s := range seqs {
		if err := kv.grow(s, p.context+p.warm+p.maxSteps+1); err != nil {
			return nil, err
		}
	}
	return seqs, nil
}

func fillStep(b engine.Backend, lay *engine.StepLayout, c *model.Config, rng *rand.Rand) error {
	if err := b.Begin(lay); err != nil {
		return err
	}
	defer b.EndStep()
	T, kvd := len(lay.IDs), c.KVHeads*c.HeadDim
	data := make([]float32, T*kvd)
	for i := range data {
		data[i] = fromBF16(engine.ToBF16(float32(rng.NormFloat64())))
	}
	k, err := b.Tensor(T, kvd)
	if err != nil {
		return err
	}
	v, err := b.Tensor(T, kvd)
	if err != nil {
		return err
	}
	if err := b.Write(k, data); err != nil {
		return err
	}
	slices.Reverse(data)
	if err := b.Write(v, data); err != nil {
		return err
	}
	for l := range c.Layers {
		if err := b.WriteKV(l, k, v); err != nil {
			return fmt.Errorf("layer %d: %w", l, err)
		}
	}
	// Reading a tensor waits for the step's work, so an execution error
	// of the writes surfaces here.
	return b.Read(k, data)
}

// benchDecode times decode steps of the given sequences, each from
// position p.context on, one random token each.
func benchDecode(m Stepper, kv *kvState, ids []int, c *model.Config, p benchPlan, rng *rand.Rand) (DecodeBench, error) {
	B := len(ids)
	d := DecodeBench{Batch: B, Context: p.context + 1}
	seqs := make([]engine.Seq, B)
	for i, s := range ids {
		seqs[i] = engine.Seq{Blocks: kv.tables[s], SlidingBlocks: kv.sliding[s]}
	}
	var times []float64
	var timed time.Duration
	for step := range p.warm + p.maxSteps {
		for i := range seqs {
			seqs[i].Tokens = []int{rng.IntN(c.Vocab)}
			seqs[i].Pos = p.context + step
		}
		t0 := time.Now()
		out, err := m.Step(seqs)
		dt := time.Since(t0)
		if err != nil {
			return d, fmt.Errorf("step %d: %w", step, err)
		}
		if len(out) != B {
			return d, fmt.Errorf("step %d: %d logits rows for %d sequences", step, len(out), B)
		}
		if step < p.warm {
			continue
		}
		times = append(times, dt.Seconds()*1e3)
		timed += dt
		if timed > p.stepTime && len(times) >= p.minSteps {
			break
		}
	}
	slices.Sort(times)
	d.Steps = len(times)
	d.StepMs, d.StepMsMin, d.StepMsMax = times[len(times)/2], times[0], times[len(times)-1]
	d.TokPerSec = float64(B) / (d.StepMs * 1e-3)
	return d, nil
}

// benchPrefill times a p.prefill-token prompt of one sequence from
// position 0 (the last position's logits only).
func benchPrefill(m Stepper, kv *kvState, c *model.Config, p benchPlan, rng *rand.Rand) (*PrefillBench, error) {
	s := kv.newSeq()
	if err := kv.grow(s, p.prefill); err != nil {
		return nil, err
	}
	tokens := make([]int, p.prefill)
	for i := range tokens {
		tokens[i] = rng.IntN(c.Vocab)
	}
	seqs := []engine.Seq{{Tokens: tokens, Blocks: kv.tables[s], SlidingBlocks: kv.sliding[s]}}
	var times []float64
	for rep := range 1 + p.prefReps {
		t0 := time.Now()
		if _, err := m.Step(seqs); err != nil {
			return nil, err
		}
		if rep > 0 {
			times = append(times, time.Since(t0).Seconds()*1e3)
		}
	}
	slices.Sort(times)
	pf := &PrefillBench{Tokens: p.prefill, Reps: len(times), Ms: times[len(times)/2], MsMin: times[0]}
	pf.TokPerSec = float64(p.prefill) / (pf.Ms * 1e-3)
	pf.TFLOPs = prefillFLOPs(*c, p.prefill) / (pf.Ms * 1e-3) / 1e12
	return pf, nil
}

// table writes the benchmark summary.
func (b *Bench) table(w io.Writer) {
	if b.CopyError != "" {
		fmt.Fprintf(w, "device-to-device copy: error: %s\n", b.CopyError)
	} else {
		fmt.Fprintf(w, "device-to-device copy: %.0f GB/s (read + write; median of %v)\n", b.CopyGBps, roundAll(b.CopyRuns))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "model\tbatch\tctx\tms/step\ttok/s\tGB/step\texperts/layer\tGB/s\t% copy roofline\t(expert bound)\troofline tok/s\t")
	for _, m := range b.Models {
		if m.Status != Pass && len(m.Decode) == 0 {
			fmt.Fprintf(tw, "%s\t%s: %s\t\t\t\t\t\t\t\t\t\t\n", m.Model, m.Status, m.Detail)
			continue
		}
		for _, d := range m.Decode {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%.3f\t%.0f\t%.3f\t%.1f\t%.0f\t%.1f\t%.1f\t%.0f\t\n", m.Model, d.Batch, d.Context, d.StepMs, d.TokPerSec,
				d.Traffic.Total/1e9, d.Traffic.Experts, d.GBps, d.PctRoofline, d.PctRooflineMax, d.CeilingTokPerSec)
		}
	}
	tw.Flush()
	for _, m := range b.Models {
		if g := m.GraphStats; g != nil {
			fmt.Fprintf(w, "%s decode steps: %d replayed graphs, %d captured, %d eager, %d fallbacks, %d failed captures %s\n",
				m.Model, g.Replayed, g.Captured, g.Eager, g.Fallbacks, g.Failed, g.Errors)
		}
		if pf := m.Prefill; pf != nil {
			fmt.Fprintf(w, "%s prefill %d tokens: %.1f ms, %.0f tok/s, %.1f TFLOP/s\n", m.Model, pf.Tokens, pf.Ms, pf.TokPerSec, pf.TFLOPs)
		}
		if m.Status == Pass || len(m.Decode) > 0 {
			fmt.Fprintf(w, "%s: %d layers, %.1f GiB weights, dummy weights %.1f s, load %.1f s, KV fill %.1f s, CUDA graphs %v",
				m.Model, m.Layers, gibf(m.WeightBytes), m.GenSeconds, m.LoadSeconds, m.FillSeconds, m.Graphs)
			if m.Status != Pass {
				fmt.Fprintf(w, " (%s: %s)", m.Status, m.Detail)
			}
			fmt.Fprintln(w)
		}
	}
}

func roundAll(v []float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(int64(x + 0.5))
	}
	return out
}
