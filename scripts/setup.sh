#!/usr/bin/env bash
# Fresh-machine setup for edgeprof. Idempotent: run it again and it only does what is missing.
#
#   bash scripts/setup.sh            # .venv with torch + edgeprof[gpu,ros,dev,dashboards,cluster,gptq], Prometheus if root
#   bash scripts/setup.sh --tests    # the same, then fetch the embedded default model for the test suite
#   bash scripts/setup.sh --no-llamacpp   # skip llama-cpp-python (the llamacpp backend's tests then skip)
#
# llama-cpp-python (edgeprof[llamacpp]) has no wheel on PyPI: the first run builds one from source into
# ~/.cache/edgeprof/wheels (scripts/llamacpp_wheel.sh; ~10-25 min on 2 cores) and later runs reuse it.
# Environment: PYTHON (interpreter for the venv, default python3),
#              EDGEPROF_TORCH_INDEX (a pip --index-url for torch, e.g. https://download.pytorch.org/whl/cpu).
set -euo pipefail

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }

TESTS=0
LLAMACPP="${EDGEPROF_LLAMACPP:-1}"
for arg in "$@"; do
  case "$arg" in
    --tests) TESTS=1 ;;
    --no-llamacpp) LLAMACPP=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg'; valid: --tests, --no-llamacpp, --help" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV=.venv
VPY="$VENV/bin/python"
say() { echo "setup.sh: $*"; }
is_root() { [ "$(id -u)" = 0 ]; }

# 1. Virtual environment.
if [ ! -x "$VPY" ]; then
  say "creating $VENV with $($PYTHON --version 2>&1)"
  if ! "$PYTHON" -m venv "$VENV"; then
    if is_root && command -v apt-get >/dev/null; then
      say "python venv support is missing; installing python3-venv"
      rm -rf "$VENV"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
      "$PYTHON" -m venv "$VENV"
    else
      echo "setup.sh: '$PYTHON -m venv' failed; install the venv module (Debian/Ubuntu: apt-get install python3-venv)" >&2
      exit 1
    fi
  fi
fi
PIP=("$VPY" -m pip install --disable-pip-version-check -q)

# 2. torch: the CPU build where there is no NVIDIA driver (avoids GBs of CUDA wheels).
if ! "$VPY" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null; then
    say "installing torch (CUDA build)"
    "${PIP[@]}" torch
  elif [ -n "${EDGEPROF_TORCH_INDEX:-}" ]; then
    say "installing torch (CPU build) from $EDGEPROF_TORCH_INDEX"
    "${PIP[@]}" torch --index-url "$EDGEPROF_TORCH_INDEX"
  else
    say "no nvidia-smi: installing torch 2.13 (a local +cpu wheel is used where pip's find-links has one)"
    "${PIP[@]}" "torch==2.13.*"
  fi
fi

# 3. edgeprof itself, editable, with the GPU/model, ROS, dev, dashboards and cluster extras. Skipped when
#    pyproject.toml has not changed since the last successful install.
STAMP="$VENV/.edgeprof-setup"
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ] || ! "$VPY" -c "import edgeprof" 2>/dev/null; then
  say "installing edgeprof[gpu,ros,dev,dashboards,cluster,gptq] (editable)"
  "${PIP[@]}" -e '.[gpu,ros,dev,dashboards,cluster,gptq]'
  echo "$WANT" > "$STAMP"
else
  say "edgeprof is already installed and pyproject.toml is unchanged"
fi

# 3b. llama.cpp for the llamacpp backend: a wheel built once from source and cached outside the tree.
#     A failed build does not stop the setup: the llamacpp backend and its tests then say why it is missing.
if [ "$LLAMACPP" = 1 ] && ! "$VPY" -c "import llama_cpp" 2>/dev/null; then
  if WHL="$(bash scripts/llamacpp_wheel.sh wheel "$VPY")"; then
    say "installing $(basename "$WHL")"
    "${PIP[@]}" "$WHL"
  else
    say "WARNING: building llama-cpp-python failed (see above; it needs a C++ compiler); the llamacpp" \
        "backend stays unavailable and its tests skip. Rerun this script once the compiler is there."
  fi
fi

# 3c. Real GPTQ (edgeprof.quant.gptq4): llmcompressor pins transformers<=5.17, so it and compressed-tensors go in
#     without their pins (the gptq extra above holds what they import); ~2 s, ~1 MB. Verified with transformers 5.24.
GPTQ_NODEPS=("llmcompressor==0.14.0.1" "compressed-tensors==0.19.0")
if ! "$VPY" -c "import llmcompressor, compressed_tensors" 2>/dev/null; then
  say "installing ${GPTQ_NODEPS[*]} (--no-deps)"
  "${PIP[@]}" --no-deps "${GPTQ_NODEPS[@]}" || say "WARNING: llmcompressor did not install; the gptq4 backends skip"
fi

# 4. Prometheus (the metrics tests start a real one). Debian's package; not started as a service.
if ! command -v prometheus >/dev/null; then
  if is_root && command -v apt-get >/dev/null; then
    say "installing prometheus (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
    # The package may start a system service; edgeprof runs its own instances on free ports.
    (command -v systemctl >/dev/null && systemctl disable --now prometheus 2>/dev/null) || true
  else
    say "WARNING: prometheus is not installed and this is not root; run 'sudo apt-get install prometheus'" \
        "(the metrics tests need it)"
  fi
fi

# 4b. Chromium (the HTML report's browser test drives it through playwright, from the dev extra).
if ! command -v chromium >/dev/null; then
  if is_root && command -v apt-get >/dev/null; then
    say "installing chromium (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
  else
    say "WARNING: chromium is not installed and this is not root; run 'sudo apt-get install chromium'" \
        "(tests/test_report_browser.py skips without it)"
  fi
fi

# 5. Optional: the embedded default model, so the test suite need not download it.
if [ "$TESTS" = 1 ]; then
  "$VENV/bin/edgeprof" fetch-default
fi

say "done: $("$VENV/bin/edgeprof" --version), torch $("$VPY" -c 'import torch; print(torch.__version__)')"
