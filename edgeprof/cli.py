"""The `edgeprof` command line. Thin: each subcommand lives in `edgeprof.commands.*`.

A command module exposes `HELP` (one line), `add_arguments(parser)` and
`run(args) -> int`. Command modules import torch/transformers only inside
functions, so listing commands and `edgeprof floor` stay fast and torch-free.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from edgeprof import __version__
from edgeprof.errors import EdgeprofError

# command name -> module under edgeprof.commands (the module's HELP is shown in --help)
COMMANDS: dict[str, str] = {
    "floor": "floor",
    "gpus": "catalog",
    "models": "catalog",
    "calibrate": "calibrate",
    "fetch-default": "fetch_default",
    "backends": "backends",
    "bench": "bench",
    "sweep": "sweep",
    "ab": "ab",
    "explain": "explain",
    "predict": "predict",
    "recommend": "recommend",
    "report": "report",
    "serve": "serve",
    "bridge": "bridge",
    "runlog": "runlog",
    "demo": "demo",
    "metrics-check": "metrics_check",
}


def _module(command: str):
    return importlib.import_module(f"edgeprof.commands.{COMMANDS[command]}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeprof", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"edgeprof {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        mod = _module(name)
        help_text = getattr(mod, "HELPS", {}).get(name, mod.HELP)
        # argparse %-formats help strings: escape a literal "%" (e.g. "95% CI") so --help cannot crash.
        p = sub.add_parser(name, help=help_text.replace("%", "%%"), description=help_text)
        mod.add_arguments_for(name, p) if hasattr(mod, "add_arguments_for") else mod.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    mod = _module(args.command)
    try:
        runner = mod.run_for if hasattr(mod, "run_for") else None
        return int((runner(args.command, args) if runner else mod.run(args)) or 0)
    except EdgeprofError as exc:
        print(f"edgeprof {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
