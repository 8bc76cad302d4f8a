"""Deliberately broken int4 decoders: what the kernel-correctness check exists to catch.

Both subclass edgeprof-fast-int4 and differ from it in one bug each, of the kinds int4
kernels really have: the two nibbles of each packed byte swapped (a packing bug), and
scales 10% too large (a wrong scale rule, e.g. amax/7 where 2*amax/15 was meant)."""

from __future__ import annotations

import torch

from edgeprof.fast.decoder import FastDecoder
from edgeprof.fast.int4 import INT4_KERNELS
from edgeprof.fast.weights import BiasedInt4, _cat
from edgeprof.quant.rtn import model_group, quantize_qzs


def _swap_nibbles(q: torch.Tensor) -> torch.Tensor:
    """q [N, K] -> the same with input channels 2i and 2i+1 exchanged."""
    return q.view(q.shape[0], -1, 2).flip(-1).reshape(q.shape).contiguous()


class BrokenInt4Decoder(FastDecoder):
    """edgeprof-fast-int4 with one bug: `bug` is "nibbles" or "scale"."""

    def __init__(self, loaded, device: str, max_ctx: int, bug: str):
        group = model_group(loaded.shape)
        super().__init__(loaded, device, max_ctx, fmt="int4", group=group, name=f"broken-int4-{bug}")

        def lin(w: torch.Tensor):
            q, z, s = quantize_qzs(w, group)
            if bug == "nibbles":
                q = _swap_nibbles(q)
            else:
                s = s * 1.1
            return INT4_KERNELS["tinygemm"](q, z, s, group)

        with torch.no_grad():
            for lw, layer in zip(self.weights.layers, loaded.model.model.layers, strict=True):
                a, m = layer.self_attn, layer.mlp
                wqkv = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight])
                lw.qkv = BiasedInt4(lin(wqkv), _cat(a.q_proj.bias, a.k_proj.bias, a.v_proj.bias))
                lw.o = lin(a.o_proj.weight)
                lw.gate_up = lin(torch.cat([m.gate_proj.weight, m.up_proj.weight]))
                lw.down = lin(m.down_proj.weight)
