#!/usr/bin/env bash
# Compile edgeprof's W4A16 GEMV for sm_90 on a machine WITHOUT a GPU and count its weight loop's SASS
# instructions per tile (benchmarks/sass_loop_stats.py): the device's "read what costs no device time" step.
# CUDA 13.0's compiler, headers, nvvm and 13.x cuobjdump/nvdisasm come from PyPI wheels into a venv in the
# state directory (scripts/nvcc_venv.sh: ~300 MB, once). Prints ptxas's register/spill report for the tune variants, then the table.
#   bash benchmarks/sass_local.sh [name-substring ...]
set -euo pipefail
cd "$(dirname "$0")/.."
N="$(bash scripts/nvcc_venv.sh)"
export PATH="$N/bin:$PATH"
T="$(mktemp -d)"; trap 'rm -rf "$T"' EXIT
for f in w4a16_gemv w4a16_tune; do  # the default kernels and the tuning variants (two translation units)
  nvcc -O3 -std=c++17 -arch=sm_90 -I"$N/include" -Iedgeprof/fast/csrc -cubin -Xptxas -v -o "$T/$f.cubin" \
    "edgeprof/fast/csrc/$f.cu" 2>> "$T/ptxas.txt"
done
grep -E "Used [0-9]+ registers|spill" "$T/ptxas.txt" | paste - - | sed -E 's/ +/ /g' | sort | uniq -c | head -20 || true  # head may close the pipe early (SIGPIPE under pipefail)
{ cuobjdump -sass "$T/w4a16_gemv.cubin"; cuobjdump -sass "$T/w4a16_tune.cubin"; } > "$T/w4.sass"
python3 benchmarks/sass_loop_stats.py "$T/w4.sass" "${@:-ILi128ELb0ELb0E}"
