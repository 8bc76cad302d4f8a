#!/usr/bin/env bash
# One device call (1 GPU), issue 12: WHY a W4 GEMV runs below copy bandwidth. Nsight Compute on edgeprof's W4A16
# GEMV (benchmarks/w4_ncu_targets.py: each launch checked first) at the GPU's own clocks (--clock-control none):
#   1. sections SpeedOfLight, Occupancy, LaunchStats, WarpStateStats (stall breakdown printed), ComputeWorkloadAnalysis
#   2. the warp stall reasons per issued instruction and the spread of active cycles over SMs (tail / imbalance)
# $CONFIGS: shape:variant:splits, comma-separated. Results in $OUT/ncu/ (ncu-sections.txt, ncu-metrics.csv).
#   ROUND=ncu CONFIGS=gate_up:base:1,lm_head:base:1 bash benchmarks/gpu_ncu_stalls.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_call.sh
gpu_call_init "${ROUND:-ncu}" "${DEADLINE_S:-400}"
mark start
CONFIGS="${CONFIGS:-gate_up:base:1,gate_up:base:2,down:base:8,lm_head:base:1,qkv:base:4}"
NCU=(ncu --clock-control none --kernel-name regex:w4a16)
timeout "$(( $(left) / 2 ))" "${NCU[@]}" --section SpeedOfLight --section Occupancy --section LaunchStats \
  --section WarpStateStats --section ComputeWorkloadAnalysis --print-details all \
  python3 benchmarks/w4_ncu_targets.py --configs "$CONFIGS" --runs 1 > "$R/ncu-sections.txt" 2>&1
mark "ncu sections rc=$?"
timeout "$(( $(left) - 10 ))" "${NCU[@]}" --csv --metrics \
"regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,smsp__average_warps_active_per_issue_active.ratio,\
smsp__issue_active.avg.per_cycle_active,gpu__time_duration.sum,sm__cycles_active.min,sm__cycles_active.avg,\
sm__cycles_active.max,gpc__cycles_elapsed.max,dram__throughput.avg.pct_of_peak_sustained_elapsed,\
sm__warps_active.avg.pct_of_peak_sustained_active,launch__waves_per_multiprocessor" \
  python3 benchmarks/w4_ncu_targets.py --configs "$CONFIGS" --runs 1 > "$R/ncu-metrics.csv" 2>&1
mark "ncu metrics rc=$?"
grep -E "rel err|Duration|DRAM Throughput|Achieved Occupancy|Warp Cycles Per Issued|Waves Per SM|Issue Slots Busy" "$R/ncu-sections.txt" | head -60
python3 - "$R/ncu-metrics.csv" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
if not rows:
    print(open(sys.argv[1]).read()[-3000:]); raise SystemExit
head, body = rows[0], rows[1:]
ki, mi, vi = head.index("Kernel Name"), head.index("Metric Name"), head.index("Metric Value")
idi = head.index("ID")
per = collections.OrderedDict()
for r in body:
    per.setdefault(r[idi], {})[r[mi]] = r[vi]
for kid, m in per.items():
    stalls = {k.split("stalled_")[1].split("_per")[0]: float(v.replace(",", "")) for k, v in m.items() if "stalled_" in k}
    top = sorted(stalls.items(), key=lambda kv: -kv[1])[:6]
    keys = ("gpu__time_duration.sum", "smsp__issue_active.avg.per_cycle_active", "smsp__average_warps_active_per_issue_active.ratio",
            "sm__cycles_active.min", "sm__cycles_active.avg", "sm__cycles_active.max", "gpc__cycles_elapsed.max",
            "dram__throughput.avg.pct_of_peak_sustained_elapsed", "sm__warps_active.avg.pct_of_peak_sustained_active",
            "launch__waves_per_multiprocessor")
    print(kid, " ".join(f"{k.split('.')[0].split('__')[1]}={m.get(k)}" for k in keys))
    print("   stalls per issue:", ", ".join(f"{k} {v:.2f}" for k, v in top))
PY
mark end
