"""`edgeprof metrics-check`: run every dashboard PromQL expression against a live Prometheus."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgeprof.errors import ConfigError

HELP = "run every PromQL expression of the Grafana dashboard against Prometheus; report which return data"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from edgeprof.dashboards import DASHBOARD_PATH

    p.add_argument("--prometheus", required=True, metavar="URL", help="Prometheus base URL, e.g. http://127.0.0.1:9095")
    p.add_argument("--dashboard", type=Path, default=DASHBOARD_PATH, help="dashboard JSON (default: %(default)s)")
    p.add_argument("--window", default="5m",
                   help="range substituted for $__rate_interval/$__interval/$__range (default: %(default)s)")
    p.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                   help="value for a dashboard variable (default: .* = All); repeatable")
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def _variables(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ConfigError("--var", f"{pair!r} is not NAME=VALUE (e.g. --var model=smollm2-135m)")
        out[name] = value
    return out


def run(args: argparse.Namespace) -> int:
    from edgeprof.dashboards import check

    if not args.dashboard.exists():
        raise ConfigError("--dashboard", f"{args.dashboard} does not exist; regenerate with python -m edgeprof.dashboards --write")
    try:
        dash = json.loads(args.dashboard.read_text())
    except ValueError as exc:
        raise ConfigError("--dashboard", f"{args.dashboard} is not JSON ({exc})") from None
    results = check(args.prometheus, dash, args.window, _variables(args.var))
    failed = [r for r in results if r.failed]
    if args.json:
        print(json.dumps([{**r.__dict__, "failed": r.failed} for r in results], indent=2))
    else:
        for r in results:
            label = {"ok": "ok", "optional": "skip"}.get(r.status, "FAIL")
            extra = f"{r.series} series" if r.status == "ok" else (r.detail or "no data")
            print(f"{label:4} {r.panel} [{r.ref}]: {extra}")
        n_opt = sum(r.status == "optional" for r in results)
        print(f"{len(results) - len(failed) - n_opt} of {len(results)} expressions return data, "
              f"{n_opt} optional without data, {len(failed)} failed")
    return 1 if failed else 0
