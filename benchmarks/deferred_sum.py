"""down's split-K sum moved into the next layer's q/k/v launch (issue 12, fifteenth pass): checks, then times.

The decoder's down projection (Qwen2.5-7B: K 18944 -> N 3584) splits K 10 ways to stream from every SM, and its
splits' sums then meet in a finish: a cluster barrier and DSMEM reads (clscx), or fence + ticket + L2 reads (scx).
The variant `scxd` writes only its fp32 partials; the next layer's q/k/v launch (clscx with the deferred norm) adds
them in split order while it stages its input (csrc: reduce_partials, NORM 4). This script:

1. checks it (int4_gemv.check_deferred_sum): the partials against float64, and q/k/v's y and residual bitwise those
   of the same q/k/v on the y of down's own finish, for Qwen2.5-7B and Llama-3.1-8B, sym and asym;
2. times, with PDL as in the step, each launch in a chain over enough weight copies to defeat L2: down as clscx s10
   (y) against scxd s10 (partials), and q/k/v clscx s7 with its fused norm on a bf16 x against the same on down's
   partials. The pair's sum is what a layer pays for down plus its consumer either way.

    python benchmarks/deferred_sum.py --out $OUT/deferred_sum.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

H, INTER, N_QKV = 3584, 18944, 4608  # Qwen2.5-7B: hidden, intermediate, q/k/v rows
DOWN_SPLITS, QKV_SPLITS = 10, 7


def checks() -> list[dict]:
    import int4_gemv as b

    out = []
    for model, h, i in b.MLP_SHAPES:
        for splits, consumer, c_splits in b.DEFERRED_SUM_LAUNCHES:
            for asym in (False, True):
                c = b.check_deferred_sum(model, h, i, asym, splits, consumer, c_splits)
                out.append(c)
                print(f"check {model:13s} {'asym' if asym else 'sym '} {c['producer']} -> {c['consumer']}: partials "
                      f"rel err {c['partials_rel_err']:.2e}, finishes agree {c['down_finishes_agree']}, y bitwise "
                      f"{c['y']}, residual {c['residual']}, deterministic {c['deterministic']} "
                      f"{'PASS' if c['passed'] else 'FAIL'}", flush=True)
    return out


def times(repeats: int) -> list[dict]:
    import int4_gemv as b

    from edgeprof.fast.w4cuda import W4CudaLinear, pack_w4, use_norm, use_pdl
    from edgeprof.timing import time_graph

    g = torch.Generator(device="cuda").manual_seed(3)
    qd, zd, sd = b._quant(H, INTER, b.GROUP, False, g)
    qq, zq, sq = b._quant(N_QKV, H, b.GROUP, False, g)

    def build(q, z, s, variant, splits, count_bytes):
        first = W4CudaLinear(pack_w4(q, z, s, b.GROUP), variant=variant, splits=splits)
        return [first] + [W4CudaLinear(pack_w4(q, z, s, b.GROUP), variant=variant, splits=splits)
                          for _ in range(b._copies(count_bytes(first)) - 1)]

    act = (0.5 * torch.randn(1, INTER, device="cuda", generator=g)).to(torch.bfloat16)
    x = torch.randn(1, H, device="cuda", generator=g).to(torch.bfloat16)
    res = torch.randn(1, H, device="cuda", generator=g).to(torch.bfloat16)
    nw = (1 + 0.1 * torch.randn(H, device="cuda", generator=g)).to(torch.bfloat16)
    rows = []
    use_pdl(True, 0)
    use_norm("deferred")
    try:
        for label, variant in (("down clscx s10 (y, cluster finish)", "clscx"),
                               ("down scxd s10 (partials only)", "scxd")):
            layers = build(qd, zd, sd, variant, DOWN_SPLITS, lambda lin: lin.nbytes)
            calls = [(lambda li=li: li.partials(act)) if variant == "scxd" else (lambda li=li: li(act)) for li in layers]
            st = time_graph(calls, repeats)
            rows.append({"launch": label, "us_p50": st.p50 * 1e3, "bytes": layers[0].nbytes})
            parts = layers[0].partials(act).clone() if variant == "scxd" else None
            del layers
        qkv = build(qq, zq, sq, "clscx", QKV_SPLITS, lambda lin: lin.nbytes)
        for label, inp, xs in (("q/k/v clscx s7 + norm on bf16 x", x, 0),
                               ("q/k/v clscx s7 + norm on down's partials", parts, DOWN_SPLITS)):
            st = time_graph([lambda li=li, inp=inp, xs=xs: li.fused_norm(inp, res, nw, 1e-6, x_splits=xs) for li in qkv],
                            repeats)
            rows.append({"launch": label, "us_p50": st.p50 * 1e3, "bytes": qkv[0].nbytes})
    finally:
        use_pdl(False)
        use_norm("loop")
    for r in rows:
        print(f"  {r['launch']:45s} {r['us_p50']:7.2f} us", flush=True)
    before, after = rows[0]["us_p50"] + rows[2]["us_p50"], rows[1]["us_p50"] + rows[3]["us_p50"]
    print(f"  down + its consumer: {before:.2f} us (own finish) -> {after:.2f} us (sum in the consumer)", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--no-times", action="store_true", help="the checks only")
    args = ap.parse_args()
    from fast_decode import provenance

    from edgeprof import hardware_loader

    rec = {"provenance": provenance(hardware_loader.detect(), "cuda"), "checks": checks()}
    rec["checks_passed"] = all(c["passed"] for c in rec["checks"])
    print("ALL PASSED" if rec["checks_passed"] else "SOME FAILED", flush=True)
    if not args.no_times:
        rec["times"] = times(args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
