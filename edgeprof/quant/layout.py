"""GPTQ v1 storage layout, shared by the one int4 quantizer (`edgeprof.quant.rtn`) and the
checkpoint writer (`edgeprof.quant.gptq`): nibble packing and the per-layer tensor bundle.
Layout only: no quantisation decisions live here."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgeprof.errors import ConfigError

BITS = 4
PACK = 32 // BITS  # 8 nibbles per int32
ZERO = 8  # symmetric zero point


@dataclass
class GPTQTensors:
    """One quantised linear layer in GPTQ v1 layout (see the module doc)."""

    qweight: torch.Tensor  # int32 [in/8, out]
    qzeros: torch.Tensor  # int32 [G, out/8]
    scales: torch.Tensor  # fp16 [G, out]
    g_idx: torch.Tensor  # int32 [in]
    group: int

    @property
    def in_features(self) -> int:
        return self.qweight.shape[0] * PACK

    @property
    def out_features(self) -> int:
        return self.qweight.shape[1]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.qweight, self.qzeros, self.scales, self.g_idx))


def _to_int32(x: torch.Tensor) -> torch.Tensor:
    """int64 holding an unsigned 32-bit pattern -> int32 with the same bits."""
    return ((x + 2**31) % 2**32 - 2**31).to(torch.int32)


def pack_nibbles(v: torch.Tensor) -> torch.Tensor:
    """[..., 8k] values 0..15 -> int32 [..., k]; element 8i+j goes to bits 4j..4j+3."""
    *lead, n = v.shape
    if n % PACK:
        raise ConfigError("quant", f"cannot pack {n} values into int32 nibbles (need a multiple of {PACK})")
    v = v.to(torch.int64).reshape(*lead, n // PACK, PACK)
    shifts = torch.arange(PACK, device=v.device, dtype=torch.int64) * BITS
    return _to_int32((v << shifts).sum(dim=-1))


def unpack_nibbles(p: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_nibbles`: int32 [..., k] -> int64 [..., 8k] values 0..15."""
    x = p.to(torch.int64) & 0xFFFFFFFF
    shifts = torch.arange(PACK, device=p.device, dtype=torch.int64) * BITS
    v = (x.unsqueeze(-1) >> shifts) & 0xF
    return v.reshape(*p.shape[:-1], p.shape[-1] * PACK)
