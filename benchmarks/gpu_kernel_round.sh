# One device call (1 GPU, 16 cores), issues 12 + 11: while llama.cpp's CUDA build (FlashAttention and NCCL
# off) runs on 12 cores, the W4A16 GEMV is tuned ($TUNE_VARIANTS, each config checked first), then the kernel
# suite (per-shape table, every-shape check) and full decode steps (and explain, EXPLAIN=1) with the tuned
# per-shape launch (EDGEPROF_W4_PLAN = this run's tune.json), int4-cuda steps with the default launch, what
# the daemon's `auto` picks and serves (DAEMON=1, benchmarks/daemon_auto.py), then the llama.cpp probe
# (torch-first cases, the backend's libstdc++ fix) and the per-token bench. Results in $OUT/$ROUND/.
# The H200 runs of 2026-11-28 (results/h200/2026-11-28-int4-kernel-r2):
#   r2: ROUND=round2 TUNE_VARIANTS=base,o8,o6,u8,w8 EXPLAIN=0 DAEMON=0 bash benchmarks/gpu_kernel_round.sh
#   r3: ROUND=round3 bash benchmarks/gpu_kernel_round.sh          (the defaults below)
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_call.sh
gpu_call_init "${ROUND:-round3}" 575
mark start
llamacpp_build_bg "-DGGML_CUDA_FA=OFF -DGGML_CUDA_NCCL=OFF"
timeout "$(left)" taskset -c 0-3 python3 benchmarks/int4_gemv.py --suite tune --tune-variants "${TUNE_VARIANTS:-base,xscalar,w8,o6}" \
  --tune-splits 1,2,4,8 --repeats 30 --time-budget 200 --out-dir "$R/tune" > "$R/tune.log" 2>&1
mark "tune rc=$?"; tail -6 "$R/tune.log"
EDGEPROF_W4_PLAN="$R/tune/tune.json" timeout "$(( $(left) - 150 ))" taskset -c 0-3 python3 benchmarks/int4_gemv.py \
  --suite kernel --step-ctx 2048,16384 --steps 30 $([ "${EXPLAIN:-1}" = 1 ] && echo --explain) --out-dir "$R/kernel-plan" > "$R/kernel-plan.log" 2>&1
mark "kernel suite + steps with the tuned plan rc=$?"; grep -E "^(edgeprof|full step|backend)|vs dequantized|FAIL" "$R/kernel-plan.log" | tail -14
timeout "$(( $(left) - 120 ))" taskset -c 0-3 python3 benchmarks/int4_gemv.py --suite kernel --steps-only \
  --step-ctx 2048,16384 --steps 30 --out-dir "$R/kernel-default" > "$R/kernel-default.log" 2>&1
mark "steps, default launch rc=$?"; grep -E "^edgeprof-fast-int4-cuda " "$R/kernel-default.log" | tail -3
if [ "${DAEMON:-1}" = 1 ]; then
  timeout "$(( $(left) - 100 ))" taskset -c 0-3 python3 benchmarks/daemon_auto.py --model qwen2.5-7b --device cuda \
    --tokens 64 --out "$R/daemon_auto.json" > "$R/daemon_auto.log" 2>&1
  mark "daemon auto rc=$?"; grep -E "auto|chose" "$R/daemon_auto.log" | tail -8
fi
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
