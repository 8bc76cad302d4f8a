"""The analytic memory floor of one batch-1 decode step. Pure: no torch, no I/O.

A decode step must stream the weights it uses and the KV cache it attends over, so

    floor_s = bytes_read / peak_bandwidth            fraction = floor_s / measured_s

Two byte counts are always reported (the seed paper, arXiv 2605.30571, uses the first):

* **paper**: every weight byte (the embedding table included; a tied table once)
  plus the KV cache at `ctx`.
* **touched**: what one step really reads: one row of the input embedding, the
  lm_head once (for a tied model that *is* the embedding table), every block weight
  and norm, and the KV cache.

Quantized formats quantize only the decoder blocks' linear layers (q, k, v, o,
gate, up, down), as real checkpoints do; embeddings, lm_head, norms and biases stay
16-bit.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from edgeprof.errors import ConfigError, ContextLengthError, UnknownChoiceError
from edgeprof.shapes import ModelShape

BF16 = 2  # bytes per element of every unquantized tensor (bf16/fp16)
GROUPS = ("attention", "mlp", "norms", "embedding", "lm_head", "kv_cache")


@dataclass(frozen=True)
class WeightFormat:
    """How a linear layer of `n_in x n_out` weights is stored. `kind` picks the formula."""

    name: str
    kind: str  # "dense" | "int8" | "bnb4" | "group4" | "exl2" | "gguf"
    description: str
    bytes_per_elem: float = 2.0  # dense only
    group_size: int = 128  # group4 only
    g_idx: bool = False  # group4: GPTQ stores an int32 group index per input channel
    double_quant: bool = True  # bnb4 only
    bits: float = 4.0  # exl2 and gguf: average bits per weight, block scales included (0: unknown)

    def linear_bytes(self, n_in: int, n_out: int) -> int:
        """Bytes of one quantized `n_in x n_out` weight matrix (bias excluded)."""
        n = n_in * n_out
        if self.kind == "dense":
            return int(n * self.bytes_per_elem)
        if self.kind == "int8":
            # bnb LLM.int8: int8 CB [out, in] + fp32 row absmax SCB [out].
            return n + 4 * n_out
        if self.kind == "bnb4":
            return _bnb4_bytes(n, self.double_quant)
        if self.kind == "group4":
            return _group4_bytes(n_in, n_out, self.group_size, self.g_idx)
        if self.kind in ("exl2", "gguf"):
            if self.bits <= 0:
                raise ConfigError("weights", f"{self.name!r} does not say its GGUF type; name it, e.g. gguf-q4_1")
            return math.ceil(n * self.bits / 8)
        raise ConfigError("weights", f"format {self.name!r} has unknown kind {self.kind!r}")


def _bnb4_bytes(n: int, double_quant: bool, blocksize: int = 64) -> int:
    """bitsandbytes nf4/fp4: packed 4-bit data + one absmax per block of 64, plus the
    16-entry fp32 code table (`quant_map`) the kernel looks values up in.

    With double quantisation the absmaxes are themselves 8-bit, in blocks of 256
    with one fp32 absmax per block, one fp32 offset and a 256-entry fp32 code table
    (`nested_quant_map`); otherwise they are fp32.
    """
    n_blocks = math.ceil(n / blocksize)
    data = math.ceil(n / 2) + 4 * 16
    if not double_quant:
        return data + 4 * n_blocks
    return data + n_blocks + 4 * math.ceil(n_blocks / 256) + 4 + 4 * 256


def _group4_bytes(n_in: int, n_out: int, group: int, g_idx: bool) -> int:
    """GPTQ/AWQ int4: qweight [in/8, out] int32, fp16 scales [in/g, out],
    packed 4-bit zeros [in/g, out/8] int32 and, for GPTQ, g_idx int32 [in]."""
    n_groups = math.ceil(n_in / group)
    qweight = n_in * n_out // 2
    scales = n_groups * n_out * 2
    zeros = n_groups * math.ceil(n_out / 8) * 4
    return qweight + scales + zeros + (4 * n_in if g_idx else 0)


_FIXED_FORMATS = {
    "bf16": WeightFormat("bf16", "dense", "bfloat16 weights", 2.0),
    "fp16": WeightFormat("fp16", "dense", "float16 weights", 2.0),
    "int8": WeightFormat("int8", "int8", "bitsandbytes LLM.int8 (int8 + fp32 row absmax)"),
    "nf4": WeightFormat("nf4", "bnb4", "bitsandbytes NF4, blocksize 64, double-quant"),
    "fp4": WeightFormat("fp4", "bnb4", "bitsandbytes FP4, blocksize 64, double-quant"),
    "nf4-nodq": WeightFormat("nf4-nodq", "bnb4", "bitsandbytes NF4, blocksize 64, fp32 absmax (no double-quant)",
                             double_quant=False),
    "fp4-nodq": WeightFormat("fp4-nodq", "bnb4", "bitsandbytes FP4, blocksize 64, fp32 absmax (no double-quant)",
                             double_quant=False),
}
# GGUF block types: bits per weight with the block's scales (ggml-common.h block structs), e.g.
# Q4_0 = 32 weights in 16 B of nibbles + one fp16 scale = 18 B / 32 = 4.5 bits; Q4_1 adds an fp16 min (20 B).
# K-quants are 256-weight super-blocks: Q4_K 144 B, Q5_K 176 B, Q6_K 210 B.
GGUF_BITS = {"q4_0": 4.5, "q4_1": 5.0, "q5_0": 5.5, "q5_1": 6.0, "q8_0": 8.5, "q4_k": 4.5, "q5_k": 5.5,
             "q6_k": 6.5625, "f16": 16.0, "bf16": 16.0, "f32": 32.0}
_PARAM_FORMATS = {
    "gptq4[-gN]": "GPTQ int4, group N (default 128), with g_idx",
    "gptq4ao[-gN]": "GPTQ int4 with static act-order (edgeprof.quant.gptq4), group N; g_idx stays i // N",
    "rtn4[-gN]": "round-to-nearest int4 (edgeprof.quant.rtn, symmetric), group N, stored in GPTQ layout",
    "rtn4a[-gN]": "round-to-nearest int4, asymmetric, group N, stored in GPTQ layout",
    "awq4[-gN]": "AWQ int4, group N (default 128)",
    "exl2-B": "ExLlamaV2 EXL2 at B average bits per weight (e.g. exl2-4.65)",
    "gguf-TYPE": f"a GGUF file's block type ({', '.join(GGUF_BITS)}); plain 'gguf' names the family only",
}


def format_names() -> list[str]:
    """Every accepted format spelling, for help text and error messages."""
    return [*_FIXED_FORMATS, *_PARAM_FORMATS]


def format_help() -> dict[str, str]:
    return {**{k: v.description for k, v in _FIXED_FORMATS.items()}, **_PARAM_FORMATS}


def parse_format(spec: str) -> WeightFormat:
    """`bf16`, `nf4`, `gptq4`, `gptq4-g64`, `awq4-g128`, `exl2-4.65`, ... -> WeightFormat."""
    key = spec.strip().lower()
    if key in _FIXED_FORMATS:
        return _FIXED_FORMATS[key]
    m = re.fullmatch(r"(gptq4(?:ao)?|awq4|int4|rtn4a?)(?:-g(\d+))?", key)
    if m:
        group = int(m.group(2) or 128)
        if group <= 0:
            raise ConfigError("weights", f"group size must be positive in {spec!r}")
        gptq = m.group(1) != "awq4"  # rtn4 is stored in GPTQ layout (g_idx included)
        label = {"awq4": "AWQ", "rtn4": "round-to-nearest", "rtn4a": "round-to-nearest asymmetric",
                 "gptq4ao": "GPTQ act-order"}.get(
            m.group(1), "GPTQ")
        return WeightFormat(f"{m.group(1)}-g{group}", "group4", f"{label} int4, group {group}",
                            group_size=group, g_idx=gptq)
    m = re.fullmatch(r"gguf(?:-(\w+))?", key)
    if m:
        t = m.group(1)
        if t is None:  # the registry's label before a file is opened; sizes need the type
            return WeightFormat("gguf", "gguf", "GGUF (block type read from the file)", bits=0.0)
        if t not in GGUF_BITS:
            raise UnknownChoiceError("weights", spec, [f"gguf-{k}" for k in GGUF_BITS])
        return WeightFormat(key, "gguf", f"GGUF {t.upper()} blocks, {GGUF_BITS[t]:g} bits/weight "
                            "(decoder-block linears; embeddings/head counted as 16-bit)", bits=GGUF_BITS[t])
    m = re.fullmatch(r"exl2-(\d+(?:\.\d+)?)", key)
    if m:
        bits = float(m.group(1))
        if not 1.0 <= bits <= 16.0:
            raise ConfigError("weights", f"EXL2 bits must be within 1..16, got {bits}")
        return WeightFormat(key, "exl2", f"EXL2 at {bits} bits/weight", bits=bits)
    raise UnknownChoiceError("weights", spec, format_names())


@dataclass(frozen=True)
class Traffic:
    """Bytes read by one decode step, per tensor group, under both floor definitions."""

    paper: dict[str, int]
    touched: dict[str, int]

    @property
    def paper_bytes(self) -> int:
        return sum(self.paper.values())

    @property
    def touched_bytes(self) -> int:
        return sum(self.touched.values())

    @property
    def weight_bytes(self) -> int:
        """All weight bytes (paper definition, KV excluded): what must be resident."""
        return self.paper_bytes - self.paper["kv_cache"]

    @property
    def kv_bytes(self) -> int:
        return self.paper["kv_cache"]


def kv_cache_bytes(shape: ModelShape, ctx: int, kv_bytes_per_elem: float = BF16) -> int:
    """K and V, per layer, for the KV heads only (GQA), at `ctx` tokens."""
    return int(2 * shape.n_layers * shape.kv_dim * ctx * kv_bytes_per_elem)


def _block_bytes(shape: ModelShape, fmt: WeightFormat) -> tuple[int, int, int]:
    """(attention, mlp, norms) bytes summed over all layers; norms include the final one."""
    h, lin = shape.hidden, fmt.linear_bytes
    attn = lin(h, shape.q_dim) + 2 * lin(h, shape.kv_dim) + lin(shape.q_dim, h)
    if shape.qkv_bias:
        attn += BF16 * (shape.q_dim + 2 * shape.kv_dim)
    mlp = 2 * lin(h, shape.intermediate) + lin(shape.intermediate, h)
    norms = BF16 * h * (2 * shape.n_layers + 1)
    return shape.n_layers * attn, shape.n_layers * mlp, norms


def check_ctx(shape: ModelShape, ctx: int) -> None:
    if ctx <= 0:
        raise ContextLengthError("ctx", f"must be a positive number of tokens, got {ctx}")
    if ctx > shape.max_ctx:
        raise ContextLengthError(
            "ctx", f"{ctx} exceeds the maximum context of {shape.name} ({shape.max_ctx} tokens)"
        )


def step_traffic(shape: ModelShape, fmt: WeightFormat, ctx: int, kv_bytes_per_elem: float = BF16) -> Traffic:
    """Bytes one decode step at context `ctx` reads, per group, both definitions."""
    check_ctx(shape, ctx)
    attn, mlp, norms = _block_bytes(shape, fmt)
    table = BF16 * shape.vocab * shape.hidden  # embedding / lm_head stay 16-bit
    kv = kv_cache_bytes(shape, ctx, kv_bytes_per_elem)
    common = {"attention": attn, "mlp": mlp, "norms": norms}
    paper = {**common, "embedding": table, "lm_head": 0 if shape.tied else table, "kv_cache": kv}
    # Touched: one embedding row is gathered; the head (the same table if tied) is read once.
    touched = {**common, "embedding": BF16 * shape.hidden, "lm_head": table, "kv_cache": kv}
    return Traffic(paper=paper, touched=touched)


@dataclass(frozen=True)
class Floor:
    """The floor of one cell (model x format x ctx) against one bandwidth."""

    model: str
    weights: str
    ctx: int
    bandwidth_bytes_per_s: float
    traffic: Traffic
    measured_ms: float | None = None
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def floor_ms(self) -> float:
        return 1e3 * self.traffic.paper_bytes / self.bandwidth_bytes_per_s

    @property
    def touched_floor_ms(self) -> float:
        return 1e3 * self.traffic.touched_bytes / self.bandwidth_bytes_per_s

    @property
    def fraction(self) -> float | None:
        return None if not self.measured_ms else self.floor_ms / self.measured_ms

    @property
    def touched_fraction(self) -> float | None:
        return None if not self.measured_ms else self.touched_floor_ms / self.measured_ms

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "model": self.model,
            "weights": self.weights,
            "ctx": self.ctx,
            "weight_bytes": self.traffic.weight_bytes,
            "kv_bytes": self.traffic.kv_bytes,
            "paper_bytes": self.traffic.paper_bytes,
            "touched_bytes": self.traffic.touched_bytes,
            "peak_bytes_per_s": self.bandwidth_bytes_per_s,
            "floor_ms": self.floor_ms,
            "touched_floor_ms": self.touched_floor_ms,
            "breakdown_paper": dict(self.traffic.paper),
            "breakdown_touched": dict(self.traffic.touched),
        }
        if self.measured_ms:
            out.update(measured_ms=self.measured_ms, fraction=self.fraction,
                       touched_fraction=self.touched_fraction)
        return out


def compute_floor(
    shape: ModelShape,
    fmt: WeightFormat,
    ctx: int,
    bandwidth_bytes_per_s: float,
    measured_ms: float | None = None,
    kv_bytes_per_elem: float = BF16,
) -> Floor:
    if bandwidth_bytes_per_s <= 0:
        raise ConfigError("bandwidth", f"must be positive, got {bandwidth_bytes_per_s}")
    if measured_ms is not None and measured_ms <= 0:
        raise ConfigError("measured-ms", f"must be a positive time in ms, got {measured_ms}")
    traffic = step_traffic(shape, fmt, ctx, kv_bytes_per_elem)
    return Floor(shape.name, fmt.name, ctx, bandwidth_bytes_per_s, traffic, measured_ms)
