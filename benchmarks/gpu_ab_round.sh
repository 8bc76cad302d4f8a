# One device call (1 GPU), issue 12: the greedy tail's kernel checks (GREEDY_CHECKS=0 skips them), then paired step
# A/Bs (benchmarks/step_ab.py) of $AB_ARMS at each context of $AB_CTX ($AB_ARMS_LONG at ctx 16384 when set),
# (ROBOT=1) benchmarks/robot_latency.py for $ROBOT_BACKENDS (default edgeprof-fast-int4-cuda) through the real
# rosbridge (.whl-ros carried), then (ROUND_AFTER=1) the decode round of benchmarks/gpu_decode_round.sh in the time
# left, with its own settings from the environment. Results in $OUT/$ROUND/ (the decode round's in
# $OUT/$ROUND-steps/).
#   r108-r110: results/h200/2026-11-29-pipelined/PROVENANCE.md
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_call.sh
gpu_call_init "${ROUND:-r108}" "${DEADLINE_S:-570}"
mark start
[ "${GREEDY_CHECKS:-1}" = 1 ] && greedy_checks  # GREEDY_CHECKS=0: the greedy tail unchanged, its checks skipped
for c in ${AB_CTX:-2048}; do
  arms="$AB_ARMS"; [ "$c" = 16384 ] && [ -n "${AB_ARMS_LONG:-}" ] && arms="$AB_ARMS_LONG"
  timeout "$(budget 30)" python3 benchmarks/step_ab.py --arms "$arms" --ctx "$c" --blocks "${AB_BLOCKS:-40}" --steps 40 \
    --out "$R/ab-$c.json" > "$R/ab-$c.log" 2>&1
  mark "step_ab ctx $c rc=$?"; grep -E " / |equal" "$R/ab-$c.log" | tail -6
done
if [ "${ROBOT:-0}" = 1 ]; then  # robot_latency.py through rosbridge and an rclpy robot (needs .whl-ros carried)
  ros_venv
  timeout "$(budget "${ROBOT_RESERVE:-220}")" /tmp/v/bin/python benchmarks/robot_latency.py --model qwen2.5-7b \
    --device cuda --backends "${ROBOT_BACKENDS:-edgeprof-fast-int4-cuda}" --max-ctx 2048 --tokens 128 --requests 4 --rounds 3 \
    --trigger-n 200 --out "$R/robot" > "$R/robot.log" 2>&1
  mark "robot latency rc=$?"; grep -vE "Warning|warn" "$R/robot.log" | tail -12
fi
if [ "${ROUND_AFTER:-0}" = 1 ]; then
  DEADLINE_S=$(( $(left) - 10 )) ROUND="$(basename "$R")-steps" bash benchmarks/gpu_decode_round.sh
  mv "$OUT/$(basename "$R")-steps" "$R/steps-round" 2>/dev/null; rm -f "$OUT/$(basename "$R")-steps.tgz"
fi
mark end
