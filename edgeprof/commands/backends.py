"""`edgeprof backends`: every decode backend of the registry, whether it can run here and why not."""

from __future__ import annotations

import argparse

HELP = "list decode backends: available here or not, and why"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable list")


def rows() -> list[dict]:
    from edgeprof.backends.registry import BACKENDS

    out = []
    for b in BACKENDS.values():
        ok, reason = b.availability()
        out.append({"name": b.name, "available": ok, "reason": None if ok else reason, "weights": b.weights,
                    "needs_gpu": b.needs_gpu, "summary": b.summary})
    return out


def run(args: argparse.Namespace) -> int:
    import json

    table = rows()
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    width = max(len(r["name"]) for r in table)
    for r in table:
        mark = "yes" if r["available"] else "no "
        line = f"{r['name']:<{width}}  {mark}  {r['weights']:<11} {r['summary']}"
        if not r["available"]:
            line += f"\n{'':<{width}}       why not: {r['reason']}"
        print(line)
    return 0
