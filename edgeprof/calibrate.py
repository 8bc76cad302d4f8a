"""Measure the copy bandwidth this device really achieves, for the "calibrated" floor.

A datasheet peak is never reached; a large device-to-device copy shows what the
memory system can sustain. Bandwidth counts bytes read plus bytes written
(2 x buffer size per copy), the same convention as the reference H100/H200 figures
(about 3.0 and 4.27 TB/s). The median of the repeats is stored.

* GPU: `torch` device-to-device copy of a buffer far larger than L2, timed with
  CUDA events (no host sync between the two events).
* CPU: `torch` copy (multi-threaded, as the CPU decode path is) of a buffer far
  larger than the last-level cache, timed with perf_counter; numpy when torch is
  missing (single-threaded, so lower).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgeprof.errors import ConfigError, MeasurementError, UnknownChoiceError
from edgeprof.hardware import match_nvml_name
from edgeprof.hardware_loader import DetectedDevice, detect, load_catalog, save_calibration

MB = 1 << 20  # buffer sizes are in MiB; bandwidths in bytes/s
DEFAULT_GPU_MB = 1024  # >> any L2 (H100: 50 MB, H200: 60 MB)
MIN_CPU_MB = 256


@dataclass
class Calibration:
    """One bandwidth measurement and how it was taken."""

    spec_key: str  # catalog key it is stored under
    device: str  # "cuda" | "cpu"
    device_name: str
    method: str
    size_bytes: int  # one buffer; each copy moves 2x this (read + write)
    repeats: int
    samples_s: list[float] = field(default_factory=list)
    datasheet_bytes_per_s: float = 0.0

    @property
    def bytes_per_s(self) -> float:
        return 2 * self.size_bytes / statistics.median(self.samples_s)

    @property
    def best_bytes_per_s(self) -> float:
        return 2 * self.size_bytes / min(self.samples_s)

    @property
    def fraction_of_datasheet(self) -> float | None:
        return self.bytes_per_s / self.datasheet_bytes_per_s if self.datasheet_bytes_per_s else None

    def to_dict(self) -> dict:
        return {**asdict(self), "bytes_per_s": self.bytes_per_s, "best_bytes_per_s": self.best_bytes_per_s,
                "fraction_of_datasheet": self.fraction_of_datasheet}


def llc_bytes() -> int:
    """Largest CPU cache (bytes) from sysfs; 0 when unknown."""
    best = 0
    for size_file in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = size_file.read_text().strip().upper()
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        try:
            best = max(best, int(text.rstrip("KMG")) * mult)
        except ValueError:
            continue
    return best


def default_size_mb(device: str) -> int:
    if device == "cuda":
        return DEFAULT_GPU_MB
    return max(MIN_CPU_MB, 4 * llc_bytes() // MB)  # well beyond the LLC so DRAM is measured


def measure_cpu(size_bytes: int, repeats: int, warmup: int = 2) -> tuple[list[float], str]:
    """Seconds per host-memory copy of `size_bytes`; returns (samples, method)."""
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        src = torch.ones(size_bytes, dtype=torch.uint8)  # [size_bytes]; ones() touches every page
        dst = torch.zeros_like(src)
        copy, method = (lambda: dst.copy_(src)), f"torch.Tensor.copy_ on CPU ({torch.get_num_threads()} threads)"
    else:
        import numpy as np

        src = np.ones(size_bytes, dtype=np.uint8)
        dst = np.zeros_like(src)
        copy, method = (lambda: np.copyto(dst, src)), "numpy.copyto (1 thread)"
    for _ in range(warmup):
        copy()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        copy()
        samples.append(time.perf_counter() - t0)
    return samples, method


def measure_cuda(size_bytes: int, repeats: int, warmup: int = 3) -> tuple[list[float], str]:
    """Seconds per device-to-device copy of `size_bytes`, from CUDA events."""
    import torch

    src = torch.ones(size_bytes, dtype=torch.uint8, device="cuda")  # [size_bytes]
    dst = torch.empty_like(src)
    for _ in range(warmup):
        dst.copy_(src)
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
    torch.cuda.synchronize()
    for start, end in events:  # enqueue everything; read the events once at the end
        start.record()
        dst.copy_(src)
        end.record()
    torch.cuda.synchronize()
    samples = [start.elapsed_time(end) / 1e3 for start, end in events]
    del src, dst
    torch.cuda.empty_cache()
    return samples, "torch device-to-device copy_, CUDA events"


def _cuda_target(found: DetectedDevice) -> tuple[str, str, float]:
    """(catalog key, device name, datasheet B/s) of the CUDA device torch will use."""
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("device", "cuda was asked for but torch sees no CUDA GPU; use --device cpu")
    name = torch.cuda.get_device_name()
    spec = found.spec if found.device == "cuda" else match_nvml_name(name, load_catalog())
    if spec is None:
        return f"nvml:{name}", name, 0.0
    return spec.key, name, spec.bandwidth_bytes_per_s


def calibrate(device: str | None = None, size_mb: int | None = None, repeats: int | None = None,
              store: bool = True) -> Calibration:
    """Measure copy bandwidth on `device` ("cuda" | "cpu"; default: the detected one) and
    (by default) store it in the user cache under the device's catalog key."""
    found = detect()
    device = device or found.device
    if device not in ("cuda", "cpu"):
        raise UnknownChoiceError("device", device, ("cuda", "cpu"))
    size_mb = size_mb if size_mb is not None else default_size_mb(device)
    if size_mb <= 0:
        raise ConfigError("size-mb", f"must be a positive number of MiB, got {size_mb}")
    repeats = repeats or (20 if device == "cuda" else 10)
    if repeats < 1:
        raise ConfigError("repeats", f"must be at least 1, got {repeats}")
    size = size_mb * MB
    if device == "cuda":
        key, name, datasheet = _cuda_target(found)
        samples, method = measure_cuda(size, repeats)
    else:
        cpu = found if found.device == "cpu" else DetectedDevice(spec=_cpu_spec(), device="cpu")
        key, name, datasheet = cpu.spec.key, cpu.name, cpu.spec.bandwidth_bytes_per_s
        samples, method = measure_cpu(size, repeats)
    if min(samples) <= 0:
        raise MeasurementError(f"a copy of {size_mb} MiB timed at {min(samples)} s; use a larger --size-mb")
    result = Calibration(key, device, name, method, size, repeats, samples, datasheet)
    if store:
        save_calibration(key, result.to_dict())
    return result


def _cpu_spec():

    return load_catalog()["cpu"]
