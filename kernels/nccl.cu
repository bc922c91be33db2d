// nccl.cu — collectives through NCCL, opened with dlopen on first use so a
// machine without NCCL still runs one GPU.
#include <dlfcn.h>
#include <string.h>

#include <mutex>

#include "common.cuh"

namespace {

struct NcclApi {
  decltype(&ncclGetUniqueId) get_unique_id;
  decltype(&ncclCommInitRank) comm_init_rank;
  decltype(&ncclCommDestroy) comm_destroy;
  decltype(&ncclAllReduce) all_reduce;
  decltype(&ncclAllGather) all_gather;
  decltype(&ncclGetErrorString) error_string;
  decltype(&ncclGetLastError) last_error;  // optional (NCCL >= 2.13)
};

std::mutex nccl_mu;
NcclApi nccl_api;
bool nccl_loaded;

gx_status load_nccl(const NcclApi **out) {
  std::lock_guard<std::mutex> lock(nccl_mu);
  if (nccl_loaded) {
    *out = &nccl_api;
    return GX_OK;
  }
  void *h = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char *e = dlerror();
    return gx_fail(GX_ERR_NCCL,
                   "libnccl.so.2 not found (%s): pip install nvidia-nccl-cu13 and add its nvidia/nccl/lib to "
                   "LD_LIBRARY_PATH (one GPU needs no NCCL)",
                   e ? e : "dlopen failed");
  }
  NcclApi a{};
  struct {
    void **slot;
    const char *name;
    bool required;
  } syms[] = {
      {(void **)&a.get_unique_id, "ncclGetUniqueId", true},
      {(void **)&a.comm_init_rank, "ncclCommInitRank", true},
      {(void **)&a.comm_destroy, "ncclCommDestroy", true},
      {(void **)&a.all_reduce, "ncclAllReduce", true},
      {(void **)&a.all_gather, "ncclAllGather", true},
      {(void **)&a.error_string, "ncclGetErrorString", true},
      {(void **)&a.last_error, "ncclGetLastError", false},
  };
  for (auto &s : syms) {
    *s.slot = dlsym(h, s.name);
    if (!*s.slot && s.required) {
      gx_status st = gx_fail(GX_ERR_NCCL, "libnccl.so.2 lacks %s", s.name);
      dlclose(h);
      return st;
    }
  }
  nccl_api = a;
  nccl_loaded = true;
  *out = &nccl_api;
  return GX_OK;
}

gx_status nccl_fail(const NcclApi *api, ncclComm_t comm, ncclResult_t r, const char *what) {
  const char *detail = api->last_error ? api->last_error(comm) : nullptr;
  return gx_fail(GX_ERR_NCCL, "%s: %s%s%s", what, api->error_string(r), detail && *detail ? ": " : "",
                 detail ? detail : "");
}

}  // namespace

void gx_nccl_destroy(gx_ctx *ctx) {
  if (ctx->comm && nccl_loaded) nccl_api.comm_destroy(ctx->comm);
  ctx->comm = nullptr;
  ctx->nranks = 0;
}

GX_EXPORT gx_status gx_nccl_unique_id(uint8_t id[GX_NCCL_ID_BYTES]) {
  static_assert(GX_NCCL_ID_BYTES == NCCL_UNIQUE_ID_BYTES, "NCCL unique id size");
  GX_CHECK(id, "gx_nccl_unique_id: null id");
  const NcclApi *api = nullptr;
  GX_CALL(load_nccl(&api));
  ncclUniqueId u;
  ncclResult_t r = api->get_unique_id(&u);
  if (r != ncclSuccess) return nccl_fail(api, nullptr, r, "ncclGetUniqueId");
  memcpy(id, u.internal, GX_NCCL_ID_BYTES);
  return GX_OK;
}

GX_EXPORT gx_status gx_nccl_init(gx_ctx *ctx, const uint8_t id[GX_NCCL_ID_BYTES], int nranks, int rank) {
  GX_CHECK_CTX(ctx);
  GX_CHECK(id && nranks > 0 && rank >= 0 && rank < nranks, "gx_nccl_init: nranks=%d rank=%d", nranks, rank);
  if (ctx->comm) return gx_fail(GX_ERR_STATE, "gx_nccl_init: the context already has a communicator");
  if (gx_is_capturing(ctx)) return gx_fail(GX_ERR_STATE, "gx_nccl_init during graph capture");
  const NcclApi *api = nullptr;
  GX_CALL(load_nccl(&api));
  GX_CALL(gx_set_device(ctx));
  ncclUniqueId u;
  memcpy(u.internal, id, GX_NCCL_ID_BYTES);
  ncclComm_t comm = nullptr;
  ncclResult_t r = api->comm_init_rank(&comm, nranks, u, rank);
  if (r != ncclSuccess) return nccl_fail(api, nullptr, r, "ncclCommInitRank");
  ctx->comm = comm;
  ctx->nranks = nranks;
  ctx->rank = rank;
  return GX_OK;
}

GX_EXPORT gx_status gx_all_reduce(gx_ctx *ctx, float *buf, int64_t n) {
  GX_CHECK_CTX(ctx);
  GX_CHECK(n >= 0 && (n == 0 || buf), "gx_all_reduce: n=%lld", (long long)n);
  if (!ctx->comm) return gx_fail(GX_ERR_STATE, "gx_all_reduce before gx_nccl_init");
  if (n == 0) return GX_OK;
  GX_CALL(gx_set_device(ctx));
  ncclResult_t r = nccl_api.all_reduce(buf, buf, (size_t)n, ncclFloat, ncclSum, ctx->comm, ctx->stream);
  if (r != ncclSuccess) return nccl_fail(&nccl_api, ctx->comm, r, "ncclAllReduce");
  return GX_OK;
}

GX_EXPORT gx_status gx_all_gather(gx_ctx *ctx, const float *in, float *out, int64_t n) {
  GX_CHECK_CTX(ctx);
  GX_CHECK(n >= 0 && (n == 0 || (in && out)), "gx_all_gather: n=%lld", (long long)n);
  if (!ctx->comm) return gx_fail(GX_ERR_STATE, "gx_all_gather before gx_nccl_init");
  if (n == 0) return GX_OK;
  GX_CALL(gx_set_device(ctx));
  ncclResult_t r = nccl_api.all_gather(in, out, (size_t)n, ncclFloat, ctx->comm, ctx->stream);
  if (r != ncclSuccess) return nccl_fail(&nccl_api, ctx->comm, r, "ncclAllGather");
  return GX_OK;
}
