// elementwise.cu — embedding, RMSNorm (plain and fused with the residual
// add), add, row gather, RoPE and the KV-cache write.
#include "common.cuh"

// ---- embedding --------------------------------------------------------------

__global__ void embed_kernel(const uint16_t *__restrict__ table, const int32_t *__restrict__ ids, int H, bool vec,
                             float *__restrict__ x) {
  const int t = blockIdx.x;
  const int64_t id = ids[t];
  const uint16_t *row = table + id * H;
  float *dst = x + (int64_t)t * H;
  if (vec) {  // 8 bf16 (16 bytes) per load
    const uint4 *src = reinterpret_cast<const uint4 *>(row);
    float4 *d4 = reinterpret_cast<float4 *>(dst);
    for (int i = threadIdx.x; i < H / 8; i += blockDim.x) {
      uint4 v = src[i];
      d4[2 * i] = make_float4(__uint_as_float(v.x << 16), __uint_as_float(v.x & 0xffff0000u),
                              __uint_as_float(v.y << 16), __uint_as_float(v.y & 0xffff0000u));
      d4[2 * i + 1] = make_float4(__uint_as_float(v.z << 16), __uint_as_float(v.z & 0xffff0000u),
                                  __uint_as_float(v.w << 16), __uint_as_float(v.w & 0xffff0000u));
    }
  } else {
    for (int i = threadIdx.x; i < H; i += blockDim.x) dst[i] = gx_bf16_to_f(row[i]);
  }
}

GX_EXPORT gx_status gx_embed(gx_ctx *ctx, const uint16_t *table, const int32_t *ids, int T, int H, float *x) {
  GX_CHECK_CTX(ctx);
  GX_CHECK(T >= 0 && H > 0, "gx_embed: T=%d H=%d", T, H);
  if (T == 0) return GX_OK;
  GX_CHECK(table && ids && x, "gx_embed: null pointer");
  GX_CALL(gx_set_device(ctx));
  bool vec = H % 8 == 0 && gx_aligned(table, 16) && gx_aligned(x, 16);
  embed_kernel<<<T, 256, 0, ctx->stream>>>(table, ids, H, vec, x);
  GX_LAUNCH("embed");
  return GX_OK;
}

// ---- RMSNorm ------------------------------------------------------------------

// One block per row. Pass 1: (optionally) x = x + (delta + bias), written
// back, and the sum of squares; pass 2: out = gain * (x * inv). Each thread
// reads back in pass 2 only the elements it wrote in pass 1.
template <bool ADD, bool VEC>
__global__ void rmsnorm_kernel(float *x, const float *delta, const float *__restrict__ bias,
                               const float *__restrict__ gain, int H, float eps, float *out) {
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  float *xr = x + row * H;
  const float *dr = ADD ? delta + row * H : nullptr;
  float *orow = out + row * H;
  float ss = 0.f;
  if (VEC) {
    float4 *x4 = reinterpret_cast<float4 *>(xr);
    for (int i = threadIdx.x; i < H / 4; i += blockDim.x) {
      float4 v = x4[i];
      if (ADD) {
        float4 d = reinterpret_cast<const float4 *>(dr)[i];
        if (bias) {
          float4 b = reinterpret_cast<const float4 *>(bias)[i];
          d.x += b.x, d.y += b.y, d.z += b.z, d.w += b.w;
        }
        v.x += d.x, v.y += d.y, v.z += d.z, v.w += d.w;
        x4[i] = v;
      }
      ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
  } else {
    for (int i = threadIdx.x; i < H; i += blockDim.x) {
      float v = xr[i];
      if (ADD) {
        float d = dr[i];
        if (bias) d += bias[i];
        v += d;
        xr[i] = v;
      }
      ss += v * v;
    }
  }
  ss = gx_block_sum(ss, red);
  // As the CPU: the fp32 mean plus eps, then 1/sqrt in double, rounded.
  const float inv = (float)(1.0 / sqrt((double)(ss / (float)H + eps)));
  if (VEC) {
    const float4 *x4 = reinterpret_cast<const float4 *>(xr);
    const float4 *g4 = reinterpret_cast<const float4 *>(gain);
    float4 *o4 = reinterpret_cast<float4 *>(orow);
    for (int i = threadIdx.x; i < H / 4; i += blockDim.x) {
      float4 v = x4[i], g = g4[i];
      o4[i] = make_float4(g.x * (v.x * inv), g.y * (v.y * inv), g.z * (v.z * inv), g.w * (v.w * inv));
    }
  } else {
    for (int i = threadIdx.x; i < H; i += blockDim.x) orow[i] = gain[i] * (xr[i] * inv);
  }
}

static int norm_threads(int H) {
  int per = H % 4 == 0 ? H / 4 : H;
  int t = 32;
  while (t < per && t < 1024) t *= 2;
  return t < 1024 ? t : 1024;
}

template <bool ADD>
static gx_status rmsnorm_launch(gx_ctx *ctx, float *x, const float *delta, const float *bias, const float *gain,
                                int T, int H, float eps, float *out) {
  bool vec = H % 4 == 0 && gx_aligned(x, 16) && gx_aligned(gain, 16) && gx_aligned(out, 16) &&
             (!ADD || gx_aligned(delta, 16)) && (!bias || gx_aligned(bias, 16));
  int threads = norm_threads(H);
  if (vec)
    rmsnorm_kernel<ADD, true><<<T, threads, 0, ctx->stream>>>(x, delta, bias, gain, H, eps, out);
  else
    rmsnorm_kernel<ADD, false><<<T, threads, 0, ctx->stream>>>(x, delta, bias, gain, H, eps, out);
  GX_LAUNCH("rmsnorm");
  return GX_OK;
}

GX_EXPORT gx_status gx_rmsnorm(gx_ctx *ctx, const float *x, const float *gain, int T, int H, float eps, float *out) {
  GX_CHECK_CTX(ctx);
  GX_CHECK(T >= 0 && H > 0, "gx_rmsnorm: T=%d H=%d", T, H);
  if (T == 0) return GX_OK;
  GX_CHECK(x && gain && out, "gx_rmsnorm: null pointer");
  GX_CALL(gx_set_device(ctx));
  return rmsnorm_launch<false>(ctx, const_cast<float *>(x), nullptr, nullptr, gain, T, H, eps, out);
}

GX_EXPORT gx_status gx_add_rmsnorm(gx_ctx *ctx, float *x, const float *delta, const float *bias, const float *gain,
                                   int T, int H, float eps, float *out) {
  GX_CHECK_CTX(ctx);
  GX_CHECK(T >= 0 && H > 0, "gx_add_rmsnorm: T=%d H=%d", T, H);
  if (T == 0) return GX_OK;
  GX_CHECK(x && delta && gain && out, "gx_add_rmsnorm: null pointer");
  GX_CALL(gx_set_device(ctx));
  return rmsnorm_launch<true>(ctx, x, delta, bias, gain, T, H, eps, out);
}

// ---- add, gather ----------------------------------------------------------------

__global__ void add_kernel(float *__restrict__ x, const float *__restrict__ y, const float *__restrict__ bias,
                           int64_t n, int H) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float d = y[i];
    if (bias) d += bias[i % H];
    x[i] += d;
  }
}

__global__ void add4_kernel(float4 *__restrict__ x, const float4 *__restrict__ y, const float4 *__restrict__ bias,
                            int64_t n4, int H4) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4; i += (int64_t)gridDim.x * blockDim.x) {
    float4 d = y[i];
    if (bias) {
      float4 b = bias[i % H4];
      d.x += b.x, d.y += b.y, d.z += b.z, d.w += b.w;
    }
    float4 v = x[i];
    v.x += d.x, v.y += d.y, v.z += d.z, v.w += d.w;
    x[i] = v;
  }
}

GX_EXPORT gx_status gx_add(gx_ctx *ctx, float *x, const float *y, const float *bias, int T, int H) {
  GX_CHECK_CTX(ctx);
  GX_CHECK(T >= 0 && H > 0, "gx_add: T=%d H=%d", T, H);
  if (T == 0) return GX_OK;
  GX_CHECK(x && y, "gx_add: null pointer");
  GX_CALL(gx_set_device(ctx));
  int64_t n = (int64_t)T * H;
  bool vec = H % 4 == 0 && gx_aligned(x, 16) && gx_aligned(y, 16) && (!bias || gx_aligned(bias, 16));
  int64_t items = vec ? n / 4 : n;
  int blocks = (int)std::min<int64_t>((items + 255) / 256, (int64_t)ctx->sms * 8);
  if (vec)
    add4_kernel<<<blocks, 256, 0, ctx->stream>>>(reinterpret_cast<float4 *>(x), reinterpret_cast<const float4 *>(y),
                                                 reinterpret_cast<const float4 *>(bias), n / 4, H / 4);
  else
    add_kernel<<<blocks, 256, 0, ctx->stream>>>(x, y, bias, n, H);
  GX_LAUNCH("add");
  return GX_OK;
}

__global__ void gather_kernel(const float *__restrict__ x, const int32_t *__restrict__ rows, int H, bool vec,
                              float *__restrict__ out) {
  const int i = blockIdx.x;
  const float *src = x + (int64_t)rows[i] * H;
  float *dst = out + (int64_t)i * H;
  if (vec) {
    for (int j = threadIdx.x; j < H / 4; j += blockDim.x)
      reinterpret_cast<float4 *>(dst)[j] = reinterpret_cast<const float4 *>(src)[j];
  } else {
    for (int j = threadIdx.x; j < H; j += blockDim.x) dst[j] = src[j];
  }
}

GX_EXPORT gx_status gx_gather_rows(gx_ctx *ctx, const float *x, const int32_t *rows, int n, int H, float *out) {
  GX_CHECK_CTX(ctx);
  GX_CHECK(n >= 0 && H > 0, "gx_gather_rows: n=%d H=%d", n, H);
  if (n == 0) return GX_OK;
  GX_CHECK(x && rows && out, "gx_gather_rows: null pointer");
  GX_CALL(gx_set_device(ctx));
  bool vec = H % 4 == 0 && gx_aligned(x, 16) && gx_aligned(out, 16);
  gather_kernel<<<n, 256, 0, ctx->stream>>>(x, rows, H, vec, out);
  GX_LAUNCH("gather_rows");
  return GX_OK;
}

// ---- RoPE -------------------------------------------------------------------------

// One block per token. The angle is pos * inv_freq in fp32 (as the CPU);
// cos and sin are evaluated in double and rounded, which is what the CPU's
// math.Cos/math.Sin of the same fp32 angle give; then scaled in fp32. The
// rotation uses explicit roundings (no FMA contraction), as the CPU.
__global__ void rope_kernel(float *__restrict__ q, float *__restrict__ k, const int32_t *__restrict__ pos,
                            const float *__restrict__ inv_freq, float scale, int heads, int kv_heads, int D) {
  extern __shared__ float cs[];  // [half] cos, then [half] sin
  const int t = blockIdx.x, half = D / 2;
  float *sn = cs + half;
  const float p = (float)pos[t];
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const float a = __fmul_rn(p, inv_freq[i]);
    double s, c;
    sincos((double)a, &s, &c);
    cs[i] = __fmul_rn((float)c, scale);
    sn[i] = __fmul_rn((float)s, scale);
  }
  __syncthreads();
  const int nq = heads * half, nk = kv_heads * half;
  for (int j = threadIdx.x; j < nq + nk; j += blockDim.x) {
    float *v;
    int hh, i;
    if (j < nq) {
      hh = j / half, i = j % half;
      v = q + ((int64_t)t * heads + hh) * D;
    } else {
      hh = (j - nq) / half, i = (j - nq) % half;
      v = k + ((int64_t)t * kv_heads + hh) * D;
    }
    const float a = v[i], b = v[i + half], c = cs[i], s = sn[i];
    v[i] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
    v[i + half] = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
  }
}

GX_EXPORT gx_status gx_rope(gx_ctx *ctx, float *q, float *k, const int32_t *pos, const float *inv_freq, float scale,
                            int T, int heads, int kv_heads, int D) {
  GX_CHECK_CTX(ctx);
  GX_CHECK(T >= 0 && heads >= 0 && kv_heads >= 0 && D > 0 && D % 2 == 0 && D <= 1024,
           "gx_rope: T=%d heads=%d kv_heads=%d D=%d", T, heads, kv_heads, D);
  if (T == 0 || heads + kv_heads == 0) return GX_OK;
  GX_CHECK(pos && inv_freq && (q || heads == 0) && (k || kv_heads == 0), "gx_rope: null pointer");
  GX_CALL(gx_set_device(ctx));
  int pairs = (heads + kv_heads) * D / 2;
  int threads = pairs >= 256 ? 256 : (pairs + 31) / 32 * 32;
  rope_kernel<<<T, threads, D * sizeof(float), ctx->stream>>>(q, k, pos, inv_freq, scale, heads, kv_heads, D);
  GX_LAUNCH("rope");
  return GX_OK;
}

// ---- KV cache write -------------------------------------------------------------------

__global__ void kv_write_kernel(const float *__restrict__ k, const float *__restrict__ v,
                                const int32_t *__restrict__ slot, int kvdim, bool vec, uint16_t *__restrict__ kc,
                                uint16_t *__restrict__ vc) {
  const int t = blockIdx.x;
  const int64_t s = slot[t];
  if (s < 0) return;
  const float *ks = k + (int64_t)t * kvdim, *vs = v + (int64_t)t * kvdim;
  uint16_t *kd = kc + s * kvdim, *vd = vc + s * kvdim;
  if (vec) {
    for (int i = threadIdx.x; i < kvdim / 4; i += blockDim.x) {
      float4 a = reinterpret_cast<const float4 *>(ks)[i], b = reinterpret_cast<const float4 *>(vs)[i];
      reinterpret_cast<uint2 *>(kd)[i] = make_uint2(gx_pack_bf16x2(a.x, a.y), gx_pack_bf16x2(a.z, a.w));
      reinterpret_cast<uint2 *>(vd)[i] = make_uint2(gx_pack_bf16x2(b.x, b.y), gx_pack_bf16x2(b.z, b.w));
    }
  } else {
    for (int i = threadIdx.x; i < kvdim; i += blockDim.x) {
      kd[i] = gx_f_to_bf16(ks[i]);
      vd[i] = gx_f_to_bf16(vs[i]);
    }
  }
}

GX_EXPORT gx_status gx_kv_write(gx_ctx *ctx, const float *k, const float *v, const int32_t *slot, int T, int kvdim,
                                uint16_t *kcache, uint16_t *vcache) {
  GX_CHECK_CTX(ctx);
  GX_CHECK(T >= 0 && kvdim > 0, "gx_kv_write: T=%d kvdim=%d", T, kvdim);
  if (T == 0) return GX_OK;
  GX_CHECK(k && v && slot && kcache && vcache, "gx_kv_write: null pointer");
  GX_CALL(gx_set_device(ctx));
  bool vec = kvdim % 4 == 0 && gx_aligned(k, 16) && gx_aligned(v, 16) && gx_aligned(kcache, 8) &&
             gx_aligned(vcache, 8);
  int threads = std::min(256, std::max(32, (vec ? kvdim / 4 : kvdim) / 32 * 32));
  kv_write_kernel<<<T, threads, 0, ctx->stream>>>(k, v, slot, kvdim, vec, kcache, vcache);
  GX_LAUNCH("kv_write");
  return GX_OK;
}
