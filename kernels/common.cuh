// common.cuh — what every translation unit of libgptoss_kernels.so shares:
// the context, error reporting, launch checks, scratch, bf16 helpers and
// block reductions. Internal; the public contract is gptoss.h.
#pragma once

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include <algorithm>
#include <atomic>

#include "gptoss.h"

// Types only: cuBLAS and NCCL are opened with dlopen at run time (lib.cu,
// nccl.cu); nothing links against them.
#include <cublas_v2.h>
#include <nccl.h>

#define GX_EXPORT extern "C" __attribute__((visibility("default")))

// ---- errors ---------------------------------------------------------------

// Records the calling thread's last error and returns status.
gx_status gx_fail(gx_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Clears the calling thread's last error (successful calls leave it alone:
// the message is that of the *last failure*).
gx_status gx_cuda_fail(cudaError_t err, const char *what);

// Returns from the enclosing function with a gx_status when a CUDA call fails.
#define GX_CUDA(call)                                      \
  do {                                                     \
    cudaError_t gx_e_ = (call);                            \
    if (gx_e_ != cudaSuccess) return gx_cuda_fail(gx_e_, #call); \
  } while (0)

// After a kernel launch: checks the launch (configuration, resources).
#define GX_LAUNCH(name)                                            \
  do {                                                             \
    cudaError_t gx_e_ = cudaGetLastError();                        \
    if (gx_e_ != cudaSuccess) return gx_cuda_fail(gx_e_, "launch " name); \
  } while (0)

#define GX_CHECK(cond, ...)                              \
  do {                                                   \
    if (!(cond)) return gx_fail(GX_ERR_ARG, __VA_ARGS__); \
  } while (0)

#define GX_CALL(expr)                 \
  do {                                \
    gx_status gx_s_ = (expr);         \
    if (gx_s_ != GX_OK) return gx_s_; \
  } while (0)

// ---- the context ----------------------------------------------------------

struct gx_cublas_api;  // the dlsym'd cuBLAS entry points (lib.cu)
struct gx_nccl_api;    // the dlsym'd NCCL entry points (nccl.cu)

struct gx_ctx {
  int device;
  int sms;               // multiprocessors
  int max_smem_optin;    // shared memory a block may opt into
  cudaStream_t stream;
  cublasHandle_t cublas;
  const gx_cublas_api *blas;
  void *cublas_ws;       // cuBLAS workspace (fixed, so cuBLAS never allocates during capture)
  int64_t cublas_ws_bytes;
  void *scratch;
  int64_t scratch_bytes;
  bool capturing;        // between gx_graph_begin and gx_graph_end
  // gx_sample's per-row parameters travel through a pinned staging buffer;
  // staging_done marks when the last copy out of it finished.
  void *staging;
  int64_t staging_bytes;
  cudaEvent_t staging_done;
  bool staging_pending;
  // NCCL
  ncclComm_t comm;
  int nranks, rank;
};

#define GX_CHECK_CTX(ctx)                                            \
  do {                                                               \
    if ((ctx) == nullptr) return gx_fail(GX_ERR_ARG, "null context"); \
  } while (0)

// True while the context's stream is being captured into a graph (by
// gx_graph_begin or by anyone else).
bool gx_is_capturing(gx_ctx *ctx);
// Points *p at the context's scratch, growing it to at least bytes first.
// Growing synchronizes the stream; inside a capture it fails with
// GX_ERR_STATE.
gx_status gx_scratch(gx_ctx *ctx, int64_t bytes, void **p);
// Makes the calling thread's current device the context's.
gx_status gx_set_device(gx_ctx *ctx);

// Lets func use up to the device's opt-in maximum of dynamic shared memory
// (done once per function and device; done holds a bit per device).
gx_status gx_allow_smem(gx_ctx *ctx, const void *func, std::atomic<uint64_t> *done);

// Destroys the context's communicator, if any (nccl.cu).
void gx_nccl_destroy(gx_ctx *ctx);

// cuBLAS calls (lib.cu).
gx_status gx_gemm_bf16(gx_ctx *ctx, const uint16_t *w, int64_t ldw, const __nv_bfloat16 *xb, int T, int N, int K,
                       float *out);

// ---- small helpers ----------------------------------------------------------

static inline int64_t gx_align(int64_t v, int64_t a) { return (v + a - 1) / a * a; }
static inline int gx_cdiv(int64_t a, int64_t b) { return (int)((a + b - 1) / b); }
static inline bool gx_aligned(const void *p, int bytes) { return ((uintptr_t)p % bytes) == 0; }

__device__ __forceinline__ float gx_bf16_to_f(uint16_t b) { return __uint_as_float(((uint32_t)b) << 16); }
// Round-to-nearest-even fp32 -> bf16 bits (NaN stays NaN).
__device__ __forceinline__ uint16_t gx_f_to_bf16(float f) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}
// The bf16 value nearest to f, as a float.
__device__ __forceinline__ float gx_round_bf16(float f) { return gx_bf16_to_f(gx_f_to_bf16(f)); }
// Two fp32 -> packed bf16x2 (lo in the low half).
__device__ __forceinline__ uint32_t gx_pack_bf16x2(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t *>(&v);
}

__device__ __forceinline__ float gx_warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float gx_warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every
// thread gets the result. red must hold 32 floats; the call synchronizes.
__device__ __forceinline__ float gx_block_sum(float v, float *red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = gx_warp_sum(v);
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float s = lane < nw ? red[lane] : 0.f;
  return gx_warp_sum(s);
}

// E8M0 scale 2^(s-127) times 2^extra, as the CPU's table gives it
// (s = 255 -> +Inf; s = 0 subnormal) for the normal cases built from bits.
__device__ __forceinline__ float gx_e8m0(uint32_t s, int extra) {
  int e = (int)s - 127 + extra;
  if (e >= -126 && e <= 127) return __uint_as_float((uint32_t)(e + 127) << 23);
  return ldexpf(1.0f, e);
}

// FP4 E2M1 nibbles to fp16 bit patterns scaled by 2^-14 (exact): the three
// magnitude bits go to the low exponent bits and the mantissa MSB of an
// fp16, the sign to bit 15; the result, converted to float, is the E2M1
// value times 2^-14 (subnormal fp16 for 0.5). For word q holding nibbles
// n0..n7 (element j at bits 4j..4j+3), pair i (0..3) gives elements i (low
// half) and i+4 (high half).
template <int I>
__device__ __forceinline__ uint32_t gx_fp4_pair_h2(uint32_t q) {
  const uint32_t t = q >> (4 * I);
  return ((t & 0x00070007u) << 9) | ((t & 0x00080008u) << 12);
}
__device__ __forceinline__ float2 gx_h2_to_f2(uint32_t h) {
  __half2 v = *reinterpret_cast<__half2 *>(&h);
  return __half22float2(v);
}
