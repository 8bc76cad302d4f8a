# One device call (1 GPU): how far the default launch rule is from a tune, on a model with no plan (Llama-3.1-8B):
# the W4 tune of its q/k/v, o and down in the decoder's form with PDL (every config checked first; gate_up stays the
# rule's scxa, which down's form follows), then step_ab of the rule against the tune's best launches.
#   ROUND=r132 bash benchmarks/gpu_rule_tune_round.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_call.sh
gpu_call_init "${ROUND:-ruletune}" "${DEADLINE_S:-560}"
mark start
timeout "${TUNE_BUDGET_S:-330}" python3 benchmarks/int4_gemv.py --suite tune --tune-model llama-3.1-8b \
  --tune-variants "${TUNE_VARIANTS:-clscxg,scx,wk6,wk8,base}" --tune-shapes qkv,o,down \
  --tune-splits "${TUNE_SPLITS:-1,4,5,6,7,8,9,10}" --tune-pdl --tune-form decoder --repeats 30 \
  --time-budget "${TUNE_TIME:-280}" --out-dir "$R/tune" > "$R/tune.log" 2>&1
mark "tune rc=$?"; sed -n '/^best per shape/,$p' "$R/tune.log"
timeout "$(budget 5)" python3 benchmarks/step_ab.py --model llama-3.1-8b --arms "rule:;tuned:EDGEPROF_W4_PLAN=$R/tune/tune.json" \
  --ctx 2048 --blocks 16 --steps 40 --out "$R/ab-llama-tuned.json" > "$R/ab-llama-tuned.log" 2>&1
mark "step_ab rc=$?"; grep -vi warn "$R/ab-llama-tuned.log" | tail -3
mark end
