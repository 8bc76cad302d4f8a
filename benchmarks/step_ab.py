"""A paired A/B of decoder settings at one context, fine enough to resolve a few microseconds per step.

The step tables of benchmarks/int4_gemv.py time each setting as its own cell (a decoder built, prefilled and timed),
three pairs per round: on an H200 two cells of the same code differ by up to ~2% in wall p50, so a change worth 0.3%
cannot show there. Here every arm's decoder is built once and prefilled with the same prompt, then the arms take
turns in short blocks of steps (order alternating per block), and each block gives one paired ratio per clock
(arm / the first arm; GPU-event and wall p50 of the block). The result is the median ratio with a bootstrap CI
(edgeprof.ab.bootstrap_median_ci) and whether every arm produced the same greedy tokens.

    python benchmarks/step_ab.py --arms "base:;off:EDGEPROF_GREEDY_TAIL=off" --ctx 2048 --blocks 24 --steps 40 \
        --out ab.json

Arms: "name:ENV=v+ENV2=w" separated by ';' (an empty env is the default decoder). `--device cpu` (wall clock
only) is for checking the script, not for timing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))


# the decoder notes recorded per arm (Decoder.info().notes)
ARM_NOTES = ("attention", "int4_launch", "int4_launch_source", "int4_norm", "steps_ahead", "greedy_tail", "bf16_gemv")


def parse_arms(text: str) -> list[tuple[str, dict[str, str]]]:
    """'base:;off:EDGEPROF_X=1+EDGEPROF_Y=2' -> [('base', {}), ('off', {'EDGEPROF_X': '1', 'EDGEPROF_Y': '2'})]."""
    arms = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, env = part.partition(":")
        pairs = [kv.split("=", 1) for kv in env.split("+") if kv]
        if not name or any(len(kv) != 2 or not kv[0].startswith("EDGEPROF_") for kv in pairs):
            raise SystemExit(f"--arms: {part!r} is not name:EDGEPROF_NAME=value[+...]")
        arms.append((name, dict(pairs)))
    if len(arms) < 2:
        raise SystemExit("--arms: give at least two arms, the first is the baseline")
    return arms


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-7b")
    ap.add_argument("--backend", default="edgeprof-fast-int4-cuda")
    ap.add_argument("--arms", required=True)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--blocks", type=int, default=24)
    ap.add_argument("--steps", type=int, default=40, help="timed steps per arm and block")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("step_ab: no CUDA device here; --device cpu checks the script", file=sys.stderr)
        return 2
    from fast_decode import provenance
    from int4_gemv import env_set

    from edgeprof import hardware_loader as hardware
    from edgeprof.ab import bootstrap_median_ci
    from edgeprof.backends import registry
    from edgeprof.sources import load_model

    arms = parse_arms(args.arms)
    cache = args.ctx + args.blocks * args.steps + 64
    loaded = load_model(args.model, args.device, max_ctx=cache)
    prompt = torch.randint(0, loaded.shape.vocab, (args.ctx - 1,), generator=torch.Generator().manual_seed(3)).tolist()
    decs, arm_notes = [], {}
    for name, env in arms:
        with env_set(env):
            dec = registry.create(args.backend, loaded, device=args.device, max_ctx=cache)
        dec.prefill(prompt)
        dec.warmup()
        decs.append(dec)
        # what each arm's decoder runs: an arm whose setting did not reach its decoder (a policy that decides by the
        # cache size, sized here ctx + blocks x steps) shows here instead of as a ratio of 1
        info = dec.info().notes
        arm_notes[name] = {k: info[k] for k in ARM_NOTES if k in info}
        print(f"  {name}: {env or 'default'}; attention {info.get('attention', '-')}; {info.get('greedy_tail', '')}",
              flush=True)
    blocks: list[dict] = []
    for b in range(args.blocks):
        order = list(range(len(arms))) if b % 2 == 0 else list(reversed(range(len(arms))))
        row: dict = {}
        for i in order:
            t = decs[i].time_steps(args.steps)
            row[arms[i][0]] = {"wall_p50": float(np.median(t.wall_ms)), "tokens": t.tokens,
                               **({"gpu_p50": float(np.median(t.gpu_ms))} if t.gpu_ms else {})}
        blocks.append(row)
    base = arms[0][0]
    clocks = [c for c in ("gpu_p50", "wall_p50") if c in blocks[0][base]]
    res = {"benchmark": "step_ab", **provenance(hardware.detect(), args.device), "model": args.model,
           "backend": args.backend, "synthetic": loaded.synthetic, "ctx": args.ctx, "blocks": args.blocks,
           "steps": args.steps, "cache_tokens": cache, "arms": {n: e for n, e in arms}, "arm_notes": arm_notes,
           "per_block": blocks, "ratios": {}}
    for name, _ in arms[1:]:
        same = all(r[name]["tokens"] == r[base]["tokens"] for r in blocks)
        entry = {"tokens_equal_to_" + base: same}
        for clock in clocks:
            ratios = [r[name][clock] / r[base][clock] for r in blocks]
            entry[clock] = bootstrap_median_ci(ratios)
            entry[clock + "_ms"] = {base: float(np.median([r[base][clock] for r in blocks])),
                                    name: float(np.median([r[name][clock] for r in blocks]))}
        res["ratios"][name] = entry
        parts = [f"{c.split('_')[0].upper() if c.startswith('gpu') else 'wall'} p50 {entry[c]['median']:.4f} "
                 f"[{entry[c]['ci'][0]:.4f}, {entry[c]['ci'][1]:.4f}] (ms {entry[c + '_ms']})" for c in clocks]
        print(f"{name} / {base} at ctx {args.ctx} ({args.blocks} blocks x {args.steps} steps): {', '.join(parts)}; "
              f"greedy tokens equal: {same}", flush=True)
    res["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
