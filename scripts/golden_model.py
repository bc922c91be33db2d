#!/usr/bin/env python3
"""Write golden forward-pass data for the Go gpt-oss engine, computed by
Hugging Face transformers' own gpt-oss implementation.

What it writes
--------------
For each tiny configuration in CONFIGS below, a directory

    worker/engine/testdata/golden/<config_name>/
        config.json                     HF config (GptOssConfig.to_json_string()
                                        + quantization_config, + the hub's
                                        legacy rope_theta/rope_scaling keys)
        model.safetensors               the checkpoint, HF tensor names, or
        model-0000N-of-00001.safetensors + model.safetensors.index.json
                                        (one config is sharded, hub-style names)
        expected.json                   transformers' outputs (see below)

The checkpoints use the real gpt-oss architecture at toy sizes: YaRN RoPE
(factor 32, beta 32/1, truncate false, theta 150000), attention sinks, GQA,
q/k/v/o biases, alternating sliding (even layers) / full attention, top-k MoE
with a biased router, clamped SwiGLU with the +1 on the up branch, and
experts stored in MXFP4 exactly as on the hub:
    *_blocks  uint8 [E, out, in/32, 16]   low nibble = even element
    *_scales  uint8 [E, out, in/32]       E8M0, scale = 2^(s-127)
Random nibbles cover all 16 codes (-0 included); scale bytes are drawn from
119..126 (gate_up) and 115..121 (down), shifted down one octave per 4x width,
so ~5-10% of SwiGLU inputs hit the +-7 clamps. Every other tensor is BF16:
linears ~N(0, 0.1-0.3) scaled by sqrt(64/width), embedding N(0,1), norm gains
N(1, 0.1), sinks N(0,1), non-zero biases (router bias N(0, 0.5)). The random
weights are rounded to bf16 *before*
they are written, and the expectations come from transformers loading the
written files, so the model that produced the numbers holds exactly the stored
values.

expected.json holds
    torch, transformers           package versions that produced the file
    config_name, notes
    prompt                        token ids, fed at positions 0..len-1
    prefill_logits                [len][vocab] float32 logits of the prompt
                                  forward (one row per prompt position)
    decode_tokens                 32 ids: decode_tokens[0] = argmax of the last
                                  prefill row; decode_tokens[i] = argmax of
                                  decode_logits[i-1]. decode_tokens[i] is fed
                                  at position len+i with the KV cache.
    decode_logits                 [32][vocab]: logits after feeding
                                  decode_tokens[i] (i.e. at position len+i)
    next_token                    argmax(decode_logits[31])
    hidden_last_prompt_pos        [num_layers+2][hidden]: the last prompt
                                  position's embedding row, then the residual
                                  stream after each decoder layer, then the
                                  final RMSNorm's output (what lm_head sees)
    rope_inv_freq, rope_attention_scaling   the YaRN tables transformers built
    min_top2_margin               smallest (top1 - top2) logit gap over all
                                  greedy choices (the decoded tokens are
                                  robust to float noise below it)
    min_router_margin             smallest gap between the k-th and (k+1)-th
                                  router logit over every token and layer
Floats are written with 9 significant digits.

How it loads the model
----------------------
    GptOssForCausalLM.from_pretrained(dir,
        quantization_config=Mxfp4Config(dequantize=True), dtype=torch.float32,
        attn_implementation="eager", experts_implementation="eager")
on CPU, HF_HUB_OFFLINE=1, model.eval(), torch.no_grad(). transformers 5.x
accepts this on CPU: its MXFP4 quantizer dequantizes the *_blocks/*_scales
with integrations.mxfp4.convert_moe_packed_tensors into the float32
parameters gate_up_proj [E, hidden, 2*intermediate] and down_proj
[E, intermediate, hidden] (i.e. transposed to [E, in, out]; the model computes
x @ W). That path is what ran for the committed data (no fallback was needed;
the script raises if the load reports missing/unexpected keys).
("torch_dtype" is deprecated in transformers 5 in favour of "dtype"; without
dtype= the model loads in bf16 here, so float32 must be asked for.
experts_implementation="eager" selects the readable per-expert loop in
modeling_gpt_oss.GptOssExperts; transformers 5's default, "grouped_mm", agrees
with it within 7e-6 on these models.)

The script checks, and aborts on failure:
  * its own numpy MXFP4 dequantization of the stored bytes equals the
    parameters the loaded model holds (after the [E,in,out] transpose), and
    every non-expert parameter equals the stored bf16 tensor;
  * the YaRN inv_freq / attention scaling transformers built equal an
    independent numpy evaluation of the formula in
    shared/reference/gpt-oss.md section 1.2;
  * a no-cache forward over prompt + decode_tokens reproduces the prefill
    and every cached decode step within 1e-4;
  * an independent float64 numpy forward pass (np_forward), written from
    shared/reference/gpt-oss.md section 2 rather than from transformers,
    reproduces the prefill logits within 1e-4 (the max diff is in the notes);
  * logits are finite and not constant, greedy tokens are not all equal.
It also retries with another prompt seed (deterministically) if a greedy
choice or a router top-k choice is a near tie (margins below 2e-3 / 1e-3), so
the goldens do not hinge on float rounding.

How to rerun (developer machines only; CI never runs this, the outputs are
committed):

    python3 -m venv /tmp/gvenv
    /tmp/gvenv/bin/pip install torch transformers safetensors numpy
    # bit-identical output: torch==2.15.0 transformers==5.24.0 safetensors==0.8.0 numpy==2.4.6
    HF_HUB_OFFLINE=1 /tmp/gvenv/bin/python scripts/golden_model.py   # repo root

Options: --out DIR (default worker/engine/testdata/golden), --only NAME.
The output is deterministic for a given torch/transformers version.

Generated with (pip, PyPI): torch 2.15.0 (+cu132 wheel, run on CPU),
transformers 5.24.0, safetensors 0.8.0, numpy 2.4.6, Python 3.11.7.
"""

import argparse
import json
import math
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import GptOssConfig, GptOssForCausalLM, Mxfp4Config  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.normpath(os.path.join(HERE, "..", "worker", "engine", "testdata", "golden"))

DECODE_STEPS = 32

ROPE = {
    "rope_type": "yarn",
    "factor": 32.0,
    "beta_fast": 32.0,
    "beta_slow": 1.0,
    "truncate": False,
    "original_max_position_embeddings": 4096,
}

QUANT_CONFIG = {
    "quant_method": "mxfp4",
    "modules_to_not_convert": [
        "model.layers.*.self_attn",
        "model.layers.*.mlp.router",
        "model.embed_tokens",
        "lm_head",
    ],
}

# Each config: architecture sizes, prompt length, and what it is for.
CONFIGS = [
    dict(
        name="l2_gqa2_top2_w8",
        seed=1001,
        layers=2, hidden=64, intermediate=64, heads=4, kv_heads=2, head_dim=16,
        experts=4, top_k=2, window=8, vocab=512, prompt_len=40, sharded=False,
        notes="2 layers (sliding, full); GQA 4 q heads / 2 kv heads (2:1); 4 experts top-2; "
        "sliding window 8 << prompt 40; single-file checkpoint.",
    ),
    dict(
        name="l3_gqa4_top4_w16_sharded",
        seed=2002,
        layers=3, hidden=64, intermediate=96, heads=8, kv_heads=2, head_dim=16,
        experts=8, top_k=4, window=16, vocab=512, prompt_len=40, sharded=True,
        notes="3 layers (sliding, full, sliding); GQA 8/2 (4:1); 8 experts top-4 (the real k); "
        "intermediate 96 != hidden 64 (non-square down_proj, 3 MXFP4 blocks per row); "
        "window 16 < prompt 40; checkpoint sharded into 2 files with model.safetensors.index.json, "
        "layer 1's gate_up_proj_blocks and gate_up_proj_scales live in different shards.",
    ),
    dict(
        name="l4_hd32_top2_w8_v500",
        seed=3003,
        layers=4, hidden=128, intermediate=64, heads=8, kv_heads=4, head_dim=32,
        experts=8, top_k=2, window=8, vocab=500, prompt_len=40, sharded=False,
        notes="4 layers (s, f, s, f); hidden 128, head_dim 32, 8 q heads (q width 256 != hidden); "
        "GQA 8/4 (2:1); 8 experts top-2; window 8 < prompt 40; vocab 500 (not a power of two).",
    ),
    dict(
        name="l2_hd64_top4_w128_p160",
        seed=4004,
        layers=2, hidden=64, intermediate=64, heads=8, kv_heads=4, head_dim=64,
        experts=8, top_k=4, window=128, vocab=512, prompt_len=160, sharded=False,
        notes="The real sliding window 128 and the real head_dim 64 (so the exact YaRN table of the "
        "real model); prompt 160 > 128 so the sliding layer drops keys during prefill and decode; "
        "GQA 8/4; 8 experts top-4.",
    ),
    dict(
        name="l2_mha_topall_w8",
        seed=5005,
        layers=2, hidden=64, intermediate=64, heads=4, kv_heads=4, head_dim=16,
        experts=4, top_k=4, window=8, vocab=512, prompt_len=40, sharded=False,
        notes="Edge cases: no GQA (4 q heads, 4 kv heads) and top-k == number of experts (4 of 4, so "
        "the weights are a softmax over all router logits); window 8 < prompt 40.",
    ),
]

FP4_VALUES = np.array(
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
    dtype=np.float32,
)


def make_config(c):
    rope = dict(ROPE, rope_theta=150000.0)
    return GptOssConfig(
        vocab_size=c["vocab"],
        hidden_size=c["hidden"],
        intermediate_size=c["intermediate"],
        head_dim=c["head_dim"],
        num_attention_heads=c["heads"],
        num_key_value_heads=c["kv_heads"],
        num_local_experts=c["experts"],
        num_experts_per_tok=c["top_k"],
        num_hidden_layers=c["layers"],
        layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(c["layers"])],
        sliding_window=c["window"],
        rope_parameters=rope,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        swiglu_limit=7.0,
        attention_bias=True,
        tie_word_embeddings=False,
        eos_token_id=2,
        pad_token_id=1,
        bos_token_id=0,
        router_aux_loss_coef=0.9,
    )


def bf16(t):
    return t.to(torch.bfloat16).contiguous()


def make_weights(c, gen):
    """Random checkpoint tensors in the HF layout: name -> tensor (bf16 or uint8)."""
    H, I, E = c["hidden"], c["intermediate"], c["experts"]
    nq, nkv, hd, V = c["heads"], c["kv_heads"], c["head_dim"], c["vocab"]

    def normal(*shape, std=1.0, mean=0.0):
        return torch.randn(*shape, generator=gen) * std + mean

    def uniform_int(lo, hi, *shape):  # inclusive lo..hi
        return torch.randint(lo, hi + 1, shape, generator=gen, dtype=torch.int64).to(torch.uint8)

    # Linears that read the hidden state are scaled by sqrt(64 / hidden) (and the gate_up MXFP4
    # scale bytes by one octave per 4x hidden), so every config sees activations of the same size
    # (~5-10% of SwiGLU inputs hit the +-7 clamps, attention rows mix sink and keys, logits std
    # ~2.4); larger activations only raise the float32 noise floor of the goldens.
    hs = math.sqrt(64.0 / H)
    gs = round(math.log2(H / 64.0) / 2)
    gd = round(math.log2(I / 64.0) / 2)
    w = {}
    w["model.embed_tokens.weight"] = bf16(normal(V, H, std=1.0))
    for l in range(c["layers"]):
        p = f"model.layers.{l}."
        w[p + "input_layernorm.weight"] = bf16(normal(H, std=0.1, mean=1.0))
        w[p + "self_attn.q_proj.weight"] = bf16(normal(nq * hd, H, std=0.15 * hs))
        w[p + "self_attn.q_proj.bias"] = bf16(normal(nq * hd, std=0.1))
        w[p + "self_attn.k_proj.weight"] = bf16(normal(nkv * hd, H, std=0.15 * hs))
        w[p + "self_attn.k_proj.bias"] = bf16(normal(nkv * hd, std=0.1))
        w[p + "self_attn.v_proj.weight"] = bf16(normal(nkv * hd, H, std=0.15 * hs))
        w[p + "self_attn.v_proj.bias"] = bf16(normal(nkv * hd, std=0.05))
        w[p + "self_attn.o_proj.weight"] = bf16(normal(H, nq * hd, std=0.1 * math.sqrt(64.0 / (nq * hd))))
        w[p + "self_attn.o_proj.bias"] = bf16(normal(H, std=0.05))
        w[p + "self_attn.sinks"] = bf16(normal(nq, std=1.0))
        w[p + "post_attention_layernorm.weight"] = bf16(normal(H, std=0.1, mean=1.0))
        w[p + "mlp.router.weight"] = bf16(normal(E, H, std=0.2 * hs))
        w[p + "mlp.router.bias"] = bf16(normal(E, std=0.5))
        # MXFP4 experts: random nibbles (every code, -0 included) and E8M0 scales.
        w[p + "mlp.experts.gate_up_proj_blocks"] = uniform_int(0, 255, E, 2 * I, H // 32, 16)
        w[p + "mlp.experts.gate_up_proj_scales"] = uniform_int(119 - gs, 126 - gs, E, 2 * I, H // 32)
        w[p + "mlp.experts.gate_up_proj_bias"] = bf16(normal(E, 2 * I, std=0.1))
        w[p + "mlp.experts.down_proj_blocks"] = uniform_int(0, 255, E, H, I // 32, 16)
        w[p + "mlp.experts.down_proj_scales"] = uniform_int(115 - gd, 121 - gd, E, H, I // 32)
        w[p + "mlp.experts.down_proj_bias"] = bf16(normal(E, H, std=0.05))
    w["model.norm.weight"] = bf16(normal(H, std=0.1, mean=1.0))
    w["lm_head.weight"] = bf16(normal(V, H, std=0.3 * hs))
    return w


def np_dequant_mxfp4(blocks, scales):
    """Independent MXFP4 decode: [E, out, G, 16] u8 + [E, out, G] u8 -> [E, out, G*32] f32."""
    blocks = blocks.numpy()
    scales = scales.numpy()
    lo = FP4_VALUES[blocks & 0x0F]
    hi = FP4_VALUES[blocks >> 4]
    vals = np.empty(blocks.shape[:-1] + (32,), dtype=np.float32)
    vals[..., 0::2] = lo
    vals[..., 1::2] = hi
    vals *= np.exp2(scales.astype(np.float64) - 127.0).astype(np.float32)[..., None]
    return vals.reshape(blocks.shape[0], blocks.shape[1], -1)


def np_yarn(head_dim, theta=150000.0, factor=32.0, l0=4096, beta_fast=32.0, beta_slow=1.0):
    """YaRN as written in shared/reference/gpt-oss.md section 1.2 (float64)."""
    half = head_dim // 2
    i = np.arange(half, dtype=np.float64)
    f = theta ** (2 * i / head_dim)
    low = half * math.log(l0 / (beta_fast * 2 * math.pi)) / math.log(theta)
    high = half * math.log(l0 / (beta_slow * 2 * math.pi)) / math.log(theta)
    low, high = max(low, 0.0), min(high, head_dim - 1)
    r = np.clip((i - low) / (high - low), 0, 1)
    m = 1 - r
    inv = (1 / f) * m + (1 / (factor * f)) * (1 - m)
    return inv, 0.1 * math.log(factor) + 1.0


def np_forward(c, weights, tokens):
    """Float64 numpy forward pass written from shared/reference/gpt-oss.md section 2 (not from
    transformers): returns [len, vocab] logits for the whole prompt, no cache."""
    W = {k: (v.float().numpy().astype(np.float64) if v.dtype != torch.uint8 else v) for k, v in weights.items()}
    T, hd, nq, nkv = len(tokens), c["head_dim"], c["heads"], c["kv_heads"]
    inv, conc = np_yarn(hd)
    ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]
    cos, sin = np.cos(ang) * conc, np.sin(ang) * conc  # [T, hd/2]

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5) * g

    def rope(x):  # [T, heads, hd], half-split pairs (i, i + hd/2)
        a, b = x[..., : hd // 2], x[..., hd // 2:]
        cc, ss = cos[:, None, :], sin[:, None, :]
        return np.concatenate([a * cc - b * ss, b * cc + a * ss], axis=-1)

    x = W["model.embed_tokens.weight"][tokens]
    for l in range(c["layers"]):
        p = f"model.layers.{l}."
        h = rms(x, W[p + "input_layernorm.weight"])
        q = (h @ W[p + "self_attn.q_proj.weight"].T + W[p + "self_attn.q_proj.bias"]).reshape(T, nq, hd)
        k = (h @ W[p + "self_attn.k_proj.weight"].T + W[p + "self_attn.k_proj.bias"]).reshape(T, nkv, hd)
        v = (h @ W[p + "self_attn.v_proj.weight"].T + W[p + "self_attn.v_proj.bias"]).reshape(T, nkv, hd)
        q, k = rope(q), rope(k)
        t_idx, j_idx = np.arange(T)[:, None], np.arange(T)[None, :]
        allowed = j_idx <= t_idx
        if l % 2 == 0:
            allowed &= j_idx > t_idx - c["window"]
        att = np.empty((T, nq, hd))
        for hh in range(nq):
            g = hh // (nq // nkv)
            s = (q[:, hh] @ k[:, g].T) / math.sqrt(hd)
            s = np.where(allowed, s, -np.inf)
            sink = W[p + "self_attn.sinks"][hh]
            m = np.maximum(s.max(-1, keepdims=True), sink)
            e = np.exp(s - m)
            pr = e / (e.sum(-1, keepdims=True) + np.exp(sink - m))
            att[:, hh] = pr @ v[:, g]
        x = x + att.reshape(T, nq * hd) @ W[p + "self_attn.o_proj.weight"].T + W[p + "self_attn.o_proj.bias"]
        h = rms(x, W[p + "post_attention_layernorm.weight"])
        logits = h @ W[p + "mlp.router.weight"].T + W[p + "mlp.router.bias"]
        w1 = np_dequant_mxfp4(weights[p + "mlp.experts.gate_up_proj_blocks"], weights[p + "mlp.experts.gate_up_proj_scales"])
        w2 = np_dequant_mxfp4(weights[p + "mlp.experts.down_proj_blocks"], weights[p + "mlp.experts.down_proj_scales"])
        b1, b2 = W[p + "mlp.experts.gate_up_proj_bias"], W[p + "mlp.experts.down_proj_bias"]
        moe = np.zeros_like(x)
        for t in range(T):
            top = np.argsort(-logits[t], kind="stable")[: c["top_k"]]
            wt = np.exp(logits[t, top] - logits[t, top].max())
            wt /= wt.sum()
            for e, we in zip(top, wt):
                u = w1[e].astype(np.float64) @ h[t] + b1[e]
                gate, up = np.minimum(u[0::2], 7.0), np.clip(u[1::2], -7.0, 7.0)
                a = gate / (1 + np.exp(-1.702 * gate)) * (up + 1)
                moe[t] += we * (w2[e].astype(np.float64) @ a + b2[e])
        x = x + moe
    x = rms(x, W["model.norm.weight"])
    return x @ W["lm_head.weight"].T


def write_checkpoint(c, cfg, weights, d):
    os.makedirs(d, exist_ok=True)
    conf = json.loads(cfg.to_json_string())
    # transformers 5 writes only "rope_parameters" (with rope_theta inside). The hub's gpt-oss
    # config.json (written by transformers 4.55) has "rope_theta" and "rope_scaling"; keep both
    # spellings so the Go loader is tested on the real hub keys. transformers reads either.
    conf["rope_theta"] = 150000.0
    conf["rope_scaling"] = dict(ROPE)
    conf["quantization_config"] = QUANT_CONFIG
    conf["architectures"] = ["GptOssForCausalLM"]
    conf = dict(sorted(conf.items()))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(conf, f, indent=2)
        f.write("\n")
    for old in os.listdir(d):
        if old.endswith(".safetensors") or old == "model.safetensors.index.json":
            os.remove(os.path.join(d, old))
    meta = {"format": "pt"}
    if not c["sharded"]:
        save_file(weights, os.path.join(d, "model.safetensors"), metadata=meta)
        return
    # Hub-style odd names (0-based index "of" the last index), split mid-layer:
    # shard 0 = embedding, layer 0, layer 1 up to and including gate_up_proj_blocks.
    names = list(weights)
    cut = names.index("model.layers.1.mlp.experts.gate_up_proj_blocks") + 1
    shards = [names[:cut], names[cut:]]
    files = [f"model-{i:05d}-of-{len(shards) - 1:05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    total = 0
    for fn, part in zip(files, shards):
        save_file({k: weights[k] for k in part}, os.path.join(d, fn), metadata=meta)
        for k in part:
            weight_map[k] = fn
            total += weights[k].numel() * weights[k].element_size()
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")


def load_model(d):
    model, info = GptOssForCausalLM.from_pretrained(
        d,
        quantization_config=Mxfp4Config(dequantize=True),
        dtype=torch.float32,
        attn_implementation="eager",
        experts_implementation="eager",
        output_loading_info=True,
    )
    bad = {k: v for k, v in info.items() if v}
    if bad:
        raise SystemExit(f"{d}: loading info not clean: {bad}")
    model.eval()
    return model


def verify_params(c, model, weights):
    sd = dict(model.named_parameters())
    for name, t in weights.items():
        if name.endswith("_blocks") or name.endswith("_scales"):
            continue
        got = sd[name].detach()
        assert got.dtype == torch.float32, (name, got.dtype)
        if not torch.equal(got, t.float()):
            raise SystemExit(f"{name}: loaded parameter != stored bf16 tensor")
    for l in range(c["layers"]):
        p = f"model.layers.{l}.mlp.experts."
        for proj in ("gate_up_proj", "down_proj"):
            mine = np_dequant_mxfp4(weights[p + proj + "_blocks"], weights[p + proj + "_scales"])
            held = sd[p + proj].detach()  # [E, in, out]
            assert held.dtype == torch.float32
            held = held.transpose(1, 2).numpy()  # -> [E, out, in], the file's layout
            if held.shape != mine.shape or not np.array_equal(held, mine):
                raise SystemExit(f"{p}{proj}: transformers' dequantization != numpy MXFP4 decode")
            # -0 vs +0 compare equal; also check the signs of zero agree where it matters not.
    # YaRN check against the reference doc's formula.
    rot = model.model.rotary_emb
    inv, scale = np_yarn(c["head_dim"])
    got = rot.inv_freq.detach().double().numpy()
    if not np.allclose(got, inv, rtol=1e-6, atol=0):
        raise SystemExit(f"YaRN inv_freq mismatch: {got} vs {inv}")
    if abs(rot.attention_scaling - scale) > 1e-12:
        raise SystemExit(f"YaRN attention scaling {rot.attention_scaling} != {scale}")
    return rot.inv_freq.detach().tolist(), float(rot.attention_scaling)


class RouterMargin:
    """Forward hooks that track the smallest gap between the k-th and (k+1)-th router logit."""

    def __init__(self, model, k):
        self.k = k
        self.min = math.inf
        self.handles = []
        for layer in model.model.layers:
            self.handles.append(layer.mlp.router.register_forward_hook(self.hook))

    def hook(self, module, inputs, output):
        logits = output[0]
        if self.k >= logits.shape[-1]:
            return
        top = torch.topk(logits, self.k + 1, dim=-1).values
        self.min = min(self.min, float((top[..., self.k - 1] - top[..., self.k]).min()))

    def remove(self):
        for h in self.handles:
            h.remove()


def top2_margin(row):
    v = torch.topk(row, 2).values
    return float(v[0] - v[1])


def run_golden(c, model, prompt):
    out_cache = lambda o: getattr(o, "cache", None) if getattr(o, "cache", None) is not None else o.past_key_values  # noqa: E731
    ids = torch.tensor([prompt], dtype=torch.long)
    margin = RouterMargin(model, c["top_k"])
    try:
        # Residual stream at the last prompt position: embedding, each decoder layer's output, the
        # final norm's output (hooks, so the meaning does not depend on output_hidden_states).
        hidden = []
        grab = lambda mod, inp, out: hidden.append(out[0, -1].float().clone())  # noqa: E731
        mods = [model.model.embed_tokens, *model.model.layers, model.model.norm]
        hooks = [m.register_forward_hook(grab) for m in mods]
        try:
            out = model(input_ids=ids, use_cache=True)
        finally:
            for h in hooks:
                h.remove()
        assert len(hidden) == len(mods)
        prefill = out.logits[0].float().clone()
        cache = out_cache(out)
        gaps = [top2_margin(prefill[-1])]
        tokens = [int(prefill[-1].argmax())]
        dec = []
        for i in range(DECODE_STEPS):
            o = model(input_ids=torch.tensor([[tokens[-1]]]), cache=cache, use_cache=True)
            cache = out_cache(o)
            row = o.logits[0, -1].float().clone()
            dec.append(row)
            gaps.append(top2_margin(row))
            if i + 1 < DECODE_STEPS:
                tokens.append(int(row.argmax()))
        next_token = int(dec[-1].argmax())
        dec = torch.stack(dec)
        # No-cache recompute over prompt + every fed decode token.
        full = model(input_ids=torch.tensor([prompt + tokens]), use_cache=False).logits[0].float()
    finally:
        margin.remove()
    L = len(prompt)
    d_prefill = float((full[:L] - prefill).abs().max())
    d_decode = float((full[L:] - dec).abs().max())
    if d_prefill > 1e-4 or d_decode > 1e-4:
        raise SystemExit(f"{c['name']}: cache/no-cache mismatch prefill {d_prefill} decode {d_decode}")
    return dict(
        prefill=prefill, decode=dec, tokens=tokens, next_token=next_token, hidden=hidden,
        min_gap=min(gaps), router_gap=margin.min, d_prefill=d_prefill, d_decode=d_decode,
    )


def fmt(x):
    x = float(x)
    if not math.isfinite(x):
        raise SystemExit(f"non-finite value {x}")
    s = format(x, ".9g")
    return s


def row_json(row):
    return "[" + ",".join(fmt(v) for v in row.tolist()) + "]"


def write_expected(path, c, prompt, r, inv_freq, att_scale):
    head = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "config_name": c["name"],
        "notes": c["notes"]
        + " Loaded with GptOssForCausalLM.from_pretrained(quantization_config=Mxfp4Config(dequantize=True), "
        "dtype=float32, attn_implementation=eager, experts_implementation=eager) on CPU; all maths float32. "
        "decode_tokens[0] = argmax(prefill_logits[-1]); decode_tokens[i] is fed at position len(prompt)+i "
        "with the KV cache and decode_logits[i] is the result; decode_tokens[i+1] = argmax(decode_logits[i]). "
        "hidden_last_prompt_pos (last prompt position, prefill): embedding row, residual after each decoder "
        f"layer, final-norm output. Cache vs no-cache max |diff|: prefill {r['d_prefill']:.3g}, decode {r['d_decode']:.3g}. "
        f"Prefill vs an independent float64 numpy forward written from the reference doc: max |diff| {r['d_ref']:.3g}.",
        "prompt": prompt,
        "decode_tokens": r["tokens"],
        "next_token": r["next_token"],
        "min_top2_margin": float(format(r["min_gap"], ".6g")),
        "min_router_margin": None if math.isinf(r["router_gap"]) else float(format(r["router_gap"], ".6g")),
        "rope_attention_scaling": att_scale,
    }
    parts = ["{"]
    for k, v in head.items():
        parts.append(f"{json.dumps(k)}: {json.dumps(v)},")
    parts.append('"rope_inv_freq": ' + row_json(torch.tensor(inv_freq)) + ",")
    for key, rows in (
        ("hidden_last_prompt_pos", r["hidden"]),
        ("prefill_logits", r["prefill"]),
        ("decode_logits", r["decode"]),
    ):
        parts.append(f'"{key}": [')
        lines = [row_json(row) for row in rows]
        parts.append(",\n".join(lines))
        parts.append("]" + ("," if key != "decode_logits" else ""))
    parts.append("}")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")
    # Re-read: valid JSON, right shapes.
    with open(path) as f:
        back = json.load(f)
    assert len(back["prefill_logits"]) == len(prompt)
    assert all(len(row) == c["vocab"] for row in back["prefill_logits"] + back["decode_logits"])
    assert len(back["decode_logits"]) == DECODE_STEPS and len(back["decode_tokens"]) == DECODE_STEPS


def sanity(c, r):
    for name, t in (("prefill", r["prefill"]), ("decode", r["decode"])):
        if not torch.isfinite(t).all():
            raise SystemExit(f"{c['name']}: non-finite {name} logits")
        if float(t.std(dim=-1).min()) < 1e-3:
            raise SystemExit(f"{c['name']}: {name} logits nearly constant in some row")
    if len(set(r["tokens"])) < 2:
        raise SystemExit(f"{c['name']}: greedy tokens all identical: {r['tokens']}")


def generate(c, out_root):
    d = os.path.join(out_root, c["name"])
    torch.manual_seed(c["seed"])
    gen = torch.Generator().manual_seed(c["seed"])
    cfg = make_config(c)
    weights = make_weights(c, gen)
    write_checkpoint(c, cfg, weights, d)
    model = load_model(d)
    inv_freq, att_scale = verify_params(c, model, weights)
    with torch.no_grad():
        for attempt in range(20):
            pg = torch.Generator().manual_seed(c["seed"] * 100 + attempt)
            prompt = torch.randint(0, c["vocab"], (c["prompt_len"],), generator=pg).tolist()
            r = run_golden(c, model, prompt)
            if r["min_gap"] >= 2e-3 and r["router_gap"] >= 1e-3:
                break
            print(f"  {c['name']}: prompt attempt {attempt} near tie "
                  f"(top2 {r['min_gap']:.3g}, router {r['router_gap']:.3g}); retrying", flush=True)
        else:
            raise SystemExit(f"{c['name']}: no prompt without near ties")
    sanity(c, r)
    ref = np_forward(c, weights, prompt)
    d_ref = float(np.abs(ref - r["prefill"].numpy()).max())
    if d_ref > 1e-4:
        raise SystemExit(f"{c['name']}: transformers prefill differs from the numpy reference forward by {d_ref}")
    r["d_ref"] = d_ref
    write_expected(os.path.join(d, "expected.json"), c, prompt, r, inv_freq, att_scale)
    sizes = {fn: os.path.getsize(os.path.join(d, fn)) for fn in sorted(os.listdir(d))}
    print(f"{c['name']}: tokens {r['tokens'][:8]}... distinct {len(set(r['tokens']))}, "
          f"min top2 gap {r['min_gap']:.3g}, min router gap {r['router_gap']:.3g}, "
          f"cache diff {r['d_prefill']:.2g}/{r['d_decode']:.2g}, numpy-ref diff {r['d_ref']:.2g}, "
          f"logit std {float(r['prefill'].std()):.3g}; files {sizes} total {sum(sizes.values())}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--only", default=None, help="generate just this config name")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    print(f"torch {torch.__version__}, transformers {transformers.__version__}", flush=True)
    for c in CONFIGS:
        if args.only and c["name"] != args.only:
            continue
        generate(c, args.out)


if __name__ == "__main__":
    sys.exit(main())
