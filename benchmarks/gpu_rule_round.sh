# One device call (1 GPU): the int4 default launch (w4cuda.rule_launch) where no tuned plan names a shape.
#   ROUND=r126 bash benchmarks/gpu_rule_round.sh
# 1. the sweep's kernel-correctness gate (`edgeprof bench`, ctx 2048) of edgeprof-fast-int4-cuda on Llama-3.1-8B
#    shapes (no plan for them on any card) under the rule, and under the rule as an sm_80/89 card gets it;
# 2. step_ab at ctx 2048 on Llama-3.1-8B: the rule against the launch such shapes got before it (base at
#    choose_splits), and both as a card without clusters and without PDL would run them (rule-sm80, EDGEPROF_PDL=0);
# 3. step_ab on Qwen2.5-7B: the card's shipped plan against the rule with the plan ignored (the same launches: a
#    check that the rule reproduces the plan) and against base.
# PART=2 (r127): how many clusters of Llama's shapes the card holds at once (cluster_waves), step_ab of Llama's down as
# the rule runs it on an H200 (scx s9: 64 clusters of 9 need two waves) against clscxg at 8 and 7 splits
# (benchmarks/plans/llama8b-down-cl*.json), and the gate on Mistral-7B (Llama's layer shapes, a 32768 vocabulary).
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_call.sh
gpu_call_init "${ROUND:-rule}" "${DEADLINE_S:-560}"
mark start
B=edgeprof-fast-int4-cuda
if [ "${PART:-1}" = 2 ]; then
  timeout 120 python3 -c "
from edgeprof.fast import w4cuda
for name, k, n, norm in (('llama qkv', 4096, 6144, True), ('llama down', 14336, 4096, False), ('qwen down', 18944, 3584, False)):
    for s in (6, 7, 8, 9, 10):
        tps = w4cuda.split_plan(k, 128, s)[1]
        print(name, 'splits', s, w4cuda.cluster_waves(n, s, tps, norm=norm))
" > "$R/cluster_fit.log" 2>&1
  mark "cluster fit rc=$?"; cat "$R/cluster_fit.log"
  P=benchmarks/plans
  ARMS="rule:;cl8:EDGEPROF_W4_PLAN=$P/llama8b-down-cl8.json;cl7:EDGEPROF_W4_PLAN=$P/llama8b-down-cl7.json"
  timeout "$(budget 130)" python3 benchmarks/step_ab.py --model llama-3.1-8b --arms "$ARMS" --ctx 2048 --blocks 24 \
    --steps 40 --out "$R/ab-llama-down.json" > "$R/ab-llama-down.log" 2>&1
  mark "step_ab llama down rc=$?"; grep -vi warn "$R/ab-llama-down.log" | tail -8
  timeout "$(budget 5)" python3 -m edgeprof.cli bench --model mistral-7b-v0.3 --backend $B --ctx 2048 --no-quality \
    --out "$R/bench-mistral-rule.json" > "$R/bench-mistral-rule.log" 2>&1
  mark "bench mistral rule rc=$?"; grep -E "correct|ms|FAIL|Error" "$R/bench-mistral-rule.log" | tail -6
  mark end
  exit 0
fi
timeout 170 python3 -m edgeprof.cli bench --model llama-3.1-8b --backend $B --ctx 2048 --no-quality \
  --out "$R/bench-llama-rule.json" > "$R/bench-llama-rule.log" 2>&1
mark "bench llama rule rc=$?"; grep -E "correct|ms|FAIL|Error" "$R/bench-llama-rule.log" | tail -6
ARMS="rule:;base:EDGEPROF_W4_DEFAULT=base;sm80:EDGEPROF_W4_DEFAULT=rule-sm80;sm80-nopdl:EDGEPROF_W4_DEFAULT=rule-sm80+EDGEPROF_PDL=0;base-nopdl:EDGEPROF_W4_DEFAULT=base+EDGEPROF_PDL=0"
timeout "$(budget 250)" python3 benchmarks/step_ab.py --model llama-3.1-8b --arms "$ARMS" --ctx 2048 --blocks 16 \
  --steps 40 --out "$R/ab-llama.json" > "$R/ab-llama.log" 2>&1
mark "step_ab llama rc=$?"; grep -vi warn "$R/ab-llama.log" | tail -12
N=EDGEPROF_W4_PLAN=none
ARMS="plan:;rule:$N;base:$N+EDGEPROF_W4_DEFAULT=base;sm80-nopdl:$N+EDGEPROF_W4_DEFAULT=rule-sm80+EDGEPROF_PDL=0;base-nopdl:$N+EDGEPROF_W4_DEFAULT=base+EDGEPROF_PDL=0"
timeout "$(budget 120)" python3 benchmarks/step_ab.py --model qwen2.5-7b --arms "$ARMS" --ctx 2048 --blocks 16 \
  --steps 40 --out "$R/ab-qwen.json" > "$R/ab-qwen.log" 2>&1
mark "step_ab qwen rc=$?"; grep -vi warn "$R/ab-qwen.log" | tail -12
EDGEPROF_W4_DEFAULT=rule-sm80 timeout "$(budget 5)" python3 -m edgeprof.cli bench --model llama-3.1-8b --backend $B \
  --ctx 2048 --no-quality --out "$R/bench-llama-sm80.json" > "$R/bench-llama-sm80.log" 2>&1
mark "bench llama rule-sm80 rc=$?"; grep -E "correct|ms|FAIL|Error" "$R/bench-llama-sm80.log" | tail -6
python3 - "$R" <<'PY' || true
import json, sys
from pathlib import Path
for f in sorted(Path(sys.argv[1]).glob("bench-*.json")):
    r = json.loads(f.read_text()); n = r.get("notes", {})
    kc, fl = r.get("kernel_correctness") or {}, r.get("floor") or {}
    print(f.name, r.get("status"), "wall p50 ms", ((r.get("stats") or {}).get("wall") or {}).get("p50"), "floor fraction", fl.get("fraction"),
          "gate", kc.get("passed"), kc.get("value"), "top1", kc.get("top1_agreement"), n.get("int4_launch"),
          n.get("int4_launch_source"), n.get("int4_load_check"))
PY
mark end
