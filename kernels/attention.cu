// attention.cu — paged attention with learned sinks, sliding windows, GQA,
// any mix of prefill and decode tokens in one call.
//
// One kernel, two launch shapes. A block owns a tile of BQ consecutive
// tokens times HG query heads of one KV head (the GQA group, so each K/V row
// read from the cache serves every head of the group), and optionally one
// split of the key range (flash-decoding). It walks its keys in tiles of BK:
// K and V rows are read once per tile from the bf16 cache (16-byte loads),
// converted to fp32 in shared memory, and every query row of the block uses
// them; the softmax is online, in fp32. Tokens of a tile that belong to
// different sequences are handled as consecutive runs (each run reads its
// own sequence's block table; rows of other runs are masked), so the result
// of a token never depends on the other tokens of the step.
//  - decode shape: BQ = 1 (a block per token and KV head), the key range
//    split along the context when there are too few blocks to fill the GPU;
//    a combine kernel merges the splits and the sink.
//  - prefill shape (T / n_seqs >= 4): BQ tokens per block (query tiling), so
//    K/V tiles are reused by BQ x HG rows.
// The sink starts the softmax: out = sum_j e^(s_j - M) v_j /
// (sum_j e^(s_j - M) + e^(sink - M)), M the running max including the sink.
// Keys no token of the run can see (outside every window, or in released
// blocks of -1) are never read.
#include <math.h>

#include "common.cuh"

namespace {

constexpr int kThreads = 256;
constexpr int kMaxSplits = 64;

template <int DMAX>
struct Cfg {
  static constexpr int BK = DMAX <= 64 ? 64 : (DMAX <= 128 ? 32 : 16);  // keys per tile
  static constexpr int RMAX = 4096 / DMAX;                              // query rows per block
  static constexpr int DP = DMAX + 4;                                   // padded Q/K row (floats)
  static constexpr int NG = kThreads / BK;                              // score row groups
  static constexpr int SROWS = RMAX / NG;                               // score rows per thread
  static constexpr int CG = DMAX / 4;                                   // float4 output column groups
  static constexpr int RG = kThreads / CG;                              // output row groups
  static constexpr int OROWS = RMAX / RG;                               // output rows per thread
  static constexpr int BQMAX = RMAX;                                    // tokens per block at most
  // Shared memory: Qs[RMAX][DP], Ks[BK][DP], Vs[BK][DMAX], Ss[RMAX][BK+1],
  // m/l/alpha[RMAX], then ints: token first/pos/seq[BQMAX], key offsets[BK] (int64).
  static constexpr int kFloats = RMAX * DP + BK * DP + BK * DMAX + RMAX * (BK + 1) + 3 * RMAX;
  static constexpr int kBytes = kFloats * 4 + 3 * BQMAX * 4 + BK * 8 + 16;
  static_assert(SROWS >= 1 && OROWS >= 1, "tile shape");
};

struct Params {
  const float *q;
  const uint16_t *kc, *vc;
  const float *sinks;
  float *out;
  const int32_t *seq, *pos, *tables;
  float *part_ml, *part_acc;  // nsplit > 1: per (token, head, split) max/sum and accumulator
  int T, n_seqs, max_blocks, block_size;
  int heads, kv_heads, D, G, HG, n_hsub, BQ, window, nsplit;
  int max_pos_hint;  // the layout's max_pos (sizes the split only)
  float scale;
  int vec;  // D % 8 == 0 and aligned caches: 16-byte loads
};

template <int DMAX>
__global__ void __launch_bounds__(kThreads, 1) attention_kernel(const Params p) {
  using C = Cfg<DMAX>;
  extern __shared__ __align__(16) float smem[];
  float *Qs = smem;
  float *Ks = Qs + C::RMAX * C::DP;
  float *Vs = Ks + C::BK * C::DP;
  float *Ss = Vs + C::BK * DMAX;
  float *row_m = Ss + C::RMAX * (C::BK + 1);
  float *row_l = row_m + C::RMAX;
  float *row_a = row_l + C::RMAX;
  int *tok_first = reinterpret_cast<int *>(row_a + C::RMAX);
  int *tok_pos = tok_first + C::BQMAX;
  int *tok_seq = tok_pos + C::BQMAX;
  long long *key_off = reinterpret_cast<long long *>(
      (reinterpret_cast<uintptr_t>(tok_seq + C::BQMAX) + 15) & ~(uintptr_t)15);

  const int tid = threadIdx.x;
  const int t0 = blockIdx.x * p.BQ;
  const int g = blockIdx.y / p.n_hsub, hs = blockIdx.y % p.n_hsub;
  const int split = blockIdx.z;
  const int D = p.D, HG = p.HG, BQ = p.BQ;
  const int R = BQ * HG;  // rows of this block (some may be invalid)
  const int kvdim = p.kv_heads * D;
  const int h_base = g * p.G + hs * HG;               // first query head of the block
  const int h_count = min(HG, p.G - hs * HG);         // valid heads of the block

  // Token info.
  for (int i = tid; i < BQ; i += kThreads) {
    const int t = t0 + i;
    int s = -1, ps = 0, f = 0;
    if (t < p.T) {
      s = p.seq[t];
      ps = p.pos[t];
      if (s < 0 || s >= p.n_seqs || ps < 0) s = -1;  // malformed: produce zeros
      f = p.window > 0 ? max(0, ps - p.window + 1) : 0;
    }
    tok_seq[i] = s, tok_pos[i] = ps, tok_first[i] = f;
  }
  // Q rows (zero padded), K/V tiles zeroed once (their padding stays zero).
  for (int i = tid; i < C::RMAX * C::DP; i += kThreads) {
    const int r = i / C::DP, d = i % C::DP;
    float v = 0.f;
    if (r < R && d < D) {
      const int tq = r / HG, hl = r % HG, t = t0 + tq;
      if (t < p.T && hl < h_count) v = p.q[((int64_t)t * p.heads + h_base + hl) * D + d];
    }
    Qs[i] = v;
  }
  for (int i = tid; i < C::BK * C::DP; i += kThreads) Ks[i] = 0.f;
  for (int i = tid; i < C::BK * DMAX; i += kThreads) Vs[i] = 0.f;
  for (int i = tid; i < C::RMAX; i += kThreads) row_m[i] = -INFINITY, row_l[i] = 0.f, row_a[i] = 1.f;
  __syncthreads();

  float acc[C::OROWS][4];
#pragma unroll
  for (int i = 0; i < C::OROWS; i++) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;

  const int sj = tid % C::BK, srg = tid / C::BK;  // score mapping: key, row group
  const int ocg = tid % C::CG, org = tid / C::CG; // output mapping: column group, row group
  const int lane = tid & 31, warp = tid >> 5;
  const int D4 = (D + 3) / 4;
  const int chunks = p.vec ? D / 8 : D;  // loads per K (or V) row

  for (int run0 = 0; run0 < BQ;) {
    const int s = tok_seq[run0];
    int run1 = run0 + 1;
    while (run1 < BQ && tok_seq[run1] == s) run1++;
    if (s < 0) {
      run0 = run1;
      continue;
    }
    int lo = INT_MAX, hi = -1;
    for (int i = run0; i < run1; i++) lo = min(lo, tok_first[i]), hi = max(hi, tok_pos[i]);
    // This split's share of the run's key range. The split count comes from
    // max_pos, an upper bound, so a split may start past hi: it then reads
    // nothing and leaves m = -inf, l = 0, acc = 0 (weighed by 0 in the combine).
    const int len = hi - lo + 1;
    const int per = (len + p.nsplit - 1) / p.nsplit;
    const int kb = lo + split * per, ke = min(hi, kb + per - 1);
    const int32_t *table = p.tables + (int64_t)s * p.max_blocks;

    for (int k0 = kb; k0 <= ke; k0 += C::BK) {
      __syncthreads();  // the previous tile is fully used
      if (tid < C::BK) {
        const int kp = k0 + tid;
        long long off = -1;
        if (kp <= ke) {
          bool vis = false;
          for (int i = run0; i < run1; i++) vis |= kp >= tok_first[i] && kp <= tok_pos[i];
          const int bi = kp / p.block_size;
          if (vis && bi < p.max_blocks) {
            const int blk = table[bi];
            if (blk >= 0) off = ((long long)blk * p.block_size + kp % p.block_size) * kvdim + (long long)g * D;
          }
        }
        key_off[tid] = off;
      }
      __syncthreads();
      // K and V rows of the tile into shared memory as fp32.
      if (p.vec) {
        for (int c = tid; c < C::BK * chunks; c += kThreads) {
          const int j = c / chunks, cc = c % chunks;
          const long long off = key_off[j];
          float4 *kd = reinterpret_cast<float4 *>(Ks + j * C::DP + cc * 8);
          float4 *vd = reinterpret_cast<float4 *>(Vs + j * DMAX + cc * 8);
          if (off >= 0) {
            const uint4 kv = *reinterpret_cast<const uint4 *>(p.kc + off + cc * 8);
            const uint4 vv = *reinterpret_cast<const uint4 *>(p.vc + off + cc * 8);
            kd[0] = make_float4(__uint_as_float(kv.x << 16), __uint_as_float(kv.x & 0xffff0000u),
                                __uint_as_float(kv.y << 16), __uint_as_float(kv.y & 0xffff0000u));
            kd[1] = make_float4(__uint_as_float(kv.z << 16), __uint_as_float(kv.z & 0xffff0000u),
                                __uint_as_float(kv.w << 16), __uint_as_float(kv.w & 0xffff0000u));
            vd[0] = make_float4(__uint_as_float(vv.x << 16), __uint_as_float(vv.x & 0xffff0000u),
                                __uint_as_float(vv.y << 16), __uint_as_float(vv.y & 0xffff0000u));
            vd[1] = make_float4(__uint_as_float(vv.z << 16), __uint_as_float(vv.z & 0xffff0000u),
                                __uint_as_float(vv.w << 16), __uint_as_float(vv.w & 0xffff0000u));
          } else {
            const float4 z = make_float4(0.f, 0.f, 0.f, 0.f);
            kd[0] = kd[1] = vd[0] = vd[1] = z;
          }
        }
      } else {
        for (int c = tid; c < C::BK * chunks; c += kThreads) {
          const int j = c / chunks, d = c % chunks;
          const long long off = key_off[j];
          Ks[j * C::DP + d] = off >= 0 ? gx_bf16_to_f(p.kc[off + d]) : 0.f;
          Vs[j * DMAX + d] = off >= 0 ? gx_bf16_to_f(p.vc[off + d]) : 0.f;
        }
      }
      __syncthreads();
      // Scores: key sj against rows srg + NG*i.
      {
        const int kp = k0 + sj;
        const bool key_ok = key_off[sj] >= 0;
        float sc[C::SROWS];
#pragma unroll
        for (int i = 0; i < C::SROWS; i++) sc[i] = 0.f;
        const float4 *k4 = reinterpret_cast<const float4 *>(Ks + sj * C::DP);
        for (int d4 = 0; d4 < D4; d4++) {
          const float4 kv = k4[d4];
#pragma unroll
          for (int i = 0; i < C::SROWS; i++) {
            const int r = srg + C::NG * i;
            if (r < R) {
              const float4 qv = reinterpret_cast<const float4 *>(Qs + r * C::DP)[d4];
              sc[i] = fmaf(qv.x, kv.x, sc[i]);
              sc[i] = fmaf(qv.y, kv.y, sc[i]);
              sc[i] = fmaf(qv.z, kv.z, sc[i]);
              sc[i] = fmaf(qv.w, kv.w, sc[i]);
            }
          }
        }
#pragma unroll
        for (int i = 0; i < C::SROWS; i++) {
          const int r = srg + C::NG * i;
          if (r < R) {
            const int tq = r / HG;
            const bool ok = key_ok && tq >= run0 && tq < run1 && kp >= tok_first[tq] && kp <= tok_pos[tq];
            Ss[r * (C::BK + 1) + sj] = ok ? sc[i] * p.scale : -INFINITY;
          }
        }
      }
      __syncthreads();
      // Online softmax, a warp per row.
      for (int r = warp; r < R; r += kThreads / 32) {
        float *srow = Ss + r * (C::BK + 1);
        float mt = -INFINITY;
        for (int j = lane; j < C::BK; j += 32) mt = fmaxf(mt, srow[j]);
        mt = gx_warp_max(mt);
        const float m_old = row_m[r];
        const float m_new = fmaxf(m_old, mt);
        float sum = 0.f;
        if (m_new == -INFINITY) {
          for (int j = lane; j < C::BK; j += 32) srow[j] = 0.f;
        } else {
          for (int j = lane; j < C::BK; j += 32) {
            const float e = expf(srow[j] - m_new);  // exp(-inf) = 0 for masked keys
            srow[j] = e;
            sum += e;
          }
        }
        sum = gx_warp_sum(sum);
        if (lane == 0) {
          const float a = m_new == -INFINITY ? 1.f : expf(m_old - m_new);
          row_a[r] = a;
          row_l[r] = row_l[r] * a + sum;
          row_m[r] = m_new;
        }
      }
      __syncthreads();
      // acc = acc * alpha + P V.
      if (ocg < D4) {
#pragma unroll
        for (int i = 0; i < C::OROWS; i++) {
          const int r = org + C::RG * i;
          if (r < R) {
            const float a = row_a[r];
            acc[i][0] *= a, acc[i][1] *= a, acc[i][2] *= a, acc[i][3] *= a;
          }
        }
        for (int j = 0; j < C::BK; j++) {
          const float4 v = reinterpret_cast<const float4 *>(Vs + j * DMAX)[ocg];
#pragma unroll
          for (int i = 0; i < C::OROWS; i++) {
            const int r = org + C::RG * i;
            if (r < R) {
              const float pj = Ss[r * (C::BK + 1) + j];
              acc[i][0] = fmaf(pj, v.x, acc[i][0]);
              acc[i][1] = fmaf(pj, v.y, acc[i][1]);
              acc[i][2] = fmaf(pj, v.z, acc[i][2]);
              acc[i][3] = fmaf(pj, v.w, acc[i][3]);
            }
          }
        }
      }
    }
    run0 = run1;
  }
  __syncthreads();

  // Write out: the final normalisation with the sink, or this split's partials.
  if (ocg < D4) {
#pragma unroll
    for (int i = 0; i < C::OROWS; i++) {
      const int r = org + C::RG * i;
      if (r >= R) continue;
      const int tq = r / HG, hl = r % HG, t = t0 + tq;
      if (t >= p.T || hl >= h_count) continue;
      const int h = h_base + hl;
      const float m = row_m[r], l = row_l[r];
      const int64_t row = (int64_t)t * p.heads + h;
      if (p.nsplit == 1) {
        const float sink = p.sinks[h];
        const float M = fmaxf(m, sink);
        const float em = expf(m - M);  // 0 when no key was visible (m = -inf)
        const float denom = l * em + expf(sink - M);
        const float f = em / denom;
        float *o = p.out + row * D;
#pragma unroll
        for (int c = 0; c < 4; c++) {
          const int d = 4 * ocg + c;
          if (d < D) o[d] = acc[i][c] * f;
        }
      } else {
        const int64_t prow = row * p.nsplit + split;
        float *o = p.part_acc + prow * D;
#pragma unroll
        for (int c = 0; c < 4; c++) {
          const int d = 4 * ocg + c;
          if (d < D) o[d] = acc[i][c];
        }
        if (ocg == 0) {
          p.part_ml[2 * prow] = m;
          p.part_ml[2 * prow + 1] = l;
        }
      }
    }
  }
}

// Merges the splits of each (token, head) with the sink. An empty split
// (m = -inf, l = 0, acc = 0) weighs exp(-inf - M) = 0: M >= the sink is finite.
__global__ void attention_combine_kernel(const float *__restrict__ part_ml, const float *__restrict__ part_acc,
                                         const float *__restrict__ sinks, const int32_t *__restrict__ seq,
                                         const int32_t *__restrict__ pos, int n_seqs, int heads, int D, int nsplit,
                                         float *__restrict__ out) {
  const int64_t row = blockIdx.x;  // token * heads + head
  const int h = (int)(row % heads);
  const int t = (int)(row / heads);
  const float sink = sinks[h];
  float M = sink;
  for (int z = 0; z < nsplit; z++) M = fmaxf(M, part_ml[2 * (row * nsplit + z)]);
  float denom = expf(sink - M);
  for (int z = 0; z < nsplit; z++) {
    const float m = part_ml[2 * (row * nsplit + z)];
    denom += part_ml[2 * (row * nsplit + z) + 1] * expf(m - M);
  }
  const bool ok = seq[t] >= 0 && seq[t] < n_seqs && pos[t] >= 0;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float a = 0.f;
    for (int z = 0; z < nsplit; z++) {
      const float m = part_ml[2 * (row * nsplit + z)];
      a += part_acc[(row * nsplit + z) * D + d] * expf(m - M);
    }
    out[row * D + d] = ok ? a / denom : 0.f;
  }
}

template <int DMAX>
gx_status attention_launch(gx_ctx *ctx, Params &p, bool tiled) {
  using C = Cfg<DMAX>;
  p.HG = std::min(p.G, C::RMAX);
  p.n_hsub = gx_cdiv(p.G, p.HG);
  p.BQ = tiled ? std::max(1, C::RMAX / p.HG) : 1;
  const int tiles = gx_cdiv(p.T, p.BQ);
  const int64_t base = (int64_t)tiles * p.kv_heads * p.n_hsub;
  const int64_t span = p.window > 0 ? std::min<int64_t>((int64_t)p.window + p.BQ - 1, (int64_t)p.max_pos_hint + 1)
                                    : (int64_t)p.max_pos_hint + 1;
  int nsplit = 1;
  const int64_t want = 2LL * ctx->sms;
  if (base < want) {
    nsplit = (int)std::min<int64_t>((want + base - 1) / base, (span + 255) / 256);
    nsplit = std::max(1, std::min(nsplit, kMaxSplits));
  }
  p.nsplit = nsplit;
  if (nsplit > 1) {
    const int64_t rows = (int64_t)p.T * p.heads * nsplit;
    const int64_t ml_bytes = gx_align(rows * 2 * 4, 256);
    void *scratch = nullptr;
    GX_CALL(gx_scratch(ctx, ml_bytes + rows * p.D * 4, &scratch));
    p.part_ml = static_cast<float *>(scratch);
    p.part_acc = reinterpret_cast<float *>(static_cast<char *>(scratch) + ml_bytes);
  }
  const int smem = C::kBytes;
  if (smem > ctx->max_smem_optin)
    return gx_fail(GX_ERR_ARG, "gx_attention: needs %d bytes of shared memory, device allows %d", smem,
                   ctx->max_smem_optin);
  static std::atomic<uint64_t> smem_done{0};
  GX_CALL(gx_allow_smem(ctx, reinterpret_cast<const void *>(attention_kernel<DMAX>), &smem_done));
  dim3 grid(tiles, p.kv_heads * p.n_hsub, nsplit);
  attention_kernel<DMAX><<<grid, kThreads, smem, ctx->stream>>>(p);
  GX_LAUNCH("attention");
  if (nsplit > 1) {
    const int threads = std::min(256, std::max(32, (p.D + 31) / 32 * 32));
    attention_combine_kernel<<<(unsigned)((int64_t)p.T * p.heads), threads, 0, ctx->stream>>>(
        p.part_ml, p.part_acc, p.sinks, p.seq, p.pos, p.n_seqs, p.heads, p.D, nsplit, p.out);
    GX_LAUNCH("attention_combine");
  }
  return GX_OK;
}

}  // namespace

GX_EXPORT gx_status gx_attention(gx_ctx *ctx, const gx_attn_layout *layout, const float *q, const uint16_t *kcache,
                                 const uint16_t *vcache, const float *sinks, int heads, int kv_heads, int D,
                                 int window, float scale, float *out) {
  GX_CHECK_CTX(ctx);
  GX_CHECK(layout, "gx_attention: null layout");
  const gx_attn_layout &L = *layout;
  GX_CHECK(L.T >= 0 && L.n_seqs >= 0 && L.max_blocks >= 0 && L.block_size > 0 && L.max_pos >= 0,
           "gx_attention: layout T=%d n_seqs=%d max_blocks=%d block_size=%d max_pos=%d", L.T, L.n_seqs,
           L.max_blocks, L.block_size, L.max_pos);
  GX_CHECK(heads > 0 && kv_heads > 0 && heads % kv_heads == 0, "gx_attention: heads=%d kv_heads=%d", heads,
           kv_heads);
  GX_CHECK(D > 0 && D <= 256, "gx_attention: D=%d (1..256)", D);
  GX_CHECK(window >= 0, "gx_attention: window=%d", window);
  if (L.T == 0) return GX_OK;
  GX_CHECK(q && kcache && vcache && sinks && out && L.seq && L.pos && L.tables, "gx_attention: null pointer");
  GX_CALL(gx_set_device(ctx));
  Params p{};
  p.q = q, p.kc = kcache, p.vc = vcache, p.sinks = sinks, p.out = out;
  p.seq = L.seq, p.pos = L.pos, p.tables = L.tables;
  p.T = L.T, p.n_seqs = L.n_seqs, p.max_blocks = L.max_blocks, p.block_size = L.block_size;
  p.max_pos_hint = L.max_pos;
  p.heads = heads, p.kv_heads = kv_heads, p.D = D, p.G = heads / kv_heads, p.window = window, p.scale = scale;
  p.vec = D % 8 == 0 && gx_aligned(kcache, 16) && gx_aligned(vcache, 16);
  const bool tiled = L.n_seqs > 0 && L.T >= 4 * L.n_seqs && L.T >= 8;
  if (D <= 64) return attention_launch<64>(ctx, p, tiled);
  if (D <= 128) return attention_launch<128>(ctx, p, tiled);
  return attention_launch<256>(ctx, p, tiled);
}
