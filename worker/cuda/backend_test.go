package cuda

import (
	"errors"
	"math"
	"testing"
	"unsafe"

	"github.com/gptoss/server/shared/model"
	"github.com/gptoss/server/worker/engine"
)

// testOptions is a small backend on the fake library.
func testOptions(t *testing.T) Options {
	return Options{Lib: fakeLib(t), BlockSize: 4, Blocks: 64, SlidingBlocks: 32, MaxTokens: 64, MaxSeqs: 16}
}

func newTestBackend(t *testing.T, w *engine.Weights, o Options) *Backend {
	t.Helper()
	b, err := New(w, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// relErr is ‖a-b‖/‖b‖.
func relErr(a, b []float32) float64 {
	var num, den float64
	for i := range a {
		d := float64(a[i] - b[i])
		num += d * d
		den += float64(b[i]) * float64(b[i])
	}
	return math.Sqrt(num / den)
}

func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

// seqState is one sequence of a scripted generation.
type seqState struct {
	toks           []int // inputs still to feed (prompt), then the last token
	pos            int
	full, sliding  []int
	chunk          int // prompt tokens per step
	generated      int
	allLogitsFirst bool
}

// driver runs the same steps on a reference model and models under test,
// growing and trimming block tables like worker/local, and feeding both the
// reference's greedy tokens.
type driver struct {
	t             *testing.T
	cfg           model.Config
	bs            int
	full, sliding *engine.Allocator
}

func (d *driver) step(seqs []*seqState, ref func([]engine.Seq) ([][][]float32, error),
	duts ...func([]engine.Seq) ([][][]float32, error)) [][][][]float32 {
	t := d.t
	t.Helper()
	var step []engine.Seq
	for _, s := range seqs {
		n := min(len(s.toks), max(s.chunk, 1))
		var err error
		if s.full, err = d.full.Grow(s.full, s.pos+n, d.bs); err != nil {
			t.Fatal(err)
		}
		if s.sliding, err = d.sliding.Grow(s.sliding, s.pos+n, d.bs); err != nil {
			t.Fatal(err)
		}
		step = append(step, engine.Seq{Tokens: s.toks[:n], Pos: s.pos, Blocks: s.full, SlidingBlocks: s.sliding,
			AllLogits: s.allLogitsFirst && s.pos == 0})
	}
	want, err := ref(step)
	if err != nil {
		t.Fatal(err)
	}
	outs := [][][][]float32{want}
	for _, f := range duts {
		got, err := f(step)
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, got)
	}
	for i, s := range seqs {
		n := len(step[i].Tokens)
		s.pos += n
		s.toks = s.toks[n:]
		d.sliding.Trim(s.sliding, s.pos, d.cfg.SlidingWindow, d.bs)
		if len(s.toks) == 0 {
			s.toks = []int{argmax(want[i][len(want[i])-1])}
			s.generated++
		}
	}
	return outs
}

// The engine's forward pass on the CUDA backend (fake kernels, bf16 KV)
// agrees with the CPU reference (fp32 KV) through prefills in chunks,
// logits of every position, decodes past the sliding window with released
// sliding blocks.
func TestBackendMatchesCPU(t *testing.T) {
	cfg := testConfig()
	w := engine.DummyWeights(cfg, 7, 0)
	cache, err := engine.NewKVCache(&cfg, 64, 32, 4)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := engine.NewModel(w, cache)
	if err != nil {
		t.Fatal(err)
	}
	b := newTestBackend(t, w, testOptions(t))
	if g := b.Geometry(); g != (engine.KVGeometry{BlockSize: 4, Blocks: 64, SlidingBlocks: 32}) {
		t.Fatalf("geometry %+v", g)
	}
	m, err := engine.NewModelOn(b)
	if err != nil {
		t.Fatal(err)
	}
	d := &driver{t: t, cfg: cfg, bs: 4, full: engine.NewAllocator(64), sliding: engine.NewAllocator(32)}
	seqs := []*seqState{
		{toks: []int{1, 17, 300, 42, 5, 99, 211, 0, 250, 7, 3}, chunk: 11, allLogitsFirst: true},
		{toks: []int{3, 141, 59, 26, 5, 158}, chunk: 3},
	}
	worst := 0.0
	for i := range 25 {
		outs := d.step(seqs, ref.Step, m.Step)
		want, got := outs[0], outs[1]
		for s := range want {
			if len(got[s]) != len(want[s]) {
				t.Fatalf("step %d seq %d: %d logit rows, want %d", i, s, len(got[s]), len(want[s]))
			}
			for r := range want[s] {
				e := relErr(got[s][r], want[s][r])
				worst = max(worst, e)
				if e > 2e-2 || math.IsNaN(e) {
					t.Fatalf("step %d seq %d row %d: relative error %.3g", i, s, r, e)
				}
			}
		}
	}
	if seqs[0].pos < 3*cfg.SlidingWindow {
		t.Fatalf("only reached position %d", seqs[0].pos)
	}
	t.Logf("worst relative error %.3g (bf16 KV against fp32)", worst)
}

// Dense matrices are uploaded compact: a tensor-parallel column slice
// (o_proj of rank 1 of 2) is packed, a float32 matrix rounded to bf16.
func TestUploadMat(t *testing.T) {
	cfg := testConfig()
	w := engine.DummyWeights(cfg, 3, 0)
	b := newTestBackend(t, w, testOptions(t))
	shard, err := w.Shard(1, 2)
	if err != nil {
		t.Fatal(err)
	}
	o := shard.Layers[0].O // [Hidden × 32] of a [Hidden × 64] matrix
	if o.Stride != 64 || o.Cols != 32 {
		t.Fatalf("slice %d × %d stride %d", o.Rows, o.Cols, o.Stride)
	}
	d, err := b.uploadMat(&o, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]uint16, o.Rows*o.Cols)
	if err := b.c.download(unsafe.Pointer(&got[0]), d.p, int64(len(got))*2); err != nil {
		t.Fatal(err)
	}
	for r := range o.Rows {
		for c := range o.Cols {
			if got[r*32+c] != w.Layers[0].O.BF16[r*64+32+c] {
				t.Fatalf("row %d col %d", r, c)
			}
		}
	}
	if d.ld != 32 || d.hasBias {
		t.Fatalf("uploaded %+v", d)
	}
	f := engine.Mat{Rows: 1, Cols: 3, F32: []float32{1, 1.00390625, -2.5e-3}}
	d, err = b.uploadMat(&f, []float32{0.5})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.c.download(unsafe.Pointer(&got[0]), d.p, 6); err != nil {
		t.Fatal(err)
	}
	// 1.00390625 is halfway between bf16 1 and 1.0078125: to even (1).
	if got[0] != 0x3f80 || got[1] != 0x3f80 || got[2] != engine.ToBF16(-2.5e-3) || !d.hasBias {
		t.Fatalf("f32 upload %#x %#x %#x", got[0], got[1], got[2])
	}
}

func TestBackendOpErrors(t *testing.T) {
	cfg := testConfig()
	w := engine.DummyWeights(cfg, 3, 0)
	b := newTestBackend(t, w, testOptions(t))
	x, err := b.Tensor(2, cfg.Hidden)
	if err != nil {
		t.Fatal(err)
	}
	wrong, _ := b.Tensor(2, 5)
	wantErr(t, b.Embed(x), "embed outside a step")
	wantErr(t, b.Rope(x, x), "rope outside a step")
	wantErr(t, b.WriteKV(0, x, x), "write kv outside a step")
	wantErr(t, b.Attention(0, x, x), "attention outside a step")
	wantErr(t, b.Linear(engine.Param{Layer: 0, Name: engine.ParamQ}, wrong, true, x), "linear input is 2 × 5")
	wantErr(t, b.Linear(engine.Param{Layer: -1, Name: engine.ParamUnembed}, x, true, wrong), "linear output")
	out, _ := b.Tensor(2, cfg.Vocab)
	wantErr(t, b.Linear(engine.Param{Layer: -1, Name: engine.ParamUnembed}, x, true, out), "has no bias")
	wantErr(t, b.Linear(engine.Param{Layer: 5, Name: engine.ParamQ}, x, true, x), "not a dense weight")
	wantErr(t, b.RMSNorm(x, engine.Param{Layer: 0, Name: engine.ParamQ}, x), "not a norm gain")
	wantErr(t, b.AddRMSNorm(x, x, engine.Param{Layer: -1, Name: engine.ParamUnembed}, engine.Param{Layer: 0, Name: engine.ParamMLPNorm}, x), "no bias")
	wantErr(t, b.MoE(0, x, x, x), "router logits is 2 × 64, want 2 × 4")
	wantErr(t, b.GatherRows(x, []int{0, 2}, x), "row 2 of 2")
	wantErr(t, b.Read(x, make([]float32, 3)), "reading a 2 × 64 tensor into 3 values")
	wantErr(t, b.Write(x, make([]float32, 3)), "writing 3 values")
	var foreign engine.Tensor = &fakeTensor{}
	wantErr(t, b.RMSNorm(foreign, engine.Param{Layer: -1, Name: engine.ParamNorm}, x), "is not a CUDA tensor")
	if _, err := b.Tensor(-1, 2); err == nil {
		t.Fatal("a tensor of -1 rows")
	}

	// Write, an op, Read: the round trip through the device.
	src := make([]float32, 2*cfg.Hidden)
	for i := range src {
		src[i] = float32(i%7) - 3
	}
	if err := b.Write(x, src); err != nil {
		t.Fatal(err)
	}
	y, _ := b.Tensor(2, cfg.Hidden)
	if err := b.RMSNorm(x, engine.Param{Layer: -1, Name: engine.ParamNorm}, y); err != nil {
		t.Fatal(err)
	}
	// All-reduce of a whole model without a communicator is nothing;
	// all-gather is a copy.
	if err := b.AllReduce(y); err != nil {
		t.Fatal(err)
	}
	z, _ := b.Tensor(2, cfg.Hidden)
	if err := b.AllGather(y, z); err != nil {
		t.Fatal(err)
	}
	got := make([]float32, len(src))
	if err := b.Read(z, got); err != nil {
		t.Fatal(err)
	}
	for tk := range 2 {
		var ss float32
		for _, v := range src[tk*cfg.Hidden : (tk+1)*cfg.Hidden] {
			ss += v * v
		}
		inv := float32(1 / math.Sqrt(float64(ss/float32(cfg.Hidden)+float32(cfg.RMSNormEps))))
		for i := range cfg.Hidden {
			want := w.Norm[i] * (src[tk*cfg.Hidden+i] * inv)
			if d := got[tk*cfg.Hidden+i] - want; d > 1e-5 || d < -1e-5 {
				t.Fatalf("rms norm [%d][%d] = %g, want %g", tk, i, got[tk*cfg.Hidden+i], want)
			}
		}
	}
	b.EndStep()
}

type fakeTensor struct{}

func (*fakeTensor) Rows() int { return 2 }
func (*fakeTensor) Cols() int { return 64 }

func TestNewErrors(t *testing.T) {
	cfg := testConfig()
	w := engine.DummyWeights(cfg, 3, 0)
	o := testOptions(t)
	o.Device = 3
	_, err := New(w, o)
	wantErr(t, err, "cuda: device 3", "gx_ctx_create: device 3 of 1")

	// A library path that is not there: the not-found error, from New.
	o = testOptions(t)
	o.Lib, o.LibPath = nil, "/nonexistent/"+LibraryName
	if _, err := New(w, o); !errors.Is(err, ErrLibraryNotFound) {
		t.Fatalf("New with a missing library: %v", err)
	}

	// Too little memory for the explicit pools, and for any pool.
	t.Setenv("FAKE_GX_MEM", "4000000")
	o = testOptions(t)
	o.Blocks = 100000
	_, err = New(w, o)
	wantErr(t, err, "KV cache of 100000 full")
	// (the sliding pool of 4 × 64 sequences' windows takes 393 KB).
	t.Setenv("FAKE_GX_MEM", "600000")
	o.Blocks, o.SlidingBlocks, o.MaxSeqs = 0, 0, 64
	_, err = New(w, o)
	wantErr(t, err, "no room for the KV cache")
	o.MaxSeqs = 16

	// From free memory: 90% of what is left after the rest.
	t.Setenv("FAKE_GX_MEM", "16000000")
	b := newTestBackend(t, w, o)
	g, mem := b.Geometry(), b.Memory()
	if g.Blocks < 100 || g.SlidingBlocks != 4*16*(8/4+1) {
		t.Fatalf("geometry %+v", g)
	}
	used := mem.Weights + mem.KV + mem.Activations + mem.Workspace
	if mem.KV > 16000000*9/10 || used > 16000000 || float64(mem.KV) < 0.85*float64(16000000-(used-mem.KV)) {
		t.Fatalf("memory %+v", mem)
	}
	info, err := b.DeviceInfo()
	if err != nil || info.Name != "Fake GPU 0" || info.Major != 9 || info.SMs != 132 || info.TotalBytes != 16000000 ||
		info.FreeBytes != 16000000-used {
		t.Fatalf("device info %+v, %v (used %d)", info, err, used)
	}
	gbps, err := b.CopyBandwidth(64<<10, 3)
	if err != nil || gbps <= 0 {
		t.Fatalf("copy bandwidth %g, %v", gbps, err)
	}
}

// A failing kernel's message reaches the caller of the forward pass.
func TestKernelErrorSurfaces(t *testing.T) {
	cfg := testConfig()
	w := engine.DummyWeights(cfg, 3, 0)
	b := newTestBackend(t, w, testOptions(t))
	m, err := engine.NewModelOn(b)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("FAKE_GX_FAIL", "gx_attention")
	_, err = m.Step([]engine.Seq{{Tokens: []int{1, 2}, Blocks: []int{0}, SlidingBlocks: []int{0}}})
	var e *Error
	if !errors.As(err, &e) || e.Op != "gx_attention" {
		t.Fatalf("step: %v", err)
	}
	wantErr(t, err, "injected failure in gx_attention")
	t.Setenv("FAKE_GX_FAIL", "")
	if _, err := m.Step([]engine.Seq{{Tokens: []int{1, 2}, Blocks: []int{0}, SlidingBlocks: []int{0}}}); err != nil {
		t.Fatalf("the step after a failure: %v", err)
	}
}

func TestNCCLOneRank(t *testing.T) {
	cfg := testConfig()
	w := engine.DummyWeights(cfg, 3, 0)
	lib := fakeLib(t)
	id, err := lib.NCCLUniqueID()
	if err != nil {
		t.Fatal(err)
	}
	o := testOptions(t)
	o.NCCL = &NCCL{ID: id, Ranks: 1, Rank: 0}
	b := newTestBackend(t, w, o)
	x, _ := b.Tensor(3, 4)
	y, _ := b.Tensor(3, 4)
	src := []float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	if err := b.Write(x, src); err != nil {
		t.Fatal(err)
	}
	// Through the communicator (the fake's one-rank NCCL).
	if err := b.AllReduce(x); err != nil {
		t.Fatal(err)
	}
	if err := b.AllGather(x, y); err != nil {
		t.Fatal(err)
	}
	got := make([]float32, 12)
	if err := b.Read(y, got); err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if got[i] != src[i] {
			t.Fatalf("all-gather of one rank: %v", got)
		}
	}
	// A bad id fails NCCL's init, with its message.
	o.NCCL = &NCCL{ID: make([]byte, NCCLIDBytes), Ranks: 1, Rank: 0}
	_, err = New(w, o)
	wantErr(t, err, "joining NCCL as rank 0 of 1", "not an id of gx_nccl_unique_id")
}

func TestSample(t *testing.T) {
	cfg := testConfig()
	w := engine.DummyWeights(cfg, 3, 0)
	b := newTestBackend(t, w, testOptions(t))
	const V = 10
	logits := []float32{0, 1, 5, 2, 4, -1, 0, 0, 3, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8, 0}
	x, _ := b.Tensor(2, V)
	if err := b.Write(x, logits); err != nil {
		t.Fatal(err)
	}
	res, err := b.Sample(x, []SampleRow{{TopP: 1}, {TopP: 1, FrequencyPenalty: 2, Counts: []TokenCount{{ID: 0, Count: 1}}}}, 3)
	if err != nil {
		t.Fatal(err)
	}
	lse := func(v []float32) float64 {
		var s float64
		for _, x := range v {
			s += math.Exp(float64(x))
		}
		return math.Log(s)
	}
	if res[0].Token != 2 || math.Abs(float64(res[0].Logprob)-(5-lse(logits[:V]))) > 1e-5 {
		t.Fatalf("row 0: %+v", res[0])
	}
	if ids := []int{res[0].Top[0].ID, res[0].Top[1].ID, res[0].Top[2].ID}; ids[0] != 2 || ids[1] != 4 || ids[2] != 8 {
		t.Fatalf("row 0 top %v", res[0].Top)
	}
	// Row 1: token 0 (logit 9) penalised by 2 falls to 7: token 8 wins the
	// draw. Logprobs are of the raw logits (before penalties), so the top
	// list is still 0 (9), 8 (8), 7 (7), and token 8's logprob is 8 - lse.
	raw1 := logits[V:]
	if res[1].Token != 8 || math.Abs(float64(res[1].Logprob)-(8-lse(raw1))) > 1e-5 {
		t.Fatalf("row 1: %+v", res[1])
	}
	if ids := []int{res[1].Top[0].ID, res[1].Top[1].ID, res[1].Top[2].ID}; ids[0] != 0 || ids[1] != 8 || ids[2] != 7 ||
		math.Abs(float64(res[1].Top[0].Logprob)-(9-lse(raw1))) > 1e-5 {
		t.Fatalf("row 1 top %v", res[1].Top)
	}
	_, err = b.Sample(x, []SampleRow{{}}, 0)
	wantErr(t, err, "1 parameter rows for 2 logit rows")
	_, err = b.Sample(x, []SampleRow{{}, {Counts: []TokenCount{{ID: V}}}}, 0)
	wantErr(t, err, "penalised token 10 outside 10")
	_, err = b.Sample(x, []SampleRow{{TopP: 1}, {TopP: 1, Counts: []TokenCount{{ID: 3, Count: 1}, {ID: 3, Count: 2}}}}, 0)
	wantErr(t, err, "penalised token 3 listed twice")
	// TopP has no zero value (worker/sample refuses it too).
	_, err = b.Sample(x, []SampleRow{{TopP: 1}, {}}, 0)
	wantErr(t, err, "row 1: bad parameters")
	// The arena is as it was.
	if b.arena.cur != 0 || b.arena.off != arenaAlign {
		t.Fatalf("arena at %d/%d after sampling", b.arena.cur, b.arena.off)
	}
}

// Rows with a set of allowed tokens draw from it alone, with the
// constrained distribution's logprobs and an allowed-only top list; the
// other rows are untouched; sets of the wrong size are refused before
// anything runs.
func TestSampleAllowed(t *testing.T) {
	cfg := testConfig()
	w := engine.DummyWeights(cfg, 3, 0)
	b := newTestBackend(t, w, testOptions(t))
	const V = 40 // two words, the second partial
	logits := make([]float32, 3*V)
	for i := range logits {
		logits[i] = float32(i%V) / 4
	}
	x, _ := b.Tensor(3, V)
	if err := b.Write(x, logits); err != nil {
		t.Fatal(err)
	}
	cur, off := b.arena.cur, b.arena.off
	lse := func(v ...float32) float64 {
		var s float64
		for _, x := range v {
			s += math.Exp(float64(x))
		}
		return math.Log(s)
	}
	// Row 0: greedy over {1, 3, 35}: 35 (the best overall, 39, is denied).
	// Row 1: no set: 39. Row 2: only 2, at temperature 1: always 2, logprob 0.
	two := []uint32{1<<1 | 1<<3, 1 << 3}
	res, err := b.Sample(x, []SampleRow{{TopP: 1, Allow: two}, {TopP: 1}, {Temperature: 1, TopP: 1, Uniform: 0.9, Allow: []uint32{1 << 2, 0}}}, 4)
	if err != nil {
		t.Fatal(err)
	}
	if r := res[0]; r.Token != 35 || math.Abs(float64(r.Logprob)-(35./4-lse(1./4, 3./4, 35./4))) > 1e-5 ||
		len(r.Top) != 3 || r.Top[0].ID != 35 || r.Top[1].ID != 3 || r.Top[2].ID != 1 {
		t.Fatalf("row 0: %+v", r)
	}
	if r := res[1]; r.Token != 39 || len(r.Top) != 4 || r.Top[3].ID != 36 {
		t.Fatalf("row 1: %+v", r)
	}
	if r := res[2]; r.Token != 2 || r.Logprob != 0 || len(r.Top) != 1 || r.Top[0] != (TokenLogprob{2, 0}) {
		t.Fatalf("row 2: %+v", r)
	}
	// The masked rows were masked in place; the other is as written.
	got := make([]float32, 3*V)
	if err := b.Read(x, got); err != nil {
		t.Fatal(err)
	}
	for i, v := range got {
		row, tok := i/V, i%V
		denied := row == 0 && tok != 1 && tok != 3 && tok != 35 || row == 2 && tok != 2
		if denied != math.IsInf(float64(v), -1) || !denied && v != logits[i] {
			t.Fatalf("row %d token %d: %v after sampling", row, tok, v)
		}
	}
	// Only −Inf left in the set: no token to draw.
	_, err = b.Sample(x, []SampleRow{{TopP: 1}, {TopP: 1}, {TopP: 1, Allow: []uint32{1 << 5, 0}}}, 0)
	wantErr(t, err, "row 2: no allowed token has a finite logit")
	_, err = b.Sample(x, []SampleRow{{TopP: 1}, {TopP: 1, Allow: []uint32{1}}, {TopP: 1}}, 0)
	wantErr(t, err, "row 1: a set of allowed tokens of 1 words for a vocabulary of 40 (2 words)")
	_, err = b.Sample(x, []SampleRow{{TopP: 1, Allow: []uint32{1, 1, 1}}, {TopP: 1}, {TopP: 1}}, 0)
	wantErr(t, err, "row 0: a set of allowed tokens of 3 words")
	_, err = b.Sample(x, []SampleRow{{TopP: 1, Allow: []uint32{}}, {TopP: 1}, {TopP: 1}}, 0)
	wantErr(t, err, "row 0: a set of allowed tokens of 0 words")
	if b.arena.cur != cur || b.arena.off != off {
		t.Fatalf("arena at %d/%d after sampling, was %d/%d", b.arena.cur, b.arena.off, cur, off)
	}
}

func TestClosed(t *testing.T) {
	w := engine.DummyWeights(testConfig(), 3, 0)
	b, err := New(w, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	b.Close() // twice is fine
	if _, err := b.Tensor(1, 1); !errors.Is(err, errClosed) {
		t.Fatalf("tensor after close: %v", err)
	}
	if err := b.Begin(&engine.StepLayout{IDs: []int{1}, Pos: []int{0}, Seq: []int{0}, Tables: [][]int{{0}}}); !errors.Is(err, errClosed) {
		t.Fatalf("begin after close: %v", err)
	}
	if _, err := b.DeviceInfo(); !errors.Is(err, errClosed) {
		t.Fatalf("device info after close: %v", err)
	}
}
