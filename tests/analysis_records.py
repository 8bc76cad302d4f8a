"""Bench-contract records for the analysis tests (recommend, report, sweep outputs).

The latency samples are given by the test; the floor fields are computed by the real
`edgeprof.floor` for the cell, so floors and fractions are self-consistent.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeprof.floor import compute_floor, parse_format
from edgeprof.hardware_loader import gpu as gpu_spec
from edgeprof.shape_loader import preset


def stats(samples: list[float]) -> dict[str, float]:
    xs = np.asarray(samples, dtype=float)
    p50, p90, p99 = np.percentile(xs, [50, 90, 99])
    return {"n": int(xs.size), "p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(xs.max()),
            "mean": float(xs.mean())}


def make_record(model: str = "qwen2.5-7b", backend: str = "hf-eager", weights: str = "bf16", ctx: int = 2048,
                samples: list[float] | None = None, gpu: str = "h100-sxm", peak_mem_bytes: int | None = None,
                resident_weight_bytes: int | None = None, status: str = "ok", error: str | None = None,
                correctness: dict[str, Any] | None = None, synthetic: bool = True,
                **extra: Any) -> dict[str, Any]:
    """`extra` sets further record fields (kernel_correctness, quality, steady_state_mem_bytes, ...)."""
    spec = gpu_spec(gpu)
    samples = samples if samples is not None else [10.0] * 30
    st = stats(samples) if status == "ok" else None
    floor = None
    if status == "ok":
        fl = compute_floor(preset(model), parse_format(weights), ctx, spec.bandwidth_bytes_per_s,
                           measured_ms=st["p50"])
        floor = {"peak_bytes_per_s": spec.bandwidth_bytes_per_s, "floor_ms": fl.floor_ms,
                 "touched_floor_ms": fl.touched_floor_ms, "fraction": fl.fraction,
                 "touched_fraction": fl.touched_fraction, "calibrated": None}
    return {
        "model": model, "model_label": f"{model} [SYNTHETIC random weights]" if synthetic else model,
        "synthetic": synthetic, "backend": backend, "weights": weights, "ctx": ctx, "steps": len(samples),
        "warmup": 5, "device": "cuda", "gpu": spec.key, "gpu_name": spec.name,
        "wall_ms": samples if status == "ok" else [], "gpu_ms": None,
        "stats": {"wall": st, "gpu": None}, "floor": floor,
        "resident_weight_bytes": resident_weight_bytes, "peak_mem_bytes": peak_mem_bytes, "capture_s": 0.0,
        "correctness": correctness, "telemetry_before": None, "telemetry_after": None,
        "host_cpu": {"model": "test cpu"}, "versions": {"python": "3", "torch": "x"},
        "command": f"edgeprof bench --model {model} --backend {backend} --ctx {ctx}",
        "timestamp": "2026-01-01T00:00:00+00:00", "status": status, "error": error,
        "kernel_correctness": None, "quality": None, "steady_state_mem_bytes": None, "load_peak_mem_bytes": None,
        **extra,
    }
