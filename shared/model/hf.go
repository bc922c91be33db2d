package model

import (
	"encoding/json"
	"strconv"
	"strings"
)

// HFJSON renders the configuration as a Hugging Face config.json for a
// GptOssForCausalLM checkpoint with MXFP4 experts, so checkpoints this
// project writes (the tiny model, dummy weights) load in transformers too.
func (c Config) HFJSON() ([]byte, error) {
	types := make([]string, c.Layers)
	for l := range types {
		types[l] = "full_attention"
		if c.Sliding(l) {
			types[l] = "sliding_attention"
		}
	}
	eos := 0
	if len(c.EOSTokenIDs) > 0 {
		eos = c.EOSTokenIDs[0]
	}
	doc := map[string]any{
		"architectures":           []string{"GptOssForCausalLM"},
		"model_type":              "gpt_oss",
		"num_hidden_layers":       c.Layers,
		"hidden_size":             c.Hidden,
		"num_attention_heads":     c.Heads,
		"num_key_value_heads":     c.KVHeads,
		"head_dim":                c.HeadDim,
		"num_local_experts":       c.Experts,
		"num_experts_per_tok":     c.ExpertsPerToken,
		"intermediate_size":       c.Intermediate,
		"vocab_size":              c.Vocab,
		"sliding_window":          c.SlidingWindow,
		"layer_types":             types,
		"rope_theta":              float(c.RopeTheta),
		"rms_norm_eps":            float(c.RMSNormEps),
		"swiglu_limit":            float(c.SwigluLimit),
		"max_position_embeddings": c.MaxPositions,
		"attention_bias":          true,
		"tie_word_embeddings":     false,
		"hidden_act":              "silu",
		"eos_token_id":            eos,
		"rope_scaling": map[string]any{
			"rope_type": "yarn", "factor": float(c.RopeFactor), "beta_fast": float(c.RopeBetaFast), "beta_slow": float(c.RopeBetaSlow),
			"original_max_position_embeddings": c.RopeOrigMaxPos, "truncate": c.RopeTruncate,
		},
		"quantization_config": map[string]any{
			"quant_method": "mxfp4",
			"modules_to_not_convert": []string{"model.layers.*.self_attn", "model.layers.*.mlp.router",
				"model.embed_tokens", "lm_head"},
		},
	}
	return json.MarshalIndent(doc, "", "  ")
}

// float marshals with a decimal point even when integral (7.0, not 7):
// transformers' config classes reject an int where they declare a float.
type float float64

func (f float) MarshalJSON() ([]byte, error) {
	s := strconv.FormatFloat(float64(f), 'g', -1, 64)
	if !strings.ContainsAny(s, ".eEn") { // n: NaN, Inf are not valid JSON anyway
		s += ".0"
	}
	return []byte(s), nil
}
