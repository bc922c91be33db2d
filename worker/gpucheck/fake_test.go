package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeKernels builds worker/cuda's fake kernels library (the kernels ABI
// computed on the host in plain C: worker/cuda/testdata/fakekernels.c) so
// that the whole check runs here through the real cgo shim and
// worker/cuda's Backend and GraphModel: everything but the GPU.
func fakeKernels(t *testing.T) string {
	t.Helper()
	cc := os.Getenv("CC")
	if cc == "" {
		if out, err := exec.Command("go", "env", "CC").Output(); err == nil && len(bytes.Fields(out)) > 0 {
			cc = string(bytes.Fields(out)[0])
		} else {
			cc = "cc"
		}
	}
	if _, err := exec.LookPath(cc); err != nil {
		t.Skipf("no C compiler (%s) for the fake kernels library", cc)
	}
	lib := filepath.Join(t.TempDir(), "libgptoss_kernels.so")
	cmd := exec.Command(cc, "-shared", "-fPIC", "-O2", "-I", "../../kernels", "-o", lib, "../cuda/testdata/fakekernels.c", "-lm")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the fake kernels: %v\n%s", err, out)
	}
	// The fake's "device" memory is host memory, 1 GiB unless told.
	t.Setenv("FAKE_GX_MEM", "4294967296")
	return lib
}

// TestFakeKernels runs the checks through the CUDA binding against the
// fake library. Its ops compute in fp32 on the host with the real bf16 KV
// cache, so every op and model check passes; its sampler implements
// greedy decoding, the penalties, the raw logprobs and the temperature, but
// no truncation ("enough to exercise the plumbing", it says), so the
// distribution checks of top-k and top-p (one with min-p) must fail: they
// do, which shows they see a sampler that ignores its truncation. The
// other sampler checks (greedy, the logprobs of those same draws, the
// temperature's distribution) must pass.
func TestFakeKernels(t *testing.T) {
	lib := fakeKernels(t)
	dir := t.TempDir()
	var out, errb bytes.Buffer
	code := mainWith([]string{"--kernels", lib, "--out", dir, "--only", "checks", "--skip", "layer20b",
		"--golden", goldenRoot, "--quick"}, &out, &errb, nil)
	if code != 1 {
		t.Fatalf("exit %d, want 1 (the fake sampler's top-k and top-p)\n%s\n%s", code, out.String(), errb.String())
	}
	rep := readReport(t, dir)
	graphs, sampler, failed := 0, map[string]bool{}, 0
	for _, c := range rep.Checks {
		wantFail := c.Group == "sampler" && strings.Contains(c.Name, ": distribution") &&
			(strings.Contains(c.Name, "top-k") || strings.Contains(c.Name, "top-p"))
		switch {
		case wantFail && c.Status != Fail:
			t.Errorf("%s: %s, want fail (the fake ignores top-k and top-p)", c.Name, c.Status)
		case !wantFail && c.Status != Pass && c.Status != Skip:
			t.Errorf("%s: %s %s", c.Name, c.Status, c.Detail)
		}
		if c.Group == "sampler" {
			sampler[c.Name] = c.Status != Skip
		}
		if wantFail {
			failed++
		}
		if strings.HasSuffix(c.Name, "graphs") && c.Extra["graph_replayed"] > 0 {
			graphs++
		}
	}
	if graphs == 0 {
		t.Error("no golden variant replayed a CUDA graph")
	}
	// Every named sampler check ran through the binding.
	for _, name := range samplerCheckNames(true) {
		if !sampler[name] {
			t.Errorf("sampler check %q did not run", name)
		}
	}
	if failed != 3 {
		t.Errorf("%d distribution checks of top-k and top-p, want 3", failed)
	}
	if rep.Device != "cuda" || !strings.Contains(rep.Machine.GPU, "Fake") {
		t.Errorf("device %q, GPU %q", rep.Device, rep.Machine.GPU)
	}
}

// TestFakeKernelsBench runs the benchmark path (copy bandwidth, KV fill,
// graph decode at two batch sizes, prefill) through the CUDA binding on
// the tiny preset.
func TestFakeKernelsBench(t *testing.T) {
	lib := fakeKernels(t)
	dev, err := openCUDA(&Options{Kernels: lib})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	b := &Bench{}
	p := defaultPlan(true, 1)
	p.copyBytes, p.copyIters = 1<<20, 2
	if err := copyBench(dev, p, b); err != nil || b.CopyGBps <= 0 {
		t.Fatalf("copy: %+v", b)
	}
	p.batches, p.context, p.maxSteps, p.minSteps, p.prefill, p.prefReps = []int{1, 4}, 300, 4, 2, 64, 1
	mb := benchModel(context.Background(), dev, "tiny", p, b.CopyGBps, &bytes.Buffer{})
	if mb.Status != Pass {
		t.Fatalf("%s: %s", mb.Status, mb.Detail)
	}
	if !mb.Graphs || mb.GraphStats == nil || mb.GraphStats.Replayed == 0 {
		t.Errorf("decode did not replay graphs: %+v", mb.GraphStats)
	}
	if len(mb.Decode) != 2 || mb.Decode[1].PctRoofline <= 0 || mb.Prefill == nil {
		t.Errorf("results: %+v", mb)
	}
}

// TestFakeKernelsInjectedFailure: an op that fails on the device (the
// fake's injected gx_moe failure) is an error of the MoE checks and of the
// model checks, not a crash or a hang, and the run still ends with a
// report.
func TestFakeKernelsInjectedFailure(t *testing.T) {
	lib := fakeKernels(t)
	t.Setenv("FAKE_GX_FAIL", "gx_moe")
	dir := t.TempDir()
	var out, errb bytes.Buffer
	code := mainWith([]string{"--kernels", lib, "--out", dir, "--only", "checks", "--skip", "layer20b,sampler",
		"--golden", goldenRoot, "--quick"}, &out, &errb, nil)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, errb.String())
	}
	rep := readReport(t, dir)
	for _, c := range rep.Checks {
		moe := strings.HasPrefix(c.Name, "moe") || c.Group == "e2e"
		if moe && c.Status != Error {
			t.Errorf("%s: %s, want error", c.Name, c.Status)
		}
		if !moe && c.Status != Pass && c.Status != Skip {
			t.Errorf("%s: %s %s", c.Name, c.Status, c.Detail)
		}
	}
}
