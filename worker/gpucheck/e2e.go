package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/gptoss/server/shared/model"
	"github.com/gptoss/server/worker/engine"
	"github.com/gptoss/server/worker/safetensors"
)

// goldenKV is the cache of the end-to-end checks: the goldens' prompts
// and decodes are under 200 tokens.
var goldenKV = Spec{BlockSize: 16, Blocks: 256, SlidingBlocks: 256, MaxTokens: 1024, MaxSeqs: 16, MaxContext: 1024}

// golden is what the end-to-end check reads of a golden's expected.json
// (worker/engine/testdata/golden/README.md): the prompt and the greedy
// tokens transformers decoded.
type golden struct {
	Prompt       []int `json:"prompt"`
	DecodeTokens []int `json:"decode_tokens"`
}

// seqRun is a set of sequences run in lockstep on the reference, its
// bf16 twin and the device: one prefill step with every prompt, then
// decode steps in which every sequence is fed the reference's greedy
// token (teacher forcing). Feeding all sides the same tokens keeps their
// logits comparable at every step; a free-running device whose top-1
// agrees at every step would produce exactly the reference's tokens, so
// top-1 agreement at every step is "greedy tokens equal".
type seqRun struct {
	prompts [][]int
	steps   int
	// allLogits compares every prompt position's logits (first sequence).
	allLogits bool
}

// sideStats is how far one side's logits were from the reference's.
type sideStats struct {
	diff      Diff      // worst over the rows
	rows      int       // logits rows compared
	agree     int       // rows whose argmax agrees with the reference's
	rowRel    []float64 // each row's rel L2 error
	rowKL     []float64 // each row's KL(reference ‖ side), nats
	firstFlip string
}

func (s *sideStats) add(step, seq, row int, ref, got []float32) {
	d := compare(got, ref)
	s.diff = s.diff.merge(d)
	s.rows++
	s.rowRel = append(s.rowRel, d.RelL2)
	s.rowKL = append(s.rowKL, kl(ref, got))
	if ra, rb := argmax(ref), argmax(got); ra == rb {
		s.agree++
	} else if s.firstFlip == "" {
		s.firstFlip = fmt.Sprintf("step %d, sequence %d, row %d: %d, reference %d (reference margin %.3g, |Δlogit| ≤ %.3g)",
			step, seq, row, rb, ra, margin(ref), d.MaxAbs)
	}
}

// stepStats is what a seqRun measured.
type stepStats struct {
	dut, twin sideStats
	refTokens [][]int // each sequence's greedy tokens on the reference
}

// run drives the reference, the twin and the device (steppers over
// backends of one geometry) through r.
func (r seqRun) run(ref, twin, dut Stepper, geo engine.KVGeometry, window int, rng *rand.Rand) (stepStats, error) {
	var st stepStats
	kv := newKVState(geo, window, rng)
	seqs := make([]engine.Seq, len(r.prompts))
	for i, p := range r.prompts {
		id := kv.newSeq()
		if err := kv.grow(id, len(p)+r.steps+1); err != nil {
			return st, err
		}
		seqs[i] = engine.Seq{Tokens: p, Pos: 0, Blocks: kv.tables[id], SlidingBlocks: kv.sliding[id],
			AllLogits: r.allLogits && i == 0}
	}
	st.refTokens = make([][]int, len(seqs))
	for step := 0; step <= r.steps; step++ {
		var out [3][][][]float32
		for k, side := range []struct {
			name string
			m    Stepper
		}{{"reference", ref}, {"bf16 twin", twin}, {"device", dut}} {
			o, err := side.m.Step(seqs)
			if err != nil {
				return st, fmt.Errorf("step %d: %s: %w", step, side.name, err)
			}
			if len(o) != len(seqs) {
				return st, fmt.Errorf("step %d: %s: %d sequences of logits for %d", step, side.name, len(o), len(seqs))
			}
			out[k] = o
		}
		a := out[0]
		for i := range seqs {
			for k, side := range []*sideStats{&st.twin, &st.dut} {
				b := out[k+1]
				if len(a[i]) != len(b[i]) {
					return st, fmt.Errorf("step %d, sequence %d: %d and %d rows of logits", step, i, len(a[i]), len(b[i]))
				}
				for j := range a[i] {
					side.add(step, i, j, a[i][j], b[i][j])
				}
			}
			next := argmax(a[i][len(a[i])-1])
			st.refTokens[i] = append(st.refTokens[i], next)
			seqs[i].Pos += len(seqs[i].Tokens)
			seqs[i].Tokens = []int{next}
			seqs[i].AllLogits = false
		}
	}
	return st, nil
}

// quantile is the q-quantile of v (nearest rank; 0 for none).
func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// Model-level bounds, relative to the bf16 twin (see bf16Twin): the device
// may be a few times further from the reference than the twin, whose
// roundings only approximate the kernels' (where each rounds, fused or
// not), but not more. Floors keep a near-perfect twin from making the
// bound unreachable.
const (
	relFactor = 3    // median row rel L2: device ≤ relFactor × twin
	relFloor  = 2e-3 // … with the twin's taken as at least this
	klFactor  = 10   // 90th percentile of the row KL
	klFloor   = 1e-5
	// flipSlack: top-1 disagreements allowed beyond twice the twin's, as
	// a fraction of the rows (near-ties flip either way).
	flipSlack = 0.05
)

// modelVerdict judges the device's logits against the twin's. A bug in
// one op (a wrong scale, a missed block, a stale graph input) moves the
// bulk of the rows; routing flips and chaotic amplification move a few
// rows, or, in a chaotic model, the twin's as much as the device's.
func modelVerdict(dut, twin sideStats) (bool, string, map[string]float64) {
	dm, tm := quantile(dut.rowRel, 0.5), quantile(twin.rowRel, 0.5)
	dk, tk := quantile(dut.rowKL, 0.9), quantile(twin.rowKL, 0.9)
	relBound := relFactor * max(tm, relFloor)
	klBound := klFactor * max(tk, klFloor)
	flips, twinFlips := dut.rows-dut.agree, twin.rows-twin.agree
	flipBound := 2*twinFlips + int(flipSlack*float64(dut.rows)) + 1
	extra := map[string]float64{
		"rows": float64(dut.rows), "med_rel": dm, "twin_med_rel": tm, "med_rel_bound": relBound,
		"p90_kl": dk, "twin_p90_kl": tk, "p90_kl_bound": klBound,
		"top1_agree": float64(dut.agree) / float64(max(dut.rows, 1)), "twin_top1_agree": float64(twin.agree) / float64(max(twin.rows, 1)),
		"flips": float64(flips), "flip_bound": float64(flipBound), "max_dlogit": dut.diff.MaxAbs,
	}
	switch {
	case dut.rows == 0:
		return false, "no logits compared", extra
	case dut.diff.NaN > 0 || dut.diff.Inf > 0:
		return false, fmt.Sprintf("%d NaN, %d Inf in the logits", dut.diff.NaN, dut.diff.Inf), extra
	case dm > relBound:
		return false, fmt.Sprintf("median row rel L2 %.3g > %.3g (%d × the bf16 twin's %.3g)", dm, relBound, relFactor, tm), extra
	case dk > klBound:
		return false, fmt.Sprintf("90th-percentile row KL %.3g > %.3g (%d × the bf16 twin's %.3g)", dk, klBound, klFactor, tk), extra
	case flips > flipBound:
		return false, fmt.Sprintf("%d greedy tokens differ (bound %d; the bf16 twin: %d): first at %s", flips, flipBound, twinFlips, dut.firstFlip), extra
	}
	return true, "", extra
}

// check turns stats into a Check.
func (st stepStats) check() Check {
	ok, why, extra := modelVerdict(st.dut, st.twin)
	c := Check{Diff: &st.dut.diff, Extra: extra, Status: Pass}
	if !ok {
		c.Status, c.Detail = Fail, why
	}
	return c
}

// goldenDirs lists the golden checkpoints under root.
func goldenDirs(root string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(root, "*", "expected.json"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no golden checkpoints under %s (worker/engine/testdata/golden)", root)
	}
	var dirs []string
	for _, f := range files {
		dirs = append(dirs, filepath.Dir(f))
	}
	sort.Strings(dirs)
	return dirs, nil
}

// loadGolden reads one golden checkpoint; close releases its memory map.
func loadGolden(dir string) (w *engine.Weights, g golden, close func(), err error) {
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		return nil, g, nil, err
	}
	set, err := safetensors.OpenDir(dir)
	if err != nil {
		return nil, g, nil, fmt.Errorf("golden %s: %w", dir, err)
	}
	w, err = engine.LoadWeights(cfg, set)
	if err != nil {
		set.Close()
		return nil, g, nil, fmt.Errorf("golden %s: %w", dir, err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "expected.json"))
	if err == nil {
		err = json.Unmarshal(b, &g)
	}
	if err != nil {
		set.Close()
		return nil, g, nil, fmt.Errorf("golden %s: expected.json: %w", dir, err)
	}
	return w, g, func() { set.Close() }, nil
}

// runGolden runs every golden checkpoint end to end on the CPU reference
// and on dev: one sequence (every prompt position's logits compared, then
// greedy decoding) and a ragged batch of four, each eager and, where the
// device has them, through CUDA graphs. The reference's greedy tokens are
// also checked against transformers' (expected.json), which proves the
// reference side of the comparison.
func runGolden(ctx context.Context, dev Device, root string, steps int, quick bool, rng *rand.Rand, report func(Check)) {
	dirs, err := goldenDirs(root)
	if err != nil {
		report(Check{Group: "e2e", Name: "golden checkpoints", Status: Error, Detail: err.Error()})
		return
	}
	if quick && len(dirs) > 2 {
		dirs = dirs[:2]
	}
	for _, dir := range dirs {
		name := filepath.Base(dir)
		w, g, closeSet, err := loadGolden(dir)
		if err != nil {
			report(Check{Group: "e2e", Name: name, Status: Error, Detail: err.Error()})
			continue
		}
		p := g.Prompt
		batch := [][]int{p, p[3:], p[:min(20, len(p))], p[7:min(30, len(p))]}
		variants := []struct {
			label   string
			prompts [][]int
			graphs  bool
		}{
			{"1 sequence, eager", [][]int{p}, false},
			{"1 sequence, graphs", [][]int{p}, true},
			{"batch 4, eager", batch, false},
			{"batch 4, graphs", batch, true},
		}
		if quick {
			variants = []struct {
				label   string
				prompts [][]int
				graphs  bool
			}{variants[0], variants[3]}
		}
		for _, v := range variants {
			cname := name + ": " + v.label
			if ctx.Err() != nil {
				report(Check{Group: "e2e", Name: cname, Status: Skip, Detail: "out of time"})
				continue
			}
			start := now()
			c := func() (c Check) {
				defer func() {
					if p := recover(); p != nil {
						c = Check{Status: Error, Detail: fmt.Sprintf("panic: %v", p)}
					}
				}()
				return goldenVariant(dev, w, g, v.prompts, v.graphs, steps, len(v.prompts) == 1, rng)
			}()
			c.Group, c.Name, c.Seconds = "e2e", cname, since(start)
			report(c)
		}
		closeSet()
	}
}

func goldenVariant(dev Device, w *engine.Weights, g golden, prompts [][]int, graphs bool, steps int, single bool, rng *rand.Rand) Check {
	ref, err := (cpuDevice{}).Backend(w, goldenKV)
	if err != nil {
		return Check{Status: Error, Detail: err.Error()}
	}
	refM, err := (cpuDevice{}).Model(ref)
	if err != nil {
		return Check{Status: Error, Detail: err.Error()}
	}
	twin, err := newTwin(w, goldenKV)
	if err != nil {
		return Check{Status: Error, Detail: err.Error()}
	}
	spec := goldenKV
	spec.Graphs = graphs
	b, err := dev.Backend(w, spec)
	if errors.Is(err, ErrUnsupported) {
		return Check{Status: Skip, Detail: "the device has no CUDA-graph path"}
	}
	if err != nil {
		return Check{Status: Error, Detail: err.Error()}
	}
	defer closeBackend(b)
	m, err := dev.Model(b)
	if err != nil {
		return Check{Status: Error, Detail: err.Error()}
	}
	if c, ok := m.(interface{ Close() }); ok {
		defer c.Close()
	}
	st, err := seqRun{prompts: prompts, steps: steps, allLogits: single}.run(refM, twin, m, ref.Geometry(), w.Config.SlidingWindow, rng)
	if err != nil {
		return Check{Status: Error, Detail: err.Error()}
	}
	c := st.check()
	graphCheck(&c, m, graphs)
	// The reference against transformers: the first sequence is the
	// golden prompt, whose greedy tokens expected.json holds.
	n := min(len(st.refTokens[0]), len(g.DecodeTokens))
	for i := range n {
		if st.refTokens[0][i] != g.DecodeTokens[i] {
			c.Status = Error
			c.Detail = joinDetail(fmt.Sprintf("the CPU reference's greedy token %d is %d, transformers' %d: the reference is wrong",
				i, st.refTokens[0][i], g.DecodeTokens[i]), c.Detail)
			break
		}
	}
	return c
}

// kl is KL(softmax(p) ‖ softmax(q)) in nats, in float64.
func kl(p, q []float32) float64 {
	lse := func(v []float32) float64 {
		m := math.Inf(-1)
		for _, x := range v {
			m = math.Max(m, float64(x))
		}
		var s float64
		for _, x := range v {
			s += math.Exp(float64(x) - m)
		}
		return m + math.Log(s)
	}
	lp, lq := lse(p), lse(q)
	var d float64
	for i := range p {
		a := float64(p[i]) - lp
		d += math.Exp(a) * (a - (float64(q[i]) - lq))
	}
	return math.Max(d, 0)
}

// graphCheck records how m ran its steps and fails a check that asked for
// CUDA graphs but replayed none: it would have compared the eager path
// twice and proved nothing about the graphs.
func graphCheck(c *Check, m Stepper, graphs bool) {
	g, ok := m.(graphReporter)
	if !ok {
		return
	}
	st := g.GraphStats()
	c.Extra["graph_replayed"] = float64(st.Replayed)
	c.Extra["graph_captured"] = float64(st.Captured)
	c.Extra["graph_fallbacks"] = float64(st.Fallbacks)
	if graphs && st.Replayed == 0 && c.Status == Pass {
		c.Status = Fail
		c.Detail = joinDetail("no step replayed a CUDA graph", st.Errors)
	}
}
