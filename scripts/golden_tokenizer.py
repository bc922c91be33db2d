#!/usr/bin/env python3
"""Write the golden token ids that coordinator/tokenizer's tests compare against.

The Go package coordinator/tokenizer re-implements the o200k_base BPE (the
ordinary-text half of gpt-oss's o200k_harmony tokenizer). This script asks the
reference implementation, OpenAI's Python `tiktoken`, how it encodes a fixed
list of tricky strings plus a few hundred seeded pseudo-random ones, and writes

    coordinator/tokenizer/testdata/tiktoken_golden.json

as a JSON list of {"text": ..., "ids": [...]} objects. Special-token text such
as "<|start|>" is encoded as ORDINARY text (allowed_special=set(),
disallowed_special=()), exactly like the Go Encode, which never emits special
ids for user text. The output is deterministic, and is committed, so the Go
tests need neither Python nor network.

How to rerun (our machines cannot download the vocabulary, so tiktoken is
pointed at the local copy described in /work/shared/data/README.md):

    python3 -m venv /tmp/tokvenv
    /tmp/tokvenv/bin/pip install tiktoken
    /tmp/tokvenv/bin/python scripts/golden_tokenizer.py            # from the repo root

The script builds the tiktoken cache itself: it copies
/work/shared/data/o200k_base.tiktoken (override with --vocab) into a temporary
TIKTOKEN_CACHE_DIR under the name fb374d419588a4632f3f557e76b4b70aebbca790
(the sha1 of the download URL, which is how tiktoken names cache entries) and
checks its sha256 first. Then run `go test ./coordinator/tokenizer/`.
Generated with tiktoken 0.14.0.
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile

VOCAB_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
CACHE_NAME = "fb374d419588a4632f3f557e76b4b70aebbca790"
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "coordinator", "tokenizer", "testdata", "tiktoken_golden.json")

# Hand-picked strings, each aimed at one part of the o200k pre-tokenisation
# regex or the byte-level BPE.
TRICKY = [
    "",
    " ",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    # contractions: the (?i:'s|'t|'re|'ve|'m|'ll|'d) suffix, case-insensitively
    "I'm sure you'll see we've got what they'd want; it's THEY'RE, I'M, DON'T.",
    # U+017F LATIN SMALL LETTER LONG S case-folds to 's' in both regex engines
    "it\u017f fine",
    "analysis final assistant user system developer",
    # Korean, Chinese, Japanese
    "안녕하세요, 세계! 한국어 텍스트입니다.",
    "한국어와 English가 섞인 문장입니다 123개",
    "你好，世界。这是一个中文句子，包含标点符号！",
    "こんにちは世界、カタカナとひらがな",
    # emoji: plain, skin tone, ZWJ sequences, flags, variation selectors
    "Emoji: 😀😃😄 👍🏽 ❤️",
    "👨\u200d👩\u200d👧\u200d👦 family, 🏳️\u200d🌈 flag, 👩🏽\u200d💻 coder",
    "🇰🇷🇺🇸🇯🇵",
    # combining marks (\p{M} is part of the letter classes)
    "e\u0301 a\u0308 n\u0303 Z\u0351\u0352\u0353 a\u0325\u0336\u0327 \u0301lone",
    "Ünïcödé façade naïve café Ελληνικά",
    # code
    'func main() {\n\tfmt.Println("hi")\n}\n',
    "def f(x):\n    return x ** 2  # square\n\n\nclass A:\n    pass\n",
    '{"key": [1, 2, 3], "nested": {"a": null, "b": true}}',
    "URL: https://example.com/path/to?q=1&r=2#frag",
    "HTTPServer XMLHttpRequest camelCaseWord snake_case_word SCREAMING_CASE",
    # whitespace runs: \s*[\r\n]+, \s+(?!\S) and \s+
    "a    b     c\t\t\td",
    "\n\n\n",
    " \n \n \n",
    "   leading and trailing   ",
    "trailing spaces   \nnext\n   \n\t\n",
    "line1\r\nline2\r\n\r\nline3\r",
    "\tindented\n\t\tmore\n\t\t\tdeeper",
    "    \n    \n        x",
    # numbers: \p{N}{1,3}
    "1234567 and 3.14159 and 1,000,000 and -42 and 0x1F",
    "০১২৩ ٠١٢٣ Ⅻ ½ ²³",
    # Harmony control-token look-alikes must stay ordinary text
    "<|start|>user<|message|>hi<|end|>",
    "<|endoftext|><|endofprompt|><|return|><|call|><|channel|>analysis",
    # long pieces (the Go BPE switches algorithm for long pieces)
    "Pneumonoultramicroscopicsilicovolcanoconiosis" * 4 + "supercalifragilisticexpialidocious",
    "a" * 300,
    " " * 200 + "x",
    "=" * 120 + "\n" + "-" * 97,
    # mixed scripts
    "Hello世界مرحبا Привет γειά σου שלום नमस्ते สวัสดี",
    "مرحبا بالعالم، هذا نص عربي.",
    "नमस्ते दुनिया, यह हिंदी है।",
    "สวัสดีชาวโลก",
    # unusual whitespace and controls
    "a\u00a0b\u3000c\u2028d\u2009e\u202ff\u0085g",
    "\x0b\x0c\x1c\x1d\x1e\x1f\x00\x7f",
    "\u200b zero width \u200d joiner \ufeff bom",
    "∑_{i=1}^{n} i² = n(n+1)/2 ≈ ∞ → ∀x∈ℝ",
    "!!!??? ... --- *** /// \\\\ ''' \"\"\"",
    "# Title\n\n- item 1\n- item 2\n\n```go\nx := 1\n```\n",
    "It's a 'quoted' word, isn't it? 'Tis 'S 's",
]

# Characters the random strings are drawn from: one or more of every class the
# regex distinguishes (upper/lower/other letters, marks, digits, other numbers,
# punctuation, symbols, each kind of whitespace, apostrophes and suffix letters).
POOL = (
    list("aAbBzZsStTrReEvVmMlLdD") + ["'", "'", "'", "/", "\r", "\n", "\n", " ", " ", " ", "\t"]
    + list("0123456789") + list(".,!?;:-_()[]{}<>|\"#$%&*+=@^`~\\")
    + ["é", "ß", "Σ", "σ", "ǅ", "ʰ", "\u0301", "\u0308", "한", "国", "カ", "ー", "٣", "½", "Ⅻ",
       "😀", "👍", "\u200d", "🏽", "\u00a0", "\u3000", "\u2028", "\u0085", "\x0b", "\x1c",
       "\u017f", "\u212a", "ﬁ", "\ufffd", "\U0001F9EA", "\u0600"]
)


def random_strings(n, seed=20240805):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(1, 40)
        out.append("".join(rng.choice(POOL) for _ in range(length)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab", default="/work/shared/data/o200k_base.tiktoken")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--random", type=int, default=300, help="number of seeded random strings")
    args = ap.parse_args()

    with open(args.vocab, "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != VOCAB_SHA256:
        sys.exit(f"{args.vocab}: sha256 mismatch, not the o200k_base vocabulary")

    cache = tempfile.mkdtemp(prefix="tiktoken-cache-")
    try:
        shutil.copyfile(args.vocab, os.path.join(cache, CACHE_NAME))
        os.environ["TIKTOKEN_CACHE_DIR"] = cache
        import tiktoken

        enc = tiktoken.get_encoding("o200k_base")
        cases = []
        for text in TRICKY + random_strings(args.random):
            ids = enc.encode(text, allowed_special=set(), disallowed_special=())
            assert enc.decode(ids) == text, repr(text)
            cases.append({"text": text, "ids": ids})
    finally:
        shutil.rmtree(cache, ignore_errors=True)

    for word, want in (("analysis", 35644), ("final", 17196), ("assistant", 173781)):
        got = enc.encode(word)
        assert got == [want], (word, got)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="ascii") as f:
        # One case per line; ensure_ascii keeps the file free of raw U+2028,
        # BOMs and control characters.
        f.write("[\n")
        f.write(",\n".join(json.dumps(c, ensure_ascii=True, separators=(",", ":")) for c in cases))
        f.write("\n]\n")
    print(f"wrote {len(cases)} cases to {os.path.relpath(args.out)} (tiktoken {tiktoken.__version__})")


if __name__ == "__main__":
    main()
