#!/usr/bin/env bash
# One device call (1 GPU), issue 12: the stream-K down GEMV (variant sk16, csrc/w4a16_sk.cu) against the split-K
# launches it would replace. Every config is checked against the dequantized float64 reference (sym and asym, fused
# bias and SiLU*up, determinism, every output written) before it is timed; a failing one is FAILED, not timed.
# 1. the W4 tune of Qwen2.5-7B's down in the decoder's form, with PDL and without: sk16 and its diagnostics (sk16n:
#    without its math; sk16nx: nor its x staging) against clscx / clscxg / scx at 10 splits and split-K's loads alone
#    (nomathxsf, a diagnostic);
# 2. the same on Llama-3.1-8B's down, against its plan's wk8 and the rule's clscxg s8;
# 3. step_ab at ctx 2048: Qwen's and Llama's shipped plans against down as sk16 (benchmarks/plans/*downsk16.json);
# 4. the kernel-correctness gate of the whole decoder (`edgeprof bench`, ctx 2048) with Qwen's down as sk16.
# Rounds r137-r142 (results/h200/2026-11-29-streamk) ran this script's earlier parts at the commits PROVENANCE.md
# names, with the forms since removed (sk8, sk16u8, sk16p, sk16x, sk16xu8, scxw; code in 552b418).
#   ROUND=r143 bash benchmarks/gpu_sk_round.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_call.sh
gpu_call_init "${ROUND:-sk}" "${DEADLINE_S:-560}"
mark start
P=benchmarks/plans
V="${SK_VARIANTS:-sk16,sk16n,sk16nx,clscx,clscxg,scx,nomathxsf}"
tune() {  # $1 model, $2 variants, $3 splits, $4 out dir, $5 extra flags
  timeout 150 python3 benchmarks/int4_gemv.py --suite tune --tune-model "$1" --tune-variants "$2" --tune-shapes down \
    --tune-splits "$3" --tune-form decoder --repeats 50 --time-budget 110 $5 --out-dir "$R/$4" > "$R/$4.log" 2>&1
  mark "tune $4 rc=$?"; grep -E "^down|FAIL" "$R/$4.log" | head -12
}
tune qwen2.5-7b "$V" 10 tune-qwen-pdl --tune-pdl
tune qwen2.5-7b "$V" 10 tune-qwen-nopdl ""
tune llama-3.1-8b "sk16,sk16n,wk8,clscxg,nomathxsf" 8 tune-llama-pdl --tune-pdl
timeout "$(budget 150)" python3 benchmarks/step_ab.py --model qwen2.5-7b \
  --arms "plan:;sk16:EDGEPROF_W4_PLAN=$P/qwen7b-gather-downsk16.json" \
  --ctx 2048 --blocks 24 --steps 40 --out "$R/ab-qwen-sk.json" > "$R/ab-qwen-sk.log" 2>&1
mark "step_ab qwen rc=$?"; grep -vi warn "$R/ab-qwen-sk.log" | tail -3
timeout "$(budget 90)" python3 benchmarks/step_ab.py --model llama-3.1-8b \
  --arms "plan:;sk16:EDGEPROF_W4_PLAN=$P/llama8b-downsk16.json" \
  --ctx 2048 --blocks 16 --steps 40 --out "$R/ab-llama-sk.json" > "$R/ab-llama-sk.log" 2>&1
mark "step_ab llama rc=$?"; grep -vi warn "$R/ab-llama-sk.log" | tail -3
EDGEPROF_W4_PLAN=$P/qwen7b-gather-downsk16.json timeout "$(budget 5)" python3 -m edgeprof.cli bench --model qwen2.5-7b \
  --backend edgeprof-fast-int4-cuda --ctx 2048 --no-quality --out "$R/bench-qwen-sk16.json" > "$R/bench-qwen-sk16.log" 2>&1
mark "bench qwen sk16 rc=$?"; grep -E "correct|ms|FAIL|Error" "$R/bench-qwen-sk16.log" | tail -6
mark end
