/*
 * fakekernels.c — libgptoss_kernels.so's ABI (kernels/gptoss.h) on the host,
 * for worker/cuda's tests on machines without a GPU. "Device" memory is host
 * memory; every op computes the header's documented result in plain C (fp32,
 * the bf16 KV cache of the real one); graph capture records ops with their
 * arguments and launch replays them, reading device memory as it is then,
 * as a CUDA graph does. It checks what the real kernels would silently get
 * wrong (a released block read, a position past max_pos, scratch growth or
 * a host copy inside a capture) and fails with a message instead.
 *
 * Test hooks (environment): FAKE_GX_FAIL=<entry point> makes that entry point
 * fail with GX_ERR_CUDA; FAKE_GX_MEM=<bytes> sets the device memory (default
 * 1 GiB); FAKE_GX_DEVICES=<n> the device count (default 1). Built with
 * -DFAKE_ABI=<n> it reports another ABI version; with -DFAKE_OMIT_MOE it
 * lacks gx_moe.
 *
 * Written for this project's tests; not derived from any other code.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gptoss.h"

#ifndef FAKE_ABI
#define FAKE_ABI GX_ABI_VERSION
#endif

static __thread char err_msg[1024];

static gx_status fail(gx_status st, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err_msg, sizeof err_msg, fmt, ap);
  va_end(ap);
  return st;
}

static int injected(const char *name) {
  const char *f = getenv("FAKE_GX_FAIL");
  return f && strcmp(f, name) == 0;
}

#define ENTER(name)                                                                         \
  do {                                                                                      \
    if (injected(#name)) return fail(GX_ERR_CUDA, "injected failure in %s (fake)", #name); \
  } while (0)

#define CHECK(cond, ...)                                  \
  do {                                                    \
    if (!(cond)) return fail(GX_ERR_ARG, __VA_ARGS__);    \
  } while (0)

int gx_abi_version(void) { return FAKE_ABI; }
const char *gx_last_error(void) { return err_msg; }

/* ---- ops as records ---------------------------------------------------- */

enum { OP_EMBED = 1, OP_RMSNORM, OP_ADD_RMSNORM, OP_ADD, OP_GATHER, OP_LINEAR, OP_ROPE, OP_KV_WRITE, OP_ATTENTION,
       OP_TOPK, OP_MOE, OP_COPY, OP_MEMSET, OP_ALL_REDUCE, OP_ALL_GATHER, OP_MASK };

typedef struct op {
  int kind;
  const void *p[8];
  void *out;
  int64_t i[10];
  float f[4];
  gx_attn_layout lay;
  gx_experts ex;
} op;

struct gx_ctx {
  int device;
  int capturing;
  op *rec;
  int nrec, caprec;
  int64_t allocated;
  int64_t scratch;
  int comm;
};

struct gx_graph {
  op *ops;
  int n;
};

static gx_status run(gx_ctx *c, const op *o);

static gx_status submit(gx_ctx *c, const op *o) {
  if (!c->capturing) return run(c, o);
  if (c->nrec == c->caprec) {
    c->caprec = c->caprec ? 2 * c->caprec : 64;
    c->rec = (op *)realloc(c->rec, sizeof(op) * (size_t)c->caprec);
  }
  c->rec[c->nrec++] = *o;
  return GX_OK;
}

/* ---- device, memory ------------------------------------------------------ */

static int64_t env_int(const char *name, int64_t def) {
  const char *v = getenv(name);
  return v && *v ? atoll(v) : def;
}

gx_status gx_device_count(int *count) {
  ENTER(gx_device_count);
  *count = (int)env_int("FAKE_GX_DEVICES", 1);
  return GX_OK;
}

gx_status gx_ctx_create(int device, gx_ctx **out) {
  ENTER(gx_ctx_create);
  int n = (int)env_int("FAKE_GX_DEVICES", 1);
  CHECK(device >= 0 && device < n, "gx_ctx_create: device %d of %d", device, n);
  gx_ctx *c = (gx_ctx *)calloc(1, sizeof *c);
  c->device = device;
  *out = c;
  return GX_OK;
}

void gx_ctx_destroy(gx_ctx *c) {
  if (!c) return;
  free(c->rec);
  free(c);
}

gx_status gx_device_info(gx_ctx *c, char *name, int n, int *major, int *minor, int *sms) {
  ENTER(gx_device_info);
  snprintf(name, (size_t)n, "Fake GPU %d", c->device);
  *major = 9;
  *minor = 0;
  *sms = 132;
  return GX_OK;
}

gx_status gx_mem_info(gx_ctx *c, int64_t *free_b, int64_t *total_b) {
  ENTER(gx_mem_info);
  int64_t total = env_int("FAKE_GX_MEM", (int64_t)1 << 30);
  *total_b = total;
  *free_b = total > c->allocated ? total - c->allocated : 0;
  return GX_OK;
}

#define HDR 256

gx_status gx_malloc(gx_ctx *c, int64_t bytes, void **out) {
  ENTER(gx_malloc);
  CHECK(bytes >= 0, "gx_malloc: %lld bytes", (long long)bytes);
  if (c->capturing) return fail(GX_ERR_STATE, "gx_malloc during graph capture");
  int64_t total = env_int("FAKE_GX_MEM", (int64_t)1 << 30);
  if (c->allocated + bytes > total)
    return fail(GX_ERR_CUDA, "cudaMalloc(%lld bytes): out of memory (fake: %lld of %lld used)", (long long)bytes,
                (long long)c->allocated, (long long)total);
  /* Poisoned, as fresh device memory is not zero: a read of what no op
   * wrote shows up as NaN. */
  size_t n = (size_t)(bytes + HDR + 255) / 256 * 256;
  unsigned char *p = (unsigned char *)aligned_alloc(256, n);
  if (!p) return fail(GX_ERR_CUDA, "out of host memory");
  memset(p + HDR, 0xff, (size_t)bytes);
  *(int64_t *)p = bytes;
  c->allocated += bytes;
  *out = p + HDR;
  return GX_OK;
}

gx_status gx_free(gx_ctx *c, void *ptr) {
  ENTER(gx_free);
  if (!ptr) return GX_OK;
  if (c->capturing) return fail(GX_ERR_STATE, "gx_free during graph capture");
  unsigned char *p = (unsigned char *)ptr - HDR;
  c->allocated -= *(int64_t *)p;
  free(p);
  return GX_OK;
}

gx_status gx_upload(gx_ctx *c, void *dst, const void *src, int64_t bytes) {
  ENTER(gx_upload);
  if (c->capturing) return fail(GX_ERR_STATE, "gx_upload during graph capture");
  memcpy(dst, src, (size_t)bytes);
  return GX_OK;
}

gx_status gx_download(gx_ctx *c, void *dst, const void *src, int64_t bytes) {
  ENTER(gx_download);
  if (c->capturing) return fail(GX_ERR_STATE, "gx_download during graph capture");
  memcpy(dst, src, (size_t)bytes);
  return GX_OK;
}

gx_status gx_copy(gx_ctx *c, void *dst, const void *src, int64_t bytes) {
  ENTER(gx_copy);
  op o = {OP_COPY};
  o.p[0] = src;
  o.out = dst;
  o.i[0] = bytes;
  return submit(c, &o);
}

gx_status gx_memset(gx_ctx *c, void *dst, int value, int64_t bytes) {
  ENTER(gx_memset);
  op o = {OP_MEMSET};
  o.out = dst;
  o.i[0] = value;
  o.i[1] = bytes;
  return submit(c, &o);
}

gx_status gx_sync(gx_ctx *c) {
  ENTER(gx_sync);
  if (c->capturing) return fail(GX_ERR_STATE, "gx_sync during graph capture");
  return GX_OK;
}

/* need_scratch mimics the real scratch: it grows outside a capture and
 * fails inside one. */
static gx_status need_scratch(gx_ctx *c, int64_t bytes, const char *who) {
  if (bytes <= c->scratch) return GX_OK;
  if (c->capturing)
    return fail(GX_ERR_STATE, "%s: scratch of %lld bytes needed during graph capture (have %lld)", who,
                (long long)bytes, (long long)c->scratch);
  c->scratch = bytes;
  return GX_OK;
}

gx_status gx_scratch_reserve(gx_ctx *c, int64_t bytes) {
  ENTER(gx_scratch_reserve);
  return need_scratch(c, bytes, "gx_scratch_reserve");
}

gx_status gx_copy_bench(gx_ctx *c, void *dst, const void *src, int64_t bytes, int iters, float *ms) {
  ENTER(gx_copy_bench);
  CHECK(bytes > 0 && iters > 0, "gx_copy_bench: bad arguments");
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (int i = 0; i < iters; i++) memcpy(dst, src, (size_t)bytes);
  clock_gettime(CLOCK_MONOTONIC, &b);
  double t = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
  *ms = (float)(t > 1e-6 ? t : 1e-6);
  return GX_OK;
}

/* ---- graphs ------------------------------------------------------------------ */

gx_status gx_graph_begin(gx_ctx *c) {
  ENTER(gx_graph_begin);
  if (c->capturing) return fail(GX_ERR_STATE, "gx_graph_begin: already capturing");
  c->capturing = 1;
  c->nrec = 0;
  return GX_OK;
}

gx_status gx_graph_end(gx_ctx *c, gx_graph **out) {
  *out = NULL;
  if (!c->capturing) return fail(GX_ERR_STATE, "gx_graph_end without gx_graph_begin");
  c->capturing = 0;
  ENTER(gx_graph_end);
  gx_graph *g = (gx_graph *)calloc(1, sizeof *g);
  g->n = c->nrec;
  g->ops = (op *)malloc(sizeof(op) * (size_t)(c->nrec ? c->nrec : 1));
  memcpy(g->ops, c->rec, sizeof(op) * (size_t)c->nrec);
  c->nrec = 0;
  *out = g;
  return GX_OK;
}

gx_status gx_graph_launch(gx_ctx *c, gx_graph *g) {
  ENTER(gx_graph_launch);
  if (c->capturing) return fail(GX_ERR_STATE, "gx_graph_launch during graph capture");
  for (int i = 0; i < g->n; i++) {
    gx_status st = run(c, &g->ops[i]);
    if (st != GX_OK) return st;
  }
  return GX_OK;
}

void gx_graph_destroy(gx_graph *g) {
  if (!g) return;
  free(g->ops);
  free(g);
}

/* ---- arithmetic ---------------------------------------------------------------- */

static float bf16f(uint16_t b) {
  uint32_t u = (uint32_t)b << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static uint16_t f2bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if (f != f) return (uint16_t)((u >> 16) | 0x40);
  u += 0x7fff + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}

static const float fp4[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.f, -0.5f, -1, -1.5f, -2, -3, -4, -6};

/* Row r of an MXFP4 matrix of `rows` rows and `cols` columns, expert e,
 * dotted with x. */
static float mxfp4_dot(const uint8_t *blocks, const uint8_t *scales, int e, int rows, int cols, int r, const float *x) {
  int nb = cols / 32;
  int64_t base = ((int64_t)e * rows + r) * nb;
  float acc = 0;
  for (int b = 0; b < nb; b++) {
    float s = ldexpf(1.f, (int)scales[base + b] - 127);
    const uint8_t *blk = blocks + (base + b) * 16;
    float sum = 0;
    for (int j = 0; j < 16; j++) {
      sum += fp4[blk[j] & 15] * x[b * 32 + 2 * j] + fp4[blk[j] >> 4] * x[b * 32 + 2 * j + 1];
    }
    acc += sum * s;
  }
  return acc;
}

static void rms(const float *x, const float *gain, int H, float eps, float *out) {
  float ss = 0;
  for (int i = 0; i < H; i++) ss += x[i] * x[i];
  float inv = (float)(1.0 / sqrt((double)(ss / (float)H + eps)));
  for (int i = 0; i < H; i++) out[i] = gain[i] * (x[i] * inv);
}

static gx_status attention(const op *o) {
  const gx_attn_layout *L = &o->lay;
  const float *q = (const float *)o->p[0], *sinks = (const float *)o->p[3];
  const uint16_t *kc = (const uint16_t *)o->p[1], *vc = (const uint16_t *)o->p[2];
  int heads = (int)o->i[0], kvh = (int)o->i[1], D = (int)o->i[2], window = (int)o->i[3];
  float scale = o->f[0];
  float *out = (float *)o->out;
  int group = heads / kvh, kvdim = kvh * D, bs = L->block_size;
  float *sc = (float *)malloc(sizeof(float) * (size_t)(L->max_pos + 2));
  for (int t = 0; t < L->T; t++) {
    int s = L->seq[t], pos = L->pos[t];
    if (s < 0 || s >= L->n_seqs || pos < 0) {
      free(sc);
      return fail(GX_ERR_ARG, "gx_attention: token %d of sequence %d at %d", t, s, pos);
    }
    if (pos > L->max_pos) {
      free(sc);
      return fail(GX_ERR_ARG, "gx_attention: token %d at position %d past max_pos %d", t, pos, L->max_pos);
    }
    int first = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
    for (int h = 0; h < heads; h++) {
      const float *qv = q + ((int64_t)t * heads + h) * D;
      int ko = (h / group) * D;
      float mx = sinks[h];
      for (int j = first; j <= pos; j++) {
        int bi = j / bs;
        int blk = bi < L->max_blocks ? L->tables[(int64_t)s * L->max_blocks + bi] : -1;
        if (blk < 0) {
          free(sc);
          return fail(GX_ERR_ARG, "gx_attention: sequence %d position %d reads released block (table entry %d)", s, j, bi);
        }
        const uint16_t *kv = kc + ((int64_t)blk * bs + j % bs) * kvdim + ko;
        float d = 0;
        for (int i = 0; i < D; i++) d += qv[i] * bf16f(kv[i]);
        sc[j - first] = d * scale;
        if (sc[j - first] > mx) mx = sc[j - first];
      }
      float sum = expf(sinks[h] - mx);
      for (int j = first; j <= pos; j++) {
        sc[j - first] = expf(sc[j - first] - mx);
        sum += sc[j - first];
      }
      float *ov = out + ((int64_t)t * heads + h) * D;
      for (int i = 0; i < D; i++) ov[i] = 0;
      for (int j = first; j <= pos; j++) {
        int blk = L->tables[(int64_t)s * L->max_blocks + j / bs];
        const uint16_t *vv = vc + ((int64_t)blk * bs + j % bs) * kvdim + ko;
        float w = sc[j - first] / sum;
        for (int i = 0; i < D; i++) ov[i] += w * bf16f(vv[i]);
      }
    }
  }
  free(sc);
  return GX_OK;
}

static gx_status moe(const op *o) {
  const gx_experts *ex = &o->ex;
  const float *x = (const float *)o->p[0], *wt = (const float *)o->p[2];
  const int32_t *idx = (const int32_t *)o->p[1];
  int T = (int)o->i[0], k = (int)o->i[1], H = ex->H, I = ex->I;
  float *out = (float *)o->out;
  float *gu = (float *)malloc(sizeof(float) * (size_t)(2 * I));
  float *act = (float *)malloc(sizeof(float) * (size_t)I);
  for (int t = 0; t < T; t++) {
    float *ot = out + (int64_t)t * H;
    for (int r = 0; r < H; r++) ot[r] = 0;
    for (int j = 0; j < k; j++) {
      int e = idx[t * k + j] - ex->expert_lo;
      if (e < 0 || e >= ex->n_experts) continue;
      for (int r = 0; r < 2 * I; r++)
        gu[r] = mxfp4_dot(ex->gate_up_blocks, ex->gate_up_scales, e, 2 * I, H, r, x + (int64_t)t * H) +
                ex->gate_up_bias[(int64_t)e * 2 * I + r];
      float lim = ex->swiglu_limit;
      for (int r = 0; r < I; r++) {
        float g = gu[2 * r] < lim ? gu[2 * r] : lim;
        float u = gu[2 * r + 1];
        u = u < -lim ? -lim : (u > lim ? lim : u);
        act[r] = g * (float)(1 / (1 + exp(-(double)(1.702f * g)))) * (u + 1);
      }
      float w = wt[t * k + j];
      for (int r = 0; r < H; r++)
        ot[r] += w * (mxfp4_dot(ex->down_blocks, ex->down_scales, e, H, I, r, act) + ex->down_bias[(int64_t)e * H + r]);
    }
  }
  free(gu);
  free(act);
  return GX_OK;
}

static gx_status run(gx_ctx *c, const op *o) {
  (void)c;
  switch (o->kind) {
    case OP_COPY:
      memmove(o->out, o->p[0], (size_t)o->i[0]);
      return GX_OK;
    case OP_MEMSET:
      memset(o->out, (int)o->i[0], (size_t)o->i[1]);
      return GX_OK;
    case OP_EMBED: {
      const uint16_t *table = (const uint16_t *)o->p[0];
      const int32_t *ids = (const int32_t *)o->p[1];
      int T = (int)o->i[0], H = (int)o->i[1];
      float *x = (float *)o->out;
      for (int t = 0; t < T; t++)
        for (int j = 0; j < H; j++) x[(int64_t)t * H + j] = bf16f(table[(int64_t)ids[t] * H + j]);
      return GX_OK;
    }
    case OP_RMSNORM: {
      int T = (int)o->i[0], H = (int)o->i[1];
      for (int t = 0; t < T; t++)
        rms((const float *)o->p[0] + (int64_t)t * H, (const float *)o->p[1], H, o->f[0], (float *)o->out + (int64_t)t * H);
      return GX_OK;
    }
    case OP_ADD_RMSNORM:
    case OP_ADD: {
      float *x = (float *)o->p[0];
      const float *d = (const float *)o->p[1], *bias = (const float *)o->p[2];
      int T = (int)o->i[0], H = (int)o->i[1];
      for (int t = 0; t < T; t++) {
        float *xt = x + (int64_t)t * H;
        for (int i = 0; i < H; i++) xt[i] += bias ? d[(int64_t)t * H + i] + bias[i] : d[(int64_t)t * H + i];
        if (o->kind == OP_ADD_RMSNORM) rms(xt, (const float *)o->p[3], H, o->f[0], (float *)o->out + (int64_t)t * H);
      }
      return GX_OK;
    }
    case OP_GATHER: {
      const float *x = (const float *)o->p[0];
      const int32_t *rows = (const int32_t *)o->p[1];
      int n = (int)o->i[0], H = (int)o->i[1];
      for (int i = 0; i < n; i++) memmove((float *)o->out + (int64_t)i * H, x + (int64_t)rows[i] * H, sizeof(float) * (size_t)H);
      return GX_OK;
    }
    case OP_LINEAR: {
      const float *x = (const float *)o->p[0], *bias = (const float *)o->p[2];
      const uint16_t *w = (const uint16_t *)o->p[1];
      int64_t ldw = o->i[0];
      int T = (int)o->i[1], N = (int)o->i[2], K = (int)o->i[3];
      float *out = (float *)o->out;
      for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++) {
          float s = 0;
          for (int k = 0; k < K; k++) s += x[(int64_t)t * K + k] * bf16f(w[(int64_t)n * ldw + k]);
          out[(int64_t)t * N + n] = s + (bias ? bias[n] : 0);
        }
      return GX_OK;
    }
    case OP_ROPE: {
      float *q = (float *)o->p[0], *k = (float *)o->p[1];
      const int32_t *pos = (const int32_t *)o->p[2];
      const float *inv = (const float *)o->p[3];
      float scale = o->f[0];
      int T = (int)o->i[0], heads = (int)o->i[1], kvh = (int)o->i[2], D = (int)o->i[3], half = D / 2;
      for (int t = 0; t < T; t++) {
        for (int which = 0; which < 2; which++) {
          float *x = which ? k + (int64_t)t * kvh * D : q + (int64_t)t * heads * D;
          int nh = which ? kvh : heads;
          for (int h = 0; h < nh; h++) {
            float *v = x + h * D;
            for (int i = 0; i < half; i++) {
              float a = (float)pos[t] * inv[i];
              float cs = (float)cos((double)a) * scale, sn = (float)sin((double)a) * scale;
              float x0 = v[i], x1 = v[i + half];
              v[i] = x0 * cs - x1 * sn;
              v[i + half] = x1 * cs + x0 * sn;
            }
          }
        }
      }
      return GX_OK;
    }
    case OP_KV_WRITE: {
      const float *k = (const float *)o->p[0], *v = (const float *)o->p[1];
      const int32_t *slot = (const int32_t *)o->p[2];
      uint16_t *kc = (uint16_t *)o->p[3], *vc = (uint16_t *)o->out;
      int T = (int)o->i[0], kvdim = (int)o->i[1];
      for (int t = 0; t < T; t++) {
        if (slot[t] < 0) continue;
        for (int j = 0; j < kvdim; j++) {
          kc[(int64_t)slot[t] * kvdim + j] = f2bf16(k[(int64_t)t * kvdim + j]);
          vc[(int64_t)slot[t] * kvdim + j] = f2bf16(v[(int64_t)t * kvdim + j]);
        }
      }
      return GX_OK;
    }
    case OP_ATTENTION:
      return attention(o);
    case OP_TOPK: {
      const float *lg = (const float *)o->p[0];
      int T = (int)o->i[0], E = (int)o->i[1], k = (int)o->i[2];
      int32_t *idx = (int32_t *)o->out;
      float *w = (float *)o->p[1];
      for (int t = 0; t < T; t++) {
        const float *l = lg + (int64_t)t * E;
        for (int j = 0; j < k; j++) {
          int best = -1;
          for (int e = 0; e < E; e++) {
            int taken = 0;
            for (int i = 0; i < j; i++) taken |= idx[t * k + i] == e;
            if (!taken && (best < 0 || l[e] > l[best])) best = e;
          }
          idx[t * k + j] = best;
        }
        float mx = l[idx[t * k]], sum = 0;
        for (int j = 0; j < k; j++) sum += (w[t * k + j] = expf(l[idx[t * k + j]] - mx));
        for (int j = 0; j < k; j++) w[t * k + j] /= sum;
      }
      return GX_OK;
    }
    case OP_MOE:
      return moe(o);
    case OP_ALL_REDUCE:
      return GX_OK; /* one rank */
    case OP_ALL_GATHER:
      memmove(o->out, o->p[0], sizeof(float) * (size_t)o->i[0]);
      return GX_OK;
    case OP_MASK: {
      float *x = (float *)o->out;
      const int32_t *rows = (const int32_t *)o->p[0];
      const uint32_t *allow = (const uint32_t *)o->p[1];
      int S = (int)o->i[0], V = (int)o->i[1], n = (int)o->i[2];
      int64_t W = (V + 31) / 32;
      for (int i = 0; i < n; i++) {
        if (rows[i] < 0 || rows[i] >= S) continue;
        for (int t = 0; t < V; t++)
          if (!((allow[i * W + t / 32] >> (t % 32)) & 1u)) x[(int64_t)rows[i] * V + t] = -INFINITY;
      }
      return GX_OK;
    }
  }
  return fail(GX_ERR_ARG, "fake: unknown op %d", o->kind);
}

/* ---- entry points of the ops ------------------------------------------------ */

gx_status gx_embed(gx_ctx *c, const uint16_t *table, const int32_t *ids, int T, int H, float *x) {
  ENTER(gx_embed);
  op o = {OP_EMBED};
  o.p[0] = table;
  o.p[1] = ids;
  o.out = x;
  o.i[0] = T;
  o.i[1] = H;
  return submit(c, &o);
}

gx_status gx_rmsnorm(gx_ctx *c, const float *x, const float *gain, int T, int H, float eps, float *out) {
  ENTER(gx_rmsnorm);
  op o = {OP_RMSNORM};
  o.p[0] = x;
  o.p[1] = gain;
  o.out = out;
  o.i[0] = T;
  o.i[1] = H;
  o.f[0] = eps;
  return submit(c, &o);
}

gx_status gx_add_rmsnorm(gx_ctx *c, float *x, const float *delta, const float *bias, const float *gain, int T, int H,
                         float eps, float *out) {
  ENTER(gx_add_rmsnorm);
  op o = {OP_ADD_RMSNORM};
  o.p[0] = x;
  o.p[1] = delta;
  o.p[2] = bias;
  o.p[3] = gain;
  o.out = out;
  o.i[0] = T;
  o.i[1] = H;
  o.f[0] = eps;
  return submit(c, &o);
}

gx_status gx_add(gx_ctx *c, float *x, const float *y, const float *bias, int T, int H) {
  ENTER(gx_add);
  op o = {OP_ADD};
  o.p[0] = x;
  o.p[1] = y;
  o.p[2] = bias;
  o.i[0] = T;
  o.i[1] = H;
  return submit(c, &o);
}

gx_status gx_gather_rows(gx_ctx *c, const float *x, const int32_t *rows, int n, int H, float *out) {
  ENTER(gx_gather_rows);
  op o = {OP_GATHER};
  o.p[0] = x;
  o.p[1] = rows;
  o.out = out;
  o.i[0] = n;
  o.i[1] = H;
  return submit(c, &o);
}

gx_status gx_linear(gx_ctx *c, const float *x, const uint16_t *w, int64_t ldw, const float *bias, int T, int N, int K,
                    float *out) {
  ENTER(gx_linear);
  CHECK(x && w && out && T > 0 && N > 0 && K > 0 && ldw >= K, "gx_linear: bad arguments (T %d N %d K %d ldw %lld)", T,
        N, K, (long long)ldw);
  gx_status st = need_scratch(c, (int64_t)T * K * 2, "gx_linear");
  if (st != GX_OK) return st;
  op o = {OP_LINEAR};
  o.p[0] = x;
  o.p[1] = w;
  o.p[2] = bias;
  o.out = out;
  o.i[0] = ldw;
  o.i[1] = T;
  o.i[2] = N;
  o.i[3] = K;
  return submit(c, &o);
}

gx_status gx_rope(gx_ctx *c, float *q, float *k, const int32_t *pos, const float *inv_freq, float scale, int T,
                  int heads, int kv_heads, int D) {
  ENTER(gx_rope);
  CHECK(D % 2 == 0, "gx_rope: odd D %d", D);
  op o = {OP_ROPE};
  o.p[0] = q;
  o.p[1] = k;
  o.p[2] = pos;
  o.p[3] = inv_freq;
  o.f[0] = scale;
  o.i[0] = T;
  o.i[1] = heads;
  o.i[2] = kv_heads;
  o.i[3] = D;
  return submit(c, &o);
}

gx_status gx_kv_write(gx_ctx *c, const float *k, const float *v, const int32_t *slot, int T, int kvdim,
                      uint16_t *kcache, uint16_t *vcache) {
  ENTER(gx_kv_write);
  op o = {OP_KV_WRITE};
  o.p[0] = k;
  o.p[1] = v;
  o.p[2] = slot;
  o.p[3] = kcache;
  o.out = vcache;
  o.i[0] = T;
  o.i[1] = kvdim;
  return submit(c, &o);
}

gx_status gx_attention(gx_ctx *c, const gx_attn_layout *layout, const float *q, const uint16_t *kcache,
                       const uint16_t *vcache, const float *sinks, int heads, int kv_heads, int D, int window,
                       float scale, float *out) {
  ENTER(gx_attention);
  CHECK(layout && D <= 256 && heads % kv_heads == 0, "gx_attention: bad arguments");
  /* A split of 256 positions per (token, head), as a flash-decoding
   * kernel would keep partial results for. */
  gx_status st = need_scratch(c, (int64_t)layout->T * heads * ((layout->max_pos + 256) / 256) * (D + 2) * 4,
                              "gx_attention");
  if (st != GX_OK) return st;
  op o = {OP_ATTENTION};
  o.lay = *layout;
  o.p[0] = q;
  o.p[1] = kcache;
  o.p[2] = vcache;
  o.p[3] = sinks;
  o.out = out;
  o.i[0] = heads;
  o.i[1] = kv_heads;
  o.i[2] = D;
  o.i[3] = window;
  o.f[0] = scale;
  return submit(c, &o);
}

gx_status gx_router_topk(gx_ctx *c, const float *logits, int T, int E, int k, int32_t *idx, float *weight) {
  ENTER(gx_router_topk);
  CHECK(k >= 1 && k <= E, "gx_router_topk: k %d of %d", k, E);
  op o = {OP_TOPK};
  o.p[0] = logits;
  o.p[1] = weight;
  o.out = idx;
  o.i[0] = T;
  o.i[1] = E;
  o.i[2] = k;
  return submit(c, &o);
}

int64_t gx_moe_workspace(int T, int k, int H, int I) { return (int64_t)T * k * 16 + (int64_t)(H + I) * 4 + 256; }

#ifndef FAKE_OMIT_MOE
gx_status gx_moe(gx_ctx *c, const gx_experts *ex, const float *x, const int32_t *idx, const float *weight, int T,
                 int k, void *workspace, int64_t workspace_bytes, float *out) {
  ENTER(gx_moe);
  CHECK(ex && ex->H % 32 == 0 && ex->I % 32 == 0, "gx_moe: bad experts");
  CHECK(workspace && workspace_bytes >= gx_moe_workspace(T, k, ex->H, ex->I), "gx_moe: workspace of %lld bytes, need %lld",
        (long long)workspace_bytes, (long long)gx_moe_workspace(T, k, ex->H, ex->I));
  op o = {OP_MOE};
  o.ex = *ex;
  o.p[0] = x;
  o.p[1] = idx;
  o.p[2] = weight;
  o.out = out;
  o.i[0] = T;
  o.i[1] = k;
  return submit(c, &o);
}
#endif

/* NaN -> -inf, -0 -> +0, as the real sampler cleans a logit. */
static float clean_logit(float v) {
  if (v != v) return -INFINITY;
  return v == 0.f ? 0.f : v;
}

gx_status gx_sample(gx_ctx *c, const float *logits, int S, int V, const gx_sampling *params, const int32_t *pen_off,
                    const int32_t *pen_ids, const float *pen_counts, int n_top, int32_t *token, float *logprob,
                    int32_t *top_ids, float *top_lp) {
  ENTER(gx_sample);
  if (c->capturing) return fail(GX_ERR_STATE, "gx_sample during graph capture (fake)");
  CHECK(S >= 0 && V > 0 && n_top >= 0 && n_top <= 256, "gx_sample: S=%d V=%d n_top=%d (at most 256)", S, V, n_top);
  for (int s = 0; s < S; s++) {
    const gx_sampling *p = &params[s];
    CHECK(p->temperature >= 0.f && isfinite(p->temperature) && p->top_k >= 0 && p->top_p > 0.f && p->top_p <= 1.f &&
              p->min_p >= 0.f && p->min_p <= 1.f && isfinite(p->presence_penalty) && isfinite(p->frequency_penalty),
          "gx_sample: row %d: bad parameters (temperature %g, top_p %g, top_k %d, min_p %g)", s, (double)p->temperature,
          (double)p->top_p, p->top_k, (double)p->min_p);
  }
  float *l = (float *)malloc(sizeof(float) * (size_t)V);
  for (int s = 0; s < S; s++) {
    const gx_sampling *p = &params[s];
    const float *raw = logits + (int64_t)s * V;
    int finite = 0;
    for (int v = 0; v < V; v++) {
      l[v] = clean_logit(raw[v]);
      finite |= isfinite(l[v]);
    }
    if (!finite) {
      token[s] = -1;
      logprob[s] = NAN;
      for (int j = 0; j < n_top; j++) top_ids[s * n_top + j] = -1, top_lp[s * n_top + j] = NAN;
      continue;
    }
    /* The log-softmax of the raw logits (the header's logprob), in double. */
    float rmax = -INFINITY;
    for (int v = 0; v < V; v++)
      if (l[v] > rmax) rmax = l[v];
    double se = 0;
    for (int v = 0; v < V; v++) se += rmax == INFINITY ? (l[v] == INFINITY) : exp((double)l[v] - rmax);
    const double lse = rmax == INFINITY ? log(se) : rmax + log(se);
#define RAW_LP(x) (rmax == INFINITY ? ((x) == INFINITY ? (float)-lse : -INFINITY) : (float)((double)(x) - lse))
    /* Penalties, rounded as the CPU sampler rounds them (no fused multiply-add). */
    if (pen_off && pen_ids && pen_counts)
      for (int j = pen_off[s]; j < pen_off[s + 1]; j++) {
        const int id = pen_ids[j];
        if (id < 0 || id >= V) continue;
        volatile double prod = (double)p->frequency_penalty * (double)pen_counts[j];
        volatile double pen = (pen_counts[j] > 0 ? (double)p->presence_penalty : 0.0) + prod;
        l[id] = clean_logit((float)((double)l[id] - pen));
      }
    /* Greedy: the arg-max of the penalised logits, lowest id on ties. */
    float mx = -INFINITY;
    int best = -1;
    for (int v = 0; v < V; v++)
      if (l[v] > mx) mx = l[v], best = v;
    if (mx == INFINITY) { /* the limit: uniform over the +inf tokens */
      for (int v = 0; v < V; v++) l[v] = l[v] == INFINITY ? 0.f : -INFINITY;
      mx = 0.f;
    }
    int tok = best;
    if (p->temperature > 0) {
      /* Temperature only (no top-k, min-p or top-p): enough to exercise the plumbing. */
      double z = 0, acc = 0;
      for (int v = 0; v < V; v++) z += exp((double)((l[v] - mx) / p->temperature));
      double u = p->uniform * z;
      for (tok = 0; tok < V - 1; tok++) {
        acc += exp((double)((l[tok] - mx) / p->temperature));
        if (acc > u) break;
      }
    }
    token[s] = tok;
    logprob[s] = RAW_LP(clean_logit(raw[tok]));
    /* The n_top largest raw logits, ties to lower ids. */
    for (int v = 0; v < V; v++) l[v] = clean_logit(raw[v]);
    for (int j = 0; j < n_top; j++) {
      int bi = -1;
      for (int v = 0; v < V; v++) {
        int taken = 0;
        for (int i = 0; i < j; i++) taken |= top_ids[s * n_top + i] == v;
        if (!taken && (bi < 0 || l[v] > l[bi])) bi = v;
      }
      top_ids[s * n_top + j] = bi;
      top_lp[s * n_top + j] = bi < 0 ? -INFINITY : RAW_LP(l[bi]);
    }
#undef RAW_LP
  }
  free(l);
  return GX_OK;
}

gx_status gx_mask_logits(gx_ctx *c, float *logits, int S, int V, int n, const int32_t *rows, const uint32_t *allow) {
  ENTER(gx_mask_logits);
  CHECK(S >= 0 && V > 0 && n >= 0, "gx_mask_logits: S=%d V=%d n=%d", S, V, n);
  if (S == 0 || n == 0) return GX_OK;
  CHECK(logits && rows && allow, "gx_mask_logits: null pointer");
  op o = {OP_MASK};
  o.out = logits;
  o.p[0] = rows;
  o.p[1] = allow;
  o.i[0] = S;
  o.i[1] = V;
  o.i[2] = n;
  return submit(c, &o);
}

/* ---- NCCL: one rank ------------------------------------------------------------ */

gx_status gx_nccl_unique_id(uint8_t id[GX_NCCL_ID_BYTES]) {
  ENTER(gx_nccl_unique_id);
  for (int i = 0; i < GX_NCCL_ID_BYTES; i++) id[i] = (uint8_t)(i * 7 + 1);
  return GX_OK;
}

gx_status gx_nccl_init(gx_ctx *c, const uint8_t id[GX_NCCL_ID_BYTES], int nranks, int rank) {
  ENTER(gx_nccl_init);
  if (nranks != 1 || rank != 0) return fail(GX_ERR_NCCL, "fake NCCL: rank %d of %d (only one rank)", rank, nranks);
  if (id[0] != 1 || id[1] != 8) return fail(GX_ERR_NCCL, "fake NCCL: not an id of gx_nccl_unique_id");
  c->comm = 1;
  return GX_OK;
}

gx_status gx_all_reduce(gx_ctx *c, float *buf, int64_t n) {
  ENTER(gx_all_reduce);
  if (!c->comm) return fail(GX_ERR_STATE, "gx_all_reduce before gx_nccl_init");
  op o = {OP_ALL_REDUCE};
  o.out = buf;
  o.i[0] = n;
  return submit(c, &o);
}

gx_status gx_all_gather(gx_ctx *c, const float *in, float *out, int64_t n) {
  ENTER(gx_all_gather);
  if (!c->comm) return fail(GX_ERR_STATE, "gx_all_gather before gx_nccl_init");
  op o = {OP_ALL_GATHER};
  o.p[0] = in;
  o.out = out;
  o.i[0] = n;
  return submit(c, &o);
}
