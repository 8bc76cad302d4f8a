"""`edgeprof ab`: A/B of one decode intervention over fresh-process sessions, with a bootstrap CI."""

from __future__ import annotations

import argparse
import json

HELP = "A/B an intervention (e.g. cuda-graphs) over N fresh-process sessions: median speedup + 95% bootstrap CI"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from edgeprof.ab import INTERVENTIONS

    choices = "; ".join(f"{i.name}: {i.control} vs {i.treatment}" for i in INTERVENTIONS.values())
    p.add_argument("--intervention", required=True, metavar="NAME", help=f"what to A/B ({choices})")
    p.add_argument("--model", required=True, metavar="M", help="preset (synthetic weights), 'default', dir, .gguf")
    p.add_argument("--ctx", type=int, required=True, metavar="N", help="context length in tokens")
    p.add_argument("--sessions", type=int, default=10, metavar="N",
                   help="fresh processes, each running both arms (default 10, as in the paper)")
    p.add_argument("--backend-pair", metavar="CONTROL,TREATMENT", help="override the intervention's backends")
    p.add_argument("--steps", type=int, default=30, help="timed steps per arm (default 30)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per arm first (default 5)")
    p.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when visible")
    p.add_argument("--synthetic", action="store_true", default=None, help="force synthetic weights")
    p.add_argument("--session-timeout", type=float, default=600.0, metavar="S",
                   help="kill a session's process after S seconds (default 600)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling (default 0)")
    p.add_argument("--no-gate", action="store_true", help="skip the correctness gate in the first session")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--out", metavar="FILE", help="write the result JSON here (e.g. DIR/ab.json for the report)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edgeprof.ab import ABOptions, format_result, parse_pair, run_ab
    from edgeprof.records import atomic_write_text

    opts = ABOptions(intervention=args.intervention, model=args.model, ctx=args.ctx, sessions=args.sessions,
                     steps=args.steps, warmup=args.warmup,
                     pair=parse_pair(args.backend_pair) if args.backend_pair else None, device=args.device,
                     synthetic=args.synthetic, session_timeout_s=args.session_timeout, seed=args.seed,
                     gate=not args.no_gate)
    result = run_ab(opts)
    text = json.dumps(result, indent=1)
    if args.out:
        atomic_write_text(Path(args.out), text + "\n")
    print(text if args.json else format_result(result))
    return 0
