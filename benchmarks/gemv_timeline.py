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
  python benchmarks/gemv_timeline.py --configs gate_up:scxt:1+down:clscxgt:10+qkv:clscxgt:7 --out-dir DIR
  python benchmarks/gemv_timeline.py --from DIR/gemv_timeline.json --out-dir DIR   (no GPU: table and PNG again)

Writes DIR/gemv_timeline.json (per chain: the checks, the chain's time and its twin's, the per-launch summary and
every CTA's raw record) and DIR/gemv_timeline.png (three consecutive launches of each chain, or one round of a chain
of several configs; one line per CTA). Needs an sm_90 GPU for the cluster variants, nvcc for the build. The analysis
below is pure (numpy) and unit-tested on the CPU.
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


def parse_configs(text: str) -> list[list[tuple[str, str, int]]]:
    """'shape:variant:splits,...' -> one chain per comma-separated item, each a list of (shape, variant, splits):
    one config, or several joined by '+' whose launches take turns in the chain (gate_up:scxt:1+down:clscxt:10).
    Each part is named when it is wrong."""
    out = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        chain = []
        for one in item.split("+"):
            parts = one.strip().split(":")
            if len(parts) != 3 or not parts[2].isdigit() or int(parts[2]) < 1:
                raise ValueError(f"--configs: {one!r} is not shape:variant:splits (e.g. down:clscxt:10)")
            chain.append((parts[0], parts[1], int(parts[2])))
        out.append(chain)
    if not out:
        raise ValueError("--configs: empty; give shape:variant:splits, comma-separated")
    return out


def _pct(v: np.ndarray, q: float) -> float:
    return float(np.percentile(v, q)) if v.size else float("nan")


def launch_summary(rec: np.ndarray, prev_end: int | None) -> dict:
    """One launch's phases (ns) from its CTAs' records rec [CTAs, 8] (FIELDS, int64); prev_end: the previous launch's
    last exit (None: first in the chain). Times are relative to prev_end where given, else to this launch's first
    start, subtracted in int64: the global times are ~1.8e18 ns, where a float64 steps by 256 ns."""
    t0 = np.int64(prev_end if prev_end is not None else rec[:, 1].min())
    start, waited, staged, looped, left = ((rec[:, i] - t0).astype(np.float64) for i in range(1, 6))
    end, first_wait, last_loop = float(left.max()), float(waited.min()), float(looped.max())
    return {
        "ctas": int(rec.shape[0]),
        "period_ns": end if prev_end is not None else None,
        "release_ns": first_wait if prev_end is not None else None,  # previous launch's end -> first CTA past the wait
        "started_before_prev_end": int((start < 0).sum()) if prev_end is not None else None,
        # CTAs that found no slot until the previous launch had ended: no weights in flight before their wait
        "started_after_prev_end": int((start > 0).sum()) if prev_end is not None else None,
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
    ends = [int(t[:, 5].max()) for t in traces]
    per = [launch_summary(t, ends[i - 1] if i else None) for i, t in enumerate(traces)]
    steady = per[SKIP_FIRST:] if len(per) > SKIP_FIRST else per[1:]
    return {"launches": per, "steady_median": _medians(steady), "steady_launches": len(steady),
            "timer_step_ns": timer_step(traces), "sm_clock_ghz": sm_clock_ghz(traces),
            "last_loop_sms": sorted({p["last_loop_sm"] for p in steady})}


def _medians(launches: list[dict]) -> dict:
    """Each numeric field's median over `launches` (launch_summary dicts), leaving out the fields a launch lacks."""
    keys = [k for k, v in launches[-1].items() if isinstance(v, float | int) and k not in ("last_loop_sm", "ctas")]
    return {k: float(np.median([p[k] for p in launches if p[k] is not None])) for k in keys
            if any(p[k] is not None for p in launches)}


def member_medians(launches: list[dict], j: int, per_round: int) -> dict:
    """Medians of the steady launches (after SKIP_FIRST) of member j of a chain whose rounds launch `per_round`
    configs in turn: launch i is member i % per_round."""
    return _medians([p for i, p in enumerate(launches) if i % per_round == j and i >= SKIP_FIRST])


def summarise(row: dict) -> None:
    """Set a chain's row's "summary" (chain_summary) and, for a chain of several configs, "member_summary" (each
    config's own medians) from its raw records row["traces"]."""
    row["summary"] = chain_summary([np.asarray(t, dtype=np.int64) for t in row["traces"]])
    members = row.get("members") or []
    if len(members) > 1:  # each member's own launches: their periods follow the other members' launches
        row["member_summary"] = {m["config"]: member_medians(row["summary"]["launches"], j, len(members))
                                 for j, m in enumerate(members)}


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


def _line(name: str, check: str, r: dict, m: dict) -> str:
    late = f"{m['started_after_prev_end']:.0f}" if "started_after_prev_end" in m else "-"
    sms = f"{m['sms_used']:.0f}" if "sms_used" in m else "-"
    return (f"{name:<24} {check:<12} {r.get('chain_us', float('nan')):>8.2f} "
            f"{r.get('twin_chain_us', float('nan')):>7.2f} {r.get('frac_copy_bw', float('nan')):>7.3f} "
            f"{_us(m, 'period_ns'):>7} {_us(m, 'release_ns'):>7} {_us(m, 'stream_ns'):>7} {_us(m, 'tail_ns'):>6} "
            f"{_us(m, 'stage_ns_p50'):>6} {_us(m, 'loop_ns_p50'):>8} {_us(m, 'loop_ns_max'):>8} "
            f"{_us(m, 'finish_ns_p50'):>6} {late:>9} {sms:>4}")


def format_table(rows: list[dict]) -> str:
    """One line per chain: its time per round (one launch of each config) and the steady launches' medians (us); a
    chain of several configs adds a line per config with the medians of its own launches."""
    head = (f"{'config':<24} {'check':<12} {'chain us':>8} {'twin us':>7} {'of copy':>7} {'period':>7} {'release':>7} "
            f"{'stream':>7} {'tail':>6} {'stage':>6} {'loop p50':>8} {'loop max':>8} {'finish':>6} {'late CTAs':>9} "
            f"{'SMs':>4}")
    # late CTAs: started only after the previous launch had ended (steady median)
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(_line(r["config"], r["check"], r, r.get("summary", {}).get("steady_median", {})))
        for name, m in r.get("member_summary", {}).items():
            lines.append(_line("  " + name, "", {}, m))
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, launches: int = 3) -> None:
    """Gantt of `launches` consecutive steady launches per chain (a chain of several configs: one round of them, in
    order): one line per CTA (by start time within its launch), coloured by phase (before the wait, staging, loop,
    finish)."""
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
        per_round = len(r.get("members") or [0])  # a chain of several configs: one whole round, from its first
        first = min(-(-SKIP_FIRST // per_round) * per_round, len(traces) - 1)
        sel = traces[first:first + (per_round if per_round > 1 else launches)]
        t0 = sel[0][:, 1].min()
        y = 0
        for rec in sel:
            for c in rec[np.argsort(rec[:, 1], kind="stable")]:
                pts = (c[1:6] - t0).astype(np.float64) / 1e3  # int64 first (see launch_summary)
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

def hold(calls: list, seconds: float, pdl: bool, tiles: int) -> dict:
    """Replay the chain of `calls` (one CUDA graph) back to back for `seconds`: {start, end} in Unix time, to find in
    a sampler's log (the round script runs nvidia-smi beside it)."""
    import time

    import torch

    from edgeprof.fast.w4cuda import use_pdl

    use_pdl(pdl, tiles)
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for fn in calls:
                fn()
        t0 = time.time()
        while time.time() - t0 < seconds:
            for _ in range(20):
                graph.replay()
            torch.cuda.synchronize()
        return {"start": t0, "end": time.time()}
    finally:
        use_pdl(False)


def _build(shape: str, variant: str, splits: int) -> dict:
    """One config's inputs (int4_gemv's tune cache), its traced layers over the weight copies, its twin's layers, and
    the check: a timeline GEMV's y must be bitwise its twin's; a diagnostic one is not checked and says so."""
    import torch
    from int4_gemv import TUNE_SHAPES, _tune_cache

    from edgeprof.fast.w4cuda import DIAGNOSTIC_VARIANTS, TRACE_VARIANTS, W4CudaLinear

    shapes = {name: (k, n) for _, name, k, n in TUNE_SHAPES}
    if shape not in shapes:
        raise ValueError(f"--configs: shape {shape!r} is not one of {sorted(shapes)}")
    if variant not in TRACE_VARIANTS:
        raise ValueError(f"--configs: variant {variant!r} records no timeline; use one of {sorted(TRACE_VARIANTS)}")
    k, n = shapes[shape]
    cache = _tune_cache(shape, k, n)
    diag = variant in DIAGNOSTIC_VARIANTS
    layers = [W4CudaLinear(p, splits=splits, variant=variant, diagnostic=diag) for p in cache["copies"]]
    twins = [W4CudaLinear(p, splits=splits, variant=TRACE_VARIANTS[variant], diagnostic=diag)
             for p in cache["copies"]]
    check = "diagnostic" if diag else (
        "bitwise" if torch.equal(layers[0](cache["x"]), twins[0](cache["x"])) else "FAILED")
    return {"config": f"{shape}:{variant}:{splits}", "shape": shape, "k": k, "n": n, "variant": variant,
            "twin": TRACE_VARIANTS[variant], "splits": layers[0].splits, "x": cache["x"], "layers": layers,
            "twins": twins, "check": check, "bytes": layers[0].nbytes}


def _calls(members: list[dict], key: str, count: int) -> list:
    """The chain: copy i of every member in turn (member order), for i < count."""
    return [lambda li=m[key][i], x=m["x"]: li(x) for i in range(count) for m in members]


def run_config(configs: list[tuple[str, str, int]], repeats: int, pdl: bool, copy_bw: float,
               hold_s: float = 0.0) -> dict:
    """Check, time and trace one chain: of one config's launches over its weight copies, or (several configs, e.g.
    gate_up then down, as a decode step runs them) of their launches in turn, one copy of each per round."""
    import torch

    from edgeprof.fast.kernels import pdl_prefetch_tiles
    from edgeprof.fast.w4cuda import use_pdl
    from edgeprof.timing import time_graph

    members = [_build(*c) for c in configs]
    count = min(len(m["layers"]) for m in members)
    row = {"config": "+".join(m["config"] for m in members), "pdl": pdl, "card": torch.cuda.get_device_name(),
           "copies": count, "members": [{f: m[f] for f in ("config", "shape", "k", "n", "variant", "twin", "splits",
                                                             "check", "bytes")} for m in members]}
    row["check"] = "FAILED" if any(m["check"] == "FAILED" for m in members) else (
        "bitwise" if all(m["check"] == "bitwise" for m in members) else "diagnostic")
    if row["check"] == "FAILED":
        return row
    tiles = pdl_prefetch_tiles() if pdl else 0  # $EDGEPROF_PDL_PREFETCH, as the decoder reads it
    row["prefetch_tiles"] = tiles
    use_pdl(pdl, tiles)
    try:  # the twins first, then the traced chain, whose last replay's records are read below
        twin_st = time_graph(_calls(members, "twins", count), repeats)
        st = time_graph(_calls(members, "layers", count), repeats)
    finally:
        use_pdl(False)
    torch.cuda.synchronize()
    traces = [m["layers"][i].trace().numpy() for i in range(count) for m in members]  # the last replay's, in order
    if hold_s > 0:  # the twins' chain replayed back to back, so a clock / power sampler (nvidia-smi) sees it steady
        row["hold"] = hold(_calls(members, "twins", count), hold_s, pdl, tiles)
    per_round, nbytes = len(members), sum(m["bytes"] for m in members)
    row.update(chain_us=st.p50 * 1e3 * per_round, chain_us_p90=st.p90 * 1e3 * per_round,
               twin_chain_us=twin_st.p50 * 1e3 * per_round, bytes=nbytes,
               frac_copy_bw=nbytes / (st.p50 * per_round * 1e-3) / copy_bw, traces=[t.tolist() for t in traces])
    summarise(row)
    return row


def load(path: Path) -> dict:
    """A run's record (gemv_timeline.json, or gzipped as results/ keeps it)."""
    import gzip

    if path.suffix == ".gz":
        with gzip.open(path, "rt") as f:
            return json.load(f)
    return json.loads(path.read_text())


def replot(path: Path, out_dir: Path) -> int:
    rec = load(path)
    for r in rec["rows"]:  # the summaries again from the raw records, as this version computes them
        if r.get("traces"):
            summarise(r)
    print(f"{rec['gpu']}: copy bandwidth {rec.get('copy_bw', float('nan')) / 1e12:.2f} TB/s; PDL {rec['pdl']}")
    print(format_table(rec["rows"]))
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(rec["rows"], out_dir / "gemv_timeline.png")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="down:clscxt:10,down:clscxgt:10,down:scxt:10,down:nomathxsft:10",
                    help="shape:variant:splits, comma-separated; variants: w4cuda.TRACE_VARIANTS")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--no-pdl", action="store_true", help="plain launches (default: PDL where the GPU has it)")
    ap.add_argument("--hold-s", type=float, default=0.0,
                    help="after each config, replay its untraced chain for this long (for a clock / power sampler)")
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--from", dest="from_json", type=Path,
                    help="no GPU: read a run's gemv_timeline.json (or .json.gz), print its table, redraw its PNG")
    args = ap.parse_args(argv)
    if args.from_json:
        return replot(args.from_json, args.out_dir)
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
    for chain in configs:
        try:
            rows.append(run_config(chain, args.repeats, pdl, copy_bw, args.hold_s))
        except Exception as exc:  # a failed config is a row that says why, not the end of the run
            rows.append({"config": "+".join(":".join(map(str, c)) for c in chain), "check": "FAILED",
                         "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        print("\n".join(format_table(rows[-1:]).splitlines()[2:]), flush=True)
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
