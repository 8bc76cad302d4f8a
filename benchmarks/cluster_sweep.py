"""A sweep on one GPU vs the same sweep on a Dask cluster of N GPUs: wall time and scaling.

    python benchmarks/cluster_sweep.py --out $OUT                       # 16 cells of paper.yaml, 2 GPUs
    python benchmarks/cluster_sweep.py --config configs/sweeps/ci-tiny.yaml --device cpu --out /tmp/cs  # CPU check

Both runs use the same per-cell runner (a fresh `edgeprof bench` process per cell,
`sweep.run_isolated`), the same cells and the same steps; only the pool differs:
  cluster: `edgeprof.cluster.run_cluster_sweep` on a LocalCluster with one worker per GPU (GPU=1);
  serial:  `edgeprof.sweep.run_sweep(..., isolate=True)` on GPU 0 alone.
Scaling efficiency = (serial wall / cluster wall) / N. The cells are short (few steps), so most
of a cell is process start, model build and warm-up: the figure measures the pool, not decode.
Checked before the table: every cell ok in both runs, each cell exactly once, cells spread over
every GPU. Writes cluster_sweep.json plus both results folders under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeprof.cluster import connect, run_cluster_sweep  # noqa: E402
from edgeprof.records import read_jsonl  # noqa: E402
from edgeprof.sweep import SweepOptions, load_config, run_sweep  # noqa: E402


def subset(config_path: str, cells: int, steps: int, warmup: int):
    cfg = load_config(config_path)
    chosen = [replace(c, steps=steps, warmup=warmup) for c in cfg.cells[:cells]]
    return replace(cfg, cells=chosen, name=f"{cfg.name}-subset{len(chosen)}")


def check(records: list[dict], cfg, what: str) -> None:
    keys = [(r["sweep_cell"]["model"], r["sweep_cell"]["backend"], r["sweep_cell"]["ctx"]) for r in records]
    assert len(keys) == len(set(keys)) == len(cfg.cells), f"{what}: {len(keys)} records for {len(cfg.cells)} cells"
    bad = [(k, r.get("error")) for k, r in zip(keys, records, strict=True) if r["status"] != "ok"]
    assert not bad, f"{what}: failed cells {bad}"


def p50(r: dict) -> float:
    return r["stats"]["wall"]["p50"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "sweeps" / "paper.yaml"))
    ap.add_argument("--cells", type=int, default=16, help="first N cells of the config (default 16)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--gpus", type=int, default=2, help="workers of the cluster run (one per GPU)")
    ap.add_argument("--device", default=None, help="cuda | cpu (default: the config's)")
    ap.add_argument("--cell-timeout", type=float, default=150.0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    cfg = subset(args.config, args.cells, args.steps, args.warmup)
    device = args.device or cfg.device
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"config": args.config, "cells": len(cfg.cells), "steps": args.steps, "warmup": args.warmup,
                     "workers": args.gpus, "device": device, "host": socket.gethostname(),
                     "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}

    def opts(sub: str) -> SweepOptions:
        return SweepOptions(out=args.out / sub, device=device, synthetic=cfg.synthetic, isolate=True,
                            cell_timeout_s=args.cell_timeout, progress=True, plots=False)

    def save() -> None:
        (args.out / "cluster_sweep.json").write_text(json.dumps(summary, indent=2) + "\n")

    # 1. the cluster: one worker per GPU (the parent's CUDA_VISIBLE_DEVICES lists them all)
    t0 = time.perf_counter()
    with connect("local", workers=args.gpus, device=device) as client:
        started = time.perf_counter()
        run_cluster_sweep(cfg, opts("cluster"), client)
        cluster_s = time.perf_counter() - started
    cluster = read_jsonl(args.out / "cluster" / "cells.jsonl")
    check(cluster, cfg, "cluster")
    summary.update(cluster_wall_s=round(cluster_s, 2), cluster_start_s=round(started - t0, 2),
                   cells_per_gpu=dict(Counter(str(r["gpu_index"]) for r in cluster)),
                   hosts=sorted({r["host"] for r in cluster}))
    save()

    # 2. serial on GPU 0 alone, same runner
    if device != "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = "0"
    started = time.perf_counter()
    run_sweep(cfg, opts("serial"))
    serial_s = time.perf_counter() - started
    serial = read_jsonl(args.out / "serial" / "cells.jsonl")
    check(serial, cfg, "serial")
    speedup = serial_s / cluster_s
    by_key = {json.dumps(r["sweep_cell"], sort_keys=True): r for r in serial}
    ratios = [p50(r) / p50(by_key[json.dumps(r["sweep_cell"], sort_keys=True)]) for r in cluster]
    summary.update(serial_wall_s=round(serial_s, 2), speedup=round(speedup, 3),
                   scaling_efficiency=round(speedup / args.gpus, 3),
                   gpu_name=serial[0].get("gpu_name"), versions=serial[0].get("versions"),
                   p50_cluster_over_serial_median=round(statistics.median(ratios), 3),
                   p50_cluster_over_serial_range=[round(min(ratios), 3), round(max(ratios), 3)],
                   cells_detail=[{**r["sweep_cell"], "gpu_index": r["gpu_index"], "cluster_cell_s": r["sweep"]["cell_s"],
                                  "serial_cell_s": by_key[json.dumps(r["sweep_cell"], sort_keys=True)]["sweep"]["cell_s"],
                                  "cluster_p50_ms": round(p50(r), 3),
                                  "serial_p50_ms": round(p50(by_key[json.dumps(r["sweep_cell"], sort_keys=True)]), 3)}
                                 for r in cluster])
    save()
    print(f"\n{'cell':48} {'gpu':>3} {'clus s':>7} {'ser s':>7} {'clus p50':>9} {'ser p50':>9}")
    for c in summary["cells_detail"]:
        name = f"{c['model']} / {c['backend']} / {c['ctx']}"
        print(f"{name:48} {c['gpu_index']!s:>3} {c['cluster_cell_s']:7.1f} {c['serial_cell_s']:7.1f} "
              f"{c['cluster_p50_ms']:9.2f} {c['serial_p50_ms']:9.2f}")
    print(f"\n{len(cfg.cells)} cells ({args.steps} steps, {args.warmup} warm-up) on {summary['gpu_name'] or device}: "
          f"serial (1 GPU) {serial_s:.1f} s, cluster ({args.gpus} workers) {cluster_s:.1f} s "
          f"(+{summary['cluster_start_s']:.1f} s cluster start), speedup {speedup:.2f}x, "
          f"scaling efficiency {speedup / args.gpus:.2f}; cells per GPU {summary['cells_per_gpu']}; "
          f"cluster/serial p50 median {summary['p50_cluster_over_serial_median']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
