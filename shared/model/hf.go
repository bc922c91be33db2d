package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
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

// ErrNotDownloaded says a model's weights are not on this machine.
var ErrNotDownloaded = errors.New("model weights not found")

// FindCheckpoint locates the checkpoint directory for a --model value: a
// directory path as given, or a preset's Hugging Face repository in the
// hub cache ($HF_HUB_CACHE, else $HF_HOME/hub, else
// ~/.cache/huggingface/hub), snapshot named by refs/main or else the only
// one. getenv is os.Getenv in production.
func FindCheckpoint(name string, getenv func(string) string) (string, error) {
	if fi, err := os.Stat(name); err == nil && fi.IsDir() {
		return name, nil
	}
	p, err := Resolve(name)
	if err != nil {
		return "", err
	}
	if p.HubRepo == "" {
		return "", fmt.Errorf("model: %s has no published checkpoint; generate one (go run ./scripts/tinymodel) and pass its directory", p.ID)
	}
	cache := getenv("HF_HUB_CACHE")
	if cache == "" {
		if home := getenv("HF_HOME"); home != "" {
			cache = filepath.Join(home, "hub")
		} else if h := getenv("HOME"); h != "" {
			cache = filepath.Join(h, ".cache", "huggingface", "hub")
		}
	}
	repo := filepath.Join(cache, "models--"+strings.ReplaceAll(p.HubRepo, "/", "--"))
	snap := ""
	if ref, err := os.ReadFile(filepath.Join(repo, "refs", "main")); err == nil {
		snap = filepath.Join(repo, "snapshots", strings.TrimSpace(string(ref)))
	} else if all, _ := filepath.Glob(filepath.Join(repo, "snapshots", "*")); len(all) > 0 {
		sort.Strings(all)
		snap = all[len(all)-1]
	}
	if snap != "" {
		if _, err := os.Stat(filepath.Join(snap, "config.json")); err == nil {
			return snap, nil
		}
	}
	return "", fmt.Errorf("%w: %s is not in the Hugging Face cache %s; download it with `hf download %s` (or `huggingface-cli download %s`), or pass --model with the checkpoint directory",
		ErrNotDownloaded, p.ID, cache, p.HubRepo, p.HubRepo)
}
