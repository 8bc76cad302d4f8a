"""Where a decode step's time goes, from the torch profiler.

For each profiled step the wall window is a `record_function` range around
`Decoder.step()` (launch + the host read of the token, so every kernel of the step
has finished inside it). Inside that window:

* **busy** = the union of the step's device-activity intervals: CUDA kernels,
  memcpys and memsets on a GPU; on a CPU, top-level ATen operators (those the model
  code called, e.g. aten::linear, with their nested ops inside them), and there
  "kernels" means those operators.
* **idle gap** = wall - busy: the device waits for the host (Python, dispatcher,
  launch latency). This is the launch overhead CUDA graphs remove.
* **per class** (`KERNEL_CLASSES`, matched on the kernel name in order): the busy time
  is split among the classes of the intervals active at each instant (shared equally
  when intervals overlap), so class times sum to busy exactly and

      sum(class_ms) + idle_gap_ms == wall_ms          (checked for every step)

  `sum_ms` per class is the plain sum of durations, which can exceed the class's
  share when kernels overlap (several streams).
* **bytes** per class are analytic (`edgeprof.floor.step_traffic`, touched
  definition): gemv/gemm <- attention + MLP projection weights + lm_head;
  attention <- the KV cache at ctx; norm/elementwise <- norm weights + one
  embedding row; other <- 0. Achieved bandwidth = bytes / class time.

Several steps are profiled after a profiler warm-up and reported per step (mean);
the same number of steps is first timed without the profiler, so the profiler's
own overhead is visible.
"""

from __future__ import annotations

import json
import re
import statistics
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeprof.errors import ConfigError, MeasurementError

GEMM, ATTENTION, ELEMENTWISE, OTHER = "gemv/gemm", "attention", "norm/elementwise", "other"
CLASSES = (GEMM, ATTENTION, ELEMENTWISE, OTHER)

# Matched in this order against the lower-cased kernel (or ATen op) name; first hit wins.
# Attention comes first because attention kernels often contain "gemm"/"cutlass".
KERNEL_CLASSES: tuple[tuple[str, str], ...] = (
    (ATTENTION, r"flash|fmha|attention|attn|sdpa|scaled_dot_product|softmax"),
    (GEMM, r"gemm|gemv|w4a16|nvjet|xmma|cutlass|cublas|splitk|tinygemm|int4pack|marlin|exllama|q4_matmul|"
           r"triton_tem|matmul|::(mm|addmm|bmm|baddbmm|linear|_weight_int4pack_mm)$|^(mm|addmm|bmm)$"),
    (ELEMENTWISE, r"norm|rms|elementwise|vectorized|reduce|silu|gelu|act_and_mul|rotary|rope|catarray|::cat$|"
                  r"copy|index|fill|triton_poi|triton_red|triton_per|::(mul|add|sub|div|pow|mean|rsqrt|neg|"
                  r"where|exp|sigmoid|embedding|argmax|max|sum|clone|to|_to_copy|lt|gt|eq|masked_fill)_?$"),
)
_COMPILED = tuple((cls, re.compile(p)) for cls, p in KERNEL_CLASSES)


def classify(name: str) -> str:
    """Kernel class of a CUDA kernel name or an ATen op name (see KERNEL_CLASSES)."""
    low = name.lower()
    for cls, pattern in _COMPILED:
        if pattern.search(low):
            return cls
    return OTHER


# --------------------------------------------------------------------------------------
# Pure interval arithmetic on a chrome trace
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Activity:
    name: str
    start: float  # us, profiler clock
    end: float

    @property
    def cls(self) -> str:
        return classify(self.name)


def union_length(intervals: list[tuple[float, float]]) -> float:
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted(intervals):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


def split_busy(acts: list[Activity]) -> dict[str, float]:
    """Busy time per class: each instant covered by k intervals gives 1/k of itself
    to each interval's class. The values sum to union_length of the intervals."""
    edges: list[tuple[float, int, str]] = []
    for a in acts:
        if a.end > a.start:
            edges += [(a.start, 1, a.cls), (a.end, -1, a.cls)]
    edges.sort(key=lambda e: (e[0], e[1]))
    out: dict[str, float] = dict.fromkeys(CLASSES, 0.0)
    active: dict[str, int] = defaultdict(int)
    n_active, prev = 0, None
    for t, delta, cls in edges:
        if prev is not None and n_active > 0 and t > prev:
            span = t - prev
            for c, k in active.items():
                if k:
                    out[c] += span * k / n_active
        active[cls] += delta
        n_active += delta
        prev = t
    return out


def top_level_ops(ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """CPU ops not nested inside another op on the same thread (the operators the model
    code called: aten::linear, aten::scaled_dot_product_attention, aten::mul, ...).
    Their children (aten::mm, aten::as_strided, ...) are part of their time."""
    by_tid: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for op in ops:
        by_tid[(op.get("pid"), op.get("tid"))].append(op)
    tops = []
    for evs in by_tid.values():
        evs.sort(key=lambda e: (e["ts"], -e.get("dur", 0)))
        end = float("-inf")
        for ev in evs:
            if ev["ts"] >= end:  # starts after the current top-level op ended
                tops.append(ev)
                end = ev["ts"] + ev.get("dur", 0)
    return tops


def step_windows(trace: dict[str, Any], prefix: str) -> list[tuple[float, float]]:
    wins = [(e["ts"], e["ts"] + e["dur"]) for e in trace.get("traceEvents", [])
            if e.get("cat") == "user_annotation" and str(e.get("name", "")).startswith(prefix) and "dur" in e]
    return sorted(wins)


def device_activities(trace: dict[str, Any], cuda: bool) -> list[Activity]:
    events = [e for e in trace.get("traceEvents", []) if e.get("ph") == "X" and "dur" in e]
    if cuda:
        chosen = [e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    else:
        chosen = top_level_ops([e for e in events if e.get("cat") == "cpu_op"])
    return [Activity(str(e.get("name", "?")), float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in chosen]


def breakdown(trace: dict[str, Any], prefix: str, cuda: bool) -> tuple[list[dict[str, Any]], float]:
    """Per-step buckets from a chrome trace, and the ms of activity outside every window."""
    wins = step_windows(trace, prefix)
    if not wins:
        raise MeasurementError("the profiler trace holds no step windows; the profiler recorded nothing")
    acts = sorted(device_activities(trace, cuda), key=lambda a: a.start)
    steps, attributed = [], 0.0
    for ws, we in wins:
        clipped = [Activity(a.name, max(a.start, ws), min(a.end, we)) for a in acts
                   if a.end > ws and a.start < we]
        per_class = split_busy(clipped)
        busy = union_length([(a.start, a.end) for a in clipped])
        wall = we - ws
        counts: dict[str, int] = dict.fromkeys(CLASSES, 0)
        sums: dict[str, float] = dict.fromkeys(CLASSES, 0.0)
        by_name: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])  # name -> [count, sum us]
        for a in clipped:
            counts[a.cls] += 1
            sums[a.cls] += a.end - a.start
            by_name[a.name][0] += 1
            by_name[a.name][1] += a.end - a.start
        attributed += sum(a.end - a.start for a in clipped)
        step = {
            "wall_ms": wall / 1e3,
            "busy_ms": busy / 1e3,
            "idle_gap_ms": (wall - busy) / 1e3,
            "kernels": len(clipped),
            "class_ms": {c: v / 1e3 for c, v in per_class.items()},
            "class_kernels": counts,
            "class_sum_ms": {c: v / 1e3 for c, v in sums.items()},
            "kernel_groups": {n: {"count": k, "ms": us / 1e3} for n, (k, us) in by_name.items()},
        }
        check_identity(step)
        steps.append(step)
    total = sum(a.end - a.start for a in acts)
    return steps, max(0.0, total - attributed) / 1e3


def check_identity(step: dict[str, Any], tol_ms: float = 1e-6) -> None:
    """The buckets must add up to the step: sum(class) + idle gap == wall."""
    total = sum(step["class_ms"].values()) + step["idle_gap_ms"]
    if abs(total - step["wall_ms"]) > tol_ms * max(1.0, step["wall_ms"]):
        raise MeasurementError(f"explain buckets sum to {total:.6f} ms but the step took {step['wall_ms']:.6f} ms")


def mean_step(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-step averages over the profiled steps (the identity still holds for means)."""
    n = len(steps)
    out: dict[str, Any] = {k: sum(s[k] for s in steps) / n for k in ("wall_ms", "busy_ms", "idle_gap_ms", "kernels")}
    for key in ("class_ms", "class_kernels", "class_sum_ms"):
        out[key] = {c: sum(s[key][c] for s in steps) / n for c in CLASSES}
    return out


def kernel_records(steps: list[dict[str, Any]], class_bytes_: dict[str, int]) -> list[dict[str, Any]]:
    """One record per kernel name: class, launches per step, device ms per step (means over
    the profiled steps), bytes per step and achieved GB/s.

    Bytes come from the shapes and the weight format per class (`class_bytes`); the profiler
    does not say which matrix a kernel read (graph replays carry no op shapes), so a class's
    bytes are split among its kernels in proportion to their device time: the per-kernel
    GB/s is then the class's achieved bandwidth ("bytes_basis" says so)."""
    n = len(steps)
    acc: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for st in steps:
        for name, g in st.get("kernel_groups", {}).items():
            acc[name][0] += g["count"] / n
            acc[name][1] += g["ms"] / n
    class_ms: dict[str, float] = defaultdict(float)
    for name, (_, ms) in acc.items():
        class_ms[classify(name)] += ms
    out = []
    for name, (count, ms) in sorted(acc.items(), key=lambda kv: -kv[1][1]):
        cls = classify(name)
        b = class_bytes_.get(cls, 0) * (ms / class_ms[cls]) if class_ms[cls] > 0 else 0.0
        out.append({"name": name, "class": cls, "count_per_step": count, "device_ms_per_step": ms,
                    "bytes_per_step": b, "achieved_gbs": (b / (ms / 1e3) / 1e9) if ms > 0 and b else None,
                    "bytes_basis": "class bytes (shapes x format) split by device time"})
    return out


def exact_attribution(per_step: dict[str, Any], unprofiled_ms: float, profiled_ms: float) -> dict[str, Any]:
    """Buckets that sum to the UNPROFILED step.

    The profiler adds host time (CUPTI callbacks on every launch), which lands in the
    profiled window's idle gap; device kernel times are taken as unaffected. So
    host gap = unprofiled step - device busy. When the busy time exceeds the unprofiled
    step (the profiler stretched the kernels too), every class is scaled down by
    unprofiled / busy and the host gap is 0: the scale is reported, not hidden.

        sum(class_ms) + host_gap_ms == step_ms == unprofiled median     (checked)
    """
    busy = per_step["busy_ms"]
    scale = min(1.0, unprofiled_ms / busy) if busy > 0 else 1.0
    class_ms = {c: v * scale for c, v in per_step["class_ms"].items()}
    out = {"step_ms": unprofiled_ms, "class_ms": class_ms, "busy_ms": busy * scale,
           "host_gap_ms": max(0.0, unprofiled_ms - busy * scale), "device_time_scale": scale,
           "profiler_overhead_ms": profiled_ms - unprofiled_ms,
           "basis": "unprofiled median step; device busy from the profiled steps"}
    total = sum(class_ms.values()) + out["host_gap_ms"]
    if abs(total - unprofiled_ms) > 1e-6 * max(1.0, unprofiled_ms):
        raise MeasurementError(f"exact buckets sum to {total:.6f} ms but the step took {unprofiled_ms:.6f} ms")
    return out


def class_bytes(traffic: Any) -> dict[str, int]:
    """Analytic bytes per kernel class from the touched floor's traffic groups."""
    t = traffic.touched
    return {GEMM: t["attention"] + t["mlp"] + t["lm_head"], ATTENTION: t["kv_cache"],
            ELEMENTWISE: t["norms"] + t["embedding"], OTHER: 0}


def add_bandwidth(per_step: dict[str, Any], traffic: Any, bandwidth_bytes_per_s: float) -> dict[str, Any]:
    """Bytes per class, achieved GB/s per class, and the floor against wall and busy."""
    by_class = class_bytes(traffic)
    per_step["class_bytes"] = by_class
    per_step["class_gbs"] = {c: (by_class[c] / (per_step["class_ms"][c] / 1e3) / 1e9
                                 if per_step["class_ms"][c] > 0 and by_class[c] else None) for c in CLASSES}
    touched_floor_ms = 1e3 * traffic.touched_bytes / bandwidth_bytes_per_s
    return {
        "peak_bytes_per_s": bandwidth_bytes_per_s,
        "touched_bytes": traffic.touched_bytes,
        "paper_bytes": traffic.paper_bytes,
        "floor_ms": 1e3 * traffic.paper_bytes / bandwidth_bytes_per_s,
        "touched_floor_ms": touched_floor_ms,
        "achieved_gbs_wall": traffic.touched_bytes / (per_step["wall_ms"] / 1e3) / 1e9,
        "achieved_gbs_busy": traffic.touched_bytes / (per_step["busy_ms"] / 1e3) / 1e9 if per_step["busy_ms"] else None,
        "fraction_of_wall": touched_floor_ms / per_step["wall_ms"],
        "fraction_of_busy": touched_floor_ms / per_step["busy_ms"] if per_step["busy_ms"] else None,
    }


# --------------------------------------------------------------------------------------
# Running the profiler on a decoder
# --------------------------------------------------------------------------------------
STEP_PREFIX = "edgeprof_step_"
PROFILER_WARMUP = 5  # steps run under the profiler before the first window


@dataclass
class ExplainOptions:
    model: str
    backend: str
    ctx: int
    steps: int = 10  # profiled steps
    warmup: int = 5  # untimed decode steps before anything is measured
    device: str | None = None
    gpu: str | None = None
    synthetic: bool | None = None
    trace_out: Path | None = None


def profile_decoder(dec: Any, steps: int, cuda: bool, trace_out: Path | None = None) -> dict[str, Any]:
    """Profile `steps` decode steps of a ready decoder; returns the chrome trace (dict)
    and the StepResult wall times measured inside the profiled windows."""
    from torch.profiler import ProfilerActivity, profile, record_function

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    # Steps under the profiler first so CUPTI/Kineto start-up is not in a window (two were
    # not enough: the int4 step's first windows still held 0.5 ms of profiler warm-up).
    with profile(activities=activities) as prof:
        for _ in range(PROFILER_WARMUP):
            dec.step()
        walls = []
        for i in range(steps):
            with record_function(f"{STEP_PREFIX}{i}"):
                walls.append(dec.step().wall_ms)
    with tempfile.TemporaryDirectory(prefix="edgeprof-explain-") as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        text = path.read_text()
    if trace_out is not None:
        from edgeprof.records import atomic_write_text

        atomic_write_text(Path(trace_out), text)
    return {"trace": json.loads(text), "step_wall_ms": walls}


def run_explain(opts: ExplainOptions) -> dict[str, Any]:
    import os

    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # Kineto's start/stop chatter on stderr: errors only
    from edgeprof.backends import registry
    from edgeprof.bench import CellSpec, fill_tokens, plan, validate
    from edgeprof.floor import check_ctx, parse_format, step_traffic
    from edgeprof.sources import load_model

    if opts.steps < 1:
        raise ConfigError("steps", f"must be >= 1 profiled steps, got {opts.steps}")
    # The same validation as `edgeprof bench` (backend here, device, ctx), before any load.
    info, _, device = validate(CellSpec(opts.model, opts.backend, opts.ctx, steps=opts.steps, warmup=opts.warmup,
                                        device=opts.device, gpu=opts.gpu, synthetic=opts.synthetic))
    cuda = device.startswith("cuda")
    gpu_key, gpu_name, bandwidth = _bandwidth(device, opts.gpu)
    loaded = load_model(opts.model, device, synthetic=opts.synthetic)
    shape = loaded.shape
    check_ctx(shape, opts.ctx)

    # Bench's plan: fill to ctx-1, room for every step that follows (profiler warm-ups too).
    prefill, max_ctx = plan(opts.ctx, 2 * opts.steps + PROFILER_WARMUP, opts.warmup, shape.max_ctx)
    dec = registry.create(opts.backend, loaded, device, max_ctx)
    try:
        dec.prefill(fill_tokens(loaded, prefill))
        capture_s = dec.warmup()
        for _ in range(opts.warmup):
            dec.step()
        unprofiled = dec.time_steps(opts.steps).wall_ms
        prof = profile_decoder(dec, opts.steps, cuda, opts.trace_out)
        dinfo = dec.info()
    finally:
        dec.close()

    steps, outside_ms = breakdown(prof["trace"], STEP_PREFIX, cuda)
    per_step = mean_step(steps)
    traffic = step_traffic(shape, parse_format(dinfo.weights or info.weights), opts.ctx)
    floor = add_bandwidth(per_step, traffic, bandwidth)
    notes = []
    if cuda and per_step["kernels"] == 0:
        notes.append("the profiler saw no CUDA kernels inside the step windows (CUPTI may not trace kernels "
                      "inside CUDA graphs with this driver/torch); busy time is then under-counted")
    if not cuda:
        notes.append("CPU run: 'kernels' are the top-level ATen operators and busy is the time inside them; "
                     "the idle gap is Python and framework time between operators")
    pdl = (dinfo.notes or {}).get("pdl") or {}
    if pdl.get("gemv") or pdl.get("triton"):
        notes.append("programmatic dependent launch is on: a kernel starts before the one before it ends and waits "
                     "on the device for its inputs, so its interval includes that wait and the class times lean "
                     "toward the waiting kernels; EDGEPROF_PDL=0 gives the attribution without overlap")
    unprof_med = statistics.median(unprofiled)
    exact = exact_attribution(per_step, unprof_med, statistics.median(s["wall_ms"] for s in steps))
    kernels = kernel_records(steps, per_step["class_bytes"])
    for st in steps:  # per-name groups live in `kernels` (means); keep the per-step records small
        st.pop("kernel_groups", None)
    overhead = per_step["wall_ms"] - unprof_med
    if cuda and overhead > 0.05 * unprof_med:
        notes.append(f"the profiler adds {overhead:.3f} ms of host time per step (profiled window "
                     f"{per_step['wall_ms']:.3f} ms vs {unprof_med:.3f} ms without it); that time sits in the "
                     f"host gap. Against the unprofiled step the gap is {unprof_med - per_step['busy_ms']:.3f} ms "
                     "(device time is unaffected by host overhead)")
    from edgeprof.bench import versions

    return {
        "kind": "explain",
        "versions": versions(opts.backend),
        "host_cpu": _host_cpu(),
        "model": opts.model,
        "model_label": loaded.label,
        "synthetic": bool(loaded.synthetic),
        "backend": opts.backend,
        "weights": dinfo.weights or info.weights,
        "ctx": opts.ctx,
        "prefill_tokens": prefill,
        "device": device,
        "gpu": gpu_key,
        "gpu_name": gpu_name,
        "activity": "CUDA kernels + memcpy/memset (torch.profiler/CUPTI)" if cuda else "CPU top-level ATen operators",
        "profiled_steps": len(steps),
        "capture_s": capture_s or dinfo.capture_s,
        "unprofiled_wall_ms": {"median": unprof_med, "raw": unprofiled},
        "profiled_step_wall_ms": {"median": statistics.median(prof["step_wall_ms"]), "raw": prof["step_wall_ms"]},
        "profiler_overhead_ms": overhead,
        "idle_gap_vs_unprofiled_ms": unprof_med - per_step["busy_ms"],
        # buckets against the UNPROFILED step (what edgeprof predict uses); per_step is the profiled window
        "exact": exact,
        "kernels": kernels,
        "sm_clock_mhz": _sm_clock(device),
        "per_step": per_step,
        "steps": steps,
        # device time outside every step's window (e.g. the token read's copy), whole profiled window
        "unattributed_ms": outside_ms,
        "unattributed_ms_per_step": outside_ms / len(steps) if steps else None,
        "floor": floor,
        "class_patterns": dict(KERNEL_CLASSES),
        "notes": notes,
    }


def _sm_clock(device: str) -> float | None:
    """The SM clock while profiling (NVML), for scaling fixed per-kernel costs; None if unknown."""
    if not device.startswith("cuda"):
        return None
    try:
        from edgeprof.telemetry import gpu_snapshot

        return (gpu_snapshot() or {}).get("sm_clock_mhz")
    except Exception:  # context only
        return None


def _host_cpu() -> dict[str, Any] | None:
    try:
        from edgeprof.telemetry import host_cpu

        return host_cpu()
    except Exception:  # context only: never fail an explain on it
        return None


def _bandwidth(device: str, gpu: str | None) -> tuple[str, str | None, float]:
    """(catalog key, device name, datasheet bytes/s) through the one GPU resolver."""
    from edgeprof.hardware_loader import resolve_gpu

    spec, name = resolve_gpu(device, gpu)
    if gpu:
        name = spec.name  # the catalog's name for an entry picked by hand
    elif not device.startswith("cuda"):
        name = None  # explain names a CPU run by its device, not its CPU model
    return spec.key, name, spec.bandwidth_bytes_per_s


def format_result(r: dict[str, Any]) -> str:
    p, f = r["per_step"], r["floor"]
    lines = [
        f"explain {r['backend']} ({r['weights']}) on {r['model_label']}, ctx {r['ctx']}, "
        f"{r['gpu_name'] or r['device']}; {r['profiled_steps']} profiled steps ({r['activity']})",
        f"wall step (profiled) {p['wall_ms']:.3f} ms; without profiler {r['unprofiled_wall_ms']['median']:.3f} ms",
        f"{'bucket':<18} {'ms/step':>9} {'share':>7} {'kernels':>8} {'MB read':>9} {'GB/s':>8}",
    ]
    wall = p["wall_ms"]
    for c in CLASSES:
        gbs = p["class_gbs"][c]
        lines.append(f"{c:<18} {p['class_ms'][c]:>9.3f} {p['class_ms'][c] / wall:>7.1%} "
                     f"{p['class_kernels'][c]:>8.1f} {p['class_bytes'][c] / 1e6:>9.1f} "
                     f"{'-' if gbs is None else f'{gbs:.1f}':>8}")
    lines.append(f"{'host gap (idle)':<18} {p['idle_gap_ms']:>9.3f} {p['idle_gap_ms'] / wall:>7.1%}")
    lines.append(f"{'= wall step':<18} {wall:>9.3f} {1:>7.1%} {p['kernels']:>8.1f}")
    e = r.get("exact")
    if e:
        lines.append(f"against the unprofiled step {e['step_ms']:.3f} ms (profiler overhead "
                     f"{e['profiler_overhead_ms']:+.3f} ms/step, device time scale {e['device_time_scale']:.3f}):")
        lines.append("  " + ", ".join(f"{c} {v:.3f}" for c, v in e["class_ms"].items())
                     + f", host gap {e['host_gap_ms']:.3f} ms")
    lines.append(f"busy {p['busy_ms']:.3f} ms ({p['busy_ms'] / wall:.1%} of the step); touched floor "
                 f"{f['touched_floor_ms']:.3f} ms at {f['peak_bytes_per_s'] / 1e9:.0f} GB/s: "
                 f"{f['fraction_of_wall']:.1%} of the wall step"
                 + (f", {f['fraction_of_busy']:.1%} of the busy time" if f['fraction_of_busy'] else ""))
    lines += [f"note: {n}" for n in r["notes"]]
    return "\n".join(lines)
