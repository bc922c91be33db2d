// moe.cu — the router's top-k and the MXFP4 mixture of experts.
//
// gx_moe has two paths that compute the same function (within bf16
// tolerance) and are both deterministic:
//  - GEMV (T <= 8, H and I <= 3072): a block row-range per (token, pick).
//    Each lane keeps the input vector's 32-element blocks it needs in
//    registers, streams 16-byte weight blocks, decodes FP4 in registers
//    (exact, through fp16 bit placement) and accumulates in fp32 with the
//    input in fp32. gate_up rows 2c and 2c+1 go to the same warp, so the
//    clamped SwiGLU is fused; the down projection adds its bias and scales
//    by the pick's weight into a per-(token, pick) buffer.
//  - grouped GEMM (otherwise): picks are grouped per local expert by a
//    counting sort on the device, then tiles of 64 picks x 64 weight rows
//    run on the tensor cores (mma.sync m16n8k16 bf16, fp32 accumulate): the
//    input rows are gathered and rounded to bf16, the weight tile decoded to
//    bf16 (exact: an FP4 value times a power of two) in shared memory.
// Both end with a combine kernel that sums a token's k picks in pick order
// (no atomics on out), so a token's result does not depend on the others.
#include <math.h>

#include "common.cuh"

namespace {

// ---- router -------------------------------------------------------------------

constexpr int kRouterMaxK = 32;

// A warp per token: k rounds of a warp-wide arg-max (ties to the lower id,
// NaN as -inf), skipping the ids already chosen; then softmax over the k.
__global__ void __launch_bounds__(256, 1) router_topk_kernel(const float *__restrict__ logits, int T, int E, int k,
                                                             int32_t *__restrict__ idx, float *__restrict__ weight) {
  __shared__ int sel[8][kRouterMaxK];
  __shared__ float val[8][kRouterMaxK];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int t = blockIdx.x * 8 + warp;
  if (t >= T) return;
  const float *lg = logits + (int64_t)t * E;
  for (int r = 0; r < k; r++) {
    float bv = -INFINITY;
    int bi = INT_MAX;
    for (int e = lane; e < E; e += 32) {
      bool taken = false;
      for (int j = 0; j < r; j++) taken |= sel[warp][j] == e;
      if (taken) continue;
      float v = lg[e];
      if (isnan(v)) v = -INFINITY;
      if (v > bv || (v == bv && e < bi)) bv = v, bi = e;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (ov > bv || (ov == bv && oi < bi)) bv = ov, bi = oi;
    }
    if (lane == 0) sel[warp][r] = bi, val[warp][r] = bv;
    __syncwarp();
  }
  if (lane == 0) {
    const float mx = val[warp][0];
    float sum = 0.f;
    for (int r = 0; r < k; r++) {
      const float e = expf(val[warp][r] - mx);
      val[warp][r] = e;
      sum += e;
    }
    for (int r = 0; r < k; r++) {
      idx[(int64_t)t * k + r] = sel[warp][r];
      weight[(int64_t)t * k + r] = val[warp][r] / sum;
    }
  }
}

// ---- GEMV path -----------------------------------------------------------------

constexpr int kGemvMaxT = 8;
constexpr int kGemvMaxNB = 3;  // input blocks of 32 per lane: H, I <= 32 * 32 * 3 = 3072
constexpr int kGemvThreads = 128;

struct GemvArgs {
  const uint8_t *blocks;  // [n_experts][rows][cols/2]
  const uint8_t *scales;  // [n_experts][rows][cols/32]
  const float *bias;      // [n_experts][rows]
  const float *in;        // gate_up: x [T][cols]; down: act [T*k][cols]
  const int32_t *idx;     // [T*k] global expert ids
  const float *weight;    // [T*k]
  float *out;             // gate_up: act [T*k][rows/2]; down: y [T*k][rows]
  int rows, cols, k, expert_lo, n_experts;
  float limit;
};

// Dot product of one 32-element MXFP4 block (q) with x[0..31] (registers),
// without the scale. The decoded values carry a factor 2^-14 that the
// caller's scale removes.
__device__ __forceinline__ float fp4_block_dot(const uint4 q, const float (&x)[32]) {
  const uint32_t w[4] = {q.x, q.y, q.z, q.w};
  float s0 = 0.f, s1 = 0.f;
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const float2 a = gx_h2_to_f2(gx_fp4_pair_h2<0>(w[i]));
    const float2 b = gx_h2_to_f2(gx_fp4_pair_h2<1>(w[i]));
    const float2 c = gx_h2_to_f2(gx_fp4_pair_h2<2>(w[i]));
    const float2 d = gx_h2_to_f2(gx_fp4_pair_h2<3>(w[i]));
    s0 = fmaf(a.x, x[8 * i + 0], s0);
    s1 = fmaf(a.y, x[8 * i + 4], s1);
    s0 = fmaf(b.x, x[8 * i + 1], s0);
    s1 = fmaf(b.y, x[8 * i + 5], s1);
    s0 = fmaf(c.x, x[8 * i + 2], s0);
    s1 = fmaf(c.y, x[8 * i + 6], s1);
    s0 = fmaf(d.x, x[8 * i + 3], s0);
    s1 = fmaf(d.y, x[8 * i + 7], s1);
  }
  return s0 + s1;
}

// Rows 2c and 2c+1 per warp iteration. GATEUP: the pair is (gate, up) of
// channel c, and the SwiGLU output goes to out[pick][c]. Otherwise: two
// output rows, (acc + bias) * weight[pick] to out[pick][2c + {0,1}].
template <int NB, bool GATEUP>
__global__ void __launch_bounds__(kGemvThreads, 1) moe_gemv_kernel(const GemvArgs a) {
  const int pick = blockIdx.y;
  const int le = a.idx[pick] - a.expert_lo;
  if (le < 0 || le >= a.n_experts) return;  // not a local expert: the combine skips it
  const int lane = threadIdx.x & 31;
  const int nblk = a.cols / 32;
  const float *in = a.in + (int64_t)(GATEUP ? pick / a.k : pick) * a.cols;

  float x[NB][32];
#pragma unroll
  for (int b = 0; b < NB; b++) {
    const int blk = lane + 32 * b;
#pragma unroll
    for (int j = 0; j < 8; j++) {
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
      if (blk < nblk) v = reinterpret_cast<const float4 *>(in + blk * 32)[j];
      x[b][4 * j] = v.x, x[b][4 * j + 1] = v.y, x[b][4 * j + 2] = v.z, x[b][4 * j + 3] = v.w;
    }
  }

  const int pairs = a.rows / 2;
  const int warp = blockIdx.x * (kGemvThreads / 32) + (threadIdx.x >> 5);
  const int nwarps = gridDim.x * (kGemvThreads / 32);
  const int64_t row_base = (int64_t)le * a.rows;
  for (int c = warp; c < pairs; c += nwarps) {
    const int64_t r0 = row_base + 2 * c;
    const uint4 *q0 = reinterpret_cast<const uint4 *>(a.blocks + r0 * nblk * 16);
    const uint4 *q1 = q0 + nblk;
    const uint8_t *s0p = a.scales + r0 * nblk;
    const uint8_t *s1p = s0p + nblk;
    uint4 w0[NB], w1[NB];
    uint32_t e0[NB], e1[NB];
#pragma unroll
    for (int b = 0; b < NB; b++) {
      const int blk = lane + 32 * b;
      if (blk < nblk) {
        w0[b] = __ldg(q0 + blk);
        w1[b] = __ldg(q1 + blk);
        e0[b] = __ldg(s0p + blk);
        e1[b] = __ldg(s1p + blk);
      } else {
        w0[b] = w1[b] = make_uint4(0, 0, 0, 0);
        e0[b] = e1[b] = 127;
      }
    }
    float acc0 = 0.f, acc1 = 0.f;
#pragma unroll
    for (int b = 0; b < NB; b++) {
      if (lane + 32 * b < nblk) {
        acc0 = fmaf(fp4_block_dot(w0[b], x[b]), gx_e8m0(e0[b], 14), acc0);
        acc1 = fmaf(fp4_block_dot(w1[b], x[b]), gx_e8m0(e1[b], 14), acc1);
      }
    }
    acc0 = gx_warp_sum(acc0);
    acc1 = gx_warp_sum(acc1);
    if (lane == 0) {
      const float *bias = a.bias + r0;
      if (GATEUP) {
        float g = acc0 + bias[0], u = acc1 + bias[1];
        g = fminf(g, a.limit);
        u = fminf(fmaxf(u, -a.limit), a.limit);
        const float sig = 1.f / (1.f + expf(-(1.702f * g)));
        a.out[(int64_t)pick * pairs + c] = g * sig * (u + 1.f);
      } else {
        const float wgt = a.weight[pick];
        float *o = a.out + (int64_t)pick * a.rows + 2 * c;
        o[0] = (acc0 + bias[0]) * wgt;
        o[1] = (acc1 + bias[1]) * wgt;
      }
    }
  }
}

// out[t] = sum over picks i (in order) whose expert is local of y[t*k + i].
__global__ void moe_combine_kernel(const float4 *__restrict__ y, const int32_t *__restrict__ idx, int k, int H4,
                                   int expert_lo, int n_experts, float4 *__restrict__ out) {
  const int t = blockIdx.x;
  for (int d = threadIdx.x; d < H4; d += blockDim.x) {
    float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int i = 0; i < k; i++) {
      const int le = idx[(int64_t)t * k + i] - expert_lo;
      if (le < 0 || le >= n_experts) continue;
      const float4 v = y[((int64_t)t * k + i) * H4 + d];
      s.x += v.x, s.y += v.y, s.z += v.z, s.w += v.w;
    }
    out[(int64_t)t * H4 + d] = s;
  }
}

// ---- grouped GEMM path -------------------------------------------------------------

constexpr int kBM = 64, kBN = 64, kBK = 32;  // picks, weight rows, inputs (one MXFP4 block)
constexpr int kGemmThreads = 128;            // 4 warps, 2 x 2, each 32 x 32
constexpr int kLds = kBK + 8;                // padded shared row (bf16): 80 bytes, ldmatrix conflict-free

struct Tile {
  int expert, start, count;
};

// Workspace layout (gx_moe_workspace): header, perm, tiles, act, y.
struct Workspace {
  int *ntiles;   // [1]
  int *perm;     // [T*k] pick index, grouped by expert
  Tile *tiles;   // [T*k] at most one tile per pick
  float *act;    // [T*k][I]
  float *y;      // [T*k][H]
};

__host__ __device__ inline int64_t ws_layout(int64_t T, int64_t k, int64_t H, int64_t I, Workspace *w, char *base) {
  const int64_t P = T * k;
  int64_t off = 0;
  auto take = [&](int64_t bytes) {
    const int64_t o = off;
    off += (bytes + 255) / 256 * 256;
    return o;
  };
  const int64_t o_n = take(16), o_perm = take(P * 4), o_tiles = take(P * (int64_t)sizeof(Tile));
  const int64_t o_act = take(P * I * 4), o_y = take(P * H * 4);
  if (w) {
    w->ntiles = reinterpret_cast<int *>(base + o_n);
    w->perm = reinterpret_cast<int *>(base + o_perm);
    w->tiles = reinterpret_cast<Tile *>(base + o_tiles);
    w->act = reinterpret_cast<float *>(base + o_act);
    w->y = reinterpret_cast<float *>(base + o_y);
  }
  return off;
}

// Counting sort of the picks by local expert, and the list of tiles of at
// most kBM picks of one expert. One block; counts in shared memory.
__global__ void __launch_bounds__(1024, 1) moe_sort_kernel(const int32_t *__restrict__ idx, int P, int expert_lo,
                                                           int n_experts, Workspace w) {
  extern __shared__ int sh[];  // counts[n_experts], cursor[n_experts]
  int *counts = sh, *cursor = sh + n_experts;
  for (int e = threadIdx.x; e < n_experts; e += blockDim.x) counts[e] = 0;
  __syncthreads();
  for (int p = threadIdx.x; p < P; p += blockDim.x) {
    const int le = idx[p] - expert_lo;
    if (le >= 0 && le < n_experts) atomicAdd(&counts[le], 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int off = 0, nt = 0;
    for (int e = 0; e < n_experts; e++) {
      const int c = counts[e];
      cursor[e] = off;
      for (int s = 0; s < c; s += kBM) w.tiles[nt++] = Tile{e, off + s, min(kBM, c - s)};
      off += c;
    }
    *w.ntiles = nt;
  }
  __syncthreads();
  // Positions within an expert's group depend on the atomics' order, but
  // every output row is computed on its own, so results do not.
  for (int p = threadIdx.x; p < P; p += blockDim.x) {
    const int le = idx[p] - expert_lo;
    if (le >= 0 && le < n_experts) w.perm[atomicAdd(&cursor[le], 1)] = p;
  }
}

__device__ __forceinline__ uint32_t smem_u32(const void *p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void *p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}

__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Decodes 8 bytes (16 FP4 values) times 2^(s-127) to 16 bf16, in order.
__device__ __forceinline__ void fp4x16_to_bf16(uint2 q, uint32_t s, uint4 &lo, uint4 &hi) {
  const float sc = gx_e8m0(s, 14);
  uint32_t out[8];
  const uint32_t w[2] = {q.x, q.y};
#pragma unroll
  for (int i = 0; i < 2; i++) {
    float v[8];
    float2 f;
    f = gx_h2_to_f2(gx_fp4_pair_h2<0>(w[i])), v[0] = f.x * sc, v[4] = f.y * sc;
    f = gx_h2_to_f2(gx_fp4_pair_h2<1>(w[i])), v[1] = f.x * sc, v[5] = f.y * sc;
    f = gx_h2_to_f2(gx_fp4_pair_h2<2>(w[i])), v[2] = f.x * sc, v[6] = f.y * sc;
    f = gx_h2_to_f2(gx_fp4_pair_h2<3>(w[i])), v[3] = f.x * sc, v[7] = f.y * sc;
#pragma unroll
    for (int j = 0; j < 4; j++) out[4 * i + j] = gx_pack_bf16x2(v[2 * j], v[2 * j + 1]);
  }
  lo = make_uint4(out[0], out[1], out[2], out[3]);
  hi = make_uint4(out[4], out[5], out[6], out[7]);
}

struct GemmArgs {
  const uint8_t *blocks, *scales;
  const float *bias;
  const float *in;  // gate_up: x [T][K] gathered through perm; down: act [pos][K]
  const float *weight;
  Workspace w;
  int N, K, k, n_experts;
  float limit;
};

// One tile of kBM picks of one expert times kBN weight rows, K in steps of
// kBK. GATEUP: N = 2I, the epilogue applies the SwiGLU to column pairs and
// writes act[pos][n/2]. DOWN: N = H, writes y[pick][n] = (acc + b) * weight.
template <bool GATEUP>
__global__ void __launch_bounds__(kGemmThreads, 4) moe_gemm_kernel(const GemmArgs a) {
  __shared__ __align__(16) uint16_t As[kBM * kLds];
  __shared__ __align__(16) uint16_t Bs[kBN * kLds];
  __shared__ int src_row[kBM];  // input row of each tile row, -1 past the tile
  __shared__ int pick_of[kBM];

  if ((int)blockIdx.x >= *a.w.ntiles) return;
  const Tile tile = a.w.tiles[blockIdx.x];
  const int n0 = blockIdx.y * kBN;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp >> 1, wn = warp & 1;
  const int nblk = a.K / 32;

  for (int i = tid; i < kBM; i += kGemmThreads) {
    int src = -1, pk = -1;
    if (i < tile.count) {
      const int pos = tile.start + i;
      pk = a.w.perm[pos];
      src = GATEUP ? pk / a.k : pos;
    }
    src_row[i] = src;
    pick_of[i] = pk;
  }
  __syncthreads();

  // Per-thread load assignments. A: 4 float4 per thread (rows ar + 16u, col
  // group ac); B: 8 bytes (half a block) of weight row br.
  const int ac = tid & 7, ar = tid >> 3;
  const int br = tid >> 1, bh = tid & 1;
  const int64_t wrow = (int64_t)tile.expert * a.N + n0 + br;
  const bool brow_ok = n0 + br < a.N;
  const uint8_t *bsrc = a.blocks + wrow * nblk * 16 + bh * 8;
  const uint8_t *ssrc = a.scales + wrow * nblk;

  float4 ra[4];
  uint2 rb;
  uint32_t rs;
  auto load = [&](int kt) {
#pragma unroll
    for (int u = 0; u < 4; u++) {
      const int src = src_row[ar + 16 * u];
      ra[u] = src >= 0 ? *reinterpret_cast<const float4 *>(a.in + (int64_t)src * a.K + kt * kBK + ac * 4)
                       : make_float4(0.f, 0.f, 0.f, 0.f);
    }
    if (brow_ok) {
      rb = *reinterpret_cast<const uint2 *>(bsrc + (int64_t)kt * 16);
      rs = ssrc[kt];
    } else {
      rb = make_uint2(0, 0);
      rs = 127;
    }
  };
  auto store = [&]() {
#pragma unroll
    for (int u = 0; u < 4; u++) {
      const float4 v = ra[u];
      *reinterpret_cast<uint2 *>(As + (ar + 16 * u) * kLds + ac * 4) =
          make_uint2(gx_pack_bf16x2(v.x, v.y), gx_pack_bf16x2(v.z, v.w));
    }
    uint4 lo, hi;
    fp4x16_to_bf16(rb, rs, lo, hi);
    *reinterpret_cast<uint4 *>(Bs + br * kLds + bh * 16) = lo;
    *reinterpret_cast<uint4 *>(Bs + br * kLds + bh * 16 + 8) = hi;
  };

  float acc[2][4][4];
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;

  load(0);
  store();
  __syncthreads();
  for (int kt = 0; kt < nblk; kt++) {
    if (kt + 1 < nblk) load(kt + 1);  // in flight during the MMAs
#pragma unroll
    for (int ks = 0; ks < kBK; ks += 16) {
      uint32_t af[2][4], bf[2][4];
#pragma unroll
      for (int mi = 0; mi < 2; mi++) {
        const int row = wm * 32 + mi * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
        const int col = ks + (lane >> 4) * 8;
        ldmatrix_x4(af[mi], As + row * kLds + col);
      }
#pragma unroll
      for (int nj = 0; nj < 2; nj++) {
        const int row = wn * 32 + nj * 16 + (lane & 7) + (lane >> 4) * 8;
        const int col = ks + ((lane >> 3) & 1) * 8;
        ldmatrix_x4(bf[nj], Bs + row * kLds + col);
      }
#pragma unroll
      for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++)
          mma_bf16(acc[mi][ni], af[mi], bf[ni >> 1][(ni & 1) * 2], bf[ni >> 1][(ni & 1) * 2 + 1]);
    }
    __syncthreads();
    if (kt + 1 < nblk) {
      store();
      __syncthreads();
    }
  }

  // Epilogue.
  const int g = lane >> 2, tg = lane & 3;
#pragma unroll
  for (int mi = 0; mi < 2; mi++) {
#pragma unroll
    for (int hr = 0; hr < 2; hr++) {
      const int r = wm * 32 + mi * 16 + g + hr * 8;
      if (r >= tile.count) continue;
#pragma unroll
      for (int ni = 0; ni < 4; ni++) {
        const int n = n0 + wn * 32 + ni * 8 + tg * 2;  // even
        if (n >= a.N) continue;
        const float c0 = acc[mi][ni][hr * 2], c1 = acc[mi][ni][hr * 2 + 1];
        const float *bias = a.bias + (int64_t)tile.expert * a.N + n;
        if (GATEUP) {
          float gt = c0 + bias[0], up = c1 + bias[1];
          gt = fminf(gt, a.limit);
          up = fminf(fmaxf(up, -a.limit), a.limit);
          const float sig = 1.f / (1.f + expf(-(1.702f * gt)));
          a.w.act[(int64_t)(tile.start + r) * (a.N / 2) + n / 2] = gt * sig * (up + 1.f);
        } else {
          const int pk = pick_of[r];
          const float wgt = a.weight[pk];
          float *o = a.w.y + (int64_t)pk * a.N + n;
          o[0] = (c0 + bias[0]) * wgt;
          if (n + 1 < a.N) o[1] = (c1 + bias[1]) * wgt;
        }
      }
    }
  }
}

// Tokens per grouped-GEMM pass: bounds the workspace (T*k*(H+I) floats).
constexpr int kMoeChunk = 1024;

gx_status combine(gx_ctx *ctx, const gx_experts *ex, const Workspace &w, const int32_t *idx, int T, int k,
                  float *out) {
  const int H = ex->H;
  moe_combine_kernel<<<T, std::min(256, std::max(32, H / 4)), 0, ctx->stream>>>(
      reinterpret_cast<const float4 *>(w.y), idx, k, H / 4, ex->expert_lo, ex->n_experts,
      reinterpret_cast<float4 *>(out));
  GX_LAUNCH("moe_combine");
  return GX_OK;
}

template <int NB>
gx_status gemv_path(gx_ctx *ctx, const gx_experts *ex, const float *x, const int32_t *idx, const float *weight, int T,
                    int k, const Workspace &w) {
  const int P = T * k;
  GemvArgs a{};
  a.idx = idx, a.weight = weight, a.k = k, a.expert_lo = ex->expert_lo, a.n_experts = ex->n_experts;
  a.limit = ex->swiglu_limit;
  const int warps = kGemvThreads / 32;
  // gate_up: 2I rows over H inputs, pairs = I channels.
  a.blocks = ex->gate_up_blocks, a.scales = ex->gate_up_scales, a.bias = ex->gate_up_bias;
  a.in = x, a.out = w.act, a.rows = 2 * ex->I, a.cols = ex->H;
  int gx = std::max(1, std::min(gx_cdiv(ex->I, warps), gx_cdiv(ctx->sms * 3, P)));
  moe_gemv_kernel<NB, true><<<dim3(gx, P), kGemvThreads, 0, ctx->stream>>>(a);
  GX_LAUNCH("moe_gemv_gate_up");
  // down: H rows over I inputs.
  a.blocks = ex->down_blocks, a.scales = ex->down_scales, a.bias = ex->down_bias;
  a.in = w.act, a.out = w.y, a.rows = ex->H, a.cols = ex->I;
  gx = std::max(1, std::min(gx_cdiv(ex->H / 2, warps), gx_cdiv(ctx->sms * 3, P)));
  moe_gemv_kernel<NB, false><<<dim3(gx, P), kGemvThreads, 0, ctx->stream>>>(a);
  GX_LAUNCH("moe_gemv_down");
  return GX_OK;
}

}  // namespace

GX_EXPORT gx_status gx_router_topk(gx_ctx *ctx, const float *logits, int T, int E, int k, int32_t *idx,
                                   float *weight) {
  GX_CHECK_CTX(ctx);
  GX_CHECK(T >= 0 && E > 0 && k > 0 && k <= E && k <= kRouterMaxK, "gx_router_topk: T=%d E=%d k=%d (k <= %d)", T, E,
           k, kRouterMaxK);
  if (T == 0) return GX_OK;
  GX_CHECK(logits && idx && weight, "gx_router_topk: null pointer");
  GX_CALL(gx_set_device(ctx));
  router_topk_kernel<<<gx_cdiv(T, 8), 256, 0, ctx->stream>>>(logits, T, E, k, idx, weight);
  GX_LAUNCH("router_topk");
  return GX_OK;
}

GX_EXPORT int64_t gx_moe_workspace(int T, int k, int H, int I) {
  if (T <= 0 || k <= 0 || H <= 0 || I <= 0) return 256;
  return ws_layout(std::min(T, kMoeChunk), k, H, I, nullptr, nullptr);
}

GX_EXPORT gx_status gx_moe(gx_ctx *ctx, const gx_experts *ex, const float *x, const int32_t *idx,
                           const float *weight, int T, int k, void *workspace, int64_t workspace_bytes, float *out) {
  GX_CHECK_CTX(ctx);
  GX_CHECK(ex, "gx_moe: null experts");
  GX_CHECK(T >= 0 && k > 0, "gx_moe: T=%d k=%d", T, k);
  GX_CHECK(ex->H > 0 && ex->I > 0 && ex->H % 32 == 0 && ex->I % 32 == 0, "gx_moe: H=%d I=%d (multiples of 32)",
           ex->H, ex->I);
  GX_CHECK(ex->n_experts >= 0 && ex->n_experts <= 4096, "gx_moe: n_experts=%d (at most 4096)", ex->n_experts);
  if (T == 0) return GX_OK;
  GX_CHECK(x && idx && weight && out && workspace, "gx_moe: null pointer");
  const int64_t need = gx_moe_workspace(T, k, ex->H, ex->I);
  GX_CHECK(workspace_bytes >= need, "gx_moe: workspace of %lld bytes, need %lld (gx_moe_workspace)",
           (long long)workspace_bytes, (long long)need);
  GX_CHECK(gx_aligned(x, 16) && gx_aligned(out, 16) && gx_aligned(workspace, 256),
           "gx_moe: x and out must be 16-byte aligned, workspace 256-byte aligned");
  GX_CALL(gx_set_device(ctx));
  const int H = ex->H, I = ex->I;
  if (ex->n_experts == 0) {
    GX_CUDA(cudaMemsetAsync(out, 0, (size_t)T * H * 4, ctx->stream));
    return GX_OK;
  }
  GX_CHECK(ex->gate_up_blocks && ex->gate_up_scales && ex->gate_up_bias && ex->down_blocks && ex->down_scales &&
               ex->down_bias,
           "gx_moe: null expert tensor");
  GX_CHECK(gx_aligned(ex->gate_up_blocks, 16) && gx_aligned(ex->down_blocks, 16),
           "gx_moe: expert blocks must be 16-byte aligned");
  Workspace w;
  ws_layout(std::min(T, kMoeChunk), k, H, I, &w, static_cast<char *>(workspace));
  const int nb = std::max(gx_cdiv(H, 1024), gx_cdiv(I, 1024));
  if (T <= kGemvMaxT && nb <= kGemvMaxNB) {
    GX_CALL(nb == 1   ? gemv_path<1>(ctx, ex, x, idx, weight, T, k, w)
            : nb == 2 ? gemv_path<2>(ctx, ex, x, idx, weight, T, k, w)
                      : gemv_path<3>(ctx, ex, x, idx, weight, T, k, w));
    return combine(ctx, ex, w, idx, T, k, out);
  }
  // Grouped GEMM, kMoeChunk tokens at a time (a token's result does not
  // depend on the others, so chunking changes nothing but the workspace).
  for (int t0 = 0; t0 < T; t0 += kMoeChunk) {
    const int Tc = std::min(kMoeChunk, T - t0);
    const int P = Tc * k;
    const int32_t *cidx = idx + (int64_t)t0 * k;
    const float *cweight = weight + (int64_t)t0 * k;
    const int smem = 2 * ex->n_experts * 4;
    moe_sort_kernel<<<1, 1024, smem, ctx->stream>>>(cidx, P, ex->expert_lo, ex->n_experts, w);
    GX_LAUNCH("moe_sort");
    const int max_tiles = (int)std::min<int64_t>(P, gx_cdiv(P, kBM) + (int64_t)ex->n_experts);
    GemmArgs a{};
    a.weight = cweight, a.w = w, a.k = k, a.n_experts = ex->n_experts, a.limit = ex->swiglu_limit;
    a.blocks = ex->gate_up_blocks, a.scales = ex->gate_up_scales, a.bias = ex->gate_up_bias;
    a.in = x + (int64_t)t0 * H, a.N = 2 * I, a.K = H;
    moe_gemm_kernel<true><<<dim3(max_tiles, gx_cdiv(2 * I, kBN)), kGemmThreads, 0, ctx->stream>>>(a);
    GX_LAUNCH("moe_gemm_gate_up");
    a.blocks = ex->down_blocks, a.scales = ex->down_scales, a.bias = ex->down_bias;
    a.in = w.act, a.N = H, a.K = I;
    moe_gemm_kernel<false><<<dim3(max_tiles, gx_cdiv(H, kBN)), kGemmThreads, 0, ctx->stream>>>(a);
    GX_LAUNCH("moe_gemm_down");
    GX_CALL(combine(ctx, ex, w, cidx, Tc, k, out + (int64_t)t0 * H));
  }
  return GX_OK;
}
