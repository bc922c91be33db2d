package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gptoss/server/worker/engine"
)

// goldenRoot is the golden checkpoints seen from this package's directory.
const goldenRoot = "../engine/testdata/golden"

// testDevice is the CPU reference as the device under test, with its
// backends wrapped (to perturb an op) and its sampler replaceable.
type testDevice struct {
	cpuDevice
	wrap   func(engine.Backend) engine.Backend
	sample func(logits [][]float32, p []SampleParams) ([]Sampled, error)
}

func (d testDevice) Backend(w *engine.Weights, kv Spec) (engine.Backend, error) {
	b, err := d.cpuDevice.Backend(w, kv)
	if err != nil || d.wrap == nil {
		return b, err
	}
	return d.wrap(b), nil
}

func (d testDevice) Sample(b engine.Backend, logits [][]float32, p []SampleParams) ([]Sampled, error) {
	if d.sample != nil {
		return d.sample(logits, p)
	}
	return d.cpuDevice.Sample(b, logits, p)
}

// perturbed is a backend one of whose ops is wrong: after the real op,
// mutate edits its output (read back, changed, written). It is how the
// tests show that each check can fail.
type perturbed struct {
	engine.Backend
	op     string
	mutate func(v []float32)
}

func (p *perturbed) after(op string, out engine.Tensor, err error) error {
	if err != nil || op != p.op {
		return err
	}
	v := make([]float32, out.Rows()*out.Cols())
	if err := p.Backend.Read(out, v); err != nil {
		return err
	}
	p.mutate(v)
	return p.Backend.Write(out, v)
}

func (p *perturbed) Linear(w engine.Param, in engine.Tensor, bias bool, out engine.Tensor) error {
	return p.after("linear", out, p.Backend.Linear(w, in, bias, out))
}

func (p *perturbed) Attention(l int, q, out engine.Tensor) error {
	return p.after("attention", out, p.Backend.Attention(l, q, out))
}

func (p *perturbed) MoE(l int, h, lg, out engine.Tensor) error {
	return p.after("moe", out, p.Backend.MoE(l, h, lg, out))
}

func (p *perturbed) RMSNorm(x engine.Tensor, g engine.Param, out engine.Tensor) error {
	return p.after("rmsnorm", out, p.Backend.RMSNorm(x, g, out))
}

func (p *perturbed) Rope(q, k engine.Tensor) error {
	return p.after("rope", k, p.Backend.Rope(q, k))
}

// GatherRows with op "gather-skip" writes nothing: the poison must show.
func (p *perturbed) GatherRows(x engine.Tensor, rows []int, out engine.Tensor) error {
	if p.op == "gather-skip" {
		return nil
	}
	return p.Backend.GatherRows(x, rows, out)
}

func wrapWith(op string, mutate func([]float32)) func(engine.Backend) engine.Backend {
	return func(b engine.Backend) engine.Backend { return &perturbed{Backend: b, op: op, mutate: mutate} }
}

// runQuick runs the checks (quick) with dev as the device under test.
func runQuick(t *testing.T, dev Device, only string) *Report {
	t.Helper()
	return runWith(t, dev, only, true)
}

// runFull runs every check (not quick) with dev as the device under test.
func runFull(t *testing.T, dev Device) *Report {
	t.Helper()
	return runWith(t, dev, "checks", false)
}

func runWith(t *testing.T, dev Device, only string, quick bool) *Report {
	t.Helper()
	var log bytes.Buffer
	rep, err := Run(context.Background(), Options{Out: t.TempDir(), Only: only, Quick: quick, Seed: uint64(time.Now().UnixNano()),
		Golden: goldenRoot, Open: func(*Options) (Device, error) { return dev, nil }, Log: &log,
		Deadline: 10 * time.Minute})
	if err != nil {
		t.Fatalf("run: %v\n%s", err, log.String())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", log.String())
		}
	})
	return rep
}

func statusOf(rep *Report, group, prefix string) []Check {
	var out []Check
	for _, c := range rep.Checks {
		if c.Group == group && strings.HasPrefix(c.Name, prefix) {
			out = append(out, c)
		}
	}
	return out
}

// TestCPUAgainstCPU: the whole harness with the reference as the device
// under test passes every check that runs: op checks, sampler, goldens
// end to end, the full-size layer.
func TestCPUAgainstCPU(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("builds a full-size 20b layer")
	}
	rep := runQuick(t, testDevice{}, "checks")
	var buf bytes.Buffer
	rep.table(&buf)
	if !rep.Pass || rep.Failed() != 0 {
		t.Fatalf("CPU against itself failed:\n%s", buf.String())
	}
	t.Logf("report:\n%s", buf.String())
	groups := map[string]int{}
	for _, c := range rep.Checks {
		groups[c.Group]++
		if c.Status == Pass && c.Diff != nil && c.Diff.N == 0 {
			t.Errorf("%s: passed without comparing anything", c.Name)
		}
	}
	for _, g := range []string{"op", "sampler", "e2e", "layer20b"} {
		if groups[g] == 0 {
			t.Errorf("no %s checks ran: %v", g, groups)
		}
	}
	// Every named sampler check ran, once, and passed.
	for _, name := range samplerCheckNames(true) {
		if cs := statusOf(rep, "sampler", name); len(cs) != 1 || cs[0].Name != name || cs[0].Status != Pass {
			t.Errorf("sampler check %q: %+v", name, cs)
		}
	}
	// Graph variants are skipped on the CPU, not failed.
	for _, c := range statusOf(rep, "e2e", "") {
		if strings.Contains(c.Name, "graphs") && c.Status != Skip {
			t.Errorf("%s: %s, want skip on a device without graphs", c.Name, c.Status)
		}
	}
}

// TestOpChecksCatchPerturbations: each kind of error in one op makes its
// check fail, and only its check. A 1% error is twice the bf16 bound on
// rel L2 (2% for attention: its bound is the same, it is perturbed more
// to stay clear of it; 1e-4 for the fp32 norm, five times its bound); a
// single wrong element fails on the max abs error; an unwritten output
// fails on the NaN poison.
func TestOpChecksCatchPerturbations(t *testing.T) {
	one := func(v []float32) { v[len(v)/2] += 1 }
	scale := func(f float32) func([]float32) {
		return func(v []float32) {
			for i := range v {
				v[i] *= f
			}
		}
	}
	cases := []struct {
		op     string
		mutate func([]float32)
		failed string // prefix of the op check that must fail
	}{
		{"linear", scale(1.01), "linear"},
		{"linear", one, "linear"},
		{"attention", scale(1.02), "attention"},
		{"moe", one, "moe"},
		{"rmsnorm", scale(1 + 1e-4), "rmsnorm"},
		{"rope", one, "rope"},
		{"gather-skip", nil, "gather rows"},
	}
	cfg := opConfig()
	w, err := fastDummy(cfg, 3, cfg.Layers)
	if err == nil {
		w, err = cpuReady(w)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.op+"/"+tc.failed, func(t *testing.T) {
			ref, _ := (cpuDevice{}).Backend(w, opKV)
			inner, _ := (cpuDevice{}).Backend(w, opKV)
			dut := wrapWith(tc.op, tc.mutate)(inner)
			var got []Check
			runOps(context.Background(), ref, dut, newRand(9), true, func(c Check) { got = append(got, c) })
			for _, c := range got {
				wantFail := strings.HasPrefix(c.Name, tc.failed)
				if tc.op == "linear" && strings.HasPrefix(c.Name, "linear") {
					wantFail = true
				}
				if wantFail && c.Status != Fail {
					t.Errorf("%s: %s (%s), want fail", c.Name, c.Status, c.Detail)
				}
				if !wantFail && c.Status != Pass {
					t.Errorf("%s: %s (%s), want pass", c.Name, c.Status, c.Detail)
				}
			}
		})
	}
}

// TestGoldenCatchesPerturbation: a 3% error in the unembedding's output
// (or in every linear) fails the end-to-end checks.
func TestGoldenCatchesPerturbation(t *testing.T) {
	dev := testDevice{wrap: wrapWith("linear", func(v []float32) {
		for i := range v {
			v[i] *= 1.05
		}
	})}
	var got []Check
	runGolden(context.Background(), dev, goldenRoot, 4, true, newRand(1), func(c Check) { got = append(got, c) })
	ran := 0
	for _, c := range got {
		if c.Status == Skip {
			continue
		}
		ran++
		if c.Status != Fail {
			t.Errorf("%s: %s (%s), want fail", c.Name, c.Status, c.Detail)
		}
	}
	if ran == 0 {
		t.Fatal("no golden check ran")
	}
}

// sampled is refSample with each row's result edited by f (nil: as is)
// after drawing with the parameters q makes of the row's (nil: as given)
// and the logits l makes of the row's (nil: as given).
func sampled(l func([]float32, SampleParams) []float32, q func(SampleParams) SampleParams,
	f func(row []float32, p SampleParams, r *Sampled)) func([][]float32, []SampleParams) ([]Sampled, error) {
	return func(logits [][]float32, p []SampleParams) ([]Sampled, error) {
		ls := make([][]float32, len(logits))
		qs := make([]SampleParams, len(p))
		for i := range p {
			ls[i], qs[i] = logits[i], p[i]
			if l != nil {
				ls[i] = l(logits[i], p[i])
			}
			if q != nil {
				qs[i] = q(p[i])
			}
		}
		res, err := refSample(ls, qs)
		if err != nil || f == nil {
			return res, err
		}
		for i := range res {
			f(logits[i], p[i], &res[i])
		}
		return res, nil
	}
}

// samplerPerturbations are wrong samplers, each with the sampler checks
// (name prefixes) it must fail; every other sampler check must pass. Each
// check fails under one of them at least, and the sets show that each
// fails on its own.
type samplerPerturbation struct {
	name   string
	sample func([][]float32, []SampleParams) ([]Sampled, error)
	fail   []string
}

var samplerPerturbations = []samplerPerturbation{
	{"greedy: ties to the higher id", sampled(nil, nil, func(row []float32, p SampleParams, r *Sampled) {
		if p.Temperature != 0 || penalisedRow(p) || p.Allow != nil {
			return
		}
		best := -1
		for i, v := range row {
			if best < 0 || v >= row[best] {
				best = i
			}
		}
		r.Token, r.Logprob = best, float32(rawLogprobs(row)[best])
	}), []string{"greedy argmax"}},
	{"greedy: the next token, with the logprob of the argmax", sampled(nil, nil, func(row []float32, p SampleParams, r *Sampled) {
		if p.Temperature == 0 && !penalisedRow(p) && p.Allow == nil {
			r.Token = (r.Token + 1) % len(row)
		}
	}), []string{"greedy argmax", "greedy logprobs"}},
	{"penalties ignored", sampled(nil, func(p SampleParams) SampleParams {
		p.PresencePenalty, p.FrequencyPenalty, p.History = 0, 0, nil
		return p
	}, nil), []string{"greedy with penalties", "temperature 0.7, min-p 0.2, top-p 0.95, penalties: distribution",
		"allowed tokens: greedy"}},
	{"logprobs of the penalised logits", sampled(func(l []float32, p SampleParams) []float32 { return penalised(l, p) },
		func(p SampleParams) SampleParams {
			p.PresencePenalty, p.FrequencyPenalty, p.History = 0, 0, nil
			return p
		}, nil), []string{"greedy logprobs", "temperature 0.7, min-p 0.2, top-p 0.95, penalties: logprobs",
		"allowed tokens: logprobs"}},
	{"logprobs 0.01 too small", sampled(nil, nil, func(_ []float32, _ SampleParams, r *Sampled) {
		r.Logprob -= 0.01
		r.Top = slices.Clone(r.Top)
		for k := range r.Top {
			r.Top[k].Logprob -= 0.01
		}
	}), []string{"greedy logprobs", "temperature 0.8: logprobs", "temperature 1, top-k 5: logprobs",
		"temperature 1, top-p 0.9: logprobs", "temperature 0.7, min-p 0.2, top-p 0.95, penalties: logprobs",
		"allowed tokens: logprobs", "temperature 1.2, half the tokens allowed: logprobs"}},
	{"temperature 1.3 instead of 0.8", sampled(nil, func(p SampleParams) SampleParams {
		if p.Temperature == 0.8 {
			p.Temperature = 1.3
		}
		return p
	}, nil), []string{"temperature 0.8: distribution"}},
	{"top-k keeps a token too many", sampled(nil, func(p SampleParams) SampleParams {
		if p.TopK > 0 && p.Temperature > 0 {
			p.TopK++
		}
		return p
	}, nil), []string{"temperature 1, top-k 5: distribution"}},
	{"top-p ignored", sampled(nil, func(p SampleParams) SampleParams {
		if p.Temperature > 0 && p.MinP == 0 {
			p.TopP = 1
		}
		return p
	}, nil), []string{"temperature 1, top-p 0.9: distribution"}},
	{"min-p ignored", sampled(nil, func(p SampleParams) SampleParams {
		p.MinP = 0
		return p
	}, nil), []string{"temperature 0.7, min-p 0.2, top-p 0.95, penalties: distribution"}},
	{"allowed tokens ignored", sampled(nil, func(p SampleParams) SampleParams {
		p.Allow = nil
		return p
	}, nil), []string{"allowed tokens: greedy", "allowed tokens: logprobs",
		"temperature 1.2, half the tokens allowed: distribution", "temperature 1.2, half the tokens allowed: logprobs"}},
	{"allowed tokens' logprobs unconstrained", sampled(nil, nil, func(row []float32, p SampleParams, r *Sampled) {
		if p.Allow != nil {
			r.Logprob = float32(rawLogprobs(row)[r.Token])
		}
	}), []string{"allowed tokens: logprobs", "temperature 1.2, half the tokens allowed: logprobs"}},
}

// runSamplerOn runs the sampler checks (quick) on dev's sampler and
// checks that each named check reported once, in order.
func runSamplerOn(t *testing.T, dev Device, seed uint64, quick bool) map[string]Check {
	t.Helper()
	var got []Check
	runSampler(context.Background(), dev, nil, newRand(seed), quick, func(c Check) { got = append(got, c) })
	names := samplerCheckNames(quick)
	if len(got) != len(names) {
		t.Fatalf("%d sampler checks, want %d: %+v", len(got), len(names), got)
	}
	out := map[string]Check{}
	for i, c := range got {
		if c.Group != "sampler" || c.Name != names[i] {
			t.Errorf("check %d: %s %q, want sampler %q", i, c.Group, c.Name, names[i])
		}
		out[c.Name] = c
	}
	return out
}

// TestSamplerCheckNames: the named sampler checks, one per behaviour, each
// name unique.
func TestSamplerCheckNames(t *testing.T) {
	want := []string{
		"greedy argmax, vocabulary 201088",
		"greedy with penalties, vocabulary 201088",
		"greedy logprobs, 5 top logprobs, vocabulary 201088",
		"temperature 0.8: distribution of 4096 draws",
		"temperature 0.8: logprobs of 4096 draws",
		"temperature 1, top-k 5: distribution of 4096 draws",
		"temperature 1, top-k 5: logprobs of 4096 draws",
		"temperature 1, top-p 0.9: distribution of 4096 draws",
		"temperature 1, top-p 0.9: logprobs of 4096 draws",
		"temperature 0.7, min-p 0.2, top-p 0.95, penalties: distribution of 4096 draws",
		"temperature 0.7, min-p 0.2, top-p 0.95, penalties: logprobs of 4096 draws",
		"allowed tokens: greedy and forced draws, vocabulary 201088",
		"allowed tokens: logprobs, 5 top logprobs, vocabulary 201088",
		"temperature 1.2, half the tokens allowed: distribution of 4096 draws",
		"temperature 1.2, half the tokens allowed: logprobs of 4096 draws",
	}
	if got := samplerCheckNames(true); !slices.Equal(got, want) {
		t.Errorf("quick names:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	full := samplerCheckNames(false)
	if len(full) != len(want) || !strings.HasSuffix(full[3], "of 8192 draws") {
		t.Errorf("full names: %q", full)
	}
}

// TestSamplerChecksPassOnCPU: worker/sample as the device passes every
// sampler check, quick and full.
func TestSamplerChecksPassOnCPU(t *testing.T) {
	for _, quick := range []bool{true, false} {
		for name, c := range runSamplerOn(t, testDevice{}, 4, quick) {
			if c.Status != Pass {
				t.Errorf("quick %v: %s: %s (%s)", quick, name, c.Status, c.Detail)
			}
		}
	}
}

// TestSamplerCatchesErrors: each wrong sampler fails exactly the checks
// of the behaviour it gets wrong, and every sampler check is failed by
// one of them.
func TestSamplerCatchesErrors(t *testing.T) {
	names := samplerCheckNames(true)
	failedBy := map[string]int{}
	for i, tc := range samplerPerturbations {
		t.Run(tc.name, func(t *testing.T) {
			want := map[string]bool{}
			for _, prefix := range tc.fail {
				n := 0
				for _, name := range names {
					if strings.HasPrefix(name, prefix) {
						want[name] = true
						failedBy[name]++
						n++
					}
				}
				if n != 1 {
					t.Fatalf("prefix %q names %d checks", prefix, n)
				}
			}
			for name, c := range runSamplerOn(t, testDevice{sample: tc.sample}, uint64(5+i), true) {
				st := Pass
				if want[name] {
					st = Fail
				}
				if c.Status != st {
					t.Errorf("%s: %s (%s), want %s", name, c.Status, c.Detail, st)
				}
			}
		})
	}
	for _, name := range names {
		if failedBy[name] == 0 {
			t.Errorf("%s: no perturbation fails it", name)
		}
	}
}

// TestSamplerChecksInReport: each sampler check is in the JSON report and
// the table under its own name, and fails there on its own; --skip
// sampler skips them all.
func TestSamplerChecksInReport(t *testing.T) {
	run := func(dev Device, skip ...string) (*Report, string) {
		dir := t.TempDir()
		var log bytes.Buffer
		_, err := Run(context.Background(), Options{Out: dir, Only: "checks", Quick: true, Seed: 7, Golden: goldenRoot,
			Skip: append([]string{"op", "e2e", "layer20b"}, skip...), Open: func(*Options) (Device, error) { return dev, nil },
			Log: &log, Deadline: 5 * time.Minute})
		if err != nil {
			t.Fatalf("run: %v\n%s", err, log.String())
		}
		txt, err := os.ReadFile(filepath.Join(dir, "gpu-check.txt"))
		if err != nil {
			t.Fatal(err)
		}
		return readReport(t, dir), string(txt)
	}
	names := samplerCheckNames(true)
	// A sampler whose top-k keeps one token too many fails that check alone.
	i := slices.IndexFunc(samplerPerturbations, func(p samplerPerturbation) bool { return p.name == "top-k keeps a token too many" })
	if i < 0 {
		t.Fatal("no top-k perturbation")
	}
	topk := samplerPerturbations[i]
	for _, dev := range []testDevice{{}, {sample: topk.sample}} {
		rep, txt := run(dev)
		got := map[string]Check{}
		for _, c := range rep.Checks {
			if c.Group == "sampler" {
				got[c.Name] = c
			}
		}
		if len(got) != len(names) {
			t.Errorf("%d sampler checks in the report, want %d", len(got), len(names))
		}
		for _, name := range names {
			want := Pass
			if dev.sample != nil && strings.HasPrefix(name, topk.fail[0]) {
				want = Fail
			}
			if c, ok := got[name]; !ok || c.Status != want {
				t.Errorf("report: %s: %+v, want %s", name, c, want)
			}
			line := ""
			for _, l := range strings.Split(txt, "\n") {
				if strings.HasPrefix(l, "sampler") && strings.Contains(l, " "+name+" ") {
					line = l
				}
			}
			if !strings.Contains(line, " "+strings.ToUpper(want)+" ") {
				t.Errorf("table: %s: line %q, want %s", name, line, strings.ToUpper(want))
			}
		}
		if wantPass := dev.sample == nil; rep.Pass != wantPass {
			t.Errorf("report pass %v, want %v", rep.Pass, wantPass)
		}
	}
	// --skip sampler: none of them runs; the group is reported skipped.
	rep, _ := run(testDevice{sample: topk.sample}, "sampler")
	var sampler []Check
	for _, c := range rep.Checks {
		if c.Group == "sampler" {
			sampler = append(sampler, c)
		}
	}
	if len(sampler) != 1 || sampler[0].Status != Skip || sampler[0].Name != "sampler checks" || !rep.Pass {
		t.Errorf("--skip sampler: %+v (pass %v)", sampler, rep.Pass)
	}
}

// TestMainWithoutLibrary: with no kernels library the command fails fast
// with a message naming the fix, exit status 2, and still writes a report.
func TestMainWithoutLibrary(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	start := time.Now()
	code := mainWith([]string{"--out", dir, "--kernels", filepath.Join(dir, "missing", "libgptoss_kernels.so"), "--golden", goldenRoot},
		&out, &errb, nil)
	if code != 2 {
		t.Fatalf("exit %d, want 2; stderr:\n%s", code, errb.String())
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %s to fail", d)
	}
	msg := errb.String()
	if !strings.Contains(msg, "libgptoss_kernels.so") || !strings.Contains(msg, "make kernels") {
		t.Errorf("message does not name the library and the fix:\n%s", msg)
	}
	b, err := os.ReadFile(filepath.Join(dir, "gpu-check.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Pass || rep.Error == "" {
		t.Errorf("report: pass %v, error %q", rep.Pass, rep.Error)
	}
}

// TestMainFlags: bad flags exit 2; --only with a bad value too.
func TestMainFlags(t *testing.T) {
	var out, errb bytes.Buffer
	if code := mainWith([]string{"--bogus"}, &out, &errb, nil); code != 2 {
		t.Errorf("--bogus: exit %d", code)
	}
	open := func(*Options) (Device, error) { return testDevice{}, nil }
	if code := mainWith([]string{"--out", t.TempDir(), "--only", "everything"}, &out, &errb, open); code != 2 {
		t.Errorf("--only everything: exit %d", code)
	}
}

// TestMainExitStatus: a run whose checks fail exits 1.
func TestMainExitStatus(t *testing.T) {
	var out, errb bytes.Buffer
	open := func(*Options) (Device, error) {
		return testDevice{sample: func(l [][]float32, p []SampleParams) ([]Sampled, error) { return make([]Sampled, len(l)), nil }}, nil
	}
	// A sampler that always answers token 0 fails the sampler checks (and
	// an empty golden directory is an error): exit status 1.
	code := mainWith([]string{"--out", t.TempDir(), "--only", "checks", "--quick", "--golden", t.TempDir(), "--skip", "layer20b", "--deadline", "40s"}, &out, &errb, open)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "FAIL") {
		t.Errorf("table has no FAIL:\n%s", out.String())
	}
}

// TestPhaseTimeout: a phase that hangs is reported as a timeout, the run
// records the error and starts nothing after it, and Run returns.
func TestPhaseTimeout(t *testing.T) {
	r := &runner{o: Options{}, log: &bytes.Buffer{}, deadline: time.Now().Add(time.Minute),
		rep: &Report{Started: time.Now()}}
	block := make(chan struct{})
	defer close(block)
	start := time.Now()
	ok := r.phase(context.Background(), "op", "hangs", 200*time.Millisecond, func(context.Context) { <-block })
	if ok || !r.stuck {
		t.Fatalf("phase returned %v, stuck %v", ok, r.stuck)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %s", d)
	}
	ran := false
	r.phase(context.Background(), "op", "after", time.Second, func(context.Context) { ran = true })
	if ran {
		t.Error("a phase ran after one overran")
	}
	r.rep.finish()
	if r.rep.Pass || r.rep.Error == "" || len(r.rep.Checks) != 2 || r.rep.Checks[0].Status != Timeout || r.rep.Checks[1].Status != Skip {
		t.Errorf("report: pass %v, error %q, checks %+v", r.rep.Pass, r.rep.Error, r.rep.Checks)
	}
}

// TestBenchOnCPU runs the benchmark code path on a tiny model (the CPU
// has no copy bandwidth to measure, so the roofline columns stay empty).
func TestBenchOnCPU(t *testing.T) {
	p := defaultPlan(true, 1)
	p.batches, p.context, p.maxSteps, p.minSteps, p.prefill, p.prefReps = []int{1, 3}, 300, 3, 2, 64, 1
	dev := testDevice{}
	mb := benchTiny(t, dev, p)
	if mb.Status != Pass {
		t.Fatalf("%s: %s", mb.Status, mb.Detail)
	}
	if len(mb.Decode) != 2 || mb.Prefill == nil || mb.Decode[1].TokPerSec <= 0 || mb.Prefill.TokPerSec <= 0 {
		t.Fatalf("results: %+v", mb)
	}
	b := &Bench{CopyError: ErrUnsupported.Error(), Models: []*ModelBench{mb}}
	var buf bytes.Buffer
	b.table(&buf)
	if !strings.Contains(buf.String(), "tiny") {
		t.Errorf("table:\n%s", buf.String())
	}
}

func TestFastDummyDeterministic(t *testing.T) {
	cfg := opConfig()
	a, err := fastDummy(cfg, 4, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := fastDummy(cfg, 4, 1)
	if !slicesEqual(a.Unembed.BF16, b.Unembed.BF16) || !slicesEqual(a.Layers[1].GateUp.Blocks, b.Layers[1].GateUp.Blocks) {
		t.Error("same seed, different weights")
	}
	// Aliased layers share host memory; distinct ones do not.
	if &a.Layers[0].Q.BF16[0] != &a.Layers[1].Q.BF16[0] {
		t.Error("distinct=1: layers do not share memory")
	}
	c, _ := fastDummy(cfg, 4, 2)
	if &c.Layers[0].Q.BF16[0] == &c.Layers[1].Q.BF16[0] {
		t.Error("distinct=2: layers share memory")
	}
	// Scale: dense rows of unit gain (variance 1/fan_in per weight).
	var s float64
	for _, v := range a.Layers[0].Q.BF16 {
		f := float64(fromBF16(v))
		s += f * f
	}
	if g := s / float64(a.Layers[0].Q.Rows); math.Abs(g-1) > 0.05 {
		t.Errorf("row gain %.3f, want ≈ 1", g)
	}
}

func slicesEqual[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 99)) }

// benchTiny runs the benchmark of the tiny preset on dev.
func benchTiny(t *testing.T, dev Device, p benchPlan) *ModelBench {
	t.Helper()
	return benchModel(context.Background(), dev, "tiny", p, 0, io.Discard)
}

func fmtF(f float64) string { return strconv.FormatFloat(f, 'g', 3, 64) }

// readReport reads the gpu-check.json a run wrote into dir.
func readReport(t *testing.T, dir string) *Report {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "gpu-check.json"))
	if err != nil {
		t.Fatal(err)
	}
	rep := &Report{}
	if err := json.Unmarshal(b, rep); err != nil {
		t.Fatal(err)
	}
	return rep
}
