package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	OrigMax   int      `json:"original_max_position_embeddings"`
	Truncate  *bool    `json:"truncate"`
	RopeTheta float64  `json:"rope_theta"`
}

type hfConfig struct {
	Config
	RopeScaling    *ropeScaling    `json:"rope_scaling"`
	RopeParameters *ropeScaling    `json:"rope_parameters"`
	EOS            json.RawMessage `json:"eos_token_id"`
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
	OriginalLayout bool    `json:"-"`
}

// LoadConfig reads dir/config.json (Hugging Face layout) or, failing that,
// dir/original/config.json or dir/config.json in OpenAI's original key
// names, and validates it.
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

// ParseConfig decodes a config.json in either key convention.
func ParseConfig(b []byte) (Config, error) {
	var h hfConfig
	if err := json.Unmarshal(b, &h); err != nil {
		return Config{}, fmt.Errorf("parse: %w", err)
	}
	c := h.Config
	// OpenAI's original names.
	if c.Experts == 0 {
		c.Experts = h.NumExperts
	}
	if c.ExpertsPerToken == 0 {
		c.ExpertsPerToken = h.ExpertsPerTok
	}
	c.RopeFactor, c.RopeBetaFast, c.RopeBetaSlow, c.RopeOrigMaxPos = 32, 32, 1, 4096
	if h.RopeScalingFac != 0 {
		c.RopeFactor, c.RopeBetaFast, c.RopeBetaSlow = h.RopeScalingFac, h.RopeNTKBeta, h.RopeNTKAlpha
		c.RopeOrigMaxPos = h.InitialContext
		if c.MaxPositions == 0 {
			c.MaxPositions = h.InitialContext * int(h.RopeScalingFac)
		}
	}
	rs := h.RopeScaling
	if rs == nil {
		rs = h.RopeParameters
	}
	if rs != nil && rs.RopeTheta != 0 && c.RopeTheta == 0 {
		c.RopeTheta = rs.RopeTheta
	}
	if rs != nil {
		if rs.RopeType != "" && rs.RopeType != "yarn" {
			return Config{}, fmt.Errorf("rope_scaling type %q: only yarn is supported", rs.RopeType)
		}
		c.RopeFactor = rs.Factor
		if rs.BetaFast != nil {
			c.RopeBetaFast = *rs.BetaFast
		}
		if rs.BetaSlow != nil {
			c.RopeBetaSlow = *rs.BetaSlow
		}
		if rs.OrigMax != 0 {
			c.RopeOrigMaxPos = rs.OrigMax
		}
		if rs.Truncate != nil {
			c.RopeTruncate = *rs.Truncate
		}
	}
	if c.RMSNormEps == 0 {
		c.RMSNormEps = 1e-5
	}
	if c.SwigluLimit == 0 {
		c.SwigluLimit = 7
	}
	if c.HeadDim == 0 && c.Heads > 0 {
		c.HeadDim = 64
	}
	if len(h.EOS) > 0 {
		var one int
		if json.Unmarshal(h.EOS, &one) == nil {
			c.EOSTokenIDs = []int{one}
		} else {
			_ = json.Unmarshal(h.EOS, &c.EOSTokenIDs)
		}
	}
	c.QuantizedExpert = h.Quantization == nil || h.Quantization.Method == "mxfp4"
	return c, c.Validate()
}

// Validate checks that the sizes are usable.
func (c Config) Validate() error {
	switch {
	case c.Layers < 1 || c.Hidden < 1 || c.Heads < 1 || c.KVHeads < 1 || c.HeadDim < 2 || c.Vocab < 1:
		return fmt.Errorf("config: layers, hidden, heads, kv heads, head dim and vocab must be positive: %+v", c)
	case c.Heads%c.KVHeads != 0:
		return fmt.Errorf("config: %d attention heads are not a multiple of %d KV heads", c.Heads, c.KVHeads)
	case c.HeadDim%2 != 0:
		return fmt.Errorf("config: head_dim %d must be even for RoPE", c.HeadDim)
	case c.Experts < 1 || c.ExpertsPerToken < 1 || c.ExpertsPerToken > c.Experts:
		return fmt.Errorf("config: %d experts per token out of %d experts", c.ExpertsPerToken, c.Experts)
	case c.Intermediate < 1 || c.Hidden%32 != 0 || c.Intermediate%32 != 0:
		return fmt.Errorf("config: hidden %d and intermediate %d must be multiples of 32 (MXFP4 blocks)", c.Hidden, c.Intermediate)
	case c.SlidingWindow < 1:
		return fmt.Errorf("config: sliding_window %d", c.SlidingWindow)
	case len(c.LayerTypes) != 0 && len(c.LayerTypes) != c.Layers:
		return fmt.Errorf("config: %d layer_types for %d layers", len(c.LayerTypes), c.Layers)
	case c.RopeFactor <= 0 || c.RopeTheta <= 0 || c.RopeOrigMaxPos <= 0:
		return errors.New("config: rope_theta, rope factor and original_max_position_embeddings must be positive")
	}
	return nil
}
