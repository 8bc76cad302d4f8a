"""Launches for Nsight Compute: edgeprof's W4A16 GEMV on Qwen2.5-7B shapes, per variant,
checked first (float64 on the dequantized weights), then run a few times so `ncu` can profile them:

    ncu --kernel-name regex:w4a16 --section SpeedOfLight --section MemoryWorkloadAnalysis \
        --section WarpStateStats --section Occupancy python benchmarks/w4_ncu_targets.py

Synthetic RTN int4 weights (the timing does not depend on their values). Prints each launch's label in
launch order, so the ncu report's kernels can be matched to variants.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from int4_gemv import check_inputs  # noqa: E402

SHAPES = {"qkv": (3584, 4608), "o": (3584, 3584), "gate_up": (3584, 37888), "down": (18944, 3584),
          "lm_head": (3584, 152064)}  # Qwen2.5-7B (K, N); lm_head is bf16 in the decoder: here a large-N reference


def main() -> int:
    from edgeprof.fast.w4cuda import W4CudaLinear

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="gate_up:base:2,gate_up:tm:2,down:w8:8,down:tm8:8",
                    help="shape:variant:splits, comma-separated")
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    for cfg in args.configs.split(","):
        shape, variant, splits = cfg.split(":")
        k, n = SHAPES[shape]
        prep = check_inputs(n, k, 128, False)
        lin = W4CudaLinear(prep["packed"], splits=int(splits), variant=variant)
        x = torch.randn(1, k, device="cuda").to(torch.bfloat16)
        ref = x.double() @ prep["w64"].t()
        err = float((lin(x).double() - ref).norm() / ref.norm())
        print(f"{cfg}: rel err {err:.1e} ({'ok' if err < 2e-3 else 'FAILED'})", flush=True)
        for _ in range(args.runs):
            lin(x)
        torch.cuda.synchronize()
        del prep, lin
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
