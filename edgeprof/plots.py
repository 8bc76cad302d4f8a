"""PNG plots of sweep, A/B and explain results (matplotlib, Agg canvas, no pyplot state).

Every function returns PNG bytes, so callers decide where they go: a sweep writes
them into its output directory, the HTML report embeds them as base64.
"""

from __future__ import annotations

import io
from collections import defaultdict
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

_DPI = 110
_FLOOR_COLORS = ("black", "tab:gray", "tab:brown", "tab:olive", "tab:pink")


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    return buf.getvalue()


def _ok(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("status") == "ok" and (r.get("stats") or {}).get("wall")]


def _panel_title(rs: list[dict[str, Any]]) -> str:
    r = rs[0]
    label = r.get("model_label") or r.get("model")
    if r.get("synthetic") and "SYNTHETIC" not in str(label).upper():
        label = f"{label} [SYNTHETIC weights]"
    where = r.get("gpu_name") or r.get("gpu") or r.get("device") or "?"
    return f"{label}\non {where}"


def _panels(records: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Records grouped by (model, gpu): one subplot each."""
    panels: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in _ok(records):
        panels[(str(r.get("model")), str(r.get("gpu_name") or r.get("gpu") or r.get("device")))].append(r)
    return dict(sorted(panels.items()))


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 3)
    return (n + cols - 1) // cols, cols


def ms_per_step_png(records: list[dict[str, Any]]) -> bytes | None:
    """p50 ms/step vs ctx, one line per backend, with each weight format's floors drawn."""
    panels = _panels(records)
    if not panels:
        return None
    rows, cols = _grid(len(panels))
    fig = Figure(figsize=(5.2 * cols, 5.2 * rows))
    for i, rs in enumerate(panels.values()):
        ax = fig.add_subplot(rows, cols, i + 1)
        by_backend: dict[str, list[dict[str, Any]]] = defaultdict(list)
        floors: dict[str, dict[int, tuple[float, float]]] = defaultdict(dict)
        for r in rs:
            by_backend[r["backend"]].append(r)
            f = r.get("floor") or {}
            if f.get("floor_ms"):
                floors[str(r.get("weights"))][int(r["ctx"])] = (f["floor_ms"], f.get("touched_floor_ms") or 0.0)
        for backend, brs in sorted(by_backend.items()):
            brs.sort(key=lambda r: r["ctx"])
            xs = [r["ctx"] for r in brs]
            ax.plot(xs, [r["stats"]["wall"]["p50"] for r in brs], marker="o", label=backend)
            p99 = [r["stats"]["wall"].get("p99") for r in brs]
            if all(v is not None for v in p99):
                ax.fill_between(xs, [r["stats"]["wall"]["p50"] for r in brs], p99, alpha=0.12)
        for j, (weights, pts) in enumerate(sorted(floors.items())):
            xs = sorted(pts)
            color = _FLOOR_COLORS[j % len(_FLOOR_COLORS)]
            ax.plot(xs, [pts[x][0] for x in xs], "--", color=color, linewidth=1.2, marker="_", markersize=14,
                    label=f"floor {weights} (paper def.)")
            if any(pts[x][1] for x in xs):
                ax.plot(xs, [pts[x][1] for x in xs], ":", color=color, linewidth=1.2, marker="_", markersize=10,
                        label=f"floor {weights} (touched)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("context (tokens)")
        ax.set_ylabel("ms per decode step (p50; band to p99)")
        ax.set_title(_panel_title(rs), fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    fig.tight_layout()
    return _png(fig)


def fraction_png(records: list[dict[str, Any]]) -> bytes | None:
    """Fraction of the (paper) floor reached, per backend, one bar per ctx."""
    panels = {k: [r for r in rs if (r.get("floor") or {}).get("fraction")] for k, rs in _panels(records).items()}
    panels = {k: v for k, v in panels.items() if v}
    if not panels:
        return None
    rows, cols = _grid(len(panels))
    fig = Figure(figsize=(5.2 * cols, 4.0 * rows))
    for i, rs in enumerate(panels.values()):
        ax = fig.add_subplot(rows, cols, i + 1)
        backends = sorted({r["backend"] for r in rs})
        ctxs = sorted({int(r["ctx"]) for r in rs})
        width = 0.8 / len(ctxs)
        value = {(r["backend"], int(r["ctx"])): r["floor"]["fraction"] for r in rs}
        for j, c in enumerate(ctxs):
            xs = [b_i + (j - (len(ctxs) - 1) / 2) * width for b_i in range(len(backends))]
            ax.bar(xs, [value.get((b, c), 0.0) for b in backends], width, label=f"ctx {c}")
        ax.axhline(1.0, color="k", linestyle="--", linewidth=1, label="floor (1.0)")
        ax.set_xticks(range(len(backends)))
        ax.set_xticklabels(backends, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("fraction of floor (floor / p50 step)")
        ax.set_title(_panel_title(rs), fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def sweep_pngs(records: list[dict[str, Any]]) -> dict[str, bytes]:
    """{file name: PNG} for a sweep's records; empty when no cell succeeded."""
    out = {}
    for name, fn in (("ms_per_step.png", ms_per_step_png), ("fraction_of_floor.png", fraction_png)):
        png = fn(records)
        if png is not None:
            out[name] = png
    return out


def ab_png(result: dict[str, Any]) -> bytes:
    """Per-session speedup ratios with the median and its bootstrap CI."""
    ratios = [s["ratio"] for s in result["sessions"]]
    fig = Figure(figsize=(6, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(range(1, len(ratios) + 1), ratios, "o", label="session ratio")
    ax.axhline(result["median_ratio"], color="C1", label=f"median {result['median_ratio']:.3f}")
    lo, hi = result.get("ci") or (None, None)
    if lo is not None and hi is not None:
        ax.axhspan(lo, hi, color="C1", alpha=0.2, label=f"95% CI [{lo:.3f}, {hi:.3f}]")
    ax.axhline(1.0, color="k", linestyle=":", linewidth=1)
    ax.set_xlabel("session (fresh process)")
    ax.set_ylabel("speedup (control / treatment)")
    ax.set_title(f"{result['intervention']}: {result['control']} -> {result['treatment']}, ctx {result['ctx']}",
                 fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def explain_png(results: list[dict[str, Any]]) -> bytes | None:
    """Stacked bars: where one step's wall time goes, per explained backend."""
    if not results:
        return None
    fig = Figure(figsize=(1.8 + 1.6 * len(results), 3.8))
    ax = fig.add_subplot(1, 1, 1)
    classes = list(results[0]["per_step"]["class_ms"])
    labels = [f"{r['backend']}\nctx {r['ctx']}" for r in results]
    bottom = [0.0] * len(results)
    for c in [*classes, "idle_gap"]:
        vals = [r["per_step"]["idle_gap_ms"] if c == "idle_gap" else r["per_step"]["class_ms"].get(c, 0.0)
                for r in results]
        ax.bar(labels, vals, bottom=bottom, label="host gap (idle)" if c == "idle_gap" else c,
               hatch="//" if c == "idle_gap" else None)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_ylabel("ms per step (profiled)")
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return _png(fig)
