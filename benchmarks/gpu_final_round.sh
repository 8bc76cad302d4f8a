#!/usr/bin/env bash
# Issue 12's tables re-measured on one commit, in two device calls (1 GPU each), so that every number the closing
# note and the README's issue-12 section quote for this code comes from one run per table, on one card.
# PART=A (default):
#   1. benchmarks/int4_gemv.py --suite kernel --all-shapes: every kernel check (every shape, group size, variant,
#      fused form), then per shape (Qwen2.5-7B, Llama-3.1-8B, Mistral-7B) edgeprof's W4 GEMV as the card's plan or
#      rule launches it (plain, fp16 mma, PDL) beside tinygemm, gemlite (if importable: carry .whl/gemlite-src, the
#      package folder of gemlite 0.6.0.post2's PyPI sdist) and cuBLAS bf16, in µs, GB/s and fraction of the copy
#      bandwidth measured in the same run; then the full steps at ctx 2048 and 16384 of the int4 paths (edgeprof's
#      CUDA GEMV, gemlite, tinygemm) and of bf16 (edgeprof's GEMVs, cuBLAS), and `edgeprof explain` of the int4 and
#      bf16 decoders (per-kernel GB/s, launch count, host gap);
#   2. benchmarks/bf16_gemv.py --all-shapes: edgeprof's bf16 GEMV against cuBLAS per shape.
# PART=B:
#   1. the gated sweeps (kernel-correctness gate at each cell's context) of configs/sweeps/qwen-fast-gpu.yaml and
#      configs/sweeps/llama-mistral-fast-gpu.yaml;
#   2. the per-shape rows again (--rows-only --all-shapes, no kernel checks: PART=A ran them on the same commit),
#      now with each shape on the launch the decoder takes for its role (r152's Llama / Mistral rows ran base where
#      the decoder runs the rule's launch);
#   3. down's launches side by side in one tune with PDL (Qwen: clscx, clscxg, scx at 10 splits, wk8, sk16; each
#      checked first), the best-launch row the issue's down target is read against;
#   4. `serve --backend auto` on Qwen2.5-7B: what it picks and one served request.
#   ROUND=r152 PART=A bash benchmarks/gpu_final_round.sh   (carry .whl/gemlite-src)
#   ROUND=r153 PART=B bash benchmarks/gpu_final_round.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_call.sh
gpu_call_init "${ROUND:-final}" "${DEADLINE_S:-560}"
[ -d .whl/gemlite-src ] && export PYTHONPATH="$PWD/.whl/gemlite-src:$PYTHONPATH"
mark start
if [ "${PART:-A}" = A ]; then
  SB="edgeprof-fast-int4-cuda;edgeprof-fast-int4-gemlite;edgeprof-fast-int4;edgeprof-fast;edgeprof-fast@EDGEPROF_BF16_GEMV=cublas"
  timeout "$(budget 70)" python3 benchmarks/int4_gemv.py --suite kernel --all-shapes --repeats 30 \
    --step-ctx 2048,16384 --steps "${STEPS:-60}" --step-backends "$SB" --explain \
    --explain-backends edgeprof-fast-int4-cuda,edgeprof-fast --out-dir "$R/kernel" > "$R/kernel.log" 2>&1
  mark "kernel suite rc=$?"
  grep -E "checks|FAIL|^GEMV per shape|edgeprof-cuda +|tinygemm|gemlite|cublas|ctx +(2048|16384)|^wall step|^gemv|^attention|^host" \
    "$R/kernel.log" | head -90
  timeout "$(budget 5)" python3 benchmarks/bf16_gemv.py --all-shapes --out "$R/bf16.json" > "$R/bf16.log" 2>&1
  mark "bf16 GEMV rc=$?"; grep -E "^(bf16|model|qwen|llama|mistral)|^  -" "$R/bf16.log" | head -30
else
  for s in qwen-fast-gpu llama-mistral-fast-gpu; do
    timeout "$(budget $([ $s = qwen-fast-gpu ] && echo 400 || echo 250))" python3 -m edgeprof.cli sweep \
      "configs/sweeps/$s.yaml" --no-plots --no-progress --out "$R/sweep-$s" > "$R/sweep-$s.log" 2>&1
    mark "sweep $s rc=$?"; tail -10 "$R/sweep-$s.log"
  done
  timeout "$(budget 160)" python3 benchmarks/int4_gemv.py --suite kernel --rows-only --all-shapes --repeats 30 \
    --out-dir "$R/rows" > "$R/rows.log" 2>&1
  mark "rows rc=$?"; sed -n '/^GEMV per shape/,$p' "$R/rows.log" | grep -E "GEMV|edgeprof-cuda\+pdl|FAIL" | head -30
  timeout "$(budget 100)" python3 benchmarks/int4_gemv.py --suite tune --tune-shapes down --tune-pdl --repeats 30 \
    --tune-variants clscx,clscxg,scx,wk8,sk16 --tune-splits 10 --tune-form decoder --time-budget 120 \
    --out-dir "$R/tune-down" > "$R/tune-down.log" 2>&1
  mark "tune down rc=$?"; sed -n '/^best per shape/,$p' "$R/tune-down.log"; grep -E "down .*(FAIL|us)" "$R/tune-down.log" | head -12
  timeout "$(budget 5)" python3 benchmarks/daemon_auto.py --model qwen2.5-7b --device cuda --tokens 64 \
    --out "$R/daemon_auto.json" > "$R/daemon_auto.log" 2>&1
  mark "daemon auto rc=$?"; grep -E "auto|chose|p50" "$R/daemon_auto.log" | tail -8
fi
mark end
