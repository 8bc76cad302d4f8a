"""PREDICTED per-token latency on a GPU you do not have, from an `explain` profile.

Pure: no torch, no I/O. Every number this module returns is a PREDICTION and is
labelled so (`label == "PREDICTED"`).

The mechanism (the seed paper's: a decode step is many small kernels plus host time):

1. **Kernels.** Each kernel group g of the source profile (name, class, launches n,
   device ms T, bytes B per step) splits into a fixed part and a streaming part:

       fixed  = n * t0_src                        t0: fixed per-kernel cost (calibration)
       stream = T - fixed
       f      = min(1, (B / stream) / (a * BW_src))   fraction of the attainable bandwidth
                                                      the kernel reached (a: calibration)

   The streaming part is memory-limited for the fraction f of its time and limited by
   the SMs (issue, dequant ALU, latency) for the rest, so on the target

       T' = n * t0_src * clk_src/clk_tgt
            + stream * (f * BW_src/BW_tgt + (1 - f) * SMs_src*clk_src / (SMs_tgt*clk_tgt))

2. **Host.** Eager backends: a host time h per kernel launch (Python, dispatcher, launch),
   fitted so that the simulated source step equals the measured unprofiled step. Graph
   backends: the step's non-kernel time r = step - busy (replay launch, token read and the
   graph's inter-kernel gaps). On the target the host time is multiplied by the user's
   host-CPU factor (target CPU time / source CPU time; 1 = the same host).
3. **Overlap.** Eager: the host launches kernel i at (i+1) h; the device starts it at
   max(launch, previous end). The step ends with the last kernel. Host-bound vs
   device-bound is whichever timeline finishes last: it comes out of the simulation,
   it is not assumed. Graph: launch, then the device runs the graph: step = r' + sum T'.
4. **Band.** Device-bound: the source's measured step spread plus the calibration's
   spread of attainable-bandwidth fractions across launch sizes. Host-bound: the spread of
   host time measured across runs and machines (`Params.host_spread`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

LABEL = "PREDICTED"
UNBACKED_CAVEAT = ("no measurement backs predictions for this GPU (unified memory shared with the CPU, "
                   "a different host, a different memory system): treat it as a rough guide")


@dataclass(frozen=True)
class Card:
    """What the model needs of a GPU (from configs/gpus.yaml)."""

    key: str
    bandwidth_gbs: float
    sm_count: int
    sm_mhz: float
    unified_memory: bool = False

    @property
    def sm_throughput(self) -> float:
        return self.sm_count * self.sm_mhz


@dataclass(frozen=True)
class KernelGroup:
    name: str
    cls: str
    count: float  # launches per step
    device_ms: float  # per step
    bytes: float  # per step


@dataclass(frozen=True)
class Profile:
    """One measured cell reduced to what the model uses."""

    backend: str
    ctx: int
    gpu: str
    step_ms: float  # unprofiled median
    busy_ms: float  # device busy per step (kernels' union)
    groups: tuple[KernelGroup, ...]
    graph: bool  # the step is replayed as CUDA graph(s)
    step_spread: float = 0.0  # relative half-width of the measured step (p10..p90 / 2 / median)
    source: str = ""


@dataclass(frozen=True)
class Params:
    """Model parameters, each from calibration data (never from a validated cell)."""

    attainable_fraction: float = 0.90  # copy/GEMV plateau over datasheet (calibration sweep)
    fixed_us: float = 2.0  # fixed per-kernel device cost at the source clock (sweep intercept)
    device_band: float = 0.08  # relative: spread of attainable fractions across sizes/cards
    host_spread: tuple[float, float] = (0.9, 1.6)  # host time range / this host (runs, machines)
    sources: dict[str, str] = field(default_factory=dict)  # parameter -> which data fitted it


@dataclass
class Prediction:
    backend: str
    ctx: int
    from_gpu: str
    to_gpu: str
    predicted_ms: float
    band_ms: tuple[float, float]
    bound: str  # "host" | "device"
    device_ms: float
    host_ms: float
    measured_from_ms: float
    host_cpu_factor: float
    per_class_ms: dict[str, float]
    caveats: list[str] = field(default_factory=list)
    label: str = LABEL

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------
def retime_group(g: KernelGroup, src: Card, tgt: Card, p: Params) -> float:
    """Device ms per step of one kernel group on the target (see the module docstring)."""
    if g.device_ms <= 0 or g.count <= 0:
        return 0.0
    # The fixed part cannot exceed what was measured (tiny kernels are all fixed cost).
    fixed = min(g.count * p.fixed_us / 1e3, g.device_ms)
    stream = g.device_ms - fixed
    f = memory_fraction(g.bytes, stream, src, p)
    clk = src.sm_mhz / tgt.sm_mhz
    ratio = f * src.bandwidth_gbs / tgt.bandwidth_gbs + (1 - f) * src.sm_throughput / tgt.sm_throughput
    return fixed * clk + stream * ratio


def memory_fraction(nbytes: float, stream_ms: float, src: Card, p: Params) -> float:
    """Fraction of the attainable bandwidth a kernel's streaming time reached (0..1)."""
    if stream_ms <= 0 or nbytes <= 0:
        return 0.0
    achieved = nbytes / (stream_ms / 1e3) / 1e9  # GB/s
    return min(1.0, achieved / (p.attainable_fraction * src.bandwidth_gbs))


# --------------------------------------------------------------------------------------
# Host and overlap
# --------------------------------------------------------------------------------------
def interleave(groups: tuple[KernelGroup, ...], group_ms: list[float]) -> list[float]:
    """A step's kernel durations in launch order, from each group's ms per step: each
    group's launches spread evenly over the step (a decoder repeats the same layer
    pattern, so groups interleave)."""
    slots: list[tuple[float, float]] = []
    for g, ms in zip(groups, group_ms, strict=True):
        n = max(1, round(g.count))
        slots += [((i + 0.5) / n, ms / n) for i in range(n)]
    return [d for _, d in sorted(slots)]


def simulate_eager(kernels_ms: list[float], host_per_kernel_ms: float) -> tuple[float, float]:
    """(step ms, host ms): the host launches kernel i at (i+1)*h; the device runs it from
    max(launch, end of kernel i-1)."""
    end = 0.0
    for i, d in enumerate(kernels_ms):
        end = max((i + 1) * host_per_kernel_ms, end) + d
    return max(end, len(kernels_ms) * host_per_kernel_ms), len(kernels_ms) * host_per_kernel_ms


def fit_host_per_kernel(kernels_ms: list[float], step_ms: float) -> float:
    """h such that the simulated step equals the measured step (bisection; monotone in h).
    0 when the kernels alone already fill the step (device-bound source)."""
    if not kernels_ms or simulate_eager(kernels_ms, 0.0)[0] >= step_ms:
        return 0.0
    lo, hi = 0.0, step_ms / len(kernels_ms)
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if simulate_eager(kernels_ms, mid)[0] < step_ms else (lo, mid)
    return (lo + hi) / 2


# --------------------------------------------------------------------------------------
# The prediction
# --------------------------------------------------------------------------------------
def host_per_kernel(prof: Profile) -> float:
    """The host's launch + Python time per kernel of an eager profile (fitted to its measured step)."""
    return fit_host_per_kernel(interleave(prof.groups, [g.device_ms for g in prof.groups]), prof.step_ms)


def predict(prof: Profile, src: Card, tgt: Card, p: Params | None = None, host_cpu_factor: float = 1.0,
            measured_gpus: tuple[str, ...] = ("h100-sxm", "h200"), eager_host_per_kernel_ms: float | None = None
            ) -> Prediction:
    """`eager_host_per_kernel_ms` runs `prof`'s kernels EAGER with that host cost per launch (a runner swap:
    e.g. a graph-replayed profile's kernels launched the way transformers' eager loop launches them)."""
    p = p or Params()
    if eager_host_per_kernel_ms is not None:
        prof = replace(prof, graph=False)
    if host_cpu_factor <= 0:
        raise ValueError(f"host_cpu_factor must be > 0, got {host_cpu_factor}")
    new_ms = [retime_group(g, src, tgt, p) for g in prof.groups]
    per_class: dict[str, float] = {}
    for g, ms in zip(prof.groups, new_ms, strict=True):
        per_class[g.cls] = per_class.get(g.cls, 0.0) + ms
    device = sum(new_ms)
    if prof.graph:
        # Non-kernel time of a replayed step: host (launch, token read) + in-graph gaps. It
        # is charged to the host (scaled by the CPU factor) and by the clock ratio for the gaps.
        rest = max(0.0, prof.step_ms - prof.busy_ms)
        host = rest * host_cpu_factor
        step = device + rest * min(1.0, src.sm_mhz / tgt.sm_mhz) * host_cpu_factor
        bound = "host" if host > device else "device"
    else:
        h = host_per_kernel(prof) if eager_host_per_kernel_ms is None else eager_host_per_kernel_ms
        tgt_seq = interleave(prof.groups, new_ms)
        step, host = simulate_eager(tgt_seq, h * host_cpu_factor)
        # Host-bound when removing device time would barely change the step (host finishes last).
        bound = "host" if host >= 0.5 * step and host > device else "device"
    band = _band(step, host, bound, prof, p)
    caveats = []
    if tgt.key not in measured_gpus:
        caveats.append(f"{tgt.key}: " + (UNBACKED_CAVEAT if tgt.unified_memory else
                                         "no measurement backs predictions for this GPU (edgeprof measured only "
                                         f"{', '.join(measured_gpus)}): datasheet bandwidth and clocks only"))
    return Prediction(prof.backend, prof.ctx, src.key, tgt.key, step, band, bound, device, host, prof.step_ms,
                      host_cpu_factor, per_class, caveats)


def _band(step: float, host: float, bound: str, prof: Profile, p: Params) -> tuple[float, float]:
    rel = prof.step_spread + p.device_band
    lo, hi = step * (1 - rel), step * (1 + rel)
    if bound == "host":
        # The host's share moves with the machine: runs and VMs measured this spread.
        lo = min(lo, step - host + host * p.host_spread[0])
        hi = max(hi, step - host + host * p.host_spread[1])
    return (lo, hi)


# --------------------------------------------------------------------------------------
# Reading explain records (dicts already loaded by the caller)
# --------------------------------------------------------------------------------------
def profile_from_explain(r: dict[str, Any], graph: bool | None = None) -> Profile:
    """A Profile from an `edgeprof explain` record: per-kernel records when it has them,
    else one group per kernel class (older records)."""
    unprof = r["unprofiled_wall_ms"]
    step = float(unprof["median"])
    raw = sorted(float(x) for x in unprof.get("raw") or [step])
    spread = (_quantile(raw, 0.9) - _quantile(raw, 0.1)) / 2 / step if len(raw) > 1 else 0.0
    ps = r["per_step"]
    exact = r.get("exact") or {}
    scale = float(exact.get("device_time_scale", min(1.0, step / ps["busy_ms"]) if ps["busy_ms"] else 1.0))
    if r.get("kernels"):
        groups = tuple(KernelGroup(k["name"], k["class"], float(k["count_per_step"]),
                                   float(k["device_ms_per_step"]) * scale, float(k.get("bytes_per_step") or 0))
                       for k in r["kernels"])
    else:
        groups = tuple(KernelGroup(c, c, float(ps["class_kernels"][c]), float(ps["class_ms"][c]) * scale,
                                   float(ps.get("class_bytes", {}).get(c) or 0))
                       for c in ps["class_ms"] if ps["class_kernels"][c] > 0)
    if graph is None:
        graph = bool(r.get("capture_s")) and float(r["capture_s"]) > 0
    return Profile(str(r["backend"]), int(r["ctx"]), str(r["gpu"]), step, float(ps["busy_ms"]) * scale, groups,
                   graph, spread, str(r.get("source", "")))


def _quantile(xs: list[float], q: float) -> float:
    pos = q * (len(xs) - 1)
    i = int(pos)
    return xs[i] if i + 1 >= len(xs) else xs[i] + (xs[i + 1] - xs[i]) * (pos - i)


def card_from_spec(spec: Any) -> Card:
    """A Card from a hardware.GPUSpec (which must carry sm_count and sm_boost_mhz)."""
    if not spec.sm_count or not spec.sm_boost_mhz:
        raise ValueError(f"gpu {spec.key} has no sm_count/sm_boost_mhz in configs/gpus.yaml; add them to predict")
    return Card(spec.key, spec.bandwidth_gbs, int(spec.sm_count), float(spec.sm_boost_mhz), spec.unified_memory)


def params_from_dict(d: dict[str, Any]) -> Params:
    """Params from configs/predict.yaml's `model` mapping (missing keys keep defaults)."""
    base = Params()
    return Params(attainable_fraction=float(d.get("attainable_fraction", base.attainable_fraction)),
                  fixed_us=float(d.get("fixed_us", base.fixed_us)),
                  device_band=float(d.get("device_band", base.device_band)),
                  host_spread=tuple(d.get("host_spread", base.host_spread)),  # type: ignore[arg-type]
                  sources=dict(d.get("sources", {})))


def format_predictions(preds: list[Prediction]) -> str:
    lines = [f"{LABEL} ms/step (not measured): model in edgeprof/predict.py",
             f"{'backend':<20}{'ctx':>6}  {'from':<10}{'to':<12}{'PREDICTED':>10}  {'band':<17}"
             f"{'bound':<7}{'device':>8}{'host':>8}{'measured src':>13}"]
    for q in preds:
        band = f"[{q.band_ms[0]:.2f}, {q.band_ms[1]:.2f}]"
        lines.append(f"{q.backend:<20}{q.ctx:>6}  {q.from_gpu:<10}{q.to_gpu:<12}{q.predicted_ms:>10.2f}  {band:<17}"
                     f"{q.bound:<7}{q.device_ms:>8.2f}{q.host_ms:>8.2f}{q.measured_from_ms:>13.2f}")
    caveats = sorted({c for q in preds for c in q.caveats})
    lines += [f"caveat: {c}" for c in caveats]
    return "\n".join(lines)
