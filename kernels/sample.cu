// sample.cu — per-row sampling over the full vocabulary, and
// gx_mask_logits, which restricts rows to sets of allowed tokens before it
// (at the end of the file).
//
// One block of 512 threads per row, all in one kernel (the semantics are
// worker/sample's, the CPU sampler; gptoss.h states them):
//  1. w = logits with NaN -> -inf and -0 -> +0, in the scratch (one pass,
//     which also takes the raw row's max); then the penalties on w, in double
//     exactly as the CPU sampler rounds them:
//     w = float(double(x) - (presence * (count > 0) + frequency * count));
//  2. max and arg-max of w (ties to the lowest id); logprob = log-softmax of
//     the RAW logits (before penalties and temperature): one sum pass of
//     exp(raw - raw max) in double, over w itself when the row has no
//     penalties, else over the raw row (so no pass is added);
//  3. temperature 0: the arg-max of w. Otherwise, with e = exp((w - max) / T):
//     top-k keeps the k largest w (ties to lower ids), min-p drops e < min_p
//     (e of the max is 1), top-p keeps the smallest prefix of the rest in
//     descending order (ties: lower id first) whose mass reaches
//     top_p * (mass kept) * (1 - 1e-6), at least one token; then inverse-CDF
//     sampling with the row's uniform over the kept tokens;
//  4. n_top > 0: the n_top largest RAW logits (ties to lower ids), most
//     likely first, with their raw logprobs (w is put back to the raw row at
//     the penalised ids first).
// Cuts are exact: they come from radix selects over the 32-bit order key of
// w (4 bits per pass, per-thread histograms in shared memory, reduced in a
// fixed order, masses in double), and ties at a cut are resolved by id with
// an ordered scan. Nothing is sorted except the n_top list. The draw walks
// the kept tokens in id order (any fixed order is exact inverse-CDF
// sampling; the CPU sampler walks its histogram buckets), so a given uniform
// may pick a different token than the CPU for the same distribution.
// Everything is deterministic: no floating-point atomics.
#include <float.h>
#include <math.h>
#include <string.h>

#include "common.cuh"

namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kBins = 16;  // 4-bit digits
constexpr int kMaxTop = 256;
static_assert(kWarps >= kBins && kWarps <= 32, "a warp per histogram bin");

// NaN -> -inf (never drawn, ranked last), -0 -> +0 (one order key per value).
__device__ __forceinline__ float clean(float v) {
  if (isnan(v)) return -INFINITY;
  return v == 0.f ? 0.f : v;
}

__device__ __forceinline__ uint32_t order_key(float v) {
  const uint32_t u = __float_as_uint(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

struct Shared {
  double dred[32];
  float fred[32];
  float rred[32];
  int ired[32];
  double bins[kBins];
  double dval;
  int ival[4];
  int top_list[kMaxTop];
  int top_cnt;
};

__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Fixed-order block sum of doubles; every thread gets it.
__device__ double block_sum_d(double v, Shared &sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum_d(v);
  __syncthreads();
  if (lane == 0) sh.dred[warp] = v;
  __syncthreads();
  double s = lane < kWarps ? sh.dred[lane] : 0.0;
  return warp_sum_d(s);
}

// Radix select over order keys, descending: finds K with
//   sum_{key > K} f < target <= sum_{key >= K} f
// (f >= 0 per token, 0 for excluded ones). Returns K; *above = sum_{key > K} f.
// hist is [kBins][kThreads] doubles, one column per thread.
template <class F>
__device__ uint32_t radix_select(const float *w, int V, F f, double target, double *above_out, double *hist,
                                 Shared &sh) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  uint32_t prefix = 0, mask = 0;
  double above = 0.0;
  for (int shift = 28; shift >= 0; shift -= 4) {
#pragma unroll
    for (int b = 0; b < kBins; b++) hist[b * kThreads + tid] = 0.0;
    for (int i = tid; i < V; i += kThreads) {
      const float v = w[i];
      const uint32_t key = order_key(v);
      if ((key & mask) != prefix) continue;
      const double m = f(i, v);
      if (m == 0.0) continue;
      hist[((key >> shift) & 15u) * kThreads + tid] += m;
    }
    __syncthreads();
    if (warp < kBins) {  // warp b sums bin b in a fixed order
      const double *col = hist + warp * kThreads;
      double s = 0.0;
      for (int j = lane; j < kThreads; j += 32) s += col[j];
      s = warp_sum_d(s);
      if (lane == 0) sh.bins[warp] = s;
    }
    __syncthreads();
    if (tid == 0) {
      int d = -1;
      double a = above;
      for (int b = kBins - 1; b >= 0; b--) {
        if (a + sh.bins[b] >= target && sh.bins[b] > 0.0) {
          d = b;
          break;
        }
        a += sh.bins[b];
      }
      if (d < 0) {  // target above the total (rounding): take the lowest non-empty bin
        a = above;
        for (int b = kBins - 1; b >= 0; b--) {
          if (sh.bins[b] > 0.0) d = b;
        }
        if (d < 0) d = 0;
        for (int b = kBins - 1; b > d; b--) a += sh.bins[b];
      }
      sh.ival[0] = d;
      sh.dval = a;
    }
    __syncthreads();
    prefix |= (uint32_t)sh.ival[0] << shift;
    mask |= 15u << shift;
    above = sh.dval;
    __syncthreads();
  }
  *above_out = above;
  return prefix;
}

// The first id (in increasing order) at which the running sum of f reaches
// the target: cum >= target when frac < 0 (target absolute), or
// cum > frac * total (the total of f over all ids) otherwise. Falls back to
// the last id with f > 0 (rounding), or -1 when f is 0 everywhere.
// Warp w owns the contiguous ids [w*seg, (w+1)*seg).
template <class F>
__device__ int ordered_find(int V, F f, double target, double frac, Shared &sh) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int seg = (V + kWarps - 1) / kWarps;
  const int lo = warp * seg, hi = min(V, lo + seg);
  double s = 0.0;
  for (int i = lo + lane; i < hi; i += 32) s += f(i);
  s = warp_sum_d(s);
  __syncthreads();
  if (lane == 0) sh.dred[warp] = s;
  __syncthreads();
  if (tid == 0) {
    double total = 0.0;
    for (int j = 0; j < kWarps; j++) total += sh.dred[j];
    const bool strict = frac >= 0.0;
    const double tgt = strict ? frac * total : target;
    double cum = 0.0;
    int wf = -1, wlast = -1;
    for (int j = 0; j < kWarps; j++) {
      if (sh.dred[j] > 0.0) wlast = j;
      const double c = cum + sh.dred[j];
      if (sh.dred[j] > 0.0 && (strict ? c > tgt : c >= tgt)) {
        wf = j;
        break;
      }
      cum = c;
    }
    if (wf < 0) {  // not reached: the last warp with mass, aim past its end
      wf = wlast;
      cum = 0.0;
      for (int j = 0; j < wlast; j++) cum += sh.dred[j];
    }
    sh.ival[1] = wf;
    sh.dval = tgt - cum;  // remaining target inside warp wf
    sh.ival[2] = strict;
  }
  __syncthreads();
  const int wf = sh.ival[1];
  const double rem = sh.dval;
  const bool strict = sh.ival[2];
  __syncthreads();
  if (wf < 0) return -1;
  if (warp == wf) {
    int found = -1, last = -1;
    double cum = 0.0;
    for (int base = lo; base < hi && found < 0; base += 32) {
      const int i = base + lane;
      const double v = i < hi ? f(i) : 0.0;
      double inc = v;  // inclusive scan
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const double u = __shfl_up_sync(0xffffffffu, inc, o);
        if (lane >= o) inc += u;
      }
      const double c = cum + inc;
      const bool hit = v > 0.0 && (strict ? c > rem : c >= rem);
      const unsigned hits = __ballot_sync(0xffffffffu, hit);
      const unsigned pos = __ballot_sync(0xffffffffu, v > 0.0);
      if (hits) found = base + __ffs(hits) - 1;
      if (pos) last = base + 31 - __clz(pos);
      cum += __shfl_sync(0xffffffffu, inc, 31);
    }
    if (lane == 0) sh.ival[3] = found >= 0 ? found : last;
  }
  __syncthreads();
  const int r = sh.ival[3];
  __syncthreads();
  return r;
}

__global__ void __launch_bounds__(kThreads, 1)
    sample_kernel(const float *__restrict__ logits, int V, const gx_sampling *__restrict__ params,
                  const int32_t *__restrict__ pen_off, const int32_t *__restrict__ pen_ids,
                  const float *__restrict__ pen_counts, int n_top, float *__restrict__ wbuf,
                  int32_t *__restrict__ token, float *__restrict__ logprob, int32_t *__restrict__ top_ids,
                  float *__restrict__ top_lp) {
  extern __shared__ double hist[];  // [kBins][kThreads]
  __shared__ Shared sh;
  const int s = blockIdx.x, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const gx_sampling P = params[s];
  const float *x = logits + (int64_t)s * V;
  float *w = wbuf + (int64_t)s * V;

  // 1. The working copy w of the raw row (NaN -> -inf, -0 -> +0), the raw
  // row's max and whether it has a finite value; then the penalties on w.
  float rmax = -INFINITY;
  int finite = 0;
  for (int i = tid; i < V; i += kThreads) {
    const float v = clean(x[i]);
    w[i] = v;
    rmax = fmaxf(rmax, v);
    finite |= isfinite(v);
  }
  finite = __syncthreads_or(finite);
  const int j0 = pen_off ? pen_off[s] : 0, j1 = pen_off ? pen_off[s + 1] : 0;
  const bool penalised = pen_ids && pen_counts && j1 > j0;
  if (penalised) {
    // The CPU sampler's arithmetic, rounding for rounding: in double,
    // float(double(x) - (presence + frequency * count)), no fused
    // multiply-add. Ids are distinct within a row, so each w[id] has one
    // writer.
    const double presence = P.presence_penalty, frequency = P.frequency_penalty;
    for (int j = j0 + tid; j < j1; j += kThreads) {
      const int id = pen_ids[j];
      const float c = pen_counts[j];
      if (id < 0 || id >= V) continue;
      const double pen = __dadd_rn(c > 0.f ? presence : 0.0, __dmul_rn(frequency, (double)c));
      w[id] = clean(__double2float_rn(__dsub_rn((double)w[id], pen)));
    }
    __syncthreads();
  }

  // 2. Max and arg-max of w (lowest id on ties), and the raw row's max.
  float bm = -INFINITY;
  int bi = INT_MAX;
  for (int i = tid; i < V; i += kThreads) {
    const float v = w[i];
    if (v > bm) bm = v, bi = i;  // increasing i: keeps the first maximum
  }
  if (bi == INT_MAX) bi = V;  // all -inf: no candidate yet
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bm, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ov > bm || (ov == bm && oi < bi)) bm = ov, bi = oi;
  }
  rmax = gx_warp_max(rmax);
  if (lane == 0) sh.fred[warp] = bm, sh.ired[warp] = bi, sh.rred[warp] = rmax;
  __syncthreads();
  if (warp == 0) {
    bm = lane < kWarps ? sh.fred[lane] : -INFINITY;
    bi = lane < kWarps ? sh.ired[lane] : V;
    rmax = gx_warp_max(lane < kWarps ? sh.rred[lane] : -INFINITY);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bm, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (ov > bm || (ov == bm && oi < bi)) bm = ov, bi = oi;
    }
    if (lane == 0) sh.fred[0] = bm, sh.ired[0] = bi, sh.rred[0] = rmax;
  }
  __syncthreads();
  float xm = sh.fred[0];
  const int amax = sh.ired[0];
  rmax = sh.rred[0];
  __syncthreads();
  if (!finite) {  // no finite logit (all NaN or +-inf): the forward pass broke
    if (tid == 0) {
      token[s] = -1;
      logprob[s] = NAN;
    }
    for (int j = tid; j < n_top; j += kThreads) {
      top_ids[(int64_t)s * n_top + j] = -1;
      top_lp[(int64_t)s * n_top + j] = NAN;
    }
    return;
  }

  // The log-softmax of the raw row: lse over the raw logits (w before the
  // penalties: w itself when the row has none), in double. When the raw row
  // has +inf logits, its limit: -log(count) for the +inf ones, -inf for the
  // rest (penalties are finite, so w has the same +inf tokens).
  const bool raw_inf = rmax == INFINITY;
  double se = 0.0;
  for (int i = tid; i < V; i += kThreads) {
    const float v = penalised ? clean(x[i]) : w[i];
    se += raw_inf ? (v == INFINITY ? 1.0 : 0.0) : (double)expf(v - rmax);
  }
  se = block_sum_d(se, sh);
  const double lse = raw_inf ? log(se) : (double)rmax + log(se);
  auto raw_lp = [&](float v) -> float {  // v: a cleaned raw logit
    if (raw_inf) return v == INFINITY ? (float)-lse : -INFINITY;
    return __double2float_rn(__dsub_rn((double)v, lse));
  };

  const bool inf_mapped = xm == INFINITY;
  if (inf_mapped) {  // the limit of huge logits: the draw is uniform over the +inf tokens
    for (int i = tid; i < V; i += kThreads) w[i] = w[i] == INFINITY ? 0.f : -INFINITY;
    __syncthreads();
    xm = 0.f;
  }

  // 3. The token.
  int tok = amax;
  if (P.temperature > 0.f) {
    const float invT = fminf(1.f / P.temperature, FLT_MAX);  // a tiny temperature: the limit, not inf * 0
    const float min_p = P.min_p > 0.f ? P.min_p : 0.f;
    // Top-k cut: key > kk, or key == kk and id <= kid.
    bool use_k = P.top_k > 0 && P.top_k < V;
    uint32_t kk = 0;
    int kid = V;
    if (use_k) {
      double above = 0.0;
      kk = radix_select(w, V, [](int, float) { return 1.0; }, (double)P.top_k, &above, hist, sh);
      const double need = (double)P.top_k - above;
      kid = ordered_find(V, [&](int i) { return order_key(w[i]) == kk ? 1.0 : 0.0; }, need, -1.0, sh);
      if (kid < 0) kid = V;
    }
    auto mass = [&](int i, float v) -> double {
      if (use_k) {
        const uint32_t key = order_key(v);
        if (key < kk || (key == kk && i > kid)) return 0.0;
      }
      const float e = expf((v - xm) * invT);
      return e >= min_p ? (double)e : 0.0;
    };
    // Top-p cut over the survivors: key > pk, or key == pk and id <= pid.
    bool use_p = P.top_p < 1.f;
    uint32_t pk = 0;
    int pid = V;
    if (use_p) {
      double z = 0.0;
      for (int i = tid; i < V; i += kThreads) z += mass(i, w[i]);
      z = block_sum_d(z, sh);
      double target = (double)P.top_p * z * (1.0 - 1e-6);
      if (!(target > 0.0)) target = 0.0;  // (top_p > 0 and z >= 1: not reached)
      double above = 0.0;
      pk = radix_select(w, V, mass, target, &above, hist, sh);
      // Tokens of key pk in id order until the target is reached (at least one).
      const double rem = target - above;
      pid = ordered_find(V, [&](int i) { const float v = w[i]; return order_key(v) == pk ? mass(i, v) : 0.0; },
                         rem > 0.0 ? rem : 0.0, -1.0, sh);
      if (pid < 0) pid = V;
    }
    auto kept = [&](int i) -> double {
      const float v = w[i];
      if (use_p) {
        const uint32_t key = order_key(v);
        if (key < pk || (key == pk && i > pid)) return 0.0;
      }
      return mass(i, v);
    };
    float u = P.uniform;
    if (!(u >= 0.f)) u = 0.f;
    if (u >= 1.f) u = 0.99999994f;
    const int t = ordered_find(V, kept, 0.0, (double)u, sh);
    if (t >= 0) tok = t;
  }
  if (tid == 0) {
    token[s] = tok;
    logprob[s] = raw_lp(clean(x[tok]));
  }

  // 4. The n_top most likely under the raw logits (ties to lower ids): w
  // back to the cleaned raw row first, where the penalties or the +inf
  // mapping changed it.
  if (n_top > 0) {
    __syncthreads();  // step 3 is done with w
    if (inf_mapped) {
      for (int i = tid; i < V; i += kThreads) w[i] = clean(x[i]);
    } else if (penalised) {
      for (int j = j0 + tid; j < j1; j += kThreads) {
        const int id = pen_ids[j];
        if (id >= 0 && id < V) w[id] = clean(x[id]);
      }
    }
    __syncthreads();
    const int n = min(n_top, V);
    double above = 0.0;
    const uint32_t nk = radix_select(w, V, [](int, float) { return 1.0; }, (double)n, &above, hist, sh);
    int nid = ordered_find(V, [&](int i) { return order_key(w[i]) == nk ? 1.0 : 0.0; }, (double)n - above, -1.0,
                           sh);
    if (nid < 0) nid = V;
    if (tid == 0) sh.top_cnt = 0;
    __syncthreads();
    for (int i = tid; i < V; i += kThreads) {
      const uint32_t key = order_key(w[i]);
      if (key > nk || (key == nk && i <= nid)) {
        const int slot = atomicAdd(&sh.top_cnt, 1);
        if (slot < kMaxTop) sh.top_list[slot] = i;
      }
    }
    __syncthreads();
    const int cnt = min(sh.top_cnt, min(n, kMaxTop));
    // Rank sort: larger w first, then lower id.
    for (int a = tid; a < cnt; a += kThreads) {
      const int ia = sh.top_list[a];
      const uint32_t ka = order_key(w[ia]);
      int rank = 0;
      for (int b = 0; b < cnt; b++) {
        const int ib = sh.top_list[b];
        const uint32_t kb = order_key(w[ib]);
        rank += kb > ka || (kb == ka && ib < ia);
      }
      top_ids[(int64_t)s * n_top + rank] = ia;
      top_lp[(int64_t)s * n_top + rank] = raw_lp(w[ia]);
    }
    for (int j = cnt + tid; j < n_top; j += kThreads) {
      top_ids[(int64_t)s * n_top + j] = -1;
      top_lp[(int64_t)s * n_top + j] = -INFINITY;
    }
  }
}

// One thread per token of a masked row, so a warp reads one bitset word
// (a broadcast) and writes its 32 consecutive logits: coalesced, and only
// where a token is denied. blockIdx.y strides over the masked rows.
constexpr int kMaskThreads = 256;

__global__ void mask_kernel(float *__restrict__ logits, int S, int V, int n, const int32_t *__restrict__ rows,
                            const uint32_t *__restrict__ allow) {
  const int64_t W = (V + 31) / 32;
  const int t = blockIdx.x * kMaskThreads + threadIdx.x;
  if (t >= V) return;
  for (int i = blockIdx.y; i < n; i += gridDim.y) {
    const int r = rows[i];
    if (r < 0 || r >= S) continue;
    if (!((allow[i * W + (t >> 5)] >> (t & 31)) & 1u)) logits[(int64_t)r * V + t] = -INFINITY;
  }
}

}  // namespace

GX_EXPORT gx_status gx_mask_logits(gx_ctx *ctx, float *logits, int S, int V, int n, const int32_t *rows,
                                   const uint32_t *allow) {
  GX_CHECK_CTX(ctx);
  GX_CHECK(S >= 0 && V > 0 && n >= 0, "gx_mask_logits: S=%d V=%d n=%d", S, V, n);
  if (S == 0 || n == 0) return GX_OK;
  GX_CHECK(logits && rows && allow, "gx_mask_logits: null pointer");
  GX_CALL(gx_set_device(ctx));
  const dim3 grid(gx_cdiv(V, kMaskThreads), std::min(n, 65535));
  mask_kernel<<<grid, kMaskThreads, 0, ctx->stream>>>(logits, S, V, n, rows, allow);
  GX_LAUNCH("mask_logits");
  return GX_OK;
}

GX_EXPORT gx_status gx_sample(gx_ctx *ctx, const float *logits, int S, int V, const gx_sampling *params,
                              const int32_t *pen_off, const int32_t *pen_ids, const float *pen_counts, int n_top,
                              int32_t *token, float *logprob, int32_t *top_ids, float *top_lp) {
  GX_CHECK_CTX(ctx);
  GX_CHECK(S >= 0 && V > 0 && n_top >= 0 && n_top <= kMaxTop, "gx_sample: S=%d V=%d n_top=%d (at most %d)", S, V,
           n_top, kMaxTop);
  if (S == 0) return GX_OK;
  GX_CHECK(logits && params && token && logprob, "gx_sample: null pointer");
  GX_CHECK(n_top == 0 || (top_ids && top_lp), "gx_sample: n_top=%d with null top_ids/top_lp", n_top);
  for (int s = 0; s < S; s++) {
    const gx_sampling &p = params[s];
    GX_CHECK(p.temperature >= 0.f && isfinite(p.temperature) && p.top_k >= 0 && p.top_p > 0.f &&
                 p.top_p <= 1.f && p.min_p >= 0.f && p.min_p <= 1.f && isfinite(p.presence_penalty) &&
                 isfinite(p.frequency_penalty),
             "gx_sample: row %d: bad parameters (temperature %g, top_p %g, top_k %d, min_p %g)", s,
             (double)p.temperature, (double)p.top_p, p.top_k, (double)p.min_p);
  }
  // The parameters change every step (the uniform at least): a captured
  // launch would replay stale ones.
  if (gx_is_capturing(ctx))
    return gx_fail(GX_ERR_STATE, "gx_sample cannot be captured in a graph (its parameters change every step)");
  GX_CALL(gx_set_device(ctx));

  const int64_t pbytes = (int64_t)S * sizeof(gx_sampling);
  const int64_t w_off = gx_align(pbytes, 256);
  void *scratch = nullptr;
  GX_CALL(gx_scratch(ctx, w_off + (int64_t)S * V * 4, &scratch));
  gx_sampling *dparams = static_cast<gx_sampling *>(scratch);
  float *wbuf = reinterpret_cast<float *>(static_cast<char *>(scratch) + w_off);

  // Parameters: host -> pinned staging -> device, on the stream. The staging
  // buffer is reused once its previous copy has completed.
  if (ctx->staging_pending) {
    GX_CUDA(cudaEventSynchronize(ctx->staging_done));
    ctx->staging_pending = false;
  }
  if (ctx->staging_bytes < pbytes) {
    if (ctx->staging) GX_CUDA(cudaFreeHost(ctx->staging));
    ctx->staging = nullptr;
    ctx->staging_bytes = 0;
    const int64_t want = gx_align(pbytes, 4096);
    GX_CUDA(cudaMallocHost(&ctx->staging, (size_t)want));
    ctx->staging_bytes = want;
  }
  memcpy(ctx->staging, params, (size_t)pbytes);
  GX_CUDA(cudaMemcpyAsync(dparams, ctx->staging, (size_t)pbytes, cudaMemcpyHostToDevice, ctx->stream));
  GX_CUDA(cudaEventRecord(ctx->staging_done, ctx->stream));
  ctx->staging_pending = true;

  const int smem = kBins * kThreads * (int)sizeof(double);
  GX_CHECK(smem <= ctx->max_smem_optin, "gx_sample: needs %d bytes of shared memory, device allows %d", smem,
           ctx->max_smem_optin);
  static std::atomic<uint64_t> smem_done{0};
  GX_CALL(gx_allow_smem(ctx, reinterpret_cast<const void *>(sample_kernel), &smem_done));
  sample_kernel<<<S, kThreads, smem, ctx->stream>>>(logits, V, dparams, pen_off, pen_ids, pen_counts, n_top, wbuf,
                                                    token, logprob, top_ids, top_lp);
  GX_LAUNCH("sample");
  return GX_OK;
}
