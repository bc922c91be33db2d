package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	"github.com/gptoss/server/worker/safetensors"
)

// WriteCheckpoint writes w as a Hugging Face layout gpt-oss checkpoint:
// config.json and model.safetensors with bf16 dense tensors and MXFP4
// experts (*_blocks, *_scales). It is how the deterministic tiny model and
// dummy-weight checkpoints are made; LoadWeights reads them back exactly.
func WriteCheckpoint(dir string, w *Weights) error {
	c := &w.Config
	if w.Part.TP > 1 {
		return fmt.Errorf("engine: checkpoint: a tensor-parallel shard (rank %d of %d) is not a whole model", w.Part.Rank, w.Part.TP)
	}
	cfgJSON, err := c.HFJSON()
	if err != nil {
		return fmt.Errorf("engine: checkpoint config: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("engine: checkpoint: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), append(cfgJSON, '\n'), 0o644); err != nil {
		return fmt.Errorf("engine: checkpoint: %w", err)
	}
	var ts []safetensors.Tensor
	mat := func(name string, m Mat) {
		b := m.BF16
		if b == nil {
			b = make([]uint16, len(m.F32))
			for i, f := range m.F32 {
				b[i] = ToBF16(f)
			}
		}
		ts = append(ts, safetensors.Tensor{Name: name, DType: safetensors.BF16, Shape: []int{m.Rows, m.Cols}, Data: bytesOf(b)})
	}
	vec := func(name string, v []float32, shape ...int) {
		b := make([]uint16, len(v))
		for i, f := range v {
			b[i] = ToBF16(f)
		}
		ts = append(ts, safetensors.Tensor{Name: name, DType: safetensors.BF16, Shape: shape, Data: bytesOf(b)})
	}
	mx := func(prefix string, m MXFP4) {
		nb := m.Cols / 32
		ts = append(ts,
			safetensors.Tensor{Name: prefix + "_blocks", DType: safetensors.U8, Shape: []int{m.Experts, m.Rows, nb, 16}, Data: m.Blocks},
			safetensors.Tensor{Name: prefix + "_scales", DType: safetensors.U8, Shape: []int{m.Experts, m.Rows, nb}, Data: m.Scales})
	}
	mat("model.embed_tokens.weight", w.Embed)
	for i := range w.Layers {
		L := &w.Layers[i]
		p := fmt.Sprintf("model.layers.%d.", i)
		vec(p+"input_layernorm.weight", L.AttnNorm, c.Hidden)
		vec(p+"post_attention_layernorm.weight", L.MLPNorm, c.Hidden)
		mat(p+"self_attn.q_proj.weight", L.Q)
		vec(p+"self_attn.q_proj.bias", L.QB, len(L.QB))
		mat(p+"self_attn.k_proj.weight", L.K)
		vec(p+"self_attn.k_proj.bias", L.KB, len(L.KB))
		mat(p+"self_attn.v_proj.weight", L.V)
		vec(p+"self_attn.v_proj.bias", L.VB, len(L.VB))
		mat(p+"self_attn.o_proj.weight", L.O)
		vec(p+"self_attn.o_proj.bias", L.OB, len(L.OB))
		vec(p+"self_attn.sinks", L.Sinks, len(L.Sinks))
		mat(p+"mlp.router.weight", L.Router)
		vec(p+"mlp.router.bias", L.RouterB, len(L.RouterB))
		mx(p+"mlp.experts.gate_up_proj", L.GateUp)
		vec(p+"mlp.experts.gate_up_proj_bias", L.GateUpB, c.Experts, 2*c.Intermediate)
		mx(p+"mlp.experts.down_proj", L.Down)
		vec(p+"mlp.experts.down_proj_bias", L.DownB, c.Experts, c.Hidden)
	}
	vec("model.norm.weight", w.Norm, c.Hidden)
	mat("lm_head.weight", w.Unembed)
	if err := safetensors.WriteFile(filepath.Join(dir, "model.safetensors"), ts, map[string]string{"format": "pt"}); err != nil {
		return fmt.Errorf("engine: checkpoint: %w", err)
	}
	return nil
}

func bytesOf(b []uint16) []byte {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&b[0])), 2*len(b))
}
