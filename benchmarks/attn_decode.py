"""Decode attention of edgeprof-fast (edgeprof/fast/kernels.py, flash-decoding split + reduce) at batch 1:
the split plans side by side, each checked against float64 SDPA first, then timed as one layer after
another (n_layers distinct KV caches, together larger than L2) in one CUDA graph.

    python benchmarks/attn_decode.py --model qwen2.5-7b --ctx 2048,16384 --out $OUT/attn.json

Plans are $EDGEPROF_ATTN specs (`kernels.attn_plan`): "chunk:256" is the first version (fixed
256-token chunks), "" the adaptive default (>= 128 tokens per split, about one CTA per SM); r4 measured an
earlier adaptive rule (64-token minimum, two CTAs per SM), which "min:64,splits:128" reproduces. (r5 ran
with a default --plans that split that spec at its comma: it measured "min:64" twice and "splits:128".) Cache size = the largest ctx + 64, as the step benchmark
sizes it, so the small ctx runs in a cache sized for the large one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

from edgeprof.fast.kernels import TritonOps, attn_plan
from edgeprof.shape_loader import require_shape
from edgeprof.timing import time_graph

PLANS = ("chunk:256", "", "min:64", "min:256", "min:64,splits:128", "splits:32", "block:32", "live:64", "live:32")
REL_BOUND = 2e-2  # max-abs / max: bf16 output (~4e-3) plus tf32 q.k products (Triton's fp32 dot)


def run(model: str, ctxs: list[int], plans: tuple[str, ...], repeats: int) -> dict:
    s = require_shape(model)
    nh, nkv, hd, L = s.n_heads, s.n_kv_heads, s.head_dim, s.n_layers
    max_ctx = max(ctxs) + 64
    dev, dt = "cuda", torch.bfloat16
    g = torch.Generator(device=dev).manual_seed(0)
    cos = torch.ones(max_ctx, hd, device=dev, dtype=dt)
    sin = torch.zeros(max_ctx, hd, device=dev, dtype=dt)
    kc = [torch.randn(nkv, max_ctx, hd, device=dev, dtype=dt, generator=g) for _ in range(L)]
    vc = [torch.randn(nkv, max_ctx, hd, device=dev, dtype=dt, generator=g) for _ in range(L)]
    q = torch.randn(nh * hd, device=dev, dtype=dt, generator=g)
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    rows = []
    for ctx in ctxs:
        pos = torch.tensor([ctx - 1], device=dev)  # ctx live tokens, the current one included
        ref = F.scaled_dot_product_attention(q.view(1, nh, 1, hd).double(), kc[0][None, :, :ctx].double(),
                                             vc[0][None, :, :ctx].double(), enable_gqa=True).reshape(1, -1)
        for spec in plans:
            chunk, block, splits, live = attn_plan(max_ctx, nkv, sms, spec)
            os.environ["EDGEPROF_ATTN"] = spec
            ops = TritonOps(nh, nkv, hd, s.norm_eps, cos, sin, max_ctx, s.hidden, s.intermediate)
            err = float((ops.attention(q, pos, kc[0], vc[0]).double() - ref).abs().max() / ref.abs().max())
            row = {"model": model, "ctx": ctx, "max_ctx": max_ctx, "plan": spec or "adaptive", "chunk": chunk,
                   "block_n": block, "splits": splits, "live": live, "rel_err": err, "passed": err < REL_BOUND}
            if row["passed"]:
                st = time_graph([lambda i=i, o=ops, p=pos: o.attention(q, p, kc[i], vc[i]) for i in range(L)], repeats)
                kv_bytes = 2 * nkv * ctx * hd * 2
                row.update(us_per_layer_p50=st.p50 * 1e3, ms_per_step=st.p50 * L,
                           gb_per_s=kv_bytes / (st.p50 * 1e-3) / 1e9)
            rows.append(row)
            # > 0 fixed; live: a power of two of blocks for live..2*live splits; else adaptive with that minimum
            ctext = str(chunk) if chunk > 0 else (f"~{live}sp" if live else f">={-chunk}")
            print(f"{model} ctx {ctx:6d} {row['plan']:18s} chunk {ctext:>6s} block {block:3d} splits {splits:4d} "
                  f"err {err:.1e} {'PASS' if row['passed'] else 'FAIL'} "
                  + (f"{row['us_per_layer_p50']:7.2f} us/layer {row['ms_per_step']:.3f} ms/step "
                     f"{row['gb_per_s']:6.0f} GB/s" if row["passed"] else ""), flush=True)
        os.environ.pop("EDGEPROF_ATTN", None)
    return {"benchmark": "attn_decode", "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
            "command": " ".join(sys.argv), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-7b")
    ap.add_argument("--ctx", default="2048,16384")
    ap.add_argument("--plans", default=";".join(p or "adaptive" for p in PLANS),
                    help="';'-separated $EDGEPROF_ATTN specs ('adaptive' = the default)")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    plans = tuple("" if p == "adaptive" else p for p in a.plans.split(";"))
    rec = run(a.model, [int(c) for c in a.ctx.split(",")], plans, a.repeats)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rec, f, indent=1)
    return 0 if all(r["passed"] for r in rec["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
