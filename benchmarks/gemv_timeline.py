"""Where a W4 GEMV launch's time goes inside a PDL chain: each CTA's phases on the GPU's global clock (issue 12).

The per-shape rows time a chain of identical launches over weight copies and divide by the count. That says how
long a launch takes, not what it waits for. The timeline variants (w4cuda.TRACE_VARIANTS) are the same kernels with
thread 0 of each CTA recording its start, the end of its PDL wait, the end of its x staging, the end of its last
chunk's math and its exit (%globaltimer, ns), its SM and its SM clock. Run as the tune runs a row:

  1. check: a timeline GEMV's y must be bitwise its twin's (the traced variant's) on the shape's input; the
     diagnostic ones (no math: y wrong by design) are not checked and say so;
  2. time the chain as the tune does (edgeprof.timing.time_graph, PDL on where the GPU has it);
  3. read every launch's records from the last replay, and split each launch's period (the last exit of launch i - 1
     to the last exit of launch i) into the part before its first CTA passed the wait ("release"), the stream (first
     wait passed to the last loop's end) and the tail (the last loop's end to the last exit), with the phases' spread.

  python benchmarks/gemv_timeline.py --configs down:clscxt:10,down:clscxgt:10 --out-dir DIR

Writes DIR/gemv_timeline.json (per config: the check, the chain's time, the per-launch summary and every CTA's raw
record) and DIR/gemv_timeline.png (three consecutive launches of each config, one line per CTA). Needs an sm_90 GPU
for the cluster variants, nvcc for the build. The analysis below is pure (numpy) and unit-tested on the CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

# a record's columns: w4cuda.TRACE_FIELDS (kept here too so the analysis imports no torch)
FIELDS = ("sm", "t_start", "t_waited", "t_staged", "t_looped", "t_left", "clock_start", "clock_left")
SKIP_FIRST = 2  # launches whose predecessor is outside the chain (the graph's start) or still warming: not summarised


def parse_configs(text: str) -> list[tuple[str, str, int]]:
    """'shape:variant:splits,...' -> [(shape, variant, splits)], each part named when it is wrong."""
    out = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        parts = item.split(":")
        if len(parts) != 3 or not parts[2].isdigit() or int(parts[2]) < 1:
            raise ValueError(f"--configs: {item!r} is not shape:variant:splits (e.g. down:clscxt:10)")
        out.append((parts[0], parts[1], int(parts[2])))
    if not out:
        raise ValueError("--configs: empty; give shape:variant:splits, comma-separated")
    return out


def _pct(v: np.ndarray, q: float) -> float:
    return float(np.percentile(v, q)) if v.size else float("nan")


def launch_summary(rec: np.ndarray, prev_end: float | None) -> dict:
    """One launch's phases (ns) from its CTAs' records rec [CTAs, 8] (FIELDS); prev_end: the previous launch's last
    exit (None: first in the chain). Times are relative to prev_end where given, else to this launch's first start."""
    t0 = prev_end if prev_end is not None else float(rec[:, 1].min())
    start, waited, staged, looped, left = (rec[:, i].astype(np.float64) - t0 for i in range(1, 6))
    end, first_wait, last_loop = float(left.max()), float(waited.min()), float(looped.max())
    return {
        "ctas": int(rec.shape[0]),
        "period_ns": end if prev_end is not None else None,
        "release_ns": first_wait if prev_end is not None else None,  # previous launch's end -> first CTA past the wait
        "started_before_prev_end": int((start < 0).sum()) if prev_end is not None else None,
        "started_after_first_wait": int((start > first_wait).sum()),  # CTAs that had no slot when the wait released
        "wait_spread_ns": float(waited.max() - first_wait),
        "stage_ns_p50": _pct(staged - waited, 50),
        "loop_ns_p10": _pct(looped - staged, 10), "loop_ns_p50": _pct(looped - staged, 50),
        "loop_ns_max": float((looped - staged).max()),
        "stream_ns": last_loop - first_wait,  # first CTA past the wait -> last loop done
        "loop_end_spread_ns": last_loop - _pct(looped, 10),  # the last 90% of loop ends: stragglers
        "finish_ns_p50": _pct(left - looped, 50),
        "tail_ns": end - last_loop,  # last loop done -> last CTA gone (its finish, or another CTA's)
        "last_loop_sm": int(rec[int(np.argmax(looped)), 0]),
        "sms_used": int(np.unique(rec[:, 0]).size),  # SMs that held at least one CTA of this launch
        "max_ctas_per_sm": int(np.bincount(rec[:, 0].astype(np.int64)).max()),
    }


def chain_summary(traces: list[np.ndarray]) -> dict:
    """Per-launch summaries of a chain (traces: each launch's records, in launch order) and their medians over the
    launches after SKIP_FIRST, whose periods are the chain's steady state."""
    ends = [float(t[:, 5].max()) for t in traces]
    per = [launch_summary(t, ends[i - 1] if i else None) for i, t in enumerate(traces)]
    steady = per[SKIP_FIRST:] if len(per) > SKIP_FIRST else per[1:]
    keys = [k for k, v in per[-1].items() if isinstance(v, float | int) and k not in ("last_loop_sm", "ctas")]
    med = {k: float(np.median([p[k] for p in steady if p[k] is not None])) for k in keys
           if any(p[k] is not None for p in steady)}
    return {"launches": per, "steady_median": med, "steady_launches": len(steady),
            "timer_step_ns": timer_step(traces), "sm_clock_ghz": sm_clock_ghz(traces),
            "last_loop_sms": sorted({p["last_loop_sm"] for p in steady})}


def timer_step(traces: list[np.ndarray]) -> float:
    """The smallest positive difference between any two recorded global times: the timer's resolution, at most. A
    phase shorter than it cannot be told apart (on some GPUs %globaltimer ticks in 32 ns, on others in 1 us)."""
    t = np.unique(np.concatenate([tr[:, 1:6].reshape(-1) for tr in traces]).astype(np.int64))
    d = np.diff(t)
    d = d[d > 0]
    return float(d.min()) if d.size else float("nan")


def sm_clock_ghz(traces: list[np.ndarray]) -> float:
    """The SMs' clock over the CTAs' lifetimes (clock64 cycles / global ns), median: to read the cycle counts by."""
    r = np.concatenate([(tr[:, 7] - tr[:, 6]) / np.maximum(tr[:, 5] - tr[:, 1], 1) for tr in traces])
    return float(np.median(r))


def _us(m: dict, key: str) -> str:
    return f"{m[key] / 1e3:.2f}" if key in m else "-"


def format_table(rows: list[dict]) -> str:
    """One line per config: the chain's time per call and the steady launches' medians (us)."""
    head = (f"{'config':<24} {'check':<12} {'chain us':>8} {'twin us':>7} {'of copy':>7} {'period':>7} {'release':>7} "
            f"{'stream':>7} {'tail':>6} {'stage':>6} {'loop p50':>8} {'loop max':>8} {'finish':>6} {'late CTAs':>9} "
            f"{'SMs':>4}")
    lines = [head, "-" * len(head)]
    for r in rows:
        m = r.get("summary", {}).get("steady_median", {})
        late = f"{m['started_after_first_wait']:.0f}" if "started_after_first_wait" in m else "-"
        sms = f"{m['sms_used']:.0f}" if "sms_used" in m else "-"
        lines.append(f"{r['config']:<24} {r['check']:<12} {r.get('chain_us', float('nan')):>8.2f} "
                     f"{r.get('twin_chain_us', float('nan')):>7.2f} {r.get('frac_copy_bw', float('nan')):>7.3f} "
                     f"{_us(m, 'period_ns'):>7} {_us(m, 'release_ns'):>7} {_us(m, 'stream_ns'):>7} {_us(m, 'tail_ns'):>6} "
                     f"{_us(m, 'stage_ns_p50'):>6} {_us(m, 'loop_ns_p50'):>8} {_us(m, 'loop_ns_max'):>8} "
                     f"{_us(m, 'finish_ns_p50'):>6} {late:>9} {sms:>4}")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, launches: int = 3) -> None:
    """Gantt of `launches` consecutive steady launches per config: one line per CTA (sorted by SM), segments coloured
    by phase (before the wait, staging, loop, finish)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get("traces")]
    if not rows:
        return
    fig, axes = plt.subplots(len(rows), 1, figsize=(12, 3.2 * len(rows)), squeeze=False)
    colours = ("#c8c8c8", "#f2a541", "#3b7dd8", "#d0413e")  # waiting, staging x, loop, finish
    for ax, r in zip(axes[:, 0], rows, strict=True):
        traces = [np.asarray(t, dtype=np.int64) for t in r["traces"]]
        first = min(SKIP_FIRST, len(traces) - 1)
        sel = traces[first:first + launches]
        t0 = float(sel[0][:, 1].min())
        y = 0
        for rec in sel:
            for c in rec[np.argsort(rec[:, 0], kind="stable")]:
                pts = (c[1:6].astype(np.float64) - t0) / 1e3
                for j in range(4):
                    ax.plot(pts[j:j + 2], [y, y], color=colours[j], lw=0.6)
                y += 1
        ax.set_title(f"{r['config']} ({r['card']}): {len(sel)} launches, one line per CTA; "
                     "grey waiting, orange staging x, blue loop, red finish", fontsize=8)
        ax.set_xlabel("us")
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------- on the GPU

def hold(layers: list, x, seconds: float, pdl: bool, tiles: int) -> dict:
    """Replay the chain of `layers` (one CUDA graph) back to back for `seconds`: {start, end} in Unix time, to find in
    a sampler's log (the round script runs nvidia-smi beside it)."""
    import time

    import torch

    from edgeprof.fast.w4cuda import use_pdl

    use_pdl(pdl, tiles)
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for li in layers:
                li(x)
        t0 = time.time()
        while time.time() - t0 < seconds:
            for _ in range(20):
                graph.replay()
            torch.cuda.synchronize()
        return {"start": t0, "end": time.time()}
    finally:
        use_pdl(False)


def run_config(shape: str, variant: str, splits: int, repeats: int, pdl: bool, copy_bw: float,
               hold_s: float = 0.0) -> dict:
    import torch
    from int4_gemv import TUNE_SHAPES, _tune_cache

    from edgeprof.fast.kernels import pdl_prefetch_tiles
    from edgeprof.fast.w4cuda import DIAGNOSTIC_VARIANTS, TRACE_VARIANTS, W4CudaLinear, use_pdl
    from edgeprof.timing import time_graph

    shapes = {name: (k, n) for _, name, k, n in TUNE_SHAPES}
    if shape not in shapes:
        raise ValueError(f"--configs: shape {shape!r} is not one of {sorted(shapes)}")
    if variant not in TRACE_VARIANTS:
        raise ValueError(f"--configs: variant {variant!r} records no timeline; use one of {sorted(TRACE_VARIANTS)}")
    k, n = shapes[shape]
    cache = _tune_cache(shape, k, n)
    diag = variant in DIAGNOSTIC_VARIANTS
    layers = [W4CudaLinear(p, splits=splits, variant=variant, diagnostic=diag) for p in cache["copies"]]
    row = {"config": f"{shape}:{variant}:{splits}", "shape": shape, "k": k, "n": n, "variant": variant,
           "twin": TRACE_VARIANTS[variant], "splits": layers[0].splits, "copies": len(layers), "pdl": pdl,
           "card": torch.cuda.get_device_name()}
    twins = [W4CudaLinear(p, splits=splits, variant=TRACE_VARIANTS[variant], diagnostic=diag)
             for p in cache["copies"]]
    if diag:
        row["check"] = "diagnostic"
    else:  # the trace must not change the kernel's result: bitwise its twin's y
        same = torch.equal(layers[0](cache["x"]), twins[0](cache["x"]))
        row["check"] = "bitwise" if same else "FAILED"
        if not same:
            return row
    tiles = pdl_prefetch_tiles() if pdl else 0  # $EDGEPROF_PDL_PREFETCH, as the decoder reads it
    row["prefetch_tiles"] = tiles
    use_pdl(pdl, tiles)
    try:  # the twin first, then the traced chain, whose last replay's records are read below
        twin_st = time_graph([lambda li=li: li(cache["x"]) for li in twins], repeats)
        st = time_graph([lambda li=li: li(cache["x"]) for li in layers], repeats)
    finally:
        use_pdl(False)
    torch.cuda.synchronize()
    traces = [li.trace().numpy() for li in layers]  # the last replay's records
    if hold_s > 0:  # the twin's chain replayed back to back, so a clock / power sampler (nvidia-smi) sees it steady
        row["hold"] = hold(twins, cache["x"], hold_s, pdl, tiles)
    nbytes = layers[0].nbytes
    row.update(chain_us=st.p50 * 1e3, chain_us_p90=st.p90 * 1e3, twin_chain_us=twin_st.p50 * 1e3, bytes=nbytes,
               frac_copy_bw=nbytes / (st.p50 * 1e-3) / copy_bw, summary=chain_summary(traces),
               traces=[t.tolist() for t in traces])
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="down:clscxt:10,down:clscxgt:10,down:scxt:10,down:nomathxsft:10",
                    help="shape:variant:splits, comma-separated; variants: w4cuda.TRACE_VARIANTS")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--no-pdl", action="store_true", help="plain launches (default: PDL where the GPU has it)")
    ap.add_argument("--hold-s", type=float, default=0.0,
                    help="after each config, replay its untraced chain for this long (for a clock / power sampler)")
    ap.add_argument("--out-dir", type=Path, required=True)
    args = ap.parse_args(argv)
    try:
        configs = parse_configs(args.configs)
    except ValueError as exc:
        ap.error(str(exc))
    import torch
    from int4_gemv import copy_bandwidth

    from edgeprof.fast.kernels import pdl_prefetch_tiles

    pdl = not args.no_pdl and torch.cuda.get_device_capability() >= (9, 0)
    copy_bw = copy_bandwidth()
    print(f"{torch.cuda.get_device_name()}: copy bandwidth {copy_bw / 1e12:.2f} TB/s (read + written); "
          f"PDL {'on' if pdl else 'off'}; tiles per warp prefetched before the wait: "
          f"{pdl_prefetch_tiles() if pdl else 0}", flush=True)
    rows = []
    for shape, variant, splits in configs:
        try:
            rows.append(run_config(shape, variant, splits, args.repeats, pdl, copy_bw, args.hold_s))
        except Exception as exc:  # a failed config is a row that says why, not the end of the run
            rows.append({"config": f"{shape}:{variant}:{splits}", "check": "FAILED",
                         "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "gemv_timeline.json").write_text(json.dumps(
        {"gpu": torch.cuda.get_device_name(), "pdl": pdl, "copy_bw": copy_bw, "fields": FIELDS, "rows": rows}))
    print(format_table(rows))
    for r in rows:
        if "summary" in r:
            s = r["summary"]
            print(f"{r['config']}: timer step {s['timer_step_ns']:.0f} ns, SM clock {s['sm_clock_ghz']:.2f} GHz, "
                  f"last loop on SMs {s['last_loop_sms'][:12]}")
        if "error" in r:
            print(f"{r['config']}: {r['error']}")
    plot(rows, args.out_dir / "gemv_timeline.png")
    return 0 if all(r["check"] != "FAILED" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
