"""Hardware specs: the GPU catalog (`configs/gpus.yaml`) and finding the device in use.

Catalog parsing and NVML-name matching are pure; `detect()` asks NVML (through
nvidia-ml-py) and falls back to the host CPU entry when there is no GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from edgeprof.errors import ConfigError, UnknownChoiceError
from edgeprof.paths import configs_dir


@dataclass(frozen=True)
class GPUSpec:
    key: str
    name: str
    arch: str
    bandwidth_gbs: float  # datasheet peak, 1 GB = 1e9 B
    memory_gb: float
    nvml: tuple[str, ...] = field(default=())
    unified_memory: bool = False

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
                           tuple(e.get("nvml", ())), bool(e.get("unified_memory", False)))
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
    """The catalog entry whose NVML pattern is the longest substring of `nvml_name`."""
    catalog = catalog if catalog is not None else load_catalog()
    name = nvml_name.lower()
    best: tuple[int, GPUSpec] | None = None
    for spec in catalog.values():
        for pattern in spec.nvml:
            if pattern.lower() in name and (best is None or len(pattern) > best[0]):
                best = (len(pattern), spec)
    return best[1] if best else None
