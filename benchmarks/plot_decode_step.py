"""Summary table and plot of a `benchmarks/gpu_decode_round.sh` run folder (rounds r*/ with steps/steps.json
and sweep/cells.jsonl): every full-step cell with its round, card, settings and status, as fraction of the
floor at the datasheet bandwidth. Cells that failed are listed as FAILED and left out of the plot.

    python benchmarks/plot_decode_step.py results/h200/2026-11-28-decode-step

Writes DIR/steps-summary.md and DIR/fraction_of_floor.png. Runs on the CPU machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cells(run: Path) -> list[dict]:
    """One row per step cell: a round's step tables (steps/steps.json, or the `steps` of any <dir>/kernel.json:
    labelled A/B settings) and sweep*/cells.jsonl (gated)."""
    rows = []
    for rnd in sorted(p for p in run.iterdir() if p.is_dir() and p.name.startswith("r")):
        for d in sorted(p for p in rnd.iterdir() if p.is_dir()):
            steps = _step_record(d)
            for c in steps.get("cells", []):
                label = c.get("label", c["backend"])
                rows.append(_row(rnd.name, "steps", label, c, _decoder_check(steps, label)))
        for jl in sorted(rnd.glob("sweep*/cells.jsonl")):
            for line in jl.read_text().splitlines():
                c = json.loads(line)
                tag = jl.parent.name.removeprefix("sweep").lstrip("-")
                rows.append(_row(rnd.name, "sweep", c["backend"] + (f" [{tag}]" if tag else ""), c))
    return rows


def _step_record(d: Path) -> dict:
    """The step table: steps.json (--steps-only), or the `steps` of kernel.json (the full kernel suite)."""
    if (d / "steps.json").exists():
        return json.loads((d / "steps.json").read_text())
    if (d / "kernel.json").exists():
        return json.loads((d / "kernel.json").read_text()).get("steps") or {}
    return {}


def _decoder_check(steps: dict, label: str) -> str | None:
    """The step table's whole-decoder check of a cell's setting (teacher-forced logits against HF on the
    dequantized weights for int4, HF bf16 for bf16), as 'top1 1.00, logit err 0.0119'; None where not run."""
    chk = steps.get(f"check_vs_dequantized_hf[{label}]") or steps.get(f"check_vs_hf[{label}]")
    if not chk:
        return None
    return f"vs HF: top1 {chk['top1_agreement']:.2f}, logit err {chk['logit_rel_error_max']:.4f}"


def _row(rnd: str, source: str, label: str, c: dict, decoder_check: str | None = None) -> dict:
    ok = c.get("status") == "ok"
    kc = c.get("kernel_correctness") or {}
    return {"round": rnd, "source": source, "label": label, "backend": c["backend"], "ctx": c["ctx"],
            "model": c.get("model") or "qwen2.5-7b",  # the step tables time Qwen2.5-7B's shapes
            "card": c.get("gpu_name") or c.get("gpu") or "?", "ok": ok,
            # steps cells skip the gate; the step table checks each setting's decoder on its own inputs
            "check": {True: "passed", False: "FAILED"}.get(kc.get("passed"), decoder_check or "not gated"),
            "p50_ms": c["stats"]["wall"]["p50"] if ok else None,
            "fraction": c["floor"]["fraction"] if ok else None,
            "error": None if ok else str(c.get("error"))[:80]}


def table(rows: list[dict]) -> str:
    out = ["| round | source | model | cell (settings) | ctx | card | p50 ms | fraction of floor | check (gate, or the "
           "step table's decoder check) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r['round']} | {r['source']} | {r['model']} | {r['label']} | {r['ctx']} | {r['card']} |"
        if r["ok"]:
            out.append(f"{head} {r['p50_ms']:.3f} | {r['fraction']:.3f} | {r['check']} |")
        else:
            out.append(f"{head} FAILED | - | {r['error']} |")
    return "\n".join(out)


def _short(label: str) -> str:
    return (label.replace("edgeprof-fast-int4-cuda", "int4-cuda").replace("edgeprof-fast", "bf16")
            .replace("/root/out/round4/bf16.json", "r4 bf16.json"))


def plot(rows: list[dict], path: Path, targets: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(16, 8))
    for ax, ctx in zip(axes, (2048, 16384), strict=True):
        mine = [r for r in rows if r["ok"] and r["ctx"] == ctx]
        labels = [f"{r['round']} {r['source']}: {r['model']} {_short(r['label'])}" for r in mine]
        colors = ["tab:orange" if "int4" in r["backend"] else "tab:blue" for r in mine]
        ax.barh(range(len(mine)), [r["fraction"] for r in mine], color=colors)
        ax.set_yticks(range(len(mine)), labels, fontsize=6)
        for name, t in targets.items():
            ax.axvline(t, ls="--", lw=1, color="tab:orange" if "int4" in name else "tab:blue", label=f"target {name}")
        ax.set_title(f"ctx {ctx}")
        ax.set_xlabel("fraction of the analytic floor (datasheet bandwidth)")
        ax.invert_yaxis()
    cards = sorted({r["card"] for r in rows})
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Qwen2.5-7B (SYNTHETIC weights), batch-1 decode step, {', '.join(cards)}: "
                 "blue bf16 edgeprof-fast, orange int4 edgeprof-fast-int4-cuda (failed cells not shown)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--target", action="append", default=["bf16=0.75", "int4=0.55"],
                    help="NAME=FRACTION lines drawn on the plot (issue 12's H200 targets by default)")
    a = ap.parse_args(argv)
    rows = cells(a.run)
    if not rows:
        raise SystemExit(f"{a.run}: no r*/steps/steps.json or r*/sweep*/cells.jsonl found")
    (a.run / "steps-summary.md").write_text(table(rows) + "\n")
    plot(rows, a.run / "fraction_of_floor.png", {k: float(v) for k, v in (t.split("=", 1) for t in a.target)})
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
