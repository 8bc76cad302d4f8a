# Sourced by the one-call device scripts (benchmarks/gpu_*.sh): `gpu_call_init NAME DEADLINE_S` makes
# $R = $OUT/NAME, packs it into $OUT/NAME.tgz on exit (the device returns at most 8 files), writes the
# machine's card, driver, versions and commit to $R/env.txt; `left` is the seconds left of the call's
# deadline, `mark MSG` a timestamped line in $R/timeline.txt.
gpu_call_init() {
  START=$(date +%s); DEADLINE_S="${DEADLINE_S:-$2}"; R="$OUT/$1"; mkdir -p "$R"
  # shellcheck disable=SC2064  # expand now: the trap must pack this call's folder
  trap "tar czf '$OUT/$1.tgz' -C '$OUT' '$1'" EXIT
  export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 LLAMACPP_STATE=/root/llamacpp-state
  { nvidia-smi --query-gpu=index,name,driver_version,memory.total,clocks.max.sm --format=csv; nproc; date -u
    python3 -c "import torch, transformers, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, 'triton', triton.__version__)"
    nvcc --version | tail -1; git log --oneline -1 2>/dev/null; } > "$R/env.txt" 2>&1
}
left() { echo $(( START + DEADLINE_S - $(date +%s) )); }
# seconds for the next part: what is left after keeping $1 back for the parts after it, at least 30 (a short
# DEADLINE_S must not give `timeout` a negative value)
budget() { local b=$(( $(left) - $1 )); echo $(( b > 30 ? b : 30 )); }
mark() { echo "$(date -u +%H:%M:%S) +$(( $(date +%s) - START ))s $*" | tee -a "$R/timeline.txt"; }
# llama.cpp's CUDA build in the background on cores 4-15 (`wait $BUILD`); $1: extra CMake flags
llamacpp_build_bg() {
  ( OUT="$R" MAX_JOBS=12 LLAMACPP_CMAKE_EXTRA="$1" taskset -c 4-15 \
      bash benchmarks/llamacpp_cuda_build.sh build > "$R/llama-build.log" 2>&1; echo "build rc=$?" >> "$R/llama-build.log" ) &
  BUILD=$!
}
# the greedy tail's kernel checks (edgeprof.fast.greedy_check) into $R/greedy_checks.json and $R/checks.log
greedy_checks() {
  timeout 200 python3 -c "import sys; sys.path.insert(0, 'benchmarks'); import int4_gemv, json; \
c = int4_gemv.greedy_tail_checks(); json.dump(c, open('$R/greedy_checks.json', 'w'), indent=1)" > "$R/checks.log" 2>&1
  mark "greedy checks rc=$?"; grep -E "checks|FAIL" "$R/checks.log"
}
# /tmp/v: a venv with the carried ROS wheels (.whl-ros, ../shared/tools/ros-gpu-wheels.sh) that sees the image's torch
ros_venv() {
  python3 -m venv /tmp/v && echo /opt/torch/.venv/lib/python3.12/site-packages \
    > /tmp/v/lib/python3.12/site-packages/torchenv.pth && /tmp/v/bin/python -m pip install -q --no-index --no-deps .whl-ros/*.whl
  mark "ros venv rc=$?"
}
