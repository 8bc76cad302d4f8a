"""`edgeprof runlog [PATH]`: summarise a daemon run log (default: the daemon's default run log)."""

from __future__ import annotations

import argparse
import json

HELP = "summarise a daemon run log (requests, tokens, p50/p99, fraction of floor, errors by code)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", default=None,
                   help="the SQLite run log written by `edgeprof serve` (runlog.path; default: "
                        "$XDG_STATE_HOME/edgeprof/edgeprof-run.db, the daemon's default)")
    p.add_argument("--run", type=int, help="only this run id (default: every run in the file)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    from edgeprof.daemon.runlog import format_summary, summarize
    from edgeprof.paths import default_runlog_path

    summary = summarize(args.path or str(default_runlog_path()), args.run)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0
