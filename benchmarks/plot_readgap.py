"""Plots of benchmarks/read_vs_gemv.py's records in a run folder (issue 12): per round, each kernel's µs per call
on one list of weight copies, by shape and data kind (r*/read_vs_gemv.json), and the read chain's µs per call after
each trigger (r*/transient.json, `--transient`). CPU only.

    python benchmarks/plot_readgap.py results/h200/2026-11-29-readgap

Writes DIR/read_vs_gemv.png (and DIR/transient.png where a round ran --transient), and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def records(run: Path, name: str) -> dict[str, dict]:
    """{"rNN": record} of every r*/<name>."""
    return {f.parts[-2]: json.loads(f.read_text()) for f in sorted(run.glob(f"r*/{name}"))}


def table(recs: dict[str, dict]) -> str:
    """Markdown: one row per (round, shape, data), one column per kernel (µs per call)."""
    kernels = sorted({r["kernel"] for rec in recs.values() for r in rec.get("rows", [])})
    lines = ["| round | card | shape | splits | data | copies | " + " | ".join(kernels) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(kernels)]
    for rnd, rec in recs.items():
        cells: dict[tuple, dict] = {}
        for r in rec.get("rows", []):
            cells.setdefault((r["shape"], r["splits"], r["data"], r["copies"]), {})[r["kernel"]] = r["us_p50"]
        for (shape, splits, data, copies), us in cells.items():
            lines.append(f"| {rnd} | {rec.get('gpu', '?')} | {shape} | {splits} | {data} | {copies} | "
                         + " | ".join(f"{us[k]:.2f}" if k in us else "-" for k in kernels) + " |")
    return "\n".join(lines)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_bars(recs: dict[str, dict], out: Path) -> Path | None:
    rows = [(rnd, r) for rnd, rec in recs.items() for r in rec.get("rows", [])]
    if not rows:
        return None
    plt = _plt()
    shapes = sorted({r["shape"] for _, r in rows})
    fig, axes = plt.subplots(1, len(shapes), figsize=(5.5 * len(shapes), 3.8), squeeze=False)
    for ax, shape in zip(axes[0], shapes, strict=True):
        groups = sorted({(rnd, r["data"]) for rnd, r in rows if r["shape"] == shape})
        kernels = sorted({r["kernel"] for _, r in rows if r["shape"] == shape})
        width = 0.8 / len(kernels)
        for i, kern in enumerate(kernels):
            us = [next((r["us_p50"] for rnd, r in rows if r["shape"] == shape and (rnd, r["data"]) == g
                        and r["kernel"] == kern), float("nan")) for g in groups]
            ax.bar([j + i * width for j in range(len(groups))], us, width, label=kern)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))], [f"{g[0]}\n{g[1]}" for g in groups],
                      fontsize=7)
        ax.set_title(shape)
        ax.set_ylabel("µs per call (PDL chain)")
        ax.legend(fontsize=7)
    cards = sorted({rec.get("gpu", "?") for rec in recs.values()})
    fig.suptitle(f"read kernel vs the GEMV's loads alone vs the GEMV, one list of copies ({', '.join(cards)})",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_transient(recs: dict[str, dict], out: Path) -> Path | None:
    series = [(rnd, trig, pts) for rnd, rec in recs.items()
              for trig, pts in (rec.get("transient") or {}).items() if trig != "before"]
    if not series:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for rnd, trig, pts in series:
        ax.plot([p[0] * 1e3 for p in pts], [p[1] for p in pts], marker="o", ms=2, label=f"{rnd} after {trig}")
    ax.set_xlabel("ms after the trigger")
    ax.set_ylabel("µs per call, gate_up read chain")
    cards = sorted({rec.get("gpu", "?") for rec in recs.values()})
    ax.set_title(f"first chain timed after a trigger ({', '.join(cards)})", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    args = ap.parse_args()
    recs = records(args.run, "read_vs_gemv.json")
    print(table(recs))
    for path in (plot_bars(recs, args.run / "read_vs_gemv.png"),
                 plot_transient(records(args.run, "transient.json"), args.run / "transient.png")):
        if path:
            print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
