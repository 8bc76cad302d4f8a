#!/usr/bin/env bash
# CUDA 13.0's compiler without a GPU or a system toolkit: nvcc, its headers, nvvm and cuobjdump / nvdisasm from PyPI
# wheels, in a venv in the state directory ($XDG_STATE_HOME/edgeprof/nvcc-venv, ~300 MB, created once). Prints the
# toolkit's root (its bin/ holds nvcc, its include/ the CUDA headers). Used by tests/fast/test_csrc_archs.py (the
# CUDA sources compiled for every GPU generation the JIT build may meet) and benchmarks/sass_local.sh.
#   N="$(bash scripts/nvcc_venv.sh)" && "$N/bin/nvcc" --version
set -euo pipefail
V="${XDG_STATE_HOME:-$HOME/.local/state}/edgeprof/nvcc-venv"
if ! ls "$V"/lib/python3*/site-packages/nvidia/cu13/bin/nvcc > /dev/null 2>&1; then
  echo "nvcc_venv.sh: installing CUDA 13.0's nvcc from PyPI into $V (once, ~300 MB)" >&2
  python3 -m venv "$V" >&2
  "$V/bin/pip" install --disable-pip-version-check -q "nvidia-cuda-nvcc>=13,<13.1" "nvidia-cuda-runtime>=13,<13.1" \
    "nvidia-cuda-crt>=13,<13.1" "nvidia-nvvm>=13,<13.1" "nvidia-cuda-cccl>=13,<13.1" nvidia-cuda-cuobjdump \
    nvidia-cuda-nvdisasm >&2
fi
N="$(echo "$V"/lib/python3*/site-packages/nvidia/cu13)"
chmod +x "$N"/bin/* 2>/dev/null || true  # some wheels ship the tools without the executable bit
echo "$N"
