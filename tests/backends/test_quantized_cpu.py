"""The quantised layers' arithmetic, checked on the CPU against the dequantised reference."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from edgeprof.backends.torchao_int4 import TinyGemmInt4Linear, pick_group, quantize_model_
from edgeprof.quant.gptq import quantize_int


@pytest.mark.parametrize("out_f,in_f", [(64, 128), (192, 576), (96, 256)])
def test_tinygemm_matches_dequantized(out_f: int, in_f: int) -> None:
    torch.manual_seed(0)
    lin = nn.Linear(in_f, out_f, bias=True).to(torch.bfloat16)
    m = TinyGemmInt4Linear(lin, 128)
    assert m.group == pick_group(in_f, 128)
    q, s = quantize_int(lin.weight, m.group)
    w_hat = (q.float() - 8) * s.float()[torch.arange(in_f) // m.group].t()
    x = torch.randn(3, in_f, dtype=torch.bfloat16)
    ref = x.float() @ w_hat.t() + lin.bias.float()
    y = m(x).float()
    assert float((y - ref).norm() / ref.norm()) < 0.01


def test_tinygemm_model_swap_keeps_decoding() -> None:
    from edgeprof.backends.hf import HFDecoder, module_bytes
    from edgeprof.sources import load_model

    base = load_model("tiny-test", "cpu")
    bf16_bytes = module_bytes(base.model)
    used = quantize_model_(base.model, 32)
    assert sum(used.values()) == 2 * 7  # 2 layers x (q, k, v, o, gate, up, down)
    assert module_bytes(base.model) < bf16_bytes
    dec = HFDecoder(base, "cpu", 64, backend_name="torchao-int4", weights="gptq4-g128")
    dec.prefill(list(range(1, 20)))
    assert 0 <= dec.step().token_id < base.shape.vocab


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes is not installed")
def test_bnb_nf4_swap_on_cpu() -> None:
    from edgeprof.backends.bnb import quantize_model_ as bnb_quantize
    from edgeprof.backends.hf import module_bytes
    from edgeprof.sources import load_model

    base = load_model("tiny-test", "cpu")
    before = module_bytes(base.model)
    x = torch.arange(10).view(1, 10)
    with torch.no_grad():
        ref = base.model(x).logits.float()
        assert bnb_quantize(base.model, "nf4") == 14
        got = base.model(x).logits.float()
    assert module_bytes(base.model) < before
    rel = float((got - ref).norm() / ref.norm())
    assert 0 < rel < 0.3
