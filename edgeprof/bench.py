"""One decode cell: model x backend x ctx, measured against the memory floor.

`run_cell(CellSpec(...))` does, in order:

1. validate (backend known and available here, model resolvable, ctx within its limit);
2. load the model (synthetic presets are labelled so everywhere);
3. kernel correctness (`edgeprof.correctness`): a reference on the backend's own
   dequantized weights runs first (before a backend quantizes the model in place), then
   the backend is built and compared at positions near ctx; a failing backend is not
   timed unless `allow_mismatch` (its record then says `kernel_correctness.passed: false`);
4. fill the KV cache to ctx-1 tokens (a repeated text for real models, fixed random ids
   for synthetic ones), so the first timed step attends over ctx tokens;
5. capture/compile (`Decoder.warmup`, timed apart as `capture_s`), `warmup` untimed
   steps, then `steps` timed steps (`Decoder.time_steps`, clocked by `edgeprof.timing`);
6. the floor under both definitions, against the datasheet peak and, when
   `edgeprof calibrate` has run on this GPU, the calibrated bandwidth; fraction uses the
   p50 wall time;
7. memory: `steady_state_mem_bytes` while the session is decoding, after load, quantize,
   reference and capture transients are freed (device memory in use minus what was in use
   before the model loaded; process RSS growth on the CPU), `load_peak_mem_bytes` (peak
   while loading, quantizing and checking) and `peak_mem_bytes` (peak while serving);
8. quantization quality (`edgeprof.quality`) on real weights: this model when it is real,
   else the embedded SmolLM2-135M with the same backend; after the cell, so its memory
   never mixes with the cell's.

Failures after validation (OOM, a kernel error) become a record with status "failed"
and the reason; validation errors raise (the CLI prints them on one line).
"""

from __future__ import annotations

import gc
import json
import platform
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from edgeprof.errors import (
    BackendUnavailableError,
    ContextLengthError,
    CorrectnessError,
    EdgeprofError,
    MeasurementError,
)
from edgeprof.records import CellRecord

SLACK = 8  # spare positions beyond the timed steps (capture runs borrow a few and give them back)
REAL_FILL_TEXT = ("The robot receives a task, looks at the scene, plans a grasp, moves its arm, checks the result "
                  "and reports back to the operator. ")


@dataclass
class CellSpec:
    model: str
    backend: str
    ctx: int
    steps: int = 30
    warmup: int = 5
    device: str | None = None
    gpu: str | None = None  # catalog key overriding the detected GPU (for the floor)
    synthetic: bool | None = None
    gate: bool = True  # kernel correctness (edgeprof.correctness)
    allow_mismatch: bool = False
    quality: bool = True
    quality_tokens: int = 512


# --- validation -------------------------------------------------------------------------------
def default_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def validate(spec: CellSpec):
    """(BackendInfo, ModelShape|None, device) or a one-line EdgeprofError."""
    from edgeprof.backends import registry
    from edgeprof.errors import ConfigError
    from edgeprof.floor import check_ctx
    from edgeprof.shape_loader import resolve_shape

    info = registry.require(spec.backend)
    device = spec.device or default_device()
    if device.split(":")[0] not in ("cuda", "cpu"):
        raise ConfigError("device", f"must be cuda, cuda:N or cpu, got {device!r}")
    if device.startswith("cuda") and default_device() != "cuda":
        raise ConfigError("device", "cuda was asked for but no CUDA GPU is visible; use --device cpu")
    if info.needs_gpu and not device.startswith("cuda"):
        raise BackendUnavailableError(spec.backend, "needs an NVIDIA GPU with CUDA; run with --device cuda")
    if spec.steps <= 0:
        raise ConfigError("steps", f"must be a positive number of steps, got {spec.steps}")
    if spec.warmup < 0:
        raise ConfigError("warmup", f"must be zero or more steps, got {spec.warmup}")
    shape = resolve_shape(spec.model, spec.synthetic)  # None for a hub id: checked after loading
    if shape is not None:
        check_ctx(shape, spec.ctx)
    return info, shape, device


def plan(ctx: int, steps: int, warmup: int, model_max: int, gate_tokens: int = 0) -> tuple[int, int]:
    """(tokens to prefill, session max_ctx). Fill to ctx-1 so the first timed step attends
    over ctx tokens; near the model's limit, fill less so every step still fits.

    The correctness gate runs on the same decoder before the cell (quantising backends
    change the weights in place, so a second decoder is not an option): `gate_tokens`
    (its prompt + decode steps) must fit too, so max_ctx is the larger of the two runs.
    Only cells shorter than the gate (ctx below ~60) get a session larger than they need."""
    need = warmup + steps + SLACK
    prefill = max(1, ctx - 1 if ctx - 1 + need <= model_max else max(1, model_max - need))
    return prefill, max(prefill + need, gate_tokens + SLACK if gate_tokens else 0)


def fill_tokens(loaded, n: int) -> list[int]:
    """`n` prompt tokens: a repeated passage for real models, fixed random ids otherwise."""
    if loaded.tokenizer is not None and not loaded.synthetic:
        base = [int(i) for i in loaded.tokenizer(REAL_FILL_TEXT)["input_ids"]]
        if base:
            return (base * (n // len(base) + 1))[:n]
    import numpy as np

    rng = np.random.default_rng(0)
    return [int(x) for x in rng.integers(0, loaded.shape.vocab, size=n)]


# --- record pieces --------------------------------------------------------------------------------
def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def versions(backend: str) -> dict[str, Any]:
    from edgeprof.backends import registry

    pkg = registry.BACKENDS[backend].version_package if backend in registry.BACKENDS else None
    return {"python": platform.python_version(), "torch": _version("torch"),
            "transformers": _version("transformers"), "edgeprof": _version("edgeprof"),
            "backend_package": {pkg: _version(pkg)} if pkg else None}


def _telemetry(kind: str) -> Any:
    try:
        from edgeprof import telemetry
    except ImportError:
        return None
    try:
        return telemetry.gpu_snapshot() if kind == "gpu" else telemetry.host_cpu()
    except Exception:  # telemetry must never break a measurement
        return None


def _detect_gpu(spec: CellSpec, device: str):
    """(catalog spec, NVML name) of the device measured; --gpu overrides the catalog entry."""
    from edgeprof.hardware_loader import resolve_gpu

    return resolve_gpu(device, spec.gpu)


def floor_block(shape, weights: str, ctx: int, gpu_spec, p50_ms: float | None) -> dict[str, Any]:
    """Floor numbers per CONTRACTS.md (datasheet peak, plus calibrated bandwidth if any)."""
    from edgeprof import hardware_loader
    from edgeprof.floor import compute_floor, parse_format

    fmt = parse_format(weights)
    peak = compute_floor(shape, fmt, ctx, gpu_spec.bandwidth_bytes_per_s, p50_ms)
    out: dict[str, Any] = {
        "peak_bytes_per_s": gpu_spec.bandwidth_bytes_per_s,
        "floor_ms": peak.floor_ms,
        "touched_floor_ms": peak.touched_floor_ms,
        "fraction": peak.fraction,
        "touched_fraction": peak.touched_fraction,
        "weight_bytes": peak.traffic.weight_bytes,
        "kv_bytes": peak.traffic.kv_bytes,
        "calibrated": None,
    }
    try:
        bw = hardware_loader.calibrated_bandwidth(gpu_spec.key)
    except Exception:
        bw = None
    if bw:
        cal = compute_floor(shape, fmt, ctx, bw, p50_ms)
        out["calibrated"] = {"bytes_per_s": bw, "floor_ms": cal.floor_ms, "touched_floor_ms": cal.touched_floor_ms,
                             "fraction": cal.fraction, "touched_fraction": cal.touched_fraction}
    return out


def empty_record(spec: CellSpec, command: str | None = None) -> dict[str, Any]:
    """The record of `spec` before it is measured (status "failed" until it is)."""
    return CellRecord(model=spec.model, backend=spec.backend, ctx=spec.ctx, steps=spec.steps, warmup=spec.warmup,
                      synthetic=spec.synthetic, device=spec.device, versions=versions(spec.backend),
                      command=command or _default_command(spec)).to_dict()


def _default_command(spec: CellSpec) -> str:
    argv = ["edgeprof", "bench", "--model", spec.model, "--backend", spec.backend, "--ctx", str(spec.ctx),
            "--steps", str(spec.steps), "--warmup", str(spec.warmup)]
    if spec.device:
        argv += ["--device", spec.device]
    if spec.gpu:
        argv += ["--gpu", spec.gpu]
    if spec.synthetic is True:
        argv.append("--synthetic")
    return " ".join(argv)


def _cuda_mem(device: str, reset: bool = False) -> int | None:
    if not device.startswith("cuda"):
        return None
    import torch

    if reset:
        torch.cuda.reset_peak_memory_stats()
        return None
    return int(torch.cuda.max_memory_allocated())


def _peak_rss() -> int:
    """The process's peak resident set so far (the CPU's load peak; Linux reports KiB)."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def mem_in_use(device: str) -> int:
    """Memory this process holds now: on CUDA the device's used bytes after freeing the caching
    allocator's spare blocks (so allocators other than torch's, e.g. llama.cpp's or ExLlamaV2's,
    count too); on the CPU the process's resident set."""
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info()
        return int(total - free)
    import psutil

    return int(psutil.Process().memory_info().rss)


# --- the cell -------------------------------------------------------------------------------------
def run_cell(spec: CellSpec, command: str | None = None, loaded=None, reference=None,
             raise_invalid: bool = False, decoder=None) -> dict[str, Any]:
    """Measure one cell; always returns a complete record (status "ok" or "failed").

    `loaded` reuses an already-loaded model (it must be unquantised bf16 for quantising
    backends, which modify it in place); `reference` reuses an `edgeprof.correctness.ReferenceRun`
    computed earlier for the same weights, backend format and ctx. `decoder` reuses a decoder of
    `spec.backend` built on `loaded` across cells (a benchmark keeps one CUDA-graph capture for every
    ctx): it is reset, not closed, and its max_ctx must hold the cell. With `raise_invalid`, validation
    errors raise instead of becoming a failed record (the CLI uses it for one-line errors)."""
    rec = empty_record(spec, command)
    try:
        info, _, device = validate(spec)
    except EdgeprofError as exc:
        if raise_invalid:
            raise
        rec["error"] = str(exc)
        return rec
    rec["device"] = device
    rec["weights"] = info.weights
    try:
        _measure(spec, device, info, rec, loaded, reference, decoder)
        rec["status"] = "ok"
    except EdgeprofError as exc:
        rec["error"] = str(exc)
    except Exception as exc:  # OOM, kernel failures: recorded, never fatal for a sweep
        rec["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
    finally:
        gc.collect()
    return rec


def _memory_baseline(info, device: str) -> int:
    """Bytes in use before the cell's model: libraries and the CUDA context are not the cell's memory,
    so they are imported/initialised first and included in the baseline."""
    import importlib

    import transformers  # noqa: F401

    importlib.import_module(info.factory.split(":")[0])
    if device.startswith("cuda"):
        import torch

        torch.cuda.init()
    base = mem_in_use(device)
    _cuda_mem(device, reset=True)
    return base


def model_for(info, spec: CellSpec) -> str:
    """What the cell loads. A backend that reads GGUF only (llama.cpp) on a synthetic preset runs that
    preset's SYNTHETIC Q4_0 GGUF (written once into the cache); the model is then loaded from that file,
    so the kernel-correctness reference runs the GGUF's own dequantized weights. Else `spec.model`."""
    from edgeprof.shape_loader import load_presets
    from edgeprof.sources import is_default

    preset = load_presets().get(spec.model.lower())
    real = spec.synthetic is False or (is_default(spec.model) and spec.synthetic is not True)
    if not getattr(info, "reads_gguf", False) or preset is None or real:
        return spec.model
    from edgeprof import synthetic_gguf

    return str(synthetic_gguf.cached(preset))


def _measure(spec: CellSpec, device: str, info, rec: dict[str, Any], loaded, reference, decoder=None) -> None:
    from edgeprof import correctness
    from edgeprof.backends import registry
    from edgeprof.floor import check_ctx
    from edgeprof.sources import load_model

    if decoder is not None and loaded is None:
        raise ValueError("a reused decoder needs the model it was built on (loaded=)")
    gpu_spec, gpu_name = _detect_gpu(spec, device)
    rec["gpu"], rec["gpu_name"] = gpu_spec.key, gpu_name
    rec["host_cpu"] = _telemetry("host")
    base_mem = _memory_baseline(info, device)
    if loaded is None:
        loaded = load_model(model_for(info, spec), device, synthetic=spec.synthetic)
    check_ctx(loaded.shape, spec.ctx)
    rec.update(model_label=loaded.label, synthetic=bool(loaded.synthetic))
    prefill_n, max_ctx = plan(spec.ctx, spec.steps, spec.warmup, loaded.shape.max_ctx)
    if spec.gate and reference is None:  # before any in-place quantisation: it needs the unquantized weights
        fill = fill_tokens(loaded, correctness.plan_positions(spec.ctx, max_ctx))
        reference = correctness.reference(loaded, info.weights, device, fill)
    owned = decoder is None
    if owned:
        decoder = registry.create(spec.backend, loaded, device, max_ctx)
    elif decoder.max_ctx < max_ctx:  # filling less than ctx-1 would time a shorter context than recorded
        raise ContextLengthError("ctx", f"the reused {spec.backend} decoder holds {decoder.max_ctx} positions and "
                                 f"this cell needs {max_ctx}; build it with max_ctx >= {max_ctx}")
    elif decoder.position:
        decoder.reset()
    rec["prefill_tokens"], rec["session_max_ctx"] = prefill_n, decoder.max_ctx
    try:
        if spec.gate:
            c = rec["kernel_correctness"] = correctness.check(decoder, reference, correctness.bound_for(info.weights))
            if not c["passed"] and not spec.allow_mismatch:
                raise CorrectnessError(
                    f"{spec.backend} fails kernel correctness against its own dequantized weights ({c['metric']} = "
                    f"{c['value']} > {c['bound']} at positions {c['positions']}); its timings are not reported. "
                    "Rerun with --allow-mismatch to time it anyway")
        else:
            rec["kernel_correctness"] = correctness.not_checked("skipped (--no-gate)")
        reference = None
        if owned:  # a backend with its own copy of the weights: the HF source is a load transient
            from edgeprof.backends.base import release_source

            loaded = release_source(loaded, decoder)
        rec["load_peak_mem_bytes"] = _cuda_mem(device) if device.startswith("cuda") else _peak_rss()
        _time_decoder(decoder, loaded, spec, device, prefill_n, rec)
        rec["steady_state_mem_bytes"] = max(0, mem_in_use(device) - base_mem)  # the session is still live
        rec["mem_source"] = ("cuda: device bytes in use (torch.cuda.mem_get_info) minus before load; load peak: "
                             "torch allocator peak" if device.startswith("cuda") else
                             "cpu: process RSS growth since before load; load peak: process peak RSS (absolute)")
        dinfo = decoder.info()
    finally:
        if owned:
            decoder.close()
    p50 = rec["stats"]["wall"]["p50"]
    rec["weights"] = dinfo.weights
    rec["resident_weight_bytes"] = dinfo.resident_weight_bytes
    rec["capture_s"] = dinfo.capture_s
    rec["notes"] = dinfo.notes
    rec["floor"] = floor_block(loaded.shape, dinfo.weights, spec.ctx, gpu_spec, p50)
    if p50 <= 0:
        raise MeasurementError("median step time is zero; the clock did not advance")
    if spec.quality:
        synthetic = bool(loaded.synthetic)
        del decoder, loaded
        rec["quality"] = _quality(spec, device, synthetic)


def _quality(spec: CellSpec, device: str, synthetic: bool) -> dict[str, Any]:
    """Quality of this backend on real weights; a failure here never voids the timings."""
    from edgeprof import quality

    model = quality.QUALITY_MODEL if synthetic else spec.model
    gc.collect()
    try:
        return quality.measure(spec.backend, model, device, spec.quality_tokens)
    except Exception as exc:  # noqa: BLE001 - recorded beside the timings
        return quality.not_measured(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300])


def _time_decoder(decoder, loaded, spec: CellSpec, device: str, prefill_n: int, rec: dict[str, Any]) -> None:
    """Steps 4-5 on a gated decoder: fill, capture, warm up, time; the timings go into `rec`."""
    # Peak memory of serving (prefill, capture, steps) on top of what is resident now; the
    # transient peaks of loading and quantising are not part of running the cell.
    _cuda_mem(device, reset=True)
    first = decoder.prefill(fill_tokens(loaded, prefill_n))
    rec["prefill_ms"] = first.wall_ms
    decoder.warmup()
    for _ in range(spec.warmup):
        decoder.step()
    rec["telemetry_before"] = _telemetry("gpu")
    times = decoder.time_steps(spec.steps)
    rec["telemetry_after"] = _telemetry("gpu")
    rec["wall_ms"], rec["gpu_ms"] = times.wall_ms, times.gpu_ms
    rec["stats"] = {"wall": times.wall.to_dict(), "gpu": times.gpu.to_dict() if times.gpu else None}
    rec["positions"] = [times.positions[0], times.positions[-1]]
    rec["peak_mem_bytes"] = _cuda_mem(device)


# --- metrics for long runs (bench, sweep) ----------------------------------------------------------
def cell_labels(model: str, backend: str, device: str | None = None, gpu: str | None = None) -> dict[str, str]:
    """The metrics label set a cell's record will carry, predicted before it runs (so the
    endpoint is up, with the right labels, while the cell is measured)."""
    from edgeprof.backends import registry

    try:
        weights = registry.get(backend).weights
    except EdgeprofError:
        weights = "unknown"  # bad input: the cell itself reports it
    device = device or default_device()
    try:
        gpu_key = _detect_gpu(CellSpec(model, backend, 1, device=device, gpu=gpu), device)[0].key
    except EdgeprofError:
        gpu_key = gpu or "unknown"
    return {"model": model, "backend": backend, "gpu": gpu_key, "weights": weights}


class CellMetrics:
    """Feeds finished cell records into a metrics publisher (`edgeprof.metrics`).

    Observations come from the record's raw per-step samples after the cell, never from
    inside the timed loop, so metrics cannot perturb a measurement. Cells that differ only
    in ctx share one label set (model, backend, gpu, weights) and so one set of series:
    siblings are cached per label set (two publishers with equal labels would export
    duplicate series)."""

    def __init__(self, publisher) -> None:
        self.publisher = publisher
        self._by_labels = {publisher.labels: publisher} if publisher.enabled else {}

    def observe(self, record: dict[str, Any]) -> None:
        from edgeprof.metrics import MetricLabels, observe_bench_record

        if not self.publisher.enabled or record.get("status") != "ok":
            return
        key = MetricLabels.of({"model": record["model"], "backend": record["backend"],
                               "gpu": record.get("gpu") or "cpu", "weights": record.get("weights") or "unknown"})
        pub = observe_bench_record(self._by_labels.get(key, self.publisher), record)
        self._by_labels[key] = pub
        if record.get("prefill_ms"):  # the cell's prompt (ctx-1 tokens) to its first token
            pub.observe_ttft(record["prefill_ms"] / 1e3)

    def linger(self, seconds: float | None) -> None:
        """Keep the endpoint up `seconds` after the run (a last scrape), then close it."""
        if self.publisher.enabled and seconds and seconds > 0:
            time.sleep(seconds)
        self.publisher.close()


# --- output ----------------------------------------------------------------------------------------
def summary_line(rec: dict[str, Any]) -> str:
    """One human line per record."""
    if rec["status"] != "ok":
        return f"{rec['model']} {rec['backend']} ctx={rec['ctx']}: FAILED: {rec['error']}"
    w, f = rec["stats"]["wall"], rec["floor"]
    gpu = rec["stats"]["gpu"]
    kc, q = rec.get("kernel_correctness") or {}, rec.get("quality") or {}
    gate_txt = "" if kc.get("passed") is None else \
        f"  kernel {'ok' if kc['passed'] else 'FAILED'} ({kc['value']:.3g} <= {kc['bound']:g})" if kc.get("value") \
        is not None else f"  kernel {'ok' if kc['passed'] else 'FAILED'}"
    if q.get("perplexity") is not None:
        gate_txt += f"  quality ppl {q['perplexity']:.2f} agree {q['agreement']:.2f} ({q['model']})"
    return (f"{rec['model_label']} | {rec['backend']} ({rec['weights']}) | ctx {rec['ctx']} | "
            f"p50 {w['p50']:.3f} ms p99 {w['p99']:.3f} ms" + (f" gpu p50 {gpu['p50']:.3f} ms" if gpu else "") +
            f" | floor {f['floor_ms']:.3f} ms ({f['fraction']:.1%}), touched {f['touched_floor_ms']:.3f} ms "
            f"({f['touched_fraction']:.1%}) on {rec['gpu']}" + gate_txt)


def print_record(rec: dict[str, Any], as_json: bool, stream=None) -> None:
    stream = stream or sys.stdout
    if as_json:
        print(json.dumps(rec, indent=2, default=str), file=stream)
    else:
        print(summary_line(rec), file=stream)
