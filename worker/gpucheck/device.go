package main

import (
	"errors"
	"fmt"

	"github.com/gptoss/server/worker/engine"
	"github.com/gptoss/server/worker/sample"
)

// Device is what the check needs from the backend under test: the CUDA
// backend in production (cuda.go binds worker/cuda to it), the CPU
// reference itself in this package's tests, so that the whole harness runs
// here and a perturbed CPU backend shows that every check can fail.
type Device interface {
	// Name is "cuda" or "cpu".
	Name() string
	// Info describes the device (the GPU's name, capability, memory).
	Info() DeviceInfo
	// Backend puts w on the device as spec says, with a one-rank
	// communicator. A device without CUDA graphs returns ErrUnsupported
	// for spec.Graphs.
	Backend(w *engine.Weights, spec Spec) (engine.Backend, error)
	// Model wraps b (made by Backend) in the step runner: on a backend
	// made with Graphs, decode steps capture and replay CUDA graphs.
	Model(b engine.Backend) (Stepper, error)
	// CopyBandwidth times device-to-device copies of bytes, iters times,
	// and returns GB/s counting the bytes read plus the bytes written (the
	// bandwidth a streaming kernel can reach: performance.md's roofline).
	CopyBandwidth(bytes int64, iters int) (float64, error)
	// MemInfo is the device memory free and in total.
	MemInfo() (free, total int64, err error)
	// Sample draws one token per row of logits on the device with b's
	// sampler (ErrUnsupported when there is none), with its logprobs.
	Sample(b engine.Backend, logits [][]float32, p []SampleParams) ([]Sampled, error)
	// Close releases the device.
	Close() error
}

// DeviceInfo describes a device.
type DeviceInfo struct {
	Name         string
	Major, Minor int
	SMs          int
	MemTotal     int64
}

// Spec says how to make a backend: its paged KV cache's geometry, the
// step limits its buffers are sized for (0: the backend's defaults; small
// limits keep the 120b benchmark inside an H100's memory) and whether
// decode runs through CUDA graphs.
type Spec struct {
	BlockSize     int `json:"block_size"`
	Blocks        int `json:"blocks"`         // full-attention pool
	SlidingBlocks int `json:"sliding_blocks"` // sliding-window pool (0: as Blocks)

	MaxTokens  int `json:"max_tokens,omitempty"`  // tokens of one step
	MaxSeqs    int `json:"max_seqs,omitempty"`    // sequences of one step
	MaxContext int `json:"max_context,omitempty"` // positions of one sequence

	Graphs bool `json:"graphs"`
}

// GraphStats says how a graph-capable Stepper ran its steps.
type GraphStats struct {
	Eager, Captured, Replayed, Fallbacks, Failed int
	// Errors are the failed captures' reasons.
	Errors string
}

// graphReporter is a Stepper that reports its graph use.
type graphReporter interface {
	GraphStats() GraphStats
}

// Stepper runs forward steps: engine.Model on any backend, or the CUDA
// package's graph-capturing decode wrapper.
type Stepper interface {
	Step(seqs []engine.Seq) ([][][]float32, error)
}

// SampleParams are one row's sampling parameters, with worker/sample's
// meaning.
type SampleParams struct {
	Temperature float64 // 0: greedy
	TopP        float64 // in (0, 1]; 1 (or 0, taken as 1): off
	TopK        int     // 0: off
	MinP        float64 // 0: off
	// PresencePenalty and FrequencyPenalty apply to the tokens of History,
	// the tokens generated so far (the CPU sampler Accepts them in order;
	// the device gets their counts).
	PresencePenalty, FrequencyPenalty float64
	History                           []int
	// TopLogprobs is how many of the most likely tokens to report, at most
	// sample.MaxTopLogprobs.
	TopLogprobs int
	// Uniform is the row's uniform draw in [0, 1) (the device sampler
	// takes its randomness from the caller, so that a sequence's stream of
	// draws is the same on every backend).
	Uniform float64
	// Allow, when not nil, is the set of tokens the row may draw
	// (step.Seq.Allow: a bitset, ⌈V/32⌉ words): worker/sample's
	// SampleAllowed, whose logprobs and top list are the constrained
	// distribution's (the top list of allowed tokens only).
	Allow []uint32
}

// Sampled is one row's draw: the token, its logprob and the TopLogprobs
// most likely tokens, logprobs of the raw logits (log_softmax before
// penalties and temperature, worker/sample's definition).
type Sampled struct {
	Token   int
	Logprob float32
	Top     []sample.TokenLogprob
}

// ErrUnsupported is returned by a Device for an optional feature it lacks.
var ErrUnsupported = errors.New("gpucheck: not supported by this device")

// closeBackend releases a backend's device memory when it has a Close.
func closeBackend(b engine.Backend) error {
	switch c := b.(type) {
	case interface{ Close() error }:
		if err := c.Close(); err != nil {
			return fmt.Errorf("close %s backend: %w", b.Name(), err)
		}
	case interface{ Close() }:
		c.Close()
	}
	return nil
}

// cpuDevice is the CPU reference as a Device. It is the reference side of
// every comparison, and the device under test in self-tests.
type cpuDevice struct{}

func (cpuDevice) Name() string     { return "cpu" }
func (cpuDevice) Info() DeviceInfo { return DeviceInfo{Name: "cpu"} }

func (cpuDevice) Backend(w *engine.Weights, kv Spec) (engine.Backend, error) {
	if kv.Graphs {
		return nil, ErrUnsupported
	}
	cfg := w.CacheConfig()
	cache, err := engine.NewKVCache(&cfg, kv.Blocks, kv.SlidingBlocks, kv.BlockSize)
	if err != nil {
		return nil, fmt.Errorf("cpu backend: %w", err)
	}
	return engine.NewCPU(w, cache, nil), nil
}

func (cpuDevice) Model(b engine.Backend) (Stepper, error) {
	m, err := engine.NewModelOn(b)
	if err != nil {
		return nil, fmt.Errorf("cpu model: %w", err)
	}
	return m, nil
}

func (cpuDevice) CopyBandwidth(int64, int) (float64, error) { return 0, ErrUnsupported }
func (cpuDevice) MemInfo() (int64, int64, error)            { return 0, 0, ErrUnsupported }
func (cpuDevice) Close() error                              { return nil }

// Sample on the CPU is worker/sample driven by the given uniforms (see
// sampler.go): it lets the sampler check run against itself in tests.
func (cpuDevice) Sample(_ engine.Backend, logits [][]float32, p []SampleParams) ([]Sampled, error) {
	return refSample(logits, p)
}
