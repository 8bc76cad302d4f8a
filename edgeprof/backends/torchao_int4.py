"""torchao-int4: int4 weight-only, group 128, through torch's tinygemm kernel.

Every decoder-block linear (q, k, v, o, gate, up, down) is replaced by a
`TinyGemmInt4Linear` calling `torch.ops.aten._weight_int4pack_mm`, the kernel torchao's
int4 weight-only "tinygemm" layout dispatches to. We call the aten op directly rather
than through torchao's config classes, whose names and defaults change between torchao
releases; the kernel, the packing and the arithmetic are the same.

Quantisation is the project's one int4 quantizer (`edgeprof.quant.rtn.quantize_rtn4`,
round-to-nearest, label `rtn4-gN`, one group per model), so these weights are bit for bit
the ExLlamaV2 checkpoint's and edgeprof-fast-int4's: W_hat = (q - z) * s, i.e. tinygemm's
`(q - 8) * s + zero` with zero = (8 - z) * s. Embeddings, lm_head and norms stay bf16.
The session then runs like hf-graph: static cache, one decode step in a CUDA graph.
On the CPU the same module uses the `_for_cpu` variants of the ops (tests only).
"""

from __future__ import annotations

import torch
from torch import nn

from edgeprof.backends.hf import HFDecoder, _check_device
from edgeprof.quant.gptq import LINEAR_NAMES
from edgeprof.quant.rtn import label, model_group, quantize_qzs


def pick_group(in_features: int, group: int = 128) -> int:
    """The largest tinygemm group size <= `group` that divides `in_features`."""
    for g in (256, 128, 64, 32):
        if g <= group and in_features % g == 0:
            return g
    raise ValueError(f"in_features={in_features} is not a multiple of 32; tinygemm cannot take it")


def pick_inner_k_tiles(in_features: int) -> int:
    for tiles in (8, 4, 2):
        if in_features % (tiles * 16) == 0:
            return tiles
    raise ValueError(f"in_features={in_features} is not a multiple of 32; tinygemm cannot take it")


class TinyGemmInt4Linear(nn.Module):
    """y = x @ W_hat.T + b with W_hat stored as tinygemm int4 (group `group`)."""

    def __init__(self, linear: nn.Linear, group: int = 128) -> None:
        super().__init__()
        w = linear.weight.detach()  # [out, in]
        self.out_features, self.in_features = w.shape
        self.group = pick_group(self.in_features, group)
        tiles = pick_inner_k_tiles(self.in_features)
        self.cuda_kernel = w.device.type == "cuda"
        q, z, s = quantize_qzs(w, self.group)  # q int32 [out, in] 0..15, z int32 / s fp32 [out, G]
        if self.cuda_kernel:
            # two nibbles per byte, even input channel in the high nibble (torch >= 2.5 layout)
            q8 = ((q[:, ::2] << 4) | q[:, 1::2]).to(torch.uint8).contiguous()  # [out, in/2]
            packed = torch.ops.aten._convert_weight_to_int4pack(q8, tiles)
        else:
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32).contiguous(), tiles)
        zero = (8 - z.float()) * s  # tinygemm's float-domain zero; 0 for the symmetric rule
        scales_and_zeros = torch.stack([s.t(), zero.t()], dim=-1).to(torch.bfloat16).contiguous()  # [G, out, 2]
        self.register_buffer("weight_int4", packed)
        self.register_buffer("scales_and_zeros", scales_and_zeros)
        bias = linear.bias.detach().to(torch.bfloat16) if linear.bias is not None else None
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).to(torch.bfloat16)  # [m, in]
        if self.cuda_kernel:
            y = torch.ops.aten._weight_int4pack_mm(x2, self.weight_int4, self.group, self.scales_and_zeros)
        else:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, self.weight_int4, self.group, self.scales_and_zeros)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features).to(x.dtype)


def quantize_model_(model: nn.Module, group: int = 128) -> dict[str, int]:
    """Replace every block linear of `model` in place; returns {group size: count}."""
    used: dict[str, int] = {}
    targets = [(name, mod) for name, mod in model.named_modules()
               if type(mod) is nn.Linear and ".layers." in name and name.rsplit(".", 1)[-1] in LINEAR_NAMES]
    with torch.no_grad():
        for name, mod in targets:
            parent_name, leaf = name.rsplit(".", 1)
            new = TinyGemmInt4Linear(mod, group)
            setattr(model.get_submodule(parent_name), leaf, new)
            used[f"g{new.group}"] = used.get(f"g{new.group}", 0) + 1
            del mod
    if model.device.type == "cuda":
        torch.cuda.empty_cache()
    return used


def make(loaded, device: str, max_ctx: int, group: int = 128, **options) -> HFDecoder:
    """Quantises `loaded.model` IN PLACE (load a fresh model for other backends)."""
    _check_device(loaded, device)
    group = model_group(loaded.shape, group)  # the group every int4 runtime uses for this model
    used = quantize_model_(loaded.model, group)
    loaded.dtype = "int4-tinygemm"
    runner = "graph" if device.startswith("cuda") else "eager"
    return HFDecoder(loaded, device, max_ctx, backend_name="torchao-int4", weights=label(group),
                     cache="static", runner=runner, graph_fallback=True,
                     notes={"int4": f"tinygemm aten._weight_int4pack_mm on edgeprof.quant.rtn weights, groups {used}"},
                     **options)
