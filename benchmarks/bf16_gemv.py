"""edgeprof's bf16 GEMV (edgeprof/fast/csrc/bf16_gemv.cu) against cuBLAS at batch 1, per layer shape:
each variant checked against float64 first (a failing one is FAILED and not timed), then timed as a
chain of weight copies larger than L2 in one CUDA graph (int4_gemv.py's method and copy bandwidth).

    python benchmarks/bf16_gemv.py --out $OUT/bf16.json

Prints the per-shape table and the `faster` entries for the card's `bf16` list in edgeprof/data/gemv_plans.yaml:
the shapes where the best passing variant beat cuBLAS in this run (a chain of one shape: r158 found the step
disagreeing on two of them, so a plan entry is worth a step A/B, benchmarks/step_ab.py, before it ships).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F
from int4_gemv import KERNEL_SHAPES, _copies, _row, copy_bandwidth

from edgeprof.fast.bf16cuda import VARIANTS, Bf16CudaLinear

REL_BOUND = 5e-3  # max-abs / max vs float64: bf16 output rounding (cuBLAS itself: 2.3-3.1e-3 on the H200)
# bf16-only shapes beside the W4 kernel's (KERNEL_SHAPES), with --all-shapes: the decoder's head stays bf16 in every
# format, and Llama's is the one large head KERNEL_SHAPES lacks
HEAD_SHAPES = [("llama-3.1-8b", "lm_head", 4096, 128256)]


def shape_rows(model: str, name: str, k: int, n: int, variants: tuple[str, ...], copy_bw: float,
               repeats: int) -> list[dict]:
    g = torch.Generator(device="cuda").manual_seed(0)
    w = (torch.randn(n, k, device="cuda", generator=g) * 0.02).to(torch.bfloat16)  # [N, K]
    b = (torch.randn(n, device="cuda", generator=g) * 0.1).to(torch.bfloat16) if name == "qkv" else None
    x = torch.randn(1, k, device="cuda", generator=g).to(torch.bfloat16)  # [1, K]
    ref = x.double() @ w.double().t() + (0 if b is None else b.double())  # [1, N]
    copies = [w] + [w.clone() for _ in range(_copies(n * k * 2) - 1)]
    rows = [_row(name, k, n, "cublas-bf16", [lambda wi=wi: F.linear(x, wi, b) for wi in copies], n * k * 2,
                 F.linear(x, w, b), ref, repeats)]
    for v in variants:
        layers = [Bf16CudaLinear(wi, b, v) for wi in copies]
        out = layers[0](x)
        err = float((out.double() - ref).abs().max() / ref.abs().max())
        if err > REL_BOUND:
            rows.append({"shape": name, "k": k, "n": n, "kernel": f"edgeprof-bf16 {v}", "rel_err": err,
                         "status": f"FAILED (rel {err:.1e} > {REL_BOUND:.0e})"})
            continue
        rows.append(_row(name, k, n, f"edgeprof-bf16 {v}", [lambda li=li: li(x) for li in layers], n * k * 2, out,
                         ref, repeats))
    del copies
    torch.cuda.empty_cache()
    for r in rows:
        r["model"] = model
        if r.get("status") == "ok":
            r["frac_copy_bw"] = r["gb_per_s"] * 1e9 / copy_bw
    return rows


def faster_entries(rows: list[dict]) -> list[dict]:
    """Per (model, shape): the best passing edgeprof variant if it beat cuBLAS in this run."""
    out = []
    for key in dict.fromkeys((r["model"], r["shape"]) for r in rows):
        mine = [r for r in rows if (r["model"], r["shape"]) == key and r.get("status") == "ok"]
        cub = next((r for r in mine if r["kernel"] == "cublas-bf16"), None)
        ours = [r for r in mine if r["kernel"].startswith("edgeprof")]
        if not cub or not ours:
            continue
        top = min(ours, key=lambda r: r["us_p50"])
        if top["us_p50"] < cub["us_p50"]:
            out.append({"model": key[0], "shape": key[1], "n": top["n"], "k": top["k"],
                        "variant": top["kernel"].split()[-1], "us": round(top["us_p50"], 2),
                        "cublas_us": round(cub["us_p50"], 2), "speedup": round(cub["us_p50"] / top["us_p50"], 3)})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--all-shapes", action="store_true", help="Llama/Mistral shapes too")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    variants = tuple(v for v in a.variants.split(",") if v)
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise SystemExit(f"--variants: {bad} not in {','.join(VARIANTS)}")
    bw = copy_bandwidth()
    gpu = torch.cuda.get_device_name()
    rows = []
    for model, name, k, n in KERNEL_SHAPES + (HEAD_SHAPES if a.all_shapes else []):
        if model == "qwen2.5-7b" or a.all_shapes:
            rows += shape_rows(model, name, k, n, variants, bw, a.repeats)
    print(f"bf16 GEMV per shape ({gpu}; copy bw {bw / 1e12:.3f} TB/s measured in this run)")
    print(f"{'model':12s} {'shape':8s} {'kernel':20s} {'rel err':>8s} {'us':>8s} {'GB/s':>7s} {'of copy':>7s}")
    for r in rows:
        if r.get("status") != "ok":
            print(f"{r['model']:12s} {r['shape']:8s} {r['kernel']:20s} {r['status'][:60]}")
            continue
        print(f"{r['model']:12s} {r['shape']:8s} {r['kernel']:20s} {r['rel_err']:8.1e} {r['us_p50']:8.2f} "
              f"{r['gb_per_s']:7.0f} {r['frac_copy_bw']:7.3f}")
    faster = faster_entries(rows)
    print("faster than cuBLAS in this run (entries for the card's bf16 list in edgeprof/data/gemv_plans.yaml):")
    for f in faster:
        print(f"  - {{n: {f['n']}, k: {f['k']}, variant: {f['variant']}}}  # {f['model']} {f['shape']} "
              f"{f['us']} us vs cuBLAS {f['cublas_us']} us (x{f['speedup']})")
    if a.out:
        rec = {"benchmark": "bf16_gemv", "gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda,
               "command": " ".join(sys.argv), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "copy_bw_bytes_per_s": bw, "rows": rows, "faster": faster}
        with open(a.out, "w") as fh:
            json.dump(rec, fh, indent=1)
    return 0 if all(r.get("status") == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
