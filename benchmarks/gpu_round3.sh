#!/usr/bin/env bash
# One device call (1 GPU, 16 cores), issues 12 + 11: while llama.cpp's CUDA build (NCCL off) runs on 12
# cores, the W4A16 GEMV is tuned (base = 16-byte x staging vs xscalar = the first staging, w8, o6; each
# config checked first), then the kernel suite (per-shape table, every-shape check), full decode steps and
# explain with the tuned per-shape launch (EDGEPROF_W4_PLAN = this run's tune.json), int4-cuda steps with
# the default launch, and what the daemon's `auto` picks and serves (benchmarks/daemon_auto.py). Then the
# llama.cpp probe (torch-first cases, the backend's libstdc++ fix) and the per-token bench.
# Results in $OUT/round3/, packed into $OUT/round3.tgz.
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s); DEADLINE_S="${DEADLINE_S:-575}"
R="$OUT/round3"; mkdir -p "$R"
left() { echo $(( START + DEADLINE_S - $(date +%s) )); }
mark() { echo "$(date -u +%H:%M:%S) +$(( $(date +%s) - START ))s $*" | tee -a "$R/timeline.txt"; }
trap 'tar czf "$OUT/round3.tgz" -C "$OUT" round3' EXIT
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 LLAMACPP_STATE=/root/llamacpp-state
{ nvidia-smi --query-gpu=index,name,driver_version,memory.total,clocks.max.sm --format=csv; nproc; date -u;
  python3 -c "import torch, transformers, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, 'triton', triton.__version__)";
  nvcc --version | tail -1; git log --oneline -1 2>/dev/null; } > "$R/env.txt" 2>&1
mark start
( OUT="$R" MAX_JOBS=12 LLAMACPP_CMAKE_EXTRA="-DGGML_CUDA_FA=OFF -DGGML_CUDA_NCCL=OFF" taskset -c 4-15 \
    bash benchmarks/llamacpp_cuda_build.sh build > "$R/llama-build.log" 2>&1; echo "build rc=$?" >> "$R/llama-build.log" ) &
BUILD=$!
timeout "$(left)" taskset -c 0-3 python3 benchmarks/int4_gemv.py --suite tune --tune-variants base,xscalar,w8,o6 \
  --tune-splits 1,2,4,8 --repeats 30 --time-budget 200 --out-dir "$R/tune" > "$R/tune.log" 2>&1
mark "tune rc=$?"; tail -6 "$R/tune.log"
EDGEPROF_W4_PLAN="$R/tune/tune.json" timeout "$(( $(left) - 150 ))" taskset -c 0-3 python3 benchmarks/int4_gemv.py \
  --suite kernel --step-ctx 2048,16384 --steps 30 --explain --out-dir "$R/kernel-plan" > "$R/kernel-plan.log" 2>&1
mark "kernel suite + steps with the tuned plan rc=$?"; grep -E "^(edgeprof|full step|backend)|vs dequantized|FAIL" "$R/kernel-plan.log" | tail -14
timeout "$(( $(left) - 120 ))" taskset -c 0-3 python3 benchmarks/int4_gemv.py --suite kernel --steps-only \
  --step-ctx 2048,16384 --steps 30 --out-dir "$R/kernel-default" > "$R/kernel-default.log" 2>&1
mark "steps, default launch rc=$?"; grep -E "^edgeprof-fast-int4-cuda " "$R/kernel-default.log" | tail -3
timeout "$(( $(left) - 100 ))" taskset -c 0-3 python3 benchmarks/daemon_auto.py --model qwen2.5-7b --device cuda \
  --tokens 64 --out "$R/daemon_auto.json" > "$R/daemon_auto.log" 2>&1
mark "daemon auto rc=$?"; grep -E "auto|chose" "$R/daemon_auto.log" | tail -8
wait $BUILD; mark "llama.cpp $(tail -1 "$R/llama-build.log")"
if [ -f "$LLAMACPP_STATE/src/llama_cpp_python-0.3.36/llama_cpp/lib/libggml-cuda.so" ]; then
  OUT="$R" timeout "$(( $(left) - 60 ))" bash benchmarks/llamacpp_cuda_build.sh probe > "$R/probe.out" 2>&1
  mark "probe rc=$?"; grep -E "^\|" "$R/probe.out"
  PRE="$(python3 -c "
import json; c=json.load(open('$R/llamacpp-cuda/load_probe.json'))['cases']
ok=[x for x in c if x['n_gpu_layers']==-1 and x['rc']==0 and 'qwen2.5' in x['gguf'] and x.get('torch_first')]
ok.sort(key=lambda x: (not x.get('promote'), bool(x['preload'])))  # the backend's own fix first
print((ok[0]['preload'] or 'PLAIN') if ok else 'NONE')" 2>/dev/null || echo NONE)"
  mark "torch-first 7B GPU load works with preload: '$PRE' (PLAIN: none needed with the backend fix)"
  if [ "$PRE" != NONE ] && [ "$(left)" -gt 45 ]; then
    [ "$PRE" = PLAIN ] && PRE=""
    OUT="$R" LLAMACPP_PRELOAD="$PRE" LLAMACPP_STEPS=32 timeout "$(( $(left) - 10 ))" \
      bash benchmarks/llamacpp_cuda_build.sh bench > "$R/llama-bench.out" 2>&1
    mark "bench rc=$?"; tail -8 "$R/llama-bench.out"
  fi
fi
mark end
