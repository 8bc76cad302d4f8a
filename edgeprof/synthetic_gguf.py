"""SYNTHETIC GGUF files: random weights with a real model's shape, for llama.cpp latency.

llama.cpp reads GGUF only, so timing it on a 7B shape without a model hub needs a GGUF of
that shape. `write(shape, path)` writes one with the `gguf` package (gguf-py, also vendored
in llama.cpp's source tree as gguf-py/):

* every decoder-block linear, the token embedding and the output head in Q4_0 (gguf-py's
  quantizer; K-quants it can only dequantize), norms and q/k/v biases in F32;
* random N(0, 0.02) values, norms 1. One random tensor per distinct shape is quantized once
  and written for every layer, and the vocab-sized embedding/head repeat a block of 8192
  random rows: a decode step streams every byte all the same (llama.cpp does not
  deduplicate tensors), and quantizing 7B values in numpy would take minutes. The file
  says so in `general.description`;
* no tokenizer: `tokenizer.ggml.model = "none"` with `{arch}.vocab_size` dummy tokens
  (llama.cpp's no-vocab mode), so token ids are all a run needs.

The weights are labelled SYNTHETIC everywhere (general.name ends in "[SYNTHETIC]").
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgeprof.errors import ModelLoadError
from edgeprof.shapes import ModelShape

STD = 0.02  # values only feed llama.cpp timing here (no correctness check reads this file)
QTYPE = "Q4_0"
TILE_ROWS = 8192  # rows of random values per tall matrix; the rest repeat them (see `write`)
ARCHES = {"llama": "llama", "qwen2": "qwen2", "mistral": "llama"}  # llama.cpp reads Mistral as llama


def _gguf():
    try:
        import gguf
    except ImportError as exc:
        raise ModelLoadError("writing a GGUF needs the gguf package (pip install gguf, or put llama.cpp's "
                             "gguf-py folder on PYTHONPATH)") from exc
    return gguf


def _random(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    return (rng.standard_normal((rows, cols), dtype=np.float32) * STD).astype(np.float32)  # [rows, cols]


def write(shape: ModelShape, path: str | Path, seed: int = 1234, ctx: int | None = None,
          tile_rows: int = TILE_ROWS) -> Path:
    """Write a SYNTHETIC Q4_0 GGUF of `shape` to `path` (atomically); returns the path.
    `tile_rows`: random rows per tall matrix (tests lower it to reach the repeat path on a tiny shape)."""
    gguf = _gguf()
    q4 = gguf.GGMLQuantizationType.Q4_0
    arch = ARCHES.get(shape.arch)
    if arch is None:
        raise ModelLoadError(f"{shape.name}: no GGUF architecture for arch {shape.arch!r}; use llama, mistral or qwen2")
    for dim in (shape.hidden, shape.intermediate, shape.q_dim, shape.kv_dim):
        if dim % 32:
            raise ModelLoadError(f"{shape.name}: Q4_0 needs every row length to be a multiple of 32, got {dim}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    rng = np.random.default_rng(seed)
    cache: dict[tuple[int, int], np.ndarray] = {}

    def q(rows: int, cols: int) -> np.ndarray:
        """Quantized bytes of one random [rows, cols] matrix, shared by every tensor of that shape.
        Tall ones (the vocab-sized embedding/head) repeat a block of `tile_rows` random rows."""
        if (rows, cols) not in cache:
            block = gguf.quants.quantize(_random(rng, min(rows, tile_rows), cols), q4)  # [r, cols/32*18] uint8
            reps = -(-rows // block.shape[0])
            cache[(rows, cols)] = np.ascontiguousarray(np.tile(block, (reps, 1))[:rows])
        return cache[(rows, cols)]

    h, kv, qd, ff = shape.hidden, shape.kv_dim, shape.q_dim, shape.intermediate
    w = gguf.GGUFWriter(str(tmp), arch)
    w.add_name(f"{shape.name} [SYNTHETIC]")
    w.add_description(f"SYNTHETIC random weights N(0, {STD}) with the shape of {shape.name}, written by edgeprof; "
                      "one random tensor per distinct shape, repeated in every layer (vocab-sized ones repeat "
                      f"{tile_rows} random rows); Q4_0 (RTN, gguf-py)")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    w.add_context_length(ctx or shape.max_ctx)
    w.add_embedding_length(h)
    w.add_block_count(shape.n_layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(shape.n_heads)
    w.add_head_count_kv(shape.n_kv_heads)
    w.add_key_length(shape.head_dim)
    w.add_value_length(shape.head_dim)
    w.add_rope_dimension_count(shape.head_dim)
    w.add_rope_freq_base(shape.rope_theta)
    w.add_layer_norm_rms_eps(shape.norm_eps)
    w.add_vocab_size(shape.vocab)
    w.add_tokenizer_model("none")  # llama.cpp's no-vocab mode: vocab_size dummy tokens

    ones = np.ones(h, dtype=np.float32)
    w.add_tensor("token_embd.weight", q(shape.vocab, h), raw_dtype=q4)
    for i in range(shape.n_layers):
        b = f"blk.{i}"
        w.add_tensor(f"{b}.attn_norm.weight", ones)
        w.add_tensor(f"{b}.attn_q.weight", q(qd, h), raw_dtype=q4)
        w.add_tensor(f"{b}.attn_k.weight", q(kv, h), raw_dtype=q4)
        w.add_tensor(f"{b}.attn_v.weight", q(kv, h), raw_dtype=q4)
        if shape.qkv_bias:
            for name, n in (("attn_q", qd), ("attn_k", kv), ("attn_v", kv)):
                w.add_tensor(f"{b}.{name}.bias", (rng.standard_normal(n, dtype=np.float32) * STD))
        w.add_tensor(f"{b}.attn_output.weight", q(h, qd), raw_dtype=q4)
        w.add_tensor(f"{b}.ffn_norm.weight", ones)
        w.add_tensor(f"{b}.ffn_gate.weight", q(ff, h), raw_dtype=q4)
        w.add_tensor(f"{b}.ffn_up.weight", q(ff, h), raw_dtype=q4)
        w.add_tensor(f"{b}.ffn_down.weight", q(h, ff), raw_dtype=q4)
    w.add_tensor("output_norm.weight", ones)
    if not shape.tied:  # a GGUF without output.weight ties the head to the embedding
        w.add_tensor("output.weight", q(shape.vocab, h), raw_dtype=q4)
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
    finally:
        w.close()
    os.replace(tmp, path)
    return path


def cached(shape: ModelShape) -> Path:
    """The SYNTHETIC Q4_0 GGUF of `shape` in edgeprof's cache (written on first use, then reused): what
    a GGUF-only backend (llama.cpp) runs when a cell names a synthetic preset."""
    from edgeprof.paths import cache_dir

    path = cache_dir() / "gguf" / f"{shape.name}-synthetic-q4_0.gguf"
    return path if path.is_file() else write(shape, path)
