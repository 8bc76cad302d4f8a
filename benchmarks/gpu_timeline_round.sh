#!/usr/bin/env bash
# One device call (1 GPU), issue 12: each CTA's phases in a PDL chain of W4 GEMV launches (benchmarks/gemv_timeline.py:
# the timeline variants, each GEMV's y checked bitwise against the variant it traces first), with PDL and, for
# $NOPDL_CONFIGS, without; then $PF_CONFIGS once per tile count in $PF_LIST with EDGEPROF_PDL_PREFETCH set to it (each
# warp asks L2 for that many tiles of its slice before its PDL wait). Results in $OUT/$ROUND/ (timeline/,
# timeline-nopdl/, timeline-pf<N>/: JSON, PNG; logs beside them).
#   ROUND=r120 bash benchmarks/gpu_timeline_round.sh
#   ROUND=r121 CONFIGS=down:clscxt:10,down:clscxt:8 NOPDL_CONFIGS= PF_LIST="6 30" PF_CONFIGS=down:clscxt:10 bash ...
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_call.sh
gpu_call_init "${ROUND:-timeline}" "${DEADLINE_S:-540}"
mark start
CONFIGS="${CONFIGS:-down:clscxt:10,down:clscxgt:10,down:scxt:10,down:nomathxsft:10,down:clnomathxsft:10,gate_up:scxt:1,gate_up:nomathxsft:1,qkv:clscxgt:7}"
timeout "$(budget 120)" python3 benchmarks/gemv_timeline.py --configs "$CONFIGS" --out-dir "$R/timeline" \
  > "$R/timeline.log" 2>&1
mark "timeline rc=$?"; tail -14 "$R/timeline.log"
if [ -n "${NOPDL_CONFIGS-down:clscxt:10,down:nomathxsft:10}" ]; then
  timeout "$(budget 15)" python3 benchmarks/gemv_timeline.py --no-pdl --configs "${NOPDL_CONFIGS-down:clscxt:10,down:nomathxsft:10}" \
    --out-dir "$R/timeline-nopdl" > "$R/timeline-nopdl.log" 2>&1
  mark "timeline without PDL rc=$?"; tail -6 "$R/timeline-nopdl.log"
fi
for pf in ${PF_LIST:-}; do
  EDGEPROF_PDL_PREFETCH=$pf timeout "$(budget 10)" python3 benchmarks/gemv_timeline.py --configs "${PF_CONFIGS:-down:clscxt:10}" \
    --out-dir "$R/timeline-pf$pf" > "$R/timeline-pf$pf.log" 2>&1
  mark "timeline with $pf tiles per warp prefetched before the wait rc=$?"; tail -4 "$R/timeline-pf$pf.log"
done
