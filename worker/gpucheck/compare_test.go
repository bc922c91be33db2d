package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gptoss/server/worker/engine"

	"github.com/gptoss/server/shared/model"
)

func TestCompare(t *testing.T) {
	ref := []float32{1, -2, 3, -4}
	if d := compare(ref, ref); d.MaxAbs != 0 || d.RelL2 != 0 || d.NaN != 0 || d.N != 4 || d.RefMax != 4 {
		t.Errorf("equal: %+v", d)
	}
	got := []float32{1, -2, 3, -4.4}
	d := compare(got, ref)
	if math.Abs(d.MaxAbs-0.4) > 1e-6 || d.Worst != 3 {
		t.Errorf("max abs %g at %d", d.MaxAbs, d.Worst)
	}
	if want := 0.4 / math.Sqrt(30); math.Abs(d.RelL2-want) > 1e-7 {
		t.Errorf("rel L2 %g, want %g", d.RelL2, want)
	}
	if math.Abs(d.MaxRel-0.1) > 1e-6 {
		t.Errorf("max rel %g", d.MaxRel)
	}
	// Elementwise relative error near zero is floored at 1% of the RMS.
	d = compare([]float32{1e-3, 1}, []float32{0, 1})
	if want := 1e-3 / (0.01 * math.Sqrt(0.5)); math.Abs(d.MaxRel-want) > 1e-6*want {
		t.Errorf("max rel %g not floored", d.MaxRel)
	}
	// Poisoned (unwritten) outputs and infinities are counted, not measured.
	nan := float32(math.NaN())
	d = compare([]float32{nan, float32(math.Inf(1)), 3, -4}, ref)
	if d.NaN != 1 || d.Inf != 1 {
		t.Errorf("nan %d inf %d", d.NaN, d.Inf)
	}
	if ok, why := d.within(tolBF16); ok || !strings.Contains(why, "NaN") {
		t.Errorf("a NaN passed: %v %q", ok, why)
	}
	d = compare(ref, []float32{nan, 1, 1, 1})
	if ok, _ := d.within(tolBF16); ok || d.RefBad != 1 {
		t.Errorf("a broken reference passed: %+v", d)
	}
	if ok, _ := compare(nil, nil).within(tolExact); ok {
		t.Error("an empty comparison passed")
	}
	if ok, _ := compare(ref[:2], ref).within(tolBF16); ok {
		t.Error("a length mismatch passed")
	}
}

func TestWithin(t *testing.T) {
	cases := []struct {
		d    Diff
		tol  Tolerance
		pass bool
	}{
		{Diff{N: 1}, tolExact, true},
		{Diff{N: 1, MaxAbs: 1e-9, RelL2: 1e-10, RefMax: 1}, tolExact, false}, // exact means exact
		{Diff{N: 1, MaxAbs: 0.01, RelL2: 4e-3, RefMax: 1}, tolBF16, true},
		{Diff{N: 1, MaxAbs: 0.01, RelL2: 6e-3, RefMax: 1}, tolBF16, false}, // rel L2
		{Diff{N: 1, MaxAbs: 0.03, RelL2: 1e-3, RefMax: 1}, tolBF16, false}, // one bad element
		{Diff{N: 1, MaxAbs: 0.03, RelL2: 1e-3, RefMax: 10}, tolBF16, true}, // scaled by max|ref|
		{Diff{N: 1, MaxAbs: 1e-5, RelL2: 3e-5, RefMax: 1}, tolFP32, false}, // fp32 is tight
		{Diff{N: 1, MaxAbs: 5e-5, RelL2: 1e-5, RefMax: 1}, tolFP32, true},
	}
	for i, c := range cases {
		if ok, why := c.d.within(c.tol); ok != c.pass {
			t.Errorf("case %d: pass %v (%s), want %v", i, ok, why, c.pass)
		}
	}
	// The bf16 bound sits above one bf16 rounding of random inputs and
	// below a 1% error: measure both.
	n := 4096
	ref, rounded, scaled := make([]float32, n), make([]float32, n), make([]float32, n)
	r := newRand(1)
	for i := range ref {
		ref[i] = float32(r.NormFloat64())
		rounded[i] = fromBF16(engine.ToBF16(ref[i]))
		scaled[i] = ref[i] * 1.01
	}
	if ok, why := compare(rounded, ref).within(tolBF16); !ok {
		t.Errorf("one bf16 rounding fails the bf16 bound: %s", why)
	}
	if d := compare(rounded, ref); d.RelL2 < 5e-4 || d.RelL2 > 2e-3 {
		t.Errorf("one bf16 rounding: rel L2 %.3g, expected ≈ 1.1e-3", d.RelL2)
	}
	if ok, _ := compare(scaled, ref).within(tolBF16); ok {
		t.Error("a 1% error passes the bf16 bound")
	}
}

func TestMergeKeepsWorst(t *testing.T) {
	a := Diff{N: 10, MaxAbs: 0.1, RelL2: 1e-3, RefMax: 1, Worst: 3}
	b := Diff{N: 5, MaxAbs: 0.5, RelL2: 1e-4, RefMax: 2, NaN: 1, Worst: 2}
	m := a.merge(b)
	if m.N != 15 || m.MaxAbs != 0.5 || m.RelL2 != 1e-3 || m.RefMax != 2 || m.NaN != 1 || m.Worst != 2 {
		t.Errorf("%+v", m)
	}
	if (Diff{}).merge(b) != b {
		t.Error("merge into empty")
	}
}

func TestArgmaxMargin(t *testing.T) {
	nan := float32(math.NaN())
	if a := argmax([]float32{1, 3, 3, 2}); a != 1 {
		t.Errorf("tie: %d, want the lower id", a)
	}
	if a := argmax([]float32{nan, 1, 2}); a != 2 {
		t.Errorf("NaN: %d", a)
	}
	if m := margin([]float32{1, 3, 2.5}); m != 0.5 {
		t.Errorf("margin %g", m)
	}
}

func TestScore(t *testing.T) {
	if s := score(Diff{N: 1}, tolExact); s != 0 {
		t.Errorf("exact zero: %g", s)
	}
	if s := score(Diff{N: 1, MaxAbs: 1e-7, RefMax: 1, RelL2: 1e-8}, tolExact); !math.IsInf(s, 1) {
		t.Errorf("exact nonzero: %g", s)
	}
	if s := score(Diff{N: 1, MaxAbs: 0.01, RefMax: 1, RelL2: 2.5e-3}, tolBF16); math.Abs(s-0.5) > 1e-12 {
		t.Errorf("half the bound: %g", s)
	}
}

// TestRooflineReference checks the bytes-per-token arithmetic against
// shared/reference/performance.md §2.2: 3.74 GB (20b) and 5.05 GB (120b)
// per batch-1 decode token at 1k context, and the reference's counts of
// distinct experts at batch 8 and 64.
func TestRooflineReference(t *testing.T) {
	near := func(what string, got, want, rel float64) {
		t.Helper()
		if math.Abs(got-want) > rel*want {
			t.Errorf("%s: %.4g, want %.4g ± %.0f%%", what, got, want, rel*100)
		}
	}
	c20, c120 := model.Presets["20b"].Architecture(), model.Presets["120b"].Architecture()
	t20, t120 := decodeTraffic(c20, 1, 1024), decodeTraffic(c120, 1, 1024)
	near("20b batch 1 bytes", t20.Total, 3.74e9, 0.01)
	near("120b batch 1 bytes", t120.Total, 5.05e9, 0.01)
	// The pieces of the reference's table.
	near("20b experts", float64(c20.Layers)*t20.Experts*float64(t20.ExpertBytes), 1.271e9, 0.01)
	near("120b experts", float64(c120.Layers)*t120.Experts*float64(t120.ExpertBytes), 1.906e9, 0.01)
	near("unembedding", float64(t20.Unembed), 1.158e9, 0.001)
	near("20b KV at 1k", float64(t20.KVRead), 0.028e9, 0.05)
	near("120b KV at 1k", float64(t120.KVRead), 0.042e9, 0.05)
	near("one expert", float64(expertBytes(&c20)), 13.24e6, 0.01)
	if t20.ExpertsMax != 4 || t20.TotalMax != t20.Total {
		t.Errorf("batch 1: bound %d experts, total %g vs %g", t20.ExpertsMax, t20.TotalMax, t20.Total)
	}
	// Distinct experts under uniform routing (performance.md §0).
	near("20b batch 8 experts", decodeTraffic(c20, 8, 1024).Experts, 21, 0.03)
	near("120b batch 8 experts", decodeTraffic(c120, 8, 1024).Experts, 29, 0.03)
	near("20b batch 64 experts", decodeTraffic(c20, 64, 1024).Experts, 32, 0.01)
	near("120b batch 64 experts", decodeTraffic(c120, 64, 1024).Experts, 111, 0.01)
	if b := decodeTraffic(c120, 64, 1024); b.ExpertsMax != 128 || b.TotalMax <= b.Total {
		t.Errorf("120b batch 64: bound %d", b.ExpertsMax)
	}
	// The batch-1 ceilings: 897 tok/s (20b) and 664 (120b) at 3.35 TB/s.
	near("20b ceiling", 3.35e12/t20.Total, 897, 0.01)
	near("120b ceiling", 3.35e12/t120.Total, 664, 0.01)
	// Whole checkpoints: 12.8 GiB and 60.8 GiB (the device stores biases
	// and norms in fp32, a few MB more).
	near("20b weights", float64(weightBytes(c20))/(1<<30), 12.8, 0.02)
	near("120b weights", float64(weightBytes(c120))/(1<<30), 60.8, 0.02)
}

func TestPrefillFLOPs(t *testing.T) {
	c := model.Presets["20b"].Architecture()
	// 2 × active parameters per token (3.61B active with the unembedding,
	// which a prefill applies once) plus attention.
	perTok := prefillFLOPs(c, 2048) / 2048
	if perTok < 2*3.61e9*0.65 || perTok > 2*3.61e9*1.1 {
		t.Errorf("%.3g FLOP per prefill token", perTok)
	}
	if prefillFLOPs(c, 4096) <= 2*prefillFLOPs(c, 2048)-2*float64(c.Vocab*c.Hidden) {
		t.Error("attention does not grow with the prompt")
	}
}

func TestBenchKVFits(t *testing.T) {
	// The 120b benchmark must fit an H100 (about 79 GiB usable).
	c := model.Presets["120b"].Architecture()
	p := defaultPlan(false, 1)
	kv := benchKV(&c, p)
	total := weightBytes(c) + kvBytes(&c, kv) + headroom
	if gib := float64(total) / (1 << 30); gib > 76 {
		t.Errorf("120b needs %.1f GiB", gib)
	}
	// Room for the fill and the timed steps of the largest batch.
	perSeq := (p.context + p.warm + p.maxSteps + 1 + 15) / 16
	if kv.Blocks < 64*perSeq+p.prefill/16 {
		t.Errorf("%d full blocks", kv.Blocks)
	}
}

func TestReportWrite(t *testing.T) {
	dir := t.TempDir()
	r := &Report{Started: time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC), Commit: "abc", Seed: 7, Device: "cuda",
		Machine: Machine{GPU: "NVIDIA H100 80GB HBM3", Capability: "90", SMs: 132, MemTotal: 80 << 30, CPUs: 16}}
	d := Diff{N: 10, RelL2: 1e-3, MaxAbs: 2e-3, RefMax: 1}
	r.add(Check{Group: "op", Name: "linear T=7", Status: Pass, Diff: &d, Tol: &tolBF16})
	r.add(Check{Group: "e2e", Name: "golden", Status: Fail, Detail: "median row rel L2 0.2 > 0.02", Extra: map[string]float64{"flips": 3}})
	r.Bench = &Bench{CopyGBps: 3000, CopyRuns: []float64{2990, 3000, 3010},
		Models: []*ModelBench{{Model: "20b", Status: Pass, Layers: 24, WeightBytes: 13e9,
			Decode: []DecodeBench{{Batch: 1, Context: 1025, StepMs: 2, TokPerSec: 500, GBps: 1870, PctRoofline: 62.3,
				Traffic: decodeTraffic(model.Presets["20b"].Architecture(), 1, 1025)}},
			Prefill: &PrefillBench{Tokens: 2048, Ms: 200, TokPerSec: 10240, TFLOPs: 70}},
			{Model: "120b", Status: Skip, Detail: "needs 70 GiB"}}}
	r.finish()
	if r.Pass {
		t.Error("a failed check passed the report")
	}
	if err := r.write(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "gpu-check.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Checks) != 2 || back.Checks[0].Diff.RelL2 != 1e-3 || back.Bench.Models[0].Decode[0].PctRoofline != 62.3 ||
		back.Machine.GPU != r.Machine.GPU || back.Pass {
		t.Errorf("round trip: %s", b)
	}
	txt, err := os.ReadFile(filepath.Join(dir, "gpu-check.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"NVIDIA H100", "linear T=7", "PASS", "FAIL", "flips=3", "3000 GB/s", "62.3", "120b", "skip", "prefill 2048 tokens", "FAIL: 2 checks, 1 failed"} {
		if !bytes.Contains(txt, []byte(want)) {
			t.Errorf("table lacks %q:\n%s", want, txt)
		}
	}
	// No temporary files left behind.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("%d files in the output", len(entries))
	}
}

func TestExactProbs(t *testing.T) {
	logits := []float32{2, 1, 0, -1}
	p, _ := exactProbs(logits, SampleParams{Temperature: 1, TopP: 1})
	var s float64
	for _, x := range p {
		s += x
	}
	if math.Abs(s-1) > 1e-12 || p[0] <= p[1] {
		t.Errorf("softmax %v", p)
	}
	p, _ = exactProbs(logits, SampleParams{Temperature: 1, TopK: 2, TopP: 1})
	if p[2] != 0 || p[3] != 0 || math.Abs(p[0]+p[1]-1) > 1e-12 {
		t.Errorf("top-2 %v", p)
	}
	// Min-p 0.2: e^-1 = 0.37 stays, e^-2 = 0.14 goes.
	p, _ = exactProbs(logits, SampleParams{Temperature: 1, TopP: 1, MinP: 0.2})
	if p[1] == 0 || p[2] != 0 || math.Abs(p[0]+p[1]-1) > 1e-12 {
		t.Errorf("min-p %v", p)
	}
	// Penalties: token 0 (seen twice) falls to 2 - (0.5 + 0.5*2) = 0.5,
	// below token 1.
	p, _ = exactProbs(logits, SampleParams{Temperature: 1, TopP: 1, PresencePenalty: 0.5, FrequencyPenalty: 0.5, History: []int{0, 0}})
	if p[1] <= p[0] || p[0] <= p[2] {
		t.Errorf("penalties %v", p)
	}
	// Top-p 0.7: the first token holds 0.64, the first two 0.88.
	p, _ = exactProbs(logits, SampleParams{Temperature: 1, TopP: 0.7})
	if p[1] == 0 || p[2] != 0 {
		t.Errorf("top-p %v", p)
	}
	tv, bound, outside := tvTest([]int{0, 0, 1, 3}, p)
	if outside != 1 || tv <= 0 || bound <= 0 {
		t.Errorf("tv %g bound %g outside %d", tv, bound, outside)
	}
}
