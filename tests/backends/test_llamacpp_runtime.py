"""backends/llamacpp.promote_cxx_runtime: with torch imported first, libstdc++ is loaded but not in the
process's global symbol scope, where a CUDA build's libggml-cuda (loaded RTLD_GLOBAL by llama_cpp) can then
shadow its template instantiations (the H200 crash in results/h200/2026-11-28-llamacpp-cuda). After the
promotion a libstdc++ symbol resolves from the global scope. Runs in a fresh interpreter: the scope is
process-wide."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHILD = r"""
import ctypes, torch  # noqa: F401  (torch first, as in every edgeprof process)
sym = "_ZNSo9_M_insertIlEERSoT_"  # std::ostream::_M_insert<long>, the symbol of the crash
before = hasattr(ctypes.CDLL(None), sym)
from edgeprof.backends.llamacpp import promote_cxx_runtime
name = promote_cxx_runtime()
print(before, name, hasattr(ctypes.CDLL(None), sym))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's dynamic linker scopes")
def test_promotion_puts_libstdcxx_in_the_global_scope_after_torch() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    before, name, after = out.stdout.split()
    assert name.startswith("libstdc++") and after == "True"
    assert before == "False"  # otherwise this test would not show the promotion doing anything
