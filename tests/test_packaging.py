"""The wheel: built from this checkout, installed into a clean venv, it finds its own
catalogs (package data, not the repo's configs/) and runs `edgeprof floor` and
`edgeprof backends`. Offline: the build uses the installed setuptools, the venv reuses
this interpreter's site-packages for the dependencies, and the wheel goes in with --no-deps."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc


@pytest.mark.slow
def test_wheel_installs_into_a_clean_venv_and_runs(tmp_path: Path) -> None:
    # build from a copy: setuptools writes build/ and *.egg-info beside the sources
    src = tmp_path / "src"
    files = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT).stdout
    for rel in filter(None, files.split("\0")):
        f = ROOT / rel
        if f.is_file() and not f.is_symlink() and (rel.startswith("edgeprof/") or rel in ("pyproject.toml", "README.md")):
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(f.read_bytes())
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
         cwd=tmp_path)
    (wheel,) = dist.glob("edgeprof-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "edgeprof/data/gpus.yaml" in names and "edgeprof/data/sweeps/ci-tiny.yaml" in names

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    vpy = venv / "bin" / "python"
    purelib = Path(_run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=tmp_path).stdout.strip())
    # the dependencies (numpy, yaml, torch...) from this interpreter's site-packages, after the venv's own;
    # a path added by a .pth is not a site dir, so this environment's editable edgeprof finder stays out
    deps = [p for p in {*site.getsitepackages(), sysconfig.get_paths()["purelib"]} if Path(p).is_dir()]
    (purelib / "zz_deps.pth").write_text("\n".join(deps) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(vpy), "install", "--no-deps", "--no-index", "-q", str(wheel)],
         cwd=tmp_path)

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EDGEPROF_CONFIGS")}
    where = _run([str(vpy), "-c", "import edgeprof, edgeprof.paths as p; print(edgeprof.__file__); "
                  "print(p.config_file('gpus.yaml'))"], cwd=tmp_path, env=env).stdout.split()
    assert all(Path(w).is_relative_to(venv) for w in where), where  # the installed copy, not this checkout

    exe = venv / "bin" / "edgeprof"
    floor = _run([str(exe), "floor", "--model", "default", "--gpu", "h100-sxm"], cwd=tmp_path, env=env).stdout
    assert "smollm2-135m" in floor and "h100" in floor.lower()
    backends = _run([str(exe), "backends"], cwd=tmp_path, env=env).stdout
    assert "hf-eager" in backends and "edgeprof-fast" in backends
