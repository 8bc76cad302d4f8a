"""`edgeprof bench`: measure one decode cell (model x backend x ctx) against the floor.

Checks the backend's kernels against a reference on its own dequantized weights at positions
near ctx first (kernel correctness, `edgeprof.correctness`), fills the
KV cache to ctx-1 tokens, warms up, times `--steps` decode steps and prints one line
(or the full record with --json), then measures quantization quality on real weights
(`edgeprof.quality`). `--out FILE` writes the record atomically.
"""

from __future__ import annotations

import argparse

HELP = "measure one decode cell (model x backend x ctx): per-step latency, floor, kernel correctness, quality"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from edgeprof.backends.registry import names

    p.add_argument("--model", required=True, metavar="M",
                   help="preset (synthetic random weights, e.g. qwen2.5-7b, tiny-test), 'default' (real "
                        "SmolLM2-135M-Instruct), a local HF directory, a .gguf file or a hub id")
    p.add_argument("--backend", required=True, metavar="B", help=f"one of: {', '.join(names())} (see `edgeprof backends`)")
    p.add_argument("--ctx", required=True, type=int, metavar="N", help="context length in tokens")
    p.add_argument("--steps", type=int, default=30, help="timed decode steps (default 30, the paper's protocol)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before timing (default 5)")
    p.add_argument("--device", metavar="D", help="cuda, cuda:N or cpu (default: cuda when visible)")
    p.add_argument("--gpu", metavar="G", help="catalog key for the floor (default: the detected GPU / host CPU)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--synthetic", dest="synthetic", action="store_const", const=True, default=None,
                     help="force random weights of the model's shape (e.g. synthetic smollm2-135m)")
    src.add_argument("--real", dest="synthetic", action="store_const", const=False,
                     help="for a preset: load its real checkpoint from the hub id in configs/models.yaml")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="time the backend even if it fails kernel correctness (the record stays flagged)")
    p.add_argument("--no-gate", action="store_true", help="skip the kernel-correctness check (the record says so)")
    p.add_argument("--no-quality", action="store_true",
                   help="skip the quality measurement (perplexity, agreement with bf16 on real weights)")
    p.add_argument("--quality-tokens", type=int, default=512, metavar="N",
                   help="tokens of the held-out text scored for quality (default 512)")
    p.add_argument("--json", action="store_true", help="print the full JSON record")
    p.add_argument("--out", metavar="FILE", help="write the JSON record to FILE (atomically)")
    add_long_run_metrics_arguments(p)


def add_long_run_metrics_arguments(p: argparse.ArgumentParser) -> None:
    """--metrics-port/-host/-allow-remote (edgeprof.metrics) plus --metrics-linger-s; shared with sweep."""
    from edgeprof.metrics import add_metrics_arguments

    add_metrics_arguments(p)
    p.add_argument("--metrics-linger-s", type=float, default=0.0, metavar="S",
                   help="with --metrics-port: keep the endpoint up S seconds after the run, so Prometheus "
                        "can scrape the last cell (default 0)")


def run(args: argparse.Namespace) -> int:
    import shlex
    import sys

    from edgeprof.bench import CellMetrics, CellSpec, cell_labels, print_record, run_cell
    from edgeprof.metrics import publisher_from_args
    from edgeprof.records import write_json_atomic

    spec = CellSpec(model=args.model, backend=args.backend, ctx=args.ctx, steps=args.steps, warmup=args.warmup,
                    device=args.device, gpu=args.gpu, synthetic=args.synthetic, gate=not args.no_gate,
                    allow_mismatch=args.allow_mismatch, quality=not args.no_quality,
                    quality_tokens=args.quality_tokens)
    command = "edgeprof " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["bench"] else None
    labels = cell_labels(args.model, args.backend, args.device, args.gpu) if args.metrics_port is not None else None
    metrics = CellMetrics(publisher_from_args(args, labels))
    if metrics.publisher.url:
        print(f"edgeprof bench: metrics on {metrics.publisher.url}", file=sys.stderr, flush=True)
    try:
        rec = run_cell(spec, command, raise_invalid=True)  # bad input -> one-line error from the CLI
        metrics.observe(rec)
        if args.out:
            write_json_atomic(args.out, rec)
        print_record(rec, args.json)
        sys.stdout.flush()
        metrics.linger(args.metrics_linger_s)
    finally:
        metrics.publisher.close()
    if rec["status"] != "ok":
        if not args.json:
            print(f"edgeprof bench: error: {rec['error']}", file=sys.stderr)
        return 1
    return 0
