"""`edgeprof sweep CONFIG.yaml --out DIR`: a resumable grid of decode cells."""

from __future__ import annotations

import argparse
import json

HELP = "run a grid of decode cells (models x backends x contexts) from a YAML config; resumable"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="CONFIG.yaml",
                   help="sweep config (see configs/sweeps/paper.yaml and configs/sweeps/ci-tiny.yaml)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory: cells.jsonl, cells.csv, PNG plots; cells already there are skipped")
    p.add_argument("--isolate", action="store_true",
                   help="run each cell in a fresh `python -m edgeprof.cli bench` process, so an OOM or a crash "
                        "fails only that cell (default: in this process)")
    p.add_argument("--cluster", metavar="ADDRESS|local",
                   help="run the cells as tasks of a Dask distributed cluster: a scheduler address "
                        "(tcp://host:8786) or `local` (one worker per GPU on this machine); one GPU and a fresh "
                        "process per cell (implies --isolate), records written here (docs/fleet.md)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="with --cluster local: number of workers (default: one per visible GPU; 2 on a CPU)")
    p.add_argument("--device", choices=["cuda", "cpu"], help="override the config's device")
    p.add_argument("--gpu", metavar="G", help="override the config's GPU catalog key for the floor")
    p.add_argument("--cell-timeout", type=float, metavar="S",
                   help="with --isolate: kill a cell's process after S seconds and record it as failed")
    p.add_argument("--retry-failed", action="store_true", help="run again the cells recorded as failed")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="time a cell whose kernel fails correctness anyway; its record keeps passed=false and "
                        "recommend never picks it (default: such a cell is recorded failed, untimed)")
    p.add_argument("--dry-run", action="store_true", help="validate the config and list the cells, run nothing")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    from edgeprof.commands.bench import add_long_run_metrics_arguments

    add_long_run_metrics_arguments(p)  # one label set per (model, backend, gpu, weights), observed per cell


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edgeprof.sweep import SweepOptions, load_config, run_sweep

    cfg = load_config(args.config)
    if args.dry_run:
        for c in cfg.cells:
            print(f"{c.key}  steps {c.steps} warmup {c.warmup}")
        print(f"{len(cfg.cells)} cells")
        return 0
    opts = SweepOptions(out=Path(args.out), device=args.device or cfg.device, gpu=args.gpu or cfg.gpu,
                        synthetic=cfg.synthetic, isolate=args.isolate or bool(args.cluster), cell_timeout_s=args.cell_timeout,
                        retry_failed=args.retry_failed, progress=not args.no_progress, plots=not args.no_plots,
                        quality_tokens=cfg.quality_tokens, allow_mismatch=args.allow_mismatch)
    import signal

    def _stop(signum, frame):  # SIGTERM (e.g. `timeout`): unwind so an isolated cell's process is killed
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    import sys

    from edgeprof.bench import CellMetrics, cell_labels
    from edgeprof.metrics import publisher_from_args

    if not cfg.cells:
        args.metrics_port = None  # nothing to measure, nothing to serve
    labels = None
    if args.metrics_port is not None:  # the first cell's label set; others get siblings on the same server
        first = cfg.cells[0].key
        labels = cell_labels(first.model, first.backend, opts.device, opts.gpu)
    metrics = CellMetrics(publisher_from_args(args, labels))
    if metrics.publisher.url:
        print(f"edgeprof sweep: metrics on {metrics.publisher.url}", file=sys.stderr, flush=True)
    try:
        if args.cluster:
            from edgeprof.cluster import connect, run_cluster_sweep

            with connect(args.cluster, args.workers, opts.device) as client:
                summary = run_cluster_sweep(cfg, opts, client, on_record=metrics.observe)
        else:
            summary = run_sweep(cfg, opts, on_record=metrics.observe)
        print(json.dumps(summary), flush=True)
        metrics.linger(args.metrics_linger_s)
    finally:
        metrics.publisher.close()
    return 0
