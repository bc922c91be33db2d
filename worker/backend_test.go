package main

import (
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gptoss/server/shared/wire"
)

func TestParseConfigBackend(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	c, err := parseConfig(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Backend != "cpu" || c.Kernels != "" || c.GPUMemoryUtilization != 0.9 || c.NCCL || c.LoadFormat != "auto" {
		t.Fatalf("defaults %+v", c)
	}
	c, err = parseConfig([]string{"--kernels", "/opt/k.so", "--nccl"}, env(map[string]string{
		"GPTOSS_WORKER_BACKEND": "cuda", "GPTOSS_WORKER_GPU_MEMORY_UTILIZATION": "0.5",
		"GPTOSS_WORKER_LOAD_FORMAT": "dummy", "GPTOSS_WORKER_KERNELS": "/env/k.so",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Backend != "cuda" || c.Kernels != "/opt/k.so" || c.GPUMemoryUtilization != 0.5 || !c.NCCL || c.LoadFormat != "dummy" {
		t.Fatalf("env and flags %+v", c)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--backend", "rocm"}, "want cpu or cuda"},
		{[]string{"--gpu-memory-utilization", "0"}, "--gpu-memory-utilization"},
		{[]string{"--gpu-memory-utilization", "1.2"}, "--gpu-memory-utilization"},
		{[]string{"--load-format", "pt"}, "want auto or dummy"},
		{[]string{"--nccl"}, "--nccl needs --backend cuda"},
	} {
		if _, err := parseConfig(tc.args, env(nil), io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.want)
		}
	}
}

// A worker on the CUDA backend without the kernels library starts, and
// fails its Load with the fix in the error; it lives on.
func TestCUDALoadWithoutLibrary(t *testing.T) {
	t.Parallel()
	const id = "w-cuda"
	missing := filepath.Join(t.TempDir(), "build", "libgptoss_kernels.so")
	c := newCoord(t, "cuda-missing", true)
	startWorker(t, "cuda-missing", "--worker-id", id, "--backend", "cuda", "--kernels", missing)
	c.waitRegister(t)
	lr := c.load(t, 0, &wire.Load{ModelDir: ckptDir})
	wantError(t, "load without the kernels", lr.Error, "libgptoss_kernels.so not found")
	wantError(t, "load without the kernels", lr.Error, missing)
	wantError(t, "load without the kernels", lr.Error, "run make kernels (scripts/install-cuda.sh installs nvcc)")
	c.waitHeartbeat(t, id, "the load error", func(h *wire.Heartbeat, _ int) bool {
		return h.State == "starting" && strings.Contains(h.Error, "libgptoss_kernels.so not found")
	})
	r := c.step(t, &wire.Step{StepId: 1, Seqs: []*wire.SeqStep{{Id: 1, Tokens: []int32{1}, Sample: true}}})
	wantError(t, "step after the failed load", r.Error, "no model loaded")
}

// --load-format dummy: a preset's shapes with random weights, served on
// the CPU backend; a path that is not a checkpoint and an unknown preset
// are errors.
func TestDummyLoadServes(t *testing.T) {
	t.Parallel()
	const id = "w-dummy"
	c := newCoord(t, "dummy", true)
	startWorker(t, "dummy", "--worker-id", id, "--load-format", "dummy")
	c.waitRegister(t)
	lr := c.load(t, 0, &wire.Load{ModelDir: filepath.Join(t.TempDir(), "missing")})
	wantError(t, "dummy from a missing directory", lr.Error, "not a checkpoint directory")
	lr = c.load(t, 0, &wire.Load{ModelDir: "7b"})
	wantError(t, "dummy of an unknown preset", lr.Error, "unknown model")

	lr = c.load(t, 0, &wire.Load{ModelDir: "tiny", KvBlocks: 8, SlidingBlocks: 8, BlockSize: 16})
	if lr.Error != "" || lr.Model != "gpt-oss-tiny" || lr.Vocab != 201088 || lr.KvTokens != 8*16 {
		t.Fatalf("dummy load: %v", lr)
	}
	c.waitState(t, id, "ready")
	toks := c.mustStep(t, &wire.Step{StepId: 1, Seqs: []*wire.SeqStep{
		{Id: 1, Tokens: []int32{200006, 17, 3000}, Sample: true, Sampling: &wire.Sampling{TopP: 1, Logprobs: true, TopLogprobs: 2}}}})
	tk := toks[1]
	if tk == nil || tk.Token < 0 || tk.Token >= 201088 || math.IsNaN(float64(tk.Logprob)) || tk.Logprob > 0 ||
		len(tk.TopIds) != 2 || tk.TopIds[0] != tk.Token {
		t.Fatalf("dummy step: %v", toks)
	}
	// A checkpoint directory gives its own shapes (dummy values).
	lr = c.load(t, 0, &wire.Load{ModelDir: ckptDir, KvBlocks: 8, SlidingBlocks: 8, BlockSize: 8})
	if lr.Error != "" || lr.Model != "tiny-512" || lr.Vocab != 512 {
		t.Fatalf("dummy load of a checkpoint's shapes: %v", lr)
	}
	c.mustStep(t, &wire.Step{StepId: 2, Seqs: []*wire.SeqStep{{Id: 2, Tokens: []int32{1, 2}, Sample: true}}})
}

// buildFakeKernels compiles worker/cuda's host implementation of the
// kernels ABI (its tests' fake) into dir.
func buildFakeKernels(t *testing.T) string {
	t.Helper()
	cc := os.Getenv("CC")
	if cc == "" {
		if out, err := exec.Command("go", "env", "CC").Output(); err == nil && len(strings.Fields(string(out))) > 0 {
			cc = strings.Fields(string(out))[0]
		} else {
			cc = "cc"
		}
	}
	if _, err := exec.LookPath(cc); err != nil {
		t.Skipf("no C compiler for the fake kernels: %v", err)
	}
	out := filepath.Join(t.TempDir(), "libgptoss_kernels.so")
	cmd := exec.Command(cc, "-shared", "-fPIC", "-O1", "-I", "../kernels", "-o", out, "cuda/testdata/fakekernels.c", "-lm")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the fake kernels: %v\n%s", err, b)
	}
	return out
}

// The whole --backend cuda load path on the fake kernels library (the ABI
// on the host): the library, a one-rank NCCL communicator (--nccl) through
// the id exchange, the weights on the "device", steps whose greedy tokens
// are the CPU engine's.
func TestCUDAWorkerOnFakeKernels(t *testing.T) {
	t.Parallel()
	const id = "w-cuda-fake"
	lib := buildFakeKernels(t)
	c := newCoord(t, "cuda-fake", true)
	startWorker(t, "cuda-fake", "--worker-id", id, "--backend", "cuda", "--kernels", lib, "--nccl")
	c.waitRegister(t)
	lr := c.load(t, 0, &wire.Load{ModelDir: ckptDir, KvBlocks: 32, SlidingBlocks: 16, BlockSize: 8, Epoch: 5})
	if lr.Error != "" || lr.Model != "tiny-512" || lr.Vocab != 512 || lr.KvTokens != 32*8 {
		t.Fatalf("load: %v", lr)
	}
	prompt := []int{1, 17, 300, 42, 5, 99, 511, 0, 250, 7}
	const n = 8
	want := greedy(t, prompt, n)
	var got []int
	toks := c.mustStep(t, &wire.Step{StepId: 1, Seqs: []*wire.SeqStep{
		{Id: 1, Tokens: wire.Int32s(prompt), Sample: true, Sampling: &wire.Sampling{TopP: 1}}}})
	got = append(got, int(toks[1].Token))
	for i := 1; i < n; i++ {
		toks = c.mustStep(t, &wire.Step{StepId: uint64(1 + i), Seqs: []*wire.SeqStep{
			{Id: 1, Tokens: []int32{int32(got[i-1])}, Pos: int32(len(prompt) + i - 1), Sample: true}}})
		got = append(got, int(toks[1].Token))
	}
	// The fake's KV cache is bf16 (the CPU's float32): on this model the
	// greedy tokens still agree.
	for i := range want[:n] {
		if got[i] != want[i] {
			t.Fatalf("token %d: cuda (fake) %v, cpu %v", i, got, want[:n])
		}
	}
	// A second load replaces the first (the backend is closed).
	lr = c.load(t, 0, &wire.Load{ModelDir: ckptDir, KvBlocks: 16, SlidingBlocks: 16, BlockSize: 8, Epoch: 6})
	if lr.Error != "" || lr.KvTokens != 16*8 {
		t.Fatalf("second load: %v", lr)
	}
}

// A library but no device: the load fails before reading any weights.
func TestCUDALoadWithoutDevice(t *testing.T) {
	lib := buildFakeKernels(t)
	t.Setenv("FAKE_GX_DEVICES", "0") // inherited by the worker process
	c := newCoord(t, "cuda-nodev", true)
	startWorker(t, "cuda-nodev", "--backend", "cuda", "--kernels", lib)
	c.waitRegister(t)
	lr := c.load(t, 0, &wire.Load{ModelDir: ckptDir})
	wantError(t, "load without a device", lr.Error, "no CUDA device is visible")
}
