#!/usr/bin/env python3
"""Build a Hugging Face tokenizer.json for gpt-oss (o200k_harmony) from tiktoken ranks.

llama.cpp's convert_hf_to_gguf.py reads a model's tokenizer through
transformers' AutoTokenizer, so the random checkpoints that scripts/tinymodel
writes (config.json + model.safetensors, no tokenizer) need one before they
can be converted to GGUF for the side-by-side benchmark
(scripts/bench-llamacpp.sh). This script writes it from the o200k_base ranks
(../shared/data/o200k_base.tiktoken: base64 token bytes and rank per line)
plus gpt-oss's special tokens, as coordinator/tokenizer defines them:

    199998 <|startoftext|>   199999 <|endoftext|>   200002 <|return|>
    200003 <|constrain|>     200005 <|channel|>     200006 <|start|>
    200007 <|end|>           200008 <|message|>     200012 <|call|>
    every other id in [199998, vocab) is <|reserved_N|>

The tokenizer is byte-level BPE with o200k's pre-tokenisation regex and
ignore_merges (a pre-token that is itself in the vocabulary is one token, as
in tiktoken). The merges are reconstructed from the ranks the standard way:
for each token of rank r longer than one byte, run BPE on its bytes with only
the merges of rank < r; the two parts left are its merge, at priority r.

--check encodes sample strings with the `tokenizers` package and compares
them with coordinator/tokenizer's golden ids (tiktoken's, which the Go
tokenizer's tests match), special tokens included.

    python3 scripts/llamacpp/tokenizer_json.py --out DIR [--check]

writes DIR/tokenizer.json and DIR/tokenizer_config.json. Pure Python for the
build; --check needs `pip install tokenizers`.
"""

import argparse
import base64
import json
import os
import sys

SPLIT_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n/]*"
    r"|\s*[\r\n]+"
    r"|\s+(?!\S)"
    r"|\s+"
)

NUM_ORDINARY = 199998
VOCAB_SIZE = 201088  # the embedding rows of gpt-oss (config.json vocab_size)
NAMED = {
    199998: "<|startoftext|>",
    199999: "<|endoftext|>",
    200002: "<|return|>",
    200003: "<|constrain|>",
    200005: "<|channel|>",
    200006: "<|start|>",
    200007: "<|end|>",
    200008: "<|message|>",
    200012: "<|call|>",
}

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_RANKS = os.path.join(os.path.dirname(REPO), "shared", "data", "o200k_base.tiktoken")
GOLDEN = os.path.join(REPO, "coordinator", "tokenizer", "testdata", "tiktoken_golden.json")


def special_name(i):
    return NAMED.get(i, "<|reserved_%d|>" % i)


def bytes_to_unicode():
    """GPT-2's byte -> printable character map used by byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def load_ranks(path):
    ranks = {}
    with open(path, "rb") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    if sorted(ranks.values()) != list(range(len(ranks))):
        sys.exit("tokenizer_json: ranks in %s are not 0..%d" % (path, len(ranks) - 1))
    if len(ranks) != NUM_ORDINARY:
        sys.exit("tokenizer_json: %s has %d ranks, o200k_base has %d" % (path, len(ranks), NUM_ORDINARY))
    return ranks


def split_at_rank(ranks, token, rank):
    """BPE on token's bytes using only merges of rank < rank: the parts left."""
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best, at = None, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < rank and (best is None or r < best):
                best, at = r, i
        if best is None:
            break
        parts[at:at + 2] = [parts[at] + parts[at + 1]]
    return parts


def build(ranks):
    enc = bytes_to_unicode()
    text = lambda b: "".join(enc[x] for x in b)
    vocab = {}
    for tok, r in ranks.items():
        vocab[text(tok)] = r
    merges = []
    for tok, r in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(tok) == 1:
            continue
        parts = split_at_rank(ranks, tok, r)
        if len(parts) != 2:
            sys.exit("tokenizer_json: token of rank %d (%r) does not split into two tokens of lower rank" % (r, tok))
        merges.append(text(parts[0]) + " " + text(parts[1]))
    added = [{"id": i, "content": special_name(i), "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i in range(NUM_ORDINARY, VOCAB_SIZE)]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": SPLIT_PATTERN}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": vocab, "merges": merges},
    }


TOKENIZER_CONFIG = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "bos_token": "<|startoftext|>",
    "eos_token": "<|return|>",
    "pad_token": "<|endoftext|>",
    "add_bos_token": False,
    "add_eos_token": False,
    "clean_up_tokenization_spaces": False,
    "model_max_length": 131072,
    "model_input_names": ["input_ids", "attention_mask"],
}


def check(path):
    """Encode samples with `tokenizers` and compare with the golden ids."""
    from tokenizers import Tokenizer

    tk = Tokenizer.from_file(path)
    with open(GOLDEN, encoding="utf-8") as f:
        golden = json.load(f)
    specials = set(special_name(i) for i in range(NUM_ORDINARY, VOCAB_SIZE))
    n = bad = skipped = 0
    for g in golden:
        # The goldens encode special-token text as ordinary text; the
        # tokenizer.json (like HF's for gpt-oss) matches it as special.
        if "<|" in g["text"] and any(s in g["text"] for s in specials):
            skipped += 1
            continue
        got = tk.encode(g["text"], add_special_tokens=False).ids
        n += 1
        if got != g["ids"]:
            bad += 1
            if bad <= 5:
                print("MISMATCH %r\n  tokenizers %s\n  golden     %s" % (g["text"][:80], got[:20], g["ids"][:20]))
        elif tk.decode(got, skip_special_tokens=False) != g["text"]:
            bad += 1
            print("DECODE MISMATCH %r" % g["text"][:80])
    # Special tokens by name, and a Harmony prompt around ordinary text.
    for i, name in NAMED.items():
        got = tk.encode(name, add_special_tokens=False).ids
        n += 1
        if got != [i]:
            bad += 1
            print("SPECIAL MISMATCH %s: %s, want [%d]" % (name, got, i))
    prompt = "<|start|>user<|message|>Hello, world!<|end|><|start|>assistant<|channel|>final<|message|>"
    want = [200006, 1428, 200008, 13225, 11, 2375, 0, 200007, 200006, 173781, 200005, 17196, 200008]
    got = tk.encode(prompt, add_special_tokens=False).ids
    n += 1
    if got != want:
        bad += 1
        print("HARMONY MISMATCH %s\n  want %s" % (got, want))
    print("tokenizer.json check: %d samples, %d mismatches (%d golden strings with special-token text skipped)"
          % (n, bad, skipped))
    return bad == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", default=DEFAULT_RANKS, help="o200k_base.tiktoken (base64 token, rank per line)")
    ap.add_argument("--out", required=True, help="directory to write tokenizer.json and tokenizer_config.json into")
    ap.add_argument("--check", action="store_true", help="compare sample encodings with the golden ids (needs tokenizers)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    out = os.path.join(a.out, "tokenizer.json")
    tj = build(load_ranks(a.ranks))
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False)
    os.replace(tmp, out)
    with open(os.path.join(a.out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(TOKENIZER_CONFIG, f, indent=2)
        f.write("\n")
    print("wrote %s (%d tokens, %d merges, %d special)" % (out, len(tj["model"]["vocab"]), len(tj["model"]["merges"]),
                                                           len(tj["added_tokens"])))
    if a.check and not check(out):
        sys.exit("tokenizer_json: the tokenizer.json does not encode as o200k_harmony does")


if __name__ == "__main__":
    main()
