#!/usr/bin/env python3
"""A markdown table of sweep records (cells.jsonl files), keyed by model, backend, ctx and card, with each
row's kernel-correctness status; quality may be joined from a run on real weights (recommend.borrow_quality).

    python benchmarks/cells_table.py results/h200/2026-11-28-qwen-backends/cells-merged.jsonl \
        --quality-from results/cpu/2026-11-28-smollm2-backends
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _gb(v) -> str:
    return f"{v / 1e9:.2f}" if v else "-"


def kernel_cell(r: dict) -> str:
    k = r.get("kernel_correctness") or {}
    if k.get("passed") is None:
        return "not checked"
    word = "pass" if k["passed"] else "**FAIL**"
    pos = k.get("positions") or ["?", "?"]
    return f"{word} {k['value']:.4f} <= {k['bound']:g} ({pos[0]}..{pos[1]})"


def quality_cell(r: dict) -> str:
    q = r.get("quality") or {}
    if q.get("agreement") is None:
        return "not measured"
    via = f" (via {q['borrowed_from'].split(' in ')[0]})" if q.get("borrowed_from") else ""
    return f"{q['agreement']:.3f} / {q['perplexity']:.2f}{via}"


def row(r: dict) -> str:
    """One record's line; a cell that failed before timing says why instead of showing numbers."""
    key = f"| {r.get('model')} | {r.get('backend')} | {r.get('weights')} | {r.get('ctx')} | {r.get('gpu')} |"
    w = (r.get("stats") or {}).get("wall") or {}
    if not w:
        return f"{key} FAILED: {str(r.get('error'))[:80]} |||||||||"
    f = (r.get("floor") or {}).get("fraction")
    return (f"{key} {w.get('p50', 0):.2f} | {w.get('p99', 0):.2f} | {f:.3f} | {kernel_cell(r)} | {quality_cell(r)} | "
            f"{_gb(r.get('resident_weight_bytes'))} | {_gb(r.get('steady_state_mem_bytes'))} | "
            f"{_gb(r.get('load_peak_mem_bytes'))} | {str(r.get('run', '-')).split(' ')[0]} |")


def _p50(r: dict) -> float:
    return ((r.get("stats") or {}).get("wall") or {}).get("p50") or 1e9


def table(records: list[dict]) -> str:
    head = ("| model | backend | weights | ctx | card | p50 ms | p99 ms | fraction of floor | kernel correctness | "
            "quality: agreement / ppl | resident weights GB | steady mem GB | load peak GB | run |")
    ordered = sorted(records, key=lambda r: (r.get("model", ""), int(r.get("ctx") or 0), _p50(r)))
    return "\n".join([head, "|" + "---|" * (head.count("|") - 1), *map(row, ordered)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cells", nargs="+", help="cells.jsonl files or sweep directories")
    ap.add_argument("--quality-from", help="a run on real weights whose quality fills cells without one")
    args = ap.parse_args()
    from edgeprof.recommend import borrow_quality
    from edgeprof.records import load_records

    records = [r for c in args.cells for r in load_records(c)]
    if args.quality_from:
        records = borrow_quality(records, load_records(args.quality_from), args.quality_from)
    print(table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
