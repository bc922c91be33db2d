package main

import (
	"errors"
	"fmt"
	"math"

	"github.com/gptoss/server/worker/cuda"
	"github.com/gptoss/server/worker/engine"
	"github.com/gptoss/server/worker/sample"
)

// cudaDevice is worker/cuda as the device under test.
type cudaDevice struct {
	lib   *cuda.Lib
	index int
	// probe is a small backend kept for the device's description, its
	// free memory and the copy benchmark (which worker/cuda offers on a
	// backend's context).
	probe *cuda.Backend
	info  DeviceInfo
}

// openCUDA opens the kernels library (o.Kernels, else worker/cuda's
// search) and device o.Device. A missing library is an error naming what
// to build or set: the check then ends at once with status 2.
func openCUDA(o *Options) (Device, error) {
	lib, err := cuda.Open(o.Kernels)
	if err != nil {
		return nil, err
	}
	n, err := lib.DeviceCount()
	if err != nil {
		return nil, fmt.Errorf("cuda: counting devices: %w", err)
	}
	if n == 0 || o.Device >= n {
		return nil, fmt.Errorf("cuda: device %d asked for, %d visible", o.Device, n)
	}
	w, err := fastDummy(opConfig(), 1, 1)
	if err != nil {
		return nil, err
	}
	probe, err := cuda.New(w, cuda.Options{Device: o.Device, Lib: lib, Blocks: 4, SlidingBlocks: 4,
		MaxTokens: 64, MaxSeqs: 4, MaxContext: 64})
	if err != nil {
		return nil, fmt.Errorf("cuda: a first backend on device %d: %w", o.Device, err)
	}
	di, err := probe.DeviceInfo()
	if err != nil {
		probe.Close()
		return nil, fmt.Errorf("cuda: device info: %w", err)
	}
	return &cudaDevice{lib: lib, index: o.Device, probe: probe,
		info: DeviceInfo{Name: di.Name, Major: di.Major, Minor: di.Minor, SMs: di.SMs, MemTotal: di.TotalBytes}}, nil
}

func (d *cudaDevice) Name() string     { return "cuda" }
func (d *cudaDevice) Info() DeviceInfo { return d.info }

// Backend makes a backend. spec.NCCL aside, a whole model needs no
// communicator; the op checks' backend joins a one-rank NCCL communicator
// so that the collectives run through NCCL (see opBackend).
func (d *cudaDevice) Backend(w *engine.Weights, spec Spec) (engine.Backend, error) {
	return d.backend(w, spec, nil)
}

func (d *cudaDevice) backend(w *engine.Weights, spec Spec, nccl *cuda.NCCL) (*cuda.Backend, error) {
	return cuda.New(w, cuda.Options{Device: d.index, Lib: d.lib, BlockSize: spec.BlockSize, Blocks: spec.Blocks,
		SlidingBlocks: spec.SlidingBlocks, MaxTokens: spec.MaxTokens, MaxSeqs: spec.MaxSeqs, MaxContext: spec.MaxContext,
		Graphs: spec.Graphs, NCCL: nccl})
}

// opBackend is the op checks' backend: with a one-rank NCCL communicator
// when NCCL can be joined (the all-reduce and all-gather then go through
// NCCL), else without, and the reason.
func (d *cudaDevice) opBackend(w *engine.Weights, spec Spec) (engine.Backend, error, error) {
	id, err := d.lib.NCCLUniqueID()
	if err == nil {
		var b *cuda.Backend
		if b, err = d.backend(w, spec, &cuda.NCCL{ID: id, Ranks: 1, Rank: 0}); err == nil {
			return b, nil, nil
		}
	}
	b, err2 := d.backend(w, spec, nil)
	if err2 != nil {
		return nil, nil, err2
	}
	return b, fmt.Errorf("one-rank NCCL communicator: %w", err), nil
}

// cudaStepper is cuda.GraphModel as a Stepper that reports its graphs.
type cudaStepper struct{ g *cuda.GraphModel }

func (s cudaStepper) Step(seqs []engine.Seq) ([][][]float32, error) { return s.g.Step(seqs) }
func (s cudaStepper) Close()                                        { s.g.Close() }

func (s cudaStepper) GraphStats() GraphStats {
	st := s.g.Stats()
	out := GraphStats{Eager: st.Eager, Captured: st.Captured, Replayed: st.Replayed, Fallbacks: st.Fallbacks, Failed: st.Failed}
	for k, err := range s.g.CaptureErrors() {
		out.Errors = joinDetail(out.Errors, k+": "+err.Error())
	}
	return out
}

// Model is worker/cuda's GraphModel: graphs for decode steps when b was
// made with Spec.Graphs, the engine's eager forward pass otherwise.
func (d *cudaDevice) Model(b engine.Backend) (Stepper, error) {
	cb, ok := b.(*cuda.Backend)
	if !ok {
		return nil, fmt.Errorf("cuda: a %T is not a CUDA backend", b)
	}
	g, err := cuda.NewModel(cb)
	if err != nil {
		return nil, err
	}
	return cudaStepper{g}, nil
}

func (d *cudaDevice) CopyBandwidth(bytes int64, iters int) (float64, error) {
	return d.probe.CopyBandwidth(bytes, iters)
}

func (d *cudaDevice) MemInfo() (int64, int64, error) {
	di, err := d.probe.DeviceInfo()
	return di.FreeBytes, di.TotalBytes, err
}

// Sample copies the logits into a tensor of b and draws on the device.
// The tensor needs a step around it (the arena rewinds at EndStep): a
// one-token step through block 0.
func (d *cudaDevice) Sample(b engine.Backend, logits [][]float32, p []SampleParams) ([]Sampled, error) {
	cb, ok := b.(*cuda.Backend)
	if !ok {
		return nil, fmt.Errorf("cuda: a %T is not a CUDA backend", b)
	}
	if len(logits) == 0 {
		return nil, errors.New("cuda: sample: no rows")
	}
	S, V := len(logits), len(logits[0])
	lay := &engine.StepLayout{IDs: []int{0}, Pos: []int{0}, Seq: []int{0}, Tables: [][]int{{0}}, Sliding: [][]int{{0}}}
	if err := cb.Begin(lay); err != nil {
		return nil, fmt.Errorf("cuda: sample: %w", err)
	}
	defer cb.EndStep()
	t, err := cb.Tensor(S, V)
	if err != nil {
		return nil, err
	}
	flat := make([]float32, 0, S*V)
	for _, row := range logits {
		flat = append(flat, row...)
	}
	if err := cb.Write(t, flat); err != nil {
		return nil, err
	}
	rows := make([]cuda.SampleRow, S)
	nTop := 0
	for i, q := range p {
		u := float32(q.Uniform)
		if u >= 1 { // a draw just under 1 rounds up in float32
			u = math.Nextafter32(1, 0)
		}
		rows[i] = cuda.SampleRow{Temperature: float32(q.Temperature), TopP: float32(q.TopP), TopK: q.TopK,
			MinP: float32(q.MinP), PresencePenalty: float32(q.PresencePenalty),
			FrequencyPenalty: float32(q.FrequencyPenalty), Uniform: u, Counts: historyCounts(q.History), Allow: q.Allow}
		if rows[i].TopP == 0 {
			rows[i].TopP = 1
		}
		nTop = max(nTop, q.TopLogprobs)
	}
	res, err := cb.Sample(t, rows, nTop)
	if err != nil {
		return nil, err
	}
	out := make([]Sampled, S)
	for i, r := range res {
		out[i] = Sampled{Token: r.Token, Logprob: r.Logprob}
		for _, tl := range r.Top[:min(len(r.Top), p[i].TopLogprobs)] { // fewer for a row with few allowed tokens
			out[i].Top = append(out[i].Top, sample.TokenLogprob{ID: tl.ID, Logprob: tl.Logprob})
		}
	}
	return out, nil
}

// historyCounts is the distinct tokens of h in first-seen order with their
// counts (what worker/sample's Accept keeps).
func historyCounts(h []int) []cuda.TokenCount {
	var out []cuda.TokenCount
	at := map[int]int{}
	for _, tok := range h {
		if j, ok := at[tok]; ok {
			out[j].Count++
			continue
		}
		at[tok] = len(out)
		out = append(out, cuda.TokenCount{ID: tok, Count: 1})
	}
	return out
}

func (d *cudaDevice) Close() error {
	d.probe.Close()
	return nil
}
