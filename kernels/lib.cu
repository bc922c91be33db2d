// lib.cu — library, device, context, memory, scratch, graphs, and cuBLAS
// (opened with dlopen in gx_ctx_create).
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <mutex>

#include "common.cuh"

// ---- errors -----------------------------------------------------------------

static thread_local char gx_err[1024];

gx_status gx_fail(gx_status status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(gx_err, sizeof gx_err, fmt, ap);
  va_end(ap);
  return status;
}

gx_status gx_cuda_fail(cudaError_t err, const char *what) {
  // Clear a sticky launch error so it is not reported twice.
  (void)cudaGetLastError();
  return gx_fail(GX_ERR_CUDA, "%s: %s (%s)", what, cudaGetErrorString(err), cudaGetErrorName(err));
}

GX_EXPORT int gx_abi_version(void) { return GX_ABI_VERSION; }

GX_EXPORT const char *gx_last_error(void) { return gx_err; }

// ---- cuBLAS, opened at run time ---------------------------------------------

// Prototypes come from the real cublas_api.h (decltype), so a signature
// change in the headers fails the build instead of corrupting the stack.
// cublasGemmEx has a C++ overload taking cudaDataType: pick the one that
// takes cublasComputeType_t.
using gemmex_fn = cublasStatus_t (*)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                                     const void *, const void *, cudaDataType, int, const void *, cudaDataType,
                                     int, const void *, void *, cudaDataType, int, cublasComputeType_t,
                                     cublasGemmAlgo_t);
static_assert(sizeof(static_cast<gemmex_fn>(&cublasGemmEx)) == sizeof(void *), "cublasGemmEx prototype");

struct gx_cublas_api {
  decltype(&cublasCreate_v2) create;
  decltype(&cublasDestroy_v2) destroy;
  decltype(&cublasSetStream_v2) set_stream;
  decltype(&cublasSetWorkspace_v2) set_workspace;
  decltype(&cublasSetMathMode) set_math_mode;
  decltype(&cublasGetStatusString) status_string;
  gemmex_fn gemm_ex;
};

static std::mutex blas_mu;
static gx_cublas_api blas_api;
static bool blas_loaded;

static gx_status load_cublas(const gx_cublas_api **out) {
  std::lock_guard<std::mutex> lock(blas_mu);
  if (blas_loaded) {
    *out = &blas_api;
    return GX_OK;
  }
  // libcublas.so.13 pulls in libcublasLt.so.13 (its DT_NEEDED) from the same
  // search path.
  const char *names[] = {"libcublas.so.13", "libcublas.so"};
  void *h = nullptr;
  const char *err = nullptr;
  for (const char *n : names) {
    h = dlopen(n, RTLD_NOW | RTLD_LOCAL);
    if (h) break;
    if (!err) err = dlerror();
  }
  if (!h)
    return gx_fail(GX_ERR_CUBLAS,
                   "libcublas.so.13 not found (%s): pip install nvidia-cublas (CUDA 13) and add its "
                   "nvidia/cu13/lib to LD_LIBRARY_PATH, or install the CUDA 13 toolkit",
                   err ? err : "dlopen failed");
  gx_cublas_api a;
  struct {
    void **slot;
    const char *name;
  } syms[] = {
      {(void **)&a.create, "cublasCreate_v2"},
      {(void **)&a.destroy, "cublasDestroy_v2"},
      {(void **)&a.set_stream, "cublasSetStream_v2"},
      {(void **)&a.set_workspace, "cublasSetWorkspace_v2"},
      {(void **)&a.set_math_mode, "cublasSetMathMode"},
      {(void **)&a.status_string, "cublasGetStatusString"},
      {(void **)&a.gemm_ex, "cublasGemmEx"},
  };
  for (auto &s : syms) {
    *s.slot = dlsym(h, s.name);
    if (!*s.slot) {
      gx_status st = gx_fail(GX_ERR_CUBLAS, "libcublas.so.13 lacks %s (need cuBLAS 13)", s.name);
      dlclose(h);
      return st;
    }
  }
  blas_api = a;
  blas_loaded = true;  // never closed: handles may outlive any one context
  *out = &blas_api;
  return GX_OK;
}

static gx_status blas_fail(gx_ctx *ctx, cublasStatus_t st, const char *what) {
  const char *msg = ctx && ctx->blas ? ctx->blas->status_string(st) : "";
  return gx_fail(GX_ERR_CUBLAS, "%s: cuBLAS status %d %s", what, (int)st, msg ? msg : "");
}

gx_status gx_gemm_bf16(gx_ctx *ctx, const uint16_t *w, int64_t ldw, const __nv_bfloat16 *xb, int T, int N, int K,
                       float *out) {
  // Row-major out[T x N] = x[T x K] . W^T is column-major out^T[N x T] =
  // W[N x K] . x^T[K x T]. Column-major, the row-major W (stride ldw) is a
  // K x N matrix with leading dimension ldw, hence op(A) = A^T; the row-major
  // x is K x T with leading dimension K, op(B) = B.
  const float one = 1.f, zero = 0.f;
  if (ldw > INT32_MAX) return gx_fail(GX_ERR_ARG, "gx_linear: ldw %lld too large", (long long)ldw);
  cublasStatus_t st = ctx->blas->gemm_ex(ctx->cublas, CUBLAS_OP_T, CUBLAS_OP_N, N, T, K, &one, w, CUDA_R_16BF,
                                         (int)ldw, xb, CUDA_R_16BF, K, &zero, out, CUDA_R_32F, N,
                                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  if (st != CUBLAS_STATUS_SUCCESS) return blas_fail(ctx, st, "cublasGemmEx");
  return GX_OK;
}

// ---- device and context -----------------------------------------------------

GX_EXPORT gx_status gx_device_count(int *count) {
  GX_CHECK(count, "gx_device_count: null count");
  *count = 0;
  cudaError_t e = cudaGetDeviceCount(count);
  if (e != cudaSuccess) {
    *count = 0;
    return gx_cuda_fail(e, "cudaGetDeviceCount (is the NVIDIA driver installed?)");
  }
  return GX_OK;
}

gx_status gx_set_device(gx_ctx *ctx) {
  GX_CUDA(cudaSetDevice(ctx->device));
  return GX_OK;
}

static void ctx_release(gx_ctx *c) {
  cudaSetDevice(c->device);
  if (c->stream) cudaStreamSynchronize(c->stream);
  if (c->cublas && c->blas) c->blas->destroy(c->cublas);
  if (c->cublas_ws) cudaFree(c->cublas_ws);
  if (c->scratch) cudaFree(c->scratch);
  if (c->staging_done) cudaEventDestroy(c->staging_done);
  if (c->staging) cudaFreeHost(c->staging);
  if (c->stream) cudaStreamDestroy(c->stream);
  delete c;
}

GX_EXPORT gx_status gx_ctx_create(int device, gx_ctx **out) {
  GX_CHECK(out, "gx_ctx_create: null out");
  *out = nullptr;
  int n = 0;
  GX_CALL(gx_device_count(&n));
  GX_CHECK(device >= 0 && device < n, "gx_ctx_create: device %d of %d", device, n);
  const gx_cublas_api *blas = nullptr;
  GX_CALL(load_cublas(&blas));

  gx_ctx *c = new gx_ctx();
  memset(c, 0, sizeof *c);
  c->device = device;
  c->blas = blas;
  c->nranks = 0;
  gx_status st = GX_OK;
  cublasStatus_t bs;
  cudaDeviceProp prop;
  cudaError_t e = cudaSetDevice(device);
  if (e != cudaSuccess) { st = gx_cuda_fail(e, "cudaSetDevice"); goto fail; }
  e = cudaGetDeviceProperties(&prop, device);
  if (e != cudaSuccess) { st = gx_cuda_fail(e, "cudaGetDeviceProperties"); goto fail; }
  if (prop.major < 8) {
    st = gx_fail(GX_ERR_CUDA, "device %d (%s) has compute capability %d.%d; the kernels need 8.0 or newer",
                 device, prop.name, prop.major, prop.minor);
    goto fail;
  }
  c->sms = prop.multiProcessorCount;
  c->max_smem_optin = (int)prop.sharedMemPerBlockOptin;
  e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
  if (e != cudaSuccess) { st = gx_cuda_fail(e, "cudaStreamCreateWithFlags"); goto fail; }
  e = cudaEventCreateWithFlags(&c->staging_done, cudaEventDisableTiming);
  if (e != cudaSuccess) { st = gx_cuda_fail(e, "cudaEventCreate"); goto fail; }
  bs = blas->create(&c->cublas);
  if (bs != CUBLAS_STATUS_SUCCESS) { st = blas_fail(c, bs, "cublasCreate"); c->cublas = nullptr; goto fail; }
  bs = blas->set_stream(c->cublas, c->stream);
  if (bs != CUBLAS_STATUS_SUCCESS) { st = blas_fail(c, bs, "cublasSetStream"); goto fail; }
  // A workspace of our own (32 MiB, what NVIDIA recommends for Hopper), set
  // after the stream: cuBLAS then never allocates, which graph capture needs.
  c->cublas_ws_bytes = 32 << 20;
  e = cudaMalloc(&c->cublas_ws, c->cublas_ws_bytes);
  if (e != cudaSuccess) { st = gx_cuda_fail(e, "cudaMalloc (cuBLAS workspace)"); c->cublas_ws = nullptr; goto fail; }
  bs = blas->set_workspace(c->cublas, c->cublas_ws, (size_t)c->cublas_ws_bytes);
  if (bs != CUBLAS_STATUS_SUCCESS) { st = blas_fail(c, bs, "cublasSetWorkspace"); goto fail; }
  bs = blas->set_math_mode(c->cublas, CUBLAS_DEFAULT_MATH);
  if (bs != CUBLAS_STATUS_SUCCESS) { st = blas_fail(c, bs, "cublasSetMathMode"); goto fail; }
  *out = c;
  return GX_OK;
fail:
  ctx_release(c);
  return st;
}

GX_EXPORT void gx_ctx_destroy(gx_ctx *ctx) {
  if (!ctx) return;
  if (ctx->comm) gx_nccl_destroy(ctx);
  ctx_release(ctx);
}

GX_EXPORT gx_status gx_device_info(gx_ctx *ctx, char *name, int n, int *major, int *minor, int *sms) {
  GX_CHECK_CTX(ctx);
  cudaDeviceProp prop;
  GX_CUDA(cudaGetDeviceProperties(&prop, ctx->device));
  if (name && n > 0) {
    strncpy(name, prop.name, (size_t)n - 1);
    name[n - 1] = 0;
  }
  if (major) *major = prop.major;
  if (minor) *minor = prop.minor;
  if (sms) *sms = prop.multiProcessorCount;
  return GX_OK;
}

GX_EXPORT gx_status gx_mem_info(gx_ctx *ctx, int64_t *free_bytes, int64_t *total_bytes) {
  GX_CHECK_CTX(ctx);
  GX_CALL(gx_set_device(ctx));
  size_t f = 0, t = 0;
  GX_CUDA(cudaMemGetInfo(&f, &t));
  if (free_bytes) *free_bytes = (int64_t)f;
  if (total_bytes) *total_bytes = (int64_t)t;
  return GX_OK;
}

// ---- memory and the stream ----------------------------------------------------

bool gx_is_capturing(gx_ctx *ctx) {
  if (ctx->capturing) return true;
  cudaStreamCaptureStatus s = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(ctx->stream, &s) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return s != cudaStreamCaptureStatusNone;
}

GX_EXPORT gx_status gx_malloc(gx_ctx *ctx, int64_t bytes, void **out) {
  GX_CHECK_CTX(ctx);
  GX_CHECK(out, "gx_malloc: null out");
  GX_CHECK(bytes >= 0, "gx_malloc: %lld bytes", (long long)bytes);
  *out = nullptr;
  if (gx_is_capturing(ctx)) return gx_fail(GX_ERR_STATE, "gx_malloc during graph capture");
  GX_CALL(gx_set_device(ctx));
  void *p = nullptr;
  cudaError_t e = cudaMalloc(&p, bytes > 0 ? (size_t)bytes : 1);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    size_t f = 0, t = 0;
    cudaMemGetInfo(&f, &t);
    return gx_fail(GX_ERR_CUDA, "cudaMalloc(%lld bytes): %s (%lld of %lld bytes free)", (long long)bytes,
                   cudaGetErrorString(e), (long long)f, (long long)t);
  }
  *out = p;
  return GX_OK;
}

GX_EXPORT gx_status gx_free(gx_ctx *ctx, void *ptr) {
  GX_CHECK_CTX(ctx);
  if (!ptr) return GX_OK;
  if (gx_is_capturing(ctx)) return gx_fail(GX_ERR_STATE, "gx_free during graph capture");
  GX_CALL(gx_set_device(ctx));
  GX_CUDA(cudaFree(ptr));
  return GX_OK;
}

GX_EXPORT gx_status gx_upload(gx_ctx *ctx, void *dst, const void *src, int64_t bytes) {
  GX_CHECK_CTX(ctx);
  GX_CHECK(bytes >= 0 && (bytes == 0 || (dst && src)), "gx_upload: bad arguments");
  if (bytes == 0) return GX_OK;
  if (gx_is_capturing(ctx)) return gx_fail(GX_ERR_STATE, "gx_upload during graph capture");
  GX_CALL(gx_set_device(ctx));
  GX_CUDA(cudaMemcpyAsync(dst, src, (size_t)bytes, cudaMemcpyHostToDevice, ctx->stream));
  GX_CUDA(cudaStreamSynchronize(ctx->stream));
  return GX_OK;
}

GX_EXPORT gx_status gx_download(gx_ctx *ctx, void *dst, const void *src, int64_t bytes) {
  GX_CHECK_CTX(ctx);
  GX_CHECK(bytes >= 0 && (bytes == 0 || (dst && src)), "gx_download: bad arguments");
  if (bytes == 0) return GX_OK;
  if (gx_is_capturing(ctx)) return gx_fail(GX_ERR_STATE, "gx_download during graph capture");
  GX_CALL(gx_set_device(ctx));
  GX_CUDA(cudaMemcpyAsync(dst, src, (size_t)bytes, cudaMemcpyDeviceToHost, ctx->stream));
  GX_CUDA(cudaStreamSynchronize(ctx->stream));
  return GX_OK;
}

GX_EXPORT gx_status gx_copy(gx_ctx *ctx, void *dst, const void *src, int64_t bytes) {
  GX_CHECK_CTX(ctx);
  GX_CHECK(bytes >= 0 && (bytes == 0 || (dst && src)), "gx_copy: bad arguments");
  if (bytes == 0) return GX_OK;
  GX_CALL(gx_set_device(ctx));
  GX_CUDA(cudaMemcpyAsync(dst, src, (size_t)bytes, cudaMemcpyDeviceToDevice, ctx->stream));
  return GX_OK;
}

GX_EXPORT gx_status gx_memset(gx_ctx *ctx, void *dst, int value, int64_t bytes) {
  GX_CHECK_CTX(ctx);
  GX_CHECK(bytes >= 0 && (bytes == 0 || dst), "gx_memset: bad arguments");
  if (bytes == 0) return GX_OK;
  GX_CALL(gx_set_device(ctx));
  GX_CUDA(cudaMemsetAsync(dst, value, (size_t)bytes, ctx->stream));
  return GX_OK;
}

GX_EXPORT gx_status gx_sync(gx_ctx *ctx) {
  GX_CHECK_CTX(ctx);
  if (gx_is_capturing(ctx)) return gx_fail(GX_ERR_STATE, "gx_sync during graph capture");
  GX_CALL(gx_set_device(ctx));
  GX_CUDA(cudaStreamSynchronize(ctx->stream));
  return GX_OK;
}

static gx_status scratch_grow(gx_ctx *ctx, int64_t bytes) {
  if (bytes <= ctx->scratch_bytes) return GX_OK;
  if (gx_is_capturing(ctx))
    return gx_fail(GX_ERR_STATE,
                   "scratch of %lld bytes needed during graph capture (have %lld): call gx_scratch_reserve "
                   "before gx_graph_begin",
                   (long long)bytes, (long long)ctx->scratch_bytes);
  GX_CALL(gx_set_device(ctx));
  // Earlier ops may still read the old scratch.
  GX_CUDA(cudaStreamSynchronize(ctx->stream));
  if (ctx->scratch) {
    GX_CUDA(cudaFree(ctx->scratch));
    ctx->scratch = nullptr;
    ctx->scratch_bytes = 0;
  }
  int64_t want = gx_align(bytes, 1 << 20);
  void *p = nullptr;
  cudaError_t e = cudaMalloc(&p, (size_t)want);
  if (e != cudaSuccess) return gx_cuda_fail(e, "cudaMalloc (scratch)");
  ctx->scratch = p;
  ctx->scratch_bytes = want;
  return GX_OK;
}

gx_status gx_allow_smem(gx_ctx *ctx, const void *func, std::atomic<uint64_t> *done) {
  const uint64_t bit = 1ull << (ctx->device & 63);
  if (done->load(std::memory_order_acquire) & bit) return GX_OK;
  GX_CUDA(cudaFuncSetAttribute(func, cudaFuncAttributeMaxDynamicSharedMemorySize, ctx->max_smem_optin));
  done->fetch_or(bit, std::memory_order_release);
  return GX_OK;
}

gx_status gx_scratch(gx_ctx *ctx, int64_t bytes, void **p) {
  GX_CALL(scratch_grow(ctx, bytes));
  *p = ctx->scratch;
  return GX_OK;
}

GX_EXPORT gx_status gx_scratch_reserve(gx_ctx *ctx, int64_t bytes) {
  GX_CHECK_CTX(ctx);
  GX_CHECK(bytes >= 0, "gx_scratch_reserve: %lld bytes", (long long)bytes);
  return scratch_grow(ctx, bytes);
}

GX_EXPORT gx_status gx_copy_bench(gx_ctx *ctx, void *dst, const void *src, int64_t bytes, int iters, float *ms) {
  GX_CHECK_CTX(ctx);
  GX_CHECK(dst && src && bytes > 0 && iters > 0 && ms, "gx_copy_bench: bad arguments");
  if (gx_is_capturing(ctx)) return gx_fail(GX_ERR_STATE, "gx_copy_bench during graph capture");
  GX_CALL(gx_set_device(ctx));
  cudaEvent_t a = nullptr, b = nullptr;
  GX_CUDA(cudaEventCreate(&a));
  cudaError_t e = cudaEventCreate(&b);
  if (e != cudaSuccess) {
    cudaEventDestroy(a);
    return gx_cuda_fail(e, "cudaEventCreate");
  }
  e = cudaEventRecord(a, ctx->stream);
  for (int i = 0; i < iters && e == cudaSuccess; i++)
    e = cudaMemcpyAsync(dst, src, (size_t)bytes, cudaMemcpyDeviceToDevice, ctx->stream);
  if (e == cudaSuccess) e = cudaEventRecord(b, ctx->stream);
  if (e == cudaSuccess) e = cudaEventSynchronize(b);
  float t = 0;
  if (e == cudaSuccess) e = cudaEventElapsedTime(&t, a, b);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  if (e != cudaSuccess) return gx_cuda_fail(e, "gx_copy_bench");
  *ms = t;
  return GX_OK;
}

// ---- CUDA graphs --------------------------------------------------------------

struct gx_graph {
  cudaGraphExec_t exec;
  int device;
};

GX_EXPORT gx_status gx_graph_begin(gx_ctx *ctx) {
  GX_CHECK_CTX(ctx);
  if (gx_is_capturing(ctx)) return gx_fail(GX_ERR_STATE, "gx_graph_begin: already capturing");
  GX_CALL(gx_set_device(ctx));
  // Thread-local mode: a forbidden call (cudaMalloc, a sync) made by this
  // thread during the capture fails instead of silently breaking the graph.
  // Begin and end must come from the same OS thread (Go: LockOSThread).
  GX_CUDA(cudaStreamBeginCapture(ctx->stream, cudaStreamCaptureModeThreadLocal));
  ctx->capturing = true;
  return GX_OK;
}

GX_EXPORT gx_status gx_graph_end(gx_ctx *ctx, gx_graph **out) {
  GX_CHECK_CTX(ctx);
  GX_CHECK(out, "gx_graph_end: null out");
  *out = nullptr;
  if (!ctx->capturing) return gx_fail(GX_ERR_STATE, "gx_graph_end without gx_graph_begin");
  GX_CALL(gx_set_device(ctx));
  cudaGraph_t graph = nullptr;
  cudaError_t e = cudaStreamEndCapture(ctx->stream, &graph);
  ctx->capturing = false;
  if (e != cudaSuccess) {
    if (graph) cudaGraphDestroy(graph);
    return gx_cuda_fail(e, "cudaStreamEndCapture (an op during the capture failed or was not capturable)");
  }
  cudaGraphExec_t exec = nullptr;
  e = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  if (e != cudaSuccess) return gx_cuda_fail(e, "cudaGraphInstantiate");
  gx_graph *g = new gx_graph{exec, ctx->device};
  *out = g;
  return GX_OK;
}

GX_EXPORT gx_status gx_graph_launch(gx_ctx *ctx, gx_graph *g) {
  GX_CHECK_CTX(ctx);
  GX_CHECK(g, "gx_graph_launch: null graph");
  GX_CHECK(g->device == ctx->device, "gx_graph_launch: graph of device %d on context of device %d", g->device,
           ctx->device);
  if (gx_is_capturing(ctx)) return gx_fail(GX_ERR_STATE, "gx_graph_launch during graph capture");
  GX_CALL(gx_set_device(ctx));
  GX_CUDA(cudaGraphLaunch(g->exec, ctx->stream));
  return GX_OK;
}

GX_EXPORT void gx_graph_destroy(gx_graph *g) {
  if (!g) return;
  cudaSetDevice(g->device);
  cudaGraphExecDestroy(g->exec);
  delete g;
}
