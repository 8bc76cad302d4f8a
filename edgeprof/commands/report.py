"""`edgeprof report DIR`: one self-contained HTML page of a results directory."""

from __future__ import annotations

import argparse

HELP = "write one self-contained HTML report (tables, embedded plots, A/B, explain, run log) of a results dir"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="results directory: cells.jsonl, ab*.json, explain*.json")
    p.add_argument("--runlog", metavar="PATH", help="also summarise this daemon run log (SQLite)")
    p.add_argument("--out", metavar="FILE", help="where to write the HTML (default DIR/report.html)")


def run(args: argparse.Namespace) -> int:
    from edgeprof.report import write_report

    path = write_report(args.dir, args.out, args.runlog)
    print(path)
    return 0
