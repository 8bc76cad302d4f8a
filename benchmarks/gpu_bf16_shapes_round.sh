# One device call (1 GPU): edgeprof's bf16 GEMV against cuBLAS on the Llama-3.1-8B / Mistral-7B shapes (no entries for
# them in data/gemv_plans.yaml yet), then step_ab of Llama-3.1-8B with its `faster` shapes (the run's bf16.json) against
# cuBLAS, for the bf16 decoder and for the int4 decoder's bf16 head (which also takes the greedy tail with it).
#   ROUND=r129 bash benchmarks/gpu_bf16_shapes_round.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_call.sh
gpu_call_init "${ROUND:-bf16shapes}" "${DEADLINE_S:-560}"
mark start
timeout 300 python3 benchmarks/bf16_gemv.py --all-shapes --out "$R/bf16.json" > "$R/bf16.log" 2>&1
mark "bf16 GEMV rc=$?"; grep -vi warn "$R/bf16.log" | tail -40
ARMS="cublas:;edgeprof:EDGEPROF_BF16_GEMV=$R/bf16.json"
for b in edgeprof-fast edgeprof-fast-int4-cuda; do
  timeout "$(budget 20)" python3 benchmarks/step_ab.py --model llama-3.1-8b --backend $b --arms "$ARMS" --ctx 2048 \
    --blocks 16 --steps 40 --out "$R/ab-llama-$b.json" > "$R/ab-llama-$b.log" 2>&1
  mark "step_ab llama $b rc=$?"; grep -vi warn "$R/ab-llama-$b.log" | tail -4
done
mark end
