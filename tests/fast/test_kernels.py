"""The Triton step kernels against the torch reference ops, on the CPU through Triton's
interpreter (TRITON_INTERPRET=1, set before triton is imported, hence the subprocess).

The GPU run of the same comparison is `check_kernels` in benchmarks/fast_decode.py.
"""

from __future__ import annotations

import importlib.util
import textwrap

import pytest

from .interpreted import run_interpreted

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="triton is not installed (pip install 'edgeprof[dev]' brings it)")

SCRIPT = textwrap.dedent("""
    import json, torch
    from edgeprof.fast.kernels import TorchOps, TritonOps
    torch.manual_seed(0)
    nh, nkv, hd, hidden, inter, max_ctx = 6, 2, 32, 96, 160, 600   # GQA group 3, 3 attention splits
    dt = torch.bfloat16
    half = torch.randn(max_ctx, hd // 2)
    cos, sin = torch.cat([half.cos()] * 2, 1).to(dt), torch.cat([half.sin()] * 2, 1).to(dt)
    ref, tri = TorchOps(nh, nkv, hd, 1e-6, cos, sin), TritonOps(nh, nkv, hd, 1e-6, cos, sin, max_ctx, hidden, inter)
    rel = lambda a, b: float((a.float() - b.float()).norm() / b.float().norm())
    out = {}
    x, r, w = (torch.randn(1, hidden).to(dt) for _ in range(3))
    out["rmsnorm"] = rel(tri.add_rmsnorm(x, r, w[0])[0], ref.add_rmsnorm(x, r, w[0])[0])
    kc, vc = torch.randn(nkv, max_ctx, hd).to(dt), torch.randn(nkv, max_ctx, hd).to(dt)
    kc2, vc2 = kc.clone(), vc.clone()
    qkv = torch.randn(1, (nh + 2 * nkv) * hd).to(dt)
    out["rope"], out["attention"] = 0.0, 0.0
    for p in (0, 255, 256, 599):
        pos = torch.tensor([p])
        qa = ref.rope_write_kv(qkv, pos, kc, vc).clone()
        qb = tri.rope_write_kv(qkv, pos, kc2, vc2).clone()
        out["rope"] = max(out["rope"], rel(qb.view(nh, hd), qa), rel(kc2, kc), rel(vc2, vc))
        got = tri.attention(qa.reshape(-1).contiguous(), pos, kc, vc)
        out["attention"] = max(out["attention"], rel(got, ref.attention(qa, pos, kc, vc)))
    gu = torch.randn(1, 2 * inter).to(dt)
    out["silu_mul"] = rel(tri.silu_mul(gu), ref.silu_mul(gu))
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_triton_kernels_match_torch_reference_in_the_interpreter():
    errs = run_interpreted(SCRIPT, 600)
    # The interpreter emulates bf16 stores by truncation, so allow a little over one bf16 ulp.
    for name, err in errs.items():
        assert err < 1.5e-2, (name, err)
