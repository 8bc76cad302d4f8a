#!/usr/bin/env bash
# One device call (1 GPU, 16 cores): the int4-GEMV layout experiment (issue 12) on the GPU while llama.cpp's
# CUDA build (issue 11) runs on the CPU cores, then the llama.cpp load probe (and, where a load works, the
# per-token bench). Everything lands in $OUT/round/ and is packed into $OUT/round.tgz.
#   1. benchmarks/stream_pattern.py        read-only streaming at the GEMV's layouts (rowblock / tile / flat)
#   2. benchmarks/int4_gemv.py --suite tune   base, tm, w8, tm8 variants x K splits, each checked first
#   3. ncu on the two large shapes (benchmarks/w4_ncu_targets.py)
#   4. llama.cpp: build (FlashAttention off: a shorter build), probe (cuda-gdb backtrace, LD_PRELOAD pass),
#      bench with whatever load works
# Needs .llamacpp-cuda carried (benchmarks/llamacpp_cuda_build.sh prepare). DEADLINE_S bounds the call.
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_call.sh
gpu_call_init round 560
cat "$R/env.txt"
mark start
llamacpp_build_bg "-DGGML_CUDA_FA=OFF"
mark "llama.cpp build started (12 jobs on cores 4-15)"
timeout "$(left)" taskset -c 0-3 python3 benchmarks/stream_pattern.py --out "$R/stream_pattern.json" > "$R/stream_pattern.log" 2>&1
mark "stream_pattern rc=$?"; tail -30 "$R/stream_pattern.log"
timeout "$(left)" taskset -c 0-3 python3 benchmarks/int4_gemv.py --suite tune --tune-variants base,tm,w8,tm8 \
  --tune-splits 1,2,4,8 --repeats 30 --time-budget 200 --out-dir "$R/tune" > "$R/tune.log" 2>&1
mark "tune rc=$?"; tail -14 "$R/tune.log"
timeout "$(( $(left) < 120 ? $(left) : 120 ))" taskset -c 0-3 ncu --kernel-name regex:w4a16 --section SpeedOfLight \
  --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy --section LaunchStats \
  python3 benchmarks/w4_ncu_targets.py > "$R/ncu.txt" 2>&1
mark "ncu rc=$?"
grep -E "^  [a-z_0-9]+ .*\(|rel err|DRAM Throughput|Memory Throughput|Duration|Achieved Occupancy|Registers Per|Warp Cycles Per Issued" "$R/ncu.txt" | head -60
wait $BUILD; mark "llama.cpp $(tail -1 "$R/llama-build.log")"
tail -3 "$R/llama-build.log"
if [ -f "$LLAMACPP_STATE/src/llama_cpp_python-0.3.36/llama_cpp/lib/libggml-cuda.so" ]; then
  OUT="$R" timeout "$(( $(left) - 20 ))" bash benchmarks/llamacpp_cuda_build.sh probe > "$R/probe.out" 2>&1
  mark "probe rc=$?"; tail -25 "$R/probe.out"
  PRE="$(python3 -c "import json; c=json.load(open('$R/llamacpp-cuda/load_probe.json'))['cases']; ok=[x for x in c if x['n_gpu_layers']==-1 and x['rc']==0 and 'qwen2.5' in x['gguf']]; print(ok[0]['preload'] if ok else 'NONE')" 2>/dev/null || echo NONE)"
  mark "working preload for the 7B GPU load: '$PRE'"
  if [ "$PRE" != NONE ] && [ "$(left)" -gt 60 ]; then
    OUT="$R" LLAMACPP_PRELOAD="$PRE" LLAMACPP_STEPS=32 timeout "$(( $(left) - 15 ))" \
      bash benchmarks/llamacpp_cuda_build.sh bench > "$R/llama-bench.out" 2>&1
    mark "bench rc=$?"; tail -12 "$R/llama-bench.out"
  fi
fi
mark end
