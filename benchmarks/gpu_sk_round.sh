#!/usr/bin/env bash
# One device call (1 GPU), issue 12: the stream-K down GEMV (variants sk16 / sk8, csrc/w4a16_sk.cu) against the split-K
# launches it would replace. Every config is checked against the dequantized float64 reference (sym and asym, fused
# bias and SiLU*up, determinism, every output written) before it is timed; a failing one is FAILED, not timed.
# 1. the W4 tune of Qwen2.5-7B's down in the decoder's form, with PDL and without: sk16, sk8 against clscx / clscxg /
#    scx at 10 splits and the loads alone (nomathxsf, a diagnostic);
# 2. the same on Llama-3.1-8B's down, against its plan's wk8 and the rule's clscxg s8;
# 3. step_ab at ctx 2048: Qwen's H200 plan against down as sk16 / sk8 (benchmarks/plans/qwen7b-gather-downsk*.json),
#    Llama's against down as sk16 / sk8 (llama8b-downsk*.json);
# 4. the kernel-correctness gate of the whole decoder (`edgeprof bench`, ctx 2048) with Qwen's down as sk16.
# PART=2 (r138): sk16 against its loads alone (sk16n), 8 tiles per chunk (sk16u8) and an L2 prefetch one chunk further
# (sk16p) on Qwen's and Llama's down, then step_ab of Qwen's plan against down as sk16 / sk16u8 / sk16p.
#   ROUND=r137 bash benchmarks/gpu_sk_round.sh
# PART=3 (r139): sk16n without the x staging (sk16nx) against split-K's loads with and without it, PDL on and off.
#   ROUND=r138 PART=2 bash benchmarks/gpu_sk_round.sh
# PART=4 (r140): sk16 / sk16u8 with x streamed beside the weights (sk16x / sk16xu8) per shape and in the step, Qwen and
# Llama.
#   ROUND=r139 PART=3 bash benchmarks/gpu_sk_round.sh
# PART=5 (r141): scx with its split-K ticket replaced by tagged words owned by split 0 (scxw), per shape and in the
# step on Qwen and Llama, and the gate on Qwen with down as scxw s10.
#   ROUND=r140 PART=4 bash benchmarks/gpu_sk_round.sh
# PART=6 (r142): scxw with a 256 ns pause between the owner's polls, per shape and in Qwen's step (against scx s10).
#   ROUND=r141 PART=5 bash benchmarks/gpu_sk_round.sh
#   ROUND=r142 PART=6 bash benchmarks/gpu_sk_round.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_call.sh
gpu_call_init "${ROUND:-sk}" "${DEADLINE_S:-560}"
mark start
P=benchmarks/plans
V="${SK_VARIANTS:-sk16,sk8,clscx,clscxg,scx,nomathxsf}"
tune() {  # $1 model, $2 variants, $3 splits, $4 out dir, $5 extra flags
  timeout 150 python3 benchmarks/int4_gemv.py --suite tune --tune-model "$1" --tune-variants "$2" --tune-shapes down \
    --tune-splits "$3" --tune-form decoder --repeats 50 --time-budget 110 $5 --out-dir "$R/$4" > "$R/$4.log" 2>&1
  mark "tune $4 rc=$?"; grep -E "^down|FAIL" "$R/$4.log" | head -12
}
if [ "${PART:-1}" = 6 ]; then  # r142: scxw with a pause between the owner's polls
  tune qwen2.5-7b "scxw,scx,clscx" 10,12 tune-qwen-pdl --tune-pdl
  tune llama-3.1-8b "scxw,scx,clscxg" 8,9 tune-llama-pdl --tune-pdl
  timeout "$(budget 5)" python3 benchmarks/step_ab.py --model qwen2.5-7b --arms \
    "plan:;scxw10:EDGEPROF_W4_PLAN=$P/qwen7b-gather-downscxw10.json;scx10:EDGEPROF_W4_PLAN=$P/qwen7b-gather-downscx.json" \
    --ctx 2048 --blocks 24 --steps 40 --out "$R/ab-qwen-scxw.json" > "$R/ab-qwen-scxw.log" 2>&1
  mark "step_ab qwen rc=$?"; grep -vi warn "$R/ab-qwen-scxw.log" | tail -2
  mark end
  exit 0
fi
if [ "${PART:-1}" = 5 ]; then  # r141: scx with the tagged-word finish (scxw), per shape and in the step; its gate
  tune qwen2.5-7b "scxw,scx,clscx,clscxg" 8,10,12,16 tune-qwen-pdl --tune-pdl
  tune llama-3.1-8b "scxw,scx,wk8,clscxg" 8,9,12 tune-llama-pdl --tune-pdl
  timeout "$(budget 170)" python3 benchmarks/step_ab.py --model qwen2.5-7b --arms \
    "plan:;scxw10:EDGEPROF_W4_PLAN=$P/qwen7b-gather-downscxw10.json;scxw12:EDGEPROF_W4_PLAN=$P/qwen7b-gather-downscxw12.json" \
    --ctx 2048 --blocks 24 --steps 40 --out "$R/ab-qwen-scxw.json" > "$R/ab-qwen-scxw.log" 2>&1
  mark "step_ab qwen rc=$?"; grep -vi warn "$R/ab-qwen-scxw.log" | tail -2
  timeout "$(budget 90)" python3 benchmarks/step_ab.py --model llama-3.1-8b --arms \
    "plan:;scxw8:EDGEPROF_W4_PLAN=$P/llama8b-downscxw8.json;scxw9:EDGEPROF_W4_PLAN=$P/llama8b-downscxw9.json" \
    --ctx 2048 --blocks 16 --steps 40 --out "$R/ab-llama-scxw.json" > "$R/ab-llama-scxw.log" 2>&1
  mark "step_ab llama rc=$?"; grep -vi warn "$R/ab-llama-scxw.log" | tail -2
  EDGEPROF_W4_PLAN=$P/qwen7b-gather-downscxw10.json timeout "$(budget 5)" python3 -m edgeprof.cli bench \
    --model qwen2.5-7b --backend edgeprof-fast-int4-cuda --ctx 2048 --no-quality --out "$R/bench-qwen-scxw.json" \
    > "$R/bench-qwen-scxw.log" 2>&1
  mark "bench qwen scxw rc=$?"; grep -E "correct|ms|FAIL|Error" "$R/bench-qwen-scxw.log" | tail -3
  mark end
  exit 0
fi
if [ "${PART:-1}" = 4 ]; then  # r140: x streamed beside the weights (sk16x, sk16xu8)
  tune qwen2.5-7b "sk16,sk16x,sk16xu8,clscx" 10 tune-qwen-pdl --tune-pdl
  tune llama-3.1-8b "sk16x,sk16xu8,wk8,clscxg" 8 tune-llama-pdl --tune-pdl
  timeout "$(budget 100)" python3 benchmarks/step_ab.py --model qwen2.5-7b --arms \
    "plan:;sk16x:EDGEPROF_W4_PLAN=$P/qwen7b-gather-downsk16x.json;sk16xu8:EDGEPROF_W4_PLAN=$P/qwen7b-gather-downsk16xu8.json" \
    --ctx 2048 --blocks 24 --steps 40 --out "$R/ab-qwen-skx.json" > "$R/ab-qwen-skx.log" 2>&1
  mark "step_ab qwen rc=$?"; grep -vi warn "$R/ab-qwen-skx.log" | tail -2
  timeout "$(budget 5)" python3 benchmarks/step_ab.py --model llama-3.1-8b --arms \
    "plan:;sk16x:EDGEPROF_W4_PLAN=$P/llama8b-downsk16x.json;sk16xu8:EDGEPROF_W4_PLAN=$P/llama8b-downsk16xu8.json" \
    --ctx 2048 --blocks 16 --steps 40 --out "$R/ab-llama-skx.json" > "$R/ab-llama-skx.log" 2>&1
  mark "step_ab llama rc=$?"; grep -vi warn "$R/ab-llama-skx.log" | tail -2
  mark end
  exit 0
fi
if [ "${PART:-1}" = 3 ]; then  # r139: the x staging's share of sk16's loads alone, against split-K's (nomathx: no staging)
  tune qwen2.5-7b "sk16,sk16n,sk16nx,clscx,nomathxsf,nomathx" 10 tune-qwen-pdl --tune-pdl
  tune qwen2.5-7b "sk16,sk16n,sk16nx,clscx,nomathxsf,nomathx" 10 tune-qwen-nopdl ""
  mark end
  exit 0
fi
if [ "${PART:-1}" = 2 ]; then  # r138: what limits sk16's stream (its loads alone; twice the bytes in flight; L2 prefetch)
  V="${SK_VARIANTS:-sk16,sk16n,sk16u8,sk16p,clscx,nomathxsf}"
  tune qwen2.5-7b "$V" 10 tune-qwen-pdl --tune-pdl
  tune llama-3.1-8b "$V,wk8" 8 tune-llama-pdl --tune-pdl
  timeout "$(budget 5)" python3 benchmarks/step_ab.py --model qwen2.5-7b --arms \
    "plan:;sk16:EDGEPROF_W4_PLAN=$P/qwen7b-gather-downsk16.json;sk16u8:EDGEPROF_W4_PLAN=$P/qwen7b-gather-downsk16u8.json;sk16p:EDGEPROF_W4_PLAN=$P/qwen7b-gather-downsk16p.json" \
    --ctx 2048 --blocks 24 --steps 40 --out "$R/ab-qwen-sk.json" > "$R/ab-qwen-sk.log" 2>&1
  mark "step_ab qwen rc=$?"; grep -vi warn "$R/ab-qwen-sk.log" | tail -3
  mark end
  exit 0
fi
tune qwen2.5-7b "$V" 10 tune-qwen-pdl --tune-pdl
tune qwen2.5-7b "$V" 10 tune-qwen-nopdl ""
tune llama-3.1-8b "sk16,sk8,wk8,clscxg,nomathxsf" 8 tune-llama-pdl --tune-pdl
timeout "$(budget 150)" python3 benchmarks/step_ab.py --model qwen2.5-7b \
  --arms "plan:;sk16:EDGEPROF_W4_PLAN=$P/qwen7b-gather-downsk16.json;sk8:EDGEPROF_W4_PLAN=$P/qwen7b-gather-downsk8.json" \
  --ctx 2048 --blocks 24 --steps 40 --out "$R/ab-qwen-sk.json" > "$R/ab-qwen-sk.log" 2>&1
mark "step_ab qwen rc=$?"; grep -vi warn "$R/ab-qwen-sk.log" | tail -6
timeout "$(budget 90)" python3 benchmarks/step_ab.py --model llama-3.1-8b \
  --arms "plan:;sk16:EDGEPROF_W4_PLAN=$P/llama8b-downsk16.json;sk8:EDGEPROF_W4_PLAN=$P/llama8b-downsk8.json" \
  --ctx 2048 --blocks 16 --steps 40 --out "$R/ab-llama-sk.json" > "$R/ab-llama-sk.log" 2>&1
mark "step_ab llama rc=$?"; grep -vi warn "$R/ab-llama-sk.log" | tail -6
EDGEPROF_W4_PLAN=$P/qwen7b-gather-downsk16.json timeout "$(budget 5)" python3 -m edgeprof.cli bench --model qwen2.5-7b \
  --backend edgeprof-fast-int4-cuda --ctx 2048 --no-quality --out "$R/bench-qwen-sk16.json" > "$R/bench-qwen-sk16.log" 2>&1
mark "bench qwen sk16 rc=$?"; grep -E "correct|ms|FAIL|Error" "$R/bench-qwen-sk16.log" | tail -6
mark end
