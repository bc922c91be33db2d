package main

import (
	"math"

	"github.com/gptoss/server/shared/model"
)

// Traffic is the fewest bytes one decode step must move through device
// memory, as the CUDA backend stores the model (shared/reference/
// performance.md §2.2 does the same sum): every weight the step uses read
// once (dense matrices bf16; their biases, the norms and the sinks fp32;
// MXFP4 experts with fp32 biases), the KV cache each token attends over
// read once (bf16), the new KV rows and the logits written once.
// Activations are a few hundred kilobytes and left out.
//
// At batch 1 a layer uses ExpertsPerToken experts. A batch of B tokens
// uses the union of their choices: at most min(E, k·B), and E·(1−(1−k/E)^B)
// on average when routing is uniform and independent across tokens — dummy
// weights route close to uniformly, and the reference's figures (about 21
// of 32 experts at batch 8 for 20b, about 111 of 128 at batch 64 for 120b)
// are this expectation. The step's bandwidth is judged on the expectation;
// the bound is reported beside it.
type Traffic struct {
	Batch   int `json:"batch"`
	Context int `json:"context"` // positions each token attends over (full layers)

	Dense       int64   `json:"dense_bytes"`           // attention, router, norms, sinks: all layers
	ExpertBytes int64   `json:"expert_bytes"`          // one expert of one layer
	Experts     float64 `json:"experts_per_layer"`     // expected distinct experts per layer
	ExpertsMax  int     `json:"experts_per_layer_max"` // upper bound
	Unembed     int64   `json:"unembed_bytes"`
	Embed       int64   `json:"embed_bytes"` // the batch's embedding rows
	KVRead      int64   `json:"kv_read_bytes"`
	KVWrite     int64   `json:"kv_write_bytes"`
	Logits      int64   `json:"logits_bytes"` // fp32 logits written

	Total    float64 `json:"total_bytes"`     // with the expected experts
	TotalMax float64 `json:"total_bytes_max"` // with the upper bound
}

// denseLayerBytes is one layer's non-expert weights on the device.
func denseLayerBytes(c *model.Config) int64 {
	q, kv := int64(c.Heads*c.HeadDim), int64(c.KVHeads*c.HeadDim)
	h, e := int64(c.Hidden), int64(c.Experts)
	bf16 := 2 * (q*h + 2*kv*h + h*q + e*h) // q, k, v, o, router
	fp32 := 4 * (q + 2*kv + h + e + int64(c.Heads) + 2*h)
	return bf16 + fp32 // biases of q, k, v, o, router; sinks; two norms
}

// expertBytes is one expert of one layer: gate_up [2I × H] and down
// [H × I] in MXFP4 (half a byte per weight plus a scale byte per 32),
// fp32 biases.
func expertBytes(c *model.Config) int64 {
	h, i := int64(c.Hidden), int64(c.Intermediate)
	mx := func(rows, cols int64) int64 { return rows*cols/2 + rows*cols/32 }
	return mx(2*i, h) + mx(h, i) + 4*(2*i+h)
}

// expectedExperts is E·(1−(1−k/E)^B): the mean number of distinct experts
// B tokens pick when each picks k of E uniformly and independently.
func expectedExperts(experts, k, batch int) float64 {
	if batch <= 1 {
		return float64(min(k, experts))
	}
	E := float64(experts)
	return E * (1 - math.Pow(1-float64(k)/E, float64(batch)))
}

// decodeTraffic is the traffic of one decode step of batch tokens, each
// attending over ctx positions (its own included).
func decodeTraffic(c model.Config, batch, ctx int) Traffic {
	t := Traffic{Batch: batch, Context: ctx}
	L := int64(c.Layers)
	t.Dense = L*denseLayerBytes(&c) + 4*int64(c.Hidden) // + final norm
	t.ExpertBytes = expertBytes(&c)
	t.Experts = expectedExperts(c.Experts, c.ExpertsPerToken, batch)
	t.ExpertsMax = min(c.Experts, c.ExpertsPerToken*batch)
	t.Unembed = 2 * int64(c.Vocab) * int64(c.Hidden)
	t.Embed = 2 * int64(batch) * int64(c.Hidden)
	kvRow := 2 * 2 * int64(c.KVHeads*c.HeadDim) // k and v, bf16
	for l := range c.Layers {
		n := ctx
		if c.Sliding(l) {
			n = min(ctx, c.SlidingWindow)
		}
		t.KVRead += int64(batch) * int64(n) * kvRow
	}
	t.KVWrite = L * int64(batch) * kvRow
	t.Logits = 4 * int64(batch) * int64(c.Vocab)
	fixed := float64(t.Dense + t.Unembed + t.Embed + t.KVRead + t.KVWrite + t.Logits)
	t.Total = fixed + float64(L)*t.Experts*float64(t.ExpertBytes)
	t.TotalMax = fixed + float64(L)*float64(t.ExpertsMax)*float64(t.ExpertBytes)
	return t
}

// prefillFLOPs is the arithmetic of a prefill of n tokens of one sequence
// from position 0: two FLOPs per weight each token multiplies (attention,
// router, its k experts; the unembedding for the last token only) plus the
// attention products (QKᵀ and PV over the causal prefix, the window on
// sliding layers).
func prefillFLOPs(c model.Config, n int) float64 {
	q, kv := float64(c.Heads*c.HeadDim), float64(c.KVHeads*c.HeadDim)
	h, i := float64(c.Hidden), float64(c.Intermediate)
	perTok := 2 * (q*h + 2*kv*h + h*q + float64(c.Experts)*h + float64(c.ExpertsPerToken)*(2*i*h+h*i))
	total := float64(c.Layers) * perTok * float64(n)
	for l := range c.Layers {
		var pairs float64 // (query, key) pairs over the causal prefix
		for p := range n {
			vis := p + 1
			if c.Sliding(l) {
				vis = min(vis, c.SlidingWindow)
			}
			pairs += float64(vis)
		}
		total += 2 * 2 * pairs * float64(c.Heads*c.HeadDim)
	}
	return total + 2*float64(c.Vocab)*h
}

// weightBytes is the whole model's weights on the device.
func weightBytes(c model.Config) int64 {
	L := int64(c.Layers)
	return L*(denseLayerBytes(&c)+int64(c.Experts)*expertBytes(&c)) + 4*int64(c.Vocab)*int64(c.Hidden) + 4*int64(c.Hidden)
}
