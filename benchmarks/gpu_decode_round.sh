# One device call (1 GPU), issue 12, the whole decode step: the W4A16 GEMV tune ($TUNE_VARIANTS, every
# config checked first; TUNE_VARIANTS=none skips it), edgeprof's bf16 GEMV against cuBLAS per shape
# (benchmarks/bf16_gemv.py), the decode-attention split plans (benchmarks/attn_decode.py), then full
# steps at ctx 2048 and 16384 with each change on and off in the same run ($STEP_BACKENDS), the whole-decoder
# checks, and `edgeprof explain` of edgeprof-fast and edgeprof-fast-int4-cuda. Results in $OUT/$ROUND/.
#   ROUND=round4 bash benchmarks/gpu_decode_round.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_call.sh
gpu_call_init "${ROUND:-round4}" 570
mark start
PLAN=""
if [ "${TUNE_VARIANTS:-base,l3,lean,lean4}" != none ]; then
  timeout "$(left)" python3 benchmarks/int4_gemv.py --suite tune --tune-variants "${TUNE_VARIANTS:-base,l3,lean,lean4}" \
    --tune-splits 1,2,4,8 --repeats 30 --time-budget 150 --out-dir "$R/tune" > "$R/tune.log" 2>&1
  mark "tune rc=$?"; sed -n '/^best per shape/,$p' "$R/tune.log"
  [ -f "$R/tune/tune.json" ] && PLAN="$R/tune/tune.json"
fi
timeout "$(( $(left) - 360 ))" python3 benchmarks/bf16_gemv.py --out "$R/bf16.json" > "$R/bf16.log" 2>&1
mark "bf16 GEMV rc=$?"; grep -E "^(bf16|model|qwen)|^  -" "$R/bf16.log"
timeout "$(( $(left) - 300 ))" python3 benchmarks/attn_decode.py --out "$R/attn.json" > "$R/attn.log" 2>&1
mark "attention rc=$?"; cat "$R/attn.log" | grep -v Warning
BF="$R/bf16.json"; [ -f "$BF" ] || BF=cublas
SB="${STEP_BACKENDS:-edgeprof-fast@EDGEPROF_ATTN=chunk:256+EDGEPROF_BF16_GEMV=cublas;edgeprof-fast@EDGEPROF_BF16_GEMV=cublas;edgeprof-fast@EDGEPROF_BF16_GEMV=$BF;edgeprof-fast-int4-cuda@EDGEPROF_ATTN=chunk:256;edgeprof-fast-int4-cuda}"
EDGEPROF_W4_PLAN="$PLAN" EDGEPROF_BF16_GEMV="$BF" timeout "$(( $(left) - 10 ))" python3 benchmarks/int4_gemv.py \
  --suite kernel --steps-only --step-ctx 2048,16384 --steps 30 --step-backends "$SB" --explain \
  --explain-backends edgeprof-fast-int4-cuda,edgeprof-fast --out-dir "$R/steps" > "$R/steps.log" 2>&1
mark "steps + checks + explain rc=$?"; grep -E "^full step|^backend|^edgeprof|vs (dequantized )?HF|^wall step|^bucket|^gemv|^attention|^norm|^host|^  gemv" "$R/steps.log"
mark end
