"""edgeprof's Triton W4 GEMV against the exact dequantized int4 matrix, in Triton's
interpreter on the CPU (TRITON_INTERPRET=1 must be set before triton is imported, hence the
subprocess). The GPU timing is benchmarks/int4_gemv.py."""

from __future__ import annotations

import textwrap

import pytest

from .interpreted import run_interpreted

pytest.importorskip("triton")

SCRIPT = textwrap.dedent("""
    import json, torch
    from edgeprof.fast.int4 import dequantize, quantize_rtn
    from edgeprof.fast.w4gemv import W4Linear
    out = {}
    for n, k, bn, bk in [(48, 512, 16, 256), (40, 768, 8, 256), (24, 1024, 8, 512)]:  # ragged N, several K steps
        g = torch.Generator().manual_seed(n)
        w = torch.randn(n, k, generator=g) * 0.02
        q, z, s = quantize_rtn(w, 128)
        s = s.to(torch.bfloat16).float()
        x = torch.randn(1, k, generator=g).to(torch.bfloat16)
        y = W4Linear(q, s, 128, bn, bk, 2)(x).float()
        ref = x.float() @ dequantize(q, z, s, 128).t()
        out[f"{n}x{k}"] = float((y - ref).abs().max() / ref.abs().max())
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_w4_gemv_matches_the_dequantized_matrix_in_the_interpreter():
    for shape, err in run_interpreted(SCRIPT, 300).items():
        assert err < 1e-2, (shape, err)  # bf16 output rounding, as the interpreter emulates it


def test_w4_gemv_refuses_a_k_it_cannot_tile():
    torch = pytest.importorskip("torch")
    from edgeprof.fast.int4 import quantize_rtn
    from edgeprof.fast.w4gemv import W4Linear

    q, _, s = quantize_rtn(torch.randn(8, 384), 128)
    with pytest.raises(ValueError, match="divisible by 256"):
        W4Linear(q, s, 128)


SPLITK = textwrap.dedent("""
    import json, torch
    from edgeprof.fast.int4 import dequantize, quantize_rtn
    from edgeprof.fast.w4gemv import W4LinearSplitK
    out = {}
    for n, k, bn, bk, it in [(48, 512, 16, 128, 1), (40, 768, 8, 256, 2), (24, 1024, 8, 128, 3)]:  # ragged K split
        g = torch.Generator().manual_seed(n)
        w = torch.randn(n, k, generator=g) * 0.02
        q, z, s = quantize_rtn(w, 128)
        s = s.to(torch.bfloat16).float()
        x = torch.randn(1, k, generator=g).to(torch.bfloat16)
        lin = W4LinearSplitK(q, s, 128, bn, bk, it, 2)
        lin(x)
        y = lin(x)  # twice: the output must be zeroed between calls, not accumulate
        ref = x.float() @ dequantize(q, z, s, 128).t()
        out[f"{n}x{k}"] = float((y - ref).abs().max() / ref.abs().max())
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_split_k_w4_gemv_is_exact_in_fp32_in_the_interpreter():
    for shape, err in run_interpreted(SPLITK, 300).items():
        assert err < 1e-5, (shape, err)  # fp32 output: only summation order differs
