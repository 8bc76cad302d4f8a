"""Decode-attention summary of a run folder: every r*/attn.json (`benchmarks/attn_decode.py`: Triton split plans and
edgeprof's one-launch CUDA kernel, each checked first) as microseconds per layer against context, one panel per round
(kernels are compared only within a round: each round may be a fresh machine), and every r*/steps.log step table
(`int4_gemv.py --step-backends`, same-run A/Bs) as text.

    python benchmarks/plot_attention.py results/h200/2026-11-28-attention

Writes DIR/attention-summary.md and DIR/attention_us_per_layer.png. CPU only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

# a step-table line: label (backend and its env), ctx, p50 ms, floor ms, fraction, fraction at copy, kernel
STEP_LINE = re.compile(r"^(edgeprof-fast\S*(?: [A-Z0-9_]+=\S+)*)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)")
STEP_CARD = re.compile(r"^full step, [^,]+, ([^;]+);", re.M)  # the step table's header names the card


def micro_rows(run: Path) -> dict[str, dict]:
    return {f.parent.name: json.loads(f.read_text()) for f in sorted(run.glob("r*/attn.json"))}


def step_rows(run: Path) -> dict[str, tuple[str, list[tuple[str, int, float, float]]]]:
    """{round: (card, [(label, ctx, p50 ms, fraction of the floor)])} in the order the round ran them."""
    out = {}
    for f in sorted(run.glob("r*/steps.log")):
        text = f.read_text()
        rows = [(m[1], int(m[2]), float(m[3]), float(m[5])) for m in map(STEP_LINE.match, text.splitlines()) if m]
        card = STEP_CARD.search(text)
        if rows:
            out[f.parent.name] = (card[1] if card else "card not in the log", rows)
    return out


def summary(micro: dict[str, dict], steps: dict[str, list]) -> str:
    lines = ["# Decode attention: micro-benchmark and step A/Bs", ""]
    for rnd, rec in micro.items():
        lines += [f"## {rnd}: {rec['gpu']}, `attn_decode.py` (us per layer, Qwen2.5-7B shape, checked first)", "",
                  "| ctx | kernel | check (rel err) | us/layer | GB/s |", "|---|---|---|---|---|"]
        for r in rec["rows"]:
            ok = "PASS" if r["passed"] else "**FAIL** (not timed)"
            t = f"{r['us_per_layer_p50']:.2f} | {r['gb_per_s']:.0f}" if r["passed"] else "- | -"
            lines.append(f"| {r['ctx']} | {r['plan']} | {ok} ({r['rel_err']:.1e}) | {t} |")
        checks = rec.get("rope_checks", [])
        bad = [c for c in checks if not c["passed"]]
        lines += ["", f"Rope checks (rotate q/k, write row pos, float64 reference): {len(checks) - len(bad)} of "
                  f"{len(checks)} passed" + (f"; FAILED: {[(c['ctx'], c['plan']) for c in bad]}" if bad else ""), ""]
    for rnd, (card, rows) in steps.items():
        lines += [f"## {rnd}: full steps ({card}, same run, in the order run)", "",
                  "| backend | ctx | p50 ms | fraction of floor |", "|---|---|---|---|"]
        lines += [f"| {lab} | {ctx} | {p50:.3f} | {frac:.3f} |" for lab, ctx, p50, frac in rows]
        lines.append("")
    return "\n".join(lines)


def plot(micro: dict[str, dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(micro), figsize=(4.2 * len(micro), 3.6), squeeze=False)
    for ax, (rnd, rec) in zip(axes[0], micro.items(), strict=True):
        plans = dict.fromkeys(r["plan"] for r in rec["rows"])
        for plan in plans:
            rows = [r for r in rec["rows"] if r["plan"] == plan]
            ok = [r for r in rows if r["passed"]]
            style = "-o" if plan.startswith("cuda") else "--s"
            ax.plot([r["ctx"] for r in ok], [r["us_per_layer_p50"] for r in ok], style, label=plan, ms=4)
            for r in rows:
                if not r["passed"]:  # a failed check is shown, not timed
                    ax.annotate("FAIL", (r["ctx"], 0), color="red")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context (tokens)")
        ax.set_ylabel("us per layer (p50)")
        ax.set_title(f"{rnd}: {rec['gpu']}\nQwen2.5-7B shape, decode attention", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    a = ap.parse_args(argv)
    micro, steps = micro_rows(a.run), step_rows(a.run)
    if not micro and not steps:
        print(f"{a.run}: no r*/attn.json or r*/steps.log", file=sys.stderr)
        return 1
    (a.run / "attention-summary.md").write_text(summary(micro, steps))
    if micro:
        plot(micro, a.run / "attention_us_per_layer.png")
    print(f"wrote {a.run / 'attention-summary.md'}" + (" and attention_us_per_layer.png" if micro else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
