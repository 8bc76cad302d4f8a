#!/usr/bin/env bash
# One device call (1 GPU), issue 12 twenty-second pass: the W4 GEMVs with the mma's unused B columns zero
# ($EDGEPROF_W4_BCOLS=zero) against x in every column (the kernels until now).
# 1. benchmarks/bcols_ab.py on Qwen2.5-7B's plan launches (+ clscx / scx down): y bitwise under both, then the chain
#    timed interleaved and held under nvidia-smi (SM clock, power);
# 2. step_ab at ctx 2048 on Qwen2.5-7B: x against zero, paired blocks with a bootstrap CI;
# 3. the decoder's kernel-correctness gate (`edgeprof bench`, ctx 2048) with zero;
# 4. the same A/B per shape and step on Llama-3.1-8B;
# 5. PART2=1: the SM clock the CTAs count (gemv_timeline's clock64 / globaltimer) under both (builds the tuning module).
#   ROUND=r145 bash benchmarks/gpu_bcols_round.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_call.sh
gpu_call_init "${ROUND:-bcols}" "${DEADLINE_S:-560}"
mark start
timeout "$(budget 330)" python3 benchmarks/bcols_ab.py --model qwen2.5-7b --out "$R/bcols-qwen.json" \
  > "$R/bcols-qwen.log" 2>&1
mark "bcols qwen rc=$?"; grep -E "^\||TB/s|Error" "$R/bcols-qwen.log" | head -12
timeout "$(budget 240)" python3 benchmarks/step_ab.py --model qwen2.5-7b --arms "x:;zero:EDGEPROF_W4_BCOLS=zero" \
  --ctx 2048 --blocks 24 --steps 40 --out "$R/ab-qwen-bcols.json" > "$R/ab-qwen-bcols.log" 2>&1
mark "step_ab qwen rc=$?"; grep -vi warn "$R/ab-qwen-bcols.log" | tail -4
EDGEPROF_W4_BCOLS=zero timeout "$(budget 170)" python3 -m edgeprof.cli bench --model qwen2.5-7b \
  --backend edgeprof-fast-int4-cuda --ctx 2048 --no-quality --out "$R/bench-qwen-zero.json" > "$R/bench-qwen-zero.log" 2>&1
mark "bench qwen zero rc=$?"; grep -E "correct|ms|FAIL|Error" "$R/bench-qwen-zero.log" | tail -4
timeout "$(budget 90)" python3 benchmarks/bcols_ab.py --model llama-3.1-8b --rounds 4 --hold-s 1 \
  --out "$R/bcols-llama.json" > "$R/bcols-llama.log" 2>&1
mark "bcols llama rc=$?"; grep -E "^\||Error" "$R/bcols-llama.log" | head -8
timeout "$(budget 10)" python3 benchmarks/step_ab.py --model llama-3.1-8b --arms "x:;zero:EDGEPROF_W4_BCOLS=zero" \
  --ctx 2048 --blocks 16 --steps 40 --out "$R/ab-llama-bcols.json" > "$R/ab-llama-bcols.log" 2>&1
mark "step_ab llama rc=$?"; grep -vi warn "$R/ab-llama-bcols.log" | tail -4
if [ "${PART2:-0}" = 1 ]; then
  for m in x zero; do
    EDGEPROF_W4_BCOLS=$m timeout "$(budget 5)" python3 benchmarks/gemv_timeline.py \
      --configs "down:clscxt:10,gate_up:scxt:1" --out-dir "$R/timeline-$m" > "$R/timeline-$m.log" 2>&1
    mark "timeline $m rc=$?"; grep -E "SM clock" "$R/timeline-$m.log"
  done
fi
mark end
