package main

import "github.com/gptoss/server/worker/engine"

// bf16Twin is the CPU reference with the CUDA backend's roundings: matrix
// inputs rounded to bf16 before every product (cuBLAS and the MoE kernels
// take bf16 operands; attention's queries too), the MoE output rounded
// once more (standing in for the bf16 SwiGLU activations between its two
// products), and keys and values stored in bf16 (the device's cache).
//
// It exists because a whole model's logits cannot be judged by a fixed
// bound: a correct bf16 device lands at a distance from the fp32 reference
// that depends on the model and the inputs. A small error in a router
// logit flips an expert choice when two experts are nearly tied, and
// random tiny models amplify noise across layers: on the golden
// checkpoints a bf16 twin's median row error ranges from 0.6% to 15%
// (l4_hd32_top2_w8_v500). Run beside the reference on the same tokens,
// the twin measures that distance, and the device is judged against it
// (see modelVerdict). The op checks, which have no routing or depth to
// amplify anything, use fixed bounds.
type bf16Twin struct{ engine.Backend }

// rounded returns a new tensor of the step holding t rounded to bf16.
func (b bf16Twin) rounded(t engine.Tensor) (engine.Tensor, error) {
	v := make([]float32, t.Rows()*t.Cols())
	if err := b.Backend.Read(t, v); err != nil {
		return nil, err
	}
	roundBF16(v)
	c, err := b.Backend.Tensor(t.Rows(), t.Cols())
	if err != nil {
		return nil, err
	}
	return c, b.Backend.Write(c, v)
}

func (b bf16Twin) roundInPlace(t engine.Tensor) error {
	v := make([]float32, t.Rows()*t.Cols())
	if err := b.Backend.Read(t, v); err != nil {
		return err
	}
	roundBF16(v)
	return b.Backend.Write(t, v)
}

func (b bf16Twin) Linear(w engine.Param, in engine.Tensor, bias bool, out engine.Tensor) error {
	r, err := b.rounded(in)
	if err != nil {
		return err
	}
	return b.Backend.Linear(w, r, bias, out)
}

func (b bf16Twin) MoE(l int, h, lg, out engine.Tensor) error {
	r, err := b.rounded(h)
	if err != nil {
		return err
	}
	if err := b.Backend.MoE(l, r, lg, out); err != nil {
		return err
	}
	return b.roundInPlace(out)
}

func (b bf16Twin) WriteKV(l int, k, v engine.Tensor) error {
	rk, err := b.rounded(k)
	if err != nil {
		return err
	}
	rv, err := b.rounded(v)
	if err != nil {
		return err
	}
	return b.Backend.WriteKV(l, rk, rv)
}

func (b bf16Twin) Attention(l int, q, out engine.Tensor) error {
	r, err := b.rounded(q)
	if err != nil {
		return err
	}
	return b.Backend.Attention(l, r, out)
}

// newTwin makes the reference's bf16 twin over w and its model.
func newTwin(w *engine.Weights, kv Spec) (Stepper, error) {
	b, err := (cpuDevice{}).Backend(w, kv)
	if err != nil {
		return nil, err
	}
	return (cpuDevice{}).Model(bf16Twin{b})
}
