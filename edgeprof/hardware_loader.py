"""Reading hardware facts: the GPU catalog (gpus.yaml), NVML, /proc/cpuinfo and the
calibration cache, and the one GPU resolver (`resolve_gpu`) every command uses.

`edgeprof.hardware` holds the plain specs and the pure matching; this module does the I/O.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from edgeprof.errors import ConfigError, EdgeprofError, UnknownChoiceError
from edgeprof.hardware import GPUSpec, derived_bandwidth_gbs, match_nvml_name, parse_catalog
from edgeprof.paths import cache_dir, config_file


def load_catalog(path: Path | None = None) -> dict[str, GPUSpec]:
    path = path or config_file("gpus.yaml")
    return parse_catalog(yaml.safe_load(path.read_text())["gpus"])


def gpu(key: str) -> GPUSpec:
    """A catalog entry by key, or by an NVML name matching one; an unknown one lists the valid keys."""
    catalog = load_catalog()
    k = key.lower()
    if k not in catalog:
        match = match_nvml_name(key, catalog)
        if match is None:
            raise UnknownChoiceError("gpu", key, catalog)
        return match
    return catalog[k]


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
    gbs = derived_bandwidth_gbs(bus_bits, mem_mhz)
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
        spec = match_nvml_name(name, load_catalog()) or _nvml_derived_spec(pynvml, handle, name)
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
    from edgeprof.records import write_json_atomic

    return write_json_atomic(calibration_path(), {"version": 1, "entries": entries}, sort_keys=True)


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


# ---------------------------------------------------------------------------
# The one GPU resolver


def resolve_gpu(device: str, key: str | None = None) -> tuple[GPUSpec, str | None]:
    """(catalog spec, device name) of what `device` ("cuda[:N]" or "cpu") runs on.

    `key` (--gpu) overrides the catalog entry; else the detected GPU on CUDA, the `cpu`
    entry on the CPU. The name is the NVML name on CUDA, the CPU model on the CPU (None
    when detection failed). Bandwidth: `bandwidth_of` (datasheet or calibrated)."""
    detected = None
    try:
        detected = detect()
    except EdgeprofError:
        if device.startswith("cuda") and not key:
            raise  # a GPU we cannot size: a CPU floor for it would be wrong
    if key:
        spec = gpu(key)
    elif device.startswith("cuda") and detected is not None and detected.device == "cuda":
        spec = detected.spec
    else:
        spec = load_catalog()["cpu"]
    name = None
    if detected is not None:
        name = detected.nvml_name if device.startswith("cuda") else cpu_model_name()
    return spec, name


def bandwidth_of(spec: GPUSpec, source: str = "datasheet") -> float:
    """Bytes/s of `spec`: its datasheet peak, or (source "calibrated") what `edgeprof
    calibrate` measured on it; a missing calibration says how to make one."""
    if source == "datasheet":
        return spec.bandwidth_bytes_per_s
    measured = calibrated_bandwidth(spec.key)
    if measured is None:
        raise ConfigError(
            "bandwidth", f"no calibrated bandwidth stored for {spec.key!r}; run `edgeprof calibrate` on that "
            "device first, or use --bandwidth datasheet"
        )
    return measured
