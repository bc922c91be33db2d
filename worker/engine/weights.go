package engine

import (
	"fmt"
	"unsafe"

	"github.com/gptoss/server/shared/model"
	"github.com/gptoss/server/worker/safetensors"
)

// Layer is one transformer block's weights.
type Layer struct {
	AttnNorm, MLPNorm []float32
	Q, K, V, O        Mat
	QB, KB, VB, OB    []float32
	Sinks             []float32
	Router            Mat
	RouterB           []float32
	GateUp, Down      MXFP4
	GateUpB, DownB    []float32 // [Experts × rows]
}

// Weights is a whole gpt-oss model. Large matrices stay in the checkpoint's
// memory map (bf16, MXFP4); small vectors are converted to float32.
type Weights struct {
	Config model.Config
	// Part is the tensor-parallel slice these weights are (whole: TP 1).
	Part    Part
	Embed   Mat
	Layers  []Layer
	Norm    []float32
	Unembed Mat
}

// tensorSource is what loading needs from a checkpoint.
type tensorSource interface {
	Tensor(name string) (safetensors.Tensor, error)
}

// LoadWeights reads a Hugging Face layout gpt-oss checkpoint (MXFP4 experts)
// from src, checking every tensor's dtype and shape against cfg.
func LoadWeights(cfg model.Config, src tensorSource) (*Weights, error) {
	l := loader{src: src}
	c := &cfg
	w := &Weights{Config: cfg}
	w.Embed = l.mat("model.embed_tokens.weight", c.Vocab, c.Hidden)
	w.Norm = l.vec("model.norm.weight", c.Hidden)
	w.Unembed = l.mat("lm_head.weight", c.Vocab, c.Hidden)
	q, kv := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	for i := range c.Layers {
		p := fmt.Sprintf("model.layers.%d.", i)
		e, inter := c.Experts, c.Intermediate
		w.Layers = append(w.Layers, Layer{
			AttnNorm: l.vec(p+"input_layernorm.weight", c.Hidden),
			MLPNorm:  l.vec(p+"post_attention_layernorm.weight", c.Hidden),
			Q:        l.mat(p+"self_attn.q_proj.weight", q, c.Hidden),
			QB:       l.vec(p+"self_attn.q_proj.bias", q),
			K:        l.mat(p+"self_attn.k_proj.weight", kv, c.Hidden),
			KB:       l.vec(p+"self_attn.k_proj.bias", kv),
			V:        l.mat(p+"self_attn.v_proj.weight", kv, c.Hidden),
			VB:       l.vec(p+"self_attn.v_proj.bias", kv),
			O:        l.mat(p+"self_attn.o_proj.weight", c.Hidden, q),
			OB:       l.vec(p+"self_attn.o_proj.bias", c.Hidden),
			Sinks:    l.vec(p+"self_attn.sinks", c.Heads),
			Router:   l.mat(p+"mlp.router.weight", e, c.Hidden),
			RouterB:  l.vec(p+"mlp.router.bias", e),
			GateUp:   l.mxfp4(p+"mlp.experts.gate_up_proj", e, 2*inter, c.Hidden),
			GateUpB:  l.vec(p+"mlp.experts.gate_up_proj_bias", e*2*inter),
			Down:     l.mxfp4(p+"mlp.experts.down_proj", e, c.Hidden, inter),
			DownB:    l.vec(p+"mlp.experts.down_proj_bias", e*c.Hidden),
		})
	}
	if l.err != nil {
		return nil, l.err
	}
	w.Part = whole(w)
	return w, nil
}

// loader keeps the first error so the layout above reads as a table.
type loader struct {
	src tensorSource
	err error
}

func (l *loader) get(name string, elems int, dtypes ...safetensors.DType) safetensors.Tensor {
	if l.err != nil {
		return safetensors.Tensor{}
	}
	t, err := l.src.Tensor(name)
	if err != nil {
		l.err = fmt.Errorf("engine: weights: %w", err)
		return t
	}
	ok := false
	for _, d := range dtypes {
		ok = ok || t.DType == d
	}
	if !ok {
		l.err = fmt.Errorf("engine: weights: %s has dtype %s, want %v", name, t.DType, dtypes)
	} else if t.NumElements() != elems {
		l.err = fmt.Errorf("engine: weights: %s has shape %v (%d elements), want %d elements", name, t.Shape, t.NumElements(), elems)
	}
	return t
}

func (l *loader) mat(name string, rows, cols int) Mat {
	t := l.get(name, rows*cols, safetensors.BF16, safetensors.F32)
	if l.err != nil {
		return Mat{}
	}
	if len(t.Shape) != 2 || t.Shape[0] != rows || t.Shape[1] != cols {
		l.err = fmt.Errorf("engine: weights: %s has shape %v, want [%d %d]", name, t.Shape, rows, cols)
		return Mat{}
	}
	m := Mat{Rows: rows, Cols: cols}
	if t.DType == safetensors.BF16 {
		m.BF16 = view[uint16](t.Data)
	} else {
		m.F32 = view[float32](t.Data)
	}
	return m
}

func (l *loader) vec(name string, n int) []float32 {
	t := l.get(name, n, safetensors.BF16, safetensors.F32)
	if l.err != nil {
		return nil
	}
	out := make([]float32, n)
	if t.DType == safetensors.BF16 {
		for i, b := range view[uint16](t.Data) {
			out[i] = bf16(b)
		}
	} else {
		copy(out, view[float32](t.Data))
	}
	return out
}

func (l *loader) mxfp4(prefix string, experts, rows, cols int) MXFP4 {
	blocks := l.get(prefix+"_blocks", experts*rows*cols/2, safetensors.U8)
	scales := l.get(prefix+"_scales", experts*rows*cols/32, safetensors.U8)
	if l.err != nil {
		return MXFP4{}
	}
	m := MXFP4{Experts: experts, Rows: rows, Cols: cols, Blocks: blocks.Data, Scales: scales.Data}
	m.prepare()
	return m
}

// view reinterprets little-endian tensor bytes as a slice of T without
// copying (the checkpoint stays memory-mapped). Safetensors data offsets
// are not guaranteed to be aligned, so an unaligned buffer is copied.
func view[T uint16 | float32](b []byte) []T {
	var zero T
	size := int(unsafe.Sizeof(zero))
	n := len(b) / size
	if n == 0 {
		return nil
	}
	if uintptr(unsafe.Pointer(&b[0]))%uintptr(size) != 0 {
		c := make([]T, n)
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&c[0])), n*size), b)
		return c
	}
	return unsafe.Slice((*T)(unsafe.Pointer(&b[0])), n)
}
