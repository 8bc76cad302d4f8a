"""The stream-K down GEMV against split-K (issue 12, twenty-first pass): every r*/tune*/tune.json of a run folder
(`int4_gemv.py --suite tune`, one shape per tune) as µs per call, one panel per (model, shape), one bar per (round and
tune, variant), the launch that 0.85 of the round's measured copy bandwidth allows as a line. Each round is one
machine: compare bars within a round. Every row keeps its check status: PASS (checked against the dequantized
float64 reference, then timed), DIAGNOSTIC (a variant without its math, y wrong by design: timed only) or the
FAILED / SKIPPED reason, which gets no bar.

    python benchmarks/plot_streamk.py results/h200/2026-11-29-streamk

Writes DIR/streamk-summary.md and DIR/streamk_us.png. CPU only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

TARGET = 0.85  # issue 12: the large GEMVs at >= 0.85 of measured copy bandwidth


def status_of(row: dict) -> str:
    """PASS, DIAGNOSTIC, or the row's own FAILED / SKIPPED text."""
    s = str(row.get("status", "missing"))
    return {"ok": "PASS", "diagnostic": "DIAGNOSTIC"}.get(s, s)


def label_of(row: dict) -> str:
    """The launch: variant, and its K splits where it has more than one (stream-K and wk run one)."""
    return row["variant"] + (f" s{row['splits']}" if row.get("splits", 1) > 1 else "")


def summary_rows(tunes: dict[str, dict]) -> list[dict]:
    """One flat row per (tune, config): {tune, card, model, shape, launch, pdl, us, frac, target_us, status}. Pure."""
    out = []
    for name, rec in tunes.items():
        copy_bw = rec["copy_bw_bytes_per_s"]
        for row in rec.get("rows", []):
            timed = row.get("status") in ("ok", "diagnostic")
            out.append({"tune": name, "card": rec.get("gpu", "?"), "model": row["model"], "shape": row["shape"],
                        "launch": label_of(row), "pdl": bool(rec.get("pdl")), "ctas": row.get("ctas"),
                        "us": row["us_p50"] if timed else None, "frac": row.get("frac_copy_bw") if timed else None,
                        "target_us": row["bytes"] / (TARGET * copy_bw) * 1e6 if "bytes" in row else None,
                        "status": status_of(row)})
    return out


def summary_markdown(rows: list[dict]) -> str:
    lines = ["| round / tune | card | model | shape | launch | CTAs | PDL | µs p50 | of copy | 0.85 needs | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        us = f"{r['us']:.2f}" if r["us"] is not None else "-"
        frac = f"{r['frac']:.3f}" if r["frac"] is not None else "-"
        need = f"{r['target_us']:.2f}" if r["target_us"] is not None else "-"
        lines.append(f"| {r['tune']} | {r['card']} | {r['model']} | {r['shape']} | {r['launch']} | {r['ctas']} | "
                     f"{'on' if r['pdl'] else 'off'} | {us} | {frac} | {need} | {r['status']} |")
    return "\n".join(lines) + "\n"


def read_tunes(run: Path) -> dict[str, dict]:
    """{"rNNN tune-x": tune.json} for every r*/tune*/tune.json under `run`."""
    return {f"{f.parts[-3]} {f.parts[-2]}": json.loads(f.read_text()) for f in sorted(run.glob("r*/tune*/tune.json"))}


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["model"], r["shape"]) for r in rows})
    most = max(sum(1 for r in rows if (r["model"], r["shape"]) == pn and r["us"] is not None) for pn in panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), max(6.0, 1.5 + 0.16 * most)), squeeze=False)
    for ax, (model, shape) in zip(axes[0], panels, strict=True):
        mine = [r for r in rows if (r["model"], r["shape"]) == (model, shape) and r["us"] is not None]
        labels = [f"{r['tune']} {r['launch']}" + ("" if r["status"] == "PASS" else " (no math: diagnostic)")
                  for r in mine]
        colors = ["tab:blue" if r["launch"].startswith("sk") else "tab:gray" for r in mine]
        hatches = ["//" if r["status"] != "PASS" else "" for r in mine]
        bars = ax.barh(range(len(mine)), [r["us"] for r in mine], color=colors)
        for b, h in zip(bars, hatches, strict=True):
            b.set_hatch(h)
        ax.set_yticks(range(len(mine)), labels, fontsize=7)
        ax.invert_yaxis()
        for r in {r["tune"]: r for r in mine}.values():
            ax.axvline(r["target_us"], color="tab:red", linestyle="--", linewidth=0.8)
        card = mine[0]["card"] if mine else "?"
        ax.set_title(f"{model} {shape} (SYNTHETIC rtn4-g128), {card}", fontsize=9)
        ax.set_xlabel("µs per call (p50, chain of weight copies)")
    fig.suptitle("W4 down GEMV per call. Red dashes: 0.85 of each round's measured copy bandwidth (issue 12's target); "
                 "blue: stream-K; hatched: no math (a diagnostic, not a GEMV)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a results/<card>/<date>-<what>/ folder with r*/tune*/tune.json")
    args = ap.parse_args(argv)
    rows = summary_rows(read_tunes(args.run))
    if not rows:
        print(f"no r*/tune*/tune.json under {args.run}", file=sys.stderr)
        return 1
    (args.run / "streamk-summary.md").write_text(summary_markdown(rows))
    plot(rows, args.run / "streamk_us.png")
    print(f"wrote {args.run / 'streamk-summary.md'} and {args.run / 'streamk_us.png'} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
