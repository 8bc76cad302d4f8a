"""Int4 weights: GPTQ checkpoint tensors -> torch's tinygemm int4 layout.

GPTQ (the layout ExLlamaV2 loads; AutoGPTQ "v1" zeros convention):
  qweight int32 [K/8, N]  nibble j of row r holds q[8r + j, n], q in 0..15
  qzeros  int32 [K/g, N/8] nibble j of column c holds (z[g, 8c + j] - 1)
  scales  fp16  [K/g, N]
  w[k, n] = (q[k, n] - z[k // g, n]) * s[k // g, n]
tinygemm (`torch.ops.aten._weight_int4pack_mm`) computes
  w = (q - 8) * scale + zero   with scales_and_zeros [K/g, N, 2]
so zero = (8 - z) * s, which is 0 for a symmetric checkpoint (z = 8).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def unpack_gptq(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """-> q int32 [N, K], z int32 [N, K/g], s float32 [N, K/g] (output-major, as torch weights)."""
    shifts = torch.arange(0, 32, 4, device=qweight.device, dtype=torch.int32)  # [8]
    q = (qweight.unsqueeze(1) >> shifts[None, :, None]) & 0xF  # [K/8, 8, N]
    q = q.reshape(-1, qweight.shape[1]).t().contiguous()  # [N, K]
    z = (qzeros.unsqueeze(2) >> shifts[None, None, :]) & 0xF  # [K/g, N/8, 8]
    z = (z.reshape(qzeros.shape[0], -1) + 1).t().contiguous()  # [N, K/g]; v1 stores z - 1
    return q.to(torch.int32), z.to(torch.int32), scales.float().t().contiguous()


def dequantize(q: torch.Tensor, z: torch.Tensor, s: torch.Tensor, group: int) -> torch.Tensor:
    """The exact int4 function as a float32 [N, K] matrix: the reference for int4 checks."""
    z_full = z.repeat_interleave(group, dim=1).float()
    s_full = s.repeat_interleave(group, dim=1)
    return (q.float() - z_full) * s_full


@dataclass
class Int4Linear:
    """One linear layer in tinygemm layout. `__call__` maps [1, K] -> [1, N]."""

    packed: torch.Tensor
    scales_zeros: torch.Tensor  # [K/g, N, 2] bf16
    group: int
    n_out: int
    cpu: bool

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


def to_tinygemm(q: torch.Tensor, z: torch.Tensor, s: torch.Tensor, group: int) -> Int4Linear:
    """Pack q [N, K] (0..15), integer zeros z [N, K/g] and scales s [N, K/g] for tinygemm."""
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


def quantize_rtn(w: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-to-nearest symmetric int4 of w [N, K]: q [N, K], z = 8 [N, K/g], s [N, K/g]."""
    n, k = w.shape
    wg = w.float().reshape(n, k // group, group)
    s = (wg.abs().amax(dim=2) / 7.0).clamp(min=1e-8)  # [N, K/g]; symmetric range -7..7 (+8 unused)
    q = torch.clamp(torch.round(wg / s[..., None]) + 8, 0, 15).to(torch.int32).reshape(n, k)
    z = torch.full_like(s, 8, dtype=torch.int32)
    return q, z, s
