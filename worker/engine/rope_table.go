package engine

import (
	"slices"

	"github.com/gptoss/server/shared/model"
)

// RopeTable returns the YaRN rotary inverse frequencies (head_dim/2 of
// them) and the scale applied to cos and sin, exactly as the CPU forward
// pass computes them: backends that rotate elsewhere (the CUDA backend
// uploads these) share one definition, so their angles agree.
func RopeTable(c *model.Config) (invFreq []float32, scale float32) {
	r := newRope(c)
	return slices.Clone(r.invFreq), r.scale
}
