"""Batch-1 int4 GEMV kernels at the Qwen2.5-7B layer shapes: cuBLAS bf16 vs torch's tinygemm
vs gemlite (Triton) vs edgeprof's own Triton W4 GEMV at several tiles, each checked against the
exact dequantized weights first.

Every kernel gets enough weight copies to exceed the L2 cache several times, chained in one
CUDA graph (`edgeprof.timing.time_graph`), so each call streams its weights from HBM as in a
decode step. Prints us per call and the bytes moved per second (weights + scales).

    python benchmarks/int4_gemv.py --out results/h100/int4_gemv.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from w4gemv import W4Linear, W4LinearSplitK  # beside this script: measured, used by no backend

from edgeprof.fast.int4 import INT4_KERNELS, dequantize, quantize_rtn
from edgeprof.timing import time_graph

# (name, in K, out N) of one Qwen2.5-7B layer with edgeprof-fast's fusions
SHAPES = [("qkv", 3584, 4608), ("o", 3584, 3584), ("gate_up", 3584, 37888), ("down", 18944, 3584)]
GROUP = 128
SPLITK_CONFIGS = [(32, 256, 1, 4), (32, 256, 2, 4), (64, 256, 2, 4), (16, 512, 1, 4), (32, 512, 1, 4),
                  (64, 128, 4, 4), (128, 128, 2, 8), (16, 256, 4, 2), (64, 512, 1, 8), (128, 256, 1, 8)]
W4_CONFIGS = [(8, 256, 4), (16, 256, 4), (16, 512, 4), (32, 256, 4), (32, 512, 8), (64, 256, 8), (8, 512, 2),
              (4, 1024, 2), (16, 1024, 8), (2, 2048, 4)]
STREAM_BYTES = 400 << 20  # copies per kernel: at least this many weight bytes (H100 L2: 50 MB)


def _copies(nbytes_one: int) -> int:
    return max(2, -(-STREAM_BYTES // nbytes_one))


def bench_shape(name: str, k: int, n: int, repeats: int) -> list[dict]:
    g = torch.Generator(device="cuda").manual_seed(0)
    w = (torch.randn(n, k, device="cuda", generator=g) * 0.02).to(torch.bfloat16)
    x = torch.randn(1, k, device="cuda", generator=g).to(torch.bfloat16)
    q, z, s = quantize_rtn(w, GROUP)
    s = s.to(torch.bfloat16).float()
    ref = (x.float() @ dequantize(q, z, s, GROUP).t())  # [1, N] exact int4 function in fp32
    rows = []
    dense_bytes = n * k * 2
    dense = [w] + [w.clone() for _ in range(_copies(dense_bytes) - 1)]
    rows.append(_row(name, k, n, "cublas-bf16", [lambda wi=wi: F.linear(x, wi) for wi in dense],
                     dense_bytes, F.linear(x, w.to(torch.bfloat16)), x.float() @ w.float().t(), repeats))
    del dense
    builders = dict(INT4_KERNELS)
    for bn, bk, nw in W4_CONFIGS:  # edgeprof's Triton GEMV (benchmarks/w4gemv.py) at several tile shapes
        if k % bk == 0:
            builders[f"triton-{bn}x{bk}w{nw}"] = lambda q, z, s, g, bn=bn, bk=bk, nw=nw: W4Linear(q, s, g, bn, bk, nw)
    for bn, bk, it, nw in SPLITK_CONFIGS:
        if k % bk == 0:
            builders[f"tritonsk-{bn}x{bk}i{it}w{nw}"] = (
                lambda q, z, s, g, bn=bn, bk=bk, it=it, nw=nw: W4LinearSplitK(q, s, g, bn, bk, it, nw))
    for kernel, build in builders.items():
        try:
            first = build(q, z, s, GROUP)
            first(x)  # compiles
        except Exception as exc:  # not installed / unsupported / does not compile: recorded, not fatal
            rows.append({"shape": name, "k": k, "n": n, "kernel": kernel, "status": f"{type(exc).__name__}: {exc}"})
            continue
        layers = [first] + [build(q, z, s, GROUP) for _ in range(_copies(first.nbytes) - 1)]
        rows.append(_row(name, k, n, kernel, [lambda li=li: li(x) for li in layers], first.nbytes, first(x), ref,
                         repeats))
        del layers
    return rows


def _row(name, k, n, kernel, calls, nbytes, out, ref, repeats) -> dict:
    err = float((out.float() - ref).abs().max() / ref.abs().max())
    try:
        st = time_graph(calls, repeats)
    except Exception as exc:  # e.g. a kernel that cannot be captured in a CUDA graph
        return {"shape": name, "k": k, "n": n, "kernel": kernel, "status": f"timing failed: {exc}", "rel_err": err}
    return {"shape": name, "k": k, "n": n, "kernel": kernel, "status": "ok", "rel_err": err, "bytes": nbytes,
            "copies": len(calls), "us_p50": st.p50 * 1e3, "us_p90": st.p90 * 1e3,
            "gb_per_s": nbytes / (st.p50 * 1e-3) / 1e9}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("int4_gemv needs an NVIDIA GPU", file=sys.stderr)
        return 2
    rows = [r for name, k, n in SHAPES for r in bench_shape(name, k, n, args.repeats)]
    print(f"{'shape':<8} {'kernel':<22} {'rel err':>8} {'us/call':>8} {'GB/s':>7}")
    for r in rows:
        if r["status"] != "ok":
            print(f"{r['shape']:<8} {r['kernel']:<22} {r['status'][:80]}")
            continue
        print(f"{r['shape']:<8} {r['kernel']:<22} {r['rel_err']:8.4f} {r['us_p50']:8.1f} {r['gb_per_s']:7.0f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        rec = {"benchmark": "int4_gemv", "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
               "command": " ".join(sys.argv), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows}
        args.out.write_text(json.dumps(rec, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
