"""Where edgeprof finds its data files and keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def configs_dir() -> Path:
    """The `configs/` folder: $EDGEPROF_CONFIGS, else the one beside the package."""
    return Path(os.environ.get("EDGEPROF_CONFIGS", REPO_ROOT / "configs"))


def config_file(name: str) -> Path:
    """One data file (e.g. "gpus.yaml") of the configs folder."""
    return configs_dir() / name


def cache_dir() -> Path:
    """User cache for converted models and built artefacts ($EDGEPROF_CACHE)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgeprof"
    path = Path(os.environ.get("EDGEPROF_CACHE", default))
    path.mkdir(parents=True, exist_ok=True)
    return path
