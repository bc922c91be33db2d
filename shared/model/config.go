package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Config is the gpt-oss architecture: every size the forward pass needs.
// It is read from a checkpoint's Hugging Face config.json (or the
// original/config.json of OpenAI's layout) or taken from a preset.
type Config struct {
	Layers          int     `json:"num_hidden_layers"`
	Hidden          int     `json:"hidden_size"`
	Heads           int     `json:"num_attention_heads"`
	KVHeads         int     `json:"num_key_value_heads"`
	HeadDim         int     `json:"head_dim"`
	Experts         int     `json:"num_local_experts"`
	ExpertsPerToken int     `json:"num_experts_per_tok"`
	Intermediate    int     `json:"intermediate_size"`
	Vocab           int     `json:"vocab_size"`
	SlidingWindow   int     `json:"sliding_window"`
	RopeTheta       float64 `json:"rope_theta"`
	RMSNormEps      float64 `json:"rms_norm_eps"`
	SwigluLimit     float64 `json:"swiglu_limit"`
	MaxPositions    int     `json:"max_position_embeddings"`
	// LayerTypes says per layer "sliding_attention" or "full_attention";
	// empty means the gpt-oss pattern (even layers slide).
	LayerTypes []string `json:"layer_types"`
	// YaRN RoPE scaling.
	RopeFactor      float64 `json:"-"`
	RopeBetaFast    float64 `json:"-"`
	RopeBetaSlow    float64 `json:"-"`
	RopeOrigMaxPos  int     `json:"-"`
	RopeTruncate    bool    `json:"-"`
	EOSTokenIDs     []int   `json:"-"`
	QuantizedExpert bool    `json:"-"` // experts are MXFP4 (*_blocks, *_scales)
}

// Sliding reports whether layer l uses sliding-window attention.
func (c *Config) Sliding(l int) bool {
	if l < len(c.LayerTypes) {
		return c.LayerTypes[l] == "sliding_attention"
	}
	return l%2 == 0
}

// Architecture returns the preset's architecture.
func (p Preset) Architecture() Config {
	c := Config{
		Layers: p.Layers, Hidden: p.HiddenSize, Heads: 64, KVHeads: 8, HeadDim: 64, Experts: p.Experts,
		ExpertsPerToken: 4, Intermediate: 2880, Vocab: p.VocabSize, SlidingWindow: 128, RopeTheta: 150000,
		RMSNormEps: 1e-5, SwigluLimit: 7, MaxPositions: p.ContextLength, RopeFactor: 32, RopeBetaFast: 32,
		RopeBetaSlow: 1, RopeOrigMaxPos: 4096, EOSTokenIDs: []int{200002, 199999, 200012}, QuantizedExpert: true,
	}
	if p.Name == "tiny" {
		c.Heads, c.KVHeads, c.HeadDim, c.Intermediate, c.SlidingWindow = 8, 4, 16, 64, 16
	}
	return c
}

// ropeScaling is HF's rope_scaling object; transformers 5 writes it as
// rope_parameters with rope_theta inside.
type ropeScaling struct {
	RopeType  string   `json:"rope_type"`
	Factor    float64  `json:"factor"`
	BetaFast  *float64 `json:"beta_fast"`
	BetaSlow  *float64 `json:"beta_slow"`
	OrigMax   *int     `json:"original_max_position_embeddings"`
	Truncate  *bool    `json:"truncate"`
	RopeTheta float64  `json:"rope_theta"`
}

type hfConfig struct {
	Config
	// Keys with a default when absent; these shadow Config's fields so an
	// explicit 0 is told from a missing key (and refused).
	HeadDim    *int     `json:"head_dim"`
	RMSNormEps *float64 `json:"rms_norm_eps"`
	Swiglu     *float64 `json:"swiglu_limit"`

	RopeScaling    *ropeScaling    `json:"rope_scaling"`
	RopeParameters *ropeScaling    `json:"rope_parameters"`
	EOS            json.RawMessage `json:"eos_token_id"`
	BOS            json.RawMessage `json:"bos_token_id"`
	Pad            json.RawMessage `json:"pad_token_id"`
	Quantization   *struct {
		Method string `json:"quant_method"`
	} `json:"quantization_config"`
	// original/config.json names
	NumExperts     int     `json:"num_experts"`
	ExpertsPerTok  int     `json:"experts_per_token"`
	InitialContext int     `json:"initial_context_length"`
	RopeScalingFac float64 `json:"rope_scaling_factor"`
	RopeNTKAlpha   float64 `json:"rope_ntk_alpha"`
	RopeNTKBeta    float64 `json:"rope_ntk_beta"`
}

// LoadConfig reads dir/config.json (Hugging Face layout) or, failing that,
// dir/original/config.json or dir/config.json in OpenAI's original key
// names, and validates it: a value out of range is an error naming the
// file, the key, the value and the allowed range (see limits).
func LoadConfig(dir string) (Config, error) {
	path := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		path = filepath.Join(dir, "original", "config.json")
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return Config{}, fmt.Errorf("model: config: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return Config{}, fmt.Errorf("model: %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig decodes a config.json in either key convention and
// validates it (Validate); the error names keys as the file spells them.
func ParseConfig(b []byte) (Config, error) {
	var h hfConfig
	if err := json.Unmarshal(b, &h); err != nil {
		return Config{}, fmt.Errorf("parse: %w", err)
	}
	// names maps a limit's Hugging Face key to the one this file uses.
	names := map[string]string{}
	var bad []*FieldError
	c := h.Config
	// OpenAI's original names, where the file has them instead of the
	// Hugging Face ones.
	if !present(b, "num_local_experts") && present(b, "num_experts") {
		c.Experts = h.NumExperts
		names["num_local_experts"] = "num_experts"
	}
	if !present(b, "num_experts_per_tok") && present(b, "experts_per_token") {
		c.ExpertsPerToken = h.ExpertsPerTok
		names["num_experts_per_tok"] = "experts_per_token"
	}
	c.RopeFactor, c.RopeBetaFast, c.RopeBetaSlow, c.RopeOrigMaxPos = 32, 32, 1, 4096
	if present(b, "rope_scaling_factor") {
		c.RopeFactor, c.RopeBetaFast, c.RopeBetaSlow = h.RopeScalingFac, h.RopeNTKBeta, h.RopeNTKAlpha
		c.RopeOrigMaxPos = h.InitialContext
		for hf, orig := range map[string]string{"factor": "rope_scaling_factor", "beta_fast": "rope_ntk_beta",
			"beta_slow": "rope_ntk_alpha", "original_max_position_embeddings": "initial_context_length"} {
			names["rope_scaling."+hf] = orig
		}
		// The trained context is the original one times the factor; the
		// product is only formed when both are in range (the limits refuse
		// the others, and the context stays unset).
		if !present(b, "max_position_embeddings") && h.InitialContext >= 1 && h.RopeScalingFac >= 1 {
			if n := float64(h.InitialContext) * math.Trunc(h.RopeScalingFac); n <= maxPositions {
				c.MaxPositions = int(n)
				names["max_position_embeddings"] = "initial_context_length × rope_scaling_factor"
			}
		}
	}
	rs, rsName := h.RopeScaling, "rope_scaling"
	if rs == nil && h.RopeParameters != nil {
		rs, rsName = h.RopeParameters, "rope_parameters"
	}
	if rs != nil { // it overrides the original names
		for _, k := range []string{"factor", "beta_fast", "beta_slow", "original_max_position_embeddings", "rope_type"} {
			names["rope_scaling."+k] = rsName + "." + k
		}
	}
	if rs != nil && rs.RopeTheta != 0 && c.RopeTheta == 0 {
		c.RopeTheta = rs.RopeTheta
		names["rope_theta"] = "rope_parameters.rope_theta"
	}
	if rs != nil {
		if rs.RopeType != "" && rs.RopeType != "yarn" {
			bad = append(bad, &FieldError{Field: "rope_scaling.rope_type", Value: strconv.Quote(rs.RopeType),
				Want: `"yarn": only yarn is supported`})
		}
		c.RopeFactor = rs.Factor
		if rs.BetaFast != nil {
			c.RopeBetaFast = *rs.BetaFast
		}
		if rs.BetaSlow != nil {
			c.RopeBetaSlow = *rs.BetaSlow
		}
		if rs.OrigMax != nil {
			c.RopeOrigMaxPos = *rs.OrigMax
		}
		if rs.Truncate != nil {
			c.RopeTruncate = *rs.Truncate
		}
	}
	// Defaults of transformers' GptOssConfig, for keys left out; a key
	// given as 0 is refused.
	c.RMSNormEps, c.SwigluLimit, c.HeadDim = 1e-5, 7, 64
	if h.RMSNormEps != nil {
		c.RMSNormEps = *h.RMSNormEps
	}
	if h.Swiglu != nil {
		c.SwigluLimit = *h.Swiglu
	}
	if h.HeadDim != nil {
		c.HeadDim = *h.HeadDim
	}
	var fe *FieldError
	if c.EOSTokenIDs, fe = tokenIDs("eos_token_id", h.EOS); fe != nil {
		bad = append(bad, fe)
	}
	// bos and pad are not used, but a file declaring nonsense there is
	// not a checkpoint to trust.
	for _, k := range []struct {
		name string
		raw  json.RawMessage
	}{{"bos_token_id", h.BOS}, {"pad_token_id", h.Pad}} {
		if _, fe := tokenIDs(k.name, k.raw); fe != nil {
			bad = append(bad, fe)
		}
	}
	c.QuantizedExpert = h.Quantization == nil || h.Quantization.Method == "mxfp4"

	var ce *ConfigError
	if err := c.Validate(); errors.As(err, &ce) {
		bad = append(bad, ce.Fields...)
	} else if err != nil {
		return Config{}, err
	}
	if len(bad) == 0 {
		return c, nil
	}
	// Name keys as the file does, in the relations' texts too (longest
	// first: one Hugging Face key may hold another).
	hf := make([]string, 0, len(names))
	for k := range names {
		hf = append(hf, k)
	}
	sort.Slice(hf, func(i, j int) bool { return len(hf[i]) > len(hf[j]) })
	var pairs []string
	for _, k := range hf {
		pairs = append(pairs, k, names[k])
	}
	rename := strings.NewReplacer(pairs...)
	for _, e := range bad {
		if n, ok := names[e.Field]; ok {
			e.Field = n
		}
		e.Want = rename.Replace(e.Want)
		e.Missing = e.Value == "0" && !present(b, e.Field)
	}
	return Config{}, &ConfigError{Fields: bad}
}

// present reports whether the dotted key path (a.b) is in the JSON object
// doc. Names that are no key path (products, list elements) count as
// present.
func present(doc []byte, path string) bool {
	if strings.ContainsAny(path, "[ ") {
		return true
	}
	for k := range strings.SplitSeq(path, ".") {
		var obj map[string]json.RawMessage
		if json.Unmarshal(doc, &obj) != nil {
			return false
		}
		v, ok := obj[k]
		if !ok || string(v) == "null" {
			return false
		}
		doc = v
	}
	return true
}

// tokenIDs reads a special token id key: absent or null, one id, or a
// list of ids.
func tokenIDs(field string, raw json.RawMessage) ([]int, *FieldError) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var one int
	if err := json.Unmarshal(raw, &one); err == nil {
		if e := tokenID(field, one); e != nil {
			return nil, e
		}
		return []int{one}, nil
	}
	var ids []int
	if err := json.Unmarshal(raw, &ids); err != nil {
		return nil, &FieldError{Field: field, Value: string(raw), Want: "a token id or a list of token ids"}
	}
	for i, id := range ids {
		if e := tokenID(fmt.Sprintf("%s[%d]", field, i), id); e != nil {
			return nil, e
		}
	}
	return ids, nil
}
