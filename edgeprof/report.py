"""One self-contained HTML page of a results directory, readable without Python.

Images are embedded as base64 PNG, tables are inline HTML, styling is one inline
<style> block, and there is no JavaScript (collapsible parts use <details>). Input:

* `DIR/cells.jsonl` (a sweep) and any bench record `DIR/*.json`;
* `DIR/ab*.json` (edgeprof ab --out) and `DIR/explain*.json` (edgeprof explain --out);
* the same one folder down (`DIR/RUN/cells.jsonl`, `DIR/ab/ab.json`, ...): a folder of
  several runs. Each sub-folder is one run; a `RUN/summary.json` with a `provenance`
  block (benchmarks/fast_decode.py) fills the GPU, versions and command its records lack;
* optionally a daemon run log (`--runlog PATH`), summarised by edgeprof.daemon.runlog.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgeprof.errors import ConfigError
from edgeprof.records import dig

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;vertical-align:top}
th{background:#f2f2f2}td.l,th.l{text-align:left}
tr.failed td{background:#fde8e8}.fail{color:#b00000}.synthetic{color:#a15c00;font-weight:bold}
.note{color:#555;font-size:.9em}img{max-width:100%;border:1px solid #eee;margin:.5em 0}
code{background:#f5f5f5;padding:0 .2em}
"""


def esc(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def _num(v: Any, fmt: str = "{:.3f}") -> str:
    if v is None or v == "":
        return "-"
    try:
        return fmt.format(v)
    except (TypeError, ValueError):
        return esc(v)


def _img(png: bytes | None, alt: str) -> str:
    if not png:
        return ""
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _table(headers: list[str], rows: list[list[str]], left: int = 0, row_classes: list[str] | None = None) -> str:
    """`left` leading columns are left-aligned; cells are already HTML."""
    th = "".join(f'<th class="{"l" if i < left else ""}">{esc(h)}</th>' for i, h in enumerate(headers))
    body = []
    for j, row in enumerate(rows):
        cls = f' class="{row_classes[j]}"' if row_classes and row_classes[j] else ""
        tds = "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(row))
        body.append(f"<tr{cls}>{tds}</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"



def _label(r: dict[str, Any]) -> str:
    label = esc(r.get("model_label") or r.get("model"))
    if r.get("synthetic"):
        label += ' <span class="synthetic">[SYNTHETIC weights]</span>' if "SYNTHETIC" not in label.upper() else ""
    return label


# --------------------------------------------------------------------------------------
# Loading: one results folder, or a folder of runs (one sub-folder each)
# --------------------------------------------------------------------------------------
@dataclass
class Run:
    name: str  # the sub-folder ("." for DIR itself)
    records: list[dict[str, Any]]
    checks: dict[str, Any] = field(default_factory=dict)  # run-level checks of a summary.json


_PROVENANCE_KEYS = {"gpu": "gpu", "gpu_name": "gpu_name", "command": "command"}


def _fill_from_summary(records: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """Records of a script that keeps provenance once per run (fast_decode.py) get it per
    record, so tables and plots can name the GPU; values a record has are kept."""
    prov = summary.get("provenance")
    if not isinstance(prov, dict):
        return
    versions = {k: str(prov[k]) for k in ("python", "torch", "transformers", "cuda") if prov.get(k)}
    for r in records:
        for src, dst in _PROVENANCE_KEYS.items():
            if r.get(dst) is None and prov.get(src):
                r[dst] = prov[src]
        if r.get("device") is None and prov.get("gpu_name"):
            r["device"] = "cuda"
        if not r.get("versions") and versions:
            r["versions"] = versions
        if r.get("timestamp") is None and prov.get("date"):
            r["timestamp"] = prov["date"]


def _run_checks(summary: dict[str, Any]) -> dict[str, Any]:
    """The `check_*` / `kernels` blocks of a summary.json: flat dicts of numbers or flags."""
    return {k: v for k, v in summary.items() if (k.startswith("check") or k == "kernels") and isinstance(v, dict)}


def _load_run(d: Path, name: str) -> Run:
    from edgeprof.records import load_records

    records = load_records(d)
    checks: dict[str, Any] = {}
    summary_path = d / "summary.json"
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text())
        except (json.JSONDecodeError, OSError):
            summary = {}
        if isinstance(summary, dict):
            _fill_from_summary(records, summary)
            checks = _run_checks(summary)
    for r in records:
        r.setdefault("run", name)
    return Run(name, records, checks)


def load_runs(results_dir: str | Path) -> list[Run]:
    """DIR's own cells (run ".") and each sub-folder holding a cells.jsonl (one run each)."""
    from edgeprof.records import CELLS_JSONL

    d = Path(results_dir)
    runs = []
    own = _load_run(d, ".")
    if own.records:
        runs.append(own)
    for sub in sorted(p for p in d.iterdir() if p.is_dir() and (p / CELLS_JSONL).is_file()):
        run = _load_run(sub, sub.name)
        if run.records:
            runs.append(run)
    return runs


def primary_records(runs: list[Run]) -> list[dict[str, Any]]:
    """One record per (model, backend, weights, ctx) for the plots when runs overlap: a
    gated record beats an ungated one, then the run with more cells (the full sweep
    beats a re-run of a few), then the earlier run."""
    best: dict[tuple[str, str, str, int], tuple[tuple[int, int, int], dict[str, Any]]] = {}
    for i, run in enumerate(runs):
        for r in run.records:
            key = (str(r.get("model")), str(r.get("backend")), str(r.get("weights")), int(r.get("ctx") or 0))
            rank = (int(isinstance(r.get("correctness"), dict)), len(run.records), -i)
            if key not in best or rank > best[key][0]:
                best[key] = (rank, r)
    return [r for _, r in best.values()]


def _json_files(d: Path, prefix: str, kind: str) -> list[dict[str, Any]]:
    """`prefix*.json` results of one kind in DIR and one folder down."""
    out = []
    for f in [*sorted(d.glob(f"{prefix}*.json")), *sorted(d.glob(f"*/{prefix}*.json"))]:
        try:
            data = json.loads(f.read_text())
        except (json.JSONDecodeError, OSError):
            continue
        if isinstance(data, dict) and data.get("kind") == kind:
            out.append(data)
    return out


# --------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------
def provenance_section(records: list[dict[str, Any]], extra: list[dict[str, Any]]) -> str:
    rows, seen = [], set()
    for r in [*records, *extra]:
        if r.get("status") == "failed" and not r.get("gpu_name"):
            continue  # a cell that failed before it saw the device says nothing about it
        v = {k: x for k, x in (r.get("versions") or {}).items() if isinstance(x, str)}
        host = r.get("host_cpu") or {}
        tb, ta = r.get("telemetry_before") or {}, r.get("telemetry_after") or {}
        key = (r.get("gpu_name"), r.get("gpu"), r.get("device"), json.dumps(v, sort_keys=True),
               host.get("model") if isinstance(host, dict) else None)
        if key in seen:
            continue
        seen.add(key)
        versions = ", ".join(f"{esc(k)} {esc(x)}" for k, x in sorted(v.items()) if x) or "-"
        clocks = "-"
        if tb or ta:
            clocks = (f"SM {esc(tb.get('sm_clock_mhz'))}/{esc(ta.get('sm_clock_mhz'))} MHz, "
                      f"mem {esc(tb.get('mem_clock_mhz'))}/{esc(ta.get('mem_clock_mhz'))} MHz, "
                      f"driver {esc(tb.get('driver') or ta.get('driver'))}")
        host_txt = esc(host.get("model") or host.get("model_name") or "") if isinstance(host, dict) else esc(host)
        rows.append([esc(r.get("gpu_name") or "-"), esc(r.get("gpu")), esc(r.get("device")), host_txt, versions,
                     clocks])
    if not rows:
        return ""
    table = _table(["GPU", "catalog key", "device", "host CPU", "versions", "clocks before/after"], rows, left=6)
    synth = sorted({str(r.get("model_label") or r.get("model")) for r in [*records, *extra] if r.get("synthetic")})
    note = ""
    if synth:
        note = ('<p class="synthetic">Synthetic weights (real shapes, random values; timings only, no output '
                f"quality): {esc(', '.join(synth))}</p>")
    cmds = sorted({str(r.get("command")) for r in records if r.get("command")})
    cmd_html = ""
    if cmds:
        cmd_html = ("<details><summary>Exact commands (" + str(len(cmds)) + ")</summary><ul>"
                    + "".join(f"<li><code>{esc(c)}</code></li>" for c in cmds) + "</ul></details>")
    return f"<h2>Provenance</h2>{note}{table}{cmd_html}"


def _kernel(r: dict[str, Any]) -> str:
    """Kernel correctness (against the backend's own dequantized weights, near ctx) as one cell."""
    c = r.get("kernel_correctness")
    if not isinstance(c, dict) or c.get("passed") is None:
        old = r.get("correctness")
        return ("old gate vs original weights: " + _correctness(r)) if isinstance(old, dict) else "not checked"
    val = c.get("value")
    what = (f"{val:.3g} &le; {c.get('bound')}" if isinstance(val, int | float) and c["passed"]
            else f"{val:.3g} &gt; {c.get('bound')}" if isinstance(val, int | float) else esc(c.get("metric")))
    pos = c.get("positions") or []
    title = esc(f"{c.get('metric')}; bound: {c.get('bound_reason')}")
    cls = "pass" if c["passed"] else "fail"
    verdict = "pass" if c["passed"] else "<b>FAIL</b>"
    return (f'<span class="{cls}" title="{title}">{verdict}: {what}'
            + (f", positions {esc(pos[0])}..{esc(pos[-1])}" if pos else "") + "</span>")


def _quality(r: dict[str, Any]) -> str:
    q = r.get("quality")
    if not isinstance(q, dict) or q.get("agreement") is None:
        return "not measured" + (f" ({esc(q.get('reason'))})" if isinstance(q, dict) and q.get("reason") else "")
    ref = q.get("reference_perplexity")
    return (f"agreement {q['agreement']:.3f}, ppl {q['perplexity']:.2f}"
            + (f" (bf16 {ref:.2f})" if isinstance(ref, int | float) else "") + f" on {esc(q.get('model'))}")


def _correctness(r: dict[str, Any]) -> str:
    c = r.get("correctness")
    if not isinstance(c, dict):
        return "not gated"
    if c.get("gated") is False:
        return "is the reference"
    flagged = c.get("flagged") is True or c.get("passed") is False or c.get("ok") is False
    parts = []
    if c.get("agreement") is not None:
        parts.append(f"top-1 agreement {c['agreement']:.2f}")
    err = c.get("logit_rel_error")
    if isinstance(err, dict) and err.get("mean") is not None:
        parts.append(f"logit rel-error {err['mean']:.2g}")
    txt = esc(", ".join(parts) or "checked")
    return f"<b>FLAGGED</b> {txt} ({esc(c.get('rule'))})" if flagged else f"passed: {txt}"


def _pct(v: Any) -> str:
    """A fraction as a percentage; tiny ones (a 2-layer test model) keep 2 significant digits."""
    if not isinstance(v, int | float):
        return "-"
    return f"{v:.1%}" if v >= 0.001 else f"{100 * v:.2g}%"


def cells_section(records: list[dict[str, Any]], show_run: bool = False) -> str:
    """The cells table; `show_run` adds the run (sub-folder) each record came from."""
    if not records:
        return ""
    records = sorted(records, key=lambda r: (str(r.get("model")), str(r.get("gpu")), str(r.get("backend")),
                                             int(r.get("ctx") or 0), str(r.get("run"))))
    rows, classes = [], []
    for r in records:
        w, f = dig(r, "stats", "wall") or {}, r.get("floor") or {}
        steady = r.get("steady_state_mem_bytes")
        rows.append([
            _label(r), esc(r.get("backend")), esc(r.get("weights")), esc(r.get("gpu") or r.get("device")),
            esc(r.get("ctx")), esc(r.get("status")),
            _num(w.get("p50")), _num(w.get("p90")), _num(w.get("p99")), _num(w.get("max")),
            _num(dig(r, "stats", "gpu", "p50")),
            _num(f.get("floor_ms")), _num(f.get("touched_floor_ms")),
            _pct(f.get("fraction")), _pct(f.get("touched_fraction")), _pct(dig(f, "calibrated", "fraction")),
            _num(steady / 1e9 if steady else None, "{:.3f}"), _num(r.get("capture_s"), "{:.1f}"),
            _kernel(r), _quality(r), esc(r.get("error") or ""),
        ])
        if show_run:
            rows[-1].insert(0, esc(r.get("run")))
        from edgeprof.recommend import kernel_status

        classes.append("failed" if r.get("status") != "ok" or kernel_status(r) is False else "")
    headers = ["model", "backend", "weights", "gpu", "ctx", "status", "p50 ms", "p90 ms", "p99 ms", "max ms",
               "GPU p50 ms", "floor ms (paper)", "floor ms (touched)", "fraction", "touched fraction",
               "calibrated fraction", "steady mem GB", "capture s", "kernel correctness", "quality", "error"]
    table = _table(["run", *headers] if show_run else headers, rows, left=5 if show_run else 4,
                   row_classes=classes)
    return ('<h2>Decode cells</h2><p class="note">Wall ms per decode step (batch 1). floor = bytes one step must '
            "read / peak bandwidth: <i>paper</i> counts every weight (embedding table included) plus the KV cache; "
            "<i>touched</i> counts one embedding row and the lm_head once. fraction = floor / p50 step. "
            "<i>kernel correctness</i>: the backend against a reference on its own dequantized weights at "
            "positions near ctx (hover for the bound's reason); <i>quality</i>: top-1 agreement with bf16 and "
            "perplexity on the held-out text, on real weights. Failed rows are shaded.</p>" + table)


def run_checks_section(runs: list[Run]) -> str:
    """Run-level checks kept once per run (a summary.json's check_* blocks)."""
    rows = []
    for run in runs:
        for name, check in run.checks.items():
            vals = ", ".join(f"{esc(k)} {_num(v, '{:.4g}') if isinstance(v, float) else esc(v)}"
                             for k, v in check.items())
            rows.append([esc(run.name), esc(name), vals])
    if not rows:
        return ""
    return ("<h2>Run-level checks</h2><p class=\"note\">Checks a run recorded once (not per cell), "
            "from its summary.json.</p>" + _table(["run", "check", "values"], rows, left=3))


def plots_section(records: list[dict[str, Any]], note: str = "") -> str:
    from edgeprof import plots

    pngs = plots.sweep_pngs(records)
    if not pngs:
        return ""
    note_html = f'<p class="note">{esc(note)}</p>' if note else ""
    return "<h2>Plots</h2>" + note_html + "".join(_img(png, name) for name, png in pngs.items())


def ab_section(results: list[dict[str, Any]]) -> str:
    from edgeprof import plots

    parts = []
    for r in results:
        lo, hi = r["ci"]
        head = (f"<h3>{esc(r['intervention'])}: {esc(r['control'])} &rarr; {esc(r['treatment'])}, "
                f"{_label(r)}, ctx {esc(r['ctx'])}, on {esc(r.get('gpu_name') or r.get('device'))}</h3>")
        if r.get("machinery_only"):
            head += f'<p class="synthetic">Machinery test only, not a finding: {esc(r.get("summary"))}</p>'
        summary = (f"<p>Median speedup <b>{r['median_ratio']:.4f}&times;</b>, "
                   f"{int(100 * r['bootstrap']['confidence'])}% bootstrap CI [{lo:.4f}, {hi:.4f}] "
                   f"({esc(r['bootstrap']['method'])}, scipy.stats.bootstrap, N = {r['n_sessions']} fresh "
                   f"processes, {r['steps']} steps after {r['warmup']} warm-up, median per arm).</p>")
        paper = r.get("paper") or {}
        prow = []
        for key, label in (("h100-sxm", "H100 (paper)"), ("l4", "L4 (paper)")):
            if key in paper:
                ci = paper[key].get("ci")
                prow.append([esc(label), _num(paper[key].get("ratio"), "{:.3f}"),
                             f"[{ci[0]}, {ci[1]}]" if ci else "-", esc(paper[key].get("sessions", "-"))])
        prow.append([f"this run ({esc(r.get('gpu') or r.get('device'))})", f"{r['median_ratio']:.3f}",
                     f"[{lo:.3f}, {hi:.3f}]", esc(r["n_sessions"])])
        cmp_table = _table(["", "speedup", "95% CI", "sessions"], prow, left=1)
        srows = [[esc(s["index"] + 1), esc(s["order"][0]), esc(s.get("pid")),
                  _num(s["control"]["median_wall_ms"]), _num(s["treatment"]["median_wall_ms"]),
                  _num(s["ratio"], "{:.4f}"), _num(s.get("gpu_ratio"), "{:.4f}")] for s in r["sessions"]]
        stable = _table(["session", "first arm", "pid", f"{r['control']} ms", f"{r['treatment']} ms", "ratio",
                         "GPU-time ratio"], srows, left=2)
        parts.append(head + summary + cmp_table + stable + _img(plots.ab_png(r), "A/B ratios"))
    return "<h2>A/B interventions</h2>" + "".join(parts) if parts else ""


def explain_section(results: list[dict[str, Any]]) -> str:
    from edgeprof import plots
    from edgeprof.explain import CLASSES

    if not results:
        return ""
    parts = []
    for r in results:
        p, f = r["per_step"], r["floor"]
        wall = p["wall_ms"]
        rows = [[esc(c), _num(p["class_ms"][c]), _num(p["class_ms"][c] / wall, "{:.1%}"),
                 _num(p["class_kernels"][c], "{:.1f}"), _num(p["class_bytes"][c] / 1e6, "{:.1f}"),
                 _num(p["class_gbs"][c], "{:.1f}")] for c in CLASSES]
        rows.append(["host gap (idle)", _num(p["idle_gap_ms"]), _num(p["idle_gap_ms"] / wall, "{:.1%}"), "", "", ""])
        rows.append(["<b>= wall step</b>", f"<b>{wall:.3f}</b>", "100%", _num(p["kernels"], "{:.1f}"),
                     _num(f["touched_bytes"] / 1e6, "{:.1f}"), _num(f["achieved_gbs_wall"], "{:.1f}")])
        notes = "".join(f'<p class="note">{esc(n)}</p>' for n in r.get("notes", []))
        parts.append(
            f"<h3>{esc(r['backend'])} ({esc(r['weights'])}), {_label(r)}, ctx {esc(r['ctx'])}, "
            f"{esc(r.get('gpu_name') or r['device'])}</h3>"
            f"<p>{esc(r['profiled_steps'])} profiled steps ({esc(r['activity'])}); per-step means. Without the "
            f"profiler the step took {r['unprofiled_wall_ms']['median']:.3f} ms. Busy {p['busy_ms']:.3f} ms "
            f"({p['busy_ms'] / wall:.1%}); touched floor {f['touched_floor_ms']:.3f} ms = "
            f"{f['fraction_of_wall']:.1%} of the step.</p>"
            + _table(["bucket", "ms/step", "share", "kernels/step", "MB read (analytic)", "GB/s"], rows, left=1)
            + notes)
    return "<h2>Where the time goes (explain)</h2>" + _img(plots.explain_png(results), "explain") + "".join(parts)


def runlog_section(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        from edgeprof.daemon.runlog import summarize
    except ImportError:
        return '<h2>Run log</h2><p class="note">edgeprof.daemon.runlog is not installed; run log skipped.</p>'
    s = summarize(path)
    runs = [[esc(r.get("run_id")), esc(r.get("model_label") or r.get("model")), esc(r.get("backend")),
             esc(r.get("weights")), esc(r.get("gpu_name") or r.get("device")), esc(r.get("started_wall")),
             esc(r.get("end_reason") or "not cleanly (killed?)")] for r in s.get("runs", [])]
    stats = [[esc(k), _num(s.get(k), "{:.3f}") if isinstance(s.get(k), float) else esc(s.get(k))]
             for k in ("requests", "tokens", "decode_tokens", "p50_ms", "p99_ms", "ttft_p50_ms", "fraction_median",
                       "deadline_misses", "errors")]
    return (f"<h2>Run log</h2><p><code>{esc(s.get('path'))}</code></p>"
            + _table(["run", "model", "backend", "weights", "gpu", "started", "ended"], runs, left=7)
            + _table(["", "value"], stats, left=1))


def paper_section() -> str:
    from edgeprof import paper

    fig = paper.figures()
    if not fig:
        return ""
    fr = fig.get("fraction", {})
    cg = fig.get("cuda_graphs", {})
    l4 = fig.get("l4_ms_per_step", {})
    rows = [["fraction of floor, L4", _num(fr.get("l4"), "{:.2f}")],
            ["fraction of floor, H100", _num(fr.get("h100-sxm"), "{:.2f}")],
            ["CUDA graphs speedup, H100", f"{_num(dig(cg, 'h100-sxm', 'ratio'))} {esc(dig(cg, 'h100-sxm', 'ci'))}"],
            ["CUDA graphs speedup, L4", _num(dig(cg, "l4", "ratio"))]]
    rows += [[f"L4 ms/step, {esc(k)}", _num(v, "{:.2f}")] for k, v in l4.items()]
    return (f"<h2>Seed paper figures, for comparison</h2><p class=\"note\">{esc(fig.get('id'))} "
            f"&ldquo;{esc(fig.get('title'))}&rdquo;, {esc(fr.get('model'))} ctx {esc(fr.get('ctx'))}; "
            f"{esc(fig.get('protocol'))}. These are the paper's numbers, not ours.</p>"
            + _table(["figure", "value"], rows, left=1))


# --------------------------------------------------------------------------------------
def _shown_path(d: Path) -> str:
    """The results folder as a reader can find it: relative to the working directory when it is
    inside it (a committed report must not name the machine it was made on)."""
    try:
        return d.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return d.as_posix()


def build_report(results_dir: str | Path, runlog: str | Path | None = None, title: str | None = None) -> str:
    d = Path(results_dir)
    if not d.is_dir():
        raise ConfigError("DIR", f"{d} is not a directory; pass a results directory (from edgeprof sweep --out)")
    runs = load_runs(d)
    records = [r for run in runs for r in run.records]
    several = len(runs) > 1
    abs_ = _json_files(d, "ab", "ab")
    explains = _json_files(d, "explain", "explain")
    if not (records or abs_ or explains or runlog):
        raise ConfigError("DIR", f"{d} holds no cells.jsonl, bench, ab*.json or explain*.json results")
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    title = title or f"edgeprof report: {d.resolve().name}"
    n_ok = sum(1 for r in records if r.get("status") == "ok")
    body = [
        f"<h1>{esc(title)}</h1>",
        f'<p class="note">Generated {esc(now)} by edgeprof from <code>{esc(_shown_path(d))}</code>: '
        f"{len(records)} cells ({n_ok} ok, {len(records) - n_ok} failed), {len(abs_)} A/B, "
        f"{len(explains)} explain"
        + (f"; {len(runs)} runs: {esc(', '.join(run.name for run in runs))}" if several else "") + ".</p>",
        provenance_section(records, [*abs_, *explains]),
        cells_section(records, show_run=several),
        run_checks_section(runs),
        plots_section(primary_records(runs), "One record per cell where runs overlap: the gated one, else the "
                      "one from the run with more cells.") if several else plots_section(records),
        ab_section(abs_),
        explain_section(explains),
        runlog_section(Path(runlog) if runlog else None),
        paper_section(),
    ]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(b for b in body if b) + "\n</body></html>\n")


def write_report(results_dir: str | Path, out: str | Path | None = None, runlog: str | Path | None = None) -> Path:
    from edgeprof.records import atomic_write_text

    out_path = Path(out) if out else Path(results_dir) / "report.html"
    atomic_write_text(out_path, build_report(results_dir, runlog))
    return out_path
