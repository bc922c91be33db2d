package cuda

import (
	"errors"
	"fmt"

	"github.com/gptoss/server/shared/model"
	"github.com/gptoss/server/worker/engine"
)

// Options configures a Backend. The zero value of every field but the
// weights means its default.
type Options struct {
	// Device is the CUDA device index (after CUDA_VISIBLE_DEVICES; a worker
	// sees its one GPU as 0).
	Device int
	// Lib is an opened kernels library; nil opens LibPath ("" searches, see
	// Open).
	Lib     *Lib
	LibPath string

	// BlockSize is the KV cache's tokens per block (default 16).
	BlockSize int
	// Blocks and SlidingBlocks size the full-attention and sliding-window
	// pools. Blocks 0 sizes the cache from free memory (below); SlidingBlocks
	// 0 then means enough for the window of 4×MaxSeqs sequences, and with
	// Blocks set it means the same as Blocks (engine.NewKVCache's rule).
	Blocks, SlidingBlocks int
	// MemoryUtilization is the fraction of the device memory still free
	// after the weights, the activation arena and the workspaces that the
	// KV cache takes when Blocks is 0 (default 0.9; the rest is headroom for
	// cuBLAS, NCCL, CUDA graphs and arena growth).
	MemoryUtilization float64
	// MaxTokens bounds the tokens of one step (default 8192, the
	// coordinator's default --max-step-tokens); the activation arena, the
	// step metadata and the MoE workspace are sized for it.
	MaxTokens int
	// MaxSeqs bounds the sequences of one step (default min(1024, MaxTokens),
	// the coordinator's default --max-running).
	MaxSeqs int
	// MaxContext bounds a sequence's positions (default the model's
	// max_position_embeddings); it sizes the block tables.
	MaxContext int

	// NCCL, when set, joins an NCCL communicator at New: required when the
	// weights are a tensor-parallel shard, allowed (one rank) when whole so
	// that the collective path can be exercised on one GPU.
	NCCL *NCCL

	// Graphs lets GraphModel capture and replay CUDA graphs for decode
	// steps. Off by default: see docs/cuda.md for what it assumes of the
	// kernels.
	Graphs bool
}

// NCCL is this rank's place in a communicator: the id rank 0 made with
// (*Lib).NCCLUniqueID and shared (collective.ShareID does it over NATS).
type NCCL struct {
	ID          []byte
	Ranks, Rank int
}

// Defaults.
const (
	DefaultBlockSize         = 16
	DefaultMemoryUtilization = 0.9
	DefaultMaxTokens         = 8192
	DefaultMaxSeqs           = 1024
)

// resolve fills the defaults and checks o against the weights.
func (o Options) resolve(w *engine.Weights) (Options, error) {
	if w == nil {
		return o, errors.New("cuda: no weights")
	}
	c := &w.Config
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.MemoryUtilization == 0 {
		o.MemoryUtilization = DefaultMemoryUtilization
	}
	if o.MaxTokens == 0 {
		o.MaxTokens = DefaultMaxTokens
	}
	if o.MaxSeqs == 0 {
		o.MaxSeqs = min(DefaultMaxSeqs, o.MaxTokens)
	}
	if o.MaxContext == 0 {
		o.MaxContext = c.MaxPositions
		if o.MaxContext <= 0 {
			o.MaxContext = 131072
		}
	}
	switch {
	case o.Device < 0:
		return o, fmt.Errorf("cuda: device %d", o.Device)
	case o.BlockSize < 1 || o.BlockSize > 1024:
		return o, fmt.Errorf("cuda: block size %d: want 1 to 1024", o.BlockSize)
	case o.Blocks < 0 || o.SlidingBlocks < 0:
		return o, fmt.Errorf("cuda: %d blocks, %d sliding blocks: must not be negative", o.Blocks, o.SlidingBlocks)
	case !(o.MemoryUtilization > 0 && o.MemoryUtilization <= 1):
		return o, fmt.Errorf("cuda: memory utilization %g: want a fraction in (0, 1]", o.MemoryUtilization)
	case o.MaxTokens < 1 || o.MaxSeqs < 1:
		return o, fmt.Errorf("cuda: max tokens %d, max sequences %d: must be positive", o.MaxTokens, o.MaxSeqs)
	case o.MaxSeqs > o.MaxTokens:
		return o, fmt.Errorf("cuda: max sequences %d above max tokens %d (every sequence brings a token)", o.MaxSeqs, o.MaxTokens)
	case o.MaxContext < 1:
		return o, fmt.Errorf("cuda: max context %d", o.MaxContext)
	case int64(o.MaxContext)*int64(o.MaxSeqs) > 1<<31/4:
		return o, fmt.Errorf("cuda: block tables for %d sequences of %d positions are too large", o.MaxSeqs, o.MaxContext)
	}
	if err := checkModel(c, w.Part); err != nil {
		return o, err
	}
	p := w.Part
	if n := o.NCCL; n != nil {
		switch {
		case len(n.ID) != NCCLIDBytes:
			return o, fmt.Errorf("cuda: an NCCL id of %d bytes, want %d", len(n.ID), NCCLIDBytes)
		case n.Ranks != p.TP || n.Rank != p.Rank:
			return o, fmt.Errorf("cuda: NCCL rank %d of %d for weights of rank %d of %d", n.Rank, n.Ranks, p.Rank, p.TP)
		}
	} else if p.TP > 1 {
		return o, fmt.Errorf("cuda: rank %d of %d: tensor parallelism needs an NCCL communicator (Options.NCCL)", p.Rank, p.TP)
	}
	return o, nil
}

// checkModel refuses what the kernels do not support.
func checkModel(c *model.Config, p engine.Part) error {
	switch {
	case c.HeadDim%2 != 0 || c.HeadDim > 256:
		return fmt.Errorf("cuda: head_dim %d: the kernels take an even head_dim up to 256", c.HeadDim)
	case c.Hidden%32 != 0 || c.Intermediate%32 != 0:
		return fmt.Errorf("cuda: hidden %d and intermediate %d must be multiples of 32 (MXFP4 blocks)", c.Hidden, c.Intermediate)
	case p.Heads < 1 || p.KVHeads < 1 || p.Heads%p.KVHeads != 0:
		return fmt.Errorf("cuda: %d query heads over %d KV heads", p.Heads, p.KVHeads)
	case p.ExpertHi <= p.ExpertLo || p.VocabHi <= p.VocabLo:
		return fmt.Errorf("cuda: empty part %+v", p)
	}
	return nil
}

// kvBlockBytes is one block of one layer's pool: K and V, bf16.
func kvBlockBytes(blockSize, kvDim int) int64 { return int64(blockSize) * int64(kvDim) * 2 * 2 }

// layerCounts counts the full-attention and sliding-window layers.
func layerCounts(c *model.Config) (full, sliding int) {
	for l := range c.Layers {
		if c.Sliding(l) {
			sliding++
		} else {
			full++
		}
	}
	return full, sliding
}

// poolSizes decides the usable blocks of the two pools. Each pool gets one
// more block than it reports, a scratch block that padding sequences of a
// CUDA graph read (it is never handed out). With blocks 0 the pools fill
// budget bytes: the sliding pool first (sliding, or room for the window of
// 4×maxSeqs sequences), the full pool the rest.
func poolSizes(c *model.Config, kvDim, blockSize int, budget int64, blocks, sliding, maxSeqs int) (int, int, error) {
	nFull, nSliding := layerCounts(c)
	bb := kvBlockBytes(blockSize, kvDim)
	need := func(f, s int) int64 { return int64(nFull)*int64(f+1)*bb + int64(nSliding)*int64(s+1)*bb }
	if blocks > 0 {
		if sliding == 0 {
			sliding = blocks
		}
		return blocks, sliding, nil
	}
	if sliding == 0 {
		perSeq := (c.SlidingWindow+blockSize-1)/blockSize + 1
		sliding = 4 * maxSeqs * perSeq
	}
	if nFull == 0 {
		if need(0, sliding) > budget {
			return 0, 0, fmt.Errorf("cuda: the sliding KV pool needs %s, %s available", gib(need(0, sliding)), gib(budget))
		}
		return sliding, sliding, nil
	}
	left := budget - int64(nSliding)*int64(sliding+1)*bb
	full := left/(int64(nFull)*bb) - 1
	if full < 1 {
		return 0, 0, fmt.Errorf("cuda: no room for the KV cache: %s available, the sliding pool takes %s and a full block %s",
			gib(budget), gib(int64(nSliding)*int64(sliding+1)*bb), gib(int64(nFull)*bb))
	}
	return int(min(full, 1<<31-2)), sliding, nil
}

func gib(b int64) string { return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30)) }
