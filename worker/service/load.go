package service

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/gptoss/server/shared/model"
	"github.com/gptoss/server/shared/wire"
	"github.com/gptoss/server/worker/collective"
	"github.com/gptoss/server/worker/cuda"
	"github.com/gptoss/server/worker/engine"
	"github.com/gptoss/server/worker/local"
	"github.com/gptoss/server/worker/safetensors"
)

// Load defaults, used where the Load message leaves a field 0.
const (
	defaultKVBlocks      = 1024
	defaultSlidingBlocks = 256
	defaultBlockSize     = 16
)

// dummySeed makes every rank (and every run) generate the same dummy
// weights, as scripts/tinymodel does.
const dummySeed = 1

// ncclShareTimeout bounds the wait for the other ranks to ask rank 0 for
// the NCCL id: every rank gets its Load at once and asks before reading
// its weights, so this covers start-up skew, not loading.
const ncclShareTimeout = 2 * time.Minute

// modelConfig returns the architecture to load from dir and the model id.
// With --load-format dummy, dir may instead name a preset (20b, 120b,
// tiny, or their ids): real shapes without the real files.
func (w *Service) modelConfig(dir string) (model.Config, string, error) {
	if w.opts.LoadFormat == LoadDummy {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			if strings.ContainsRune(dir, filepath.Separator) || strings.HasPrefix(dir, ".") {
				return model.Config{}, "", fmt.Errorf("load: dummy weights: %s is not a checkpoint directory", dir)
			}
			p, err := model.Resolve(dir)
			if err != nil {
				return model.Config{}, "", fmt.Errorf("load: dummy weights: %w", err)
			}
			return p.Architecture(), p.ID, nil
		}
	}
	cfg, err := model.LoadConfig(dir)
	return cfg, filepath.Base(filepath.Clean(dir)), err
}

// readWeights loads the weights of cfg: the checkpoint in dir (the set
// stays open, the matrices map it), or dummy weights (no set).
func (w *Service) readWeights(cfg model.Config, dir string) (*safetensors.Set, *engine.Weights, error) {
	if w.opts.LoadFormat == LoadDummy {
		if err := checkDummyFits(&cfg); err != nil {
			return nil, nil, err
		}
		w.log.Info("generating dummy weights", zap.Int("layers", cfg.Layers), zap.Int("experts", cfg.Experts),
			zap.Int("hidden", cfg.Hidden))
		return nil, engine.DummyWeights(cfg, dummySeed, 0), nil
	}
	set, err := safetensors.OpenDir(dir)
	if err != nil {
		return nil, nil, err
	}
	// The heartbeats report the set's progress until the Load ends.
	w.loadSet.Store(set)
	weights, err := engine.LoadWeights(cfg, set)
	if err != nil {
		set.Close()
		return nil, nil, err
	}
	return set, weights, nil
}

// checkDummyFits refuses dummy weights larger than the memory available
// (they are generated in host memory, 120b is about 65 GB).
func checkDummyFits(c *model.Config) error {
	qd, kvd := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	dense := 2*float64(c.Vocab)*float64(c.Hidden) +
		float64(c.Layers)*(float64(c.Hidden)*float64(2*qd+2*kvd)+float64(c.Experts)*float64(c.Hidden))
	experts := float64(c.Layers) * float64(c.Experts) * 3 * float64(c.Intermediate) * float64(c.Hidden)
	bytes := 2*dense + experts/2*(1+1.0/16)
	if _, avail := readMeminfo(); avail > 0 && bytes > float64(avail) {
		return fmt.Errorf("load: dummy weights need %.1f GiB, %.1f GiB of memory is available", bytes/(1<<30), float64(avail)/(1<<30))
	}
	return nil
}

// openKernels opens the CUDA kernels library (--kernels, else the search
// of cuda.Open) before any weights are read, so that a machine without it
// fails the load at once with the fix in the error.
func (w *Service) openKernels() (*cuda.Lib, error) {
	lib, err := cuda.Open(w.opts.Kernels)
	if err != nil {
		return nil, fmt.Errorf("load: --backend cuda: %w", err)
	}
	// No device (or no driver) fails here, before any weights are read.
	n, err := lib.DeviceCount()
	if err != nil {
		return nil, fmt.Errorf("load: --backend cuda: %w", err)
	}
	if n == 0 {
		return nil, errors.New("load: --backend cuda: no CUDA device is visible (CUDA_VISIBLE_DEVICES?)")
	}
	if len(lib.PreloadErrors) > 0 {
		w.log.Warn("some CUDA libraries did not preload", zap.Strings("errors", lib.PreloadErrors))
	}
	w.log.Info("CUDA kernels opened", zap.String("path", lib.Path()), zap.Strings("preloaded", lib.Preloaded))
	return lib, nil
}

// ncclID gets this load's NCCL communicator id: made by rank 0, handed to
// the others over NATS on a subject of the load's epoch. Nil when no
// communicator is wanted (one rank without --nccl).
func (w *Service) ncclID(lib *cuda.Lib, epoch uint64) ([]byte, error) {
	if w.opts.WorldSize == 1 && !w.opts.NCCL {
		return nil, nil
	}
	id, err := collective.ShareID(w.nc, w.subj.NCCL(epoch), w.opts.Rank, w.opts.WorldSize, ncclShareTimeout, lib.NCCLUniqueID)
	if err != nil {
		return nil, fmt.Errorf("load: NCCL id: %w", err)
	}
	return id, nil
}

// cudaModel puts weights on the GPU: the backend (KV pools from the Load's
// sizes, or from free memory when they are 0) and the engine's model on it.
func (w *Service) cudaModel(l *wire.Load, lib *cuda.Lib, ncclID []byte, weights *engine.Weights, kv, sliding, bs int) (*cuda.Backend, local.Model, error) {
	opts := cuda.Options{Lib: lib, BlockSize: bs, Blocks: kv, SlidingBlocks: sliding,
		MemoryUtilization: w.opts.GPUMemoryUtilization, Graphs: w.opts.CUDAGraphs,
		MaxTokens: int(l.MaxStepTokens), MaxSeqs: int(l.MaxSeqs)}
	if ncclID != nil {
		opts.NCCL = &cuda.NCCL{ID: ncclID, Ranks: w.opts.WorldSize, Rank: w.opts.Rank}
	}
	b, err := cuda.New(weights, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("load: %w", err)
	}
	// Decode steps of the common batch sizes replay CUDA graphs when
	// --cuda-graphs is on; other steps (and every step without it) run
	// op by op.
	m, err := cuda.NewModel(b)
	if err != nil {
		b.Close()
		return nil, nil, fmt.Errorf("load: %w", err)
	}
	info, _ := b.DeviceInfo()
	mem, g := b.Memory(), b.Geometry()
	w.log.Info("model on the GPU", zap.String("device", info.Name), zap.Int64("weights_bytes", mem.Weights),
		zap.Int64("kv_bytes", mem.KV), zap.Int64("activation_bytes", mem.Activations), zap.Int("kv_blocks", g.Blocks),
		zap.Int("sliding_blocks", g.SlidingBlocks), zap.Int("block_size", g.BlockSize), zap.Bool("nccl", ncclID != nil),
		zap.Bool("cuda_graphs", w.opts.CUDAGraphs),
		zap.Uint64("epoch", l.Epoch))
	return b, m, nil
}

// doLoad replaces the model with the one in l.ModelDir. Any Load first
// drops the current model and every sequence: a failed Load leaves none.
func (w *Service) doLoad(l *wire.Load) (res *wire.LoadResult) {
	res = &wire.LoadResult{Rank: int32(w.opts.Rank)}
	log := w.log.With(zap.String("model_dir", l.ModelDir))
	w.st.SetPhase(Loading, "")
	stopWatch := make(chan struct{})
	go w.watchLoad(stopWatch, time.Now(), log)
	defer func() {
		close(stopWatch)
		// Before the phase changes: a heartbeat that sees Loading may
		// carry the progress, one that sees the next phase carries none.
		w.loadSet.Store(nil)
		if r := recover(); r != nil {
			log.Error("panic in load", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			w.unload()
			res = &wire.LoadResult{Rank: int32(w.opts.Rank), Error: fmt.Sprintf("worker: panic in load: %v", r)}
		}
		if res.Error != "" {
			log.Error("load failed", zap.String("error", res.Error))
			w.st.SetPhase(Starting, "load: "+res.Error)
		} else {
			log.Info("model loaded", zap.String("model", res.Model), zap.Int32("vocab", res.Vocab))
			w.st.SetPhase(Ready, "")
		}
	}()
	w.unload()
	log.Info("loading model", zap.Int32("tp", l.Tp), zap.Int32("kv_blocks", l.KvBlocks),
		zap.Int32("sliding_blocks", l.SlidingBlocks), zap.Int32("block_size", l.BlockSize))
	id, vocab, err := w.load(l)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	res.Model, res.Vocab = id, int32(vocab)
	caps := w.exec.Capabilities()
	res.KvTokens = int64(caps.KVTokens)
	if g := caps.KV; g != nil {
		res.BlockSize, res.KvBlocks = int32(g.BlockSize), int32(g.Blocks)
		res.SlidingBlocks, res.SlidingWindow = int32(g.SlidingBlocks), int32(g.SlidingWindow)
	}
	w.noteSequences()
	return res
}

// unload drops the model, its sequences and its memory map.
func (w *Service) unload() {
	if w.exec == nil && w.set == nil && w.gpu == nil {
		return
	}
	w.exec, w.modelID = nil, ""
	w.noteSequences()
	w.codec.Reset()
	if w.coll != nil {
		w.coll.Close()
		w.coll = nil
	}
	if w.set != nil {
		if err := w.set.Close(); err != nil {
			w.log.Warn("closing the checkpoint", zap.Error(err))
		}
		w.set = nil
	}
	if w.gpu != nil {
		w.gpu.Close()
		w.gpu = nil
	}
	debug.FreeOSMemory() // the KV cache
}

func (w *Service) load(l *wire.Load) (id string, vocab int, err error) {
	ws := w.opts.WorldSize
	if int(max(l.Tp, 1)) != ws {
		return "", 0, fmt.Errorf("load: tp %d does not match this worker's world size %d", l.Tp, ws)
	}
	if l.ModelDir == "" {
		return "", 0, errors.New("load: empty model_dir")
	}
	kv, sliding, bs := int(l.KvBlocks), int(l.SlidingBlocks), int(l.BlockSize)
	if kv < 0 || sliding < 0 || bs < 0 {
		return "", 0, fmt.Errorf("load: kv_blocks %d, sliding_blocks %d, block_size %d: must not be negative", kv, sliding, bs)
	}
	if bs == 0 {
		bs = defaultBlockSize
	}
	gpu := w.opts.Backend == BackendCUDA
	if !gpu {
		// Host memory: fixed defaults. The GPU sizes its pools from free
		// device memory when the Load leaves them 0.
		if kv == 0 {
			kv = defaultKVBlocks
		}
		if sliding == 0 {
			sliding = defaultSlidingBlocks
		}
	}
	cfg, id, err := w.modelConfig(l.ModelDir)
	if err != nil {
		return "", 0, err
	}
	var lib *cuda.Lib
	var ncclID []byte
	if gpu {
		if lib, err = w.openKernels(); err != nil {
			return "", 0, err
		}
		if ncclID, err = w.ncclID(lib, l.Epoch); err != nil {
			return "", 0, err
		}
	} else if err := checkCacheFits(&cfg, kv, sliding, bs); err != nil {
		return "", 0, err
	}
	set, weights, err := w.readWeights(cfg, l.ModelDir)
	if err != nil {
		return "", 0, err
	}
	var coll *collective.NATS
	defer func() {
		if err != nil {
			if set != nil {
				set.Close()
			}
			if coll != nil {
				coll.Close()
			}
		}
	}()
	if ws > 1 {
		// This rank's heads, experts and vocabulary, joined to the other
		// ranks' through the collective of this load (NCCL on GPUs).
		if weights, err = weights.Shard(w.opts.Rank, ws); err != nil {
			return "", 0, err
		}
	}
	var m local.Model
	if gpu {
		var b *cuda.Backend
		if b, m, err = w.cudaModel(l, lib, ncclID, weights, kv, sliding, bs); err != nil {
			return "", 0, err
		}
		w.gpu = b
	} else {
		if ws > 1 {
			if coll, err = collective.New(w.nc, w.subj, l.Epoch, w.opts.Rank, ws, w.opts.StepTimeout); err != nil {
				return "", 0, err
			}
		}
		cc := weights.CacheConfig()
		var cache *engine.KVCache
		if cache, err = engine.NewKVCache(&cc, kv, sliding, bs); err != nil {
			return "", 0, err
		}
		var em *engine.Model
		fast := w.opts.CPUKernels == CPUKernelsFast
		if em, err = engine.NewModelOn(engine.NewCPUWith(weights, cache, nil, engine.CPUOptions{Fast: fast})); err != nil {
			return "", 0, err
		}
		if fast {
			mx, bf := engine.FastKernels()
			w.log.Info("CPU kernels: fast", zap.Bool("int8_mxfp4", mx), zap.Bool("bf16_dense", bf))
		}
		if coll != nil {
			em.Coll = coll
		}
		em.ReuseLogits = true // the executor samples them within its step
		m = em
	}
	w.set, w.exec, w.coll = set, local.New(m, &weights.Config), coll
	// Every rank draws, rank 0's draws being the ones it answers with: a
	// pipelined step's Follow entries feed each rank its own draw, which
	// is the same on every rank (the same gathered logits, parameters and
	// seed: the coordinator seeds every sequence, see wire.StepEncoder).
	w.modelID = id
	return w.modelID, cfg.Vocab, nil
}

// checkCacheFits refuses a KV cache larger than the memory available, so
// that a bad Load is an error reply rather than the process killed.
func checkCacheFits(cfg *model.Config, blocks, sliding, blockSize int) error {
	perToken := 2 * 4 * float64(cfg.KVHeads*cfg.HeadDim) // K and V, float32
	var bytes float64
	for l := range cfg.Layers {
		n := blocks
		if cfg.Sliding(l) {
			n = sliding
		}
		bytes += float64(n) * float64(blockSize) * perToken
	}
	if bytes > math.MaxInt/2 {
		return fmt.Errorf("load: a KV cache of %.3g bytes is too large", bytes)
	}
	if _, avail := readMeminfo(); avail > 0 && bytes > float64(avail) {
		return fmt.Errorf("load: the KV cache needs %.1f GiB, %.1f GiB of memory is available", bytes/(1<<30), float64(avail)/(1<<30))
	}
	return nil
}
