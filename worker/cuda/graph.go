package cuda

import (
	"errors"
	"fmt"
	"slices"

	"github.com/gptoss/server/worker/engine"
)

// CUDA graphs for decode steps.
//
// A decode step of a 20b model is ~700 small kernel launches whose launch
// overhead is a visible part of the step at small batches; replaying a
// captured graph launches them at once. The engine's forward pass knows
// nothing of graphs: the Backend has modes, and GraphModel drives them
// around engine.Model.Step:
//
//   - eager: ops are enqueued as they come.
//   - armed → capturing: the next Begin uploads the step's metadata, then
//     starts a capture; ops are recorded (not run) and their signatures
//     (kind, layer, tensor and weight addresses) kept; the first Read ends
//     the capture and returns errCaptured (nothing ran, nothing to read).
//   - replaying: Begin uploads the new step's metadata into the same fixed
//     buffer; ops are not enqueued but checked against the capture's
//     signatures (the arena hands out the same addresses for the same
//     sequence of tensors); the first Read launches the graph and reads.
//
// A step may replay a graph only if its layout has the same shape: the
// same tokens, sequences and table width. GraphModel pads a decode batch
// to a bucket size with padding sequences (no KV write, the scratch block
// for reads) and fixes the table width (and max_pos) to a power-of-two
// context bucket.

// mode is the Backend's graph state.
type mode int

const (
	eager mode = iota
	armed
	capturing
	replaying
)

// opKind names an op in a signature.
type opKind uint8

const (
	opEmbed opKind = iota + 1
	opRMSNorm
	opAddRMSNorm
	opLinear
	opRope
	opWriteKV
	opAttention
	opMoE
	opGather
	opAllReduce
	opAllGather
)

// opSig identifies one op call: what a replay must repeat exactly.
type opSig struct {
	kind       opKind
	layer      int32
	a, b, c, d uintptr
}

// errCaptured is what Read returns when it ends an armed capture: the
// step was recorded, not run.
var errCaptured = errors.New("cuda: step captured into a CUDA graph, not run")

// errDiverged marks a replay whose ops differ from its capture's.
var errDiverged = errors.New("cuda: the step's ops differ from the captured graph's")

// Graph is an instantiated CUDA graph of a Backend's ops.
type Graph struct {
	b    *Backend
	g    *graph
	sigs []opSig
	// The layout shape the graph reads (0 for Capture of a bare op list).
	T, S, maxBlocks int
}

// Close destroys the graph (Backend.Close destroys those left).
func (g *Graph) Close() {
	if g == nil || g.g == nil {
		return
	}
	b := g.b
	b.c.graphDestroy(g.g)
	g.g = nil
	b.graphs = slices.DeleteFunc(b.graphs, func(x *Graph) bool { return x == g })
}

// op records, checks or lets through one op, by mode: it reports whether
// the op is to be enqueued now.
func (b *Backend) op(s opSig) (bool, error) {
	switch b.mode {
	case capturing:
		b.sigs = append(b.sigs, s)
	case replaying:
		g := b.replay
		if b.sigAt >= 0 && b.sigAt < len(g.sigs) && g.sigs[b.sigAt] == s {
			b.sigAt++
			return false, nil
		}
		if b.sigAt >= 0 {
			b.stepErr = fmt.Errorf("%w (op %d of %d)", errDiverged, b.sigAt, len(g.sigs))
			b.sigAt = -1 // every later op fails too
		}
		return false, b.stepErr
	}
	return true, nil
}

// graphBegin runs at the end of Begin: it starts an armed capture, or
// checks that the step can replay the graph.
func (b *Backend) graphBegin() error {
	switch b.mode {
	case armed:
		lockThread()
		if err := b.c.graphBegin(); err != nil {
			unlockThread()
			b.mode, b.capErr = eager, err
			return err
		}
		b.mode = capturing
		b.sigs = b.sigs[:0]
	case replaying:
		g := b.replay
		if g.T != b.m.T || g.S != b.m.S || g.maxBlocks != b.m.maxBlocks {
			b.stepErr = fmt.Errorf("cuda: a step of %d tokens, %d sequences, tables %d wide cannot replay a graph of %d, %d, %d",
				b.m.T, b.m.S, b.m.maxBlocks, g.T, g.S, g.maxBlocks)
			b.mode = eager
			return b.stepErr
		}
		b.sigAt = 0
	}
	return nil
}

// endCapture ends the capture in progress and keeps the graph.
func (b *Backend) endCapture() (*Graph, error) {
	g, err := b.c.graphEnd()
	unlockThread()
	b.mode = eager
	if err != nil {
		return nil, err
	}
	gr := &Graph{b: b, g: g, sigs: slices.Clone(b.sigs)}
	if b.active {
		gr.T, gr.S, gr.maxBlocks = b.m.T, b.m.S, b.m.maxBlocks
	}
	b.graphs = append(b.graphs, gr)
	return gr, nil
}

// abortCapture ends a capture whose graph is not wanted.
func (b *Backend) abortCapture() {
	if g, err := b.c.graphEnd(); err == nil {
		b.c.graphDestroy(g)
	}
	unlockThread()
	b.mode = eager
}

// graphRead runs in Read before the copy.
func (b *Backend) graphRead() error {
	switch b.mode {
	case capturing:
		if b.inFn {
			return errors.New("cuda: Read inside Capture")
		}
		g, err := b.endCapture()
		if err != nil {
			b.capErr = err
			return err
		}
		b.capture = g
		return errCaptured
	case replaying:
		return b.launchReplay()
	}
	return nil
}

// launchReplay launches the replayed graph once every op of the capture
// has been seen, and goes back to eager for the rest of the step.
func (b *Backend) launchReplay() error {
	g := b.replay
	b.mode = eager
	if b.sigAt != len(g.sigs) {
		if b.stepErr == nil {
			b.stepErr = fmt.Errorf("%w (%d of its %d ops)", errDiverged, max(b.sigAt, 0), len(g.sigs))
		}
		return b.stepErr
	}
	b.launched = true
	if err := b.c.graphLaunch(g.g); err != nil {
		b.stepErr = err
		return err
	}
	return nil
}

// graphEnd runs in EndStep.
func (b *Backend) graphEnd() {
	switch b.mode {
	case capturing:
		if b.inFn {
			return // Capture ends it
		}
		b.abortCapture()
		if b.capErr == nil {
			b.capErr = errors.New("cuda: the captured step ended without reading its output")
		}
	case replaying:
		_ = b.launchReplay() // its error is in stepErr
	case armed:
		// Begin never came (the step failed before it).
		b.mode = eager
	}
}

// disarm drops an armed or replaying mode when Begin fails.
func (b *Backend) disarm(err error) {
	switch b.mode {
	case armed:
		b.capErr = err
	case replaying:
		b.stepErr = err
	}
	b.mode = eager
}

// Capture records the ops fn enqueues into a graph instead of running
// them; fn must not Begin, Read, Write or gather rows other than the last
// tokens'. The current step's metadata addresses are captured: replay the
// graph after a Begin of the same shape.
func (b *Backend) Capture(fn func() error) (*Graph, error) {
	if b.mode != eager {
		return nil, errors.New("cuda: Capture during another graph step")
	}
	lockThread()
	if err := b.c.graphBegin(); err != nil {
		unlockThread()
		return nil, err
	}
	b.mode, b.inFn = capturing, true
	b.sigs = b.sigs[:0]
	err := fn()
	b.inFn = false
	g, endErr := b.endCapture()
	if err != nil || endErr != nil {
		g.Close()
		return nil, errors.Join(err, endErr)
	}
	return g, nil
}

// Replay launches a graph made by Capture on the backend's stream.
func (b *Backend) Replay(g *Graph) error {
	if g == nil || g.g == nil || g.b != b {
		return errors.New("cuda: replaying a closed graph or another backend's")
	}
	if b.mode != eager {
		return errors.New("cuda: Replay during another graph step")
	}
	return b.c.graphLaunch(g.g)
}

// Stepper runs forward steps: engine.Model.
type Stepper interface {
	Step(seqs []engine.Seq) ([][][]float32, error)
}

// DefaultBuckets are the decode batch sizes GraphModel captures graphs
// for; a batch is padded up to the next one.
var DefaultBuckets = []int{1, 2, 4, 8, 16, 32, 64}

// minCtxBlocks is the smallest context bucket (in blocks).
const minCtxBlocks = 16

// graphKey is what a graph is captured for: the padded batch and the
// table width (context bucket, in blocks).
type graphKey struct{ batch, ctx int }

// GraphModel runs a model on a Backend, replaying CUDA graphs for decode
// steps (every sequence one token, last-position logits) when the backend
// was made with Options.Graphs, and eagerly otherwise. A graph is captured
// the first time a (batch bucket, context bucket) appears, after an eager
// warm-up run of the same step in the graph's layout that produces the
// step's logits and grows the arena and the kernels' scratch to what the
// capture needs.
type GraphModel struct {
	b       *Backend
	m       Stepper
	buckets []int
	graphs  map[graphKey]*Graph
	failed  map[graphKey]error
	stats   GraphStats
	padded  []engine.Seq
	dummy   []int
}

// GraphStats counts how GraphModel ran its steps.
type GraphStats struct {
	Eager, Captured, Replayed int
	// Fallbacks are replays abandoned before launch (their graph dropped,
	// the step run eagerly).
	Fallbacks int
	// Graphs is the number of graphs held; Failed the buckets whose capture
	// failed (they run eagerly).
	Graphs, Failed int
}

// NewModel makes the engine's model on b and wraps it in a GraphModel.
func NewModel(b *Backend) (*GraphModel, error) {
	m, err := engine.NewModelOn(b)
	if err != nil {
		return nil, err
	}
	return NewGraphModel(b, m), nil
}

// NewGraphModel wraps m, a model running on b.
func NewGraphModel(b *Backend, m Stepper) *GraphModel {
	return &GraphModel{b: b, m: m, buckets: DefaultBuckets, graphs: map[graphKey]*Graph{}, failed: map[graphKey]error{},
		dummy: []int{0}}
}

// Backend is the backend the model runs on.
func (g *GraphModel) Backend() *Backend { return g.b }

// Geometry is the KV cache's geometry (what an owner of block tables needs).
func (g *GraphModel) Geometry() engine.KVGeometry { return g.b.Geometry() }

// Stats reports how the steps ran.
func (g *GraphModel) Stats() GraphStats {
	s := g.stats
	s.Graphs, s.Failed = len(g.graphs), len(g.failed)
	return s
}

// CaptureErrors returns why captures failed, by "batch×blocks".
func (g *GraphModel) CaptureErrors() map[string]error {
	out := map[string]error{}
	for k, err := range g.failed {
		out[fmt.Sprintf("%d×%d", k.batch, k.ctx)] = err
	}
	return out
}

// Close destroys the graphs.
func (g *GraphModel) Close() {
	for k, gr := range g.graphs {
		gr.Close()
		delete(g.graphs, k)
	}
}

// key decides whether seqs can run as a graph, and which.
func (g *GraphModel) key(seqs []engine.Seq) (graphKey, bool) {
	b := g.b
	if !b.opts.Graphs || len(seqs) == 0 {
		return graphKey{}, false
	}
	need := 0
	for _, s := range seqs {
		if len(s.Tokens) != 1 || s.AllLogits || s.Pos < 0 {
			return graphKey{}, false
		}
		need = max(need, s.Pos/b.pools.blockSize+1)
	}
	batch := 0
	for _, n := range g.buckets {
		if n >= len(seqs) {
			batch = n
			break
		}
	}
	if batch == 0 || batch > b.opts.MaxSeqs || batch > b.opts.MaxTokens {
		return graphKey{}, false
	}
	ctx := ctxBucket(need, b.lim.maxBlocks)
	if ctx < need {
		return graphKey{}, false
	}
	return graphKey{batch: batch, ctx: ctx}, true
}

// ctxBucket is the table width for a step needing need blocks: a power of
// two from minCtxBlocks, capped at the backend's limit.
func ctxBucket(need, limit int) int {
	c := minCtxBlocks
	for c < need {
		c *= 2
	}
	return min(c, limit)
}

// pad returns seqs followed by padding sequences up to n: token 0 at
// position 0 through block 0 (valid tables for the engine's checks; the
// backend replaces them with the scratch block and writes no KV).
func (g *GraphModel) pad(seqs []engine.Seq, n int) []engine.Seq {
	g.padded = append(g.padded[:0], seqs...)
	for len(g.padded) < n {
		g.padded = append(g.padded, engine.Seq{Tokens: g.dummy, Blocks: g.dummy, SlidingBlocks: g.dummy})
	}
	return g.padded
}

// Step runs one step: replaying a graph, capturing one, or eagerly.
func (g *GraphModel) Step(seqs []engine.Seq) ([][][]float32, error) {
	key, ok := g.key(seqs)
	if !ok || g.failed[key] != nil {
		g.stats.Eager++
		return g.m.Step(seqs)
	}
	b := g.b
	padded := g.pad(seqs, key.batch)
	defer clear(g.padded) // the callers' slices
	b.plan = plan{ctxBlocks: key.ctx}
	if key.batch > len(seqs) {
		b.plan.pad = len(seqs)
	}
	defer func() { b.plan = plan{} }()

	if gr := g.graphs[key]; gr != nil {
		b.mode, b.replay, b.sigAt, b.launched, b.stepErr = replaying, gr, 0, false, nil
		out, err := g.m.Step(padded)
		launched, rerr := b.launched, b.stepErr
		b.mode, b.replay = eager, nil
		if err == nil && rerr == nil {
			g.stats.Replayed++
			return out[:len(seqs)], nil
		}
		if launched {
			return nil, errors.Join(err, rerr)
		}
		// Nothing ran on the device: drop the graph, run eagerly.
		g.stats.Fallbacks++
		g.failed[key] = fmt.Errorf("replay: %w", errors.Join(err, rerr))
		gr.Close()
		delete(g.graphs, key)
		b.plan = plan{}
		g.stats.Eager++
		return g.m.Step(seqs)
	}

	// First use: the warm-up gives this step's logits.
	out, err := g.m.Step(padded)
	if err != nil {
		return nil, err
	}
	b.mode, b.capture, b.capErr = armed, nil, nil
	_, err = g.m.Step(padded)
	gr, cerr := b.capture, b.capErr
	b.capture, b.capErr = nil, nil
	if b.mode != eager { // the step failed before its Begin
		b.mode = eager
	}
	if errors.Is(err, errCaptured) && cerr == nil && gr != nil {
		gr.T, gr.S, gr.maxBlocks = b.m.T, b.m.S, b.m.maxBlocks
		g.graphs[key] = gr
		g.stats.Captured++
	} else {
		if gr != nil {
			gr.Close()
		}
		if errors.Is(err, errCaptured) {
			err = nil
		}
		g.failed[key] = fmt.Errorf("capture: %w", errors.Join(err, cerr))
	}
	return out[:len(seqs)], nil
}
