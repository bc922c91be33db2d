package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
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

// Backends and load formats (--backend, --load-format).
const (
	backendCPU  = "cpu"
	backendCUDA = "cuda"

	loadAuto  = "auto"  // the checkpoint's safetensors
	loadDummy = "dummy" // random weights of the checkpoint's (or preset's) shapes
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
func (w *worker) modelConfig(dir string) (model.Config, string, error) {
	if w.cfg.LoadFormat == loadDummy {
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
func (w *worker) readWeights(cfg model.Config, dir string) (*safetensors.Set, *engine.Weights, error) {
	if w.cfg.LoadFormat == loadDummy {
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
func (w *worker) openKernels() (*cuda.Lib, error) {
	lib, err := cuda.Open(w.cfg.Kernels)
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
func (w *worker) ncclID(lib *cuda.Lib, epoch uint64) ([]byte, error) {
	if w.cfg.WorldSize == 1 && !w.cfg.NCCL {
		return nil, nil
	}
	id, err := collective.ShareID(w.nc, w.subj.NCCL(epoch), w.cfg.Rank, w.cfg.WorldSize, ncclShareTimeout, lib.NCCLUniqueID)
	if err != nil {
		return nil, fmt.Errorf("load: NCCL id: %w", err)
	}
	return id, nil
}

// cudaModel puts weights on the GPU: the backend (KV pools from the Load's
// sizes, or from free memory when they are 0) and the engine's model on it.
func (w *worker) cudaModel(l *wire.Load, lib *cuda.Lib, ncclID []byte, weights *engine.Weights, kv, sliding, bs int) (*cuda.Backend, local.Model, error) {
	opts := cuda.Options{Lib: lib, BlockSize: bs, Blocks: kv, SlidingBlocks: sliding,
		MemoryUtilization: w.cfg.GPUMemoryUtilization, Graphs: w.cfg.CUDAGraphs,
		MaxTokens: int(l.MaxStepTokens), MaxSeqs: int(l.MaxSeqs)}
	if ncclID != nil {
		opts.NCCL = &cuda.NCCL{ID: ncclID, Ranks: w.cfg.WorldSize, Rank: w.cfg.Rank}
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
		zap.Bool("cuda_graphs", w.cfg.CUDAGraphs),
		zap.Uint64("epoch", l.Epoch))
	return b, m, nil
}
