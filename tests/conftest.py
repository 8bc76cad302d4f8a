"""Fixtures shared by the whole suite. Keep this small; parts add their own in
subfolder conftest.py files."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runtime state (run logs) of every test goes to a temp dir, never the user's state dir."""
    monkeypatch.setenv("EDGEPROF_STATE", str(tmp_path_factory.mktemp("edgeprof-state")))


@pytest.fixture
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty edgeprof user cache ($EDGEPROF_CACHE) for this test only."""
    cache = tmp_path / "edgeprof-cache"
    cache.mkdir()
    monkeypatch.setenv("EDGEPROF_CACHE", str(cache))
    return cache


@pytest.fixture
def run_edgeprof() -> Callable[..., subprocess.CompletedProcess]:
    """Run the real CLI in a subprocess: `run_edgeprof("floor", "--model", ...)`.

    The child inherits os.environ (so `tmp_cache` applies); `env=` adds variables.
    """

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "edgeprof.cli", *args], capture_output=True, text=True, cwd=REPO,
            env={**os.environ, **(env or {})}, timeout=timeout,
        )

    return run


@pytest.fixture
def run_benchmark() -> Callable[..., str]:
    """Run `benchmarks/<name>` on its arguments in a subprocess; fails the test on a non-zero exit, else returns
    its stdout: `run_benchmark("plot_gemv_shapes.py", str(run_dir))`."""

    def run(name: str, *args: str, timeout: float = 120) -> str:
        out = subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *args], capture_output=True,
                             text=True, cwd=REPO, timeout=timeout)
        assert out.returncode == 0, out.stderr
        return out.stdout

    return run
