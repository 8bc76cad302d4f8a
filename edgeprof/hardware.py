"""Hardware specs: the GPU catalog (`configs/gpus.yaml`) and finding the device in use.

Catalog parsing and NVML-name matching are pure; `detect()` asks NVML (through
nvidia-ml-py) and falls back to the host CPU entry when there is no GPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from edgeprof.errors import ConfigError, UnknownChoiceError
from edgeprof.paths import cache_dir, configs_dir


@dataclass(frozen=True)
class GPUSpec:
    key: str
    name: str
    arch: str
    bandwidth_gbs: float  # datasheet peak, 1 GB = 1e9 B
    memory_gb: float
    nvml: tuple[str, ...] = field(default=())
    unified_memory: bool = False
    sm_count: int | None = None  # streaming multiprocessors (datasheet)
    sm_boost_mhz: float | None = None  # max boost SM clock (datasheet)

    @property
    def bandwidth_bytes_per_s(self) -> float:
        return self.bandwidth_gbs * 1e9

    @property
    def is_cpu(self) -> bool:
        return self.arch == "cpu"


def load_catalog(path: Path | None = None) -> dict[str, GPUSpec]:
    path = path or configs_dir() / "gpus.yaml"
    raw = yaml.safe_load(path.read_text())["gpus"]
    out = {}
    for key, e in raw.items():
        for f in ("name", "arch", "bandwidth_gbs"):
            if f not in e:
                raise ConfigError(f"gpus.{key}.{f}", "missing; see configs/gpus.yaml")
        out[key] = GPUSpec(key, e["name"], e["arch"], float(e["bandwidth_gbs"]), float(e.get("memory_gb", 0)),
                           tuple(e.get("nvml", ())), bool(e.get("unified_memory", False)),
                           int(e["sm_count"]) if e.get("sm_count") else None,
                           float(e["sm_boost_mhz"]) if e.get("sm_boost_mhz") else None)
    return out


def gpu(key: str) -> GPUSpec:
    catalog = load_catalog()
    k = key.lower()
    if k not in catalog:
        match = match_nvml_name(key, catalog)
        if match is None:
            raise UnknownChoiceError("gpu", key, catalog)
        return match
    return catalog[k]


def match_nvml_name(nvml_name: str, catalog: dict[str, GPUSpec] | None = None) -> GPUSpec | None:
    """The catalog entry whose NVML pattern is the longest match inside `nvml_name`.

    A pattern must match whole words: "L4" matches "NVIDIA L4" but not "NVIDIA L40S"
    or "NVIDIA L40" (different GPUs with different bandwidth).
    """
    catalog = catalog if catalog is not None else load_catalog()
    best: tuple[int, GPUSpec] | None = None
    for spec in catalog.values():
        for pattern in spec.nvml:
            word = re.compile(rf"(?<![a-z0-9]){re.escape(pattern.lower())}(?![a-z0-9])")
            if word.search(nvml_name.lower()) and (best is None or len(pattern) > best[0]):
                best = (len(pattern), spec)
    return best[1] if best else None


# ---------------------------------------------------------------------------
# The device in use


@dataclass(frozen=True)
class DetectedDevice:
    """The device edgeprof will run on: its catalog entry and what NVML says about it."""

    spec: GPUSpec  # catalog entry; the `cpu` entry when there is no GPU
    device: str  # "cuda" | "cpu"
    nvml_name: str | None = None
    driver: str | None = None
    index: int | None = None  # NVML index of the GPU (honours CUDA_VISIBLE_DEVICES)

    @property
    def name(self) -> str:
        """A human name of the device: the NVML name, else the host CPU model."""
        return self.nvml_name or cpu_model_name()


def cpu_model_name() -> str:
    """The host CPU model from /proc/cpuinfo (Linux), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown CPU"


def _visible_gpu(pynvml) -> object | None:
    """NVML handle of the first GPU CUDA would use, honouring CUDA_VISIBLE_DEVICES."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        first = visible.split(",")[0].strip()
        if first in ("", "-1"):
            return None  # the user hid every GPU
        if first.startswith(("GPU-", "MIG-")):
            return pynvml.nvmlDeviceGetHandleByUUID(first)
        if first.isdigit():
            return pynvml.nvmlDeviceGetHandleByIndex(int(first))
    if pynvml.nvmlDeviceGetCount() == 0:
        return None
    return pynvml.nvmlDeviceGetHandleByIndex(0)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _nvml_derived_spec(pynvml, handle, name: str) -> GPUSpec:
    """A spec for a GPU missing from the catalog: peak bandwidth = bus width x max memory
    clock x 2 (double data rate). This reproduces the datasheet for L4, H100 and RTX 4090."""
    try:
        bus_bits = pynvml.nvmlDeviceGetMemoryBusWidth(handle)
        mem_mhz = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM)
        mem_gb = pynvml.nvmlDeviceGetMemoryInfo(handle).total / 1e9
    except Exception as exc:  # old driver / NVML without these queries
        raise ConfigError(
            "gpu", f"{name!r} is not in configs/gpus.yaml and NVML cannot give its bus width ({exc}); "
            f"pass --gpu with one of: {', '.join(sorted(load_catalog()))}, or add an entry to configs/gpus.yaml"
        ) from exc
    gbs = bus_bits / 8 * mem_mhz * 1e6 * 2 / 1e9
    return GPUSpec(f"nvml:{name}", f"{name} (not in catalog; {gbs:.0f} GB/s from NVML bus width x memory clock)",
                   "unknown", gbs, mem_gb, (name,))


def detect() -> DetectedDevice:
    """Find the GPU in use through NVML; the catalog's `cpu` entry when there is none.

    Cheap (no torch import). A GPU missing from the catalog gets a spec whose bandwidth
    is derived from NVML (see `_nvml_derived_spec`).
    """
    cpu = DetectedDevice(spec=load_catalog()["cpu"], device="cpu")
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no nvidia-ml-py, or no driver: a CPU-only machine
        return cpu
    try:
        handle = _visible_gpu(pynvml)
        if handle is None:
            return cpu
        name = _text(pynvml.nvmlDeviceGetName(handle))
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        index = int(pynvml.nvmlDeviceGetIndex(handle))
        spec = match_nvml_name(name) or _nvml_derived_spec(pynvml, handle, name)
        return DetectedDevice(spec=spec, device="cuda", nvml_name=name, driver=driver, index=index)
    except ConfigError:
        raise
    except Exception:  # NVML present but unusable (e.g. container without devices)
        return cpu
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


# ---------------------------------------------------------------------------
# Calibrated bandwidth cache (written by `edgeprof calibrate`)


def calibration_path() -> Path:
    return cache_dir() / "calibration.json"


def load_calibrations() -> dict[str, dict]:
    """All stored calibrations, by catalog key. A missing or corrupt file reads as empty."""
    try:
        data = json.loads(calibration_path().read_text())
    except (OSError, ValueError):
        return {}
    entries = data.get("entries") if isinstance(data, dict) else None
    return entries if isinstance(entries, dict) else {}


def save_calibration(spec_key: str, record: dict) -> Path:
    """Store one calibration (must hold `bytes_per_s`) under `spec_key`, atomically."""
    if not float(record.get("bytes_per_s", 0)) > 0:
        raise ConfigError("bytes_per_s", f"a calibration needs a positive bandwidth, got {record.get('bytes_per_s')}")
    entries = load_calibrations()
    entries[spec_key] = {**record, "host": socket.gethostname(), "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path = calibration_path()
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"version": 1, "entries": entries}, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def calibrated_bandwidth(spec_key: str) -> float | None:
    """Measured copy bandwidth (bytes/s, read + written) for a catalog key, or None."""
    entry = load_calibrations().get(spec_key)
    if not entry:
        return None
    try:
        value = float(entry["bytes_per_s"])
    except (KeyError, TypeError, ValueError):
        return None
    return value if value > 0 else None
