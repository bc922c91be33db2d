/*
 * shim.h — the run-time binding of libgptoss_kernels.so (kernels/gptoss.h).
 *
 * The worker must build and run on machines without CUDA, so it never links
 * the kernels library: gxs_open dlopens it and resolves every entry point of
 * the header into a table (gxs_lib), failing on any missing one. Go calls the
 * small static wrappers below, which call through the table.
 *
 * Why wrappers rather than calling the pointers from Go: cgo cannot call C
 * function pointers, and gx_last_error() is per OS thread while a goroutine
 * may move between threads between two cgo calls. So each wrapper copies the
 * failure message into the caller's buffer (GXS_ERRN bytes) within the same
 * C call that failed. Device pointers cross as uintptr_t so that Go never
 * holds them as unsafe.Pointer.
 *
 * The field types are taken from the header's declarations (__typeof__), so
 * a signature change in gptoss.h that the wrappers do not follow fails to
 * compile here instead of misbehaving at run time.
 */
#ifndef GPTOSS_SHIM_H
#define GPTOSS_SHIM_H

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gptoss.h"

#define GXS_ERRN 1024

/* Every entry point of gptoss.h, in header order. */
#define GXS_SYMBOLS(X)                                                                              \
  X(gx_abi_version) X(gx_last_error) X(gx_device_count) X(gx_ctx_create) X(gx_ctx_destroy)         \
  X(gx_device_info) X(gx_mem_info) X(gx_malloc) X(gx_free) X(gx_upload) X(gx_download) X(gx_copy) \
  X(gx_memset) X(gx_sync) X(gx_scratch_reserve) X(gx_copy_bench) X(gx_graph_begin)                \
  X(gx_graph_end) X(gx_graph_launch) X(gx_graph_destroy) X(gx_embed) X(gx_rmsnorm)               \
  X(gx_add_rmsnorm) X(gx_add) X(gx_gather_rows) X(gx_linear) X(gx_rope) X(gx_kv_write)           \
  X(gx_attention) X(gx_router_topk) X(gx_moe_workspace) X(gx_moe) X(gx_sample) X(gx_mask_logits)  \
  X(gx_nccl_unique_id) X(gx_nccl_init) X(gx_all_reduce) X(gx_all_gather)

typedef struct gxs_lib {
  void *handle;
#define GXS_FIELD(name) __typeof__(&name) name;
  GXS_SYMBOLS(GXS_FIELD)
#undef GXS_FIELD
} gxs_lib;

/* gxs_preload makes a CUDA library (cuBLAS, NCCL …) visible to the
 * libraries opened after it: dlopen by full path with RTLD_GLOBAL, so a later
 * dlopen of the same soname by the kernels library finds it already loaded.
 * The handle is kept for the life of the process. */
static int gxs_preload(const char *path, char *err) {
  dlerror();
  void *h = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
  if (!h) {
    const char *e = dlerror();
    snprintf(err, GXS_ERRN, "%s", e ? e : "dlopen failed");
    return 1;
  }
  return 0;
}

/* gxs_open returns 0 and the table, 1 when dlopen fails (message in err), 2
 * when symbols are missing (their names, space-separated, in err). */
static int gxs_open(const char *path, gxs_lib **out, char *err) {
  *out = NULL;
  err[0] = 0;
  dlerror();
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char *e = dlerror();
    snprintf(err, GXS_ERRN, "%s", e ? e : "dlopen failed");
    return 1;
  }
  gxs_lib *L = (gxs_lib *)calloc(1, sizeof *L);
  if (!L) {
    dlclose(h);
    snprintf(err, GXS_ERRN, "out of memory");
    return 1;
  }
  L->handle = h;
  size_t n = 0;
#define GXS_LOAD(name)                                                           \
  L->name = (__typeof__(&name))dlsym(h, #name);                                  \
  if (!L->name && n + sizeof(#name) + 1 < GXS_ERRN) {                            \
    n += (size_t)snprintf(err + n, GXS_ERRN - n, "%s%s", n ? " " : "", #name);   \
  }
  GXS_SYMBOLS(GXS_LOAD)
#undef GXS_LOAD
  if (err[0]) {
    dlclose(h);
    free(L);
    return 2;
  }
  *out = L;
  return 0;
}

static int gxs_abi_version(gxs_lib *L) { return L->gx_abi_version(); }

static void gxs_fail(gxs_lib *L, char *err) {
  const char *m = L->gx_last_error();
  snprintf(err, GXS_ERRN, "%s", (m && m[0]) ? m : "no message from gx_last_error");
}

/* GXS_RET returns the status of expr, copying the message on failure. */
#define GXS_RET(expr)                \
  do {                               \
    gx_status st_ = (expr);          \
    if (st_ != GX_OK) gxs_fail(L, err); \
    return st_;                      \
  } while (0)

#define DP(x) ((void *)(x))
#define F32(x) ((float *)(x))
#define CF32(x) ((const float *)(x))
#define I32(x) ((int32_t *)(x))
#define CI32(x) ((const int32_t *)(x))
#define CU16(x) ((const uint16_t *)(x))
#define U16(x) ((uint16_t *)(x))
#define CU8(x) ((const uint8_t *)(x))
#define CU32(x) ((const uint32_t *)(x))

static int gxs_device_count(gxs_lib *L, char *err, int *n) { GXS_RET(L->gx_device_count(n)); }
static int gxs_ctx_create(gxs_lib *L, char *err, int dev, gx_ctx **out) { GXS_RET(L->gx_ctx_create(dev, out)); }
static void gxs_ctx_destroy(gxs_lib *L, gx_ctx *c) { L->gx_ctx_destroy(c); }
static int gxs_device_info(gxs_lib *L, char *err, gx_ctx *c, char *name, int n, int *major, int *minor, int *sms) {
  GXS_RET(L->gx_device_info(c, name, n, major, minor, sms));
}
static int gxs_mem_info(gxs_lib *L, char *err, gx_ctx *c, int64_t *free_b, int64_t *total_b) {
  GXS_RET(L->gx_mem_info(c, free_b, total_b));
}
static int gxs_malloc(gxs_lib *L, char *err, gx_ctx *c, int64_t bytes, uintptr_t *out) {
  void *p = NULL;
  gx_status st = L->gx_malloc(c, bytes, &p);
  if (st != GX_OK) {
    gxs_fail(L, err);
    return st;
  }
  *out = (uintptr_t)p;
  return GX_OK;
}
static int gxs_free(gxs_lib *L, char *err, gx_ctx *c, uintptr_t p) { GXS_RET(L->gx_free(c, DP(p))); }
static int gxs_upload(gxs_lib *L, char *err, gx_ctx *c, uintptr_t dst, const void *src, int64_t bytes) {
  GXS_RET(L->gx_upload(c, DP(dst), src, bytes));
}
static int gxs_download(gxs_lib *L, char *err, gx_ctx *c, void *dst, uintptr_t src, int64_t bytes) {
  GXS_RET(L->gx_download(c, dst, DP(src), bytes));
}
static int gxs_copy(gxs_lib *L, char *err, gx_ctx *c, uintptr_t dst, uintptr_t src, int64_t bytes) {
  GXS_RET(L->gx_copy(c, DP(dst), DP(src), bytes));
}
static int gxs_memset(gxs_lib *L, char *err, gx_ctx *c, uintptr_t dst, int v, int64_t bytes) {
  GXS_RET(L->gx_memset(c, DP(dst), v, bytes));
}
static int gxs_sync(gxs_lib *L, char *err, gx_ctx *c) { GXS_RET(L->gx_sync(c)); }
static int gxs_scratch_reserve(gxs_lib *L, char *err, gx_ctx *c, int64_t bytes) {
  GXS_RET(L->gx_scratch_reserve(c, bytes));
}
static int gxs_copy_bench(gxs_lib *L, char *err, gx_ctx *c, uintptr_t dst, uintptr_t src, int64_t bytes, int iters,
                          float *ms) {
  GXS_RET(L->gx_copy_bench(c, DP(dst), DP(src), bytes, iters, ms));
}

static int gxs_graph_begin(gxs_lib *L, char *err, gx_ctx *c) { GXS_RET(L->gx_graph_begin(c)); }
static int gxs_graph_end(gxs_lib *L, char *err, gx_ctx *c, gx_graph **out) { GXS_RET(L->gx_graph_end(c, out)); }
static int gxs_graph_launch(gxs_lib *L, char *err, gx_ctx *c, gx_graph *g) { GXS_RET(L->gx_graph_launch(c, g)); }
static void gxs_graph_destroy(gxs_lib *L, gx_graph *g) { L->gx_graph_destroy(g); }

static int gxs_embed(gxs_lib *L, char *err, gx_ctx *c, uintptr_t table, uintptr_t ids, int T, int H, uintptr_t x) {
  GXS_RET(L->gx_embed(c, CU16(table), CI32(ids), T, H, F32(x)));
}
static int gxs_rmsnorm(gxs_lib *L, char *err, gx_ctx *c, uintptr_t x, uintptr_t gain, int T, int H, float eps,
                       uintptr_t out) {
  GXS_RET(L->gx_rmsnorm(c, CF32(x), CF32(gain), T, H, eps, F32(out)));
}
static int gxs_add_rmsnorm(gxs_lib *L, char *err, gx_ctx *c, uintptr_t x, uintptr_t delta, uintptr_t bias,
                           uintptr_t gain, int T, int H, float eps, uintptr_t out) {
  GXS_RET(L->gx_add_rmsnorm(c, F32(x), CF32(delta), CF32(bias), CF32(gain), T, H, eps, F32(out)));
}
static int gxs_gather_rows(gxs_lib *L, char *err, gx_ctx *c, uintptr_t x, uintptr_t rows, int n, int H,
                           uintptr_t out) {
  GXS_RET(L->gx_gather_rows(c, CF32(x), CI32(rows), n, H, F32(out)));
}
static int gxs_linear(gxs_lib *L, char *err, gx_ctx *c, uintptr_t x, uintptr_t w, int64_t ldw, uintptr_t bias, int T,
                      int N, int K, uintptr_t out) {
  GXS_RET(L->gx_linear(c, CF32(x), CU16(w), ldw, CF32(bias), T, N, K, F32(out)));
}
static int gxs_rope(gxs_lib *L, char *err, gx_ctx *c, uintptr_t q, uintptr_t k, uintptr_t pos, uintptr_t inv_freq,
                    float scale, int T, int heads, int kv_heads, int D) {
  GXS_RET(L->gx_rope(c, F32(q), F32(k), CI32(pos), CF32(inv_freq), scale, T, heads, kv_heads, D));
}
static int gxs_kv_write(gxs_lib *L, char *err, gx_ctx *c, uintptr_t k, uintptr_t v, uintptr_t slot, int T, int kvdim,
                        uintptr_t kc, uintptr_t vc) {
  GXS_RET(L->gx_kv_write(c, CF32(k), CF32(v), CI32(slot), T, kvdim, U16(kc), U16(vc)));
}
static int gxs_attention(gxs_lib *L, char *err, gx_ctx *c, uintptr_t seq, uintptr_t pos, uintptr_t tables, int T,
                         int n_seqs, int max_blocks, int max_pos, int block_size, uintptr_t q, uintptr_t kc,
                         uintptr_t vc, uintptr_t sinks, int heads, int kv_heads, int D, int window, float scale,
                         uintptr_t out) {
  gx_attn_layout lay;
  lay.seq = CI32(seq);
  lay.pos = CI32(pos);
  lay.tables = CI32(tables);
  lay.T = T;
  lay.n_seqs = n_seqs;
  lay.max_blocks = max_blocks;
  lay.max_pos = max_pos;
  lay.block_size = block_size;
  GXS_RET(L->gx_attention(c, &lay, CF32(q), CU16(kc), CU16(vc), CF32(sinks), heads, kv_heads, D, window, scale,
                          F32(out)));
}
static int gxs_router_topk(gxs_lib *L, char *err, gx_ctx *c, uintptr_t logits, int T, int E, int k, uintptr_t idx,
                           uintptr_t weight) {
  GXS_RET(L->gx_router_topk(c, CF32(logits), T, E, k, I32(idx), F32(weight)));
}
static int64_t gxs_moe_workspace(gxs_lib *L, int T, int k, int H, int I) { return L->gx_moe_workspace(T, k, H, I); }
static int gxs_moe(gxs_lib *L, char *err, gx_ctx *c, uintptr_t gu_blocks, uintptr_t gu_scales, uintptr_t gu_bias,
                   uintptr_t dn_blocks, uintptr_t dn_scales, uintptr_t dn_bias, int n_experts, int expert_lo, int H,
                   int I, float limit, uintptr_t x, uintptr_t idx, uintptr_t weight, int T, int k, uintptr_t ws,
                   int64_t ws_bytes, uintptr_t out) {
  gx_experts ex;
  ex.gate_up_blocks = CU8(gu_blocks);
  ex.gate_up_scales = CU8(gu_scales);
  ex.gate_up_bias = CF32(gu_bias);
  ex.down_blocks = CU8(dn_blocks);
  ex.down_scales = CU8(dn_scales);
  ex.down_bias = CF32(dn_bias);
  ex.n_experts = n_experts;
  ex.expert_lo = expert_lo;
  ex.H = H;
  ex.I = I;
  ex.swiglu_limit = limit;
  GXS_RET(L->gx_moe(c, &ex, CF32(x), CI32(idx), CF32(weight), T, k, DP(ws), ws_bytes, F32(out)));
}
static int gxs_sample(gxs_lib *L, char *err, gx_ctx *c, uintptr_t logits, int S, int V, const gx_sampling *params,
                      uintptr_t pen_off, uintptr_t pen_ids, uintptr_t pen_counts, int n_top, uintptr_t token,
                      uintptr_t logprob, uintptr_t top_ids, uintptr_t top_lp) {
  GXS_RET(L->gx_sample(c, CF32(logits), S, V, params, CI32(pen_off), CI32(pen_ids), CF32(pen_counts), n_top,
                       I32(token), F32(logprob), I32(top_ids), F32(top_lp)));
}
static int gxs_mask_logits(gxs_lib *L, char *err, gx_ctx *c, uintptr_t logits, int S, int V, int n, uintptr_t rows,
                           uintptr_t allow) {
  GXS_RET(L->gx_mask_logits(c, F32(logits), S, V, n, CI32(rows), CU32(allow)));
}

static int gxs_nccl_unique_id(gxs_lib *L, char *err, uint8_t *id) { GXS_RET(L->gx_nccl_unique_id(id)); }
static int gxs_nccl_init(gxs_lib *L, char *err, gx_ctx *c, const uint8_t *id, int nranks, int rank) {
  GXS_RET(L->gx_nccl_init(c, id, nranks, rank));
}
static int gxs_all_reduce(gxs_lib *L, char *err, gx_ctx *c, uintptr_t buf, int64_t n) {
  GXS_RET(L->gx_all_reduce(c, F32(buf), n));
}
static int gxs_all_gather(gxs_lib *L, char *err, gx_ctx *c, uintptr_t in, uintptr_t out, int64_t n) {
  GXS_RET(L->gx_all_gather(c, CF32(in), F32(out), n));
}

#endif /* GPTOSS_SHIM_H */
