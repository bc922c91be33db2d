"""Writes python.safetensors, the golden file for TestPythonGolden.

The file is produced by the reference Python `safetensors` library so that the
Go reader is checked against files written by real tooling. Regenerate with:

    python3 -m venv /tmp/stvenv
    /tmp/stvenv/bin/pip install safetensors numpy
    /tmp/stvenv/bin/python worker/safetensors/testdata/gen.py

(committed file made with safetensors 0.8.0, numpy 2.4.6). The output is
deterministic; if you change the tensors here, update TestPythonGolden.

numpy has no bfloat16, so the BF16 tensor goes through the library's low-level
`serialize_file` with dtype "bfloat16" and the raw uint16 bit patterns; the
other tensors go through `safetensors.numpy.save_file`'s own conversion.
"""

import os

import numpy as np
import safetensors
from safetensors.numpy import _flatten

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "python.safetensors")

tensors = {
    # F32 matrix: values 0.5 * i.
    "model.weight": (np.arange(6, dtype=np.float32) * 0.5).reshape(2, 3),
    # U8 like gpt-oss MXFP4 blocks: 2x2x4 bytes, values 0..15 reversed.
    "mlp.blocks": np.arange(15, -1, -1, dtype=np.uint8).reshape(2, 2, 4),
    # I64 vector with negative and large values.
    "ids": np.array([-1, 0, 1 << 40], dtype=np.int64),
    # 0-d F32 scalar.
    "scale": np.array(3.25, dtype=np.float32),
    # Empty F32 tensor with a zero dimension.
    "empty": np.zeros((0, 4), dtype=np.float32),
}
metadata = {"format": "pt", "source": "gen.py"}

keep_alive = []
flat = _flatten(tensors, keep_alive)

# BF16 bit patterns of 1.0, -2.0, 0.5 (top 16 bits of the float32 values).
bf16 = np.array([0x3F80, 0xC000, 0x3F00], dtype=np.uint16)
flat["norm.bf16"] = safetensors.TensorSpec(
    dtype="bfloat16", shape=[3], data_ptr=bf16.ctypes.data, data_len=bf16.nbytes
)

safetensors.serialize_file(flat, OUT, metadata=metadata)
print("wrote", OUT, os.path.getsize(OUT), "bytes")
