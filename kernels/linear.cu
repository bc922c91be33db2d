// linear.cu — dense bf16 projections: out[T x N] = x[T x K] . W^T + bias.
// Both paths round x to bf16 first and accumulate bf16 x bf16 products in
// fp32, so they compute the same function (up to summation order):
//  - T <= 8: a GEMV that streams W with 16-byte loads, two rows per warp,
//    x (as bf16) in shared memory (memory-bound decode);
//  - otherwise x -> bf16 into the scratch, cublasGemmEx, then the bias.
#include "common.cuh"

namespace {

constexpr int kGemvMaxT = 8;
constexpr int kGemvThreads = 256;
constexpr int kGemvUnroll = 4;  // 16-byte loads in flight per row per lane

__device__ __forceinline__ void bf16x8_to_f(const uint4 v, float *f) {
  f[0] = __uint_as_float(v.x << 16), f[1] = __uint_as_float(v.x & 0xffff0000u);
  f[2] = __uint_as_float(v.y << 16), f[3] = __uint_as_float(v.y & 0xffff0000u);
  f[4] = __uint_as_float(v.z << 16), f[5] = __uint_as_float(v.z & 0xffff0000u);
  f[6] = __uint_as_float(v.w << 16), f[7] = __uint_as_float(v.w & 0xffff0000u);
}

template <int TT>
__global__ void __launch_bounds__(kGemvThreads, 2) gemv_bf16_kernel(const float *__restrict__ x,
                                                                 const uint16_t *__restrict__ w, int64_t ldw,
                                                                 const float *__restrict__ bias, int N, int K,
                                                                 float *__restrict__ out) {
  extern __shared__ uint4 xs[];  // [TT][K/8] chunks of 8 bf16
  const int K8 = K / 8;
  for (int i = threadIdx.x; i < TT * K8; i += blockDim.x) {
    const int t = i / K8, c = i - t * K8;
    const float4 *src = reinterpret_cast<const float4 *>(x + (int64_t)t * K) + 2 * c;
    const float4 a = src[0], b = src[1];
    xs[i] = make_uint4(gx_pack_bf16x2(a.x, a.y), gx_pack_bf16x2(a.z, a.w), gx_pack_bf16x2(b.x, b.y),
                       gx_pack_bf16x2(b.z, b.w));
  }
  __syncthreads();
  const int lane = threadIdx.x & 31;
  const int warp = blockIdx.x * (kGemvThreads / 32) + (threadIdx.x >> 5);
  const int nwarps = gridDim.x * (kGemvThreads / 32);
  for (int r0 = 2 * warp; r0 < N; r0 += 2 * nwarps) {
    const int r1 = r0 + 1 < N ? r0 + 1 : r0;
    const uint4 *w0 = reinterpret_cast<const uint4 *>(w + (int64_t)r0 * ldw);
    const uint4 *w1 = reinterpret_cast<const uint4 *>(w + (int64_t)r1 * ldw);
    float acc0[TT], acc1[TT];
#pragma unroll
    for (int t = 0; t < TT; t++) acc0[t] = acc1[t] = 0.f;
    for (int c0 = lane; c0 < K8; c0 += 32 * kGemvUnroll) {
      uint4 a[kGemvUnroll], b[kGemvUnroll];
#pragma unroll
      for (int u = 0; u < kGemvUnroll; u++) {
        const int c = c0 + 32 * u;
        if (c < K8) {
          a[u] = __ldg(w0 + c);
          b[u] = __ldg(w1 + c);
        } else {
          a[u] = b[u] = make_uint4(0, 0, 0, 0);
        }
      }
#pragma unroll
      for (int u = 0; u < kGemvUnroll; u++) {
        const int c = c0 + 32 * u;
        if (c < K8) {
          float fa[8], fb[8];
          bf16x8_to_f(a[u], fa);
          bf16x8_to_f(b[u], fb);
#pragma unroll
          for (int t = 0; t < TT; t++) {
            float fx[8];
            bf16x8_to_f(xs[t * K8 + c], fx);
#pragma unroll
            for (int j = 0; j < 8; j++) {
              acc0[t] = fmaf(fa[j], fx[j], acc0[t]);
              acc1[t] = fmaf(fb[j], fx[j], acc1[t]);
            }
          }
        }
      }
    }
#pragma unroll
    for (int t = 0; t < TT; t++) {
      acc0[t] = gx_warp_sum(acc0[t]);
      acc1[t] = gx_warp_sum(acc1[t]);
    }
    if (lane < TT) {
      // Lane t writes token t (compile-time indices only: select by loop).
      float v0 = 0.f, v1 = 0.f;
#pragma unroll
      for (int t = 0; t < TT; t++)
        if (t == lane) v0 = acc0[t], v1 = acc1[t];
      out[(int64_t)lane * N + r0] = v0 + (bias ? bias[r0] : 0.f);
      if (r1 != r0) out[(int64_t)lane * N + r1] = v1 + (bias ? bias[r1] : 0.f);
    }
  }
}

__global__ void to_bf16_kernel(const float *__restrict__ x, int T, int K, __nv_bfloat16 *__restrict__ y) {
  const int64_t n = (int64_t)T * K;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    y[i] = __float2bfloat16_rn(x[i]);
}

__global__ void to_bf16x4_kernel(const float4 *__restrict__ x, int64_t n4, uint2 *__restrict__ y) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4; i += (int64_t)gridDim.x * blockDim.x) {
    const float4 v = x[i];
    y[i] = make_uint2(gx_pack_bf16x2(v.x, v.y), gx_pack_bf16x2(v.z, v.w));
  }
}

__global__ void bias_kernel(float *__restrict__ out, const float *__restrict__ bias, int64_t n, int N) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    out[i] += bias[i % N];
}

template <int TT>
gx_status gemv_launch(gx_ctx *ctx, const float *x, const uint16_t *w, int64_t ldw, const float *bias, int N, int K,
                      float *out) {
  const int smem = TT * K * 2;
  if (smem > 48 * 1024) {
    static std::atomic<uint64_t> smem_done{0};
    GX_CALL(gx_allow_smem(ctx, reinterpret_cast<const void *>(gemv_bf16_kernel<TT>), &smem_done));
  }
  // Enough blocks to fill the machine; each converts x once, then loops
  // over row pairs.
  int per_sm = std::max(1, std::min(4, (200 * 1024) / (smem + 2048)));
  int blocks = std::min(gx_cdiv(N, 2 * (kGemvThreads / 32)), ctx->sms * per_sm);
  gemv_bf16_kernel<TT><<<blocks, kGemvThreads, smem, ctx->stream>>>(x, w, ldw, bias, N, K, out);
  GX_LAUNCH("gemv_bf16");
  return GX_OK;
}

}  // namespace

GX_EXPORT gx_status gx_linear(gx_ctx *ctx, const float *x, const uint16_t *w, int64_t ldw, const float *bias, int T,
                              int N, int K, float *out) {
  GX_CHECK_CTX(ctx);
  GX_CHECK(T >= 0 && N > 0 && K > 0 && ldw >= K, "gx_linear: T=%d N=%d K=%d ldw=%lld", T, N, K, (long long)ldw);
  if (T == 0) return GX_OK;
  GX_CHECK(x && w && out, "gx_linear: null pointer");
  GX_CALL(gx_set_device(ctx));
  const bool gemv_ok = T <= kGemvMaxT && K % 8 == 0 && ldw % 8 == 0 && gx_aligned(w, 16) && gx_aligned(x, 16) &&
                       (int64_t)T * K * 2 <= ctx->max_smem_optin;
  if (gemv_ok) {
    switch (T) {
      case 1: return gemv_launch<1>(ctx, x, w, ldw, bias, N, K, out);
      case 2: return gemv_launch<2>(ctx, x, w, ldw, bias, N, K, out);
      case 3: return gemv_launch<3>(ctx, x, w, ldw, bias, N, K, out);
      case 4: return gemv_launch<4>(ctx, x, w, ldw, bias, N, K, out);
      case 5: return gemv_launch<5>(ctx, x, w, ldw, bias, N, K, out);
      case 6: return gemv_launch<6>(ctx, x, w, ldw, bias, N, K, out);
      case 7: return gemv_launch<7>(ctx, x, w, ldw, bias, N, K, out);
      case 8: return gemv_launch<8>(ctx, x, w, ldw, bias, N, K, out);
    }
  }
  const int64_t n = (int64_t)T * K;
  void *scratch = nullptr;
  GX_CALL(gx_scratch(ctx, n * 2, &scratch));
  __nv_bfloat16 *xb = static_cast<__nv_bfloat16 *>(scratch);
  if (K % 4 == 0 && gx_aligned(x, 16)) {
    int blocks = (int)std::min<int64_t>((n / 4 + 255) / 256, (int64_t)ctx->sms * 8);
    to_bf16x4_kernel<<<blocks, 256, 0, ctx->stream>>>(reinterpret_cast<const float4 *>(x), n / 4,
                                                      reinterpret_cast<uint2 *>(xb));
  } else {
    int blocks = (int)std::min<int64_t>((n + 255) / 256, (int64_t)ctx->sms * 8);
    to_bf16_kernel<<<blocks, 256, 0, ctx->stream>>>(x, T, K, xb);
  }
  GX_LAUNCH("to_bf16");
  GX_CALL(gx_gemm_bf16(ctx, w, ldw, xb, T, N, K, out));
  if (bias) {
    const int64_t m = (int64_t)T * N;
    int blocks = (int)std::min<int64_t>((m + 255) / 256, (int64_t)ctx->sms * 8);
    bias_kernel<<<blocks, 256, 0, ctx->stream>>>(out, bias, m, N);
    GX_LAUNCH("bias");
  }
  return GX_OK;
}
