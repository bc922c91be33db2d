/*
 * gptoss.h — the C ABI of libgptoss_kernels.so, the CUDA side of the worker.
 *
 * The worker opens this library at run time with dlopen (worker/cuda), so
 * `go build ./...` needs no CUDA anywhere. Everything here is plain C:
 * opaque handles, device pointers as void*, sizes as int64_t.
 *
 * Conventions
 *  - Every function returns 0 on success or a nonzero gx_status. The message
 *    of the last failure on the calling thread is in gx_last_error(). The
 *    library never exits or aborts the process.
 *  - Every op is enqueued on the context's stream and returns at once; the
 *    kernels' launch errors are checked at launch, execution errors surface
 *    at the next gx_sync (or any blocking copy).
 *  - Layouts are row-major. Activations are float32 [rows x cols]; dense
 *    weights are bf16 (uint16_t bit patterns) [rows x cols] with a row stride
 *    `ld` (>= cols) so a tensor-parallel column slice needs no copy; MXFP4
 *    expert weights stay 4-bit: per row, cols/32 blocks of 16 bytes (low
 *    nibble = even element, FP4 E2M1) plus one E8M0 scale byte per block,
 *    exactly as in the checkpoint (*_blocks, *_scales).
 *  - Arithmetic: bf16 inputs, fp32 accumulation, fp32 activations and
 *    softmaxes; the KV cache is bf16.
 */
#ifndef GPTOSS_KERNELS_H
#define GPTOSS_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GX_ABI_VERSION 1

typedef int gx_status;
enum {
  GX_OK = 0,
  GX_ERR_CUDA = 1,    /* a CUDA runtime error */
  GX_ERR_CUBLAS = 2,  /* a cuBLAS error */
  GX_ERR_NCCL = 3,    /* an NCCL error */
  GX_ERR_ARG = 4,     /* a bad argument (size, null pointer, unsupported shape) */
  GX_ERR_STATE = 5    /* call out of order (e.g. collective before gx_nccl_init) */
};

typedef struct gx_ctx gx_ctx;     /* one device, one stream, cuBLAS and NCCL handles */
typedef struct gx_graph gx_graph; /* an instantiated CUDA graph */

/* ---- library and device ------------------------------------------------ */

int gx_abi_version(void);
/* The message of the calling thread's last failure ("" if none). */
const char *gx_last_error(void);
gx_status gx_device_count(int *count);
/* Creates a context on device `device` (an index after CUDA_VISIBLE_DEVICES):
 * sets the device, creates a non-blocking stream and a cuBLAS handle bound to
 * it. */
gx_status gx_ctx_create(int device, gx_ctx **out);
void gx_ctx_destroy(gx_ctx *ctx);
/* Device name (NUL-terminated, truncated to n), compute capability, SMs. */
gx_status gx_device_info(gx_ctx *ctx, char *name, int n, int *major, int *minor, int *sms);
gx_status gx_mem_info(gx_ctx *ctx, int64_t *free_bytes, int64_t *total_bytes);

/* ---- memory and the stream --------------------------------------------- */

gx_status gx_malloc(gx_ctx *ctx, int64_t bytes, void **out);
gx_status gx_free(gx_ctx *ctx, void *ptr);
/* Host to device and back: enqueued on the stream, then waited for (the host
 * buffer may be pageable Go memory, which must not move, so these block). */
gx_status gx_upload(gx_ctx *ctx, void *dst, const void *src, int64_t bytes);
gx_status gx_download(gx_ctx *ctx, void *dst, const void *src, int64_t bytes);
/* Device to device, enqueued (no wait). */
gx_status gx_copy(gx_ctx *ctx, void *dst, const void *src, int64_t bytes);
gx_status gx_memset(gx_ctx *ctx, void *dst, int value, int64_t bytes);
/* Waits for everything enqueued; returns the first execution error. */
gx_status gx_sync(gx_ctx *ctx);
/* Ensures the context's scratch (used by gx_linear, gx_attention, gx_sample)
 * holds at least `bytes`. Ops grow it on demand outside graph capture; inside a
 * capture an op that needs more fails with GX_ERR_STATE, so reserve first. */
gx_status gx_scratch_reserve(gx_ctx *ctx, int64_t bytes);
/* Milliseconds of device time taken by `iters` device-to-device copies of
 * `bytes` (the copy-bandwidth yardstick of the roofline). */
gx_status gx_copy_bench(gx_ctx *ctx, void *dst, const void *src, int64_t bytes, int iters, float *ms);

/* ---- CUDA graphs --------------------------------------------------------- */

/* Between begin and end, ops are recorded, not run; end instantiates them. */
gx_status gx_graph_begin(gx_ctx *ctx);
gx_status gx_graph_end(gx_ctx *ctx, gx_graph **out);
gx_status gx_graph_launch(gx_ctx *ctx, gx_graph *g);
void gx_graph_destroy(gx_graph *g);

/* ---- element-wise ops ---------------------------------------------------- */

/* x[t] = float(table[ids[t]]) for t < T; table bf16 [vocab x H], ids on the device. */
gx_status gx_embed(gx_ctx *ctx, const uint16_t *table, const int32_t *ids, int T, int H, float *x);
/* out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * gain, fp32 in and out. */
gx_status gx_rmsnorm(gx_ctx *ctx, const float *x, const float *gain, int T, int H, float eps, float *out);
/* x += delta (+ bias, broadcast over rows, may be NULL), then out = rmsnorm(x). */
gx_status gx_add_rmsnorm(gx_ctx *ctx, float *x, const float *delta, const float *bias, const float *gain,
                         int T, int H, float eps, float *out);
/* x[t] += y[t] (+ bias, may be NULL) for a [T x H] matrix. */
gx_status gx_add(gx_ctx *ctx, float *x, const float *y, const float *bias, int T, int H);
/* out[i] = x[rows[i]] for i < n; rows on the device. */
gx_status gx_gather_rows(gx_ctx *ctx, const float *x, const int32_t *rows, int n, int H, float *out);

/* ---- dense bf16 projections (cuBLAS) -------------------------------------- */

/* out[T x N] = x[T x K] · W^T + bias, W bf16 [N x K] with row stride ldw,
 * bias fp32 [N] or NULL. x is converted to bf16 into the context's scratch,
 * then cuBLAS multiplies bf16 x bf16 with fp32 accumulation into fp32 out. */
gx_status gx_linear(gx_ctx *ctx, const float *x, const uint16_t *w, int64_t ldw, const float *bias,
                    int T, int N, int K, float *out);

/* ---- attention ----------------------------------------------------------- */

/* YaRN RoPE in place, half-split layout, for q [T x heads*D] and k [T x kv_heads*D]:
 * angle = pos[t] * inv_freq[i] (fp32), cos/sin scaled by `scale`. inv_freq has D/2
 * entries on the device; pos on the device. */
gx_status gx_rope(gx_ctx *ctx, float *q, float *k, const int32_t *pos, const float *inv_freq, float scale,
                  int T, int heads, int kv_heads, int D);
/* Writes token t's k and v rows (fp32 [T x kvdim]) into the bf16 caches
 * [blocks x block_size x kvdim] at slot[t] (block*block_size + offset);
 * slot[t] < 0 skips the token. */
gx_status gx_kv_write(gx_ctx *ctx, const float *k, const float *v, const int32_t *slot, int T, int kvdim,
                      uint16_t *kcache, uint16_t *vcache);

/* The step's layout for attention. Token t belongs to sequence seq[t] and
 * sits at position pos[t]; it attends to positions [max(0, pos-window+1), pos]
 * (window 0: from 0) of its sequence, read through that sequence's row of
 * tables [n_seqs x max_blocks] (block ids into the cache; -1 where released).
 * All arrays are on the device. */
typedef struct gx_attn_layout {
  const int32_t *seq;
  const int32_t *pos;
  const int32_t *tables;
  int T;
  int n_seqs;
  int max_blocks;
  int max_pos;   /* an upper bound of pos[t] (sizes the split along the context; splits past a
                    token's position contribute nothing) */
  int block_size;
} gx_attn_layout;

/* out[t, head] = softmax over (q·k * scale for the visible positions, plus the
 * learned sink sinks[head]) applied to v; the sink takes probability mass but
 * has no value. q fp32 [T x heads*D] (after RoPE), kv bf16 caches, out fp32
 * [T x heads*D]. Query head h reads KV head h / (heads / kv_heads). Uses the
 * context's scratch for the split along the context; D <= 256. */
gx_status gx_attention(gx_ctx *ctx, const gx_attn_layout *layout, const float *q, const uint16_t *kcache,
                       const uint16_t *vcache, const float *sinks, int heads, int kv_heads, int D, int window,
                       float scale, float *out);

/* ---- mixture of experts -------------------------------------------------- */

/* One layer's local experts, in the checkpoint's MXFP4 layout:
 * gate_up [n_experts x 2I x H] (rows interleaved gate, up), down [n_experts x H x I]. */
typedef struct gx_experts {
  const uint8_t *gate_up_blocks; /* n_experts * 2I * H/2 bytes */
  const uint8_t *gate_up_scales; /* n_experts * 2I * H/32 */
  const float *gate_up_bias;     /* n_experts * 2I */
  const uint8_t *down_blocks;    /* n_experts * H * I/2 */
  const uint8_t *down_scales;    /* n_experts * H * I/32 */
  const float *down_bias;        /* n_experts * H */
  int n_experts;                 /* local experts */
  int expert_lo;                 /* global id of local expert 0 */
  int H, I;                      /* hidden size, expert width (multiples of 32) */
  float swiglu_limit;            /* 7.0 */
} gx_experts;

/* Router: for each token, the k largest of logits[t] (fp32 [T x E], ties to the
 * lower id), softmax over those k. idx int32 [T x k] global expert ids in
 * descending order of logit, weight fp32 [T x k]. */
gx_status gx_router_topk(gx_ctx *ctx, const float *logits, int T, int E, int k, int32_t *idx, float *weight);

/* Scratch bytes gx_moe needs for T tokens with k experts each. */
int64_t gx_moe_workspace(int T, int k, int H, int I);
/* out[t] = sum over the k picks of token t whose expert is local of
 * weight * down(swiglu(gate_up(x[t]) + b1)) + b2, summed in pick order (so
 * the result does not depend on the other tokens of the step). swiglu:
 * g = min(gate, limit), u = clamp(up, -limit, limit), g * sigmoid(1.702 g) * (u + 1).
 * x fp32 [T x H]; out fp32 [T x H] is overwritten (zeros where no pick is local).
 * Small T decodes the 4-bit weights in registers per token (GEMV); large T
 * groups tokens by expert (grouped GEMM). */
gx_status gx_moe(gx_ctx *ctx, const gx_experts *ex, const float *x, const int32_t *idx, const float *weight,
                 int T, int k, void *workspace, int64_t workspace_bytes, float *out);

/* ---- sampling ------------------------------------------------------------ */

/* Per-row sampling parameters (host memory; copied by the call). The ranges
 * are checked (GX_ERR_ARG otherwise). */
typedef struct gx_sampling {
  float temperature; /* finite, >= 0; 0: greedy */
  float top_p;       /* in (0, 1]; 1: off */
  int top_k;         /* >= 0; 0 (or >= V): off */
  float min_p;       /* in [0, 1]; 0: off */
  float presence_penalty;  /* finite */
  float frequency_penalty; /* finite */
  float uniform;     /* a uniform draw in [0, 1) from the sequence's own generator */
} gx_sampling;

/* Samples one token per row of logits fp32 [S x V] (device), with the CPU
 * sampler's semantics (worker/sample), in this order:
 *  1. NaN logits count as -inf. Penalties read the tokens generated so far as
 *     a CSR on the device: row s has the pairs (pen_ids[j], pen_counts[j]) for
 *     pen_off[s] <= j < pen_off[s+1], ids distinct within a row (pen_* may be
 *     NULL when no row has penalties); the penalised logit is
 *     float(double(x) - (presence * (count > 0) + frequency * count)), in
 *     double without fused multiply-adds (as the CPU rounds it: the same bits
 *     when the CPU's float64 parameters are these floats).
 *  2. temperature 0: greedy, the arg-max of the penalised logits, ties to the
 *     lowest id; top_p, top_k, min_p and the uniform are then ignored.
 *  3. otherwise e = exp((penalised - max) / temperature), then top-k (the k
 *     largest penalised logits, ties to lower ids), then min-p (drop e <
 *     min_p * max e), then top-p over what is left (descending order, ties:
 *     lower id first; the smallest prefix whose mass reaches top_p * (mass
 *     left) * (1 - 1e-6), at least one token), then inverse-CDF with the
 *     row's uniform over the kept tokens (walked in id order: the same
 *     distribution as the CPU's, not the same token for a given uniform).
 *     +inf logits: the draw is uniform over the +inf tokens (greedy: the
 *     lowest such id).
 * Outputs on the device: token[s]; logprob[s] = the log-softmax of the RAW
 * logits (before penalties and temperature, vLLM's "raw_logprobs"; when the
 * row has +inf logits, -log(their count) for them and -inf for the rest); and
 * when n_top > 0 the n_top largest raw logits per row, most likely first,
 * ties to lower ids (top_ids, top_lp [S x n_top], raw logprobs as for
 * logprob). A row with no finite logit gets token -1 and logprob NaN (top
 * ids -1, logprobs NaN). n_top <= 256. Uses the context's scratch. */
gx_status gx_sample(gx_ctx *ctx, const float *logits, int S, int V, const gx_sampling *params,
                    const int32_t *pen_off, const int32_t *pen_ids, const float *pen_counts, int n_top,
                    int32_t *token, float *logprob, int32_t *top_ids, float *top_lp);

/* Restricts rows of logits fp32 [S x V] (device) to sets of allowed tokens
 * (structured output), in place: for i < n, every token t of row rows[i]
 * whose bit is clear in that row's bitset becomes -inf, and the others are
 * left as they are. The bitsets are allow uint32 [n x W], W = (V + 31) / 32
 * words per row, token t being bit t % 32 of word t / 32 (the bits past V
 * are ignored). rows int32 [n] and allow on the device; a row outside
 * [0, S) is skipped. Run before gx_sample, it makes the draw, the logprob
 * and the top list those of the constrained distribution (the "raw" logits
 * are then the masked ones), as worker/sample's SampleAllowed. Its inputs
 * are device memory, so it may be captured in a graph. */
gx_status gx_mask_logits(gx_ctx *ctx, float *logits, int S, int V, int n, const int32_t *rows,
                         const uint32_t *allow);

/* ---- NCCL ---------------------------------------------------------------- */

#define GX_NCCL_ID_BYTES 128
/* Rank 0 makes the id and sends it to the others (over NATS). */
gx_status gx_nccl_unique_id(uint8_t id[GX_NCCL_ID_BYTES]);
/* Joins the communicator of nranks; a one-rank communicator is valid. */
gx_status gx_nccl_init(gx_ctx *ctx, const uint8_t id[GX_NCCL_ID_BYTES], int nranks, int rank);
/* In-place sum over ranks of n floats, on the context's stream. */
gx_status gx_all_reduce(gx_ctx *ctx, float *buf, int64_t n);
/* out[r*n : (r+1)*n] = rank r's in[0:n], on the context's stream. */
gx_status gx_all_gather(gx_ctx *ctx, const float *in, float *out, int64_t n);

#ifdef __cplusplus
}
#endif

#endif /* GPTOSS_KERNELS_H */
