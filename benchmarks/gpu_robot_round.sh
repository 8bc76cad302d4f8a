# One device call (1 GPU), issue 12's readback on the robot side: the greedy tail's kernel checks (incl. the
# extension's GIL-free wait on the mapped pair), robot_latency.py through the real rosbridge and an rclpy robot for
# edgeprof-fast-int4-cuda with the token read back through mapped memory and by copy ($READBACKS), then step_ab.py
# of the two readbacks at ctx 2048. Needs .whl-ros carried (../shared/tools/ros-gpu-wheels.sh). Results in
# $OUT/$ROUND/.
#   r107: ROUND=r107 bash benchmarks/gpu_robot_round.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_call.sh
gpu_call_init "${ROUND:-r107}" "${DEADLINE_S:-560}"
mark start
greedy_checks
ros_venv
for rb in ${READBACKS:-mapped copy}; do
  EDGEPROF_READBACK=$rb timeout "$(budget 120)" /tmp/v/bin/python benchmarks/robot_latency.py --model qwen2.5-7b \
    --device cuda --backends edgeprof-fast-int4-cuda --max-ctx 2048 --tokens 128 --requests 4 --rounds 3 \
    --trigger-n 200 --out "$R/robot-$rb" > "$R/robot-$rb.log" 2>&1
  mark "robot latency, readback $rb rc=$?"; grep -vE "Warning|warn" "$R/robot-$rb.log" | tail -25
done
timeout "$(budget 5)" python3 benchmarks/step_ab.py --arms "mapped:;copy:EDGEPROF_READBACK=copy" --ctx 2048 \
  --blocks "${AB_BLOCKS:-40}" --steps 40 --out "$R/ab-readback-2048.json" > "$R/ab.log" 2>&1
mark "step_ab rc=$?"; tail -8 "$R/ab.log"
mark end
