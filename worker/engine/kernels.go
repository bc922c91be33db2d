package engine

import (
	"math"
	"runtime"
	"sync"
	"sync/atomic"
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

// expertBase is the index of expert e's first block, after checking once
// that its blocks, scales and bias (nil: none) are all there, so the
// kernels can take pointers into them.
func (m *MXFP4) expertBase(e int, bias []float32) int {
	nb := m.Cols / 32
	base := e * m.Rows * nb
	_ = m.Blocks[(base+m.Rows*nb)*16-1]
	_ = m.Scales[base+m.Rows*nb-1]
	if bias != nil {
		_ = bias[m.Rows-1]
	}
	return base
}

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

// linearChunk is the number of rows the CPUs take at a time: about a
// quarter of each one's share, at most linearStealChunk, and no chunks at
// all (one call) below 64 rows, like parallel.
func linearChunk(rows int) int {
	if rows < 64 {
		return rows
	}
	parts := 4 * runtime.GOMAXPROCS(0)
	return min(linearStealChunk, max((rows+parts-1)/parts, 16))
}

// parallelChunks runs f over [0, n) in chunks of the given size, on up to
// one goroutine per CPU, each taking the next chunk: a CPU slowed by
// another process (the coordinator, on a small machine) then holds back
// one chunk rather than half the work.
func parallelChunks(n, chunk int, f func(lo, hi int)) {
	chunks := (n + chunk - 1) / chunk
	workers := min(runtime.GOMAXPROCS(0), chunks)
	if workers <= 1 {
		for lo := 0; lo < n; lo += chunk {
			f(lo, min(lo+chunk, n))
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for c := int(next.Add(1)) - 1; c < chunks; c = int(next.Add(1)) - 1 {
				f(c*chunk, min((c+1)*chunk, n))
			}
		})
	}
	wg.Wait()
}

// rowJob is a matrix product that can be split by rows: run computes rows
// [lo, hi) for all of its tokens.
type rowJob struct {
	rows int
	run  func(lo, hi int)
}

// parallelJobs runs several products in one parallel region, each split
// into linearChunk pieces that the CPUs take in turn. A decode step's MoE
// has a product per expert and matrix, each too small to keep two CPUs
// busy to its end: one region for all of them (instead of one each)
// saves the wake-ups and the wait for the slowest CPU at every product.
func parallelJobs(jobs []rowJob) {
	type item struct{ j, lo, hi int }
	var items []item
	for ji, j := range jobs {
		ch := linearChunk(j.rows)
		for lo := 0; lo < j.rows; lo += ch {
			items = append(items, item{ji, lo, min(lo+ch, j.rows)})
		}
	}
	parallelChunks(len(items), 1, func(lo, hi int) {
		for _, it := range items[lo:hi] {
			jobs[it.j].run(it.lo, it.hi)
		}
	})
}

// intoMatrix runs the job that job builds for out's first cols columns,
// through a scratch matrix copied out afterwards when out's rows are not
// one matrix (the job builders want one).
func intoMatrix(out [][]float32, cols int, job func(res [][]float32) rowJob) {
	if rowStride(out) != 0 {
		parallelJobs([]rowJob{job(out)})
		return
	}
	res := matrix(len(out), cols)
	parallelJobs([]rowJob{job(res)})
	for t := range out {
		copy(out[t][:cols], res[t])
	}
}

// linear computes out[t] = W·x[t] + bias for every row t of x. Each
// weight row is converted in registers and used for every token while it
// is in cache. Every token goes through the same arithmetic whatever else
// is in the step, so results do not depend on batching (a sequence gets
// the same logits, and the same greedy tokens, alone or with 63 others):
// the vector kernels group tokens and rows differently but give every
// (row, token) dotBF16's exact operations.
func linear(w *Mat, bias []float32, x, out [][]float32) {
	if len(x) == 0 {
		return
	}
	if useAVX2 && w.F32 == nil && w.Cols > 0 && w.Cols%16 == 0 {
		linearAVX2(w, bias, x, out)
		return
	}
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
			for t := range x {
				out[t][r] = dotBF16(row, x[t]) + b
			}
		}
	})
}

// linearRowChunk is how many weight rows one kernel call covers: with
// every token of a step, a call works in the L1 cache and lasts
// microseconds (assembly cannot be preempted).
const linearRowChunk = 256

// linearStealChunk is the unit of work the CPUs take turns at: long enough
// runs of memory for the hardware prefetchers (the memory-bound single
// token's unembedding takes half as long again in 256-row pieces), short
// enough to rebalance when another process takes a CPU for a while.
const linearStealChunk = 16 * linearRowChunk

// linearAVX2 is linear for bf16 rows of a multiple of 16: the kernels
// take a block of rows and all the tokens at once, so a small model's
// short rows cost no Go call, horizontal sum and scattered store each.
// They compute every (row, token) exactly as dotBF16 does.
func linearAVX2(w *Mat, bias []float32, x, out [][]float32) {
	n, rows := w.Cols, w.Rows
	if rows == 0 {
		return
	}
	for t := range x {
		_, _ = x[t][n-1], out[t][rows-1] // bounds, checked once
	}
	_ = w.BF16[(rows-1)*w.stride()+n-1]
	if bias != nil {
		_ = bias[rows-1]
	}
	xs, os := rowStride(x), rowStride(out)
	if xs == 0 || os == 0 { // not one matrix each: token by token
		parallel(rows, func(lo, hi int) {
			for r := lo; r < hi; r += linearRowChunk {
				m := min(linearRowChunk, hi-r)
				for t := range x {
					bf16Rows(w, bias, r, m, x[t], 0, 1, out[t][r:], 0)
				}
			}
		})
		return
	}
	xa, oa := x[0][:cap(x[0])], out[0][:cap(out[0])]
	parallelChunks(rows, linearChunk(rows), func(lo, hi int) {
		for r := lo; r < hi; r += linearRowChunk {
			bf16Rows(w, bias, r, min(linearRowChunk, hi-r), xa, xs, len(x), oa[r:], os)
		}
	})
}

// bf16Rows computes rows [r, r+m) of w (bf16, Cols a multiple of 16) for
// ntok tokens: out[t·os + i] = row r+i · x[t·xs:] + bias[r+i], with the
// vector kernel that suits.
func bf16Rows(w *Mat, bias []float32, r, m int, x []float32, xs, ntok int, out []float32, os int) {
	n, ws := w.Cols, w.stride()
	wr := w.BF16[r*ws:]
	var b *float32
	if bias != nil {
		b = &bias[r]
	}
	switch {
	case n != 64:
		dotBF16RowsAVX2(&wr[0], ws, m, n, &x[0], xs, ntok, b, &out[0], os)
	case !useAVX512:
		dotBF16Rows64AVX2(&wr[0], ws, m, &x[0], xs, ntok, b, &out[0], os)
	default:
		// Pairs of rows and groups of four tokens, then the odd row and
		// the other tokens.
		m2, t4 := m&^1, ntok&^3
		if m2 > 0 && t4 > 0 {
			dotBF16Rows64x4AVX512(&wr[0], ws, m2, &x[0], xs, t4, b, &out[0], os)
		}
		if m2 < m && t4 > 0 {
			var bo *float32
			if bias != nil {
				bo = &bias[r+m2]
			}
			dotBF16Rows64AVX512(&wr[m2*ws], ws, 1, &x[0], xs, t4, bo, &out[m2], os)
		}
		if t4 < ntok {
			dotBF16Rows64AVX512(&wr[0], ws, m, &x[t4*xs], xs, ntok-t4, b, &out[t4*os], os)
		}
	}
}

// rowStride returns s > 0 such that m[t] begins at m[0][t·s] for every t,
// with s ≥ len(m[0]) (the rows of one row-major matrix), or 0.
func rowStride(m [][]float32) int {
	if len(m) == 1 {
		return max(len(m[0]), 1)
	}
	s := cap(m[0]) - cap(m[1])
	if s < len(m[0]) || s <= 0 {
		return 0
	}
	all := m[0][:cap(m[0])]
	for t := range m {
		if len(m[t]) == 0 || t*s >= len(all) || &m[t][0] != &all[t*s] {
			return 0
		}
	}
	return s
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
