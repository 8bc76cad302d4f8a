"""The one round-to-nearest int4 quantizer (label `rtn4-gN`, asymmetric `rtn4a-gN`).

Round-to-nearest with no calibration: every int4 runtime edgeprof drives (torchao-int4's
tinygemm, edgeprof-fast-int4, the ExLlamaV2 checkpoint, gemlite) takes its tensors from
`quantize_rtn4`, so the runtimes are compared on bit-identical weights. It is *not* GPTQ
(GPTQ calibrates on data and corrects the rounding error column by column); only the
storage layout is GPTQ's (`edgeprof.quant.gptq.GPTQTensors`).

Per weight W [N, K] (out, in), group g along the input, G = K/g groups:

    symmetric:  s = 2 * amax / 15,          z = 8     (GPTQ's sym rule: 16 levels -8..7)
    asymmetric: s = (max - min) / 15,       z = round(-min / s) clamped to 1..15
    q = clamp(round(W / s) + z, 0, 15),     W_hat = (q - z) * s

Scales are rounded to bf16 first and then stored as fp16, which holds every such bf16
value exactly (scales are clamped to fp16's smallest normal, 2**-14): tinygemm/gemlite
read bf16 scales, GPTQ/ExLlamaV2 fp16 ones, and both get the same number. The asymmetric
zero is kept >= 1 because GPTQ v1 stores `z - 1` in a nibble.

A fused matrix (qkv, gate_up: rows of several weights stacked along N) quantizes to the
rows of each part's own quantization, since groups never cross rows: `concat_out` stacks
the parts' tensors, and the fused runtime sees exactly the per-projection weights.
"""

from __future__ import annotations

import torch

from edgeprof.errors import ConfigError
from edgeprof.quant.layout import PACK, GPTQTensors, pack_nibbles, unpack_nibbles

FP16_MIN_NORMAL = 2.0**-14


def label(group: int, sym: bool = True) -> str:
    """The weight-format name records carry: `rtn4-g128` (symmetric) or `rtn4a-g128`."""
    return f"rtn4{'' if sym else 'a'}-g{group}"


def pick_group(*widths: int, preferred: int = 128) -> int:
    """The largest of (preferred, 64, 32) dividing every input width: SmolLM2's 576 -> 64,
    Qwen2.5-7B's 3584/18944 -> 128. One group per model, so every runtime uses the same."""
    for g in (preferred, 64, 32):
        if g <= preferred and all(w % g == 0 for w in widths):
            return g
    raise ConfigError("group", f"no int4 group size in ({preferred}, 64, 32) divides the widths {widths}")


def model_group(shape, preferred: int = 128) -> int:
    """`pick_group` for a ModelShape (hidden, q width and intermediate are the input widths)."""
    return pick_group(shape.hidden, shape.n_heads * shape.head_dim, shape.intermediate, preferred=preferred)


def _scales(x: torch.Tensor) -> torch.Tensor:
    """float32 (positive) -> the nearest value >= x exact in both bf16 and fp16 (see the module
    doc). Rounding up keeps every weight within half a step: a scale rounded down would push
    the group's largest value past the last code and clamp it."""
    b = x.clamp(min=FP16_MIN_NORMAL).to(torch.bfloat16)
    up = (b.view(torch.int16) + 1).view(torch.bfloat16)  # next bf16 above (positive values)
    return torch.where(b.float() < x, up, b).float()


def quantize_qzs(w: torch.Tensor, group: int = 128, sym: bool = True) -> tuple[torch.Tensor, ...]:
    """w [N, K] -> q int32 [N, K] (0..15), z int32 [N, G], s float32 [N, G] (output-major)."""
    if w.dim() != 2:
        raise ConfigError("quant", f"expected a 2-D weight [out, in], got shape {tuple(w.shape)}")
    n, k = w.shape
    if group <= 0 or k % group:
        raise ConfigError("group", f"{group} must be positive and divide the input width {k}")
    wg = w.float().reshape(n, k // group, group)  # [N, G, g]
    if sym:
        s = _scales(2 * wg.abs().amax(dim=-1) / 15)  # [N, G]
        z = torch.full_like(s, 8, dtype=torch.int32)
    else:
        lo, hi = wg.amin(dim=-1).clamp(max=0), wg.amax(dim=-1).clamp(min=0)  # the grid holds 0 exactly
        s = _scales((hi - lo) / 15)
        z = torch.clamp(torch.round(-lo / s), 1, 15).to(torch.int32)
    q = torch.clamp(torch.round(wg / s[..., None]) + z[..., None], 0, 15).to(torch.int32).reshape(n, k)
    return q, z, s


def from_qzs(q: torch.Tensor, z: torch.Tensor, s: torch.Tensor, group: int) -> GPTQTensors:
    """Output-major q [N, K], z [N, G], s [N, G] -> GPTQ v1 tensors (qweight [K/8, N], ...)."""
    n, k = q.shape
    if k % PACK or n % PACK:
        raise ConfigError("quant", f"GPTQ packing needs in and out divisible by {PACK}, got [{n}, {k}]")
    qweight = pack_nibbles(q.t().reshape(k // PACK, PACK, n).permute(0, 2, 1)).squeeze(-1)  # [K/8, N]
    qzeros = pack_nibbles(z.t().to(torch.int64) - 1)  # [G, N/8]; v1 stores z - 1
    g_idx = (torch.arange(k, device=q.device) // group).to(torch.int32)
    return GPTQTensors(qweight, qzeros, s.t().to(torch.float16).contiguous(), g_idx, group)


def quantize_rtn4(w: torch.Tensor, group: int = 128, sym: bool = True) -> GPTQTensors:
    """THE int4 quantizer: one weight [N, K] -> GPTQ-layout tensors (see the module doc)."""
    return from_qzs(*quantize_qzs(w, group, sym), group)


def to_qzs(t: GPTQTensors) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GPTQ tensors -> q int32 [N, K], z int32 [N, G], s float32 [N, G]: what runtimes pack from."""
    k, n = t.in_features, t.out_features
    q = unpack_nibbles(t.qweight.unsqueeze(-1)).permute(0, 2, 1).reshape(k, n).t().contiguous()
    z = (unpack_nibbles(t.qzeros) + 1).t().contiguous()  # [N, G]
    return q.to(torch.int32), z.to(torch.int32), t.scales.float().t().contiguous()


def dequantize_qzs(q: torch.Tensor, z: torch.Tensor, s: torch.Tensor, group: int) -> torch.Tensor:
    """Exact float32 W_hat [N, K] = (q - z) * s from per-row q [N, K], z [N, K/g], s [N, K/g]."""
    return (q.float() - z.float().repeat_interleave(group, dim=1)) * s.float().repeat_interleave(group, dim=1)


def dequantize(t: GPTQTensors) -> torch.Tensor:
    """Exact float32 W_hat [N, K] = (q - z) * s: the weights every int4 kernel must compute with."""
    q, z, s = to_qzs(t)
    return dequantize_qzs(q, z, s, t.group)


def concat_out(parts: list[GPTQTensors]) -> GPTQTensors:
    """Stack several layers' tensors along N (fused qkv / gate_up); groups never cross rows."""
    if len({p.group for p in parts}) != 1:
        raise ConfigError("group", "fused parts must share one group size")
    return GPTQTensors(torch.cat([p.qweight for p in parts], dim=1), torch.cat([p.qzeros for p in parts], dim=1),
                       torch.cat([p.scales for p in parts], dim=1), parts[0].g_idx, parts[0].group)
