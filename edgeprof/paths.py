"""Where edgeprof finds its data files and keeps its caches."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def package_data_dir() -> Path:
    """The catalogs shipped inside the package (`edgeprof/data`; a checkout's configs/ links to it)."""
    return Path(str(resources.files("edgeprof") / "data"))  # a wheel unpacks to real files: a plain path


def configs_dir() -> Path:
    """The configs folder: $EDGEPROF_CONFIGS (a user's own copy), else the package's data."""
    override = os.environ.get("EDGEPROF_CONFIGS")
    return Path(override) if override else package_data_dir()


def config_file(name: str) -> Path:
    """One data file (e.g. "gpus.yaml"): from $EDGEPROF_CONFIGS when it holds that file,
    else the package's copy (an override folder need not repeat every file)."""
    override = os.environ.get("EDGEPROF_CONFIGS")
    if override and (Path(override) / name).is_file():
        return Path(override) / name
    return package_data_dir() / name


def state_dir() -> Path:
    """Runtime state that outlives a run (the daemon's run log): $EDGEPROF_STATE, else
    $XDG_STATE_HOME/edgeprof (~/.local/state/edgeprof). Never the working directory."""
    default = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "edgeprof"
    path = Path(os.environ.get("EDGEPROF_STATE", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_runlog_path() -> Path:
    """The daemon's run log when the config names none (the one place this default is written)."""
    return state_dir() / "edgeprof-run.db"


def cache_dir() -> Path:
    """User cache for converted models and built artefacts ($EDGEPROF_CACHE)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgeprof"
    path = Path(os.environ.get("EDGEPROF_CACHE", default))
    path.mkdir(parents=True, exist_ok=True)
    return path
