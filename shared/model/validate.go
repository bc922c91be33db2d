package model

import (
	"fmt"
	"strconv"
	"strings"
)

// FieldError is one architecture value of a config outside what the
// server can run: the config.json key, the value as read and the allowed
// range (or the relation it breaks).
type FieldError struct {
	Field   string // config.json key, e.g. "max_position_embeddings" or "rope_scaling.factor"
	Value   string // the value read ("0", "1e+30", `"linear"`)
	Want    string // the allowed range or relation
	Missing bool   // the key is not in the file at all (Value is then the zero value)
}

func (e *FieldError) Error() string {
	if e.Missing {
		return fmt.Sprintf("%s is not set (want %s)", e.Field, e.Want)
	}
	return fmt.Sprintf("%s is %s (want %s)", e.Field, e.Value, e.Want)
}

// ConfigError lists every architecture value of a config that is out of
// range; errors.As finds each *FieldError.
type ConfigError struct {
	Fields []*FieldError
}

func (e *ConfigError) Error() string {
	s := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		s[i] = f.Error()
	}
	return "invalid gpt-oss architecture: " + strings.Join(s, "; ")
}

// Unwrap returns the field errors.
func (e *ConfigError) Unwrap() []error {
	out := make([]error, len(e.Fields))
	for i, f := range e.Fields {
		out[i] = f
	}
	return out
}

// Caps shared by the table and the relations below.
const (
	maxVocab     = 1 << 22 // token ids and vocab_size
	maxPositions = 1 << 24 // max_position_embeddings and anything positional
	// maxEmbedElems bounds vocab_size × hidden_size, the embedding (and the
	// unembedding): 16 Gi elements is 32 GiB in bf16 each; gpt-oss has
	// 201088 × 2880 ≈ 0.58 Gi.
	maxEmbedElems = 1 << 34
	// maxExpertElems bounds one layer's gate_up tensor, num_local_experts ×
	// 2·intermediate_size × hidden_size elements: 64 Gi elements is 32 GiB
	// in MXFP4. gpt-oss-120b: 128 × 5760 × 2880 ≈ 2 Gi.
	maxExpertElems = 1 << 36
	// maxParams bounds the whole model's parameter count: 4.4 T parameters
	// is over 2 TB even in MXFP4, beyond every machine this server runs on.
	// gpt-oss-120b has 116.8 G (≈ 2^36.8).
	maxParams = 1 << 42
)

// limit is one row of the architecture table: the allowed range of one
// config.json value. Exactly one of i and f is set. Comparisons are made
// in float64 (exact for every int bound here) and written so that NaN
// fails them.
type limit struct {
	field    string // Hugging Face config.json key
	lo, hi   float64
	loOpen   bool // lo itself is refused (lo < v)
	multiple int  // the value must be a multiple of this (0: any)
	i        func(*Config) int
	f        func(*Config) float64
}

// limits is every architecture value a checkpoint declares, with the
// range the server accepts. Each range holds the real gpt-oss-20b and
// -120b values (shared/reference/gpt-oss.md §1.1, in brackets), the tiny
// preset and every test checkpoint in the tree (vocab 300–3001, 1–4
// layers, hidden 64–320, head_dim 16–64, window 6–16, 512 positions), and
// refuses zero, negative and absurd values. The upper caps are far above
// any published model: they catch garbage and sizes whose products would
// overflow or need absurd memory (the products themselves are checked
// against maxEmbedElems, maxExpertElems and maxParams).
var limits = []limit{
	// [24, 36]. Per-layer tables (KV cache, weights) are sized by it; the
	// deepest published transformers have ~130 layers.
	{field: "num_hidden_layers", lo: 1, hi: 1024, i: func(c *Config) int { return c.Layers }},
	// [2880]. MXFP4 packs the experts' input dimension in blocks of 32
	// values, and hidden_size is gate_up's input dimension. 65536 is four
	// times the widest published model.
	{field: "hidden_size", lo: 32, hi: 1 << 16, multiple: 32, i: func(c *Config) int { return c.Hidden }},
	// [64]. Published models use at most 128 query heads.
	{field: "num_attention_heads", lo: 1, hi: 1024, i: func(c *Config) int { return c.Heads }},
	// [8]. It must also divide num_attention_heads (GQA), checked below.
	{field: "num_key_value_heads", lo: 1, hi: 1024, i: func(c *Config) int { return c.KVHeads }},
	// [64]. RoPE rotates halves, so it is even; 512 is the most any backend
	// here runs (the CPU engine's rope table; the CUDA kernels stop at 256
	// and say so). q_proj is hidden → heads·head_dim, which gpt-oss does
	// not tie to hidden_size (64·64 = 4096 ≠ 2880), so nothing relates
	// them.
	{field: "head_dim", lo: 2, hi: 512, multiple: 2, i: func(c *Config) int { return c.HeadDim }},
	// [2880]. down_proj's input dimension, in MXFP4 blocks of 32; dense
	// models' widest is ~53k.
	{field: "intermediate_size", lo: 32, hi: 1 << 18, multiple: 32, i: func(c *Config) int { return c.Intermediate }},
	// [32, 128]. The router has one row per expert; published MoEs have at
	// most a few hundred.
	{field: "num_local_experts", lo: 1, hi: 1024, i: func(c *Config) int { return c.Experts }},
	// [4]. Also at most num_local_experts, checked below.
	{field: "num_experts_per_tok", lo: 1, hi: 1024, i: func(c *Config) int { return c.ExpertsPerToken }},
	// [201088; tests cut it to a few hundred]. 4 Mi rows is twenty times
	// the largest tokenizer.
	{field: "vocab_size", lo: 1, hi: maxVocab, i: func(c *Config) int { return c.Vocab }},
	// [128]. Also at most max_position_embeddings, checked below.
	{field: "sliding_window", lo: 1, hi: maxPositions, i: func(c *Config) int { return c.SlidingWindow }},
	// [131072; tiny 4096]. It is the served context length: below 128
	// tokens not even the Harmony system header the coordinator always
	// renders plus a question and an answer fit, so every request would be
	// refused (issue 14); 16 Mi is 128 times gpt-oss's trained context.
	{field: "max_position_embeddings", lo: 128, hi: maxPositions, i: func(c *Config) int { return c.MaxPositions }},
	// [150000]. YaRN divides by ln θ (the correction range), so θ must
	// exceed 1; published bases go up to a few 1e9.
	{field: "rope_theta", lo: 1, loOpen: true, hi: 1e12, f: func(c *Config) float64 { return c.RopeTheta }},
	// [32]. YaRN's context-extension factor: below 1 it would shrink the
	// context (transformers refuses it too); above 1024 the scaled
	// frequencies are meaningless.
	{field: "rope_scaling.factor", lo: 1, hi: 1024, f: func(c *Config) float64 { return c.RopeFactor }},
	// [4096]. The pre-training context YaRN extends from; a position, so
	// the same cap as max_position_embeddings.
	{field: "rope_scaling.original_max_position_embeddings", lo: 1, hi: maxPositions, i: func(c *Config) int { return c.RopeOrigMaxPos }},
	// [32] and [1]. YaRN takes ln(L0 / (β·2π)), so β > 0; far above L0 the
	// correction range is clamped anyway. beta_fast ≥ beta_slow is checked
	// below.
	{field: "rope_scaling.beta_fast", lo: 0, loOpen: true, hi: 1e6, f: func(c *Config) float64 { return c.RopeBetaFast }},
	{field: "rope_scaling.beta_slow", lo: 0, loOpen: true, hi: 1e6, f: func(c *Config) float64 { return c.RopeBetaSlow }},
	// [1e-5]. Computed in fp32: it must be positive (a zero row would
	// divide by zero) and well above fp32's smallest normal; an eps near
	// mean(x²) ≈ 1 would stop normalising.
	{field: "rms_norm_eps", lo: 1e-12, hi: 0.1, f: func(c *Config) float64 { return c.RMSNormEps }},
	// [7.0]. The SwiGLU clamp: a non-positive limit clamps everything to
	// nonsense; 1e6 is beyond any activation.
	{field: "swiglu_limit", lo: 0, loOpen: true, hi: 1e6, f: func(c *Config) float64 { return c.SwigluLimit }},
}

func (l *limit) want() string {
	n := num
	if l.i != nil {
		n = func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	}
	s := fmt.Sprintf("%s to %s", n(l.lo), n(l.hi))
	if l.loOpen {
		s = fmt.Sprintf("above %s and at most %s", n(l.lo), n(l.hi))
	}
	switch l.multiple {
	case 0:
	case 2:
		s = "an even number, " + s
	default:
		s = fmt.Sprintf("a multiple of %d, %s", l.multiple, s)
	}
	return s
}

func (l *limit) check(c *Config) *FieldError {
	var v float64
	var text string
	if l.i != nil {
		n := l.i(c)
		v, text = float64(n), strconv.Itoa(n)
		if l.multiple > 0 && n%l.multiple != 0 {
			return &FieldError{Field: l.field, Value: text, Want: l.want()}
		}
	} else {
		v = l.f(c)
		text = num(v)
	}
	ok := v >= l.lo && v <= l.hi
	if l.loOpen {
		ok = v > l.lo && v <= l.hi
	}
	if !ok {
		return &FieldError{Field: l.field, Value: text, Want: l.want()}
	}
	return nil
}

func num(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// Validate checks every architecture value against the limits table and
// the relations between them, and returns a *ConfigError naming each value
// that is out of range, or nil.
func (c Config) Validate() error {
	var bad []*FieldError
	for i := range limits {
		if e := limits[i].check(&c); e != nil {
			bad = append(bad, e)
		}
	}
	for i, t := range c.LayerTypes {
		if t != "sliding_attention" && t != "full_attention" {
			bad = append(bad, &FieldError{Field: fmt.Sprintf("layer_types[%d]", i), Value: strconv.Quote(t),
				Want: `"sliding_attention" or "full_attention"`})
		}
	}
	for i, id := range c.EOSTokenIDs {
		if e := tokenID(fmt.Sprintf("eos_token_id[%d]", i), id); e != nil {
			bad = append(bad, e)
		}
	}
	if len(bad) > 0 {
		// The relations below divide by and multiply these values: only
		// in range are they safe and meaningful.
		return &ConfigError{Fields: bad}
	}
	rel := func(field string, value int, want string, args ...any) {
		bad = append(bad, &FieldError{Field: field, Value: strconv.Itoa(value), Want: fmt.Sprintf(want, args...)})
	}
	// Grouped-query attention: query head h reads KV head h / (heads/kv).
	if c.Heads%c.KVHeads != 0 {
		rel("num_key_value_heads", c.KVHeads, "a divisor of num_attention_heads %d", c.Heads)
	}
	// The router picks the top num_experts_per_tok of num_local_experts.
	if c.ExpertsPerToken > c.Experts {
		rel("num_experts_per_tok", c.ExpertsPerToken, "at most num_local_experts %d", c.Experts)
	}
	// A window longer than the context is a full layer in disguise and
	// sizes the sliding KV ring past anything a sequence can use.
	if c.SlidingWindow > c.MaxPositions {
		rel("sliding_window", c.SlidingWindow, "at most max_position_embeddings %d", c.MaxPositions)
	}
	// One entry per layer when given.
	if len(c.LayerTypes) != 0 && len(c.LayerTypes) != c.Layers {
		bad = append(bad, &FieldError{Field: "layer_types", Value: fmt.Sprintf("%d entries", len(c.LayerTypes)),
			Want: fmt.Sprintf("one entry per layer: num_hidden_layers %d", c.Layers)})
	}
	// YaRN's ramp runs from the beta_fast dimension to the beta_slow one;
	// reversed, it blends the frequencies the wrong way round.
	if c.RopeBetaFast < c.RopeBetaSlow {
		bad = append(bad, &FieldError{Field: "rope_scaling.beta_fast", Value: num(c.RopeBetaFast),
			Want: "at least rope_scaling.beta_slow " + num(c.RopeBetaSlow)})
	}
	// Sizes: products in float64, which cannot overflow with the table's
	// bounds (and the engine's int products stay far below 2^63).
	V, H, L := float64(c.Vocab), float64(c.Hidden), float64(c.Layers)
	E, I := float64(c.Experts), float64(c.Intermediate)
	q, kv := float64(c.Heads*c.HeadDim), float64(c.KVHeads*c.HeadDim)
	if V*H > maxEmbedElems {
		bad = append(bad, &FieldError{Field: "vocab_size × hidden_size", Value: fmt.Sprintf("%d × %d", c.Vocab, c.Hidden),
			Want: "at most 2^34 embedding elements"})
	}
	if E*2*I*H > maxExpertElems {
		bad = append(bad, &FieldError{Field: "num_local_experts × intermediate_size × hidden_size",
			Value: fmt.Sprintf("%d × %d × %d", c.Experts, c.Intermediate, c.Hidden),
			Want:  "at most 2^36 gate_up elements (experts × 2·intermediate × hidden) per layer"})
	}
	attn := H*q + q + 2*(H*kv+kv) + q*H + H + float64(c.Heads) // q, k, v, o with biases, sinks
	moe := E*H + E + E*(2*I*H+2*I+I*H+H)                       // router, gate_up, down with biases
	params := L*(attn+moe+2*H) + 2*V*H + H                     // + 2 norms per layer, embeddings, final norm
	if params > maxParams {
		bad = append(bad, &FieldError{Field: "parameter count", Value: num(params),
			Want: "at most 2^42, from num_hidden_layers, hidden_size, num_local_experts, intermediate_size, vocab_size"})
	}
	if len(bad) > 0 {
		return &ConfigError{Fields: bad}
	}
	return nil
}

// tokenID checks a special token id (eos, bos, pad). It is not tied to
// vocab_size: checkpoints made for tests cut the vocabulary to a few
// hundred rows but keep Harmony's ids (HFJSON writes eos 200002), and the
// server takes its stop tokens from the Harmony encoding
// (coordinator/tokenizer), not from here.
func tokenID(field string, id int) *FieldError {
	if id < 0 || id >= maxVocab {
		return &FieldError{Field: field, Value: strconv.Itoa(id), Want: fmt.Sprintf("0 to %d", maxVocab-1)}
	}
	return nil
}
