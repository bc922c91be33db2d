package model

import (
	"strings"
	"testing"
)

func TestParseConfigKeyConventions(t *testing.T) {
	base := `"num_hidden_layers":2,"hidden_size":64,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":16,
		"intermediate_size":64,"vocab_size":100,"sliding_window":8,"max_position_embeddings":131072`
	for name, doc := range map[string]string{
		"hf v4": `{` + base + `,"num_local_experts":4,"num_experts_per_tok":2,"rope_theta":150000,
			"rope_scaling":{"rope_type":"yarn","factor":32,"beta_fast":32,"beta_slow":1,"truncate":false,"original_max_position_embeddings":4096}}`,
		"hf v5": `{` + base + `,"num_local_experts":4,"num_experts_per_tok":2,
			"rope_parameters":{"rope_type":"yarn","rope_theta":150000,"factor":32,"beta_fast":32,"beta_slow":1,"truncate":false,"original_max_position_embeddings":4096}}`,
		"original": `{` + base + `,"num_experts":4,"experts_per_token":2,"rope_theta":150000,
			"initial_context_length":4096,"rope_scaling_factor":32,"rope_ntk_alpha":1,"rope_ntk_beta":32}`,
	} {
		c, err := ParseConfig([]byte(doc))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if c.Experts != 4 || c.ExpertsPerToken != 2 || c.RopeTheta != 150000 || c.RopeFactor != 32 ||
			c.RopeBetaFast != 32 || c.RopeBetaSlow != 1 || c.RopeOrigMaxPos != 4096 || c.RopeTruncate {
			t.Fatalf("%s: %+v", name, c)
		}
		if !c.Sliding(0) || c.Sliding(1) {
			t.Fatalf("%s: layer pattern", name)
		}
	}
}

// TestConfigParseErrors: what is not a config.json object of the right
// types is a parse error (the value limits are TestConfigLimits').
func TestConfigParseErrors(t *testing.T) {
	for _, doc := range []string{`{`, `[]`, `"x"`, `{"num_hidden_layers":2.5}`, `{"hidden_size":"64"}`,
		`{"num_hidden_layers":1e30}`, `{"rope_theta":1e400}`, `{"layer_types":"full_attention"}`} {
		if _, err := ParseConfig([]byte(doc)); err == nil || !strings.Contains(err.Error(), "parse") {
			t.Errorf("%s: %v, want a parse error", doc, err)
		}
	}
}

func TestPresetsValidate(t *testing.T) {
	for name, p := range Presets {
		if err := p.Architecture().Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestHFJSONRoundTrip(t *testing.T) {
	c := Presets["tiny"].Architecture()
	b, err := c.HFJSON()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	if back.Layers != c.Layers || back.HeadDim != c.HeadDim || back.RopeFactor != c.RopeFactor || back.Sliding(0) != c.Sliding(0) ||
		back.Sliding(1) != c.Sliding(1) || !back.QuantizedExpert || back.Vocab != c.Vocab {
		t.Fatalf("round trip: %+v", back)
	}
}
