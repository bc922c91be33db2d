package cuda

import (
	"math"
	"testing"

	"github.com/gptoss/server/worker/engine"
)

// shifty is a model that, when told, takes one more tensor before the
// step: every address of the step moves, so a replay must notice.
type shifty struct {
	m     Stepper
	b     *Backend
	shift bool
}

func (s *shifty) Step(seqs []engine.Seq) ([][][]float32, error) {
	if s.shift {
		if _, err := s.b.Tensor(1, 1); err != nil {
			return nil, err
		}
	}
	return s.m.Step(seqs)
}

func sameLogits(t *testing.T, what string, got, want [][][]float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d sequences, want %d", what, len(got), len(want))
	}
	for s := range want {
		if len(got[s]) != len(want[s]) {
			t.Fatalf("%s: sequence %d: %d rows, want %d", what, s, len(got[s]), len(want[s]))
		}
		for r := range want[s] {
			for i, v := range want[s][r] {
				if got[s][r][i] != v || math.IsNaN(float64(v)) {
					t.Fatalf("%s: sequence %d row %d logit %d: %g, want %g", what, s, r, i, got[s][r][i], v)
				}
			}
		}
	}
}

// Decode steps replayed from CUDA graphs give exactly what eager steps give
// (the fake kernels compute each token alone): through padding (3 → 4,
// 5 → 8 sequences), a context bucket boundary (16 blocks of 4 positions),
// prefills and mixed steps (eager), a replay that diverges from its capture
// (dropped, run eagerly) and a capture that fails.
func TestGraphModel(t *testing.T) {
	cfg := testConfig()
	w := engine.DummyWeights(cfg, 11, 0)
	o := testOptions(t)
	o.Graphs = true
	gb := newTestBackend(t, w, o)
	gm, err := NewModel(gb)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gm.Close)
	sh := &shifty{m: gm.m, b: gb}
	gm.m = sh
	eb := newTestBackend(t, w, testOptions(t))
	em, err := engine.NewModelOn(eb)
	if err != nil {
		t.Fatal(err)
	}
	d := &driver{t: t, cfg: cfg, bs: 4, full: engine.NewAllocator(64), sliding: engine.NewAllocator(32)}
	run := func(what string, seqs []*seqState) {
		t.Helper()
		outs := d.step(seqs, em.Step, gm.Step)
		sameLogits(t, what, outs[1], outs[0])
	}
	a := &seqState{toks: []int{5, 6, 7, 8, 9, 10, 11}, chunk: 7}
	b := &seqState{toks: []int{20, 21, 22}, chunk: 3}
	c := &seqState{toks: []int{30}, chunk: 1}
	run("prefill", []*seqState{a, b, c})
	if s := gm.Stats(); s.Eager != 1 || s.Captured != 0 {
		t.Fatalf("after a prefill: %+v", s)
	}
	run("first decode of 3 (captures 4×16)", []*seqState{a, b, c})
	if s := gm.Stats(); s.Captured != 1 || s.Graphs != 1 {
		t.Fatalf("after the first decode: %+v (%v)", s, gm.CaptureErrors())
	}
	for range 5 {
		run("decode of 3", []*seqState{a, b, c})
	}
	if s := gm.Stats(); s.Replayed != 5 {
		t.Fatalf("after 5 decodes: %+v (%v)", s, gm.CaptureErrors())
	}
	// A new sequence's prefill beside the decodes: eager.
	e := &seqState{toks: []int{40, 41, 42, 43, 44}, chunk: 5}
	run("mixed", []*seqState{a, b, c, e})
	// Four decodes (no padding) and five (padded to 8).
	run("decode of 4", []*seqState{a, b, c, e})
	run("decode of 4", []*seqState{a, b, c, e})
	f := &seqState{toks: []int{50}, chunk: 1}
	run("prefill of one", []*seqState{f})
	for range 3 {
		run("decode of 5", []*seqState{a, b, c, e, f})
	}
	// Past position 64 the tables need 32 blocks: another graph.
	for a.pos < 70 {
		run("long decode", []*seqState{a, b, c})
	}
	// Graphs 4×16, 1×16 (a one-token prompt is a decode step), 8×16, 4×32.
	s := gm.Stats()
	if s.Captured != 4 || s.Graphs != 4 || s.Failed != 0 || s.Fallbacks != 0 || s.Replayed < 10 {
		t.Fatalf("stats %+v (%v)", s, gm.CaptureErrors())
	}

	// A replay whose ops move: detected before launch, run eagerly, the
	// graph dropped.
	sh.shift = true
	run("diverging replay", []*seqState{a, b, c})
	sh.shift = false
	if s := gm.Stats(); s.Fallbacks != 1 || s.Graphs != 3 || s.Failed != 1 {
		t.Fatalf("after a diverging replay: %+v", s)
	}
	run("after the fallback (eager)", []*seqState{a, b, c})

	// A capture that fails: the step still gives the warm-up's logits, and
	// the bucket runs eagerly from then on.
	t.Setenv("FAKE_GX_FAIL", "gx_graph_end")
	run("failing capture (2 → 2×32)", []*seqState{a, b})
	t.Setenv("FAKE_GX_FAIL", "")
	run("decode of 2 after the failed capture", []*seqState{a, b})
	if s := gm.Stats(); s.Failed != 2 || s.Graphs != 3 {
		t.Fatalf("after a failed capture: %+v", s)
	}
	if errs := gm.CaptureErrors(); errs["2×32"] == nil {
		t.Fatalf("capture errors %v", errs)
	}
	if gb.mode != eager || gb.arena.frozen && gb.active {
		t.Fatalf("backend left in mode %d", gb.mode)
	}
}

// Without Options.Graphs every step runs eagerly.
func TestGraphModelOff(t *testing.T) {
	cfg := testConfig()
	w := engine.DummyWeights(cfg, 11, 0)
	gb := newTestBackend(t, w, testOptions(t))
	gm, err := NewModel(gb)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := gm.Step([]engine.Seq{{Tokens: []int{1}, Pos: i, Blocks: []int{0}, SlidingBlocks: []int{0}}}); err != nil {
			t.Fatal(err)
		}
	}
	if s := gm.Stats(); s.Eager != 3 || s.Captured+s.Replayed != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// Capture and Replay of a bare op list: the graph reads device memory as
// it is at replay.
func TestCaptureReplay(t *testing.T) {
	cfg := testConfig()
	w := engine.DummyWeights(cfg, 3, 0)
	b := newTestBackend(t, w, testOptions(t))
	x, _ := b.Tensor(1, cfg.Hidden)
	y, _ := b.Tensor(1, cfg.Hidden)
	norm := engine.Param{Layer: -1, Name: engine.ParamNorm}
	in := make([]float32, cfg.Hidden)
	for i := range in {
		in[i] = 1
	}
	if err := b.Write(x, in); err != nil {
		t.Fatal(err)
	}
	g, err := b.Capture(func() error { return b.RMSNorm(x, norm, y) })
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, cfg.Hidden)
	if err := b.Read(y, out); err != nil {
		t.Fatal(err)
	}
	if !math.IsNaN(float64(out[0])) {
		t.Fatalf("the captured op ran: %g", out[0])
	}
	for _, v := range []float32{1, -2} {
		for i := range in {
			in[i] = v
		}
		if err := b.Write(x, in); err != nil {
			t.Fatal(err)
		}
		if err := b.Replay(g); err != nil {
			t.Fatal(err)
		}
		if err := b.Read(y, out); err != nil {
			t.Fatal(err)
		}
		want := w.Norm[0] * v / float32(math.Abs(float64(v))) // rms of a constant row is |v|
		if d := out[0] - want; d > 1e-4 || d < -1e-4 {
			t.Fatalf("replay over %g: %g, want %g", v, out[0], want)
		}
	}
	_, err = b.Capture(func() error { return b.Read(y, out) })
	wantErr(t, err, "Read inside Capture")
	_, err = b.Capture(func() error { return b.Write(y, out) })
	wantErr(t, err, "Write inside a CUDA graph step")
	g.Close()
	wantErr(t, b.Replay(g), "closed graph")
	if len(b.graphs) != 0 {
		t.Fatalf("%d graphs held", len(b.graphs))
	}
}
