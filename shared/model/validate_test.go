package model

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// deleted, as a case's value, removes the key.
type deleted struct{}

// edit returns doc with the dotted key path set to v (or removed).
func edit(t testing.TB, doc []byte, path string, v any) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		t.Fatal(err)
	}
	keys := strings.Split(path, ".")
	obj := m
	for _, k := range keys[:len(keys)-1] {
		next, ok := obj[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			obj[k] = next
		}
		obj = next
	}
	last := keys[len(keys)-1]
	if _, ok := v.(deleted); ok {
		delete(obj, last)
	} else {
		obj[last] = v
	}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// loadDoc writes doc as dir/config.json and loads it.
func loadDoc(t *testing.T, doc []byte) (Config, string, error) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.json")
	if err := os.WriteFile(path, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(dir)
	return c, path, err
}

// TestConfigLimits: one case per architecture value (zero, negative,
// absurdly large, inconsistent with another) on the real gpt-oss-20b
// config.json; each is refused at load with an error naming the file,
// the key as the file spells it and the allowed range.
func TestConfigLimits(t *testing.T) {
	base := readFixture(t, "gpt-oss-20b/config.json")
	types23 := make([]string, 23)
	for i := range types23 {
		types23[i] = "full_attention"
	}
	unknown := append(slices.Clone(types23), "global_attention")
	for _, tc := range []struct {
		name  string
		key   string // dotted path in config.json
		value any
		field string // the key the error must name (default: key)
		msg   string // more text the error must hold
	}{
		{"layers zero", "num_hidden_layers", 0, "", "num_hidden_layers is 0 (want 1 to 1024)"},
		{"layers negative", "num_hidden_layers", -24, "", "is -24"},
		{"layers huge", "num_hidden_layers", 1 << 40, "", "is 1099511627776"},
		{"layers vs layer_types", "num_hidden_layers", 23, "layer_types", "one entry per layer"},
		{"hidden zero", "hidden_size", 0, "", "multiple of 32"},
		{"hidden negative", "hidden_size", -2880, "", ""},
		{"hidden huge", "hidden_size", 1 << 30, "", ""},
		{"hidden not a multiple of 32", "hidden_size", 2881, "", "multiple of 32"},
		{"heads zero", "num_attention_heads", 0, "", ""},
		{"heads negative", "num_attention_heads", -64, "", ""},
		{"heads huge", "num_attention_heads", 1 << 20, "", ""},
		{"heads not a multiple of kv heads", "num_attention_heads", 60, "num_key_value_heads", "divisor of num_attention_heads 60"},
		{"kv heads zero", "num_key_value_heads", 0, "", ""},
		{"kv heads negative", "num_key_value_heads", -8, "", ""},
		{"kv heads huge", "num_key_value_heads", 4096, "", ""},
		{"kv heads above heads", "num_key_value_heads", 128, "", "divisor"},
		{"kv heads not dividing", "num_key_value_heads", 7, "", "divisor"},
		{"head_dim zero", "head_dim", 0, "", "head_dim is 0"},
		{"head_dim negative", "head_dim", -64, "", ""},
		{"head_dim huge", "head_dim", 1 << 20, "", ""},
		{"head_dim odd", "head_dim", 63, "", "even"},
		{"intermediate zero", "intermediate_size", 0, "", ""},
		{"intermediate negative", "intermediate_size", -1, "", ""},
		{"intermediate huge", "intermediate_size", 1 << 30, "", ""},
		{"intermediate not a multiple of 32", "intermediate_size", 100, "", "multiple of 32"},
		{"experts zero", "num_local_experts", 0, "", ""},
		{"experts negative", "num_local_experts", -32, "", ""},
		{"experts huge", "num_local_experts", 1 << 20, "", ""},
		{"experts below experts per token", "num_local_experts", 2, "num_experts_per_tok", "at most num_local_experts 2"},
		{"experts per token zero", "num_experts_per_tok", 0, "", ""},
		{"experts per token negative", "num_experts_per_tok", -4, "", ""},
		{"experts per token huge", "num_experts_per_tok", 5000, "", ""},
		{"experts per token above experts", "num_experts_per_tok", 33, "", "at most num_local_experts 32"},
		{"vocab zero", "vocab_size", 0, "", ""},
		{"vocab negative", "vocab_size", -1, "", ""},
		{"vocab huge", "vocab_size", 1 << 30, "", ""},
		{"vocab × hidden", "vocab_size", 1 << 22, "vocab_size × hidden_size", "2^34"},
		{"sliding window zero", "sliding_window", 0, "", ""},
		{"sliding window negative", "sliding_window", -128, "", ""},
		{"sliding window huge", "sliding_window", 1 << 40, "", ""},
		{"sliding window above context", "sliding_window", 200000, "", "at most max_position_embeddings 131072"},
		{"max positions zero", "max_position_embeddings", 0, "", "max_position_embeddings is 0 (want 128 to 16777216)"},
		{"max positions missing", "max_position_embeddings", deleted{}, "", "max_position_embeddings is not set (want 128 to 16777216)"},
		{"max positions negative", "max_position_embeddings", -131072, "", ""},
		{"max positions huge", "max_position_embeddings", 1 << 40, "", "is 1099511627776"},
		{"max positions just above the cap", "max_position_embeddings", 1<<24 + 1, "", ""},
		{"max positions tiny", "max_position_embeddings", 64, "", "is 64"},
		{"rope theta zero", "rope_theta", 0, "", ""},
		{"rope theta missing", "rope_theta", deleted{}, "", "rope_theta is not set"},
		{"rope theta negative", "rope_theta", -150000, "", ""},
		{"rope theta one", "rope_theta", 1, "", "above 1"},
		{"rope theta huge", "rope_theta", 1e300, "", ""},
		{"yarn factor zero", "rope_scaling.factor", 0, "", ""},
		{"yarn factor negative", "rope_scaling.factor", -32, "", ""},
		{"yarn factor below one", "rope_scaling.factor", 0.5, "", ""},
		{"yarn factor huge", "rope_scaling.factor", 1e9, "", ""},
		{"yarn factor missing", "rope_scaling.factor", deleted{}, "", "rope_scaling.factor is not set"},
		{"yarn original positions zero", "rope_scaling.original_max_position_embeddings", 0, "", ""},
		{"yarn original positions negative", "rope_scaling.original_max_position_embeddings", -4096, "", ""},
		{"yarn original positions huge", "rope_scaling.original_max_position_embeddings", 1 << 40, "", ""},
		{"yarn beta fast zero", "rope_scaling.beta_fast", 0, "", ""},
		{"yarn beta fast negative", "rope_scaling.beta_fast", -32, "", ""},
		{"yarn beta fast huge", "rope_scaling.beta_fast", 1e300, "", ""},
		{"yarn beta fast below beta slow", "rope_scaling.beta_fast", 0.5, "", "at least rope_scaling.beta_slow 1"},
		{"yarn beta slow zero", "rope_scaling.beta_slow", 0, "", ""},
		{"yarn beta slow negative", "rope_scaling.beta_slow", -1, "", ""},
		{"yarn beta slow huge", "rope_scaling.beta_slow", 1e300, "", ""},
		{"yarn beta slow above beta fast", "rope_scaling.beta_slow", 64, "rope_scaling.beta_fast", "rope_scaling.beta_slow 64"},
		{"rope type", "rope_scaling.rope_type", "linear", "", "only yarn"},
		{"rms eps zero", "rms_norm_eps", 0, "", "rms_norm_eps is 0"},
		{"rms eps negative", "rms_norm_eps", -1e-5, "", ""},
		{"rms eps huge", "rms_norm_eps", 1, "", ""},
		{"rms eps below fp32 use", "rms_norm_eps", 1e-30, "", ""},
		{"swiglu limit zero", "swiglu_limit", 0, "", "swiglu_limit is 0"},
		{"swiglu limit negative", "swiglu_limit", -7, "", ""},
		{"swiglu limit huge", "swiglu_limit", 1e30, "", ""},
		{"layer type unknown", "layer_types", unknown, "layer_types[23]", `"global_attention"`},
		{"layer types too few", "layer_types", types23, "layer_types", "is 23 entries"},
		{"eos negative", "eos_token_id", -1, "", "eos_token_id is -1"},
		{"eos huge", "eos_token_id", 1 << 40, "", ""},
		{"eos list", "eos_token_id", []int{200002, -5}, "eos_token_id[1]", ""},
		{"eos not an id", "eos_token_id", "return", "", "a token id or a list"},
		{"pad negative", "pad_token_id", -1, "", ""},
		{"bos huge", "bos_token_id", 1 << 40, "", ""},
		// 1024 layers of 256 experts at 5760 wide: each layer fits, the
		// model (≈ 13 T parameters) does not.
		{"parameter count", "num_hidden_layers", 1024, "parameter count", "2^42"},
		{"expert tensor", "num_local_experts", 1024, "num_local_experts × intermediate_size × hidden_size", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := edit(t, base, tc.key, tc.value)
			switch tc.name {
			case "layers negative", "layers huge", "layers zero", "parameter count":
				doc = edit(t, doc, "layer_types", deleted{})
			}
			if tc.name == "parameter count" {
				doc = edit(t, edit(t, doc, "num_local_experts", 256), "intermediate_size", 5760)
			}
			if tc.name == "vocab × hidden" {
				doc = edit(t, doc, "hidden_size", 8192)
			}
			if tc.name == "expert tensor" {
				doc = edit(t, doc, "intermediate_size", 1<<15)
			}
			_, path, err := loadDoc(t, doc)
			if err == nil {
				t.Fatalf("%s = %v accepted", tc.key, tc.value)
			}
			field := tc.field
			if field == "" {
				field = tc.key
			}
			msg := err.Error()
			if !strings.Contains(msg, path) || !strings.Contains(msg, field+" is ") || !strings.Contains(msg, "(want ") ||
				!strings.Contains(msg, tc.msg) {
				t.Fatalf("%s = %v: %v\nwant the path, %q, its range and %q", tc.key, tc.value, err, field, tc.msg)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("no *FieldError in %v", err)
			}
		})
	}
}

// TestConfigLimitsOriginalNames: a config in OpenAI's original key names
// is refused under the names it uses.
func TestConfigLimitsOriginalNames(t *testing.T) {
	base := readFixture(t, "gpt-oss-120b-original/original/config.json")
	for _, tc := range []struct {
		key   string
		value any
		msg   string
	}{
		{"num_experts", 0, "num_experts is 0"},
		{"experts_per_token", 200, "experts_per_token is 200 (want at most num_experts 128)"},
		{"rope_ntk_alpha", deleted{}, "rope_ntk_alpha is not set"},
		{"rope_ntk_beta", -1, "rope_ntk_beta is -1"},
		{"rope_scaling_factor", 0, "rope_scaling_factor is 0"},
		{"initial_context_length", 0, "initial_context_length is 0"},
		{"initial_context_length", 1 << 30, "initial_context_length is 1073741824"},
	} {
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "original"), 0o755); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "original", "config.json")
		if err := os.WriteFile(path, edit(t, base, tc.key, tc.value), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := LoadConfig(dir)
		if err == nil || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s = %v: %v, want %q", tc.key, tc.value, err, tc.msg)
		}
	}
}

// TestValidateNonFinite: NaN and infinities (which JSON cannot carry, but
// a Config built in code can) are refused, named.
func TestValidateNonFinite(t *testing.T) {
	for field, set := range map[string]func(*Config, float64){
		"rope_theta":             func(c *Config, v float64) { c.RopeTheta = v },
		"rms_norm_eps":           func(c *Config, v float64) { c.RMSNormEps = v },
		"swiglu_limit":           func(c *Config, v float64) { c.SwigluLimit = v },
		"rope_scaling.factor":    func(c *Config, v float64) { c.RopeFactor = v },
		"rope_scaling.beta_fast": func(c *Config, v float64) { c.RopeBetaFast = v },
		"rope_scaling.beta_slow": func(c *Config, v float64) { c.RopeBetaSlow = v },
	} {
		for _, v := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
			c := Presets["20b"].Architecture()
			set(&c, v)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), field+" is ") {
				t.Errorf("%s = %v: %v", field, v, err)
			}
		}
	}
}

// TestFieldErrors: every bad value is reported at once, each as a
// *FieldError.
func TestFieldErrors(t *testing.T) {
	doc := edit(t, edit(t, readFixture(t, "gpt-oss-20b/config.json"), "max_position_embeddings", 0), "head_dim", -1)
	_, err := ParseConfig(doc)
	var ce *ConfigError
	if !errors.As(err, &ce) || len(ce.Fields) != 2 {
		t.Fatalf("%v", err)
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "head_dim" || fe.Value != "-1" || fe.Want != "an even number, 2 to 512" {
		t.Fatalf("%+v", fe)
	}
}

// TestRealConfigs: the real gpt-oss-20b and -120b config.json files (and
// 120b's original/config.json) load with the reference values, which are
// the presets'.
func TestRealConfigs(t *testing.T) {
	for dir, preset := range map[string]string{
		"gpt-oss-20b": "20b", "gpt-oss-120b": "120b", "gpt-oss-120b-original": "120b",
	} {
		c, err := LoadConfig(filepath.Join("testdata", dir))
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		want := Presets[preset].Architecture()
		if c.Layers != want.Layers || c.Hidden != want.Hidden || c.Heads != want.Heads || c.KVHeads != want.KVHeads ||
			c.HeadDim != want.HeadDim || c.Experts != want.Experts || c.ExpertsPerToken != want.ExpertsPerToken ||
			c.Intermediate != want.Intermediate || c.Vocab != want.Vocab || c.SlidingWindow != want.SlidingWindow ||
			c.MaxPositions != want.MaxPositions || c.RopeTheta != want.RopeTheta || c.RopeFactor != want.RopeFactor ||
			c.RopeBetaFast != want.RopeBetaFast || c.RopeBetaSlow != want.RopeBetaSlow ||
			c.RopeOrigMaxPos != want.RopeOrigMaxPos || c.RMSNormEps != want.RMSNormEps || c.SwigluLimit != want.SwigluLimit {
			t.Errorf("%s:\n got %+v\nwant %+v", dir, c, want)
		}
		for l := range c.Layers {
			if c.Sliding(l) != (l%2 == 0) {
				t.Errorf("%s: layer %d sliding %v", dir, l, c.Sliding(l))
			}
		}
	}
}

// repoConfigs are the architectures the tree's tests build checkpoints
// and dummy weights from (worker/engine, worker, worker/cuda,
// worker/gpucheck, scripts/integration): they must stay valid.
func repoConfigs() map[string]Config {
	out := map[string]Config{}
	for name, p := range Presets {
		out[name] = p.Architecture()
	}
	tiny := func(f func(*Config)) Config {
		c := Presets["tiny"].Architecture()
		f(&c)
		return c
	}
	out["engine tinyConfig"] = tiny(func(c *Config) { c.Vocab, c.Layers, c.SlidingWindow = 300, 3, 6 })
	out["worker test"] = tiny(func(c *Config) { c.Vocab, c.Layers = 512, 2 })
	out["integration"] = tiny(func(c *Config) { c.Vocab, c.SlidingWindow = 400, 8 })
	out["cuda testConfig"] = tiny(func(c *Config) {
		c.Layers, c.Hidden, c.Heads, c.KVHeads, c.HeadDim = 2, 64, 4, 2, 16
		c.Experts, c.ExpertsPerToken, c.Intermediate, c.Vocab = 4, 2, 64, 302
		c.SlidingWindow, c.MaxPositions = 8, 512
		c.LayerTypes = []string{"sliding_attention", "sliding_attention"}
	})
	ops := Presets["20b"].Architecture()
	ops.Layers, ops.Hidden, ops.Heads, ops.KVHeads, ops.HeadDim = 2, 320, 8, 2, 64
	ops.Experts, ops.ExpertsPerToken, ops.Intermediate, ops.Vocab = 8, 4, 192, 3001
	out["gpucheck ops"] = ops
	layer := Presets["20b"].Architecture()
	layer.Layers, layer.Vocab = 1, 16384
	out["gpucheck layer"] = layer
	return out
}

// TestRepoConfigsValid: the tiny preset, the test configurations and the
// golden checkpoints pass, in code and through their config.json.
func TestRepoConfigsValid(t *testing.T) {
	for name, c := range repoConfigs() {
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		b, err := c.HFJSON()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseConfig(b); err != nil {
			t.Errorf("%s as config.json: %v", name, err)
		}
	}
	golden, _ := filepath.Glob("../../worker/engine/testdata/golden/*/config.json")
	for _, f := range golden {
		if _, err := LoadConfig(filepath.Dir(f)); err != nil {
			t.Errorf("%v", err)
		}
	}
	t.Logf("%d golden checkpoints", len(golden))
}

// FuzzLoadConfig: any config.json bytes either fail to load or give a
// Config that validates and survives a round trip through HFJSON; nothing
// panics.
func FuzzLoadConfig(f *testing.F) {
	for _, name := range []string{"gpt-oss-20b/config.json", "gpt-oss-120b/config.json", "gpt-oss-120b-original/original/config.json"} {
		f.Add(readFixture(f, name))
	}
	for _, c := range repoConfigs() {
		b, err := c.HFJSON()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"max_position_embeddings":0}`))
	f.Add([]byte(`{"num_hidden_layers":2,"hidden_size":64,"num_attention_heads":4,"num_key_value_heads":0,"head_dim":16}`))
	f.Add([]byte(`{"rope_scaling_factor":1e308,"initial_context_length":9223372036854775807}`))
	f.Add([]byte(`{"rope_parameters":{"rope_type":"yarn","factor":32},"eos_token_id":[1,2,3]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := LoadConfig(dir)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("loaded a config that does not validate: %v", err)
		}
		if c.MaxPositions < 1 || c.Heads%c.KVHeads != 0 || c.HeadDim%2 != 0 || c.ExpertsPerToken > c.Experts {
			t.Fatalf("loaded %+v", c)
		}
		out, err := c.HFJSON()
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseConfig(out)
		if err != nil {
			t.Fatalf("HFJSON of a valid config does not load: %v\n%s", err, out)
		}
		if back.MaxPositions != c.MaxPositions || back.Vocab != c.Vocab || back.Layers != c.Layers || back.RopeTheta != c.RopeTheta {
			t.Fatalf("round trip: %+v\nwant %+v", back, c)
		}
	})
}
