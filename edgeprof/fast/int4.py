"""Int4 weights: GPTQ checkpoint tensors -> torch's tinygemm int4 layout.

GPTQ (the layout ExLlamaV2 loads; AutoGPTQ "v1" zeros convention):
  qweight int32 [K/8, N]  nibble j of row r holds q[8r + j, n], q in 0..15
  qzeros  int32 [K/g, N/8] nibble j of column c holds (z[g, 8c + j] - 1)
  scales  fp16  [K/g, N]
  w[k, n] = (q[k, n] - z[k // g, n]) * s[k // g, n]
tinygemm (`torch.ops.aten._weight_int4pack_mm`) computes
  w = (q - 8) * scale + zero   with scales_and_zeros [K/g, N, 2]
so zero = (8 - z) * s, which is 0 for a symmetric checkpoint (z = 8).
gemlite (Triton; `GemLiteLinear`, HQQ convention w = (q - zero) * scale) takes q [N, K]
as uint8 0..15, scales [N, K/g] and, for a symmetric checkpoint, the integer zero 8; at
batch 1 it runs its "RevSplit-K" GEMV. CUDA only.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from edgeprof.quant.rtn import dequantize_qzs as dequantize  # noqa: F401 - the int4 reference


def unpack_gptq(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """-> q int32 [N, K], z int32 [N, K/g], s float32 [N, K/g] (output-major, as torch weights)."""
    shifts = torch.arange(0, 32, 4, device=qweight.device, dtype=torch.int32)  # [8]
    q = (qweight.unsqueeze(1) >> shifts[None, :, None]) & 0xF  # [K/8, 8, N]
    q = q.reshape(-1, qweight.shape[1]).t().contiguous()  # [N, K]
    z = (qzeros.unsqueeze(2) >> shifts[None, None, :]) & 0xF  # [K/g, N/8, 8]
    z = (z.reshape(qzeros.shape[0], -1) + 1).t().contiguous()  # [N, K/g]; v1 stores z - 1
    return q.to(torch.int32), z.to(torch.int32), scales.float().t().contiguous()




@dataclass
class Int4Linear:
    """One linear layer in tinygemm layout. `__call__` maps [1, K] -> [1, N]."""

    packed: torch.Tensor
    scales_zeros: torch.Tensor  # [K/g, N, 2] bf16
    group: int
    n_out: int
    cpu: bool
    kernel_name: str = "tinygemm"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.cpu:
            return torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.packed, self.group, self.scales_zeros)
        return torch.ops.aten._weight_int4pack_mm(x, self.packed, self.group, self.scales_zeros)

    @property
    def nbytes(self) -> int:
        return self.packed.numel() * self.packed.element_size() + self.scales_zeros.numel() * 2


def _inner_k_tiles(k: int) -> int:
    for tiles in (8, 4, 2):
        if k % (tiles * 16) == 0:
            return tiles
    raise ValueError(f"tinygemm needs the input width to be a multiple of 32, got {k}")


def to_tinygemm(q: torch.Tensor, z: torch.Tensor, s: torch.Tensor, group: int, role: str | None = None) -> Int4Linear:
    """Pack q [N, K] (0..15), integer zeros z [N, K/g] and scales s [N, K/g] for tinygemm. `role` (the projection,
    w4cuda.ROLES) is read only by edgeprof's CUDA kernel (its default launch); every builder takes it."""
    n, k = q.shape
    tiles = _inner_k_tiles(k)
    zero = (8 - z.float()) * s  # tinygemm's float-domain zero point
    sz = torch.stack([s, zero], dim=2).transpose(0, 1).contiguous().to(torch.bfloat16)  # [K/g, N, 2]
    if q.device.type == "cpu":
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), tiles)
        return Int4Linear(packed, sz, group, n, cpu=True)
    q8 = (q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8)  # two nibbles per byte, [N, K/2]
    packed = torch.ops.aten._convert_weight_to_int4pack(q8, tiles)
    return Int4Linear(packed, sz, group, n, cpu=False)


class GemliteInt4Linear:
    """One linear layer as a gemlite A16W4 layer. `__call__` maps [1, K] -> [1, N]."""

    kernel_name = "gemlite"

    def __init__(self, layer, n_out: int, nbytes: int) -> None:
        self.layer, self.n_out, self._nbytes = layer, n_out, nbytes

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    @property
    def nbytes(self) -> int:
        return self._nbytes


@functools.cache
def _load_gemlite_tuning(gemlite) -> None:
    """Load the autotune cache gemlite ships for this GPU (h100.json, l4.json, l40s.json, ...),
    once: without it the first call of each shape autotunes for many seconds."""
    # Its split-K GEMV adds partial sums with atomics; on sm_90 those are bf16 by default, which
    # measured 0.03-0.08 relative error per GEMV and 0.30 logit error over 28 layers (H100,
    # results/h100/2026-11-22-int4-kernels*). fp32 atomics, then one conversion, keep the int4 function exact.
    gemlite.set_native_atomic_bfp16(False)
    from pathlib import Path

    name = torch.cuda.get_device_name().lower()
    shipped = sorted(Path(gemlite.__file__).parent.glob("configs/*.json"), key=lambda p: -len(p.stem))
    match = next((p for p in shipped if p.stem.lower() in name), None)  # longest first: l40s before l4
    if match is not None:
        gemlite.load_config(str(match), print_error=False)


def to_gemlite(q: torch.Tensor, z: torch.Tensor, s: torch.Tensor, group: int,
               role: str | None = None) -> GemliteInt4Linear:
    """Pack q [N, K] (0..15), integer zeros z [N, K/g] and scales s [N, K/g] for gemlite."""
    if q.device.type != "cuda":
        raise ValueError("gemlite's int4 kernels need a CUDA device; on the CPU use edgeprof-fast-int4 (tinygemm)")
    import gemlite  # optional: pip install gemlite (Triton kernels, CUDA only)

    _load_gemlite_tuning(gemlite)
    n, k = q.shape
    layer = gemlite.GemLiteLinear(4, group_size=group, in_features=k, out_features=n,
                                  input_dtype=gemlite.DType.BF16, output_dtype=gemlite.DType.BF16)
    symmetric = bool((z == 8).all())
    zeros = 8 if symmetric else z.to(torch.bfloat16)
    layer.pack(q.to(torch.uint8), s.to(torch.bfloat16), zeros, None)
    nbytes = sum(t.numel() * t.element_size() for t in (layer.W_q, layer.scales, layer.zeros))
    return GemliteInt4Linear(layer, n, nbytes)


def to_cuda_w4(q: torch.Tensor, z: torch.Tensor, s: torch.Tensor, group: int, role: str | None = None):
    """edgeprof's own CUDA W4A16 GEMV (edgeprof/fast/w4cuda.py) where it builds and takes the shape;
    else tinygemm, with `fallback_reason` set so the record says which kernel ran and why. Its launch:
    w4cuda.plan_launch (the card's measured plan for this shape, else the rule, from the shape and its `role`);
    `launch_source` says which."""
    from edgeprof.fast import w4cuda

    why = w4cuda.supported(*q.shape, group)
    if why is None and q.device.type != "cuda":
        why = "not a CUDA device"
    ext = w4cuda.load_extension() if why is None else None
    if why is None and ext is None:
        why = w4cuda.build_error()
    if why is not None:
        lin = to_tinygemm(q, z, s, group)
        lin.fallback_reason = why  # type: ignore[attr-defined]
        return lin
    n, k = q.shape
    launch, source = w4cuda.plan_launch(k, n, group, q.device, role, ext)
    lin = w4cuda.W4CudaLinear(w4cuda.pack_w4(q, z, s, group), None, ext, **launch)
    lin.launch_source = source
    return lin


INT4_KERNELS = {"tinygemm": to_tinygemm, "gemlite": to_gemlite, "cuda": to_cuda_w4}


def quantize_rtn(w: torch.Tensor, group: int, sym: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The project's one int4 quantizer (`edgeprof.quant.rtn.quantize_qzs`, label `rtn4-gN`):
    w [N, K] -> q int32 [N, K], z int32 [N, K/g], s float32 [N, K/g] (exact in bf16 and fp16)."""
    from edgeprof.quant.rtn import quantize_qzs

    return quantize_qzs(w, group, sym)
