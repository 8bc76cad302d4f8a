"""Hardware specs: what a GPU (or the host CPU) is, as plain data, and the pure matching
of an NVML device name against a catalog.

Nothing here reads a file or asks a driver: the catalog file (gpus.yaml), NVML,
/proc/cpuinfo and the calibration cache are read by `edgeprof.hardware_loader`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from edgeprof.errors import ConfigError


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


def parse_catalog(raw: dict[str, Any]) -> dict[str, GPUSpec]:
    """The `gpus:` mapping of a catalog file, as specs by key; a missing field is named."""
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


def match_nvml_name(nvml_name: str, catalog: dict[str, GPUSpec]) -> GPUSpec | None:
    """The catalog entry whose NVML pattern is the longest match inside `nvml_name`.

    A pattern must match whole words: "L4" matches "NVIDIA L4" but not "NVIDIA L40S"
    or "NVIDIA L40" (different GPUs with different bandwidth).
    """
    best: tuple[int, GPUSpec] | None = None
    for spec in catalog.values():
        for pattern in spec.nvml:
            word = re.compile(rf"(?<![a-z0-9]){re.escape(pattern.lower())}(?![a-z0-9])")
            if word.search(nvml_name.lower()) and (best is None or len(pattern) > best[0]):
                best = (len(pattern), spec)
    return best[1] if best else None


def derived_bandwidth_gbs(bus_bits: int, mem_mhz: float) -> float:
    """Peak bandwidth of a GPU missing from the catalog: bus width x max memory clock x 2
    (double data rate). This reproduces the datasheet for L4, H100 and RTX 4090."""
    return bus_bits / 8 * mem_mhz * 1e6 * 2 / 1e9
