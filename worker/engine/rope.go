package engine

import (
	"math"

	"github.com/gptoss/server/shared/model"
)

// rope holds YaRN-scaled rotary frequencies (shared/reference/gpt-oss.md
// §1.2), computed in float32 at the same points as Hugging Face's
// implementation so that angles, and so logits, agree to float32 rounding.
type rope struct {
	invFreq []float32 // head_dim/2 frequencies
	scale   float32   // attention scaling ("concentration") applied to cos and sin
}

func newRope(c *model.Config) *rope {
	d := c.HeadDim
	half := d / 2
	base := c.RopeTheta
	corr := func(rot float64) float64 {
		return float64(d) * math.Log(float64(c.RopeOrigMaxPos)/(rot*2*math.Pi)) / (2 * math.Log(base))
	}
	low, high := corr(c.RopeBetaFast), corr(c.RopeBetaSlow)
	if c.RopeTruncate {
		low, high = math.Floor(low), math.Ceil(high)
	}
	low, high = math.Max(low, 0), math.Min(high, float64(d-1))
	if low == high {
		high += 0.001
	}
	r := &rope{invFreq: make([]float32, half)}
	for i := range half {
		posFreq := float32(math.Pow(base, float64(float32(2*i)/float32(d))))
		extra := 1 / posFreq
		inter := 1 / (float32(c.RopeFactor) * posFreq)
		ramp := float32((float64(i) - low) / (high - low))
		ramp = min(max(ramp, 0), 1)
		extraFactor := 1 - ramp
		r.invFreq[i] = inter*(1-extraFactor) + extra*extraFactor
	}
	r.scale = float32(0.1*math.Log(c.RopeFactor) + 1)
	if c.RopeFactor <= 1 {
		r.scale = 1
	}
	return r
}

// apply rotates every head of x (heads × head_dim, half-split layout) for
// position pos.
func (r *rope) apply(x []float32, heads, headDim, pos int) {
	half := headDim / 2
	var cs, sn [256]float32
	for i := range half {
		a := float32(pos) * r.invFreq[i]
		cs[i] = float32(math.Cos(float64(a))) * r.scale
		sn[i] = float32(math.Sin(float64(a))) * r.scale
	}
	for h := range heads {
		v := x[h*headDim : (h+1)*headDim]
		for i := range half {
			a, b := v[i], v[i+half]
			v[i] = a*cs[i] - b*sn[i]
			v[i+half] = b*cs[i] + a*sn[i]
		}
	}
}
