#!/usr/bin/env bash
# One device call (1 GPU): edgeprof's CUDA kernels under NVIDIA compute-sanitizer (the CUDA toolkit's), as they ship.
# Only edgeprof's kernels are instrumented (--kernel-regex on their names: w4a16_gemv*, w4a16_mlp, bf16_gemv*,
# gemv_greedy_finish, attn_decode), so torch's reference math runs at full speed. Each part runs under its own
# timeout; its log keeps what was found before a timeout.
# 1. memcheck (out-of-bounds / misaligned accesses, device errors) on the shipped int4 decoder: `edgeprof bench`
#    edgeprof-fast-int4-cuda on Qwen2.5-7B at ctx 2048 (the H200 plan's launches, the fused norms, SiLU×up in gate_up,
#    the cluster gather, wk6, the CUDA attention, the bf16 head with the greedy tail), a few steps, with the gate;
# 2. racecheck (shared-memory hazards) and 3. synccheck (barrier misuse) on the same decoder;
# 4. memcheck on the bf16 decoder (edgeprof-fast);
# CHECKS=1 also: memcheck on int4_gemv.py's kernel checks (every shape, group size, variant and fused form; nothing
# timed), and initcheck (reads of device memory never written) on the int4 decoder.
#   ROUND=r149 bash benchmarks/gpu_sanitize_round.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_call.sh
gpu_call_init "${ROUND:-sanitize}" "${DEADLINE_S:-570}"
mark start
CS="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)"
if [ -z "$CS" ]; then mark "no compute-sanitizer on this machine"; exit 1; fi
"$CS" --version | tail -1 | tee -a "$R/env.txt"
KR='kns=w4a16_|bf16_gemv|greedy_finish|attn_decode'
# NO_CACHE=1: without torch's caching allocator (every tensor its own cudaMalloc, so memcheck sees a tensor's end)
# breaks the decoders' CUDA-graph capture (cudaMalloc while capturing; r150). Under any of the tools the int4 bench
# ran out of memory while building the gate's dequantized reference model (r149, r150: 138.7 GiB held by PyTorch,
# against a 32 GB load peak without the sanitizer), so the int4 runs skip the gate (NO_GATE, default 1): the
# decoder's own kernels still run its load checks and steps.
[ "${NO_CACHE:-0}" = 1 ] && export PYTORCH_NO_CUDA_MEMORY_CACHING=1
python3 -c "from edgeprof.fast import w4cuda; print('build', w4cuda.load_extension() is not None, w4cuda.build_error())" \
  > "$R/build.log" 2>&1
mark "build rc=$?"
san() {  # $1 tool, $2 tag, $3 seconds kept back for the parts after, then the command
  local tool=$1 tag=$2 keep=$3; shift 3
  timeout "$(budget "$keep")" "$CS" --tool "$tool" --kernel-regex "$KR" --print-limit 20 --error-exitcode 9 "$@" \
    > "$R/$tag.log" 2>&1
  local rc=$?
  mark "$tag rc=$rc ($([ $rc = 9 ] && echo 'ERRORS FOUND' || ([ $rc = 124 ] && echo 'timed out' || echo 'exit')))"
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY|Error|error|kernel ok|FAIL|checks:" "$R/$tag.log" | grep -v "^$" | head -8
}
BENCH=(python3 -m edgeprof.cli bench --model qwen2.5-7b --ctx 2048 --steps 4 --warmup 1 --no-quality)
GATE=(); [ "${NO_GATE:-1}" = 1 ] && GATE=(--no-gate)
san memcheck memcheck-int4 "${KEEP_1:-260}" "${BENCH[@]}" "${GATE[@]}" --backend edgeprof-fast-int4-cuda --out "$R/memcheck-int4.json"
san racecheck racecheck-int4 "${KEEP_2:-150}" "${BENCH[@]}" "${GATE[@]}" --backend edgeprof-fast-int4-cuda --out "$R/racecheck-int4.json"
san synccheck synccheck-int4 "${KEEP_3:-70}" "${BENCH[@]}" "${GATE[@]}" --backend edgeprof-fast-int4-cuda --out "$R/synccheck-int4.json"
san memcheck memcheck-bf16 5 "${BENCH[@]}" --backend edgeprof-fast --out "$R/memcheck-bf16.json"
if [ "${CHECKS:-0}" = 1 ]; then  # r149 ran these two as well (the kernel checks: 88 clean, then out of memory)
  san memcheck memcheck-checks 5 python3 benchmarks/int4_gemv.py --suite kernel --checks-only --out-dir "$R/checks"
  san initcheck initcheck-int4 5 "${BENCH[@]}" "${GATE[@]}" --backend edgeprof-fast-int4-cuda --out "$R/initcheck-int4.json"
fi
mark end
