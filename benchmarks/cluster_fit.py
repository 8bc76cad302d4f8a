"""How many thread-block clusters of edgeprof's cluster kernels the GPU holds at once (issue 12).

A cluster's CTAs must share one GPC, so a launch of C clusters runs in ceil(C / fit) waves, where `fit`
(cudaOccupancyMaxActiveClusters) can be well below the CTA slots over the cluster size. Prints, for this GPU:
- the decode attention kernel (csrc/attn_decode.cu) per head_dim and cluster shape CLxW: clusters at once, CTAs
  per SM, and the waves of a launch with 1, 2, 4 and 8 clusters per kv head at 4 and 8 kv heads;
- the W4 GEMV variant cl (csrc/w4a16_lat.cu) per K splits at the Qwen2.5-7B shapes: clusters at once and waves.

    python benchmarks/cluster_fit.py --out $OUT/cluster_fit.json

sm_90+ only (clusters); needs nvcc for the extension build.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GEMV_SHAPES = [("qkv", 3584, 4608), ("o", 3584, 3584), ("down", 18944, 3584)]


def attention_rows(ext) -> list[dict]:
    rows = []
    for hd in (64, 128):
        for cl in (8, 16):
            for w in (4, 8):
                fit, per_sm = ext.attn_cluster_fit(hd, True, cl, w)
                waves = {f"{per_head}x{nkv}": -(-per_head * nkv // fit) for per_head in (1, 2, 4, 8) for nkv in (4, 8)}
                rows.append({"head_dim": hd, "cluster": cl, "warps": w, "clusters_at_once": fit, "ctas_per_sm": per_sm,
                             "waves": waves})
    return rows


def gemv_rows(ext) -> list[dict]:
    from edgeprof.fast.w4cuda import CL_MAX_SPLITS, cluster_waves, split_plan

    rows = []
    for name, k, n in GEMV_SHAPES:
        for want in range(2, CL_MAX_SPLITS + 1):
            splits, tps = split_plan(k, 128, want)
            if splits == want:  # as the decoder launches each shape: down with SiLU*up, q/k/v with the norm
                rows.append({"shape": name, "k": k, "n": n, "splits": splits, "tiles_per_split": tps,
                             **cluster_waves(n, splits, tps, act=name == "down", norm=name == "qkv", ext=ext)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="JSON of every row")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (9, 0):
        print("cluster_fit: needs an sm_90+ GPU (thread-block clusters)", file=sys.stderr)
        return 2
    from edgeprof.fast import w4cuda

    ext = w4cuda.load_extension()
    if ext is None:
        print(f"cluster_fit: the extension did not build: {w4cuda.build_error()}", file=sys.stderr)
        return 1
    props = torch.cuda.get_device_properties(0)
    rec = {"benchmark": "cluster_fit", "gpu": props.name, "sms": props.multi_processor_count,
           "torch": torch.__version__, "cuda": torch.version.cuda, "command": " ".join(sys.argv),
           "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "attention": attention_rows(ext), "gemv": gemv_rows(ext)}
    print(f"{rec['gpu']}, {rec['sms']} SMs: clusters held at once")
    print("attention  hd CLxW  at once  CTAs/SM  waves at 1/2/4/8 clusters per kv head (4 kv heads)")
    for r in rec["attention"]:
        waves = " ".join(str(r["waves"][f"{p}x4"]) for p in (1, 2, 4, 8))
        print(f"          {r['head_dim']:4d} {r['cluster']:2d}x{r['warps']}  {r['clusters_at_once']:7d}  "
              f"{r['ctas_per_sm']:7d}  {waves}")
    print("gemv cl    shape  splits  clusters  at once  waves")
    for r in rec["gemv"]:
        print(f"          {r['shape']:6s} {r['splits']:6d}  {r['clusters']:8d}  {r['clusters_at_once']:7d}  "
              f"{r['cluster_waves']:5d}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rec, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
