"""Per-shape W4 GEMV table and plot of a run folder (issue 12): the per-shape rows of every round's kernel.json
(r*/<dir>/kernel.json: `int4_gemv.py --suite kernel --out-dir`), one panel per round and model (variants are compared
only within a round: each round is a fresh machine), and every r*-ncu/ncu-metrics.csv (`gpu_ncu_stalls.sh`) as where
a kernel's elapsed SM cycles go.

    python benchmarks/plot_gemv_shapes.py results/h200/2026-11-28-dequant

Writes DIR/gemv-summary.md, DIR/gemv_per_shape.png and (with ncu rounds) DIR/ncu_sm_cycles.png. CPU only.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import sys
from pathlib import Path

SHAPES = ("qkv", "o", "gate_up", "down", "lm_head", "gate_up+down")


def shape_rows(run: Path) -> dict[str, dict]:
    """{round: kernel.json} for the rounds with per-shape rows."""
    files = sorted(run.glob("r*/*/kernel.json"))
    rounds = collections.Counter(f.parts[-3] for f in files)
    out = {}
    for f in files:
        rec = json.loads(f.read_text())
        if rec.get("rows"):  # a round with two such folders: "r153/rows"
            out[f.parts[-3] if rounds[f.parts[-3]] == 1 else f"{f.parts[-3]}/{f.parts[-2]}"] = rec
    return out


def _model(r: dict) -> str:
    return r.get("model", "qwen2.5-7b")  # the rows before --all-shapes carried no model: Qwen2.5-7B's shapes


def ncu_configs(run: Path) -> dict[str, list[dict]]:
    """{round: [{config, us, active_min, active_avg, active_max, elapsed, issue, stalls}]} from ncu-metrics.csv,
    two launches per config (the check, then the timed run) in w4_ncu_targets.py's order: the second is kept."""
    out = {}
    for f in sorted(run.glob("r*-ncu/ncu-metrics.csv")):
        rows = [r for r in csv.reader(f.open()) if len(r) > 10]
        head, body = rows[0], rows[1:]
        mi, vi, idi = head.index("Metric Name"), head.index("Metric Value"), head.index("ID")
        per: dict[str, dict] = collections.OrderedDict()
        for r in body:
            per.setdefault(r[idi], {})[r[mi]] = float(r[vi].replace(",", ""))
        labels = [ln.split(":", 3)[:3] for ln in (f.parent / "ncu-sections.txt").read_text().splitlines()
                  if ": rel err" in ln]
        launches = list(per.values())
        out[f.parts[-2]] = [_ncu_entry(":".join(lab), launches[2 * i + 1]) for i, lab in enumerate(labels)
                            if 2 * i + 1 < len(launches)]
    return out


def _ncu_entry(config: str, m: dict) -> dict:
    stalls = {k.split("stalled_")[1].split("_per")[0]: v for k, v in m.items() if "stalled_" in k}
    return {"config": config, "us": m["gpu__time_duration.sum"] / 1e3, "active_min": m["sm__cycles_active.min"],
            "active_avg": m["sm__cycles_active.avg"], "active_max": m["sm__cycles_active.max"],
            "elapsed": m["gpc__cycles_elapsed.max"], "issue": m["smsp__issue_active.avg.per_cycle_active"],
            "cpi": m["smsp__average_warps_active_per_issue_active.ratio"],
            "stalls": dict(sorted(stalls.items(), key=lambda kv: -kv[1])[:4])}


def summary(shapes: dict[str, dict], ncu: dict[str, list[dict]]) -> str:
    out = []
    for rnd, rec in shapes.items():
        bw = rec["copy_bw_bytes_per_s"] / 1e12
        checks = rec.get("checks") or []
        state = ("not run in this round (the rows check their own output)" if not checks else
                 f"{'passed' if rec.get('checks_passed') else 'FAILED'} ({len(checks)})")
        out += [f"### {rnd}: {rec['gpu']}, copy bandwidth {bw:.3f} TB/s, kernel checks {state}", "",
                "| model | shape | kernel | launch | status | rel err | us p50 | GB/s | of copy |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in rec["rows"]:
            head = f"| {_model(r)} | {r['shape']} | {r['kernel']} | {_launch(r)} |"
            if r.get("status") != "ok":
                out.append(f"{head} FAILED: {str(r.get('status'))[:60]} | - | - | - | - |")
                continue
            out.append(f"{head} ok | {r['rel_err']:.1e} | {r['us_p50']:.1f} | {r['gb_per_s']:.0f} | "
                       f"{r['frac_copy_bw']:.3f} |")
        out.append("")
    for rnd, entries in ncu.items():
        out += [f"### {rnd}: Nsight Compute at the GPU's own clocks (SM cycles; stalls per issued instruction)", "",
                "| config | us | SM active min / avg / max | elapsed | avg active / elapsed | issue per cycle | "
                "top stalls |", "|---|---|---|---|---|---|---|"]
        for e in entries:
            st = ", ".join(f"{k} {v:.2f}" for k, v in e["stalls"].items())
            out.append(f"| {e['config']} | {e['us']:.1f} | {e['active_min']:.0f} / {e['active_avg']:.0f} / "
                       f"{e['active_max']:.0f} | {e['elapsed']:.0f} | {e['active_avg'] / e['elapsed']:.2f} | "
                       f"{e['issue']:.2f} | {st} |")
        out.append("")
    return "\n".join(out)


def _launch(r: dict) -> str:
    """edgeprof's launch of a row ({variant, splits} and where it came from), "-" for the other kernels."""
    launch = r.get("launch")
    if not launch:
        return "-"
    text = launch if isinstance(launch, str) else f"{launch.get('variant')} s{launch.get('splits', 1)}"
    return f"{text} ({r['launch_source']})" if r.get("launch_source") else text


def plot_shapes(shapes: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(rnd, rec, model) for rnd, rec in shapes.items()
              for model in dict.fromkeys(_model(r) for r in rec["rows"])]
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 5 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (rnd, rec, model) in zip(axes.flat, panels, strict=False):
        ok = [r for r in rec["rows"] if r.get("status") == "ok" and _model(r) == model]
        kernels = list(dict.fromkeys(r["kernel"] for r in ok))
        width = 0.8 / max(1, len(kernels))  # a panel whose rows all failed draws none
        for j, kern in enumerate(kernels):
            vals = {r["shape"]: r["frac_copy_bw"] for r in ok if r["kernel"] == kern}
            xs = [i + j * width for i, s in enumerate(SHAPES) if s in vals]
            ax.bar(xs, [vals[s] for s in SHAPES if s in vals], width, label=kern)
        ax.axhline(0.85, ls="--", lw=1, color="k", label="issue 12 target (gate_up, down)")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(SHAPES))], SHAPES)
        ax.set_ylabel("fraction of measured copy bandwidth")
        ax.set_title(f"{rnd}: {rec['gpu']}, {model} shapes, int4 g128 SYNTHETIC (failed rows not drawn)", fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def plot_ncu(ncu: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [(rnd, e) for rnd, es in ncu.items() for e in es]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(entries) + 1.5))
    for i, (_, e) in enumerate(entries):
        el = e["elapsed"]
        parts = [e["active_avg"] / el, (e["active_max"] - e["active_avg"]) / el, (el - e["active_max"]) / el]
        left = 0.0
        for val, color in zip(parts, ("tab:green", "tab:orange", "tab:red"), strict=True):
            ax.barh(i, val, left=left, color=color)
            left += val
    ax.set_yticks(range(len(entries)), [f"{rnd} {e['config']} ({e['us']:.1f} us)" for rnd, e in entries], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("share of the kernel's elapsed cycles: green = average SM active, orange = the busiest SM's "
                  "extra, red = no SM active (launch, drain)", fontsize=8)
    ax.set_title("edgeprof W4A16 GEMV under Nsight Compute (NVIDIA H200, own clocks)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    a = ap.parse_args(argv)
    shapes, ncu = shape_rows(a.run), ncu_configs(a.run)
    if not shapes and not ncu:
        raise SystemExit(f"{a.run}: no r*/*/kernel.json with per-shape rows and no r*-ncu/ncu-metrics.csv")
    text = summary(shapes, ncu)
    (a.run / "gemv-summary.md").write_text(text + "\n")
    if shapes:
        plot_shapes(shapes, a.run / "gemv_per_shape.png")
    if ncu:
        plot_ncu(ncu, a.run / "ncu_sm_cycles.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
