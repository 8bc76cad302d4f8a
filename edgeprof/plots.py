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
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

_DPI = 110
_FLOOR_COLORS = ("black", "darkgoldenrod", "navy", "darkgreen", "magenta")  # apart from the C0..C9 lines
_REF_COLORS = ("tab:red", "tab:green", "tab:purple")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def backend_style(backend: str) -> tuple[str, str]:
    """(colour, marker) of a backend, fixed by its place in the registry, so one backend looks
    the same in every panel and figure; names outside the registry come after it."""
    from edgeprof.backends.registry import names

    known = names()
    i = known.index(backend) if backend in known else len(known) + sum(map(ord, backend)) % 10
    colours = [f"C{k}" for k in range(10)] + ["black", "olive", "teal", "navy", "maroon"]
    return colours[i % len(colours)], _MARKERS[i % len(_MARKERS)]


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


def ms_per_step_png(records: list[dict[str, Any]], touched: bool = True) -> bytes | None:
    """p50 ms/step vs ctx, one line per backend, with each weight format's floors drawn
    (dashed: paper definition; dotted: touched bytes, unless `touched` is False)."""
    panels = _panels(records)
    if not panels:
        return None
    rows, cols = _grid(len(panels))
    single = len(panels) == 1  # one panel: wider, legend at the side
    fig = Figure(figsize=(8.0, 5.4) if single else (5.2 * cols, 5.2 * rows))
    for i, rs in enumerate(panels.values()):
        ax = fig.add_subplot(rows, cols, i + 1)
        by_backend: dict[str, list[dict[str, Any]]] = defaultdict(list)
        floors: dict[str, dict[int, tuple[float, float]]] = defaultdict(dict)
        for r in rs:
            by_backend[r["backend"]].append(r)
            f = r.get("floor") or {}
            if f.get("floor_ms"):
                floors[str(r.get("weights"))][int(r["ctx"])] = (f["floor_ms"], f.get("touched_floor_ms") or 0.0)
        # slowest first, so the legend reads top to bottom like the lines
        ordered = sorted(by_backend.items(), key=lambda kv: -sum(r["stats"]["wall"]["p50"] for r in kv[1]) / len(kv[1]))
        for backend, brs in ordered:
            brs.sort(key=lambda r: r["ctx"])
            xs = [r["ctx"] for r in brs]
            colour, marker = backend_style(backend)
            failed = any(kernel_failed(r) for r in brs)
            line, = ax.plot(xs, [r["stats"]["wall"]["p50"] for r in brs], marker=marker, color=colour,
                            linestyle=":" if failed else "-", label=backend + (" [KERNEL FAIL]" if failed else ""))
            p99 = [r["stats"]["wall"].get("p99") for r in brs]
            if all(v is not None for v in p99):
                ax.fill_between(xs, [r["stats"]["wall"]["p50"] for r in brs], p99, alpha=0.08,
                                color=line.get_color(), linewidth=0)
        for j, (names, pts) in enumerate(_merge_floors(floors)):
            xs = sorted(pts)
            color = _FLOOR_COLORS[j % len(_FLOOR_COLORS)]
            ax.plot(xs, [pts[x][0] for x in xs], "--", color=color, linewidth=1.4,
                    label=f"floor {names} (paper def.)")
            if touched and any(pts[x][1] for x in xs):
                ax.plot(xs, [pts[x][1] for x in xs], ":", color=color, linewidth=1.2,
                        label=f"floor {names} (touched)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sorted({int(r["ctx"]) for r in rs}))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("context (tokens)")
        ax.set_ylabel("ms per decode step (p50; band to p99)")
        ax.set_title(_panel_title(rs), fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        if single:
            ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        else:
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    fig.tight_layout()
    return _png(fig)


def _merge_floors(floors: dict[str, dict[int, tuple[float, float]]],
                  rel: float = 0.02) -> list[tuple[str, dict[int, tuple[float, float]]]]:
    """Weight formats whose floors agree within `rel` at every shared ctx (nf4 and
    gptq4-g128 differ by their scale bytes only) share one line, named after all of them."""
    groups: list[tuple[list[str], dict[int, tuple[float, float]]]] = []
    for weights, pts in sorted(floors.items()):
        for names, gpts in groups:
            shared = set(pts) & set(gpts)
            if shared and all(abs(pts[c][0] - gpts[c][0]) <= rel * gpts[c][0] for c in shared):
                names.append(weights)
                break
        else:
            groups.append(([weights], dict(pts)))
    return [(" / ".join(names), pts) for names, pts in groups]


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
        failed = {r["backend"] for r in rs if kernel_failed(r)}
        for j, c in enumerate(ctxs):
            xs = [b_i + (j - (len(ctxs) - 1) / 2) * width for b_i in range(len(backends))]
            ax.bar(xs, [value.get((b, c), 0.0) for b in backends], width, label=f"ctx {c}")
        ax.axhline(1.0, color="k", linestyle="--", linewidth=1, label="floor (1.0)")
        ax.set_xticks(range(len(backends)))
        ax.set_xticklabels([_cell_label(b, b in failed) for b in backends], rotation=30, ha="right", fontsize=8)
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


def kernel_failed(r: dict[str, Any]) -> bool:
    """True when the record's kernels failed correctness (the old gate's `correctness` for older records)."""
    from edgeprof.recommend import kernel_status

    return kernel_status(r) is False


def _cell_label(backend: str, failed: bool) -> str:
    return f"{backend}\n[KERNEL FAIL]" if failed else backend


def fraction_at_ctx_png(records: list[dict[str, Any]], ctxs: list[int],
                        references: dict[int, list[tuple[str, float]]] | None = None) -> bytes | None:
    """Fraction of floor per backend: one row of panels per (model, device), one panel per ctx;
    the paper definition as a solid bar, the touched-bytes definition as a hatched bar beside it.
    Bars are keyed by (model, device, backend, ctx), so a cell never appears under another
    model's title. A backend whose kernels failed correctness is drawn grey and labelled.
    `references` draws horizontal lines (label, value) on the panels of a ctx (e.g. the paper's)."""
    ok = [r for r in _ok(records) if (r.get("floor") or {}).get("fraction") and int(r["ctx"]) in ctxs]
    if not ok:
        return None
    panels = _panels(ok)
    ctxs = [c for c in ctxs if any(int(r["ctx"]) == c for r in ok)]
    width = max(max(6.0, 0.75 * len({r["backend"] for r in rs})) * len(ctxs) / 1.4 for rs in panels.values())
    fig = Figure(figsize=(width, 5.0 * len(panels)))
    top = max(max(r["floor"]["fraction"] for r in ok), *(v for refs in (references or {}).values() for _, v in refs))
    axes = []
    for row, rs in enumerate(panels.values()):
        backends = sorted({r["backend"] for r in rs}, key=lambda b: -max(
            r["floor"]["fraction"] for r in rs if r["backend"] == b))
        for col, c in enumerate(ctxs):
            ax = fig.add_subplot(len(panels), len(ctxs), row * len(ctxs) + col + 1)
            axes.append(ax)
            by = {r["backend"]: r for r in rs if int(r["ctx"]) == c}
            xs = range(len(backends))
            paper = [(by[b]["floor"].get("fraction") or 0.0) if b in by else 0.0 for b in backends]
            touched = [(by[b]["floor"].get("touched_fraction") or 0.0) if b in by else 0.0 for b in backends]
            bad = [b in by and kernel_failed(by[b]) for b in backends]
            colours = ["lightgray" if f else "tab:blue" for f in bad]
            bars = ax.bar([x - 0.2 for x in xs], paper, 0.4, color=colours, label="paper floor (all weights + KV)")
            ax.bar([x + 0.2 for x in xs], touched, 0.4, color="white", edgecolor="tab:blue", hatch="///",
                   label="touched floor (1 embedding row)")
            for rect, v in zip(bars, paper, strict=True):
                if v:
                    ax.annotate(f"{v:.0%}", (rect.get_x() + rect.get_width() / 2, v), ha="center", va="bottom",
                                fontsize=7, xytext=(0, 1), textcoords="offset points")
            for j, (label, v) in enumerate((references or {}).get(c, [])):
                ax.axhline(v, color=_REF_COLORS[j % len(_REF_COLORS)], linestyle="--", linewidth=1.2, label=label)
            ax.set_xticks(list(xs))
            ax.set_xticklabels([_cell_label(b, f) for b, f in zip(backends, bad, strict=True)], rotation=35,
                               ha="right", fontsize=8)
            ax.set_ylim(0, min(1.05, top * 1.12))
            ax.set_ylabel("fraction of floor (floor ms / p50 ms)")
            ax.set_title(f"{_panel_title(rs)}, ctx {c}", fontsize=8)
            ax.grid(True, axis="y", alpha=0.3)
    # one legend for all panels, below them, so it never hides a bar or a reference line
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    fig.tight_layout(rect=(0, 0.07 / len(panels), 1, 1))
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(4, len(handles)), fontsize=8,
               frameon=False)
    return _png(fig)


def ab_png(result: dict[str, Any]) -> bytes:
    """Per-session speedup ratios with the median and its bootstrap CI, and the paper's
    figures (result["paper"], when present) beside them for reference."""
    ratios = [s["ratio"] for s in result["sessions"]]
    gpu_ratios = [s.get("gpu_ratio") for s in result["sessions"]]
    fig = Figure(figsize=(7, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    xs = range(1, len(ratios) + 1)
    ax.plot(xs, ratios, "o", color="C0", label="session ratio (wall)")
    if all(g is not None for g in gpu_ratios):
        ax.plot(xs, gpu_ratios, "x", color="C0", alpha=0.6, label="session ratio (GPU events)")
    ax.axhline(result["median_ratio"], color="C1", label=f"median {result['median_ratio']:.3f}")
    lo, hi = result.get("ci") or (None, None)
    if lo is not None and hi is not None:
        ax.axhspan(lo, hi, color="C1", alpha=0.2, label=f"95% CI [{lo:.3f}, {hi:.3f}]")
    paper = result.get("paper") or {}
    for key, color, name in (("h100-sxm", "tab:green", "H100"), ("l4", "tab:purple", "L4")):
        ref = paper.get(key) or {}
        if ref.get("ratio") is None:
            continue
        ci = ref.get("ci")
        label = f"paper {name} {ref['ratio']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        ax.axhline(ref["ratio"], color=color, linestyle="--", linewidth=1.2, label=label)
        if ci:
            ax.axhspan(ci[0], ci[1], color=color, alpha=0.2)
    ax.axhline(1.0, color="k", linestyle=":", linewidth=1, label="no speedup")
    ax.set_xticks(list(xs))
    ax.set_xlabel("session (fresh process; the arm order alternates)")
    ax.set_ylabel("speedup (control / treatment)")
    where = result.get("gpu_name") or result.get("device") or ""
    ax.set_title(f"{result['intervention']}: {result['control']} -> {result['treatment']}, ctx {result['ctx']}"
                 + (f", {where}" if where else ""), fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def explain_png(results: list[dict[str, Any]]) -> bytes | None:
    """Stacked bars: where one step's wall time goes, per explained backend, in ms
    (left) and as a share of the step (right, so a fast backend stays readable beside
    a slow one)."""
    if not results:
        return None
    fig = Figure(figsize=(4.0 + 2.2 * len(results), 4.2))
    ax_ms, ax_pct = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    classes = list(results[0]["per_step"]["class_ms"])
    labels = [f"{r['backend']}\nctx {r['ctx']}" for r in results]
    walls = [r["per_step"]["wall_ms"] for r in results]
    bottom_ms, bottom_pct = [0.0] * len(results), [0.0] * len(results)
    for k, c in enumerate([*classes, "idle_gap"]):
        vals = [r["per_step"]["idle_gap_ms"] if c == "idle_gap" else r["per_step"]["class_ms"].get(c, 0.0)
                for r in results]
        pct = [100 * v / w for v, w in zip(vals, walls, strict=True)]
        style = {"label": "host gap (idle)" if c == "idle_gap" else c, "hatch": "//" if c == "idle_gap" else None,
                 "color": "lightgray" if c == "idle_gap" else f"C{k}", "edgecolor": "dimgray"}
        ax_ms.bar(labels, vals, bottom=bottom_ms, **style)
        ax_pct.bar(labels, pct, bottom=bottom_pct, **style)
        bottom_ms = [b + v for b, v in zip(bottom_ms, vals, strict=True)]
        bottom_pct = [b + v for b, v in zip(bottom_pct, pct, strict=True)]
    for x, (r, w) in enumerate(zip(results, walls, strict=True)):
        unprof = (r.get("unprofiled_wall_ms") or {}).get("median")
        txt = f"{w:.1f} ms" + (f"\n({unprof:.1f} unprofiled)" if unprof else "")
        ax_ms.annotate(txt, (x, w), ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
    floors = [(r.get("floor") or {}).get("touched_floor_ms") for r in results]
    if all(f is not None for f in floors):
        ax_ms.hlines(floors, [x - 0.45 for x in range(len(results))], [x + 0.45 for x in range(len(results))],
                     colors="black", linestyles="--", linewidth=1.2, label="touched floor", zorder=3)
        ax_pct.plot([], [], "k--", linewidth=1.2, label="touched floor (left)")  # legend entry only
    ax_ms.set_ylim(0, max(walls) * 1.18)
    ax_ms.set_ylabel("ms per step (profiled, mean)")
    ax_pct.set_ylabel("share of the step (%)")
    ax_pct.set_ylim(0, 100)
    for ax in (ax_ms, ax_pct):
        ax.grid(True, axis="y", alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)
    ax_pct.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.suptitle(_panel_title(results).replace("\n", " "), fontsize=9)
    fig.tight_layout()
    return _png(fig)
