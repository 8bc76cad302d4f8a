#!/usr/bin/env python3
"""CUDA-graph A/B (N fresh sessions) and where-time-goes for hf-eager / hf-graph, on one GPU.

Reproduces the seed paper's CUDA-graph experiment (arXiv 2605.30571: H100 1.259x,
95% CI [1.253, 1.267], N=10) on Qwen2.5-7B shapes with SYNTHETIC random weights, then
profiles one decode step of hf-eager and of hf-graph at the same context:

    python benchmarks/gpu_ab_explain.py --out results/h100-ab-explain

Writes OUT/ab.json and OUT/explain-hf-eager.json, OUT/explain-hf-graph.json (the
formats `edgeprof report OUT` reads) and prints a short table. Budget: about 4-6
minutes on an H100/H200 (each A/B session is a fresh process that builds the 7B
synthetic model once and runs both arms on it; each explain is a fresh process too).

Needs: an NVIDIA GPU, torch, transformers, pyyaml and scipy (for the bootstrap; on an
offline box bring its wheel: ../shared/tools/offline-wheels.sh scipy==1.17.1).
Run from the repository root (or with edgeprof installed).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def preflight(need_scipy: bool) -> None:
    missing = [m for m in ("torch", "transformers", "yaml", *(["scipy"] if need_scipy else []))
               if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"error: missing Python package(s): {', '.join(missing)}. On an offline GPU box, download the "
                 f"wheels with ../shared/tools/offline-wheels.sh (e.g. scipy==1.17.1) and install them first.")
    import torch

    if not torch.cuda.is_available():
        sys.exit("error: no CUDA GPU is visible; this benchmark measures CUDA graphs and needs an NVIDIA GPU")


def run_ab_phase(args: argparse.Namespace, out: Path) -> dict:
    from edgeprof.ab import ABOptions, format_result, run_ab
    from edgeprof.records import atomic_write_text

    _log(f"A/B {args.intervention}: {args.sessions} fresh sessions, {args.model} ctx {args.ctx}, "
         f"{args.steps} steps after {args.warmup} warm-up")
    opts = ABOptions(args.intervention, args.model, args.ctx, sessions=args.sessions, steps=args.steps,
                     warmup=args.warmup, device=args.device, synthetic=True, session_timeout_s=args.session_timeout)
    result = run_ab(opts, progress=_log)
    atomic_write_text(out / "ab.json", json.dumps(result, indent=1) + "\n")
    print(format_result(result), flush=True)
    return result


def explain_worker(args: argparse.Namespace) -> int:
    """One explain in this (fresh) process."""
    from edgeprof.explain import ExplainOptions, format_result, run_explain
    from edgeprof.records import atomic_write_text

    out = Path(args.out)
    r = run_explain(ExplainOptions(model=args.model, backend=args.explain_worker, ctx=args.ctx,
                                   steps=args.explain_steps, warmup=args.warmup, device=args.device, synthetic=True,
                                   trace_out=out / f"trace-{args.explain_worker}.json" if args.trace else None))
    atomic_write_text(out / f"explain-{args.explain_worker}.json", json.dumps(r, indent=1) + "\n")
    print(format_result(r), flush=True)
    return 0


def run_explain_phase(args: argparse.Namespace, out: Path) -> list[dict]:
    results = []
    for backend in args.explain:
        _log(f"explain {backend} at ctx {args.ctx} (fresh process)")
        cmd = [sys.executable, __file__, "--explain-worker", backend, "--out", str(out), "--model", args.model,
               "--ctx", str(args.ctx), "--warmup", str(args.warmup), "--explain-steps", str(args.explain_steps), "--device", args.device]
        if args.trace:
            cmd.append("--trace")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run(cmd, env=env, timeout=args.session_timeout)
        if proc.returncode != 0:
            _log(f"explain {backend} failed (exit {proc.returncode}); see the output above")
            continue
        results.append(json.loads((out / f"explain-{backend}.json").read_text()))
    return results


def summary(ab: dict | None, explains: list[dict]) -> str:
    lines = ["", "=== summary ==="]
    if ab:
        lo, hi = ab["ci"]
        p = (ab.get("paper") or {}).get("h100-sxm") or {}
        lines.append(f"{ab['intervention']} ({ab['control']} -> {ab['treatment']}) on {ab.get('gpu_name')}: "
                     f"{ab['median_ratio']:.3f}x, 95% CI [{lo:.3f}, {hi:.3f}], N={ab['n_sessions']} "
                     f"(paper H100: {p.get('ratio')}x {p.get('ci')})")
        c = [s["control"]["median_wall_ms"] for s in ab["sessions"]]
        t = [s["treatment"]["median_wall_ms"] for s in ab["sessions"]]
        lines.append(f"  median ms/step over sessions: {ab['control']} {sorted(c)[len(c) // 2]:.2f}, "
                     f"{ab['treatment']} {sorted(t)[len(t) // 2]:.2f}")
    if explains:
        lines.append(f"{'backend':<10}{'wall ms':>9}{'busy ms':>9}{'gap ms':>8}{'kern/step':>10}{'gemm ms':>9}"
                     f"{'attn ms':>9}{'elem ms':>9}{'GB/s wall':>10}{'floor frac':>11}")
        for r in explains:
            p, f = r["per_step"], r["floor"]
            cm = p["class_ms"]
            lines.append(f"{r['backend']:<10}{p['wall_ms']:>9.2f}{p['busy_ms']:>9.2f}{p['idle_gap_ms']:>8.2f}"
                         f"{p['kernels']:>10.0f}{cm['gemv/gemm']:>9.2f}{cm['attention']:>9.2f}"
                         f"{cm['norm/elementwise']:>9.2f}{f['achieved_gbs_wall']:>10.0f}{f['fraction_of_wall']:>11.1%}")
            lines.append(f"{'':<10}(unprofiled step {r['unprofiled_wall_ms']['median']:.2f} ms)")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output directory (ab.json, explain-*.json)")
    ap.add_argument("--model", default="qwen2.5-7b", help="preset, synthetic weights (default qwen2.5-7b)")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--explain-steps", type=int, default=10, help="profiled steps per explain (default 10)")
    ap.add_argument("--session-timeout", type=float, default=240.0)
    ap.add_argument("--skip-ab", action="store_true")
    ap.add_argument("--skip-explain", action="store_true")
    ap.add_argument("--trace", action="store_true", help="keep the chrome traces of the explain runs")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="check this script's plumbing on a CPU (tiny-test, cpu-smoke A/B, 3 sessions); no finding")
    ap.add_argument("--explain-worker", metavar="BACKEND", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.intervention, args.explain = "cuda-graphs", ("hf-eager", "hf-graph")
    if args.cpu_smoke:
        args.intervention, args.explain, args.device = "cpu-smoke", ("hf-eager", "hf-static"), "cpu"
        args.model, args.ctx, args.sessions, args.steps, args.warmup, args.explain_steps = "tiny-test", 64, 3, 6, 2, 3
    if args.explain_worker:
        return explain_worker(args)

    if not args.cpu_smoke:
        preflight(need_scipy=not args.skip_ab)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ab = None if args.skip_ab else run_ab_phase(args, out)
    t_ab = time.perf_counter() - t0
    explains = [] if args.skip_explain else run_explain_phase(args, out)
    print(summary(ab, explains))
    _log(f"done in {time.perf_counter() - t0:.0f} s (A/B {t_ab:.0f} s); results in {out}; "
         f"HTML: edgeprof report {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
