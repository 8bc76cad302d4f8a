#!/usr/bin/env bash
# One device call (1 GPU): the W4 / bf16 extension as an sm_80 / sm_89 card builds and runs it, emulated on an sm_90
# one. TORCH_CUDA_ARCH_LIST=8.0+PTX makes the JIT build compile every source for compute_80 (the driver JITs that PTX
# for the GPU at load), so the device code is what an A100 / L4 / Jetson Orin gets (__CUDA_ARCH__ 800: no PDL wait,
# no cluster code). The host side is kept off what such a card would not launch: the H200 plan ignored
# (EDGEPROF_W4_PLAN=none), the default launch rule as an sm_80 card gets it (EDGEPROF_W4_DEFAULT=rule-sm80: no
# clusters), PDL off, the Triton attention. Then:
# 1. the build itself (w4cuda.build_error() names any failure: before the twenty-second pass attn_decode.cu broke it);
# 2. the decoder's kernel-correctness gate (`edgeprof bench`, ctx 2048) for edgeprof-fast-int4-cuda and edgeprof-fast
#    (bf16) on Qwen2.5-7B and the int4 one on Llama-3.1-8B, whose records name the kernels that ran;
#   ROUND=r147 bash benchmarks/gpu_presm90_round.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_call.sh
gpu_call_init "${ROUND:-presm90}" "${DEADLINE_S:-500}"
export TORCH_CUDA_ARCH_LIST="8.0+PTX" TORCH_EXTENSIONS_DIR=/tmp/ext-sm80 EDGEPROF_W4_PLAN=none \
  EDGEPROF_W4_DEFAULT=rule-sm80 EDGEPROF_PDL=0 EDGEPROF_ATTN_KERNEL=triton
mark start
timeout 300 python3 - > "$R/build.log" 2>&1 <<'PY'
import time
t = time.perf_counter()
from edgeprof.fast import w4cuda
ext = w4cuda.load_extension()
print(f"built in {time.perf_counter() - t:.1f} s: {ext is not None}; build_error: {w4cuda.build_error()}")
import torch
print("device", torch.cuda.get_device_name(), torch.cuda.get_device_capability())
PY
mark "build rc=$?"; cat "$R/build.log" | tail -3
bench() {  # $1 model, $2 backend, $3 tag
  timeout "$(budget 20)" python3 -m edgeprof.cli bench --model "$1" --backend "$2" --ctx 2048 --no-quality \
    --out "$R/bench-$3.json" > "$R/bench-$3.log" 2>&1
  mark "bench $3 rc=$?"; grep -E "correct|ms|FAIL|Error|fallback" "$R/bench-$3.log" | tail -4
  python3 -c "import json; d=json.load(open('$R/bench-$3.json')); n=d.get('notes', {}); \
print({k: v for k, v in n.items() if k.startswith(('int4_kernel', 'int4_fallback', 'int4_launch', 'bf16_gemv', 'attention', 'pdl'))})" 2>&1 | tail -2
}
bench qwen2.5-7b edgeprof-fast-int4-cuda qwen-int4
bench qwen2.5-7b edgeprof-fast qwen-bf16
bench llama-3.1-8b edgeprof-fast-int4-cuda llama-int4
mark end
