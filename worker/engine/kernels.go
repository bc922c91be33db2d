package engine

import (
	"math"
	"runtime"
	"sync"
)

// This file holds the CPU arithmetic: bf16 and MXFP4 decoding, matrix
// products that read each weight row once for every token of a step, and
// the small element-wise operations. Activations are float32 throughout.

// bf16 converts a bfloat16 bit pattern to float32 (exact).
func bf16(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

// fp4 is the FP4 E2M1 value of each nibble code.
var fp4 = [16]float32{0, 0.5, 1, 1.5, 2, 3, 4, 6, -0, -0.5, -1, -1.5, -2, -3, -4, -6}

// e8m0 is 2^(s-127) for each scale byte, as the reference's ldexp gives
// (s = 0 is the subnormal 2^-127, s = 255 is 2^128 = +Inf in float32).
var e8m0 [256]float32

func init() {
	for s := range e8m0 {
		e8m0[s] = float32(math.Ldexp(1, s-127))
	}
}

// Mat is a row-major weight matrix [Rows × Cols], stored as bf16 (usually a
// view into the memory-mapped checkpoint) or float32. Stride, when set, is
// the distance between rows, so a tensor-parallel shard can be a column
// slice of the checkpoint's matrix without a copy.
type Mat struct {
	Rows, Cols int
	Stride     int
	BF16       []uint16
	F32        []float32
}

func (m *Mat) stride() int {
	if m.Stride > 0 {
		return m.Stride
	}
	return m.Cols
}

// bf16Row is row r of a bf16 matrix.
func (m *Mat) bf16Row(r int) []uint16 {
	o := r * m.stride()
	return m.BF16[o : o+m.Cols]
}

// row decodes row r into dst (len Cols).
func (m *Mat) row(r int, dst []float32) {
	o := r * m.stride()
	if m.F32 != nil {
		copy(dst, m.F32[o:o+m.Cols])
		return
	}
	for i, b := range m.BF16[o : o+m.Cols] {
		dst[i] = bf16(b)
	}
}

// MXFP4 holds a stack of expert matrices [Experts × Rows × Cols] in MXFP4:
// per row, Cols/32 blocks of 16 bytes (low nibble = even element) and one
// E8M0 scale byte per block.
type MXFP4 struct {
	Experts, Rows, Cols int
	Blocks              []byte
	Scales              []byte
	// vector is set by prepare when every scale suits the vector kernel.
	vector bool
}

// prepare decides once per matrix whether the vector kernel applies.
func (m *MXFP4) prepare() { m.vector = useAVX2 && m.Cols > 0 && normalScales(m.Scales) }

// row decodes row r of expert e into dst (len Cols).
func (m *MXFP4) row(e, r int, dst []float32) {
	nb := m.Cols / 32
	base := (e*m.Rows + r) * nb
	blocks := m.Blocks[base*16 : (base+nb)*16]
	scales := m.Scales[base : base+nb]
	for b := 0; b < nb; b++ {
		s := e8m0[scales[b]]
		out := dst[b*32 : b*32+32]
		blk := blocks[b*16 : b*16+16]
		for j, v := range blk {
			out[2*j] = fp4[v&0x0f] * s
			out[2*j+1] = fp4[v>>4] * s
		}
	}
}

// dot is a float32 dot product with four independent accumulators.
func dot(a, b []float32) float32 {
	n := len(a)
	b = b[:n]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= n; i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < n; i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// parallel runs f over [0, n) split into contiguous chunks, one per CPU.
func parallel(n int, f func(lo, hi int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 || n < 64 {
		f(0, n)
		return
	}
	var wg sync.WaitGroup
	chunk := (n + workers - 1) / workers
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(lo, hi)
		}()
	}
	wg.Wait()
}

// linear computes out[t] = W·x[t] + bias for every row t of x. Each
// weight row is converted in registers and used for every token while it
// is in cache. Every token goes through the same arithmetic whatever else
// is in the step, so results do not depend on batching (a sequence gets
// the same logits, and the same greedy tokens, alone or with 63 others).
func linear(w *Mat, bias []float32, x, out [][]float32) {
	parallel(w.Rows, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			var b float32
			if bias != nil {
				b = bias[r]
			}
			if w.F32 != nil {
				o := r * w.stride()
				row := w.F32[o : o+w.Cols]
				for t := range x {
					out[t][r] = dot(row, x[t]) + b
				}
				continue
			}
			row := w.bf16Row(r)
			t := 0
			if useAVX2 && w.Cols > 0 && w.Cols%16 == 0 {
				// Four tokens per pass over the row: one conversion of
				// the weights, four accumulations (same order as one).
				var four [4]float32
				for ; t+4 <= len(x); t += 4 {
					dotBF16x4AVX2(&row[0], &x[t][0], &x[t+1][0], &x[t+2][0], &x[t+3][0], w.Cols, &four)
					out[t][r], out[t+1][r], out[t+2][r], out[t+3][r] = four[0]+b, four[1]+b, four[2]+b, four[3]+b
				}
			}
			for ; t < len(x); t++ {
				out[t][r] = dotBF16(row, x[t]) + b
			}
		}
	})
}

// dotBF16 is the dot product of a bf16 row with x.
func dotBF16(w []uint16, x []float32) float32 {
	n := len(w)
	x = x[:n]
	if useAVX2 && n > 0 && n%16 == 0 {
		return dotBF16AVX2(&w[0], &x[0], n)
	}
	return dotBF16Scalar(w, x)
}

// dotBF16Scalar is the portable dotBF16, and the reference its vector
// version is tested against.
func dotBF16Scalar(w []uint16, x []float32) float32 {
	n := len(w)
	x = x[:n]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= n; i += 4 {
		s0 += math.Float32frombits(uint32(w[i])<<16) * x[i]
		s1 += math.Float32frombits(uint32(w[i+1])<<16) * x[i+1]
		s2 += math.Float32frombits(uint32(w[i+2])<<16) * x[i+2]
		s3 += math.Float32frombits(uint32(w[i+3])<<16) * x[i+3]
	}
	for ; i < n; i++ {
		s0 += math.Float32frombits(uint32(w[i])<<16) * x[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// fp4Pair holds the two E2M1 values packed in each byte (low nibble first).
var fp4Pair [256][2]float32

func init() {
	for v := range fp4Pair {
		fp4Pair[v] = [2]float32{fp4[v&0x0f], fp4[v>>4]}
	}
}

// dotMXFP4 is the dot product of MXFP4 row r of expert e with x, decoding
// in registers: per 32-element block, the nibble sum times the block scale.
func (m *MXFP4) dot(e, r int, x []float32) float32 {
	nb := m.Cols / 32
	base := (e*m.Rows + r) * nb
	blocks := m.Blocks[base*16 : (base+nb)*16]
	scales := m.Scales[base : base+nb]
	x = x[:nb*32]
	if m.vector {
		return dotMXFP4AVX2(&blocks[0], &scales[0], &x[0], nb)
	}
	return m.dotScalar(e, r, x)
}

// normalScales reports whether every scale byte gives a normal float
// after halving (2 ≤ s ≤ 254), which the vector kernel builds by bit
// placement; real checkpoints stay far inside (about 118–124).
func normalScales(s []byte) bool {
	lo, hi := byte(255), byte(0)
	for _, v := range s {
		lo, hi = min(lo, v), max(hi, v)
	}
	return lo >= 2 && hi <= 254
}

// dotScalar is the portable MXFP4 row dot product, and the reference the
// vector version is tested against.
func (m *MXFP4) dotScalar(e, r int, x []float32) float32 {
	nb := m.Cols / 32
	base := (e*m.Rows + r) * nb
	blocks := m.Blocks[base*16 : (base+nb)*16]
	scales := m.Scales[base : base+nb]
	x = x[:nb*32]
	var acc float32
	for b := 0; b < nb; b++ {
		blk := blocks[b*16 : b*16+16]
		xb := x[b*32 : b*32+32]
		var s0, s1 float32
		for j := 0; j < 16; j += 2 {
			p0, p1 := &fp4Pair[blk[j]], &fp4Pair[blk[j+1]]
			s0 += p0[0]*xb[2*j] + p0[1]*xb[2*j+1]
			s1 += p1[0]*xb[2*j+2] + p1[1]*xb[2*j+3]
		}
		acc += (s0 + s1) * e8m0[scales[b]]
	}
	return acc
}

// rmsNorm writes x / sqrt(mean(x²) + eps) · gain into out.
func rmsNorm(x, gain, out []float32, eps float32) {
	var ss float32
	for _, v := range x {
		ss += v * v
	}
	inv := float32(1 / math.Sqrt(float64(ss/float32(len(x))+eps)))
	for i, v := range x {
		out[i] = gain[i] * (v * inv)
	}
}

// matrix allocates rows × cols float32s in one block.
func matrix(rows, cols int) [][]float32 {
	buf := make([]float32, rows*cols)
	m := make([][]float32, rows)
	for i := range m {
		m[i] = buf[i*cols : (i+1)*cols]
	}
	return m
}

func sigmoid(x float32) float32 { return float32(1 / (1 + math.Exp(-float64(x)))) }
