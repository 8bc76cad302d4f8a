#!/usr/bin/env bash
# The backend-choice sweep (configs/sweeps/qwen-backends.yaml) on a 2-GPU device machine, in one call:
#   GPU 0: every backend at ctx 2048, then `explain` profiles of bnb-nf4 and exllamav2 (for `predict`)
#   GPU 1: every backend at ctx 16384, then llama.cpp (CUDA build) at ctx 2048 and 16384
# Each context's variants run serially on ONE card (compare within a context, not across GPUs). Each sweep
# is pinned to its own 6 CPU cores; the llama.cpp build runs on the other 20 cores meanwhile (its overlap
# is logged in timeline.txt). Everything lands in $STATE (survives on a warm machine: a second call
# resumes the sweeps) and is packed into $OUT/gpu-backend-sweep.tgz.
# On a 1-GPU machine both contexts and llama.cpp run one after another on GPU 0.
# Needs: .whl (bitsandbytes, torchao, exllamav2 + fastparquet, cramjam, websockets; offline-wheels.sh) and
# .llamacpp-cuda (benchmarks/llamacpp_cuda_build.sh prepare) carried. DEADLINE_S bounds the whole call;
# SWEEP_BACKENDS="a, b" runs only those backends of the config; SKIP_EXPLAIN=1 skips the explain profiles.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"; START=$(date +%s); DEADLINE_S="${DEADLINE_S:-540}"
STATE="${SWEEP_STATE:-/root/edgeprof-gpu-sweep}"; mkdir -p "$STATE/logs"
left() { echo $(( START + DEADLINE_S - $(date +%s) )); }
mark() { echo "$(date -u +%H:%M:%S) +$(( $(date +%s) - START ))s $*" | tee -a "$STATE/timeline.txt"; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$REPO" PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
{ nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv; nproc; date -u;
  python3 -c "import torch, transformers, triton; print('torch', torch.__version__, 'transformers', transformers.__version__, 'triton', triton.__version__)"; } > "$STATE/env.txt" 2>&1
NGPU=$(nvidia-smi -L | wc -l); LGPU=$(( NGPU - 1 ))  # llama.cpp runs on the last GPU
mark "start ($NGPU GPUs)"
run_gpu() {  # gpu cores ctx then...
  local gpu=$1 cores=$2 ctx=$3; shift 3
  sed "s/^contexts: .*/contexts: [$ctx]/" configs/sweeps/qwen-backends.yaml > "$STATE/qwen-backends-$ctx.yaml"
  [ -z "${SWEEP_BACKENDS:-}" ] || sed -i "s/^backends: .*/backends: [$SWEEP_BACKENDS]/" "$STATE/qwen-backends-$ctx.yaml"
  mark "gpu$gpu sweep ctx $ctx"
  CUDA_VISIBLE_DEVICES=$gpu OMP_NUM_THREADS=4 timeout "$(left)" taskset -c "$cores" python3 -m edgeprof.cli sweep \
    "$STATE/qwen-backends-$ctx.yaml" --isolate --retry-failed --allow-mismatch --cell-timeout 300 --no-progress --no-plots \
    --out "$STATE/sweep-$ctx" >> "$STATE/logs/sweep-$ctx.log" 2>&1
  mark "gpu$gpu sweep ctx $ctx rc=$?"
  "$@"
}
explain_nf4_exl2() {
  [ -z "${SKIP_EXPLAIN:-}" ] || return 0
  CUDA_VISIBLE_DEVICES=0 timeout "$(left)" taskset -c 0-5 python3 benchmarks/predict_validate.py --no-calibration \
    --backends bnb-nf4,exllamav2,bnb-int8 --ctx 2048,16384 --budget-s "$(( $(left) - 60 ))" --out "$STATE/explain" \
    > "$STATE/logs/explain.log" 2>&1; mark "explain rc=$?"
}
llama_bench() {
  while [ ! -f "$STATE/.llama-built" ] && [ ! -f "$STATE/.llama-build-ended" ] && [ "$(left)" -gt 90 ]; do sleep 5; done
  [ -f "$STATE/.llama-built" ] || { mark "llama.cpp not built: no bench"; return; }
  local lib="$STATE/llamacpp/src/llama_cpp_python-0.3.36"  # a crash at import or init shows up here first
  CUDA_VISIBLE_DEVICES=$LGPU PYTHONPATH="$lib:$PYTHONPATH" timeout 60 python3 -X faulthandler -c \
    "import llama_cpp; print('import ok', flush=True); llama_cpp.llama_backend_init(); print('init ok')" \
    > "$STATE/logs/llama-smoke.log" 2>&1; mark "llama smoke rc=$?"
  CUDA_VISIBLE_DEVICES=$LGPU PYTHONFAULTHANDLER=1 LLAMACPP_STATE="$STATE/llamacpp" OUT="$STATE" LLAMACPP_STEPS=64 timeout "$(left)" \
    taskset -c 6-11 bash benchmarks/llamacpp_cuda_build.sh bench > "$STATE/logs/llama-bench.log" 2>&1
  local rc=$?; mark "llama bench rc=$rc"
  if [ "$rc" -ne 0 ] && [ "$(left)" -gt 120 ]; then  # again without edgeprof's ctypes log callback
    cp "$STATE/logs/llama-bench.log" "$STATE/logs/llama-bench-1.log"
    CUDA_VISIBLE_DEVICES=$LGPU PYTHONFAULTHANDLER=1 EDGEPROF_LLAMACPP_VERBOSE=1 LLAMACPP_STATE="$STATE/llamacpp" OUT="$STATE" \
      LLAMACPP_STEPS=64 timeout "$(left)" taskset -c 6-11 bash benchmarks/llamacpp_cuda_build.sh bench \
      > "$STATE/logs/llama-bench.log" 2>&1; mark "llama bench (verbose log) rc=$?"
  fi
}
build_llama() {  # cores jobs
  rm -f "$STATE/.llama-build-ended"
  [ -f "$STATE/.llama-built" ] && return 0
  ( LLAMACPP_STATE="$STATE/llamacpp" OUT="$STATE" MAX_JOBS=$2 timeout "$(left)" taskset -c "$1" \
      bash benchmarks/llamacpp_cuda_build.sh build > "$STATE/logs/llama-build.log" 2>&1 && touch "$STATE/.llama-built"
    mark "llama.cpp build finished rc=$?"; touch "$STATE/.llama-build-ended" ) &
}
jit_exl2() {  # cores jobs
  MAX_JOBS=$2 taskset -c "$1" python3 -c "import exllamav2, exllamav2.ext" > "$STATE/logs/exl2-jit.log" 2>&1
  mark "exllamav2 JIT rc=$?"
}
jit_w4() {
  taskset -c "$1" python3 -c "from edgeprof.fast import w4cuda; w4cuda.load_extension()" > "$STATE/logs/w4cuda-jit.log" 2>&1
  mark "w4cuda JIT rc=$?"
}
if [ "$NGPU" -ge 2 ]; then  # 32 cores: build on 12-31 while both JITs run, then one context per GPU
  build_llama 12-31 20
  jit_w4 8-11 &
  W4=$!
  jit_exl2 0-7 8
  wait $W4
  run_gpu 0 0-5 2048 explain_nf4_exl2 &
  run_gpu 1 6-11 16384 llama_bench &
else  # 16 cores, one GPU: edgeprof's own backends first while ExLlamaV2 JIT-builds, then ExLlamaV2, then llama.cpp
  build_llama 6-15 10
  jit_exl2 2-5 4 &
  EXL2_JIT=$!
  jit_w4 0-1
  ALL="${SWEEP_BACKENDS:-$(sed -n 's/^backends: \[\(.*\)\]/\1/p' configs/sweeps/qwen-backends.yaml)}"
  FIRST=$(echo "$ALL" | tr ',' '\n' | sed 's/^ *//' | grep -v '^exllamav2$' | paste -sd, | sed 's/,/, /g')
  SWEEP_BACKENDS="$FIRST" run_gpu 0 0-1 2048 true
  SWEEP_BACKENDS="$FIRST" run_gpu 0 0-1 16384 true
  wait $EXL2_JIT
  if echo "$ALL" | grep -qw exllamav2; then
    SWEEP_BACKENDS=exllamav2 run_gpu 0 0-3 2048 true
    SWEEP_BACKENDS=exllamav2 run_gpu 0 0-3 16384 true
  fi
  explain_nf4_exl2
  llama_bench
fi
wait
mark "done"
tar czf "$OUT/gpu-backend-sweep.tgz" -C "$STATE" --exclude=llamacpp/src --exclude=llamacpp/build --exclude='*.gguf' \
  --exclude=llamacpp/platlib --exclude=llamacpp/prefix . 2>/dev/null
for c in 2048 16384; do echo "== ctx $c"; tail -25 "$STATE/logs/sweep-$c.log"; done
for f in explain.log llama-smoke.log llama-bench.log; do tail -n 15 "$STATE/logs/$f"; done; cat "$STATE/timeline.txt"
