"""The one int4 quantizer: exact round trips, one set of tensors for every runtime, honest labels."""

from __future__ import annotations

import pytest
import torch

from edgeprof.errors import ConfigError
from edgeprof.quant.rtn import (
    concat_out,
    dequantize,
    label,
    model_group,
    pick_group,
    quantize_qzs,
    quantize_rtn4,
    to_qzs,
)


def _w(n: int = 64, k: int = 256, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 0.02


@pytest.mark.parametrize("sym", [True, False])
def test_round_trip_is_within_half_a_step_and_layout_is_lossless(sym: bool) -> None:
    w = _w()
    q, z, s = quantize_qzs(w, 64, sym)
    t = quantize_rtn4(w, 64, sym)
    q2, z2, s2 = to_qzs(t)
    assert torch.equal(q, q2) and torch.equal(z, z2) and torch.equal(s, s2)
    err = (dequantize(t) - w).abs()
    assert bool((err <= s.repeat_interleave(64, dim=1) / 2 + 1e-7).all())


def test_scales_are_exact_in_bf16_and_fp16() -> None:
    _, _, s = quantize_qzs(_w(), 128)
    assert torch.equal(s.to(torch.bfloat16).float(), s)
    assert torch.equal(s.to(torch.float16).float(), s)


def test_asymmetric_fits_a_one_sided_group_better() -> None:
    w = _w().abs()  # all positive: the symmetric grid wastes its negative half
    e_sym = (dequantize(quantize_rtn4(w, 64, True)) - w).pow(2).mean()
    e_asym = (dequantize(quantize_rtn4(w, 64, False)) - w).pow(2).mean()
    assert e_asym < e_sym / 2


def test_fused_rows_equal_the_parts_quantized_alone() -> None:
    a, b = _w(64, 128, 1), _w(32, 128, 2)
    fused = quantize_rtn4(torch.cat([a, b]), 64)
    parts = concat_out([quantize_rtn4(a, 64), quantize_rtn4(b, 64)])
    for x, y in zip(to_qzs(fused), to_qzs(parts), strict=True):
        assert torch.equal(x, y)


def test_labels_and_groups() -> None:
    from edgeprof.floor import parse_format
    from edgeprof.shape_loader import preset

    assert label(128) == "rtn4-g128" and label(64, sym=False) == "rtn4a-g64"
    assert parse_format("rtn4-g64").kind == "group4" and "round-to-nearest" in parse_format("rtn4").description
    assert model_group(preset("smollm2-135m")) == 64 and model_group(preset("qwen2.5-7b")) == 128
    with pytest.raises(ConfigError, match="group"):
        pick_group(100)


def test_every_int4_runtime_reads_the_same_tensors() -> None:
    """torchao-int4's tinygemm layer and edgeprof-fast-int4 both compute with `dequantize(quantize_rtn4(w))`."""
    from torch import nn

    from edgeprof.backends.torchao_int4 import TinyGemmInt4Linear
    from edgeprof.fast.weights import _int4

    lin = nn.Linear(256, 96, bias=False).to(torch.bfloat16)
    x = torch.randn(1, 256, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    ref = x.float() @ dequantize(quantize_rtn4(lin.weight.detach(), 64)).t()
    for got in (TinyGemmInt4Linear(lin, 64)(x).float(), _int4(lin.weight.detach(), 64)(x).float()):
        assert float((got - ref).norm() / ref.norm()) < 0.01
