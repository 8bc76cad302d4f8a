#!/usr/bin/env bash
# llama.cpp's GPU sweep cells (configs/sweeps/qwen-llamacpp-gpu.yaml) in one device call (1 GPU, 16 cores):
# CUDA build of llama-cpp-python (FlashAttention and NCCL off: a ~4 min build) while the SYNTHETIC Q4_0 GGUF
# of the Qwen2.5-7B shape is written into edgeprof's cache (synthetic_gguf.cached, what the sweep's cells
# then load), then `edgeprof sweep` (the 2026-11-28 run, commit 9abf50e, named the file's path instead). Needs .llamacpp-cuda and .whl (the gguf wheel) carried.
# Results in $OUT/llcells/, packed into $OUT/llcells.tgz.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
source benchmarks/gpu_call.sh
gpu_call_init llcells 530
SRC="$LLAMACPP_STATE/src/llama_cpp_python-0.3.36"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/gguf-*.whl || exit 1
mark start
llamacpp_build_bg "-DGGML_CUDA_FA=OFF -DGGML_CUDA_NCCL=OFF"
PYTHONPATH="/tmp/site:$REPO" taskset -c 0-3 python3 -c "
from edgeprof import synthetic_gguf
from edgeprof.shape_loader import load_presets
print(synthetic_gguf.cached(load_presets()['qwen2.5-7b']))" > "$R/gguf-write.log" 2>&1
mark "gguf written rc=$? ($(tail -1 "$R/gguf-write.log"))"
wait $BUILD; mark "llama.cpp $(tail -1 "$R/llama-build.log")"
DC="$(ls .llamacpp-cuda/diskcache-*.whl | head -1)"
PYTHONPATH="$SRC:$DC:/tmp/site:$REPO" timeout "$(( $(left) - 5 ))" python3 -m edgeprof.cli sweep configs/sweeps/qwen-llamacpp-gpu.yaml \
  --allow-mismatch --no-progress --no-plots --out "$R/sweep" > "$R/sweep.log" 2>&1
mark "sweep rc=$?"; tail -25 "$R/sweep.log"
mark end
