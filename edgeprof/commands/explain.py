"""`edgeprof explain`: where one decode step's time goes (torch profiler)."""

from __future__ import annotations

import argparse
import json

HELP = "profile decode steps: GPU-busy vs wall, host launch gap, kernels/step, time and bandwidth per kernel class"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="M", help="preset (synthetic weights), 'default', dir, .gguf")
    p.add_argument("--backend", required=True, metavar="B", help="any backend of `edgeprof backends`")
    p.add_argument("--ctx", type=int, required=True, metavar="N", help="context length in tokens")
    p.add_argument("--steps", type=int, default=10, help="profiled steps, reported as per-step means (default 10)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    p.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when visible")
    p.add_argument("--gpu", metavar="G", help="GPU catalog key for the bandwidth (default: detected)")
    p.add_argument("--synthetic", action="store_true", default=None, help="force synthetic weights")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--out", metavar="FILE", help="write the JSON here (DIR/explain-<backend>.json for the report)")
    p.add_argument("--trace", metavar="FILE", help="also keep the profiler's chrome trace (open in Perfetto)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edgeprof.explain import ExplainOptions, format_result, run_explain
    from edgeprof.records import atomic_write_text

    opts = ExplainOptions(model=args.model, backend=args.backend, ctx=args.ctx, steps=args.steps,
                          warmup=args.warmup, device=args.device, gpu=args.gpu, synthetic=args.synthetic,
                          trace_out=Path(args.trace) if args.trace else None)
    result = run_explain(opts)
    text = json.dumps(result, indent=1)
    if args.out:
        atomic_write_text(Path(args.out), text + "\n")
    print(text if args.json else format_result(result))
    return 0
