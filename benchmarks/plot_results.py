"""Plots, the HTML report and README.md of a folder of GPU runs (results/h100 by default).

Reads every run one folder down (`RUN/cells.jsonl`: benchmarks/gpu_profile_cells.py
records with the full bench contract, and benchmarks/fast_decode.py records, which keep
GPU and versions once in `RUN/summary.json`), `RUN/ab*.json`, `RUN/explain-*.json` and
`daemon_overhead*.json` (in DIR or one folder down), and writes into OUT (default DIR):

* ms_per_step_vs_ctx.png   p50 ms/step vs ctx per backend, bf16 and int4 paper floors as lines
* fraction_of_floor.png    fraction of floor (paper: solid, touched: hatched) at ctx 2048 and 16384
* explain_breakdown.png    where one step's time goes: edgeprof-fast, hf-graph, hf-eager
* ab_cuda_graphs.png       CUDA-graph A/B session ratios, median + 95% CI, the paper's H100 and L4
* report.html              `edgeprof report DIR --out OUT/report.html`
* README.md                tables of every cell, the A/B, explain, daemon overhead, recommend

Where two runs measured the same cell (hf-graph and hf-compile are in both sweeps; the
2026-11-22-fast-decode-correctness-diag run repeats two edgeprof-fast cells), the plots use one record per cell:
the gated one, else the one of the larger run (edgeprof.report.primary_records). The
README table lists every record with its run. Runs on the CPU machine in a few seconds:

    python benchmarks/plot_results.py --results results/h100 --out results/h100/2026-11-22-summary
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edgeprof import paper, plots
from edgeprof.recommend import format_recommendation, recommend
from edgeprof.records import load_records
from edgeprof.report import Run, load_runs, primary_records, write_report

EXPLAIN_ORDER = ("edgeprof-fast", "edgeprof-fast-int4", "hf-graph", "hf-eager")
FRACTION_CTXS = (2048, 16384)
RECOMMEND_RUN = "2026-11-22-profile-cells"  # the run folder the README's recommend examples read
RECOMMEND_QUERIES = (("--slo-ms 10", {"slo_ms": 10.0}),
                     ("--slo-ms 10 --mem-gb 8", {"slo_ms": 10.0, "mem_gb": 8.0}),
                     ("--slo-ms 10 --gpu l4", {"slo_ms": 10.0, "gpu": "l4"}))


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _of_kind(d: Path, pattern: str, kind: str) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for f in sorted([*d.glob(pattern), *d.glob(f"*/{pattern}")]):
        data = _json(f)
        if data and data.get("kind") == kind:
            out.append((f, data))
    return out


# --- gate text -----------------------------------------------------------------------------------
def _check_text(check: dict[str, Any]) -> str:
    top1 = check.get("top1_agreement")
    err = check.get("logit_rel_error_mean")
    return f"top-1 {top1:.2f}, rel-err {err:.3g}" if top1 is not None and err is not None else "?"


def gate_text(r: dict[str, Any], run: Run) -> str:
    """Kernel correctness as one short cell: the record's `kernel_correctness`; for older records
    their gate (against bf16 on the *original* weights, which cannot tell quantization noise from
    a broken kernel), labelled as such, else the run-level check."""
    kc = r.get("kernel_correctness")
    if isinstance(kc, dict) and kc.get("passed") is not None:
        verdict = "pass" if kc["passed"] else "**FAIL**"
        return f"kernel {verdict} ({_f(kc.get('value'), '{:.3g}')} <= {kc.get('bound')}, pos {kc.get('positions')})"
    c = r.get("correctness")
    if isinstance(c, dict):
        if c.get("gated") is False:
            return "reference"
        err = (c.get("logit_rel_error") or {}).get("mean")
        verdict = "pass" if c.get("passed") else "**FAIL**"
        limit = c.get("max_logit_error")
        return (f"old gate vs original bf16 weights: {verdict} (top-1 {c.get('agreement', float('nan')):.2f}, "
                f"rel-err {err:.3g}" + (f" vs <= {limit:g}" if limit is not None else "") + ")")
    # fast_decode.py checks once per run: bf16 against HF bf16 (the diagnosis run names the variant:
    # [graph+triton] is what edgeprof-fast times), int4 against HF on the dequantized weights
    keys = (("check_bf16_vs_hf", "check_bf16_vs_hf[graph+triton]") if r.get("weights") == "bf16"
            else ("check_int4_vs_dequantized_hf",))
    key = next((k for k in keys if k in run.checks), None)
    if str(r.get("backend", "")).startswith("edgeprof-fast") and key:
        what = "vs HF bf16" if r.get("weights") == "bf16" else "vs HF on dequantized int4"
        return f"run-level check {what}: {_check_text(run.checks[key])}"
    return "not gated"


def quality_text(r: dict[str, Any]) -> str:
    q = r.get("quality") or {}
    if q.get("agreement") is None:
        return "not measured"
    return f"agree {q['agreement']:.3f}, ppl {q['perplexity']:.2f} ({q.get('model')})"


# --- README --------------------------------------------------------------------------------------
def _f(v: Any, fmt: str = "{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def _order(records: list[dict[str, Any]]) -> dict[str, int]:
    """Backends fastest first (by their best p50)."""
    best: dict[str, float] = {}
    for r in records:
        w = (r.get("stats") or {}).get("wall") or {}
        if w.get("p50") is not None:
            best[r["backend"]] = min(best.get(r["backend"], float("inf")), w["p50"])
    return {b: i for i, b in enumerate(sorted(best, key=best.__getitem__))}


def cells_table(runs: list[Run], primary: list[dict[str, Any]]) -> list[str]:
    """One row per cell (the record the plots use), with the run it came from."""
    run_of = {id(r): run for run in runs for r in run.records}
    order = _order(primary)
    rows = sorted(primary, key=lambda r: (str(r.get("model")), order.get(r["backend"], 99), int(r["ctx"])))
    out = ["| model | backend | weights | ctx | run | p50 ms | p99 ms | floor ms (paper) | fraction paper | "
           "fraction touched | capture s | kernel correctness | quality |",
           "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        run = run_of[id(r)]
        w, f = (r.get("stats") or {}).get("wall") or {}, r.get("floor") or {}
        model = r.get("model")
        if r.get("status") != "ok":
            out.append(f"| {model} | {r['backend']} | {r.get('weights')} | {r['ctx']} | {run.name} | "
                       f"failed: {r.get('error')} | | | | | | | |")
            continue
        mark = "**[FAILED CHECK]** " if plots.kernel_failed(r) else ""
        out.append(f"| {model} | {mark}{r['backend']} | {r.get('weights')} | {r['ctx']} | {run.name} | {_f(w.get('p50'))} | "
                   f"{_f(w.get('p99'))} | {_f(f.get('floor_ms'), '{:.3f}')} | {_f(f.get('fraction'), '{:.1%}')} | "
                   f"{_f(f.get('touched_fraction'), '{:.1%}')} | {_f(r.get('capture_s'), '{:.2f}')} | "
                   f"{gate_text(r, run)} | {quality_text(r)} |")
    return out


def repeats_table(runs: list[Run], primary: list[dict[str, Any]]) -> list[str]:
    """Cells measured again in another run: how far the repeat's p50 is from the table's."""
    key = lambda r: (str(r.get("model")), r["backend"], r.get("weights"), int(r["ctx"]))  # noqa: E731
    main = {key(r): r for r in primary}
    chosen = {id(r) for r in primary}
    run_of = {id(r): run for run in runs for r in run.records}
    order = _order(primary)
    reps = sorted((r for run in runs for r in run.records if id(r) not in chosen and r.get("status") == "ok"),
                  key=lambda r: (order.get(r["backend"], 99), int(r["ctx"])))
    if not reps:
        return []
    out = ["| model | backend | ctx | repeat run | p50 ms | p99 ms | capture s | table run | table p50 ms | "
           "repeat / table |", "|---|---|---:|---|---:|---:|---:|---|---:|---:|"]
    for r in reps:
        m = main[key(r)]  # the same model, backend, weights and ctx: a ratio never spans two models
        a, b = r["stats"]["wall"]["p50"], m["stats"]["wall"]["p50"]
        out.append(f"| {r.get('model')} | {r['backend']} | {r['ctx']} | {run_of[id(r)].name} | {a:.2f} | "
                   f"{r['stats']['wall']['p99']:.2f} "
                   f"| {_f(r.get('capture_s'), '{:.2f}')} | {run_of[id(m)].name} | {b:.2f} | {a / b:.3f} |")
    return out


def ab_lines(ab: dict[str, Any], path: Path, root: Path) -> list[str]:
    lo, hi = ab["ci"]
    ctrl = [s["control"]["median_wall_ms"] for s in ab["sessions"]]
    trt = [s["treatment"]["median_wall_ms"] for s in ab["sessions"]]
    ref = ab.get("paper") or {}
    h100, l4 = ref.get("h100-sxm") or {}, ref.get("l4") or {}
    lines = [f"`{path.relative_to(root)}`: {ab['intervention']} ({ab['control']} -> {ab['treatment']}), "
             f"{ab['model_label']}, ctx {ab['ctx']}, {ab['steps']} steps after {ab['warmup']} warm-up, "
             f"on {ab.get('gpu_name')}.", "",
             "| | speedup (median of session ratios) | 95% CI | sessions |", "|---|---:|---|---:|",
             f"| this run | **{ab['median_ratio']:.3f}x** | [{lo:.3f}, {hi:.3f}] ({ab['bootstrap']['method']}) "
             f"| {ab['n_sessions']} |",
             f"| this run, GPU-event time | {_f(ab.get('gpu_time_median_ratio'), '{:.3f}')}x | | |"]
    if h100:
        lines.append(f"| paper, H100 | {h100['ratio']:.3f}x | {h100.get('ci')} | {h100.get('sessions', '-')} |")
    if l4:
        lines.append(f"| paper, L4 | {l4['ratio']:.3f}x | {l4.get('ci') or '-'} | {l4.get('sessions', '-')} |")
    lines += ["", f"Per-session medians: {ab['control']} {min(ctrl):.2f}..{max(ctrl):.2f} ms/step, "
              f"{ab['treatment']} {min(trt):.2f}..{max(trt):.2f} ms/step; ratios "
              + ", ".join(f"{x:.2f}" for x in ab["ratios"]) + "."]
    return lines


def explain_table(explains: list[dict[str, Any]]) -> list[str]:
    classes = list(explains[0]["per_step"]["class_ms"])
    out = ["| backend (ctx) | unprofiled step ms | profiled step ms | busy ms | host gap ms | kernels/step | "
           + " | ".join(f"{c} ms" for c in classes) + " | touched floor / step |",
           "|---|" + "---:|" * (6 + len(classes))]
    for e in explains:
        p = e["per_step"]
        out.append(f"| {e['backend']} ({e['ctx']}) | {e['unprofiled_wall_ms']['median']:.2f} | {p['wall_ms']:.2f} | "
                   f"{p['busy_ms']:.2f} | {p['idle_gap_ms']:.2f} | {p['kernels']:.0f} | "
                   + " | ".join(f"{p['class_ms'][c]:.2f}" for c in classes)
                   + f" | {e['floor']['fraction_of_wall']:.1%} |")
    return out


def daemon_lines(d: dict[str, Any], path: Path, root: Path) -> list[str]:
    s = d.get("summary") or {}
    raw = s.get("raw_step") or {}
    same = "identical to" if d.get("tokens_match_raw_decoder") else "NOT identical to"
    out = [f"`{path.relative_to(root)}`: {d.get('backend')} ({d.get('weights')}) on {d.get('gpu_name')}, "
           f"{d.get('requests')} requests x {d.get('tokens_per_request')} tokens x {d.get('rounds')} rounds; "
           f"raw decoder step p50 {raw.get('p50', float('nan')):.3f} ms. Tokens of every configuration {same} "
           "the raw decoder's. Overhead = daemon token period - raw step, each round paired with a raw run "
           "just before it; the median over rounds.", "",
           "| configuration | period p50 ms | overhead mean us | rounds (min..max) | host work us/token | overhead / step |",
           "|---|---:|---:|---:|---:|---:|"]
    for k, c in s.items():
        if k == "raw_step":
            continue
        per = c.get("overhead_mean_us_per_round") or [c["overhead_mean_us"]]
        out.append(f"| {k} | {c['period']['p50']:.3f} | {c['overhead_mean_us']:.1f} | {min(per):.0f}..{max(per):.0f} | "
                   f"{c['host_work_us']['mean']:.1f} | {c['overhead_fraction_of_step']:.2%} |")
    return out


def recommend_lines(root: Path) -> list[str]:
    cells = root / RECOMMEND_RUN
    if not (cells / "cells.jsonl").is_file():
        return []
    records = load_records(cells)
    out = []
    for flags, kw in RECOMMEND_QUERIES:
        rec = recommend(records, **kw)
        out += [f"`edgeprof recommend --results {cells} {flags}`", "", "```", format_recommendation(rec), "```", ""]
    return out


def observations(primary: list[dict[str, Any]], abs_: list[tuple[Path, dict]], explains: list[dict]) -> list[str]:
    """Things in the data a reader should not miss, each computed from the records."""
    ok = [r for r in primary if r.get("status") == "ok"]
    out = []
    eager = next((r for r in ok if r["backend"] == "hf-eager" and int(r["ctx"]) == 2048
                  and r.get("model") == "qwen2.5-7b"), None)  # the model the paper's figure is about
    ex = next((e for e in explains if e["backend"] == "hf-eager"), None)
    ref = paper.figures().get("fraction", {})
    if eager and ex and ref:
        out.append(f"- hf-eager at ctx 2048 reaches {eager['floor']['fraction']:.1%} of the paper floor "
                   f"(the paper: {ref['h100-sxm']:.0%} on H100); p50 {eager['stats']['wall']['p50']:.1f} ms, "
                   f"p99 {eager['stats']['wall']['p99']:.1f} ms. explain puts {ex['per_step']['busy_ms']:.1f} ms of "
                   f"the step on the GPU and the rest in the host gap: this host "
                   f"({ex['host_cpu'].get('model')}, {ex['host_cpu'].get('freq_mhz'):.0f} MHz) most likely launches kernels "
                   "far slower than the paper's, so every eager (non-graph) path is host-bound here.")
    for _, ab in abs_:
        ctrl = [s["control"]["median_wall_ms"] for s in ab["sessions"]]
        h100 = (ab.get("paper") or {}).get("h100-sxm") or {}
        out.append(f"- The CUDA-graph A/B gives {ab['median_ratio']:.2f}x where the paper has {h100.get('ratio')}x: "
                   f"the eager static-cache arm ({ab['control']}) varies {min(ctrl):.1f}..{max(ctrl):.1f} ms across "
                   "sessions while the graph arm stays flat, which points at host launch time (what graphs remove).")
    bad = [r for r in ok if isinstance(r.get("correctness"), dict) and r["correctness"].get("passed") is False]
    if bad:
        errs = [r["correctness"]["logit_rel_error"]["mean"] for r in bad]
        out.append(f"- {', '.join(sorted({r['backend'] for r in bad}))} fail the correctness gate against hf-eager "
                   f"on these synthetic weights (top-1 agreement 0, mean logit rel-error {min(errs):.2f}..{max(errs):.2f}"
                   f" > {bad[0]['correctness'].get('max_logit_error')}); their timings are kept "
                   "but `edgeprof recommend` rejects them. edgeprof-fast-int4 is checked against HF on its own "
                   "dequantized weights instead, which isolates kernel error from quantisation error.")
    heavy: dict[str, list[tuple[float, float]]] = {}
    for r in ok:
        steady = (r.get("resident_weight_bytes") or 0) + ((r.get("floor") or {}).get("kv_bytes") or 0)
        if r.get("peak_mem_bytes") and steady and r["peak_mem_bytes"] > 1.5 * steady:
            heavy.setdefault(r["backend"], []).append((r["peak_mem_bytes"] / 1e9, steady / 1e9))
    if heavy:
        out.append("- Measured peak memory is far above weights + KV for "
                   + ", ".join(f"{b} ({min(p for p, _ in v):.1f}..{max(p for p, _ in v):.1f} GB peak vs "
                               f"{min(w for _, w in v):.1f}..{max(w for _, w in v):.1f} GB)"
                               for b, v in sorted(heavy.items()))
                   + ": the peak holds load-time transients (a bf16 copy quantised on the GPU, torch.compile's "
                   "pools), so `recommend --mem-gb` against it is pessimistic for a pre-quantised checkpoint.")
    slow = [r for r in ok if r["backend"] == "exllamav2"]
    if slow and eager:
        out.append(f"- exllamav2 (p50 {min(r['stats']['wall']['p50'] for r in slow):.0f}.."
                   f"{max(r['stats']['wall']['p50'] for r in slow):.0f} ms) is no faster than hf-eager: "
                   f"its record notes \"{slow[0].get('notes', {}).get('sync', '')}\"; per-step host work dominates.")
    return out


def readme(root: Path, runs: list[Run], abs_: list[tuple[Path, dict]], explains: list[dict],
           daemons: list[tuple[Path, dict]], pngs: list[str], out: Path) -> str:
    fig = paper.figures()
    lines = ["# H100 results", "",
             f"Generated by `python benchmarks/plot_results.py --results {root} --out {out}` from the records of the "
             f"runs in `{root}` (do not edit by hand). Where and how each run was made: its folder's PROVENANCE.md, "
             "listed in [INDEX.md](../INDEX.md); which runs this page is built from: [PROVENANCE.md](PROVENANCE.md). "
             f"One page with everything: [report.html](report.html) (`edgeprof report {root} --out {out / 'report.html'}`).",
             "",
             "**7-8B model shapes (every row and panel names its model) with SYNTHETIC random weights**: the "
             "timings are real, the tokens are not. Kernel correctness is against each backend's own dequantized "
             "weights near ctx (`edgeprof.correctness`); records made before it existed show the old gate against "
             "the original bf16 weights, labelled so, which cannot tell 4-bit quantization noise from a broken "
             "kernel on random weights. Rows marked **[FAILED CHECK]** are not recommended. "
             "Batch 1, wall ms per decode step, 30 timed steps after 5 warm-up (p99 of 30 samples is close to the max). "
             "floor = bytes per step / 3350 GB/s (H100 SXM datasheet); *paper* counts every weight plus the KV cache, "
             "*touched* one embedding row; fraction = floor / p50.", ""]
    lines += [f"![{p}]({p})" for p in pngs]
    primary = primary_records(runs)
    lines += ["", "## Decode cells", "",
              "One row per cell; where two runs measured a cell, the row is the gated record, else the one from "
              "the larger run (the repeats are listed below). Runs: "
              + "; ".join(f"`{r.name}` ({len(r.records)} cells)" for r in runs) + ".", "",
              *cells_table(runs, primary), ""]
    reps = repeats_table(runs, primary)
    if reps:
        lines += ["Repeat measurements of the same cells in another run:", "", *reps, ""]
    if fig:
        fr = fig.get("fraction", {})
        lines += [f"Paper, for comparison ({fig.get('id')}): {fr.get('model')} ctx {fr.get('ctx')} hf-eager bf16 reaches "
                  f"{fr.get('h100-sxm'):.0%} of the paper floor on H100 and {fr.get('l4'):.0%} on L4.", ""]
    obs = observations(primary, abs_, explains)
    if obs:
        lines += ["## What stands out", "", *obs, ""]
    for path, ab in abs_:
        lines += ["## CUDA-graph A/B", "", *ab_lines(ab, path, root), ""]
    if explains:
        lines += ["## Where the time goes (explain, ctx 2048)", "",
                  "Per-step means over the profiled steps (torch.profiler, CUDA kernels); busy + host gap = profiled "
                  "step. The profiler adds host time, so the unprofiled step is the one to compare.", "",
                  *explain_table(explains), ""]
    if daemons:
        lines += ["## Daemon overhead", ""]
    for path, d in daemons:
        lines += [*daemon_lines(d, path, root), ""]
    rec = recommend_lines(root)
    if rec:
        lines += [f"## edgeprof recommend over the {RECOMMEND_RUN} records", "", *rec]
    return "\n".join(lines).rstrip() + "\n"


# --- main ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results/h100", help="folder of runs (default results/h100)")
    ap.add_argument("--out", help="folder for the plots, report.html and README.md (default: --results)")
    args = ap.parse_args(argv)
    root = Path(args.results)
    out = Path(args.out) if args.out else root
    runs = load_runs(root)
    if not runs:
        print(f"plot_results: {root} holds no RUN/cells.jsonl", file=sys.stderr)
        return 2
    primary = primary_records(runs)
    abs_ = _of_kind(root, "ab*.json", "ab")
    by_backend = {e["backend"]: e for _, e in _of_kind(root, "explain*.json", "explain")}
    explains = [by_backend[b] for b in EXPLAIN_ORDER if b in by_backend]
    daemon_files = [*sorted(root.glob("daemon_overhead*.json")), *sorted(root.glob("*/daemon_overhead*.json"))]
    daemons = [(f, d) for f in daemon_files if (d := _json(f))]

    ref = paper.figures().get("fraction", {})
    refs = {int(ref["ctx"]): [(f"paper: hf-eager bf16 on H100 ({ref['h100-sxm']:.2f})", ref["h100-sxm"]),
                              (f"paper: hf-eager bf16 on L4 ({ref['l4']:.2f})", ref["l4"])]} if ref else None
    pngs: dict[str, bytes | None] = {
        "ms_per_step_vs_ctx.png": plots.ms_per_step_png(primary, touched=False),
        "fraction_of_floor.png": plots.fraction_at_ctx_png(primary, list(FRACTION_CTXS), refs),
        "explain_breakdown.png": plots.explain_png(explains),
        "ab_cuda_graphs.png": plots.ab_png(abs_[0][1]) if abs_ else None,
    }
    written = []
    for name, png in pngs.items():
        if png:
            (out / name).write_bytes(png)
            written.append(name)
    report = write_report(root, out=out / "report.html")
    (out / "README.md").write_text(readme(root, runs, abs_, explains, daemons, written, out))
    for name in [*written, report.name, "README.md"]:
        print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
