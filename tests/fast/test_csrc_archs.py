"""Every CUDA source of the W4 extension compiles for the GPU generations before Hopper.

The JIT build (w4cuda.load_extension) compiles all of a module's sources for the GPU it runs on. One translation unit
that does not compile there takes the whole module down, and every W4 / bf16 GEMV of edgeprof's own falls back. The
GPU rounds run on sm_90 only, so a Hopper-only construct outside its guard went unnoticed: attn_decode.cu named
cooperative_groups' cluster type in a signature, which is declared only for sm_90+, until the twenty-second pass.
So the module never built on an A100, L4, L40S or Jetson Orin.

Here nvcc (CUDA 13.0 from PyPI, scripts/nvcc_venv.sh; installed once into the state directory) compiles each .cu of
w4cuda.MODULE_SOURCES to a cubin for sm_80 (A100; Jetson Orin's sm_87 has the same features here) and sm_89 (L4,
L40S: the daemon's target), with w4cuda.cuda_flags and torch's own nvcc flags, as the JIT build does; the tuning
module's source for sm_89. Without the compiler (no network for the first install) the tests skip and say why.
"""
from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edgeprof.fast import w4cuda

ROOT = Path(__file__).resolve().parents[2]
ARCHS = ("sm_80", "sm_89")
JOBS = [(src, arch, False) for src in w4cuda.MODULE_SOURCES if src.endswith(".cu") for arch in ARCHS] + [
    (src, "sm_89", True) for src in w4cuda.TUNE_SOURCES]


def _toolkit() -> Path:
    """The PyPI toolkit's root (scripts/nvcc_venv.sh), or a skip naming why there is none."""
    try:
        run = subprocess.run(["bash", str(ROOT / "scripts" / "nvcc_venv.sh")], capture_output=True, text=True,
                             timeout=900)
    except subprocess.TimeoutExpired:
        pytest.skip("no nvcc: scripts/nvcc_venv.sh's install took over 900 s")
    if run.returncode != 0:
        pytest.skip(f"no nvcc: scripts/nvcc_venv.sh failed ({run.stderr.strip()[-300:]})")
    return Path(run.stdout.strip())


def _compile(toolkit: Path, out_dir: Path, src: str, arch: str, tune: bool) -> tuple[int, str]:
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS

    out = out_dir / f"{Path(src).stem}-{arch}{'-tune' if tune else ''}.cubin"
    cmd = [str(toolkit / "bin" / "nvcc"), *w4cuda.cuda_flags(tune), *COMMON_NVCC_FLAGS, f"-arch={arch}", "-cubin",
           f"-I{toolkit / 'include'}", f"-I{w4cuda.CSRC}", "-o", str(out), str(w4cuda.CSRC / src)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    return run.returncode, run.stdout + run.stderr


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    """(source, arch, tune) -> (nvcc's exit code, its output), all compiled once, as many at a time as cores."""
    if sys.platform != "linux":
        pytest.skip("the PyPI nvcc wheels used here are Linux builds")
    toolkit = _toolkit()
    out_dir = tmp_path_factory.mktemp("cubins")
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        results = pool.map(lambda job: _compile(toolkit, out_dir, *job), JOBS)
        return dict(zip(JOBS, results, strict=True))


def test_every_module_source_is_compiled_here():
    assert {src for src, _, tune in JOBS if not tune} == {s for s in w4cuda.MODULE_SOURCES if s.endswith(".cu")}
    assert "attn_decode.cu" in w4cuda.MODULE_SOURCES


@pytest.mark.parametrize(("src", "arch", "tune"), JOBS, ids=[f"{a}-{s}{'-tune' if t else ''}" for s, a, t in JOBS])
def test_cuda_source_compiles_before_hopper(compiled, src, arch, tune):
    rc, log = compiled[(src, arch, tune)]
    errors = [line for line in log.splitlines() if "error" in line.lower()]
    assert rc == 0, f"{src} does not compile for {arch}: the JIT build fails there for the whole module\n" + "\n".join(
        errors[:10] or log.splitlines()[-20:])
