"""`edgeprof recommend`: rank backends meeting a per-token p99 SLO and a memory budget."""

from __future__ import annotations

import argparse
import json

HELP = "rank measured backends that meet a per-token SLO (p99) and a memory budget, with rejection reasons"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", required=True, metavar="DIR",
                   help="a sweep output directory (cells.jsonl) or a cells.jsonl / bench JSON file")
    p.add_argument("--slo-ms", type=float, required=True, metavar="X", help="per-token deadline in ms (vs p99)")
    p.add_argument("--mem-gb", type=float, metavar="Y",
                   help="memory budget in GB (1 GB = 1e9 B), against the steady state while decoding")
    p.add_argument("--min-agreement", type=float, metavar="F",
                   help="quality floor: top-1 agreement with bf16 on real weights (0..1), e.g. 0.9")
    p.add_argument("--gpu", metavar="G",
                   help="target GPU (catalog key); if DIR has no cells on it, only floor bounds are shown")
    p.add_argument("--model", metavar="M", help="only cells of this model")
    p.add_argument("--ctx", type=int, metavar="N", help="only cells at this context")
    p.add_argument("--profiles", metavar="PROFILE",
                   help="explain records (file or dir): on a GPU with no cells, rank by the PREDICTED step")
    p.add_argument("--host-cpu", type=float, default=1.0, metavar="FACTOR",
                   help="with --profiles: target host CPU time / profiled host CPU time (default 1)")
    p.add_argument("--quality-from", metavar="DIR",
                   help="a run on REAL weights (e.g. the SmolLM2 CPU sweep): cells without a measured quality take "
                        "the same backend's (else the same quantizer's) from it, labelled with the donor")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from edgeprof.recommend import format_recommendation, recommend
    from edgeprof.records import load_records

    profiles = None
    if args.profiles:
        from edgeprof.predict_data import load_explains

        profiles = load_explains(args.profiles)
    records = load_records(args.results)
    if args.quality_from:
        from edgeprof.recommend import borrow_quality

        records = borrow_quality(records, load_records(args.quality_from), args.quality_from)
    rec = recommend(records, args.slo_ms, args.mem_gb, args.gpu, args.model, args.ctx,
                    profiles, args.host_cpu, args.min_agreement)
    print(json.dumps(rec.to_dict(), indent=1) if args.json else format_recommendation(rec))
    return 0
