"""A/B of one decode intervention over fresh sessions, with a bootstrap CI.

Protocol (the seed paper's, arXiv 2605.30571):

* Every session is a **fresh process** (`python -m edgeprof.ab --worker ...`): new CUDA
  context, new allocator, new clocks history. It loads the model once and runs both
  arms on it, one after the other; the order alternates between sessions
  (even: control first, odd: treatment first) so slow drift (clocks, temperature)
  cancels instead of biasing one arm.
* Each arm is one `edgeprof.bench.run_cell` on the session's loaded model: fill the
  KV cache to ctx-1 tokens, capture/compile (timed apart), `warmup` untimed steps,
  then `steps` timed steps; the arm's value is the median wall ms/step. Both arms
  pass the correctness gate in the first session (same code and weights after).
* Per session, ratio = median(control) / median(treatment) (> 1: the treatment is faster).
* Result: the median of the session ratios and its 95% bootstrap CI
  (`scipy.stats.bootstrap`, BCa; percentile if BCa degenerates on tiny N).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgeprof.errors import BackendUnavailableError, ConfigError, MeasurementError, UnknownChoiceError


@dataclass(frozen=True)
class Intervention:
    name: str
    control: str  # backend without the intervention
    treatment: str  # backend with it
    summary: str
    needs_cuda: bool = False
    machinery_only: bool = False  # a test of the A/B machinery, not a finding
    paper_key: str | None = None  # key in configs/paper_figures.yaml


INTERVENTIONS: dict[str, Intervention] = {
    i.name: i
    for i in [
        Intervention("cuda-graphs", "hf-static", "hf-graph",
                     "one static-cache decode step captured as a CUDA graph and replayed, vs launched op by op",
                     needs_cuda=True, paper_key="cuda_graphs"),
        Intervention("torch-compile", "hf-static", "hf-compile",
                     "torch.compile(mode=reduce-overhead) of the static-cache step, vs eager launches",
                     needs_cuda=True),
        Intervention("fast", "hf-graph", "edgeprof-fast",
                     "edgeprof's own whole-step CUDA graph decoder, vs transformers + CUDA graph", needs_cuda=True),
        Intervention("cpu-smoke", "hf-eager", "hf-static",
                     "MACHINERY TEST ONLY: dynamic vs static cache, runs on CPU so CI can exercise fresh-process "
                     "sessions, alternation and the bootstrap; not a finding", machinery_only=True),
    ]
}


def get_intervention(name: str) -> Intervention:
    if name not in INTERVENTIONS:
        raise UnknownChoiceError("intervention", name, INTERVENTIONS)
    return INTERVENTIONS[name]


def parse_pair(text: str) -> tuple[str, str]:
    from edgeprof.backends import registry

    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise ConfigError("backend-pair", f"expected CONTROL,TREATMENT (e.g. hf-static,hf-graph), got {text!r}")
    for p in parts:
        registry.get(p)
    if parts[0] == parts[1]:
        raise ConfigError("backend-pair", f"control and treatment are both {parts[0]!r}; pick two backends")
    return parts[0], parts[1]


# --------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------
def session_ratio(control_ms: list[float], treatment_ms: list[float]) -> float:
    import numpy as np

    return float(np.median(control_ms) / np.median(treatment_ms))


def bootstrap_median_ci(ratios: list[float], confidence: float = 0.95, n_resamples: int = 10_000,
                        seed: int = 0) -> dict[str, Any]:
    """Median of the session ratios and its bootstrap CI, via scipy.stats.bootstrap."""
    import warnings

    import numpy as np
    from scipy import stats

    data = np.asarray(ratios, dtype=float)
    if data.size < 2:
        raise MeasurementError(f"a bootstrap CI needs at least 2 sessions, got {data.size}; use --sessions 2 or more")
    median = float(np.median(data))
    if np.all(data == data[0]):  # no spread: every resample has the same median
        return {"median": median, "ci": [median, median], "method": "degenerate (all ratios equal)",
                "confidence": confidence, "n_resamples": 0, "seed": seed}
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa warns on tiny N; we fall back and say so
            res = stats.bootstrap((data,), np.median, confidence_level=confidence, n_resamples=n_resamples,
                                  method=method, vectorized=True, rng=np.random.default_rng(seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(lo) and np.isfinite(hi):
            return {"median": median, "ci": [lo, hi], "method": method, "confidence": confidence,
                    "n_resamples": n_resamples, "seed": seed, "standard_error": float(res.standard_error)}
    raise MeasurementError("the bootstrap CI is undefined for these session ratios")


# --------------------------------------------------------------------------------------
# One arm, one session (runs inside the fresh worker process)
# --------------------------------------------------------------------------------------
def measure_arm(loaded: Any, backend: str, spec: dict[str, Any], reference: Any = None,
                gate: bool = False) -> dict[str, Any]:
    """One arm through `edgeprof.bench.run_cell` on the session's loaded model (the bench
    protocol: fill to ctx-1, capture/compile apart, `warmup` untimed, `steps` timed)."""
    from edgeprof.bench import CellSpec, run_cell

    cell = CellSpec(model=spec["model"], backend=backend, ctx=spec["ctx"], steps=spec["steps"],
                    warmup=spec["warmup"], device=spec["device"], synthetic=spec.get("synthetic"), gate=gate,
                    quality=False)
    rec = run_cell(cell, command=f"edgeprof ab session {spec['index']} arm {backend}", loaded=loaded,
                   reference=reference)
    if rec["status"] != "ok":
        raise MeasurementError(f"session {spec['index']}, arm {backend}: {rec['error']}")
    wall, gpu = rec["wall_ms"], rec["gpu_ms"]
    return {"backend": backend, "wall_ms": wall, "gpu_ms": gpu, "median_wall_ms": _median(wall),
            "median_gpu_ms": _median(gpu) if gpu else None, "stats": rec["stats"], "capture_s": rec["capture_s"],
            "prefill_tokens": rec.get("prefill_tokens"), "weights": rec["weights"],
            "resident_weight_bytes": rec["resident_weight_bytes"], "peak_mem_bytes": rec["peak_mem_bytes"],
            "kernel_correctness": rec["kernel_correctness"], "floor": rec["floor"],
            "telemetry_before": rec["telemetry_before"],
            "telemetry_after": rec["telemetry_after"], "versions": rec["versions"], "gpu": rec["gpu"],
            "gpu_name": rec["gpu_name"], "model_label": rec["model_label"], "synthetic": rec["synthetic"]}


def _median(xs: list[float]) -> float:
    import statistics

    return float(statistics.median(xs))


def _free(device: str) -> None:
    from edgeprof.backends.base import free_memory

    free_memory(sync=device.startswith("cuda"))


def run_session(spec: dict[str, Any]) -> dict[str, Any]:
    """Worker body: load once, run the arms in `spec['order']`, return raw results.
    The correctness gate runs in the first session only (same code, same weights in
    every session; it costs a reference decode)."""
    from edgeprof.backends import registry
    from edgeprof.sources import load_model

    device = spec["device"]
    gate = bool(spec.get("gate"))
    t0 = time.perf_counter()
    loaded = load_model(spec["model"], device, synthetic=spec.get("synthetic"))
    load_s = time.perf_counter() - t0
    reference = None  # bench builds the kernel-correctness reference for each arm's own weights
    arms: dict[str, Any] = {}
    for i, backend in enumerate(spec["order"]):
        # arms whose backends leave the weights alone share one load (a 7B loads once per session)
        if i > 0 and not registry.can_share_model(backend, spec["order"][0]):
            del loaded  # a quantising backend changed the weights in place: load afresh
            _free(device)
            loaded = load_model(spec["model"], device, synthetic=spec.get("synthetic"))
        arms[backend] = measure_arm(loaded, backend, spec, reference, gate)
        _free(device)
    first = arms[spec["order"][0]]
    return {"pid": os.getpid(), "order": spec["order"], "arms": arms, "load_s": load_s,
            "model_label": first["model_label"], "synthetic": bool(first["synthetic"]),
            "gpu": first["gpu"], "gpu_name": first["gpu_name"], **(first["versions"] or {})}


def _worker_main(argv: list[str]) -> int:
    """`python -m edgeprof.ab --worker SPEC.json OUT.json`."""
    from edgeprof.errors import EdgeprofError

    spec = json.loads(Path(argv[1]).read_text())
    try:
        result = run_session(spec)
    except EdgeprofError as exc:  # one line for the parent to quote, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    from edgeprof.records import write_json_atomic

    write_json_atomic(argv[2], result, indent=None)
    return 0


# --------------------------------------------------------------------------------------
# The parent: spawn sessions, aggregate
# --------------------------------------------------------------------------------------
def default_device() -> str:
    from edgeprof.bench import default_device as bench_default

    return bench_default()


def check_runnable(intervention: Intervention, control: str, treatment: str, device: str) -> None:
    """Fail before spawning anything when an arm cannot run here, and say why."""
    from edgeprof.backends import registry

    hint = ""
    if intervention.needs_cuda and (control, treatment) == (intervention.control, intervention.treatment):
        hint = (f"; the {intervention.name!r} intervention needs an NVIDIA GPU (CUDA graphs and reduce-overhead "
                "compile do not exist on CPU). To exercise the A/B machinery on this machine use "
                "--intervention cpu-smoke")
        if not device.startswith("cuda"):
            raise BackendUnavailableError(treatment, f"device is {device!r}{hint}")
    for b in (control, treatment):
        try:
            registry.require(b)
        except BackendUnavailableError as exc:
            raise BackendUnavailableError(b, exc.reason + hint) from exc


@dataclass
class ABOptions:
    intervention: str
    model: str
    ctx: int
    sessions: int = 10
    steps: int = 30
    warmup: int = 5
    pair: tuple[str, str] | None = None
    device: str | None = None
    synthetic: bool | None = None
    session_timeout_s: float = 600.0
    seed: int = 0
    gate: bool = True  # correctness gate of both arms in the first session


def _spawn_session(spec: dict[str, Any], timeout_s: float, workdir: Path) -> dict[str, Any]:
    from edgeprof.isolate import run_fresh
    from edgeprof.records import write_json_atomic

    spec_path, out_path = workdir / f"spec-{spec['index']}.json", workdir / f"out-{spec['index']}.json"
    write_json_atomic(spec_path, spec, indent=None)
    try:
        res = run_fresh("edgeprof.ab", ["--worker", str(spec_path), str(out_path)], out_path, timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise MeasurementError(f"session {spec['index']} ran past {timeout_s:.0f} s and was killed; "
                               "raise --session-timeout or lower --ctx/--steps") from exc
    if res.returncode != 0 or res.output is None:
        raise MeasurementError(f"session {spec['index']} (fresh process) failed: {res.reason()}")
    return res.output


def run_ab(opts: ABOptions, progress=None) -> dict[str, Any]:
    """Run `opts.sessions` fresh-process sessions and aggregate them."""
    iv = get_intervention(opts.intervention)
    control, treatment = opts.pair or (iv.control, iv.treatment)
    if opts.sessions < 2:
        raise ConfigError("sessions", f"need at least 2 fresh sessions for a CI, got {opts.sessions}")
    if opts.steps < 1 or opts.warmup < 0:
        raise ConfigError("steps", "--steps must be >= 1 and --warmup >= 0")
    _check_model_ctx(opts.model, opts.ctx, opts.synthetic)
    device = opts.device or default_device()
    check_runnable(iv, control, treatment, device)
    progress = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))

    sessions = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgeprof-ab-") as tmp:
        for i in range(opts.sessions):
            order = [control, treatment] if i % 2 == 0 else [treatment, control]
            spec = {"index": i, "model": opts.model, "ctx": opts.ctx, "steps": opts.steps, "warmup": opts.warmup,
                    "device": device, "synthetic": opts.synthetic, "order": order, "gate": i == 0 and opts.gate}
            t0 = time.perf_counter()
            out = _spawn_session(spec, opts.session_timeout_s, Path(tmp))
            out["session_s"] = time.perf_counter() - t0
            sessions.append(out)
            c, t = out["arms"][control], out["arms"][treatment]
            progress(f"session {i + 1}/{opts.sessions} (pid {out['pid']}, {order[0]} first): "
                     f"{control} {c['median_wall_ms']:.3f} ms, {treatment} {t['median_wall_ms']:.3f} ms, "
                     f"ratio {session_ratio(c['wall_ms'], t['wall_ms']):.4f}")
    result = aggregate(iv, control, treatment, opts, device, sessions)
    result["total_s"] = time.perf_counter() - t_start
    return result


def aggregate(iv: Intervention, control: str, treatment: str, opts: ABOptions, device: str,
              outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """The A/B result from the sessions' raw outputs (what `run_session` returns)."""
    from edgeprof import paper

    sessions = []
    for i, out in enumerate(outputs):
        c, t = out["arms"][control], out["arms"][treatment]
        sessions.append({
            "index": i, "order": out["order"], "pid": out["pid"],
            "ratio": session_ratio(c["wall_ms"], t["wall_ms"]),
            "gpu_ratio": session_ratio(c["gpu_ms"], t["gpu_ms"]) if c.get("gpu_ms") and t.get("gpu_ms") else None,
            "control": c, "treatment": t, "load_s": out.get("load_s"), "session_s": out.get("session_s"),
        })
    ratios = [s["ratio"] for s in sessions]
    boot = bootstrap_median_ci(ratios, seed=opts.seed)
    gpu_ratios = [s["gpu_ratio"] for s in sessions if s["gpu_ratio"] is not None]
    first = outputs[0]
    return {
        "kind": "ab",
        "intervention": iv.name,
        "summary": iv.summary,
        "machinery_only": iv.machinery_only,
        "control": control,
        "treatment": treatment,
        "model": opts.model,
        "model_label": first["model_label"],
        "synthetic": first["synthetic"],
        "ctx": opts.ctx,
        "steps": opts.steps,
        "warmup": opts.warmup,
        "device": device,
        "gpu": first.get("gpu"),
        "gpu_name": first.get("gpu_name"),
        "versions": {k: first.get(k) for k in ("python", "torch", "transformers", "edgeprof")},
        "kernel_correctness": {b: outputs[0]["arms"][b].get("kernel_correctness") for b in (control, treatment)},
        "n_sessions": len(sessions),
        "ratios": ratios,
        "median_ratio": boot["median"],
        "ci": boot["ci"],
        "bootstrap": boot,
        "gpu_time_median_ratio": _median(gpu_ratios) if gpu_ratios and len(gpu_ratios) == len(sessions) else None,
        "sessions": sessions,
        "paper": paper.figures().get(iv.paper_key, {}) if iv.paper_key else {},
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _check_model_ctx(model: str, ctx: int, synthetic: bool | None) -> None:
    """Unknown model or ctx over its maximum: fail before spawning any session."""
    from edgeprof.errors import ModelLoadError
    from edgeprof.floor import check_ctx
    from edgeprof.shape_loader import resolve_shape

    if ctx <= 0:
        raise ConfigError("ctx", f"must be a positive number of tokens, got {ctx}")
    try:
        shape = resolve_shape(model, synthetic)
    except ModelLoadError:  # a hub id: checked by the session once loaded
        return
    check_ctx(shape, ctx)


def format_result(r: dict[str, Any]) -> str:
    """The human summary of an A/B result."""
    lines = []
    if r["machinery_only"]:
        lines.append("NOTE: machinery test only (not a finding): " + r["summary"])
    where = r.get("gpu_name") or r["device"]
    lines.append(f"A/B {r['intervention']}: {r['control']} (control) vs {r['treatment']} (treatment)")
    lines.append(f"model {r['model_label']}, ctx {r['ctx']}, {r['steps']} steps after {r['warmup']} warm-up, "
                 f"on {where}")
    lines.append(f"{'session':>7} {'first':>12} {'control ms':>11} {'treat. ms':>10} {'ratio':>8}")
    for s in r["sessions"]:
        lines.append(f"{s['index'] + 1:>7} {s['order'][0]:>12} {s['control']['median_wall_ms']:>11.3f} "
                     f"{s['treatment']['median_wall_ms']:>10.3f} {s['ratio']:>8.4f}")
    lo, hi = r["ci"]
    lines.append(f"median speedup {r['median_ratio']:.4f}x, {int(r['bootstrap']['confidence'] * 100)}% bootstrap "
                 f"CI [{lo:.4f}, {hi:.4f}] ({r['bootstrap']['method']}, N={r['n_sessions']} fresh sessions)")
    if r.get("gpu_time_median_ratio"):
        lines.append(f"(GPU-event time ratio, median: {r['gpu_time_median_ratio']:.4f}x)")
    p = r.get("paper") or {}
    for key, label in (("h100-sxm", "H100"), ("l4", "L4")):
        if key in p:
            fig = p[key]
            ci = f" [{fig['ci'][0]}, {fig['ci'][1]}]" if fig.get("ci") else ""
            lines.append(f"paper ({label}, {p.get('model', '?')} ctx {p.get('ctx', '?')}): {fig['ratio']}x{ci}")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        sys.exit(_worker_main(sys.argv[1:]))
    print("usage: python -m edgeprof.ab --worker SPEC.json OUT.json (internal; use `edgeprof ab`)", file=sys.stderr)
    sys.exit(2)
