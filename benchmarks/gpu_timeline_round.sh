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
# HOLD_S > 0: each config's chain also replays for that long while nvidia-smi samples the SM clock, power and the
# clock-event reasons every 20 ms (smi.csv), to tell what sets the clock the records show
if [ "${HOLD_S:-0}" != 0 ]; then
  REASONS=clocks_event_reasons.active  # the name since driver 535; the older one before
  nvidia-smi --query-gpu=$REASONS --format=csv > /dev/null 2>&1 || REASONS=clocks_throttle_reasons.active
  nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,power.limit,temperature.gpu,$REASONS \
    --format=csv -lms 20 > "$R/smi.csv" 2>&1 &
  SMI=$!
fi
timeout "$(budget 120)" python3 benchmarks/gemv_timeline.py --configs "$CONFIGS" --hold-s "${HOLD_S:-0}" \
  --out-dir "$R/timeline" > "$R/timeline.log" 2>&1
mark "timeline rc=$?"; tail -14 "$R/timeline.log"
if [ -n "${SMI:-}" ]; then kill "$SMI"; python3 - "$R/timeline/gemv_timeline.json" "$R/smi.csv" <<'PY'
import csv, json, sys, time, statistics as st
rows = json.load(open(sys.argv[1]))["rows"]
smi = list(csv.reader(open(sys.argv[2])))[1:]
def ts(s):  # nvidia-smi's "YYYY/MM/DD HH:MM:SS.mmm" in local time
    return time.mktime(time.strptime(s.split(".")[0], "%Y/%m/%d %H:%M:%S")) + float("0." + s.split(".")[1])
for r in rows:
    h = r.get("hold")
    if not h:
        continue
    inside = [x for x in smi if len(x) >= 7 and h["start"] + 0.3 <= ts(x[0].strip()) <= h["end"]]
    num = lambda i: [float(x[i].split()[0]) for x in inside if x[i].split()[0].replace(".", "").isdigit()]
    reasons = sorted({x[6].strip() for x in inside})
    print(f"{r['config']:<22} {len(inside)} samples: SM clock p50 {st.median(num(1)) if num(1) else 'n/a'} MHz, "
          f"power p50 {st.median(num(3)) if num(3) else 'n/a'} W (limit {inside[0][4].strip() if inside else '-'}), "
          f"temperature p50 {st.median(num(5)) if num(5) else 'n/a'} C, clock-event reasons {reasons}")
PY
fi
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
