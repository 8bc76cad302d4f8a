"""`edgeprof predict`: PREDICTED ms/step on a target GPU from a measured explain profile."""

from __future__ import annotations

import argparse
import json

HELP = "PREDICT p50 ms/step on another GPU from explain profiles (mechanistic model, with an error band)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="source", required=True, metavar="PROFILE",
                   help="an `edgeprof explain --out` JSON/JSONL file, or a directory of them")
    p.add_argument("--gpu", required=True, metavar="TARGET", help="target GPU (catalog key, see `edgeprof gpus`)")
    p.add_argument("--host-cpu", type=float, default=1.0, metavar="FACTOR",
                   help="target host CPU time / profiled host CPU time (default 1: the same host)")
    p.add_argument("--json", action="store_true", help="print the predictions as JSON")


def run(args: argparse.Namespace) -> int:
    from edgeprof.errors import ConfigError
    from edgeprof.predict import LABEL, format_predictions, predict
    from edgeprof.predict_data import card, load_explains, params, profile

    if args.host_cpu <= 0:
        raise ConfigError("host-cpu", f"must be a positive factor (target CPU time / profiled), got {args.host_cpu}")
    tgt, p = card(args.gpu), params()
    preds = []
    for r in load_explains(args.source):
        preds.append(predict(profile(r), card(str(r["gpu"])), tgt, p, args.host_cpu))
    preds.sort(key=lambda q: (q.ctx, q.predicted_ms))
    if args.json:
        print(json.dumps({"kind": "predict", "label": LABEL, "gpu": tgt.key, "host_cpu_factor": args.host_cpu,
                          "params": p.__dict__, "predictions": [q.to_dict() for q in preds]}, indent=1, default=list))
    else:
        print(format_predictions(preds))
    return 0
