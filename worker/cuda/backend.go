package cuda

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"unsafe"

	"github.com/gptoss/server/shared/model"
	"github.com/gptoss/server/worker/engine"
)

// Backend is engine.Backend on one CUDA device through libgptoss_kernels:
// the weights uploaded once (dense matrices bf16, experts MXFP4, vectors
// fp32), the paged bf16 KV cache, a persistent activation arena (a step
// makes no device allocation once the arena has grown to its size) and the
// step metadata in one fixed device buffer. Ops are enqueued on the
// context's stream; Read waits. A Backend is used by one goroutine at a
// time, as the engine does.
type Backend struct {
	opts Options
	lib  *Lib
	c    *ctx
	w    *engine.Weights
	cfg  model.Config
	part engine.Part

	embed, unembed mat
	norm           uintptr
	layers         []layer
	ropeInv        uintptr
	ropeScale      float32

	pools  pools
	lim    limits
	kc, vc []uintptr // per layer: bf16 [pool blocks + 1 × BlockSize × kvDim]

	metaDev   uintptr // int32 × metaLen(limits)
	gatherDev uintptr // int32 × MaxTokens: GatherRows' rows when not the last-token rows
	idx, wgt  uintptr // router picks [MaxTokens × k]
	ws        uintptr // MoE workspace
	wsBytes   int64

	arena  arena
	allocs []uintptr // every device allocation but the arena's, freed by Close
	mem    MemoryUse
	comm   bool // an NCCL communicator was joined

	// The current step.
	active     bool
	m          meta
	layF, layS attnLayout
	plan       plan

	// CUDA graphs (graph.go).
	mode     mode
	sigs     []opSig // ops recorded by the capture in progress
	replay   *Graph  // the graph being replayed
	sigAt    int     // ops of replay seen (-1 once it diverged)
	launched bool    // the replayed graph was launched
	capture  *Graph  // what the last armed capture produced
	capErr   error   // why it produced nothing
	stepErr  error   // a failure EndStep could not return
	graphs   []*Graph
	inFn     bool // inside Capture(fn)
	closed   bool
}

// mat is a dense weight on the device: bf16 [rows × cols] with row stride
// ld, and its fp32 bias (0 when none).
type mat struct {
	p              uintptr
	rows, cols, ld int
	bias           uintptr
	hasBias        bool
}

// layer is one transformer block's weights on the device.
type layer struct {
	attnNorm, mlpNorm, sinks uintptr
	q, k, v, o, router       mat
	ex                       experts
	sliding                  bool
}

// MemoryUse is the device memory a Backend holds, by purpose.
type MemoryUse struct {
	Weights, KV, Activations, Workspace int64
}

// tensor is an activation matrix in the arena: fp32 [rows × cols].
type tensor struct {
	p          uintptr
	rows, cols int
}

func (t *tensor) Rows() int { return t.rows }
func (t *tensor) Cols() int { return t.cols }

var _ engine.Backend = (*Backend)(nil)

// errClosed is returned by a Backend used after Close.
var errClosed = errors.New("cuda: backend closed")

// New puts w (whole, or one tensor-parallel rank's shard) on the device and
// allocates the KV cache, the arena and the workspaces. With opts.NCCL it
// joins the communicator first (it blocks until every rank has joined).
func New(w *engine.Weights, opts Options) (*Backend, error) {
	o, err := opts.resolve(w)
	if err != nil {
		return nil, err
	}
	lib := o.Lib
	if lib == nil {
		if lib, err = Open(o.LibPath); err != nil {
			return nil, err
		}
	}
	c, err := lib.newCtx(o.Device)
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.Status == StatusCUBLAS && len(lib.Preloaded) == 0 {
			return nil, fmt.Errorf("cuda: device %d: %w (no CUDA libraries were preloaded: %s may name the directories of libcublas.so.13 and libnccl.so.2)",
				o.Device, err, EnvCUDALibs)
		}
		return nil, fmt.Errorf("cuda: device %d: %w", o.Device, err)
	}
	b := &Backend{opts: o, lib: lib, c: c, w: w, cfg: w.Config, part: w.Part}
	if err := b.init(); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func (b *Backend) init() error {
	cfg, o := &b.cfg, &b.opts
	if err := b.uploadWeights(); err != nil {
		return err
	}
	inv, scale := engine.RopeTable(cfg)
	var err error
	if b.ropeInv, err = b.uploadF32(inv, &b.mem.Weights); err != nil {
		return fmt.Errorf("cuda: rope frequencies: %w", err)
	}
	b.ropeScale = scale
	if n := o.NCCL; n != nil {
		if err := b.c.ncclInit(n.ID, n.Ranks, n.Rank); err != nil {
			return fmt.Errorf("cuda: joining NCCL as rank %d of %d: %w", n.Rank, n.Ranks, err)
		}
		b.comm = true
	}

	// Step buffers, sized for the limits.
	b.lim = limits{maxTokens: o.MaxTokens, maxSeqs: o.MaxSeqs, maxBlocks: (o.MaxContext + o.BlockSize - 1) / o.BlockSize,
		vocab: cfg.Vocab}
	if b.metaDev, err = b.alloc(int64(metaLen(o.MaxTokens, o.MaxSeqs, b.lim.maxBlocks))*4, &b.mem.Workspace); err != nil {
		return fmt.Errorf("cuda: step metadata: %w", err)
	}
	if b.gatherDev, err = b.alloc(int64(o.MaxTokens)*4, &b.mem.Workspace); err != nil {
		return err
	}
	k := cfg.ExpertsPerToken
	if b.idx, err = b.alloc(int64(o.MaxTokens*k)*4, &b.mem.Workspace); err != nil {
		return err
	}
	if b.wgt, err = b.alloc(int64(o.MaxTokens*k)*4, &b.mem.Workspace); err != nil {
		return err
	}
	b.wsBytes = b.c.moeWorkspace(o.MaxTokens, k, cfg.Hidden, cfg.Intermediate)
	if b.wsBytes < 0 {
		return fmt.Errorf("cuda: gx_moe_workspace(%d, %d, %d, %d) = %d", o.MaxTokens, k, cfg.Hidden, cfg.Intermediate, b.wsBytes)
	}
	if b.ws, err = b.alloc(b.wsBytes, &b.mem.Workspace); err != nil {
		return fmt.Errorf("cuda: MoE workspace: %w", err)
	}
	// gx_linear converts its input to bf16 in the scratch: the widest
	// input of the largest step, so that it never grows mid-step.
	widest := max(cfg.Hidden, b.part.Heads*cfg.HeadDim)
	if err := b.c.scratchReserve(int64(o.MaxTokens) * int64(widest) * 2); err != nil {
		return err
	}
	// The arena's first chunk holds a step at the limits; a chunk added
	// later (another forward pass's tensors) is at least as large.
	b.arena = arena{grow: func(n int64) (uintptr, error) { return b.c.malloc(n) },
		min: arenaBytes(cfg, b.part, o.MaxTokens, o.MaxSeqs)}
	if _, err := b.arena.alloc(b.arena.min); err != nil {
		return err
	}
	b.arena.reset()
	return b.allocKV()
}

// arenaBytes is what one step of the engine's forward pass takes of the
// arena at the limits: eight [T × ·] activations (forward.go's
// stepTensors), then the gathered rows and the logits (and, in tensor
// parallelism, this rank's slice before the all-gather).
func arenaBytes(c *model.Config, p engine.Part, maxTokens, maxSeqs int) int64 {
	qd, kvd := p.Heads*c.HeadDim, p.KVHeads*c.HeadDim
	perToken := int64(3*c.Hidden+2*qd+2*kvd+c.Experts) * 4
	logits := int64(c.Hidden+c.Vocab) * 4
	if p.TP > 1 {
		logits += int64(p.VocabHi-p.VocabLo) * 4
	}
	return int64(maxTokens)*perToken + int64(maxSeqs)*logits + 16*arenaAlign
}

// allocKV sizes the pools (from free memory when Options.Blocks is 0) and
// allocates them zeroed, one extra scratch block per pool.
func (b *Backend) allocKV() error {
	cfg, o := &b.cfg, &b.opts
	kvDim := b.part.KVHeads * cfg.HeadDim
	free, _, err := b.c.memInfo()
	if err != nil {
		return err
	}
	budget := int64(float64(free) * o.MemoryUtilization)
	full, sliding, err := poolSizes(cfg, kvDim, o.BlockSize, budget, o.Blocks, o.SlidingBlocks, o.MaxSeqs)
	if err != nil {
		return err
	}
	nF, nS := layerCounts(cfg)
	bb := kvBlockBytes(o.BlockSize, kvDim)
	if need := int64(nF)*int64(full+1)*bb + int64(nS)*int64(sliding+1)*bb; need > free {
		return fmt.Errorf("cuda: a KV cache of %d full and %d sliding blocks needs %s, %s of device memory is free",
			full, sliding, gib(need), gib(free))
	}
	b.pools = pools{blockSize: o.BlockSize, blocks: full, sliding: sliding, hasFull: nF > 0, hasSliding: nS > 0,
		window: cfg.SlidingWindow}
	b.kc, b.vc = make([]uintptr, cfg.Layers), make([]uintptr, cfg.Layers)
	for l := range cfg.Layers {
		n := full + 1
		if cfg.Sliding(l) {
			n = sliding + 1
		}
		bytes := int64(n) * bb / 2
		for _, p := range []*uintptr{&b.kc[l], &b.vc[l]} {
			if *p, err = b.alloc(bytes, &b.mem.KV); err != nil {
				return fmt.Errorf("cuda: KV cache of layer %d: %w", l, err)
			}
			// Zeroed: the scratch blocks padding reads must hold finite keys.
			if err := b.c.memset(*p, 0, bytes); err != nil {
				return err
			}
		}
	}
	return b.c.sync()
}

// alloc is a device allocation freed by Close, counted in *use.
func (b *Backend) alloc(bytes int64, use *int64) (uintptr, error) {
	p, err := b.c.malloc(max(bytes, 1))
	if err != nil {
		return 0, err
	}
	b.allocs = append(b.allocs, p)
	*use += bytes
	return p, nil
}

func (b *Backend) uploadRaw(src unsafe.Pointer, bytes int64, use *int64) (uintptr, error) {
	p, err := b.alloc(bytes, use)
	if err != nil {
		return 0, err
	}
	return p, b.c.upload(p, src, bytes)
}

func (b *Backend) uploadF32(v []float32, use *int64) (uintptr, error) {
	if len(v) == 0 {
		return b.alloc(0, use)
	}
	return b.uploadRaw(unsafe.Pointer(&v[0]), int64(len(v))*4, use)
}

func (b *Backend) uploadBytes(v []byte) (uintptr, error) {
	if len(v) == 0 {
		return b.alloc(0, &b.mem.Weights)
	}
	return b.uploadRaw(unsafe.Pointer(&v[0]), int64(len(v)), &b.mem.Weights)
}

// uploadMat puts a dense matrix on the device as compact bf16 (ld = cols):
// a tensor-parallel column slice (Stride > Cols) is compacted on the host
// rather than uploaded with the other ranks' columns; float32 matrices are
// rounded to bf16, the kernels' weight format.
func (b *Backend) uploadMat(m *engine.Mat, bias []float32) (mat, error) {
	out := mat{rows: m.Rows, cols: m.Cols, ld: m.Cols}
	stride := m.Stride
	if stride == 0 {
		stride = m.Cols
	}
	n := m.Rows * m.Cols
	var data []uint16
	switch {
	case m.BF16 != nil && stride == m.Cols:
		if len(m.BF16) < n {
			return out, fmt.Errorf("cuda: a %d × %d matrix of %d values", m.Rows, m.Cols, len(m.BF16))
		}
		data = m.BF16[:n]
	case m.BF16 != nil:
		data = make([]uint16, n)
		for r := range m.Rows {
			copy(data[r*m.Cols:(r+1)*m.Cols], m.BF16[r*stride:r*stride+m.Cols])
		}
	case m.F32 != nil:
		data = make([]uint16, n)
		for r := range m.Rows {
			for i, f := range m.F32[r*stride : r*stride+m.Cols] {
				data[r*m.Cols+i] = engine.ToBF16(f)
			}
		}
	default:
		return out, fmt.Errorf("cuda: a %d × %d matrix without data", m.Rows, m.Cols)
	}
	var err error
	if n == 0 {
		out.p, err = b.alloc(0, &b.mem.Weights)
	} else {
		out.p, err = b.uploadRaw(unsafe.Pointer(&data[0]), int64(n)*2, &b.mem.Weights)
	}
	if err != nil {
		return out, err
	}
	if bias != nil {
		if len(bias) != m.Rows {
			return out, fmt.Errorf("cuda: a bias of %d for %d rows", len(bias), m.Rows)
		}
		out.hasBias = true
		out.bias, err = b.uploadF32(bias, &b.mem.Weights)
	}
	return out, err
}

func (b *Backend) uploadWeights() error {
	w, cfg, p := b.w, &b.cfg, &b.part
	if len(w.Layers) != cfg.Layers {
		return fmt.Errorf("cuda: %d layers of weights for a %d-layer model", len(w.Layers), cfg.Layers)
	}
	var err error
	if w.Embed.Rows != cfg.Vocab || w.Embed.Cols != cfg.Hidden {
		return fmt.Errorf("cuda: embedding %d × %d, want %d × %d", w.Embed.Rows, w.Embed.Cols, cfg.Vocab, cfg.Hidden)
	}
	if b.embed, err = b.uploadMat(&w.Embed, nil); err != nil {
		return fmt.Errorf("cuda: embedding: %w", err)
	}
	if b.unembed, err = b.uploadMat(&w.Unembed, nil); err != nil {
		return fmt.Errorf("cuda: unembedding: %w", err)
	}
	if b.norm, err = b.uploadF32(w.Norm, &b.mem.Weights); err != nil {
		return fmt.Errorf("cuda: final norm: %w", err)
	}
	ne := p.ExpertHi - p.ExpertLo
	for l := range w.Layers {
		L := &w.Layers[l]
		d := layer{sliding: cfg.Sliding(l)}
		if L.GateUp.Experts != ne || L.Down.Experts != ne || L.GateUp.Rows != 2*cfg.Intermediate ||
			L.GateUp.Cols != cfg.Hidden || L.Down.Rows != cfg.Hidden || L.Down.Cols != cfg.Intermediate {
			return fmt.Errorf("cuda: layer %d: experts %d×%d×%d and %d×%d×%d, want %d local experts of %d×%d and %d×%d",
				l, L.GateUp.Experts, L.GateUp.Rows, L.GateUp.Cols, L.Down.Experts, L.Down.Rows, L.Down.Cols,
				ne, 2*cfg.Intermediate, cfg.Hidden, cfg.Hidden, cfg.Intermediate)
		}
		if len(L.Sinks) != p.Heads {
			return fmt.Errorf("cuda: layer %d: %d sinks for %d heads", l, len(L.Sinks), p.Heads)
		}
		steps := []struct {
			what string
			f    func() error
		}{
			{"attention norm", func() (e error) { d.attnNorm, e = b.uploadF32(L.AttnNorm, &b.mem.Weights); return }},
			{"mlp norm", func() (e error) { d.mlpNorm, e = b.uploadF32(L.MLPNorm, &b.mem.Weights); return }},
			{"sinks", func() (e error) { d.sinks, e = b.uploadF32(L.Sinks, &b.mem.Weights); return }},
			{"q_proj", func() (e error) { d.q, e = b.uploadMat(&L.Q, L.QB); return }},
			{"k_proj", func() (e error) { d.k, e = b.uploadMat(&L.K, L.KB); return }},
			{"v_proj", func() (e error) { d.v, e = b.uploadMat(&L.V, L.VB); return }},
			{"o_proj", func() (e error) { d.o, e = b.uploadMat(&L.O, L.OB); return }},
			{"router", func() (e error) { d.router, e = b.uploadMat(&L.Router, L.RouterB); return }},
			{"gate_up blocks", func() (e error) { d.ex.guBlocks, e = b.uploadBytes(L.GateUp.Blocks); return }},
			{"gate_up scales", func() (e error) { d.ex.guScales, e = b.uploadBytes(L.GateUp.Scales); return }},
			{"gate_up bias", func() (e error) { d.ex.guBias, e = b.uploadF32(L.GateUpB, &b.mem.Weights); return }},
			{"down blocks", func() (e error) { d.ex.dnBlocks, e = b.uploadBytes(L.Down.Blocks); return }},
			{"down scales", func() (e error) { d.ex.dnScales, e = b.uploadBytes(L.Down.Scales); return }},
			{"down bias", func() (e error) { d.ex.dnBias, e = b.uploadF32(L.DownB, &b.mem.Weights); return }},
		}
		for _, s := range steps {
			if err := s.f(); err != nil {
				return fmt.Errorf("cuda: layer %d %s: %w", l, s.what, err)
			}
		}
		d.ex.n, d.ex.lo, d.ex.H, d.ex.I, d.ex.limit = ne, p.ExpertLo, cfg.Hidden, cfg.Intermediate, float32(cfg.SwigluLimit)
		b.layers = append(b.layers, d)
	}
	return nil
}

// Close frees the device memory, the graphs and the context. The library
// stays loaded.
func (b *Backend) Close() {
	if b == nil || b.closed || b.c == nil {
		return
	}
	b.closed = true
	if b.mode == capturing {
		b.abortCapture()
	}
	_ = b.c.sync()
	for _, g := range b.graphs {
		b.c.graphDestroy(g.g)
		g.g = nil
	}
	b.graphs = nil
	for _, p := range b.allocs {
		_ = b.c.free(p)
	}
	for _, ch := range b.arena.chunks {
		_ = b.c.free(ch.p)
	}
	b.allocs, b.arena.chunks = nil, nil
	b.c.destroy()
}

// Name implements engine.Backend.
func (b *Backend) Name() string { return "cuda" }

// Weights implements engine.Backend.
func (b *Backend) Weights() *engine.Weights { return b.w }

// Geometry implements engine.Backend: the usable pools (each has one more
// block, the padding's scratch block, that is never handed out).
func (b *Backend) Geometry() engine.KVGeometry {
	return engine.KVGeometry{BlockSize: b.pools.blockSize, Blocks: b.pools.blocks, SlidingBlocks: b.pools.sliding}
}

// Memory reports the device memory held, by purpose.
func (b *Backend) Memory() MemoryUse {
	m := b.mem
	m.Activations = b.arena.size()
	return m
}

// DeviceInfo describes the device of a Backend.
type DeviceInfo struct {
	Name                  string
	Major, Minor          int // compute capability
	SMs                   int
	FreeBytes, TotalBytes int64
}

// DeviceInfo describes the backend's device now.
func (b *Backend) DeviceInfo() (DeviceInfo, error) {
	var d DeviceInfo
	if b.closed {
		return d, errClosed
	}
	var err error
	if d.Name, d.Major, d.Minor, d.SMs, err = b.c.deviceInfo(); err != nil {
		return d, err
	}
	d.FreeBytes, d.TotalBytes, err = b.c.memInfo()
	return d, err
}

// CopyBandwidth times iters device-to-device copies of bytes and returns
// GB/s counting the bytes read plus the bytes written (the yardstick of
// performance.md's roofline). It allocates and frees its two buffers.
func (b *Backend) CopyBandwidth(bytes int64, iters int) (float64, error) {
	if bytes <= 0 || iters <= 0 {
		return 0, fmt.Errorf("cuda: copy bandwidth of %d bytes × %d", bytes, iters)
	}
	if b.closed {
		return 0, errClosed
	}
	if b.mode != eager {
		return 0, errors.New("cuda: copy bandwidth during a CUDA graph step")
	}
	src, err := b.c.malloc(bytes)
	if err != nil {
		return 0, err
	}
	defer func() { _ = b.c.free(src) }()
	dst, err := b.c.malloc(bytes)
	if err != nil {
		return 0, err
	}
	defer func() { _ = b.c.free(dst) }()
	if err := b.c.memset(src, 1, bytes); err != nil {
		return 0, err
	}
	ms, err := b.c.copyBench(dst, src, bytes, iters)
	if err != nil {
		return 0, err
	}
	if ms <= 0 {
		return 0, fmt.Errorf("cuda: copy bench took %g ms", ms)
	}
	return 2 * float64(bytes) * float64(iters) / (float64(ms) / 1e3) / 1e9, nil
}

// ---- tensors and the step ----------------------------------------------------

// Tensor implements engine.Backend: a piece of the arena, valid until
// EndStep. The same sequence of requests in two steps gets the same
// addresses.
func (b *Backend) Tensor(rows, cols int) (engine.Tensor, error) {
	if rows < 0 || cols < 0 {
		return nil, fmt.Errorf("cuda: a %d × %d tensor", rows, cols)
	}
	if b.closed {
		return nil, errClosed
	}
	b.arena.frozen = b.mode != eager
	p, err := b.arena.alloc(int64(rows) * int64(cols) * 4)
	if err != nil {
		return nil, err
	}
	return &tensor{p: p, rows: rows, cols: cols}, nil
}

func asTensor(t engine.Tensor) (*tensor, error) {
	x, ok := t.(*tensor)
	if !ok || x == nil {
		return nil, fmt.Errorf("cuda: a %T is not a CUDA tensor", t)
	}
	return x, nil
}

// tensors unwraps several tensors.
func tensors(ts ...engine.Tensor) ([]*tensor, error) {
	out := make([]*tensor, len(ts))
	for i, t := range ts {
		var err error
		if out[i], err = asTensor(t); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func shape(t *tensor, rows, cols int, what string) error {
	if t.rows != rows || t.cols != cols {
		return fmt.Errorf("cuda: %s is %d × %d, want %d × %d", what, t.rows, t.cols, rows, cols)
	}
	return nil
}

// Read implements engine.Backend: it waits for the ops that produce t. In
// a replayed graph step it launches the graph first.
func (b *Backend) Read(t engine.Tensor, dst []float32) error {
	x, err := asTensor(t)
	if err != nil {
		return err
	}
	if len(dst) != x.rows*x.cols {
		return fmt.Errorf("cuda: reading a %d × %d tensor into %d values", x.rows, x.cols, len(dst))
	}
	if err := b.graphRead(); err != nil {
		return err
	}
	if len(dst) == 0 {
		return nil
	}
	return b.c.download(unsafe.Pointer(&dst[0]), x.p, int64(len(dst))*4)
}

// Write implements engine.Backend.
func (b *Backend) Write(t engine.Tensor, src []float32) error {
	x, err := asTensor(t)
	if err != nil {
		return err
	}
	if len(src) != x.rows*x.cols {
		return fmt.Errorf("cuda: writing %d values into a %d × %d tensor", len(src), x.rows, x.cols)
	}
	if b.mode != eager {
		return errors.New("cuda: Write inside a CUDA graph step (a host copy cannot be captured)")
	}
	if len(src) == 0 {
		return nil
	}
	return b.c.upload(x.p, unsafe.Pointer(&src[0]), int64(len(src))*4)
}

// Begin implements engine.Backend: it builds the step's metadata on the
// host and uploads it into the fixed metadata buffer (before any graph
// capture starts: an upload cannot be captured).
func (b *Backend) Begin(lay *engine.StepLayout) error {
	if b.closed {
		return errClosed
	}
	if b.active {
		b.EndStep() // a step that failed without ending
	}
	b.stepErr = nil
	if err := b.m.build(lay, b.pools, b.plan, b.lim); err != nil {
		b.disarm(err)
		return err
	}
	m := &b.m
	if err := b.c.upload(b.metaDev, unsafe.Pointer(&m.host[0]), int64(len(m.host))*4); err != nil {
		b.disarm(err)
		return err
	}
	at := func(off int) uintptr { return b.metaDev + uintptr(off)*4 }
	b.layF = attnLayout{seq: at(m.seq), pos: at(m.pos), tables: at(m.tabF), T: m.T, nSeqs: m.S, maxBlocks: m.maxBlocks,
		maxPos: m.maxPos, blockSize: b.pools.blockSize}
	b.layS = b.layF
	b.layS.tables = at(m.tabS)
	b.active = true
	return b.graphBegin()
}

// EndStep implements engine.Backend: the step's tensors are released (the
// arena rewinds). A replayed graph step that was never read is launched
// here, so that its KV writes happen.
func (b *Backend) EndStep() {
	b.graphEnd()
	b.active = false
	b.arena.reset()
}

func (b *Backend) needStep(op string) error {
	if !b.active {
		return fmt.Errorf("cuda: %s outside a step (call Begin)", op)
	}
	return nil
}

// ---- weights by Param -----------------------------------------------------------

func (b *Backend) layer(l int) (*layer, error) {
	if l < 0 || l >= len(b.layers) {
		return nil, fmt.Errorf("cuda: layer %d of %d", l, len(b.layers))
	}
	return &b.layers[l], nil
}

// vector resolves a norm gain.
func (b *Backend) vector(p engine.Param) (uintptr, error) {
	switch {
	case p.Layer == -1 && p.Name == engine.ParamNorm:
		return b.norm, nil
	case p.Layer >= 0 && p.Layer < len(b.layers) && p.Name == engine.ParamAttnNorm:
		return b.layers[p.Layer].attnNorm, nil
	case p.Layer >= 0 && p.Layer < len(b.layers) && p.Name == engine.ParamMLPNorm:
		return b.layers[p.Layer].mlpNorm, nil
	}
	return 0, fmt.Errorf("cuda: param %+v is not a norm gain", p)
}

// dense resolves a dense weight.
func (b *Backend) dense(p engine.Param) (*mat, error) {
	if p.Layer == -1 && p.Name == engine.ParamUnembed {
		return &b.unembed, nil
	}
	if p.Layer >= 0 && p.Layer < len(b.layers) {
		L := &b.layers[p.Layer]
		switch p.Name {
		case engine.ParamQ:
			return &L.q, nil
		case engine.ParamK:
			return &L.k, nil
		case engine.ParamV:
			return &L.v, nil
		case engine.ParamO:
			return &L.o, nil
		case engine.ParamRouter:
			return &L.router, nil
		}
	}
	return nil, fmt.Errorf("cuda: param %+v is not a dense weight", p)
}

// ---- ops ------------------------------------------------------------------------

// Embed implements engine.Backend.
func (b *Backend) Embed(x engine.Tensor) error {
	xt, err := asTensor(x)
	if err == nil {
		err = b.needStep("embed")
	}
	if err == nil {
		err = shape(xt, b.m.T, b.cfg.Hidden, "embed output")
	}
	if err != nil {
		return err
	}
	if run, err := b.op(opSig{kind: opEmbed, a: xt.p}); !run {
		return err
	}
	return b.c.embed(b.embed.p, b.metaDev+uintptr(b.m.ids)*4, b.m.T, b.cfg.Hidden, xt.p)
}

// RMSNorm implements engine.Backend.
func (b *Backend) RMSNorm(x engine.Tensor, gain engine.Param, out engine.Tensor) error {
	ts, err := tensors(x, out)
	var g uintptr
	if err == nil {
		g, err = b.vector(gain)
	}
	if err == nil {
		err = shape(ts[1], ts[0].rows, ts[0].cols, "rms norm output")
	}
	if err == nil && ts[0].cols != b.cfg.Hidden {
		err = fmt.Errorf("cuda: rms norm over %d columns, the gains have %d", ts[0].cols, b.cfg.Hidden)
	}
	if err != nil {
		return err
	}
	if run, err := b.op(opSig{kind: opRMSNorm, layer: int32(gain.Layer), a: ts[0].p, b: ts[1].p, c: g}); !run {
		return err
	}
	return b.c.rmsnorm(ts[0].p, g, ts[0].rows, ts[0].cols, float32(b.cfg.RMSNormEps), ts[1].p)
}

// AddRMSNorm implements engine.Backend.
func (b *Backend) AddRMSNorm(x, delta engine.Tensor, bias engine.Param, gain engine.Param, out engine.Tensor) error {
	ts, err := tensors(x, delta, out)
	var g, bp uintptr
	if err == nil {
		g, err = b.vector(gain)
	}
	if err == nil && ts[0].cols != b.cfg.Hidden {
		err = fmt.Errorf("cuda: add rms norm over %d columns, the gains have %d", ts[0].cols, b.cfg.Hidden)
	}
	if err == nil {
		err = shape(ts[1], ts[0].rows, ts[0].cols, "add rms norm delta")
	}
	if err == nil {
		err = shape(ts[2], ts[0].rows, ts[0].cols, "add rms norm output")
	}
	if err == nil && bias != engine.NoBias() {
		var m *mat
		if m, err = b.dense(bias); err == nil && (!m.hasBias || m.rows != ts[0].cols) {
			err = fmt.Errorf("cuda: param %+v has no bias of %d", bias, ts[0].cols)
		}
		if err == nil {
			bp = m.bias
		}
	}
	if err != nil {
		return err
	}
	if run, err := b.op(opSig{kind: opAddRMSNorm, layer: int32(gain.Layer), a: ts[0].p, b: ts[1].p, c: ts[2].p}); !run {
		return err
	}
	return b.c.addRMSNorm(ts[0].p, ts[1].p, bp, g, ts[0].rows, ts[0].cols, float32(b.cfg.RMSNormEps), ts[2].p)
}

// Linear implements engine.Backend.
func (b *Backend) Linear(w engine.Param, in engine.Tensor, withBias bool, out engine.Tensor) error {
	ts, err := tensors(in, out)
	var m *mat
	if err == nil {
		m, err = b.dense(w)
	}
	if err == nil {
		err = shape(ts[0], ts[0].rows, m.cols, "linear input")
	}
	if err == nil {
		err = shape(ts[1], ts[0].rows, m.rows, "linear output")
	}
	if err == nil && withBias && !m.hasBias {
		err = fmt.Errorf("cuda: param %+v has no bias", w)
	}
	if err != nil {
		return err
	}
	var bias uintptr
	if withBias {
		bias = m.bias
	}
	if run, err := b.op(opSig{kind: opLinear, layer: int32(w.Layer), a: ts[0].p, b: ts[1].p, c: m.p, d: bias}); !run {
		return err
	}
	if ts[0].rows == 0 {
		return nil
	}
	return b.c.linear(ts[0].p, m.p, m.ld, bias, ts[0].rows, m.rows, m.cols, ts[1].p)
}

// Rope implements engine.Backend.
func (b *Backend) Rope(q, k engine.Tensor) error {
	ts, err := tensors(q, k)
	D := b.cfg.HeadDim
	if err == nil {
		err = b.needStep("rope")
	}
	if err == nil {
		err = shape(ts[0], b.m.T, b.part.Heads*D, "rope q")
	}
	if err == nil {
		err = shape(ts[1], b.m.T, b.part.KVHeads*D, "rope k")
	}
	if err != nil {
		return err
	}
	if run, err := b.op(opSig{kind: opRope, a: ts[0].p, b: ts[1].p}); !run {
		return err
	}
	return b.c.rope(ts[0].p, ts[1].p, b.metaDev+uintptr(b.m.pos)*4, b.ropeInv, b.ropeScale, b.m.T,
		b.part.Heads, b.part.KVHeads, D)
}

// WriteKV implements engine.Backend: each token's row goes to its slot in
// the layer's pool (computed on the host by Begin); padding writes nothing.
func (b *Backend) WriteKV(l int, k, v engine.Tensor) error {
	ts, err := tensors(k, v)
	kvd := b.part.KVHeads * b.cfg.HeadDim
	var L *layer
	if err == nil {
		err = b.needStep("write kv")
	}
	if err == nil {
		L, err = b.layer(l)
	}
	if err == nil {
		err = shape(ts[0], b.m.T, kvd, "kv write k")
	}
	if err == nil {
		err = shape(ts[1], b.m.T, kvd, "kv write v")
	}
	if err != nil {
		return err
	}
	slots := b.m.slotF
	if L.sliding {
		slots = b.m.slotS
	}
	if run, err := b.op(opSig{kind: opWriteKV, layer: int32(l), a: ts[0].p, b: ts[1].p}); !run {
		return err
	}
	return b.c.kvWrite(ts[0].p, ts[1].p, b.metaDev+uintptr(slots)*4, b.m.T, kvd, b.kc[l], b.vc[l])
}

// Attention implements engine.Backend: window SlidingWindow on the layers
// that slide (0, all positions, on the others), scale 1/√D, this rank's
// sinks.
func (b *Backend) Attention(l int, q, out engine.Tensor) error {
	ts, err := tensors(q, out)
	D := b.cfg.HeadDim
	qd := b.part.Heads * D
	var L *layer
	if err == nil {
		err = b.needStep("attention")
	}
	if err == nil {
		L, err = b.layer(l)
	}
	if err == nil {
		err = shape(ts[0], b.m.T, qd, "attention q")
	}
	if err == nil {
		err = shape(ts[1], b.m.T, qd, "attention output")
	}
	if err != nil {
		return err
	}
	lay, window := &b.layF, 0
	if L.sliding {
		lay, window = &b.layS, b.cfg.SlidingWindow
	}
	if run, err := b.op(opSig{kind: opAttention, layer: int32(l), a: ts[0].p, b: ts[1].p}); !run {
		return err
	}
	scale := float32(1 / math.Sqrt(float64(D)))
	return b.c.attention(lay, ts[0].p, b.kc[l], b.vc[l], L.sinks, b.part.Heads, b.part.KVHeads, D, window, scale, ts[1].p)
}

// MoE implements engine.Backend: top-k routing on the device, then this
// rank's experts.
func (b *Backend) MoE(l int, h, routerLogits, out engine.Tensor) error {
	ts, err := tensors(h, routerLogits, out)
	var L *layer
	if err == nil {
		L, err = b.layer(l)
	}
	T := 0
	if err == nil {
		T = ts[0].rows
		err = shape(ts[0], T, b.cfg.Hidden, "moe input")
	}
	if err == nil {
		err = shape(ts[1], T, b.cfg.Experts, "router logits")
	}
	if err == nil {
		err = shape(ts[2], T, b.cfg.Hidden, "moe output")
	}
	if err == nil && T > b.opts.MaxTokens {
		err = fmt.Errorf("cuda: moe over %d tokens, the workspace is sized for %d", T, b.opts.MaxTokens)
	}
	if err != nil {
		return err
	}
	if run, err := b.op(opSig{kind: opMoE, layer: int32(l), a: ts[0].p, b: ts[1].p, c: ts[2].p}); !run {
		return err
	}
	if T == 0 {
		return nil
	}
	k := b.cfg.ExpertsPerToken
	if err := b.c.routerTopK(ts[1].p, T, b.cfg.Experts, k, b.idx, b.wgt); err != nil {
		return err
	}
	return b.c.moe(&L.ex, ts[0].p, b.idx, b.wgt, T, k, b.ws, b.wsBytes, ts[2].p)
}

// GatherRows implements engine.Backend. The step's last-token rows (what
// the forward pass gathers for the logits) are already on the device from
// Begin; other rows are uploaded, which a graph step cannot do.
func (b *Backend) GatherRows(x engine.Tensor, rows []int, out engine.Tensor) error {
	ts, err := tensors(x, out)
	if err == nil {
		err = shape(ts[1], len(rows), ts[0].cols, "gathered rows")
	}
	if err != nil {
		return err
	}
	for _, r := range rows {
		if r < 0 || r >= ts[0].rows {
			return fmt.Errorf("cuda: gather rows: row %d of %d", r, ts[0].rows)
		}
	}
	if len(rows) > b.opts.MaxTokens {
		return fmt.Errorf("cuda: gathering %d rows, at most %d", len(rows), b.opts.MaxTokens)
	}
	dev := b.gatherDev
	switch {
	case b.active && b.m.isLastRows(rows):
		dev = b.metaDev + uintptr(b.m.rows)*4
	case b.mode != eager:
		return errors.New("cuda: gathering rows other than the last tokens' in a CUDA graph step")
	case len(rows) > 0:
		host := make([]int32, len(rows))
		for i, r := range rows {
			host[i] = int32(r)
		}
		if err := b.c.upload(dev, unsafe.Pointer(&host[0]), int64(len(host))*4); err != nil {
			return err
		}
	}
	if run, err := b.op(opSig{kind: opGather, a: ts[0].p, b: ts[1].p, c: dev}); !run {
		return err
	}
	if len(rows) == 0 {
		return nil
	}
	return b.c.gatherRows(ts[0].p, dev, len(rows), ts[0].cols, ts[1].p)
}

// AllReduce implements engine.Backend: NCCL when a communicator was
// joined, nothing when the model is whole without one.
func (b *Backend) AllReduce(t engine.Tensor) error {
	x, err := asTensor(t)
	if err != nil {
		return err
	}
	if !b.comm {
		if b.part.TP > 1 {
			return fmt.Errorf("cuda: all-reduce: rank %d of %d has no communicator", b.part.Rank, b.part.TP)
		}
		return nil
	}
	if run, err := b.op(opSig{kind: opAllReduce, a: x.p}); !run {
		return err
	}
	return b.c.allReduce(x.p, int64(x.rows)*int64(x.cols))
}

// AllGather implements engine.Backend.
func (b *Backend) AllGather(local, out engine.Tensor) error {
	ts, err := tensors(local, out)
	tp := max(b.part.TP, 1)
	if err == nil {
		err = shape(ts[1], tp*ts[0].rows, ts[0].cols, "all-gather output")
	}
	if err != nil {
		return err
	}
	if run, err := b.op(opSig{kind: opAllGather, a: ts[0].p, b: ts[1].p}); !run {
		return err
	}
	n := int64(ts[0].rows) * int64(ts[0].cols)
	switch {
	case b.comm:
		return b.c.allGather(ts[0].p, ts[1].p, n)
	case tp > 1:
		return fmt.Errorf("cuda: all-gather: rank %d of %d has no communicator", b.part.Rank, tp)
	}
	return b.c.copy(ts[1].p, ts[0].p, n*4)
}

// lockThread pins the goroutine to its OS thread for a graph capture: CUDA
// ends a thread-local capture only on the thread that began it.
func lockThread()   { runtime.LockOSThread() }
func unlockThread() { runtime.UnlockOSThread() }
