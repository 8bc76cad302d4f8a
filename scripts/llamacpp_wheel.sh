#!/usr/bin/env bash
# llama-cpp-python for edgeprof's llamacpp backend. PyPI has only its sdist (76 MB), so it builds
# from source with CMake; this script builds the wheel ONCE into a cache outside the tree and reuses it.
#
#   bash scripts/llamacpp_wheel.sh sdist DIR    # download the sdist and write a trimmed copy (about 13 MB)
#                                               # to DIR/llama_cpp_python-VERSION.tar.gz (no models/docs/.git)
#   bash scripts/llamacpp_wheel.sh wheel [PY]   # print the path of a cached wheel for this CPU, building it
#                                               # first if missing (PY: the venv's python, default python3)
#
# Environment: EDGEPROF_LLAMACPP_CMAKE_ARGS replaces the CMake flags chosen below;
#              EDGEPROF_WHEEL_CACHE (default ~/.cache/edgeprof/wheels).
# Why the flags: GGML_NATIVE=ON (the default) compiles for the build host with -march=native; on VMs that
# advertise AMX it dies with "Illegal instruction", and a cached native wheel would crash on another CPU.
# So the instruction set is named explicitly (AVX-512 only where /proc/cpuinfo has avx512f), AMX is off,
# and the cache folder is keyed by the flags. LLAVA_BUILD=OFF skips the multimodal library edgeprof never loads.
set -euo pipefail

VERSION=0.3.36
CACHE="${EDGEPROF_WHEEL_CACHE:-$HOME/.cache/edgeprof/wheels}"
say() { echo "llamacpp_wheel.sh: $*" >&2; }

cmake_args() {
  if [ -n "${EDGEPROF_LLAMACPP_CMAKE_ARGS:-}" ]; then echo "$EDGEPROF_LLAMACPP_CMAKE_ARGS"; return; fi
  local a="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAVA_BUILD=OFF"
  if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then a="$a -DGGML_AVX512=ON"; fi
  echo "$a"
}

trimmed_sdist() {  # $1: output dir; $2: python with pip
  local out="$1" py="${2:-python3}" tmp
  mkdir -p "$out"
  if [ -f "$out/llama_cpp_python-$VERSION.tar.gz" ]; then echo "$out/llama_cpp_python-$VERSION.tar.gz"; return; fi
  tmp="$(mktemp -d)"
  say "downloading the llama-cpp-python $VERSION sdist (76 MB) ..."
  "$py" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$tmp" >&2
  tar xzf "$tmp/llama_cpp_python-$VERSION.tar.gz" -C "$tmp"
  local s="$tmp/llama_cpp_python-$VERSION"
  # Not needed to build: model vocab files for llama.cpp's tests, docs, git history, examples.
  rm -rf "$s/.git" "$s/vendor/llama.cpp/models" "$s/vendor/llama.cpp/docs" "$s/docs" "$s/examples" \
         "$s"/vendor/llama.cpp/.git*
  tar czf "$out/.llama_cpp_python-$VERSION.tar.gz.part" -C "$tmp" "llama_cpp_python-$VERSION"
  mv "$out/.llama_cpp_python-$VERSION.tar.gz.part" "$out/llama_cpp_python-$VERSION.tar.gz"
  rm -rf "$tmp"
  say "trimmed sdist: $(du -h "$out/llama_cpp_python-$VERSION.tar.gz" | cut -f1)"
  echo "$out/llama_cpp_python-$VERSION.tar.gz"
}

cached_wheel() {  # $1: python
  local py="${1:-python3}" args key dir
  args="$(cmake_args)"
  key="$(echo "$VERSION $args" | sha256sum | cut -c1-12)"
  dir="$CACHE/llama-cpp-python-$key"
  local whl
  whl="$(ls "$dir"/llama_cpp_python-"$VERSION"-*.whl 2>/dev/null | head -1 || true)"
  if [ -n "$whl" ]; then echo "$whl"; return; fi
  local sdist start
  sdist="$(trimmed_sdist "$CACHE/sdist" "$py")"
  say "building llama-cpp-python $VERSION from source with CMAKE_ARGS='$args' (about 10-25 min on 2 cores) ..."
  start=$(date +%s)
  mkdir -p "$dir"
  CMAKE_ARGS="$args" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    "$py" -m pip wheel -q --no-deps -w "$dir" "$sdist" >&2
  echo "$args" > "$dir/CMAKE_ARGS"
  say "built in $(( $(date +%s) - start )) s -> $dir"
  ls "$dir"/llama_cpp_python-"$VERSION"-*.whl | head -1
}

case "${1:-}" in
  sdist) trimmed_sdist "${2:?usage: llamacpp_wheel.sh sdist DIR [PY]}" "${3:-python3}" ;;
  wheel) cached_wheel "${2:-python3}" ;;
  *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
