package engine

// The forward pass (forward.go) is written once against Backend; a backend
// owns a device: its copy of the weights, its KV cache pools and its
// activation memory. The CPU backend (cpu.go) computes in float32 and is the
// reference; the CUDA backend (worker/cuda) runs kernels/ and cuBLAS and is
// checked op by op against the CPU one (scripts/gpu-check).
//
// Ops are enqueued in order and may run asynchronously: a backend may
// return an error from the op that failed or from a later one, and Read is
// the point where the host sees results. Tensors are float32 activation
// matrices as far as the forward pass is concerned; a backend may keep
// them in any precision it documents.

// Tensor is a backend's activation matrix [Rows × Cols].
type Tensor interface {
	Rows() int
	Cols() int
}

// Param names a weight of the model; a backend resolves it to its own copy.
type Param struct {
	Layer int // -1 for the embedding, final norm and unembedding
	Name  ParamName
}

// ParamName is the role of a weight within its layer.
type ParamName int

// The weights of a layer, and the model-wide ones (Layer -1).
const (
	ParamAttnNorm ParamName = iota // vector [Hidden]
	ParamMLPNorm                   // vector [Hidden]
	ParamQ                         // dense with bias
	ParamK                         // dense with bias
	ParamV                         // dense with bias
	ParamO                         // dense with bias (bias added once, after the all-reduce)
	ParamRouter                    // dense with bias
	ParamNorm                      // final norm vector (Layer -1)
	ParamUnembed                   // dense, no bias (Layer -1); this rank's vocabulary rows
)

// StepLayout is what every op of one step may need to know about its
// tokens: built once by the forward pass, handed to Backend.Begin.
type StepLayout struct {
	// Token t is IDs[t] at position Pos[t] of sequence Seq[t].
	IDs, Pos, Seq []int
	// Tables[s] is sequence s's full-attention block table and Sliding[s]
	// its sliding-window one (the same slice when one pool serves both).
	Tables, Sliding [][]int
	// MaxPos is the largest position in the step.
	MaxPos int
}

// Backend is one device's implementation of the ops of the gpt-oss
// forward pass. Weights, the KV cache and the collective are bound when
// the backend is made; a backend runs one step at a time.
type Backend interface {
	// Name is "cpu" or "cuda".
	Name() string
	// Weights is the (possibly sharded) weight set the backend serves.
	Weights() *Weights
	// Geometry is the KV cache's block size and pool sizes.
	Geometry() KVGeometry

	// Tensor returns a [rows × cols] activation matrix, valid until
	// EndStep (a backend may recycle its memory afterwards). Its contents
	// are undefined: every op below overwrites all of its out tensor
	// (none accumulates into it; AddRMSNorm's x and Rope's q and k are
	// updated in place), so the forward pass may reuse a tensor. No op is
	// given the same tensor as input and out.
	Tensor(rows, cols int) (Tensor, error)
	// Read copies t into dst (len Rows×Cols, row-major), waiting for the
	// ops that produce it.
	Read(t Tensor, dst []float32) error
	// Write copies src (len Rows×Cols) into t.
	Write(t Tensor, src []float32) error

	// Begin starts a step over lay. The forward pass has validated lay's
	// block tables against Geometry (a table shared by both kinds of layer
	// against the sliding pool too), so a backend may trust them.
	Begin(lay *StepLayout) error
	// EndStep releases the step's tensors.
	EndStep()

	// Embed fills x [T × Hidden] with the embeddings of the step's tokens.
	Embed(x Tensor) error
	// RMSNorm writes norm(x)·gain into out; gain is a norm Param.
	RMSNorm(x Tensor, gain Param, out Tensor) error
	// AddRMSNorm adds delta (and bias, when it is a dense Param whose bias
	// is still due, else Param{Layer: -2}) into x, then writes norm(x)·gain
	// into out.
	AddRMSNorm(x, delta Tensor, bias Param, gain Param, out Tensor) error
	// Linear writes in·Wᵀ (+ its bias when withBias) into out.
	Linear(w Param, in Tensor, withBias bool, out Tensor) error
	// Rope rotates q [T × heads·D] and k [T × kvHeads·D] for the step's
	// positions.
	Rope(q, k Tensor) error
	// WriteKV stores the step's k and v rows in layer l's cache through the
	// step's block tables.
	WriteKV(l int, k, v Tensor) error
	// Attention writes the attention of q over layer l's cache (sliding
	// window on the layers that slide, learned sinks) into out.
	Attention(l int, q, out Tensor) error
	// MoE routes h [T × Hidden] by the router logits [T × Experts] (top-k,
	// softmax over the chosen) and writes the weighted sum of this rank's
	// experts' outputs into out.
	MoE(l int, h, routerLogits, out Tensor) error
	// GatherRows writes rows of x into out (len(rows) × cols).
	GatherRows(x Tensor, rows []int, out Tensor) error
	// AllReduce sums t across the tensor-parallel ranks (no-op when whole).
	AllReduce(t Tensor) error
	// AllGather writes every rank's local [R × C], in rank order, into out
	// [ranks·R × C]: rank r's rows are out's rows r·R .. (r+1)·R-1.
	AllGather(local, out Tensor) error
}

// KVGeometry describes a backend's paged KV cache.
type KVGeometry struct {
	BlockSize     int
	Blocks        int // full-attention pool
	SlidingBlocks int // sliding-window pool
}

// noBias is the Param AddRMSNorm takes when there is no bias to add.
var noBias = Param{Layer: -2}

// NoBias is the Param for "no bias" in AddRMSNorm.
func NoBias() Param { return noBias }
