#!/usr/bin/env bash
# llama.cpp with CUDA on the (offline) GPU machine, then the llamacpp backend on a SYNTHETIC
# Qwen2.5-7B-shaped Q4_0 GGUF, timed per token with edgeprof's clock.
#
#   bash benchmarks/llamacpp_cuda_build.sh prepare        # HERE (network): fill .llamacpp-cuda/ (ignored):
#                                                         # trimmed sdist (~13 MB), cmake + diskcache wheels
#   bash benchmarks/llamacpp_cuda_build.sh build          # DEVICE: CUDA build (sm_90 only) under $LLAMACPP_STATE
#   bash benchmarks/llamacpp_cuda_build.sh bench          # DEVICE: write the GGUF, time ctx 2048 and 16384
#   bash benchmarks/llamacpp_cuda_build.sh all            # DEVICE: build (skipped when already built) + bench
#   bash benchmarks/llamacpp_cuda_build.sh probe          # DEVICE: which GGUF loads crash (subprocesses, gdb bt)
#
# Results go to $OUT/llamacpp-cuda (cells.json, summary.json, build.json, logs); the table prints last.
# No pip on the device: the library is built with CMake straight from the sdist and installed into the
# sdist's own llama_cpp/lib, and Python imports llama_cpp from there (PYTHONPATH), with llama.cpp's
# vendored gguf-py for the GGUF writer and the carried diskcache wheel (llama_cpp imports it).
# Environment: LLAMACPP_DIR (default .llamacpp-cuda at the repo root), OUT (default ./out),
#              LLAMACPP_STATE (build tree + GGUF, default ~/.cache/edgeprof/llamacpp-cuda),
#              LLAMACPP_CTX (default 2048,16384), LLAMACPP_STEPS (default 64), MAX_JOBS (default nproc),
#              LLAMACPP_CMAKE_EXTRA (more CMake flags, e.g. -DGGML_CUDA_FA=OFF: a much shorter build, no FlashAttention),
#              LLAMACPP_PRELOAD (bench: a library to LD_PRELOAD, e.g. the build compiler's libstdc++.so.6).
set -euo pipefail

cd "$(dirname "$0")/.."
REPO="$PWD"
DIR="$(realpath -m "${LLAMACPP_DIR:-.llamacpp-cuda}")"  # carried inputs (prepare writes them)
# Build tree and GGUF live outside the carried folder: a later call's carry replaces that folder,
# while this one survives on a warm machine (an interrupted build resumes where ninja stopped).
STATE="${LLAMACPP_STATE:-$HOME/.cache/edgeprof/llamacpp-cuda}"
OUT="${OUT:-$REPO/out}"
RES="$OUT/llamacpp-cuda"
VERSION=0.3.36
SRC="$STATE/src/llama_cpp_python-$VERSION"
say() { echo "llamacpp_cuda_build.sh: $*" >&2; }

prepare() {
  mkdir -p "$DIR"
  bash scripts/llamacpp_wheel.sh sdist "$DIR" "${PYTHON:-python3}" >/dev/null
  python3 -m pip download -q --no-deps --only-binary :all: --python-version 3.12 \
    --platform manylinux2014_x86_64 cmake diskcache -d "$DIR"
  du -h "$DIR"/* >&2
  say "carry total: $(du -sh "$DIR" | cut -f1) (the device call's carry limit is 64 MiB)"
}

cmake_bin() {
  if command -v cmake >/dev/null && cmake --version | head -1 | grep -qE ' (3\.(2[1-9]|[3-9][0-9])|[4-9])\.'; then
    command -v cmake; return
  fi
  local whl
  whl="$(ls "$DIR"/cmake-*.whl 2>/dev/null | head -1 || true)"
  [ -n "$whl" ] || { say "no cmake >= 3.21 and no cmake wheel in $DIR; run 'prepare' first"; exit 1; }
  if [ ! -x "$DIR/cmake-wheel/cmake/data/bin/cmake" ]; then
    python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$whl" "$DIR/cmake-wheel"
    chmod +x "$DIR"/cmake-wheel/cmake/data/bin/*
  fi
  echo "$DIR/cmake-wheel/cmake/data/bin/cmake"
}

build() {
  mkdir -p "$RES"
  if [ -f "$SRC/llama_cpp/lib/libggml-cuda.so" ]; then say "already built: $SRC/llama_cpp/lib"; return; fi
  [ -f "$DIR/llama_cpp_python-$VERSION.tar.gz" ] || { say "no sdist in $DIR; run 'prepare' here first"; exit 1; }
  local cm start
  cm="$(cmake_bin)"
  if [ ! -f "$SRC/CMakeLists.txt" ]; then
    mkdir -p "$STATE/src" && tar xzf "$DIR/llama_cpp_python-$VERSION.tar.gz" -C "$STATE/src"
  fi
  command -v nvcc >/dev/null || export PATH="/usr/local/cuda/bin:$PATH"
  say "nvcc: $(nvcc --version | tail -1); cmake: $("$cm" --version | head -1)"
  start=$(date +%s)
  # sm_90 only (H100/H200); every layer runs on the GPU, so the CPU part is built without -march=native.
  "$cm" -S "$SRC" -B "$STATE/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF ${LLAMACPP_CMAKE_EXTRA:-} \
    -DSKBUILD_PLATLIB_DIR="$STATE/platlib" -DCMAKE_INSTALL_PREFIX="$STATE/prefix" \
    > "$RES/cmake-configure.log" 2>&1 || { tail -30 "$RES/cmake-configure.log"; exit 1; }
  "$cm" --build "$STATE/build" -j "${MAX_JOBS:-$(nproc)}" > "$RES/cmake-build.log" 2>&1 \
    || { tail -40 "$RES/cmake-build.log"; exit 1; }
  "$cm" --install "$STATE/build" > "$RES/cmake-install.log" 2>&1 || { tail -20 "$RES/cmake-install.log"; exit 1; }
  local secs=$(( $(date +%s) - start ))
  printf '{"build_s": %d, "jobs": %s, "nvcc": "%s", "cmake_flags": "-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF %s"}\n' \
    "$secs" "${MAX_JOBS:-$(nproc)}" "$(nvcc --version | tail -1)" "${LLAMACPP_CMAKE_EXTRA:-}" > "$RES/build.json"
  say "CUDA build took $secs s; libraries in $SRC/llama_cpp/lib"
}

bench() {
  mkdir -p "$RES"
  [ -f "$SRC/llama_cpp/lib/libggml-cuda.so" ] || { say "not built yet: run 'build' first"; exit 1; }
  local dc gpu key
  dc="$(ls "$DIR"/diskcache-*.whl 2>/dev/null | head -1 || true)"
  gpu="$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)"
  case "$gpu" in *H200*) key=h200 ;; *H100*HBM3*) key=h100-sxm ;; *H100*) key=h100-pcie ;; *) key="" ;; esac
  say "GPU: $gpu"
  echo "$gpu" > "$RES/nvidia-smi.txt"
  # LLAMACPP_PRELOAD: a library to preload (the probe's answer when plain loading crashes)
  LD_PRELOAD="${LLAMACPP_PRELOAD:-${LD_PRELOAD:-}}" \
  PYTHONPATH="$SRC:$SRC/vendor/llama.cpp/gguf-py:${dc}:$REPO${PYTHONPATH:+:$PYTHONPATH}" \
    python3 benchmarks/llamacpp_decode.py --synthetic qwen2.5-7b --device cuda \
      --ctx "${LLAMACPP_CTX:-2048,16384}" --steps "${LLAMACPP_STEPS:-64}" --gguf-dir "$STATE/gguf" \
      ${key:+--gpu-key "$key"} --out "$RES" 2>&1 | tee "$RES/bench.log" | tail -20
}

toolchain() {  # which compilers built the library and which libstdc++ each side uses
  local cxx
  cxx="$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$STATE/build/CMakeCache.txt" 2>/dev/null | head -1)"
  {
    echo "CMAKE_CXX_COMPILER=$cxx"; "${cxx:-c++}" --version | head -1
    sed -n 's/^CMAKE_CUDA_HOST_COMPILER:[A-Z]*=//p' "$STATE/build/CMakeCache.txt" 2>/dev/null | sed 's/^/CUDA host compiler=/'
    echo "compiler libstdc++: $("${cxx:-c++}" -print-file-name=libstdc++.so.6)"
    echo "python3: $(command -v python3)"; ldd "$(command -v python3)" | grep -E 'stdc|libc\.' || true
    for l in "$SRC"/llama_cpp/lib/libllama.so "$SRC"/llama_cpp/lib/libggml-cuda.so; do
      echo "ldd $l:"; ldd "$l" | grep -E 'stdc|gcc_s|ggml|cuda' || true
    done
    ldconfig -p | grep -E 'libstdc\+\+' || true
  } > "$RES/toolchain.txt" 2>&1
  cat "$RES/toolchain.txt" >&2
  "${cxx:-c++}" -print-file-name=libstdc++.so.6
}

probe() {  # each load in its own process: a segfault ends one case, the table shows which ones survive
  mkdir -p "$RES"
  [ -f "$SRC/llama_cpp/lib/libggml-cuda.so" ] || { say "not built yet: run 'build' first"; exit 1; }
  local dc pre tk
  dc="$(ls "$DIR"/diskcache-*.whl 2>/dev/null | head -1 || true)"
  pre="$(toolchain | tail -1)"
  [ -f "$pre" ] || pre=""
  # the toolkit libraries libggml-cuda links (for the torch-first pass with them preloaded)
  tk="$(ldd "$SRC/llama_cpp/lib/libggml-cuda.so" | awk '/libcudart|libcublas/ {print $3}' | paste -sd: -)"
  PYTHONPATH="$SRC:$SRC/vendor/llama.cpp/gguf-py:${dc}:$REPO${PYTHONPATH:+:$PYTHONPATH}" \
    python3 benchmarks/llamacpp_load_probe.py --device cuda --gguf-dir "$STATE/gguf" --out "$RES" \
      ${pre:+--preload "$pre"} --torch-first ${tk:+--toolkit-libs "$tk"} 2>&1 | tee "$RES/probe.log" | tail -60
}

case "${1:-}" in
  prepare) prepare ;;
  build) build ;;
  bench) bench ;;
  all) build; bench ;;
  probe) probe ;;
  *) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
