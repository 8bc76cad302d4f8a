"""edgeprof's Triton W4 GEMVs (benchmarks/w4gemv.py: measured, used by no backend) against
the exact dequantized int4 matrix, in Triton's interpreter on the CPU. The GPU timing is
benchmarks/int4_gemv.py."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from .interpreted import run_interpreted

pytest.importorskip("triton")
BENCHMARKS = str(Path(__file__).resolve().parents[2] / "benchmarks")

SCRIPT = textwrap.dedent("""
    import json, sys, torch
    sys.path.insert(0, BENCHMARKS_DIR)
    from edgeprof.fast.int4 import dequantize, quantize_rtn
    from w4gemv import W4Linear, W4LinearSplitK
    out = {}
    # ragged N, several K steps, a K split that leaves the last program short
    for n, k, bn, bk, it in [(48, 512, 16, 128, 1), (40, 768, 8, 256, 2), (24, 1024, 8, 128, 3)]:
        g = torch.Generator().manual_seed(n)
        w = torch.randn(n, k, generator=g) * 0.02
        q, z, s = quantize_rtn(w, 128)
        s = s.to(torch.bfloat16).float()
        x = torch.randn(1, k, generator=g).to(torch.bfloat16)
        ref = x.float() @ dequantize(q, z, s, 128).t()
        split = W4LinearSplitK(q, s, 128, bn, bk, it, 2)
        split(x)
        for name, y in (("whole", W4Linear(q, s, 128, bn, bk, 2)(x)), ("split", split(x))):  # split: 2nd call
            out[f"{name} {n}x{k}"] = float((y.float() - ref).abs().max() / ref.abs().max())
    print(json.dumps(out))
""").replace("BENCHMARKS_DIR", repr(BENCHMARKS))


@pytest.mark.slow
def test_w4_gemvs_match_the_dequantized_matrix_in_the_interpreter():
    for case, err in run_interpreted(SCRIPT, 300).items():
        # whole-K writes bf16 (rounding, as the interpreter emulates it); split-K keeps fp32, and a
        # second call must not add onto the first (the output is zeroed each call)
        assert err < (1e-2 if case.startswith("whole") else 1e-5), (case, err)


def test_w4_gemv_refuses_a_k_it_cannot_tile():
    torch = pytest.importorskip("torch")
    from edgeprof.fast.int4 import quantize_rtn

    sys.path.insert(0, BENCHMARKS)
    from w4gemv import W4Linear

    q, _, s = quantize_rtn(torch.randn(8, 384), 128)
    with pytest.raises(ValueError, match="divisible by 256"):
        W4Linear(q, s, 128)
