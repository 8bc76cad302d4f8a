# One device call (1 GPU), issue 12, the whole decode step: the W4A16 GEMV tune ($TUNE_VARIANTS, every
# config checked first; TUNE_VARIANTS=none skips it), edgeprof's bf16 GEMV against cuBLAS per shape
# (benchmarks/bf16_gemv.py), the decode-attention split plans (benchmarks/attn_decode.py), then full
# steps at ctx 2048 and 16384 with each change on and off in the same run ($STEP_BACKENDS), the whole-decoder
# checks ($STEP_CTX: the contexts, default 2048,16384), `edgeprof explain` of edgeprof-fast and edgeprof-fast-int4-cuda, then (DAEMON=1) what `serve --backend
# auto` picks and serves and (SWEEP=1) the sweep of configs/sweeps/qwen-fast-gpu.yaml (kernel-correctness gate at
# each cell's context). USE_TUNE=1 runs the steps with this run's tune.json as $EDGEPROF_W4_PLAN; otherwise
# they take the card's shipped plan (edgeprof/data/gemv_plans.yaml). Results in $OUT/$ROUND/.
#   r4: ROUND=round4 USE_TUNE=1 bash benchmarks/gpu_decode_round.sh   (before the defaults changed; its
#       step list was the STEP_BACKENDS default below with EDGEPROF_BF16_GEMV=$R/bf16.json in the third entry)
#   r5: ROUND=round5 TUNE_VARIANTS=base,l3 DAEMON=1 SWEEP=1 bash benchmarks/gpu_decode_round.sh
#   r6: ROUND=round6 TUNE_VARIANTS=base,u14,u10 MICRO=0 FULL_SUITE=1 DAEMON=1 SWEEP=1 STEP_BACKENDS=... (PROVENANCE.md)
#   r7: ROUND=round7 TUNE_VARIANTS=none MICRO=0 DAEMON=1 SWEEP=1 STEP_BACKENDS=... (PROVENANCE.md)
#   r8: ROUND=round8 TUNE_VARIANTS=none MICRO=0 DAEMON=1 SWEEP=1 STEPS=60 EXPLAIN_BACKENDS=edgeprof-fast-int4-cuda STEP_BACKENDS=...
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_call.sh
gpu_call_init "${ROUND:-round4}" 570
mark start
PLAN=""
if [ "${TUNE_VARIANTS:-base,l3,lean,lean4}" != none ]; then
  # TUNE_SPLITS (default 1,2,4,8), TUNE_SHAPES (default all), TUNE_BUDGET (s, default 150), TUNE_PDL=1: timed under PDL,
  # TUNE_FORM=decoder: each shape in the form the int4 step launches it (fused norm / SiLU*up)
  timeout "$(left)" python3 benchmarks/int4_gemv.py --suite tune --tune-variants "${TUNE_VARIANTS:-base,l3,lean,lean4}" \
    --tune-shapes "${TUNE_SHAPES:-qkv,o,gate_up,down}" \
    --tune-splits "${TUNE_SPLITS:-1,2,4,8}" $([ "${TUNE_PDL:-0}" = 1 ] && echo --tune-pdl) --repeats 30 \
    --tune-form "${TUNE_FORM:-plain}" \
    --time-budget "${TUNE_BUDGET:-150}" --out-dir "$R/tune" > "$R/tune.log" 2>&1
  mark "tune rc=$?"; sed -n '/^best per shape/,$p' "$R/tune.log"
  [ -f "$R/tune/tune.json" ] && [ "${USE_TUNE:-0}" = 1 ] && PLAN="$R/tune/tune.json"
fi
MICRO="${MICRO:-1}"  # 0 skips the bf16 GEMV and attention micro-benchmarks, attn runs the attention one only
if [ "$MICRO" = 1 ]; then
  timeout "$(budget 360)" python3 benchmarks/bf16_gemv.py --out "$R/bf16.json" > "$R/bf16.log" 2>&1
  mark "bf16 GEMV rc=$?"; grep -E "^(bf16|model|qwen)|^  -" "$R/bf16.log"
fi
if [ "$MICRO" = 1 ] || [ "$MICRO" = attn ]; then  # ATTN_ARGS: e.g. --plans adaptive --cuda 16x8,8x8
  # shellcheck disable=SC2086
  timeout "$(budget 300)" python3 benchmarks/attn_decode.py ${ATTN_ARGS:-} --out "$R/attn.json" > "$R/attn.log" 2>&1
  mark "attention rc=$?"; grep -v Warning "$R/attn.log"
fi
SB="${STEP_BACKENDS:-edgeprof-fast@EDGEPROF_ATTN=chunk:256+EDGEPROF_BF16_GEMV=cublas;edgeprof-fast;edgeprof-fast-int4-cuda@EDGEPROF_ATTN=chunk:256+EDGEPROF_BF16_GEMV=cublas;edgeprof-fast-int4-cuda}"
# FULL_SUITE=1: the kernel suite's every-shape checks (incl. the fused norm) and per-shape table before the steps
EDGEPROF_W4_PLAN="$PLAN" timeout "$(( $(left) - ${RESERVE:-200} ))" python3 benchmarks/int4_gemv.py \
  --suite kernel $([ "${FULL_SUITE:-0}" = 1 ] || echo --steps-only) --step-ctx "${STEP_CTX:-2048,16384}" --steps "${STEPS:-30}" --step-backends "$SB" --explain \
  --explain-backends "${EXPLAIN_BACKENDS:-edgeprof-fast-int4-cuda,edgeprof-fast}" --out-dir "$R/steps" > "$R/steps.log" 2>&1
mark "steps + checks + explain rc=$?"; grep -E "FAIL|DIFFERS|pipelined|^qwen2.5-7b|^full step|^backend|^edgeprof|vs (dequantized )?HF|^wall step|^bucket|^gemv|^attention|^norm|^host|^  gemv" "$R/steps.log"
if [ "${DAEMON:-0}" = 1 ]; then
  timeout "$(( $(left) - 170 ))" python3 benchmarks/daemon_auto.py --model qwen2.5-7b --device cuda --tokens 64 \
    --out "$R/daemon_auto.json" > "$R/daemon_auto.log" 2>&1
  mark "daemon auto rc=$?"; grep -E "auto|chose|p50" "$R/daemon_auto.log" | tail -8
fi
if [ "${SWEEP:-0}" = 1 ]; then
  timeout "$(( $(left) - 8 ))" python3 -m edgeprof.cli sweep configs/sweeps/qwen-fast-gpu.yaml --no-plots --no-progress \
    --out "$R/sweep" > "$R/sweep.log" 2>&1
  mark "sweep rc=$?"; tail -12 "$R/sweep.log"
fi
mark end
