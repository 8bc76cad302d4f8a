#!/usr/bin/env python3
"""Calibration and validation data for `edgeprof predict`, on one GPU, in one command.

    PYTHONPATH=.:$PYTHONPATH python3 benchmarks/predict_validate.py --out $OUT/predict --budget-s 330

1. **Calibration sweep** (calibration.json): device time per launch vs bytes per launch
   for bf16 GEMVs (M=1, K=3584, N from 256 to 152064: the Qwen2.5-7B projection sizes and
   smaller) and device-to-device copies (64 KiB to 1 GiB). Each size is launched R times
   inside one CUDA graph, timed with CUDA events, so host launch cost is excluded. A
   least-squares fit t = t0 + bytes / (a * datasheet BW) over the GEMVs gives the fixed
   per-kernel cost t0 and the attainable bandwidth fraction a that the model uses.
2. **Explain profiles** (explain.jsonl, one record per cell): `edgeprof explain` (the
   exact, per-kernel records) for hf-eager, hf-graph, hf-compile, torchao-int4,
   edgeprof-fast, edgeprof-fast-int4 at ctx 2048 and 16384, Qwen2.5-7B shapes with
   SYNTHETIC weights. Cells past --budget-s are skipped and listed.

Prints a table last. On a CPU (`--device cpu --model tiny-test --backends hf-eager
--ctx 48`) it runs the explain part only, to test the script.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BACKENDS = "edgeprof-fast,edgeprof-fast-int4,hf-graph,hf-eager,torchao-int4,hf-compile"
GEMV_N = (256, 1024, 3584, 4608, 18944, 37888, 152064)
COPY_BYTES = (1 << 16, 1 << 18, 1 << 20, 1 << 22, 1 << 24, 1 << 26, 1 << 28, 1 << 30)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def time_in_graph(fn, reps: int) -> float:
    """Device ms per launch of fn, from `reps` launches captured in one CUDA graph."""
    import torch

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(reps):
            fn()
    g.replay()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        best = min(best, a.elapsed_time(b) / reps)
    return best


def sweep(peak_gbs: float) -> dict:
    import torch

    rows = []
    K = 3584
    x = torch.randn(1, K, device="cuda", dtype=torch.bfloat16)
    for n in GEMV_N:
        w = torch.randn(n, K, device="cuda", dtype=torch.bfloat16)
        reps = max(8, min(200, int(2e9 / (n * K * 2))))
        ms = time_in_graph(lambda w=w: torch.nn.functional.linear(x, w), reps)
        nbytes = n * K * 2 + K * 2 + n * 2
        rows.append({"kind": "gemv_bf16", "k": K, "n": n, "bytes": nbytes, "ms": ms,
                     "gbs": nbytes / (ms / 1e3) / 1e9})
        del w
    for nbytes in COPY_BYTES:
        a = torch.empty(nbytes // 2, device="cuda", dtype=torch.bfloat16)
        b = torch.empty_like(a)
        reps = max(4, min(200, int(4e9 / nbytes)))
        ms = time_in_graph(lambda a=a, b=b: b.copy_(a), reps)
        rows.append({"kind": "copy", "bytes": 2 * nbytes, "ms": ms, "gbs": 2 * nbytes / (ms / 1e3) / 1e9})
        del a, b
    torch.cuda.empty_cache()
    return {"rows": rows, "fit_gemv": fit(rows, "gemv_bf16", peak_gbs), "fit_copy": fit(rows, "copy", peak_gbs)}


def fit(rows: list[dict], kind: str, peak_gbs: float) -> dict:
    """Least squares t = t0 + bytes * s; a = 1 / (s * peak)."""
    pts = [(r["bytes"], r["ms"]) for r in rows if r["kind"] == kind]
    n = len(pts)
    mx, my = sum(p[0] for p in pts) / n, sum(p[1] for p in pts) / n
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    s = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx
    t0 = my - s * mx
    a = 1 / (s / 1e3 * peak_gbs * 1e9)
    fractions = [r["gbs"] / peak_gbs for r in rows if r["kind"] == kind and r["bytes"] >= 2e7]
    return {"fixed_us": t0 * 1e3, "attainable_fraction": a, "large_fractions": fractions}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="qwen2.5-7b")
    ap.add_argument("--backends", default=BACKENDS)
    ap.add_argument("--ctx", default="2048,16384")
    ap.add_argument("--device", default=None)
    ap.add_argument("--budget-s", type=float, default=330)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--no-calibration", action="store_true", help="explain profiles only (calibration done before)")
    args = ap.parse_args()
    t_start = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "explain.jsonl").unlink(missing_ok=True)

    from edgeprof import hardware_loader as hardware
    from edgeprof.explain import ExplainOptions, run_explain

    det = hardware.detect()
    summary: dict = {"gpu": det.spec.key, "gpu_name": det.name, "driver": det.driver, "cells": [], "skipped": []}
    cuda = det.device == "cuda" and args.device != "cpu"
    if cuda and not args.no_calibration:
        log(f"calibration sweep on {det.name}")
        summary["calibration"] = sweep(det.spec.bandwidth_gbs)
        (out / "calibration.json").write_text(json.dumps({**summary["calibration"], "gpu": det.spec.key,
                                                          "gpu_name": det.name}, indent=1))
    for backend in args.backends.split(","):
        for ctx in (int(c) for c in args.ctx.split(",")):
            if time.monotonic() - t_start > args.budget_s:
                summary["skipped"].append(f"{backend}@{ctx}")
                continue
            log(f"explain {backend} ctx {ctx}")
            t0 = time.monotonic()
            try:
                r = run_explain(ExplainOptions(model=args.model, backend=backend, ctx=ctx, steps=args.steps,
                                               warmup=3, device=args.device, synthetic=True))
            except Exception as exc:  # keep going: one failing backend must not lose the rest
                log(f"  failed: {exc!r}")
                summary["cells"].append({"backend": backend, "ctx": ctx, "error": repr(exc)})
                continue
            # One JSONL holds every profile: the device tool returns a limited number of files
            # (the first run lost 8 of 12 per-cell files to that limit).
            with open(out / "explain.jsonl", "a") as fh:
                fh.write(json.dumps({k: v for k, v in r.items() if k != "steps"}) + "\n")
            e = r["exact"]
            summary["cells"].append({"backend": backend, "ctx": ctx, "step_ms": e["step_ms"],
                                     "busy_ms": e["busy_ms"], "host_gap_ms": e["host_gap_ms"],
                                     "profiler_overhead_ms": e["profiler_overhead_ms"],
                                     "kernels": r["per_step"]["kernels"], "class_ms": e["class_ms"],
                                     "class_kernels": r["per_step"]["class_kernels"],
                                     "seconds": time.monotonic() - t0})
            _free()
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print_table(summary)
    return 0


def _free() -> None:
    from edgeprof.backends.base import free_memory

    free_memory()


def print_table(summary: dict) -> None:
    cal = summary.get("calibration")
    if cal:
        print(f"calibration on {summary['gpu_name']}:")
        for r in cal["rows"]:
            print(f"  {r['kind']:<10}{r['bytes'] / 1e6:>12.3f} MB {r['ms'] * 1e3:>10.2f} us {r['gbs']:>9.1f} GB/s")
        for k in ("fit_gemv", "fit_copy"):
            f = cal[k]
            print(f"  {k}: fixed {f['fixed_us']:.2f} us, attainable {f['attainable_fraction']:.3f} of datasheet")
    print(f"{'backend':<20}{'ctx':>6}{'step ms':>9}{'busy':>8}{'host gap':>9}{'prof +ms':>9}{'kernels':>8}")
    for c in summary["cells"]:
        if "error" in c:
            print(f"{c['backend']:<20}{c['ctx']:>6}  FAILED {c['error'][:80]}")
            continue
        print(f"{c['backend']:<20}{c['ctx']:>6}{c['step_ms']:>9.3f}{c['busy_ms']:>8.3f}{c['host_gap_ms']:>9.3f}"
              f"{c['profiler_overhead_ms']:>9.3f}{c['kernels']:>8.0f}")
    if summary["skipped"]:
        print("skipped (budget): " + ", ".join(summary["skipped"]))


if __name__ == "__main__":
    sys.exit(main())
