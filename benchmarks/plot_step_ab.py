"""Bar chart and table of step_ab records (benchmarks/step_ab.py JSON): per record, each arm's GPU p50 ms per step and
its paired ratio to the record's first arm with the bootstrap CI. No GPU needed.

    python benchmarks/plot_step_ab.py results/h200/2026-11-29-rule/r128/ab-llama.json ... --out DIR

Writes DIR/step_ab.png and DIR/step_ab.txt. Each panel is titled with its model, backend, context and card; the arms'
launches (int4_launch) are listed in the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def rows_of(rec: dict) -> list[dict]:
    """[{arm, ms, ratio, ci, launch}] of one step_ab record; the first arm has ratio 1."""
    arms = list(rec["arms"])
    base = arms[0]
    out = []
    for arm in arms:
        notes = rec.get("arm_notes", {}).get(arm, {})
        launch = notes.get("int4_launch") or {}
        launch_txt = ", ".join(f"{k} {v}" for k, v in launch.items()) or "-"
        if arm == base:
            first = next(iter(rec["ratios"].values()))
            out.append({"arm": arm, "ms": first["gpu_p50_ms"][base], "ratio": 1.0, "ci": (1.0, 1.0),
                        "launch": launch_txt, "env": rec["arms"][arm]})
            continue
        r = rec["ratios"][arm]
        out.append({"arm": arm, "ms": r["gpu_p50_ms"][arm], "ratio": r["gpu_p50"]["median"],
                    "ci": tuple(r["gpu_p50"]["ci"]), "launch": launch_txt, "env": rec["arms"][arm]})
    return out


def title_of(rec: dict, path: Path) -> str:
    synth = "SYNTHETIC weights" if rec.get("synthetic") else "real weights"
    return (f"{rec['model']} · {rec['backend']} · ctx {rec['ctx']} · {rec.get('gpu', '?')} ({synth}); "
            f"{path.parent.name}/{path.name}")


def table(recs: list[tuple[Path, dict]]) -> str:
    lines = []
    for path, rec in recs:
        lines.append(title_of(rec, path))
        lines.append(f"  {'arm':12s} {'GPU p50 ms':>10s} {'ratio':>7s} {'95% CI':>17s}  env / int4 launches")
        for r in rows_of(rec):
            env = "+".join(f"{k}={v}" for k, v in r["env"].items()) or "default"
            lines.append(f"  {r['arm']:12s} {r['ms']:10.3f} {r['ratio']:7.4f} [{r['ci'][0]:.4f}, {r['ci'][1]:.4f}]"
                         f"  {env}; {r['launch']}")
    return "\n".join(lines) + "\n"


def plot(recs: list[tuple[Path, dict]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(recs), 1, figsize=(9, 2.2 + 1.1 * sum(len(r["arms"]) for _, r in recs) / len(recs)
                                                      * len(recs) / 2), squeeze=False)
    for ax, (path, rec) in zip(axes[:, 0], recs, strict=True):
        rows = rows_of(rec)
        y = list(range(len(rows)))[::-1]
        ax.barh(y, [r["ms"] for r in rows], color=["#4c72b0"] + ["#999999"] * (len(rows) - 1))
        for yi, r in zip(y, rows, strict=True):
            ax.text(r["ms"], yi, f" {r['ms']:.3f} ms  ×{r['ratio']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]",
                    va="center", fontsize=8)
        ax.set_yticks(y, [r["arm"] for r in rows], fontsize=8)
        ax.set_xlim(0, max(r["ms"] for r in rows) * 1.55)
        ax.set_title(title_of(rec, path), fontsize=8)
        ax.set_xlabel("GPU p50 ms per step (ratio: paired, to the first arm; 95% bootstrap CI)", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("records", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    recs = [(p, json.loads(p.read_text())) for p in args.records]
    args.out.mkdir(parents=True, exist_ok=True)
    txt = table(recs)
    (args.out / "step_ab.txt").write_text(txt)
    plot(recs, args.out / "step_ab.png")
    print(txt, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
